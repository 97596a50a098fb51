//! The switch processor's thread (seed claims 1, 4, 5, 7, 10, 14): set-up requests, the flow
//! table it installs in every worker's replica, worker events, the VID table it publishes, and
//! the watchdog that fails a worker over to its backups.

use super::{Control, FlowUpdate, NatBarrier, NatRuntime, SwitchMsg, STALL_TIMEOUT};
use crate::pipeline::packet::{flags, Packet};
use crate::pipeline::StageKind;
use crate::wire::ethernet::HEADER_LEN;
use nat::session::Endpoint;
use nat::switch::{SetupOutcome, SwitchProcessor};
use nat::sync::SyncEvent;
use nat::translate;
use nat::vid::{Vid, VidChange, WorkerId};
use nat::worker::WorkerEvent;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the switch processor sleeps when nothing wakes it (the watchdog's tick).
const TICK: Duration = Duration::from_millis(20);
/// How long a take-over may take before the VID table is published anyway.
const TAKEOVER_WAIT: Duration = Duration::from_millis(500);

/// One VID's owner and backup, for status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VidRow {
    /// The VID.
    pub vid: Vid,
    /// Its outside ports.
    pub ports: String,
    /// The worker that owns it.
    pub owner: Option<WorkerId>,
    /// The worker that backs it up.
    pub backup: Option<WorkerId>,
}

/// What the switch processor shows in status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SwitchStats {
    /// Set-up requests handled (new sessions assigned to a worker).
    pub setups: u64,
    /// Packets handed to it that were not set-up requests (must stay 0).
    pub not_setup: u64,
    /// Retransmitted set-ups for an endpoint already assigned (sent on to its worker).
    pub already_installed: u64,
    /// Set-ups refused because no worker was operational.
    pub no_worker: u64,
    /// Set-up requests and events refused because its queue was full.
    pub queue_full: u64,
    /// Endpoints in its flow table.
    pub flow_entries: u64,
    /// Workers declared failed (their VIDs moved to their backups).
    pub failovers: u64,
    /// VID requests from restarted workers.
    pub restarts: u64,
    /// VIDs lost with their sessions (owner and backup failed together).
    pub lost_vids: u64,
    /// Extra VIDs granted to workers whose blocks were full.
    #[serde(default)]
    pub extra_vids: u64,
    /// Requests for an extra VID refused (none could be spared).
    #[serde(default)]
    pub extra_refused: u64,
    /// Per worker: operational.
    pub operational: Vec<bool>,
    /// Owned VIDs.
    pub vids: Vec<VidRow>,
}

struct Switch {
    rt: Arc<NatRuntime>,
    sp: SwitchProcessor,
    /// Per worker: the heartbeat last seen and when it last moved.
    beats: Vec<(u64, Instant)>,
    stats: SwitchStats,
}

/// Grants every worker its VID, publishes the VID table and starts the thread.
pub fn start(
    rt: Arc<NatRuntime>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let seed = crate::probe::random_seed();
    let mut sw = Switch {
        sp: SwitchProcessor::new(&rt.cfg, seed),
        beats: vec![(0, Instant::now()); rt.inboxes.len()],
        stats: SwitchStats::default(),
        rt: rt.clone(),
    };
    for w in 0..rt.inboxes.len() as WorkerId {
        sw.grant(w);
    }
    sw.publish();
    let h = std::thread::Builder::new()
        .name("swrouter-nat-sp".into())
        .spawn(move || sw.run(&stop))?;
    if let Ok(mut t) = rt.switch_thread.lock() {
        *t = Some(h.thread().clone());
    }
    Ok(h)
}

