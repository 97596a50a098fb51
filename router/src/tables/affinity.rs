//! Flow affinity across an HA takeover (issue 15, seed 004): the flow identity and target the
//! workers' tables hold, their `AFFINITY` sync record, and [`AffinitySync`], what the workers
//! and the WCCP driver share to publish, adopt and re-export them.
//!
//! While the node is active, a worker publishes a record when it remembers a new flow (a SYN)
//! and a delete when a remembered flow ends (RST), expires (its table's once-a-second sweep), is
//! evicted from a full slot set, or is dropped with its table on a resize: the peer's copy is a
//! mirror of the workers' tables, bounded by their capacity. Established segments publish
//! nothing.
//!
//! On the standby the peer's records go into one bounded shared table of **adopted** flows, not
//! into the workers' tables (the standby's fanout may put a flow on another worker than the
//! active's). Workers consult it only when their own table misses on a segment that is not a
//! SYN (a flow that started before the takeover); a hit moves the flow into the worker's table.
//! The check costs one relaxed load while the adopted table is empty.
//!
//! Becoming active, the adopted flows are this node's: they are re-exported with the workers'
//! tables (each worker answers an export request on its next loop), and those no segment claims
//! within the idle timeout are forgotten (and deleted at the peer).

use crate::statesync::SyncFeed;
use hasync::{Op, Record, TableId};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A flow: service, addresses and ports of the client-to-server direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowId {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Service group.
    pub service: u8,
}

impl FlowId {
    /// The flow of a packet.
    pub fn new(service: u8, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> FlowId {
        FlowId {
            src: src.into(),
            dst: dst.into(),
            sport,
            dport,
            service,
        }
    }

    /// The flow packed in two words (what the workers' keyed hash reads).
    pub(crate) fn words(&self) -> (u64, u64) {
        let a = (u64::from(self.src) << 32) | u64::from(self.dst);
        let b =
            (u64::from(self.sport) << 24) | (u64::from(self.dport) << 8) | u64::from(self.service);
        (a, b)
    }
}

/// Where a remembered flow goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowTarget {
    /// To the cache at this address.
    Cache(Ipv4Addr),
    /// Forwarded normally (its bucket had no cache when it started).
    Normal,
}

/// The record format version (first octet of key and value).
pub const VERSION: u8 = 1;
/// Octets of an encoded key.
pub const KEY_LEN: usize = 14;
/// Octets of an encoded value.
pub const VALUE_LEN: usize = 6;

/// Why an affinity record did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// Not the length of this version's key or value.
    Length,
    /// Another format version.
    Version(u8),
    /// An unknown target kind.
    Kind(u8),
    /// A cache target at 0.0.0.0, or a normal target with an address.
    Address,
}

impl CodecError {
    /// The name it is counted under.
    pub fn as_str(self) -> &'static str {
        match self {
            CodecError::Length => "affinity-length",
            CodecError::Version(_) => "affinity-version",
            CodecError::Kind(_) => "affinity-kind",
            CodecError::Address => "affinity-address",
        }
    }
}

/// Encodes a flow as a record key: version, service, source, destination, source port,
/// destination port (big-endian).
pub fn encode_key(f: &FlowId) -> [u8; KEY_LEN] {
    let mut b = [0u8; KEY_LEN];
    b[0] = VERSION;
    b[1] = f.service;
    b[2..6].copy_from_slice(&f.src.to_be_bytes());
    b[6..10].copy_from_slice(&f.dst.to_be_bytes());
    b[10..12].copy_from_slice(&f.sport.to_be_bytes());
    b[12..14].copy_from_slice(&f.dport.to_be_bytes());
    b
}

/// Decodes a record key; refuses another version or length.
pub fn decode_key(b: &[u8]) -> Result<FlowId, CodecError> {
    let b: &[u8; KEY_LEN] = b.try_into().map_err(|_| CodecError::Length)?;
    if b[0] != VERSION {
        return Err(CodecError::Version(b[0]));
    }
    Ok(FlowId {
        service: b[1],
        src: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
        dst: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
        sport: u16::from_be_bytes([b[10], b[11]]),
        dport: u16::from_be_bytes([b[12], b[13]]),
    })
}

