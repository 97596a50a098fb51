//! The NAT driver (issue 14, seed 000): the `nat` crate's sans-IO parts carried onto threads.
//!
//! - **Processors** are the pipeline workers: each holds a [`WorkerNat`] (its
//!   `nat::worker::NatWorker`, its replica of the flow table, its handoff bookkeeping), reached
//!   by the `nat-in` and `nat-out` stages through `StageCx::nat`.
//! - **The line interface** is every worker's receive path: the stages dispatch each NAT packet
//!   with `nat::dispatch::dispatch` (VID in the destination port for outside packets, the flow
//!   table for inside ones) and hand packets whose session lives on another worker to that
//!   worker's bounded handoff queue ([`WorkerInbox::handoff`], VPP's handoff), waking it through
//!   its eventfd.
//! - **The switch processor** runs on its own thread (`switch.rs`): it receives set-up requests
//!   only, picks the least-loaded operational worker and a backup, installs the endpoint in every
//!   worker's flow-table replica, and hands the packet to the chosen worker, whose translation
//!   gives the session a source port in its VID's block. It also applies the workers' events,
//!   publishes the VID table, watches the workers (heartbeats) and moves a dead worker's VIDs to
//!   their backups in one step.
//! - **Backups** get every session creation, state change and removal as mirror records through
//!   [`WorkerInbox::mirror`], batched per burst.
//!
//! - **HA state sync** (issue 15): while the node is active and `[ha.sync]` is on, workers
//!   publish every session creation, TCP state change and removal into the [`SyncFeed`] (the
//!   established fast path publishes nothing). On the standby, [`NatRuntime::apply_synced`]
//!   queues the peer's records for the switch processor, which places each session by this
//!   node's own VID table (claiming a free VID for a worker when needed), installs its endpoint
//!   in the flow table, and orders the owning worker to install it ([`Control::Synced`]). A
//!   standby creates no sessions and expires none; [`NatRuntime::set_active`] makes them its
//!   own, timers restarted.
//!
//! The NAT configuration cannot change while the router runs (a reload that changes `[nat]` is
//! refused); everything here lives as long as the process.

pub mod esp;
mod switch;
mod worker;

#[cfg(test)]
mod ha_tests;

pub use switch::SwitchStats;
pub use worker::{Step, WorkerNat, HANDOFF_BATCH};

use crate::pipeline::packet::Packet;
use crate::statesync::SyncFeed;
use crate::sys::EventFd;
use arc_swap::ArcSwap;
use crossbeam_queue::{ArrayQueue, SegQueue};
use nat::config::{Config, IfaceId};
use nat::mirror::Wire;
use nat::session::Endpoint;
use nat::sync::SyncEvent;
use nat::vid::{Vid, VidTable, WorkerId};
use nat::worker::WorkerEvent;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Packets one worker's handoff queue holds.
const HANDOFF_QUEUE: usize = 4096;
/// Flow-table updates one worker's queue holds before the switch processor waits for it.
const FLOW_QUEUE: usize = 16384;
/// Set-up requests and events the switch processor's queue holds.
const SWITCH_QUEUE: usize = 16384;
/// A worker that has not looped for this long is declared failed.
pub const STALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// The NAT data-plane view in the tables snapshot: which interfaces are outside and which
/// addresses are pool addresses, and the runtime the stages hand packets through.
#[derive(Debug)]
pub struct NatPlane {
    /// The configuration in force.
    pub cfg: Config,
    /// Per interface id: it is some rule's outside interface.
    outside: Vec<bool>,
    /// The shared runtime.
    pub rt: Arc<NatRuntime>,
}

impl NatPlane {
    /// The plane for `cfg` over `n_ifaces` interfaces.
    pub fn new(cfg: Config, n_ifaces: usize, rt: Arc<NatRuntime>) -> NatPlane {
        let mut outside = vec![false; n_ifaces];
        for r in &cfg.rules {
            if let Some(o) = outside.get_mut(r.outside as usize) {
                *o = true;
            }
        }
        NatPlane { cfg, outside, rt }
    }

