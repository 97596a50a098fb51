//! Raw ESP through the NAT (issue 16, seed 003 claim 7): the `nat` crate's SPI-keyed
//! [`EspTable`], shared by every worker in [`ESP_SHARDS`] mutex-guarded shards keyed by the
//! remote address.
//!
//! ESP has no port to carry a VID, so its packets are translated by whichever worker reads
//! them, under the shard lock of their remote (both directions of an SA pair name the same
//! remote, and the pending-SPI rule needs all of a remote's sessions in one table). A new
//! session or a learnt inbound SPI is published into the node's sync feed (`NAT_SESSION`
//! records in the ESP format, `nat::sync::encode_esp`), expiry publishes deletes, and an HA
//! standby or a cluster node that takes the remote's id over installs them.

use super::SessionRow;
use crate::statesync::SyncFeed;
use nat::esp::{self, EspCounters, EspDrop, EspSession, EspTable};
use nat::translate::{Side, Skip};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Shards of the ESP table (a remote's sessions all live in one).
pub const ESP_SHARDS: usize = 8;
/// Slab slots each shard's expiry visits per call.
const EXPIRY_BUDGET: usize = 1024;

/// What the NAT stage does with an ESP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspVerdict {
    /// Translated: go on.
    Forward,
    /// Dropped, for a reason.
    Drop(crate::pipeline::drop::DropReason),
}

/// The node's ESP sessions.
#[derive(Debug)]
pub struct EspNat {
    shards: Vec<Mutex<EspTable>>,
    /// Idle timeout, seconds.
    timeout_s: u32,
    /// Packets dropped on the standby because they needed a new session.
    pub standby_drops: AtomicU64,
    /// Records published (sessions created, SPIs learnt, expiries).
    pub published: AtomicU64,
}

/// The ESP part of the NAT status.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EspStatus {
    /// Sessions held.
    pub sessions: u64,
    /// Sessions the shards can hold in all.
    pub capacity: u64,
    /// Outbound packets translated.
    pub out_packets: u64,
    /// Inbound packets translated.
    pub in_packets: u64,
    /// Sessions created by an inside host's packet.
    pub created: u64,
    /// Inbound SPIs learnt.
    pub learnt: u64,
    /// Unlearnt sessions that lost the pending slot of their remote to a newer one.
    pub pending_replaced: u64,
    /// Inbound packets with an unknown SPI and nothing pending (dropped).
    pub no_session: u64,
    /// New sessions refused for a full table (dropped).
    pub full: u64,
    /// Sessions expired.
    pub expired: u64,
    /// Synced sessions installed unlearnt because another session holds their SPI.
    pub spi_conflicts: u64,
    /// Synced sessions installed.
    pub installed: u64,
    /// Packets dropped on the HA standby for want of a session.
    pub standby_drops: u64,
    /// Sync records published.
    pub published: u64,
    /// Idle timeout, seconds.
    pub timeout_s: u32,
}

impl EspNat {
    /// Shards of `per_shard` sessions each, idle timeout `timeout_s`.
    pub fn new(per_shard: usize, timeout_s: u32, seed: u64) -> EspNat {
        EspNat {
            shards: (0..ESP_SHARDS)
                .map(|i| Mutex::new(EspTable::new(per_shard, seed.rotate_left(i as u32 * 7))))
                .collect(),
            timeout_s,
            standby_drops: AtomicU64::new(0),
            published: AtomicU64::new(0),
        }
    }

