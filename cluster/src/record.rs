//! A member's record, the value of etcd's `members/<node-id>` key (design note §3), held under
//! the node's lease so it disappears when the node stops renewing it.
//!
//! Text, so `etcdctl get` shows it as is:
//! `v=1;weight=100;sync=10.8.0.1:7400;start=1700000000000000;digest=00ff…;mac=eth0/02:…,eth1/02:…`.
//! The MACs are the node's interface MACs by interface name: an old owner forwards the frames
//! it held for a moving id to the new owner's MAC on the arrival interface.

use core::fmt::Write as _;
use core::net::SocketAddrV4;

use netwire::MacAddr;

/// The `members/<node-id>` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// Share weight of the node's ids.
    pub weight: u16,
    /// The node's state-sync address (peers open their hasync endpoint to it).
    pub sync_addr: SocketAddrV4,
    /// The node's start epoch in µs (its hasync epoch; a restart changes it).
    pub start_epoch_us: u64,
    /// Digest of the cluster-relevant configuration; members with different digests refuse
    /// to share ids (checked by the driver against the `config` record).
    pub config_digest: u64,
    /// The node's interface MACs by interface name.
    pub macs: Vec<(String, MacAddr)>,
}

/// Why a member record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("member record: {0}")]
pub struct RecordError(pub String);

impl MemberRecord {
    /// The stored text (module docs). Interface names with `;`, `,`, `/` or `=` cannot be
    /// written unambiguously and are left out.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "v=1;weight={};sync={};start={};digest={:016x};mac=",
            self.weight, self.sync_addr, self.start_epoch_us, self.config_digest
        );
        let mut first = true;
        for (name, mac) in &self.macs {
            if name.is_empty() || name.contains([';', ',', '/', '=']) {
                continue;
            }
            if !first {
                s.push(',');
            }
            first = false;
            let _ = write!(s, "{name}/{mac}");
        }
        s
    }

    /// Reads the stored text; unknown fields are ignored so a newer node's record still reads.
    pub fn decode(text: &str) -> Result<MemberRecord, RecordError> {
        let err = |m: &str| RecordError(m.to_string());
        let (mut v, mut weight, mut sync, mut start, mut digest, mut macs) =
            (None, None, None, None, None, Vec::new());
        for field in text.trim().split(';') {
            let Some((k, val)) = field.split_once('=') else {
                return Err(err(&format!("field {field:?} has no '='")));
            };
            match k {
                "v" => v = Some(val),
                "weight" => weight = Some(val.parse::<u16>().map_err(|_| err("bad weight"))?),
                "sync" => {
                    sync = Some(
                        val.parse::<SocketAddrV4>()
                            .map_err(|_| err("bad sync address"))?,
                    )
                }
                "start" => start = Some(val.parse::<u64>().map_err(|_| err("bad start"))?),
                "digest" => {
                    digest = Some(u64::from_str_radix(val, 16).map_err(|_| err("bad digest"))?)
                }
                "mac" => {
                    for item in val.split(',').filter(|i| !i.is_empty()) {
                        let (name, mac) = item
                            .split_once('/')
                            .ok_or_else(|| err("mac entry without '/'"))?;
                        // What `encode` could not write back (it skips such names).
                        if name.is_empty() || name.contains([';', ',', '/', '=']) {
                            return Err(err("bad interface name in a mac entry"));
                        }
                        let mac = mac.parse::<MacAddr>().map_err(|_| err("bad MAC"))?;
                        macs.push((name.to_string(), mac));
                    }
                }
                _ => {}
            }
        }
        if v != Some("1") {
            return Err(err("missing or unknown version (v=1 expected)"));
        }
        Ok(MemberRecord {
            weight: weight.ok_or_else(|| err("no weight"))?,
            sync_addr: sync.ok_or_else(|| err("no sync address"))?,
            start_epoch_us: start.unwrap_or(0),
            config_digest: digest.unwrap_or(0),
            macs,
        })
    }

    /// The node's MAC on interface `name`.
    pub fn mac(&self, name: &str) -> Option<MacAddr> {
        self.macs.iter().find(|(n, _)| n == name).map(|(_, m)| *m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let r = MemberRecord {
            weight: 100,
            sync_addr: "10.8.0.1:7400".parse().expect("addr"),
            start_epoch_us: 17,
            config_digest: 0xabc,
            macs: vec![
                ("eth0".into(), MacAddr([2, 0, 0, 0, 0, 1])),
                ("eth1".into(), MacAddr([2, 0, 0, 0, 0, 2])),
            ],
        };
        let s = r.encode();
        assert_eq!(
            s,
            "v=1;weight=100;sync=10.8.0.1:7400;start=17;digest=0000000000000abc;\
             mac=eth0/02:00:00:00:00:01,eth1/02:00:00:00:00:02"
        );
        assert_eq!(MemberRecord::decode(&s), Ok(r.clone()));
        assert_eq!(r.mac("eth1"), Some(MacAddr([2, 0, 0, 0, 0, 2])));
        assert!(MemberRecord::decode("v=2;weight=1;sync=1.2.3.4:5").is_err());
        assert!(MemberRecord::decode("v=1;sync=1.2.3.4:5").is_err());
        assert!(MemberRecord::decode("garbage").is_err());
        assert!(MemberRecord::decode("v=1;weight=1;sync=1.2.3.4:5;future=x").is_ok());
        // Found by the fuzzer: a name `encode` would skip must not decode (no round trip).
        assert!(
            MemberRecord::decode("v=1;weight=1;sync=1.2.3.4:5;mac=a=b/02:00:00:00:00:01").is_err()
        );
        assert!(
            MemberRecord::decode("v=1;weight=1;sync=1.2.3.4:5;mac=/02:00:00:00:00:01").is_err()
        );
    }
}