    /// True when `ifid` is an outside interface.
    #[inline]
    pub fn is_outside(&self, ifid: u16) -> bool {
        self.outside
            .get(usize::from(ifid))
            .copied()
            .unwrap_or(false)
    }

    /// True when `addr` is a pool address translated on interface `ifid` (the router answers
    /// ARP for it there).
    pub fn is_pool_on(&self, addr: Ipv4Addr, ifid: u16) -> bool {
        self.cfg
            .rules
            .iter()
            .any(|r| r.outside == IfaceId::from(ifid) && r.pool.contains(&addr))
    }
}

/// What the switch processor's thread receives.
#[derive(Debug)]
pub enum SwitchMsg {
    /// A set-up request (its egress interface in `meta.tx_if`).
    Setup(Packet),
    /// A worker refused the session the switch processor assigned it.
    SetupFailed(Endpoint),
    /// A worker's event.
    Event(WorkerId, WorkerEvent),
    /// A worker's load (its mapping count).
    Load(WorkerId, u32),
    /// A worker (re)started and asks for its VID (claim 10).
    RequestVid(WorkerId),
    /// A cluster node adopts these sessions (ids it took over): place them like the HA peer's,
    /// then pass `done` to every worker after its batch.
    Adopt(Vec<SyncEvent>, Arc<NatBarrier>),
}

/// A barrier through the workers' control queues: done when every worker has handled what was
/// queued before it (cluster handovers wait on it before an id's packets are let through or
/// its release is announced).
#[derive(Debug, Default)]
pub struct NatBarrier {
    /// Workers that have not reached the barrier yet.
    pub remaining: std::sync::atomic::AtomicUsize,
    /// Set once every worker's share was queued.
    pub dispatched: AtomicBool,
    /// Sessions the workers removed (drop) or could not place (adopt).
    pub refused: AtomicU64,
    /// Sessions removed by a drop.
    pub dropped: AtomicU64,
}

impl NatBarrier {
    /// True when every worker passed the barrier.
    pub fn is_done(&self) -> bool {
        self.dispatched.load(Ordering::Acquire) && self.remaining.load(Ordering::Acquire) == 0
    }
}

/// A flow-table change the switch processor broadcasts to every worker's replica.
#[derive(Debug, Clone, Copy)]
pub enum FlowUpdate {
    /// The endpoint's packets go to `vid`.
    Install(Endpoint, Vid),
    /// The endpoint has no mapping any more.
    Remove(Endpoint),
    /// Every endpoint of `vid` is gone (the VID was lost).
    RemoveVid(Vid),
}

/// What the switch processor tells one worker.
#[derive(Debug)]
pub enum Control {
    /// Your home VID (at start and after a restart).
    Grant(Vid),
    /// Allocate from `vid` too: your blocks were full.
    ExtraVid(Vid),
    /// You own `vid` now (its owner failed): turn your shadow of it live, then acknowledge.
    TakeOver(Vid, std::sync::mpsc::Sender<usize>),
    /// Send your sessions of `vid` to its new backup `to`.
    Resync(Vid, WorkerId),
    /// You no longer back `vid` up.
    ForgetShadow(Vid),
    /// Give `vid` (adopted) to restarted worker `to`, which got it as its home.
    HandBack(Vid, WorkerId),
    /// Apply these records and take `vid` over (the end of a hand-back).
    Adopt(Vid, Vec<Wire>),
    /// Your flow-table replica starts from this (a restarted worker).
    Flows(Vec<(Endpoint, Vid)>),
    /// Install or remove these sessions the HA peer synced (placed here by the switch
    /// processor).
    Synced(Vec<SyncEvent>),
    /// Cluster: publish what you recorded for the sync, then remove your sessions of these
    /// ids (moved to another node) without recording them, then pass the barrier.
    DropIds(nat::cluster::IdSet, Arc<NatBarrier>),
    /// Pass the barrier (everything queued before it is handled).
    Barrier(Arc<NatBarrier>),
    /// List your sessions.
    List(std::sync::mpsc::Sender<Vec<SessionRow>>),
    /// Test hook: stop looping as if stalled or crashed (`panic` chooses).
    Kill {
        /// Panic (true) or stop answering without closing anything (false).
        panic: bool,
    },
}