    fn shard(&self, remote: Ipv4Addr) -> std::sync::MutexGuard<'_, EspTable> {
        let h = nat::cluster::hash64(0x6573_7073, &[u64::from(u32::from(remote))]);
        let i = (h % ESP_SHARDS as u64) as usize;
        // A worker that panicked under the lock left the table consistent between calls.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, feed: &SyncFeed, s: &EspSession) {
        if feed.enabled() {
            let (k, v) = nat::sync::encode_esp(s);
            feed.publish(hasync::Record::upsert(
                hasync::TableId::NAT_SESSION,
                k.to_vec(),
                v.to_vec(),
            ));
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An inside host's ESP packet (`l3`, IPv4 header first) leaving with source pool
    /// address `pool`: finds or creates its session and rewrites the source. `create` false
    /// (the HA standby) translates only existing sessions.
    pub fn outbound(
        &self,
        l3: &mut [u8],
        pool: Ipv4Addr,
        now_s: u32,
        create: bool,
        feed: &SyncFeed,
    ) -> EspVerdict {
        use crate::pipeline::drop::DropReason;
        let p = match esp::parse(l3) {
            Ok(p) => p,
            Err(e) => return EspVerdict::Drop(skip_reason(e)),
        };
        let mut t = self.shard(p.dst);
        if !create
            && t.get(&esp::EspKey {
                inside: p.src,
                remote: p.dst,
                out_spi: p.spi,
            })
            .is_none()
        {
            self.standby_drops.fetch_add(1, Ordering::Relaxed);
            return EspVerdict::Drop(DropReason::NatStandby);
        }
        match t.outbound(p.src, pool, p.dst, p.spi, now_s) {
            Ok(out) => {
                drop(t);
                if let Some(s) = out.sync {
                    self.publish(feed, &s);
                }
                match esp::rewrite(l3, Side::Src, out.pool) {
                    Ok(_) => EspVerdict::Forward,
                    Err(e) => EspVerdict::Drop(skip_reason(e)),
                }
            }
            Err(d) => EspVerdict::Drop(drop_reason(d)),
        }
    }

    /// An ESP packet from the outside to a pool address: by its SPI (or the remote's pending
    /// session) to the inside host, destination rewritten.
    pub fn inbound(&self, l3: &mut [u8], now_s: u32, feed: &SyncFeed) -> EspVerdict {
        let p = match esp::parse(l3) {
            Ok(p) => p,
            Err(e) => return EspVerdict::Drop(skip_reason(e)),
        };
        let r = self.shard(p.src).inbound(p.dst, p.src, p.spi, now_s);
        match r {
            Ok(i) => {
                if let Some(s) = i.sync {
                    self.publish(feed, &s);
                }
                match esp::rewrite(l3, Side::Dst, i.inside) {
                    Ok(_) => EspVerdict::Forward,
                    Err(e) => EspVerdict::Drop(skip_reason(e)),
                }
            }
            Err(d) => EspVerdict::Drop(drop_reason(d)),
        }
    }

    /// Expires idle sessions (a bounded sweep of every shard) and publishes their deletes;
    /// `expire` false (the standby keeps its peer's sessions) does nothing.
    pub fn housekeep(&self, now_s: u32, expire: bool, feed: &SyncFeed) {
        if !expire {
            return;
        }
        let mut gone = Vec::new();
        for shard in &self.shards {
            let mut t = shard.lock().unwrap_or_else(|e| e.into_inner());
            t.expire(now_s, self.timeout_s, EXPIRY_BUDGET, &mut gone);
        }
        if feed.enabled() {
            for s in &gone {
                feed.publish(hasync::Record::delete(
                    hasync::TableId::NAT_SESSION,
                    s.key().encode().to_vec(),
                ));
                self.published.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Installs or removes a synced ESP record (an HA peer's; the caller counts it). True when
    /// applied.
    pub fn apply(&self, rec: &hasync::Record, now_s: u32) -> bool {
        match rec.op {
            hasync::Op::Upsert => match nat::sync::decode_esp(&rec.key, &rec.value) {
                Ok(s) => self.install(&s, now_s),
                Err(_) => false,
            },
            hasync::Op::Delete => match nat::sync::decode_esp_delete(&rec.key) {
                Ok(nat::sync::EspSyncEvent::Delete(k)) => {
                    self.shard(k.remote).remove(&k);
                    true
                }
                _ => false,
            },
        }
    }

    /// Installs one session (table full: false).
    pub fn install(&self, s: &EspSession, now_s: u32) -> bool {
        self.shard(s.remote).install(s, now_s).is_ok()
    }

    /// Cluster: removes the sessions of remotes whose id (`nat::cluster::esp_id` under `key`)
    /// is in `ids`; their published records stay for the new owner. Returns how many.
    pub fn drop_ids(&self, key: u64, ids: &nat::cluster::IdSet) -> usize {
        let mut gone = Vec::new();
        for shard in &self.shards {
            let mut t = shard.lock().unwrap_or_else(|e| e.into_inner());
            t.drop_ids(key, ids, &mut gone);
        }
        gone.len()
    }

    /// Republishes every session (a full re-export for a peer that resyncs).
    pub fn export(&self, feed: &SyncFeed) {
        for shard in &self.shards {
            let all: Vec<EspSession> = shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .collect();
            for s in &all {
                self.publish(feed, s);
            }
        }
    }

    /// The sessions as `swrouter nat sessions` rows.
    pub fn list(&self, now_s: u32) -> Vec<SessionRow> {
        let mut rows = Vec::new();
        for shard in &self.shards {
            let t = shard.lock().unwrap_or_else(|e| e.into_inner());
            rows.extend(t.iter().map(|s| {
                SessionRow {
                    proto: "esp".to_string(),
                    inside: s.inside.to_string(),
                    outside: s.pool.to_string(),
                    remote: s.remote.to_string(),
                    state: if s.in_spi.is_some() {
                        "learnt"
                    } else {
                        "learning"
                    }
                    .to_string(),
                    idle_s: now_s.saturating_sub(s.last_seen),
                    worker: super::SHARED_WORKER,
                    vid: u16::MAX,
                    spi_out: Some(s.out_spi.get()),
                    spi_in: s.in_spi.map(NonZeroU32::get),
                }
            }));
        }
        rows
    }

    /// The status counters, summed over the shards.
    pub fn status(&self) -> EspStatus {
        let mut c = EspCounters::default();
        let (mut sessions, mut capacity) = (0u64, 0u64);
        for shard in &self.shards {
            let t = shard.lock().unwrap_or_else(|e| e.into_inner());
            c.add(&t.counters);
            sessions += t.len() as u64;
            capacity += t.capacity() as u64;
        }
        EspStatus {
            sessions,
            capacity,
            out_packets: c.out_packets,
            in_packets: c.in_packets,
            created: c.created,
            learnt: c.learnt,
            pending_replaced: c.pending_replaced,
            no_session: c.no_session,
            full: c.full,
            expired: c.expired,
            spi_conflicts: c.spi_conflicts,
            installed: c.installed,
            standby_drops: self.standby_drops.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            timeout_s: self.timeout_s,
        }
    }
}

/// The drop reason of an ESP packet that does not parse.
fn skip_reason(s: Skip) -> crate::pipeline::drop::DropReason {
    use crate::pipeline::drop::DropReason;
    match s {
        Skip::Fragment => DropReason::NatFragment,
        _ => DropReason::NatMalformed,
    }
}

fn drop_reason(d: EspDrop) -> crate::pipeline::drop::DropReason {
    use crate::pipeline::drop::DropReason;
    match d {
        EspDrop::Full => DropReason::NatEspFull,
        EspDrop::NoSession => DropReason::NatEspNoSession,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSIDE: [u8; 4] = [10, 0, 1, 2];
    const POOL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const REMOTE: [u8; 4] = [198, 51, 100, 2];

    /// An IPv4 ESP packet with a valid header checksum.
    fn esp_packet(src: [u8; 4], dst: [u8; 4], spi: u32, seq: u32) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 12];
        crate::wire::ipv4::Ipv4Repr {
            src: src.into(),
            dst: dst.into(),
            protocol: 50,
            payload_len: 12,
            ttl: 64,
            ident: 1,
            tos: 0,
            dont_fragment: true,
        }
        .emit(&mut p[..20]);
        p[20..24].copy_from_slice(&spi.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p
    }

    fn ip_ok(p: &[u8]) -> bool {
        crate::wire::checksum::checksum(&p[..20]) == 0
    }

    #[test]
    fn the_standby_translates_the_actives_sas_from_their_records_and_creates_none() {
        let feed = SyncFeed::new(64);
        let active = EspNat::new(64, 300, 1);
        let standby = EspNat::new(64, 300, 2);
        // The active: the inside host's packet creates the SA, the answer teaches its SPI.
        let mut out = esp_packet(INSIDE, REMOTE, 0x1000, 0);
        assert_eq!(
            active.outbound(&mut out, POOL, 10, true, &feed),
            EspVerdict::Forward
        );
        assert_eq!(&out[12..16], &POOL.octets());
        assert!(ip_ok(&out));
        let mut back = esp_packet(REMOTE, POOL.octets(), 0x2000, 0);
        assert_eq!(active.inbound(&mut back, 10, &feed), EspVerdict::Forward);
        assert_eq!(&back[16..20], &INSIDE);
        assert!(ip_ok(&back));
        let mut recs = Vec::new();
        feed.drain(&mut recs);
        assert_eq!(recs.len(), 2, "created, then learnt");
        // The standby creates nothing on its own.
        let mut other = esp_packet([10, 0, 1, 3], REMOTE, 0x1001, 0);
        assert_eq!(
            standby.outbound(&mut other, POOL, 10, false, &SyncFeed::disabled()),
            EspVerdict::Drop(crate::pipeline::drop::DropReason::NatStandby)
        );
        // With the records, it translates the remote's next packet without a new outbound one.
        for r in &recs {
            assert!(standby.apply(r, 20));
        }
        let mut back = esp_packet(REMOTE, POOL.octets(), 0x2000, 1);
        assert_eq!(
            standby.inbound(&mut back, 20, &SyncFeed::disabled()),
            EspVerdict::Forward
        );
        assert_eq!(&back[16..20], &INSIDE);
        let mut out = esp_packet(INSIDE, REMOTE, 0x1000, 1);
        assert_eq!(
            standby.outbound(&mut out, POOL, 20, false, &SyncFeed::disabled()),
            EspVerdict::Forward
        );
        let st = standby.status();
        // Installed twice: created, then learnt (idempotent).
        assert_eq!((st.sessions, st.installed, st.standby_drops), (1, 2, 1));
        // Expiry publishes the delete; the standby applies it.
        active.housekeep(10 + 301, true, &feed);
        let mut gone = Vec::new();
        // The sweep is bounded per call: a few calls cover the slab.
        for _ in 0..4 {
            active.housekeep(10 + 301, true, &feed);
        }
        feed.drain(&mut gone);
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0].op, hasync::Op::Delete);
        assert!(standby.apply(&gone[0], 400));
        assert_eq!(standby.status().sessions, 0);
        // A record that is no ESP record is refused, never a panic.
        let junk = hasync::Record::upsert(hasync::TableId::NAT_SESSION, vec![1, 50], vec![1]);
        assert!(!standby.apply(&junk, 400));
    }
}