/// Encodes a target as a record value: version, kind (0 normal, 1 cache), cache address.
pub fn encode_value(t: FlowTarget) -> [u8; VALUE_LEN] {
    let mut b = [0u8; VALUE_LEN];
    b[0] = VERSION;
    if let FlowTarget::Cache(a) = t {
        b[1] = 1;
        b[2..6].copy_from_slice(&a.octets());
    }
    b
}

/// Decodes a record value; refuses another version or length, unknown kinds and addresses
/// that do not fit the kind.
pub fn decode_value(b: &[u8]) -> Result<FlowTarget, CodecError> {
    let b: &[u8; VALUE_LEN] = b.try_into().map_err(|_| CodecError::Length)?;
    if b[0] != VERSION {
        return Err(CodecError::Version(b[0]));
    }
    let addr = Ipv4Addr::new(b[2], b[3], b[4], b[5]);
    match (b[1], addr.is_unspecified()) {
        (0, true) => Ok(FlowTarget::Normal),
        (1, false) => Ok(FlowTarget::Cache(addr)),
        (0 | 1, _) => Err(CodecError::Address),
        (k, _) => Err(CodecError::Kind(k)),
    }
}

/// The record of a remembered flow.
pub fn upsert_record(f: &FlowId, t: FlowTarget) -> Record {
    Record::upsert(
        TableId::AFFINITY,
        encode_key(f).to_vec(),
        encode_value(t).to_vec(),
    )
}

/// The record of a forgotten flow.
pub fn delete_record(f: &FlowId) -> Record {
    Record::delete(TableId::AFFINITY, encode_key(f).to_vec())
}

/// What [`AffinitySync`] counts, for status.
#[derive(Debug, Default)]
pub struct AffinitySyncCounters {
    /// Upserts published (new flows while active, and re-exports).
    pub published: AtomicU64,
    /// Deletes published (flows ended, expired, evicted).
    pub deleted: AtomicU64,
    /// Full re-exports asked for.
    pub exports: AtomicU64,
    /// The peer's records applied to the adopted table.
    pub applied: AtomicU64,
    /// The peer's records refused (undecodable, or this node is active).
    pub refused: AtomicU64,
    /// The peer's new flows not adopted because the adopted table was full.
    pub adopt_full: AtomicU64,
    /// Segments whose flow a worker found in the adopted table (after a takeover).
    pub adopted_hits: AtomicU64,
    /// Adopted flows forgotten because no segment claimed them in time after a takeover.
    pub expired: AtomicU64,
}

/// The adopted flows: the peer's, held for whichever worker sees them first.
#[derive(Debug, Default)]
struct Adopted {
    /// Flow → target and when it was adopted (or this node became active).
    map: HashMap<FlowId, (FlowTarget, Instant)>,
    /// Most flows held.
    cap: usize,
    last_sweep: Option<Instant>,
}

/// Shared by the workers (publishing, adopted-table lookups on a miss) and the WCCP driver
/// (role, applying the peer's records, export requests, expiry); one per router, kept across
/// plane rebuilds.
#[derive(Debug)]
pub struct AffinitySync {
    feed: SyncFeed,
    /// The node is active: workers publish (always true without HA; then the feed is off).
    active: AtomicBool,
    /// Bumped to ask every worker to publish its whole table.
    export_gen: AtomicU64,
    adopted: Mutex<Adopted>,
    /// Flows in `adopted`, read without the lock on a worker's miss.
    adopted_len: AtomicUsize,
    /// Counters.
    pub counters: AffinitySyncCounters,
}

impl Default for AffinitySync {
    fn default() -> Self {
        AffinitySync::new(SyncFeed::disabled(), 0)
    }
}