/// One session, as `swrouter nat sessions` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRow {
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    /// Inside address:port (ICMP: identifier).
    pub inside: String,
    /// Pool address:port.
    pub outside: String,
    /// Remote address:port.
    pub remote: String,
    /// TCP state, or `-`.
    pub state: String,
    /// Seconds since a packet last refreshed it.
    pub idle_s: u32,
    /// The worker that holds it ([`SHARED_WORKER`]: the shared ESP table).
    pub worker: WorkerId,
    /// Its VID (`65535` for ESP: no port, no VID).
    pub vid: Vid,
    /// ESP: the SPI of the inside host's packets (chosen by the remote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi_out: Option<u32>,
    /// ESP: the SPI of the remote's packets, once learnt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi_in: Option<u32>,
}

/// The `worker` of a session row that no worker holds (ESP: [`esp::EspNat`]).
pub const SHARED_WORKER: WorkerId = WorkerId::MAX;

/// One worker's queues, wake-up and liveness.
#[derive(Debug)]
pub struct WorkerInbox {
    /// Packets other workers (or the switch processor) hand over: `meta.stage` says where
    /// they enter.
    pub handoff: ArrayQueue<Packet>,
    /// Flow-table changes for this worker's replica.
    pub flows: ArrayQueue<FlowUpdate>,
    /// Mirror records for the VIDs this worker backs up.
    pub mirror: ArrayQueue<Wire>,
    /// Orders from the switch processor.
    pub control: ArrayQueue<Control>,
    /// Wakes the worker's poll.
    pub wake: EventFd,
    /// Loop count (the switch processor's watchdog reads it).
    pub heartbeat: AtomicU64,
    /// Set by the watchdog when the worker was declared failed (or by the worker's supervisor
    /// when it died): it must stop touching NAT state and exit.
    pub fenced: AtomicBool,
    /// Set by the switch processor once a fenced worker's VIDs have moved to their backups.
    pub failed_over: AtomicBool,
    /// The worker's last published statistics.
    pub stats: Mutex<WorkerStats>,
}

/// A worker's NAT statistics, published about every 100 ms.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerStats {
    /// Its home VID.
    pub home_vid: Option<Vid>,
    /// Extra VIDs it allocates from besides its home (granted when its blocks filled).
    #[serde(default)]
    pub extra_vids: u16,
    /// Sessions in its table.
    pub sessions: u64,
    /// Mappings in its table.
    pub mappings: u64,
    /// Sessions it mirrors for others.
    pub shadow: u64,
    /// Sessions created.
    pub created: u64,
    /// Sessions expired.
    pub expired: u64,
    /// Sessions taken over from a failed worker.
    pub adopted: u64,
    /// Packets translated inside → outside.
    pub out_translated: u64,
    /// Packets translated outside → inside.
    pub in_translated: u64,
    /// ICMP errors translated.
    pub icmp_errors: u64,
    /// Hairpinned packets.
    pub hairpin: u64,
    /// New sessions refused for want of a port (ICMP prohibited sent).
    pub port_exhausted: u64,
    /// Packets that reached this worker for a VID it does not own (must stay 0).
    pub misdelivered: u64,
    /// Packets it handed to another worker.
    pub handed_off: u64,
    /// Packets other workers handed to it.
    pub handed_in: u64,
    /// Set-up requests it sent to the switch processor.
    pub setup_requests: u64,
    /// Mirror records it could not queue for a backup.
    pub mirror_overflow: u64,
    /// Endpoints in its flow-table replica.
    pub flow_entries: u64,
}

