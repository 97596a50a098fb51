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

/// The cluster's `config` record, the value of etcd's `config` key: the configuration every
/// member must run, as the digest members also carry in their records.
///
/// Text like a member record: `v=1;digest=00ff…;ids=256;by=3;since=1700000000000`. The first
/// node creates it (create-if-absent); a node whose digest differs does not join while a
/// registered member still runs the recorded configuration ([`config_gate`]), so two
/// translations of the same traffic never share the ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRecord {
    /// Digest of the cluster-relevant configuration (the router's `config_digest`).
    pub digest: u64,
    /// Number of distribution ids (256 in this version).
    pub ids: u16,
    /// The node that wrote the record.
    pub by: u32,
    /// When it was written (Unix time, ms; informational).
    pub since_unix_ms: u64,
}

impl ConfigRecord {
    /// The stored text (type docs).
    pub fn encode(&self) -> String {
        format!(
            "v=1;digest={:016x};ids={};by={};since={}",
            self.digest, self.ids, self.by, self.since_unix_ms
        )
    }

    /// Reads the stored text; unknown fields are ignored (a newer node's record still reads).
    pub fn decode(text: &str) -> Result<ConfigRecord, RecordError> {
        let err = |m: &str| RecordError(format!("config record: {m}"));
        let (mut v, mut digest, mut ids, mut by, mut since) = (None, None, None, 0, 0);
        for field in text.trim().split(';') {
            let Some((k, val)) = field.split_once('=') else {
                return Err(err(&format!("field {field:?} has no '='")));
            };
            match k {
                "v" => v = Some(val),
                "digest" => {
                    digest = Some(u64::from_str_radix(val, 16).map_err(|_| err("bad digest"))?)
                }
                "ids" => ids = Some(val.parse::<u16>().map_err(|_| err("bad ids"))?),
                "by" => by = val.parse::<u32>().map_err(|_| err("bad by"))?,
                "since" => since = val.parse::<u64>().map_err(|_| err("bad since"))?,
                _ => {}
            }
        }
        if v != Some("1") {
            return Err(err("missing or unknown version (v=1 expected)"));
        }
        Ok(ConfigRecord {
            digest: digest.ok_or_else(|| err("no digest"))?,
            ids: ids.ok_or_else(|| err("no ids"))?,
            by,
            since_unix_ms: since,
        })
    }
}

/// What a starting node does about the cluster's `config` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigGate {
    /// No record yet: create it with this node's configuration, then join.
    Create,
    /// The record is this node's configuration: join.
    Join,
    /// The record names another configuration that no registered member runs any more (all
    /// nodes were restarted with a new one): replace it with this node's, then join.
    Replace,
    /// Registered members run the recorded, different configuration: stay out (no member
    /// record, no ids) and check again later.
    Refuse {
        /// Registered members running the recorded configuration.
        running: usize,
    },
}

/// The decision for a node with configuration digest `ours`, given the `config` record (if
/// any; one that does not decode counts as absent-but-present: replaced like a stale one) and
/// the digests of the registered members' records.
pub fn config_gate(
    ours: u64,
    ids: u16,
    record: Option<Result<&ConfigRecord, ()>>,
    members: impl IntoIterator<Item = u64>,
) -> ConfigGate {
    match record {
        None => ConfigGate::Create,
        Some(Ok(r)) if r.digest == ours && r.ids == ids => ConfigGate::Join,
        Some(r) => {
            let recorded = r.ok().filter(|r| r.ids == ids).map(|r| r.digest);
            let running = members.into_iter().filter(|d| Some(*d) == recorded).count();
            if running == 0 {
                ConfigGate::Replace
            } else {
                ConfigGate::Refuse { running }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_record_round_trip_and_gate() {
        let r = ConfigRecord {
            digest: 0xfeed,
            ids: 256,
            by: 3,
            since_unix_ms: 42,
        };
        let s = r.encode();
        assert_eq!(s, "v=1;digest=000000000000feed;ids=256;by=3;since=42");
        assert_eq!(ConfigRecord::decode(&s), Ok(r.clone()));
        assert!(ConfigRecord::decode("v=1;ids=256").is_err());
        assert!(ConfigRecord::decode("v=2;digest=1;ids=256").is_err());
        assert!(ConfigRecord::decode("junk").is_err());
        assert_eq!(config_gate(1, 256, None, []), ConfigGate::Create);
        let other = ConfigRecord {
            digest: 2,
            ..r.clone()
        };
        let mine = ConfigRecord { digest: 1, ..r };
        assert_eq!(
            config_gate(1, 256, Some(Ok(&mine)), [2, 2]),
            ConfigGate::Join
        );
        // Members still run the recorded configuration: stay out.
        assert_eq!(
            config_gate(1, 256, Some(Ok(&other)), [2, 1, 2]),
            ConfigGate::Refuse { running: 2 }
        );
        // Nobody runs it any more (a restart of every node with a new configuration).
        assert_eq!(
            config_gate(1, 256, Some(Ok(&other)), [1, 1]),
            ConfigGate::Replace
        );
        assert_eq!(
            config_gate(1, 256, Some(Ok(&other)), []),
            ConfigGate::Replace
        );
        // Another id geometry is another configuration; an unreadable record is stale.
        assert_eq!(
            config_gate(1, 512, Some(Ok(&mine)), [1]),
            ConfigGate::Replace
        );
        assert_eq!(config_gate(1, 256, Some(Err(())), [1]), ConfigGate::Replace);
    }

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