impl Switch {
    fn run(mut self, stop: &AtomicBool) {
        let mut next_watch = Instant::now() + TICK;
        while !stop.load(Ordering::Relaxed) {
            let mut did = 0;
            while let Some(m) = self.rt.switch_in.pop() {
                self.handle(m);
                did += 1;
                if did % 1024 == 0 && stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            did += self.place_synced();
            let now = Instant::now();
            if now >= next_watch {
                next_watch = now + TICK;
                self.watch(now);
                self.publish_stats();
                // The shared ESP table's expiry (the standby keeps its peer's sessions).
                let rt = &self.rt;
                rt.esp.housekeep(rt.secs(now), rt.is_active(), &rt.feed);
            }
            if did == 0 {
                std::thread::park_timeout(TICK);
            }
        }
    }

    fn handle(&mut self, m: SwitchMsg) {
        match m {
            SwitchMsg::Setup(pkt) => self.setup(pkt),
            SwitchMsg::SetupFailed(ep) => {
                self.sp.handle_event(0, WorkerEvent::FlowGone(ep));
                self.broadcast(FlowUpdate::Remove(ep));
            }
            SwitchMsg::Event(w, ev) => {
                self.sp.handle_event(w, ev);
                match ev {
                    WorkerEvent::FlowGone(ep) => self.broadcast(FlowUpdate::Remove(ep)),
                    WorkerEvent::FlowMoved(ep, vid) => self.broadcast(FlowUpdate::Install(ep, vid)),
                    WorkerEvent::VidDrained(vid) => {
                        for b in 0..self.rt.inboxes.len() as WorkerId {
                            self.rt.control(b, Control::ForgetShadow(vid));
                        }
                        self.publish();
                    }
                    WorkerEvent::NeedVid => self.grant_extra(w),
                }
            }
            SwitchMsg::Load(w, load) => self.sp.set_load(w, load),
            SwitchMsg::Adopt(events, done) => self.adopt(events, done),
            SwitchMsg::RequestVid(w) => {
                self.stats.restarts += 1;
                if let Some(b) = self.beats.get_mut(usize::from(w)) {
                    *b = (u64::MAX, Instant::now());
                }
                self.grant(w);
                // Its replica starts empty: the flows of every worker, before it runs.
                self.rt
                    .control(w, Control::Flows(self.sp.flows().entries()));
                self.publish();
                if let Some(ib) = self.rt.inboxes.get(usize::from(w)) {
                    ib.failed_over.store(false, Ordering::Release);
                    ib.fenced.store(false, Ordering::Release);
                }
            }
        }
    }

    fn setup(&mut self, mut pkt: Packet) {
        let l3 = &pkt.frame()[HEADER_LEN..];
        match self.sp.handle_setup(l3, &self.rt.cfg) {
            SetupOutcome::ToWorker {
                worker,
                vid,
                installed,
            } => {
                if installed {
                    if let Ok(f) = translate::parse(l3) {
                        self.broadcast(FlowUpdate::Install(
                            Endpoint {
                                proto: f.proto,
                                addr: f.src,
                                port: f.sport,
                            },
                            vid,
                        ));
                    }
                }
                pkt.meta.flags |= flags::NAT_HANDED | flags::NAT_SETUP;
                pkt.meta.nat_vid = vid;
                pkt.meta.stage = StageKind::NatOut as u8;
                if let Some(ib) = self.rt.inboxes.get(usize::from(worker)) {
                    if ib.handoff.push(pkt).is_err() {
                        self.stats.queue_full += 1;
                    }
                    ib.wake.notify();
                }
            }
            SetupOutcome::Drop => {}
        }
    }

    /// Places the HA peer's sessions (queued by `NatRuntime::apply_synced`) by this node's VID
    /// table: each goes to the worker of its outside port's VID (a free VID is claimed for the
    /// least-loaded worker), its endpoint into every flow-table replica, then in one batch per
    /// worker to the workers. Returns how many it handled (at most a few thousand per call).
    fn place_synced(&mut self) -> usize {
        let n = self.rt.inboxes.len();
        let mut per: Vec<Vec<SyncEvent>> = vec![Vec::new(); n];
        let mut claimed = false;
        let mut did = 0;
        let mut refused = 0;
        while did < 4096 {
            let Some(ev) = self.rt.next_synced() else {
                break;
            };
            did += 1;
            if !self.place_one(ev, &mut per, &mut claimed) {
                refused += 1;
            }
        }
        if refused > 0 {
            self.rt.ha.refused.fetch_add(refused, Ordering::Relaxed);
        }
        self.send_placed(per, None);
        // After the orders: a worker may own a claimed VID before the line interfaces send it
        // packets, never the other way round.
        if claimed {
            self.publish();
        }
        did
    }

    /// A cluster node adopts sessions of ids it took over (`NatRuntime::adopt`): placed like
    /// the HA peer's, then every worker gets `done` after its batch, so the driver knows when
    /// they are all installed (before the ids' packets are let through).
    fn adopt(&mut self, events: Vec<SyncEvent>, done: Arc<NatBarrier>) {
        let n = self.rt.inboxes.len();
        let mut per: Vec<Vec<SyncEvent>> = vec![Vec::new(); n];
        let mut claimed = false;
        let mut refused = 0;
        for ev in events {
            if !self.place_one(ev, &mut per, &mut claimed) {
                refused += 1;
            }
        }
        done.refused.fetch_add(refused, Ordering::Relaxed);
        self.send_placed(per, Some(&done));
        if claimed {
            self.publish();
        }
    }

    /// Places one synced event: the worker it goes to is given a slot in `per`; false when no
    /// worker can take it.
    fn place_one(&mut self, ev: SyncEvent, per: &mut [Vec<SyncEvent>], claimed: &mut bool) -> bool {
        let to = match ev {
            SyncEvent::Upsert(info) => self.sp.place_synced(&info).map(|p| {
                if let Some(backup) = p.claimed {
                    *claimed = true;
                    if let Some(b) = backup {
                        // A VID freed earlier may have left a shadow behind.
                        self.rt.control(b, Control::ForgetShadow(p.vid));
                    }
                }
                if p.flow_installed {
                    self.broadcast(FlowUpdate::Install(info.endpoint(), p.vid));
                }
                p.worker
            }),
            SyncEvent::Delete(info) => self.sp.worker_of(info.endpoint()),
        };
        match to.and_then(|w| per.get_mut(usize::from(w))) {
            Some(q) => {
                q.push(ev);
                true
            }
            None => false,
        }
    }

    /// Sends each worker its placed events (and, with `done`, the barrier after them to every
    /// worker, counted in `done` first).
    fn send_placed(&mut self, per: Vec<Vec<SyncEvent>>, done: Option<&Arc<NatBarrier>>) {
        if let Some(d) = done {
            d.remaining
                .fetch_add(self.rt.inboxes.len(), Ordering::AcqRel);
        }
        for (w, evs) in per.into_iter().enumerate() {
            if !evs.is_empty() {
                self.push_control(w, Control::Synced(evs));
            }
            if let Some(d) = done {
                self.push_control(w, Control::Barrier(d.clone()));
            }
        }
        if let Some(d) = done {
            d.dispatched.store(true, Ordering::Release);
        }
    }

    /// Pushes `c` to worker `w`'s control queue, waiting (briefly, repeatedly) for room; a
    /// worker that stopped looping gets it dropped (its sessions counted refused, its barrier
    /// released: the watchdog fails it over).
    fn push_control(&mut self, w: usize, mut c: Control) {
        let mut tries = 0;
        let ib = &self.rt.inboxes[w];
        while let Err(back) = ib.control.push(c) {
            c = back;
            ib.wake.notify();
            tries += 1;
            if tries > 2000 || ib.fenced.load(Ordering::Relaxed) {
                match c {
                    Control::Synced(evs) => {
                        self.rt
                            .ha
                            .refused
                            .fetch_add(evs.len() as u64, Ordering::Relaxed);
                    }
                    Control::Barrier(d) => {
                        d.remaining.fetch_sub(1, Ordering::AcqRel);
                    }
                    _ => {}
                }
                return;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        ib.wake.notify();
    }

    /// Sends `u` to every worker's replica, waiting (briefly, repeatedly) for room: a lost
    /// update would send a flow's packets to the wrong worker.
    fn broadcast(&mut self, u: FlowUpdate) {
        for ib in &self.rt.inboxes {
            let mut tries = 0;
            while ib.flows.push(u).is_err() {
                ib.wake.notify();
                tries += 1;
                if tries > 2000 || ib.fenced.load(Ordering::Relaxed) {
                    // A worker that stopped looping: the watchdog fails it over.
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// `w`'s blocks are full: one more VID to allocate from, published before the worker
    /// hears of it so replies to its first port there already find it.
    fn grant_extra(&mut self, w: WorkerId) {
        match self.sp.grant_extra(w) {
            Some((vid, backup)) => {
                self.stats.extra_vids += 1;
                self.publish();
                if let Some(b) = backup {
                    // A VID freed earlier may have left a shadow behind.
                    self.rt.control(b, Control::ForgetShadow(vid));
                }
                self.rt.control(w, Control::ExtraVid(vid));
                tracing::info!(worker = w, vid, backup = ?backup, "NAT: worker's port blocks are full; extra VID granted");
            }
            None => {
                self.stats.extra_refused += 1;
                tracing::warn!(
                    worker = w,
                    free = self.sp.vids().free_vids(),
                    "NAT: worker's port blocks are full and no VID can be spared; new flows get ICMP prohibited"
                );
            }
        }
    }

    /// Grants `w` a VID (claim 10) and sets up what the grant implies.
    fn grant(&mut self, w: WorkerId) {
        let g = match self.sp.request_vid(w) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(worker = w, error = %e, "NAT: no VID for this worker; it translates nothing");
                return;
            }
        };
        self.rt.control(w, Control::Grant(g.vid));
        if let Some(from) = g.handed_back_by {
            self.rt.control(from, Control::HandBack(g.vid, w));
        }
        for c in g.backup_for {
            self.apply(c, &mut Vec::new());
        }
        tracing::info!(worker = w, vid = g.vid, backup = ?g.backup, "NAT: worker has its VID");
    }

    /// Acts on one ownership change; take-overs add their acknowledgement to `acks`.
    fn apply(&mut self, c: VidChange, acks: &mut Vec<std::sync::mpsc::Receiver<usize>>) {
        match c {
            VidChange::Takeover {
                vid, to, backup, ..
            } => {
                let (tx, rx) = std::sync::mpsc::channel();
                self.rt.control(to, Control::TakeOver(vid, tx));
                acks.push(rx);
                if let Some(b) = backup {
                    self.rt.control(b, Control::ForgetShadow(vid));
                    self.rt.control(to, Control::Resync(vid, b));
                }
            }
            VidChange::NewBackup {
                vid,
                owner,
                backup,
                previous,
            } => {
                if let Some(p) = previous {
                    self.rt.control(p, Control::ForgetShadow(vid));
                }
                self.rt.control(backup, Control::ForgetShadow(vid));
                self.rt.control(owner, Control::Resync(vid, backup));
            }
            VidChange::Lost { vid, from } => {
                self.stats.lost_vids += 1;
                tracing::error!(
                    vid,
                    worker = from,
                    "NAT: VID lost with its sessions (no operational backup)"
                );
                self.broadcast(FlowUpdate::RemoveVid(vid));
                for b in 0..self.rt.inboxes.len() as WorkerId {
                    self.rt.control(b, Control::ForgetShadow(vid));
                }
            }
        }
    }

    /// The watchdog: a worker whose heartbeat has not moved for [`STALL_TIMEOUT`], or that
    /// fenced itself, has failed.
    fn watch(&mut self, now: Instant) {
        for w in 0..self.rt.inboxes.len() {
            let ib = &self.rt.inboxes[w];
            if !self.sp.vids().is_operational(w as WorkerId) {
                continue;
            }
            let beat = ib.heartbeat.load(Ordering::Acquire);
            let (last, since) = self.beats[w];
            let stalled = if beat != last {
                self.beats[w] = (beat, now);
                false
            } else {
                now.duration_since(since) >= STALL_TIMEOUT
            };
            if stalled || ib.fenced.load(Ordering::Acquire) {
                self.fail(w as WorkerId, if stalled { "stalled" } else { "stopped" });
            }
        }
    }

    /// Fails `w` over: its VIDs move to their backups in one step (claim 14), the table is
    /// published once the backups have taken over, and packets waiting for `w` go to them.
    pub(super) fn fail(&mut self, w: WorkerId, why: &str) {
        let rt = self.rt.clone();
        let ib = &rt.inboxes[usize::from(w)];
        ib.fenced.store(true, Ordering::Release);
        let changes = self.sp.worker_failed(w);
        tracing::error!(
            worker = w,
            reason = why,
            vids_moved = changes.len(),
            "NAT: worker failed; its VIDs move to their backups"
        );
        let mut acks = Vec::new();
        for c in changes {
            self.apply(c, &mut acks);
        }
        let deadline = Instant::now() + TAKEOVER_WAIT;
        for rx in acks {
            let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        self.publish();
        self.stats.failovers += 1;
        ib.failed_over.store(true, Ordering::Release);
        // What waited in the dead worker's queue goes to the VIDs' new owners.
        let table = self.rt.vids.load_full();
        while let Some(p) = self.rt.inboxes[usize::from(w)].handoff.pop() {
            let to = if p.meta.flags & flags::NAT_HANDED != 0 {
                table.worker_for(p.meta.nat_vid)
            } else {
                None
            };
            if let Some(ib) = to.and_then(|t| self.rt.inboxes.get(usize::from(t))) {
                let _ = ib.handoff.push(p);
                ib.wake.notify();
            }
        }
    }

    fn publish(&mut self) {
        self.rt.vids.store(Arc::new(self.sp.table()));
    }

    fn publish_stats(&mut self) {
        let c = self.sp.counters;
        let s = &mut self.stats;
        s.setups = c.setups;
        s.not_setup = c.not_setup;
        s.already_installed = c.already_installed;
        s.no_worker = c.no_worker;
        s.flow_entries = self.sp.flows().len() as u64;
        let t = self.sp.table();
        s.operational = t.operational.clone();
        s.vids = t
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.owner.is_some())
            .map(|(v, e)| {
                let start = t.geometry.block_start(v as Vid);
                let end = u32::from(start) + t.geometry.len_of(v as Vid) - 1;
                VidRow {
                    vid: v as Vid,
                    ports: format!("{start}-{end}"),
                    owner: e.owner,
                    backup: e.backup,
                }
            })
            .collect();
        if let Ok(mut p) = self.rt.switch.lock() {
            *p = s.clone();
        }
    }
}