/// Everything the workers, the switch processor and the control plane share.
#[derive(Debug)]
pub struct NatRuntime {
    /// The configuration.
    pub cfg: Config,
    /// Time zero of the NAT clock (whole seconds since then are the `now` of the nat crate).
    pub epoch: Instant,
    /// The VID table the line interfaces dispatch with.
    pub vids: ArcSwap<VidTable>,
    /// One per worker.
    pub inboxes: Vec<WorkerInbox>,
    /// The switch processor's queue.
    pub switch_in: ArrayQueue<SwitchMsg>,
    switch_thread: Mutex<Option<std::thread::Thread>>,
    /// The switch processor's statistics.
    pub switch: Mutex<SwitchStats>,
    /// Set-up requests refused because the switch queue was full.
    pub switch_full: AtomicU64,
    /// Accept test hooks (`nat kill-worker`): only when started with SWROUTER_TEST_HOOKS=1.
    pub test_hooks: bool,
    /// Where workers publish session changes for the HA peer.
    pub feed: SyncFeed,
    /// The node's HA role: active (the default, and always without `[ha]`) or standby.
    active: AtomicBool,
    /// Bumped by [`NatRuntime::export_all`]; each worker re-exports when it sees it move.
    export_gen: AtomicU64,
    /// The peer's decoded records, for the switch processor to place.
    synced: SegQueue<SyncEvent>,
    /// HA sync counters.
    pub ha: HaCounters,
    /// Raw ESP sessions, shared by the workers.
    pub esp: esp::EspNat,
}

/// HA state-sync counters of the NAT (atomics: workers, the switch processor and the sync
/// driver all count).
#[derive(Debug, Default)]
pub struct HaCounters {
    /// Session records published on a change (creation, TCP state, removal).
    pub published: AtomicU64,
    /// Session records published by a full re-export.
    pub exported: AtomicU64,
    /// Records of the peer received.
    pub synced_in: AtomicU64,
    /// Records of the peer that did not decode (version, length, fields).
    pub undecodable: AtomicU64,
    /// Records of the peer installed, updated or removed in a worker.
    pub applied: AtomicU64,
    /// Records of the peer refused: port outside this node's range, no worker, table full,
    /// endpoint or port mapped otherwise here, or a delete of an unknown session.
    pub refused: AtomicU64,
    /// Packets dropped because they needed a new session on the standby (`nat-standby`).
    pub standby_drops: AtomicU64,
}

/// HA state sync of the NAT in `swrouter status`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NatHaStatus {
    /// The node's NAT role: active (creates sessions) or standby.
    pub active: bool,
    /// HA sync is configured (the feed is live).
    pub sync: bool,
    /// Session records published on a change.
    pub published: u64,
    /// Session records published by full re-exports.
    pub exported: u64,
    /// Records of the peer received.
    pub synced_in: u64,
    /// Records of the peer that did not decode.
    pub undecodable: u64,
    /// Records of the peer applied.
    pub applied: u64,
    /// Records of the peer refused.
    pub refused: u64,
    /// New sessions refused while standby.
    pub standby_drops: u64,
}

