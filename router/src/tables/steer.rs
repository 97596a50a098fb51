//! The steering plane: compiled service-chain tables, device health as the data plane sees it,
//! and the per-service and per-device counters (issue 7, SPEC.md §5).
//!
//! One plane is built per config (start and every reload) and travels in the [`super::Tables`]
//! snapshot, so a reload swaps services, devices and counters atomically with the routes: a
//! packet is steered entirely by the old tables or entirely by the new ones. Health is an
//! `ArcSwap` inside the plane because the health monitor changes it between reloads.

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Service drop reasons counted per service, in this order.
pub const SERVICE_DROPS: [&str; 5] = [
    "steering-acl-deny",
    "steering-unexpected-source",
    "steering-no-device",
    "steering-reset",
    "steering-copy-overflow",
];

/// Index into a service's drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum ServiceDrop {
    /// Denied by the service ACL.
    AclDeny,
    /// Frame from an unexpected source MAC.
    UnexpectedSource,
    /// No live device.
    NoDevice,
    /// Answered with a RST (dead device, `reset` pool).
    Reset,
    /// A copy was lost to a full copy queue.
    CopyOverflow,
}

/// Counters shared by all workers (relaxed `fetch_add`; a handful per steered packet).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Packets.
    pub packets: AtomicU64,
    /// Bytes (Ethernet frames).
    pub bytes: AtomicU64,
}

impl Traffic {
    /// Counts one frame of `len` bytes.
    #[inline]
    pub fn count(&self, len: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// One service's counters.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Client → service packets steered.
    pub forward: Traffic,
    /// Service → client packets steered.
    pub reverse: Traffic,
    /// Drops by [`ServiceDrop`].
    pub drops: [AtomicU64; 5],
}

/// One device's counters.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Frames sent to the device on the main path.
    pub sent: Traffic,
    /// Copies sent to the device (promiscuous hops).
    pub copies: Traffic,
    /// Copies for it lost to a full copy queue.
    pub copy_drops: AtomicU64,
    /// Probe answers that accepted the handshake (SYN-ACK), counted by the health driver.
    pub probe_ok: AtomicU64,
    /// Probe answers that refused it (RST), counted by the health driver.
    pub probe_refused: AtomicU64,
    /// Times the health checks took the device out of service.
    pub downs: AtomicU64,
    /// When the device last changed between in and out of service (Unix time, ms; 0: never).
    pub changed_unix_ms: AtomicU64,
}

/// Compiled tables, health and counters of one config.
#[derive(Debug)]
pub struct SteeringPlane {
    /// The compiled tables; `None` when the config steers nothing (the stage then passes all).
    pub tables: Option<steering::Tables>,
    /// Device health the decision reads; replaced by the health monitor.
    pub health: ArcSwap<steering::PoolState>,
    /// Per-service counters, by `ServiceIdx`.
    pub services: Vec<ServiceCounters>,
    /// Per-device counters, by `DeviceIdx`.
    pub devices: Vec<DeviceCounters>,
    /// Per ACL rule (all services' rules, by the index `steering::Tables::acl_rule` takes):
    /// packets the rule decided, permitted or denied by its action. A rule naming one client
    /// (a /32 source) is that client's counter.
    pub acl: Vec<Traffic>,
    /// Passive-check evidence from the workers (SYNs sent to a device, SYN-ACKs back from it),
    /// drained by the health driver every tick. Bounded and lock-free; when full, evidence is
    /// dropped and counted in `passive_lost` (the check then sees fewer SYNs, never a stall).
    pub passive: crossbeam_queue::ArrayQueue<PassiveEvent>,
    /// Passive evidence lost to a full queue.
    pub passive_lost: AtomicU64,
    /// Connections opened during a reset pool's drain window that a worker's drain memory
    /// had to forget for newer ones (their next segment is reset).
    pub drain_evicted: AtomicU64,
    /// The drain memory's HA sync; one per router, carried from plane to plane.
    pub drain_sync: Arc<DrainSync>,
    /// The tables this plane replaced, for the frames still inside their devices at the swap.
    pub retired: Option<RetiredSteering>,
    /// Frames back from a device of the replaced tables, finished by them during the grace.
    pub retired_forwarded: Traffic,
}