impl AffinitySync {
    /// Publishing into `feed`, adopting up to `cap` of the peer's flows.
    pub fn new(feed: SyncFeed, cap: usize) -> AffinitySync {
        AffinitySync {
            feed,
            active: AtomicBool::new(true),
            export_gen: AtomicU64::new(0),
            adopted: Mutex::new(Adopted {
                cap,
                ..Adopted::default()
            }),
            adopted_len: AtomicUsize::new(0),
            counters: AffinitySyncCounters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Adopted> {
        // A panic while holding it leaves a map that is still consistent: take it anyway.
        self.adopted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how many of the peer's flows may be adopted (the configured table size).
    pub fn set_capacity(&self, cap: usize) {
        self.lock().cap = cap;
    }

    /// True when workers publish their changes: HA sync is on and the node is active.
    #[inline]
    pub fn syncing(&self) -> bool {
        self.feed.enabled() && self.active.load(Ordering::Relaxed)
    }

    /// Publishes that `flow` goes to `target` (while syncing).
    pub fn publish_upsert(&self, flow: &FlowId, target: FlowTarget) {
        if self.syncing() {
            self.feed.publish(upsert_record(flow, target));
            self.counters.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes that `flow` is forgotten (while syncing).
    pub fn publish_delete(&self, flow: &FlowId) {
        if self.syncing() {
            self.feed.publish(delete_record(flow));
            self.counters.deleted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The export request workers compare with the last one they answered.
    #[inline]
    pub fn export_generation(&self) -> u64 {
        self.export_gen.load(Ordering::Acquire)
    }

    /// The node's role changed. Becoming active, the adopted flows get a full idle timeout
    /// from `now` to be claimed by a segment.
    pub fn set_active(&self, active: bool, now: Instant) {
        self.active.store(active, Ordering::Relaxed);
        if active {
            for v in self.lock().map.values_mut() {
                v.1 = now;
            }
        }
    }

    /// Re-exports every flow this node holds (while syncing): the adopted ones now, the
    /// workers' on their next loop.
    pub fn export_all(&self) {
        if !self.syncing() {
            return;
        }
        self.counters.exports.fetch_add(1, Ordering::Relaxed);
        self.export_gen.fetch_add(1, Ordering::AcqRel);
        let held: Vec<(FlowId, FlowTarget)> =
            self.lock().map.iter().map(|(f, (t, _))| (*f, *t)).collect();
        for (f, t) in held {
            self.publish_upsert(&f, t);
        }
    }

    /// One of the peer's `AFFINITY` records, applied to the adopted table while standby.
    /// True when applied; an active node refuses them (its flows are its own: a restarted
    /// peer's empty resync must not delete adopted flows not yet claimed).
    pub fn apply(&self, rec: &Record, now: Instant) -> bool {
        let ok = self.try_apply(rec, now).is_ok();
        let c = if ok {
            &self.counters.applied
        } else {
            &self.counters.refused
        };
        c.fetch_add(1, Ordering::Relaxed);
        ok
    }

    /// One of another cluster node's `AFFINITY` records whose flow's id this node has just
    /// taken (issue 16): into the adopted table although this node is active, for the worker
    /// that sees the flow next. True when applied.
    pub fn adopt_from_cluster(&self, rec: &Record, now: Instant) -> bool {
        let ok = rec.op == Op::Upsert && self.try_apply_any_role(rec, now).is_ok();
        let c = if ok {
            &self.counters.applied
        } else {
            &self.counters.refused
        };
        c.fetch_add(1, Ordering::Relaxed);
        ok
    }

    fn try_apply(&self, rec: &Record, now: Instant) -> Result<(), ()> {
        if self.active.load(Ordering::Relaxed) {
            return Err(());
        }
        self.try_apply_any_role(rec, now)
    }

    fn try_apply_any_role(&self, rec: &Record, now: Instant) -> Result<(), ()> {
        if rec.table != TableId::AFFINITY {
            return Err(());
        }
        let flow = decode_key(&rec.key).map_err(|_| ())?;
        let mut a = self.lock();
        match rec.op {
            Op::Upsert => {
                let target = decode_value(&rec.value).map_err(|_| ())?;
                if a.map.len() >= a.cap && !a.map.contains_key(&flow) {
                    self.counters.adopt_full.fetch_add(1, Ordering::Relaxed);
                    return Err(());
                }
                a.map.insert(flow, (target, now));
            }
            Op::Delete => {
                a.map.remove(&flow);
            }
        }
        self.adopted_len.store(a.map.len(), Ordering::Relaxed);
        Ok(())
    }

    /// A worker's miss on a flow already under way: the adopted flow, taken out of the shared
    /// table (the worker remembers it from now on).
    #[inline]
    pub fn take(&self, flow: &FlowId) -> Option<FlowTarget> {
        if self.adopted_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.take_slow(flow)
    }

    #[cold]
    fn take_slow(&self, flow: &FlowId) -> Option<FlowTarget> {
        let mut a = self.lock();
        let (target, _) = a.map.remove(flow)?;
        self.adopted_len.store(a.map.len(), Ordering::Relaxed);
        self.counters.adopted_hits.fetch_add(1, Ordering::Relaxed);
        Some(target)
    }

    /// While active (about once a second): forgets adopted flows no segment claimed within
    /// `idle` of the takeover, and deletes them at the peer. A standby keeps the peer's flows
    /// until the peer deletes them.
    pub fn sweep(&self, now: Instant, idle: Duration) {
        if !self.active.load(Ordering::Relaxed) || self.adopted_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let gone: Vec<FlowId> = {
            let mut a = self.lock();
            if a.last_sweep
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
            {
                return;
            }
            a.last_sweep = Some(now);
            let gone: Vec<FlowId> = a
                .map
                .iter()
                .filter(|(_, (_, since))| now.saturating_duration_since(*since) >= idle)
                .map(|(f, _)| *f)
                .collect();
            for f in &gone {
                a.map.remove(f);
            }
            self.adopted_len.store(a.map.len(), Ordering::Relaxed);
            gone
        };
        self.counters
            .expired
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        for f in &gone {
            self.publish_delete(f);
        }
    }

    /// Flows held in the adopted table now.
    pub fn adopted(&self) -> usize {
        self.adopted_len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flow(n: u16) -> FlowId {
        FlowId::new(
            0,
            [10, 0, 1, 10].into(),
            [10, 0, 2, 10].into(),
            40000 + n,
            80,
        )
    }

    fn cache() -> FlowTarget {
        FlowTarget::Cache([10, 0, 3, 10].into())
    }

    #[test]
    fn a_flow_and_its_target_round_trip() {
        let f = FlowId::new(
            91,
            [192, 0, 2, 1].into(),
            [198, 51, 100, 7].into(),
            1,
            65535,
        );
        assert_eq!(decode_key(&encode_key(&f)), Ok(f));
        for t in [cache(), FlowTarget::Normal] {
            assert_eq!(decode_value(&encode_value(t)), Ok(t));
        }
    }

    #[test]
    fn other_versions_lengths_kinds_and_addresses_are_refused() {
        let k = encode_key(&flow(1));
        let mut k2 = k;
        k2[0] = 2;
        assert_eq!(decode_key(&k2), Err(CodecError::Version(2)));
        assert_eq!(decode_key(&k[..13]), Err(CodecError::Length));
        let v = encode_value(cache());
        assert_eq!(decode_value(&v[..5]), Err(CodecError::Length));
        let mut v2 = v;
        v2[1] = 7;
        assert_eq!(decode_value(&v2), Err(CodecError::Kind(7)));
        let mut v3 = v;
        v3[1] = 0;
        assert_eq!(decode_value(&v3), Err(CodecError::Address));
        assert_eq!(
            decode_value(&[VERSION, 1, 0, 0, 0, 0]),
            Err(CodecError::Address)
        );
    }

    fn syncing(cap: usize) -> (AffinitySync, SyncFeed) {
        let feed = SyncFeed::new(64);
        (AffinitySync::new(feed.clone(), cap), feed)
    }

    fn drained(feed: &SyncFeed) -> Vec<Record> {
        let mut out = Vec::new();
        feed.drain(&mut out);
        out
    }

    #[test]
    fn a_standby_adopts_the_peers_flows_up_to_its_capacity_and_a_worker_takes_one_once() {
        let t0 = Instant::now();
        let (s, feed) = syncing(2);
        s.set_active(false, t0);
        assert!(s.apply(&upsert_record(&flow(1), cache()), t0));
        assert!(s.apply(&upsert_record(&flow(2), FlowTarget::Normal), t0));
        assert!(!s.apply(&upsert_record(&flow(3), cache()), t0), "full");
        assert_eq!(s.counters.adopt_full.load(Ordering::Relaxed), 1);
        assert!(s.apply(&delete_record(&flow(2)), t0));
        assert_eq!(s.adopted(), 1);
        // Garbage is refused, never a panic.
        let mut bad = upsert_record(&flow(4), cache());
        bad.value[1] = 9;
        assert!(!s.apply(&bad, t0));
        // A standby publishes nothing.
        s.publish_upsert(&flow(5), cache());
        assert!(drained(&feed).is_empty());
        assert_eq!(s.take(&flow(1)), Some(cache()));
        assert_eq!(s.take(&flow(1)), None, "moved to the worker");
        assert_eq!(s.counters.adopted_hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_cluster_node_adopts_flows_of_ids_it_takes_while_active() {
        let t0 = Instant::now();
        let (s, _feed) = syncing(4);
        let rec = upsert_record(&flow(1), cache());
        assert!(
            !s.apply(&rec, t0),
            "HA: an active node refuses the peer's flows"
        );
        assert!(s.adopt_from_cluster(&rec, t0));
        assert!(
            !s.adopt_from_cluster(&delete_record(&flow(1)), t0),
            "only upserts"
        );
        assert_eq!(s.take(&flow(1)), Some(cache()));
    }

    #[test]
    fn becoming_active_re_exports_the_adopted_flows_and_expires_the_unclaimed() {
        let t0 = Instant::now();
        let (s, feed) = syncing(16);
        s.set_active(false, t0);
        s.apply(&upsert_record(&flow(1), cache()), t0);
        s.apply(&upsert_record(&flow(2), cache()), t0);
        let gen = s.export_generation();
        // Long after adoption, the takeover: the flows get a full idle timeout from now.
        let t1 = t0 + Duration::from_secs(600);
        s.set_active(true, t1);
        assert!(
            !s.apply(&delete_record(&flow(1)), t1),
            "an active node refuses the peer's deletes"
        );
        s.export_all();
        assert_ne!(s.export_generation(), gen, "workers are asked to export");
        let mut keys: Vec<Vec<u8>> = drained(&feed)
            .into_iter()
            .filter(|r| r.op == Op::Upsert)
            .map(|r| r.key)
            .collect();
        keys.sort();
        let mut want = vec![encode_key(&flow(1)).to_vec(), encode_key(&flow(2)).to_vec()];
        want.sort();
        assert_eq!(keys, want);
        let idle = Duration::from_secs(120);
        s.sweep(t1 + Duration::from_secs(60), idle);
        assert_eq!(s.adopted(), 2);
        assert_eq!(s.take(&flow(1)), Some(cache()));
        s.sweep(t1 + Duration::from_secs(121), idle);
        assert_eq!(s.adopted(), 0);
        let deletes: Vec<Record> = drained(&feed);
        assert_eq!(deletes, vec![delete_record(&flow(2))]);
    }

    proptest! {
        #[test]
        fn decoding_never_panics_and_what_decodes_re_encodes(
            key in proptest::collection::vec(any::<u8>(), 0..20),
            value in proptest::collection::vec(any::<u8>(), 0..10),
        ) {
            if let Ok(f) = decode_key(&key) {
                prop_assert_eq!(&encode_key(&f)[..], &key[..]);
            }
            if let Ok(t) = decode_value(&value) {
                prop_assert_eq!(&encode_value(t)[..], &value[..]);
            }
        }

        #[test]
        fn every_flow_and_target_round_trips(
            service: u8, src: u32, dst: u32, sport: u16, dport: u16, addr: u32,
        ) {
            let f = FlowId { src, dst, sport, dport, service };
            prop_assert_eq!(decode_key(&encode_key(&f)), Ok(f));
            let t = if addr == 0 { FlowTarget::Normal } else { FlowTarget::Cache(addr.into()) };
            prop_assert_eq!(decode_value(&encode_value(t)), Ok(t));
        }
    }
}