impl NatRuntime {
    /// The runtime for a validated `cfg` (its `workers` = the router's); workers publish
    /// session changes into `feed` when it is live.
    pub fn new(cfg: Config, feed: SyncFeed) -> std::io::Result<NatRuntime> {
        let n = usize::from(cfg.workers);
        let geometry = nat::vid::Geometry::new(cfg.port_min, cfg.port_max, cfg.workers);
        let empty = VidTable {
            geometry,
            entries: vec![Default::default(); usize::from(geometry.vids)],
            operational: vec![false; n],
        };
        let mut inboxes = Vec::with_capacity(n);
        for _ in 0..n {
            inboxes.push(WorkerInbox {
                handoff: ArrayQueue::new(HANDOFF_QUEUE),
                flows: ArrayQueue::new(FLOW_QUEUE),
                mirror: ArrayQueue::new(cfg.mirror_queue as usize),
                control: ArrayQueue::new(256),
                wake: EventFd::new()?,
                heartbeat: AtomicU64::new(0),
                fenced: AtomicBool::new(false),
                failed_over: AtomicBool::new(false),
                stats: Mutex::new(WorkerStats::default()),
            });
        }
        Ok(NatRuntime {
            epoch: Instant::now(),
            vids: ArcSwap::from_pointee(empty),
            inboxes,
            switch_in: ArrayQueue::new(SWITCH_QUEUE),
            switch_thread: Mutex::new(None),
            switch: Mutex::new(SwitchStats::default()),
            switch_full: AtomicU64::new(0),
            test_hooks: std::env::var("SWROUTER_TEST_HOOKS").as_deref() == Ok("1"),
            feed,
            active: AtomicBool::new(true),
            export_gen: AtomicU64::new(0),
            synced: SegQueue::new(),
            ha: HaCounters::default(),
            esp: esp::EspNat::new(
                cfg.esp_sessions as usize,
                cfg.timeouts.esp,
                0x0065_7370_206e_6174 ^ u64::from(std::process::id()),
            ),
            cfg,
        })
    }

    /// Applies one record of the HA peer (table `NAT_SESSION`; the sync driver calls this on
    /// the standby for every change to its replica). Decoded here; the switch processor places
    /// the session by this node's VID table and the owning worker installs or removes it.
    /// Never blocks; undecodable records are counted and dropped (false).
    ///
    /// While active, the peer's deletes are refused (counted): the active owns its sessions,
    /// and a peer that restarted resyncs with an empty snapshot whose sweep would otherwise
    /// delete every session this node adopted from it. Its upserts are still placed (refused on
    /// any conflict): records sent just before a planned switchover may arrive after it.
    pub fn apply_synced(&self, rec: &hasync::Record) -> bool {
        self.ha.synced_in.fetch_add(1, Ordering::Relaxed);
        if rec.op == hasync::Op::Delete && self.is_active() {
            self.ha.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if rec.table == hasync::TableId::NAT_SESSION
            && nat::sync::key_proto(&rec.key) == Some(nat::esp::PROTO_ESP)
        {
            let now_s = self.secs(Instant::now());
            let ok = self.esp.apply(rec, now_s);
            let c = if ok {
                &self.ha.applied
            } else {
                &self.ha.refused
            };
            c.fetch_add(1, Ordering::Relaxed);
            return ok;
        }
        let ev = if rec.table != hasync::TableId::NAT_SESSION {
            None
        } else {
            match rec.op {
                hasync::Op::Upsert => nat::sync::decode(&rec.key, &rec.value)
                    .map(SyncEvent::Upsert)
                    .ok(),
                hasync::Op::Delete => nat::sync::decode_delete(&rec.key).ok(),
            }
        };
        match ev {
            Some(ev) => {
                self.synced.push(ev);
                self.wake_switch();
                true
            }
            None => {
                let n = self.ha.undecodable.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(
                        table = rec.table.name(),
                        key_len = rec.key.len(),
                        undecodable = n + 1,
                        "NAT: HA peer's session record does not decode; dropped"
                    );
                }
                false
            }
        }
    }

    /// Sets the node's HA role (the sync driver calls it on every VRRP transition). A standby
    /// creates no NAT session (`nat-standby` drops) and keeps its peer's synced sessions
    /// without expiring them; on becoming active they become its own, timers restarted from
    /// now, and its changes are published.
    pub fn set_active(&self, active: bool) {
        let was = self.active.swap(active, Ordering::AcqRel);
        if was != active {
            tracing::info!(
                role = if active { "active" } else { "standby" },
                "NAT: HA role"
            );
            for ib in &self.inboxes {
                ib.wake.notify();
            }
        }
    }