/// How long a reload's replaced steering tables finish the frames that were inside their
/// devices at the swap. A transparent firewall or an IDS holds a frame for microseconds to a
/// few milliseconds; two seconds cover a loaded device without letting a removed chain live on.
pub const RELOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A reload's replaced steering tables, with the health they last saw, until the grace ends.
///
/// A frame that left the router for a device just before the swap comes back to an interface
/// or MAC the new tables may not know (the device was removed or replaced): the new tables do
/// not steer it or call its source unexpected, and it would be lost. During the grace such a
/// frame, when the old tables place it as coming back from one of their devices, walks the rest
/// of the old chain. Frames from clients and servers are always decided by the new tables.
#[derive(Debug)]
pub struct RetiredSteering {
    /// The replaced tables.
    pub tables: steering::Tables,
    /// Their device health at the swap.
    pub health: Arc<steering::PoolState>,
    /// The end of the grace.
    pub until: std::time::Instant,
}

impl RetiredSteering {
    /// The tables of `old` (a plane being replaced at `now`), if it steered anything.
    pub fn of(old: &SteeringPlane, now: std::time::Instant) -> Option<RetiredSteering> {
        Some(RetiredSteering {
            tables: old.tables.clone()?,
            health: old.health.load_full(),
            until: now + RELOAD_GRACE,
        })
    }
}

/// Most of the peer's drain-memory connections waiting for the workers to copy them.
pub const DRAIN_ADOPT_RING: usize = 8192;

/// The drain memory across an HA takeover (issue 15): while active, workers publish the
/// connections their memory remembers and forgets (`STEERING_DRAIN`); on the standby, the
/// peer's go into a bounded ring every worker copies into its own memory on its next loop
/// (the standby's fanout may place a connection on any worker), so a new active does not reset
/// connections opened during a drain window before the takeover.
#[derive(Debug)]
pub struct DrainSync {
    feed: crate::statesync::SyncFeed,
    active: std::sync::atomic::AtomicBool,
    /// Bumped to ask every worker to publish its whole memory.
    export_gen: AtomicU64,
    /// The peer's connections, newest last, at most [`DRAIN_ADOPT_RING`].
    ring: std::sync::Mutex<std::collections::VecDeque<u64>>,
    /// Connections ever pushed into the ring (a worker copies those past its own count).
    written: AtomicU64,
    /// Records published (remembered and forgotten connections, re-exports).
    pub published: AtomicU64,
    /// The peer's records applied.
    pub applied: AtomicU64,
    /// The peer's records refused (undecodable, or received while active).
    pub refused: AtomicU64,
}

impl Default for DrainSync {
    fn default() -> Self {
        DrainSync::new(crate::statesync::SyncFeed::disabled())
    }
}