    /// True when the node is HA active (or has no HA).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Asks every worker to publish all its sessions into the feed (after a feed overflow, or
    /// on becoming active, so the snapshot a returning peer resyncs from is whole). Returns at
    /// once; the workers do it on their next loop.
    pub fn export_all(&self) {
        self.esp.export(&self.feed);
        self.export_gen.fetch_add(1, Ordering::AcqRel);
        for ib in &self.inboxes {
            ib.wake.notify();
        }
    }

    /// The export generation workers compare with the one they last served.
    pub(crate) fn export_gen(&self) -> u64 {
        self.export_gen.load(Ordering::Acquire)
    }

    /// Takes the next decoded record of the peer (the switch processor's side).
    pub(crate) fn next_synced(&self) -> Option<SyncEvent> {
        self.synced.pop()
    }

    /// The HA sync counters.
    pub fn ha_status(&self) -> NatHaStatus {
        let c = &self.ha;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NatHaStatus {
            active: self.is_active(),
            sync: self.feed.enabled(),
            published: l(&c.published),
            exported: l(&c.exported),
            synced_in: l(&c.synced_in),
            undecodable: l(&c.undecodable),
            applied: l(&c.applied),
            refused: l(&c.refused),
            standby_drops: l(&c.standby_drops),
        }
    }

    /// Seconds on the NAT clock at `now`.
    #[inline]
    pub fn secs(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_secs() as u32
    }

    /// Queues a message for the switch processor and wakes it; gives it back when full.
    pub fn to_switch(&self, m: SwitchMsg) -> Result<(), SwitchMsg> {
        self.switch_in.push(m)?;
        self.wake_switch();
        Ok(())
    }

    fn wake_switch(&self) {
        if let Ok(t) = self.switch_thread.lock() {
            if let Some(t) = t.as_ref() {
                t.unpark();
            }
        }
    }

    /// Cluster: places the sessions of ids this node took over (decoded `NAT_SESSION` records)
    /// in the workers owning their ports' VIDs; the returned barrier is done when all are
    /// installed. `None` when the switch processor's queue is full (retry).
    pub fn adopt(&self, sessions: Vec<nat::session::SessionInfo>) -> Option<Arc<NatBarrier>> {
        let done = Arc::new(NatBarrier::default());
        let events = sessions.into_iter().map(SyncEvent::Upsert).collect();
        self.to_switch(SwitchMsg::Adopt(events, done.clone()))
            .ok()
            .map(|()| done)
    }

    /// Cluster: every worker publishes its pending sync records, then removes its sessions of
    /// `ids` without recording them (their published records stay for the new owner); the
    /// barrier is done when all workers have. A worker whose queue is full is counted as
    /// passed (it is stalled; the watchdog handles it).
    pub fn drop_ids(&self, ids: nat::cluster::IdSet) -> Arc<NatBarrier> {
        let done = Arc::new(NatBarrier::default());
        done.remaining
            .fetch_add(self.inboxes.len(), Ordering::AcqRel);
        for w in 0..self.inboxes.len() {
            if !self.control(w as WorkerId, Control::DropIds(ids, done.clone())) {
                done.remaining.fetch_sub(1, Ordering::AcqRel);
            }
        }
        done.dispatched.store(true, Ordering::Release);
        done
    }

    /// Sends `c` to worker `w` and wakes it; false when its control queue is full.
    pub fn control(&self, w: WorkerId, c: Control) -> bool {
        let Some(ib) = self.inboxes.get(usize::from(w)) else {
            return false;
        };
        let ok = ib.control.push(c).is_ok();
        ib.wake.notify();
        ok
    }

    /// Every worker's sessions (asks each live worker; waits at most `timeout` in all).
    pub fn list_sessions(&self, timeout: Duration) -> Vec<SessionRow> {
        let deadline = Instant::now() + timeout;
        let mut answers = Vec::new();
        for w in 0..self.inboxes.len() {
            let (tx, rx) = std::sync::mpsc::channel();
            if self.control(w as WorkerId, Control::List(tx)) {
                answers.push(rx);
            }
        }
        let mut rows = Vec::new();
        for rx in answers {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(mut r) = rx.recv_timeout(left) {
                rows.append(&mut r);
            }
        }
        rows.append(&mut self.esp.list(self.secs(Instant::now())));
        rows.sort_by(|a, b| {
            (a.worker, &a.inside, &a.remote).cmp(&(b.worker, &b.inside, &b.remote))
        });
        rows
    }

    /// A dead worker's way back (claims 10, 15): fence it so the switch processor fails it
    /// over, wait until that is done, ask for a VID, and wait until the switch processor lets
    /// it run. False when the router stops meanwhile.
    pub fn rejoin(&self, w: WorkerId, stop: &AtomicBool) -> bool {
        let Some(ib) = self.inboxes.get(usize::from(w)) else {
            return false;
        };
        ib.fenced.store(true, Ordering::Release);
        self.wake_switch();
        let wait = |what: &dyn Fn() -> bool| {
            while !what() {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            true
        };
        if !wait(&|| ib.failed_over.load(Ordering::Acquire)) {
            return false;
        }
        // Orders meant for the dead worker's state are void; the grant comes after this.
        while ib.control.pop().is_some() {}
        while ib.mirror.pop().is_some() {}
        while ib.flows.pop().is_some() {}
        if self.to_switch(SwitchMsg::RequestVid(w)).is_err() {
            return false;
        }
        wait(&|| !ib.fenced.load(Ordering::Acquire))
    }

    /// Per-worker statistics, in worker order.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.inboxes
            .iter()
            .map(|ib| ib.stats.lock().map(|s| *s).unwrap_or_default())
            .collect()
    }

    /// The switch processor's statistics.
    pub fn switch_stats(&self) -> SwitchStats {
        let mut s = self.switch.lock().map(|s| s.clone()).unwrap_or_default();
        s.queue_full = self.switch_full.load(Ordering::Relaxed);
        s
    }
}

/// NAT in `swrouter status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NatStatus {
    /// Pool addresses.
    pub pool: Vec<Ipv4Addr>,
    /// The outside port range.
    pub ports: String,
    /// Ports per VID block.
    pub block_len: u32,
    /// Per worker, in worker order.
    pub workers: Vec<WorkerStats>,
    /// The switch processor.
    pub switch: SwitchStats,
    /// HA state sync.
    #[serde(default)]
    pub ha: NatHaStatus,
    /// Raw ESP sessions keyed by SPI.
    #[serde(default)]
    pub esp: esp::EspStatus,
}

impl NatRuntime {
    /// The status section.
    pub fn status(&self) -> NatStatus {
        let g = self.vids.load().geometry;
        NatStatus {
            pool: self
                .cfg
                .rules
                .iter()
                .flat_map(|r| r.pool.iter().copied())
                .collect(),
            ports: format!("{}-{}", self.cfg.port_min, self.cfg.port_max),
            block_len: g.block_len(),
            workers: self.worker_stats(),
            switch: self.switch_stats(),
            ha: self.ha_status(),
            esp: self.esp.status(),
        }
    }
}