impl DrainSync {
    /// Publishing into `feed`.
    pub fn new(feed: crate::statesync::SyncFeed) -> DrainSync {
        DrainSync {
            feed,
            active: std::sync::atomic::AtomicBool::new(true),
            export_gen: AtomicU64::new(0),
            ring: Default::default(),
            written: AtomicU64::new(0),
            published: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// True when workers journal and publish their drain memory: HA sync is on and the node
    /// is active.
    #[inline]
    pub fn syncing(&self) -> bool {
        self.feed.enabled() && self.active.load(Ordering::Relaxed)
    }

    /// The node's role changed.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
    }

    /// Publishes one change of a worker's memory (while syncing).
    pub fn publish(&self, c: steering::DrainChange) {
        if !self.syncing() {
            return;
        }
        use hasync::{Record, TableId};
        use steering::sync::{encode_drain_key, DRAIN_VALUE};
        let rec = match c {
            steering::DrainChange::Remembered(k) => {
                Record::upsert(TableId::STEERING_DRAIN, encode_drain_key(k), DRAIN_VALUE)
            }
            steering::DrainChange::Forgotten(k) => {
                Record::delete(TableId::STEERING_DRAIN, encode_drain_key(k))
            }
        };
        self.feed.publish(rec);
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Asks every worker to publish its whole memory on its next loop (while syncing).
    pub fn export_all(&self) {
        if self.syncing() {
            self.export_gen.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The export request workers compare with the last one they answered.
    #[inline]
    pub fn export_generation(&self) -> u64 {
        self.export_gen.load(Ordering::Acquire)
    }

    /// One of the peer's `STEERING_DRAIN` records, while standby: a remembered connection
    /// goes to the ring for the workers; a forgotten one is left to the workers' own
    /// overwriting (it is only a hint that a connection will not be reset). True when applied.
    pub fn apply(&self, rec: &hasync::Record) -> bool {
        self.apply_as(rec, !self.active.load(Ordering::Relaxed))
    }

    /// One of another cluster node's `STEERING_DRAIN` records (issue 16), taken although this
    /// node is active: the memory is keyed by a connection hash, which cannot be mapped to a
    /// distribution id, so every node keeps the others' remembered connections as hints for
    /// the connections that may move to it.
    pub fn apply_from_cluster(&self, rec: &hasync::Record) -> bool {
        self.apply_as(rec, true)
    }

    fn apply_as(&self, rec: &hasync::Record, allowed: bool) -> bool {
        let ok = rec.table == hasync::TableId::STEERING_DRAIN
            && allowed
            && match steering::sync::decode_drain_key(&rec.key) {
                Ok(k) if rec.op == hasync::Op::Upsert => {
                    let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
                    if ring.len() >= DRAIN_ADOPT_RING {
                        ring.pop_front();
                    }
                    ring.push_back(k);
                    self.written.fetch_add(1, Ordering::Release);
                    true
                }
                Ok(_) => true,
                Err(_) => false,
            };
        let c = if ok { &self.applied } else { &self.refused };
        c.fetch_add(1, Ordering::Relaxed);
        ok
    }

    /// Connections pushed since `seen` (a worker's count), oldest first, into `f`; returns
    /// the new count. One relaxed load when nothing is new; a worker that fell more than the
    /// ring behind skips what was overwritten.
    #[inline]
    pub fn adopt_since(&self, seen: u64, f: impl FnMut(u64)) -> u64 {
        let written = self.written.load(Ordering::Acquire);
        if written == seen {
            return seen;
        }
        self.adopt_slow(seen, f)
    }

    #[cold]
    fn adopt_slow(&self, seen: u64, mut f: impl FnMut(u64)) -> u64 {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let written = self.written.load(Ordering::Acquire);
        let new = written.saturating_sub(seen).min(ring.len() as u64) as usize;
        ring.iter().skip(ring.len() - new).for_each(|k| f(*k));
        written
    }
}

/// Capacity of the passive-evidence queue: many ticks' worth of new TCP flows.
pub const PASSIVE_QUEUE: usize = 4096;

/// One piece of passive-check evidence about a device of a pool with `passive-syns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveEvent {
    /// A client's SYN was sent to the device.
    Syn {
        /// The device.
        device: steering::DeviceIdx,
        /// The client.
        client: std::net::Ipv4Addr,
    },
    /// The device answered a client's handshake (SYN-ACK on its way back).
    Answered {
        /// The device.
        device: steering::DeviceIdx,
        /// The client.
        client: std::net::Ipv4Addr,
    },
}

impl Default for SteeringPlane {
    fn default() -> Self {
        SteeringPlane {
            tables: None,
            health: ArcSwap::from_pointee(steering::PoolState::default()),
            services: Vec::new(),
            devices: Vec::new(),
            acl: Vec::new(),
            passive: crossbeam_queue::ArrayQueue::new(1),
            passive_lost: AtomicU64::new(0),
            drain_evicted: AtomicU64::new(0),
            drain_sync: Default::default(),
            retired: None,
            retired_forwarded: Traffic::default(),
        }
    }
}

impl SteeringPlane {
    /// Compiles `defs` into a plane with every device in service.
    pub fn build(defs: &steering::Definitions) -> Result<SteeringPlane, steering::CompileError> {
        if defs.services.is_empty() && defs.devices.is_empty() {
            return Ok(SteeringPlane::default());
        }
        let tables = steering::compile(defs)?;
        let health = steering::PoolState::all_in_service(&tables);
        Ok(SteeringPlane {
            services: (0..tables.service_count())
                .map(|_| Default::default())
                .collect(),
            devices: (0..tables.device_count())
                .map(|_| Default::default())
                .collect(),
            acl: (0..tables.acl_rule_count())
                .map(|_| Default::default())
                .collect(),
            health: ArcSwap::from_pointee(health),
            tables: Some(tables),
            passive: crossbeam_queue::ArrayQueue::new(PASSIVE_QUEUE),
            passive_lost: AtomicU64::new(0),
            drain_evicted: AtomicU64::new(0),
            drain_sync: Default::default(),
            retired: None,
            retired_forwarded: Traffic::default(),
        })
    }

    /// Counts a frame of `len` bytes against the ACL rule that decided it, if a rule did.
    #[inline]
    pub fn acl_hit(&self, rule: Option<u32>, len: usize) {
        if let Some(c) = rule.and_then(|r| self.acl.get(r as usize)) {
            c.count(len);
        }
    }

    /// Hands passive-check evidence to the health driver (dropped and counted when full).
    #[inline]
    pub fn passive_evidence(&self, e: PassiveEvent) {
        if self.passive.push(e).is_err() {
            self.passive_lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a service drop.
    #[inline]
    pub fn service_drop(&self, s: steering::ServiceIdx, why: ServiceDrop) {
        if let Some(c) = self
            .services
            .get(s.index())
            .and_then(|c| c.drops.get(why as usize))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A shared plane.
pub type SharedSteering = Arc<SteeringPlane>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statesync::SyncFeed;
    use hasync::{Op, Record, TableId};
    use steering::sync::{encode_drain_key, DRAIN_VALUE};
    use steering::{DrainChange, DrainedFlows};

    fn upsert(k: u64) -> Record {
        Record::upsert(TableId::STEERING_DRAIN, encode_drain_key(k), DRAIN_VALUE)
    }

    #[test]
    fn the_drain_memory_goes_from_the_actives_workers_to_every_standby_worker() {
        // The active publishes what a worker's memory journals, and nothing while standby.
        let feed = SyncFeed::new(16);
        let active = DrainSync::new(feed.clone());
        active.publish(DrainChange::Remembered(7));
        active.publish(DrainChange::Forgotten(7));
        let mut out = Vec::new();
        feed.drain(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].op, out[1].op), (Op::Upsert, Op::Delete));
        assert!(
            !active.apply(&out[0]),
            "an active node refuses the peer's records"
        );
        // A cluster node is always active and still keeps the other nodes' connections.
        assert!(active.apply_from_cluster(&out[0]));
        let mut w0 = DrainedFlows::new(64);
        active.adopt_since(0, |k| w0.adopt(k));
        assert!(w0.contains(7));
        // The standby rings the peer's connections; each worker copies them into its memory.
        let standby = DrainSync::new(SyncFeed::new(16));
        standby.set_active(false);
        standby.publish(DrainChange::Remembered(9));
        assert_eq!(standby.published.load(Ordering::Relaxed), 0);
        assert!(standby.apply(&out[0]));
        assert!(standby.apply(&out[1]), "a forgotten connection is a no-op");
        let mut bad = upsert(5);
        bad.key.pop();
        assert!(!standby.apply(&bad));
        let (mut w1, mut w2) = (DrainedFlows::new(64), DrainedFlows::new(64));
        let seen1 = standby.adopt_since(0, |k| w1.adopt(k));
        assert!(w1.contains(7));
        assert_eq!(standby.adopt_since(seen1, |_| panic!("nothing new")), seen1);
        standby.apply(&upsert(11));
        let seen1 = standby.adopt_since(seen1, |k| w1.adopt(k));
        assert!(w1.contains(11));
        // A worker that comes late gets everything the ring still holds.
        standby.adopt_since(0, |k| w2.adopt(k));
        assert!(w2.contains(7) && w2.contains(11));
        // The ring is bounded: the oldest go first.
        for k in 0..DRAIN_ADOPT_RING as u64 {
            standby.apply(&upsert((k + 100) << 20));
        }
        let mut n = 0;
        standby.adopt_since(0, |_| n += 1);
        assert_eq!(n, DRAIN_ADOPT_RING);
        let mut m = 0;
        standby.adopt_since(seen1, |_| m += 1);
        assert_eq!(
            m, DRAIN_ADOPT_RING,
            "a worker far behind skips what was overwritten"
        );
    }
}