/// Renders the NAT section of `swrouter status`.
pub fn render(o: &mut String, n: &NatStatus) {
    use std::fmt::Write as _;
    let pool: Vec<String> = n.pool.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        o,
        "\nNAT  pool {}  ports {} ({} per VID)",
        pool.join(","),
        n.ports,
        n.block_len
    );
    let _ = writeln!(
        o,
        "{:<6} {:>4} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9} {:>9} {:>7} {:>6} {:>9}",
        "worker",
        "vid",
        "sessions",
        "created",
        "expired",
        "out",
        "in",
        "handoff",
        "handin",
        "setups",
        "misdlv",
        "exhausted"
    );
    for (i, w) in n.workers.iter().enumerate() {
        let up = n.switch.operational.get(i).copied().unwrap_or(false);
        let _ = writeln!(
            o,
            "{:<6} {:>4} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9} {:>9} {:>7} {:>6} {:>9}{}",
            i,
            match (w.home_vid, w.extra_vids) {
                (None, _) => "-".to_string(),
                (Some(v), 0) => v.to_string(),
                (Some(v), n) => format!("{v}+{n}"),
            },
            w.sessions,
            w.created,
            w.expired,
            w.out_translated,
            w.in_translated,
            w.handed_off,
            w.handed_in,
            w.setup_requests,
            w.misdelivered,
            w.port_exhausted,
            if up { "" } else { "  DOWN" }
        );
    }
    let s = &n.switch;
    let _ = writeln!(
        o,
        "switch processor: setups {}  not-setup {}  retransmitted {}  no-worker {}  queue-full {}  flows {}  failovers {}  restarts {}  lost-vids {}  extra-vids {}  extra-refused {}",
        s.setups, s.not_setup, s.already_installed, s.no_worker, s.queue_full, s.flow_entries, s.failovers, s.restarts, s.lost_vids, s.extra_vids, s.extra_refused
    );
    let h = &n.ha;
    let _ = writeln!(
        o,
        "HA: role {}  sync {}  published {}  exported {}  synced-in {}  applied {}  refused {}  undecodable {}  standby-drops {}",
        if h.active { "active" } else { "standby" },
        if h.sync { "on" } else { "off" },
        h.published,
        h.exported,
        h.synced_in,
        h.applied,
        h.refused,
        h.undecodable,
        h.standby_drops
    );
    let e = &n.esp;
    let _ = writeln!(
        o,
        "ESP: sessions {}/{}  out {}  in {}  created {}  learnt {}  pending-replaced {}  no-session {}  full {}  expired {}  spi-conflicts {}  installed {}  standby-drops {}  timeout {}s",
        e.sessions, e.capacity, e.out_packets, e.in_packets, e.created, e.learnt, e.pending_replaced, e.no_session, e.full, e.expired, e.spi_conflicts, e.installed, e.standby_drops, e.timeout_s
    );
    for v in &s.vids {
        let who = |w: Option<WorkerId>| w.map(|w| w.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "  vid {:>3}  ports {:<12} owner {}  backup {}",
            v.vid,
            v.ports,
            who(v.owner),
            who(v.backup)
        );
    }
}

/// Renders `swrouter nat sessions` like `conntrack -L`: one line per session.
pub fn render_sessions(rows: &[SessionRow]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for r in rows {
        if r.proto == "esp" {
            let spi = |s: Option<u32>| s.map_or("?".to_string(), |s| format!("{s:#010x}"));
            let _ = writeln!(
                o,
                "{:<4} {:<12} inside {:<21} outside {:<21} remote {:<21} idle {:>5}s spi-out {} spi-in {}",
                r.proto, r.state, r.inside, r.outside, r.remote, r.idle_s, spi(r.spi_out), spi(r.spi_in)
            );
            continue;
        }
        let _ = writeln!(
            o,
            "{:<4} {:<12} inside {:<21} outside {:<21} remote {:<21} idle {:>5}s worker {} vid {}",
            r.proto, r.state, r.inside, r.outside, r.remote, r.idle_s, r.worker, r.vid
        );
    }
    let _ = writeln!(o, "{} sessions", rows.len());
    o
}

/// Starts the switch processor's thread; it grants every worker its VID before returning, so
/// workers find their grant in their control queue on their first loop.
pub fn start(
    rt: Arc<NatRuntime>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    switch::start(rt, stop)
}

/// The text name of an IP protocol in listings.
fn proto_name(p: u8) -> &'static str {
    match p {
        netwire::ipv4::PROTO_TCP => "tcp",
        netwire::ipv4::PROTO_UDP => "udp",
        netwire::ipv4::PROTO_ICMP => "icmp",
        _ => "other",
    }
}
