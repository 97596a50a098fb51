//! One worker's NAT: the `nat-in` and `nat-out` stages' decisions (line interface and
//! processor), and the per-loop housekeeping (queues in, expiry, mirroring, statistics).

use super::{proto_name, Control, FlowUpdate, NatRuntime, SessionRow, SwitchMsg, WorkerStats};
use crate::pipeline::packet::{flags, Packet};
use crate::pipeline::StageKind;
use crate::wire::ethernet::HEADER_LEN;
use nat::dispatch::{dispatch, Direction, Dispatch, FlowTable};
use nat::mirror::Wire;
use nat::session::{tcp_state, Endpoint};
use nat::sync::SyncEvent;
use nat::translate::{self, L4Csum};
use nat::vid::{Vid, VidTable, WorkerId};
use nat::worker::{vid_of_record, NatWorker, Verdict as NatVerdict, WorkerEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Expiry work per loop (slots visited or sessions examined).
const EXPIRY_BUDGET: usize = 4096;
/// Mirror records sent per loop.
const MIRROR_BATCH: usize = 4096;
/// Handed-over packets taken per loop.
pub const HANDOFF_BATCH: usize = 256;
/// How often statistics are published and load reported.
const STATS_EVERY: Duration = Duration::from_millis(100);

/// What a NAT stage decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not NAT traffic, or translated here: go on.
    Continue,
    /// Translated outbound to a pool address: dispatch it again as inbound.
    Hairpin,
    /// Handed to another worker or the switch processor.
    HandedOff,
    /// Not NAT, addressed to the router: local delivery.
    Local,
    /// No port for a new session: ICMP prohibited, drop.
    Prohibited,
    /// Dropped.
    Drop(crate::pipeline::drop::DropReason),
}

/// A worker's NAT state.
pub struct WorkerNat {
    id: WorkerId,
    rt: Arc<NatRuntime>,
    nw: NatWorker,
    flows: FlowTable,
    vids: Arc<VidTable>,
    now_s: u32,
    /// Workers whose handoff queue got packets since the last wake-up (bit per worker).
    to_wake: u64,
    /// The worker the last packet marked for handoff goes to.
    handoff_to: WorkerId,
    /// Mirror records no backup queue had room for.
    mirror_overflow: u64,
    events: Vec<WorkerEvent>,
    mirror: Vec<Wire>,
    stats: WorkerStats,
    next_stats: Instant,
    loops: u64,
    /// The node's HA role as this worker last saw it.
    active: bool,
    /// The export generation this worker last served.
    export_seen: u64,
    /// Session changes for the HA peer, between the nat worker and the feed.
    sync: Vec<SyncEvent>,
}

impl WorkerNat {
    /// Worker `id`'s NAT state on `rt`.
    pub fn new(id: WorkerId, rt: Arc<NatRuntime>, seed: u64) -> WorkerNat {
        let now_s = rt.secs(Instant::now());
        let cap = rt.cfg.max_sessions as usize * usize::from(rt.cfg.workers);
        WorkerNat {
            id,
            nw: NatWorker::new(id, &rt.cfg, seed, now_s),
            flows: FlowTable::new(cap.min(1 << 22), seed.rotate_left(9)),
            vids: rt.vids.load_full(),
            rt,
            now_s,
            to_wake: 0,
            handoff_to: 0,
            mirror_overflow: 0,
            events: Vec::with_capacity(1024),
            mirror: Vec::with_capacity(MIRROR_BATCH),
            stats: WorkerStats::default(),
            next_stats: Instant::now(),
            loops: 0,
            active: true,
            export_seen: 0,
            sync: Vec::new(),
        }
    }

    /// This worker's id.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    fn csum(pkt: &Packet) -> L4Csum {
        if pkt.meta.offload.needs_csum() {
            L4Csum::Partial
        } else {
            L4Csum::Full
        }
    }

    /// `nat-in`: a packet that arrived on an outside interface for a pool address (or a
    /// hairpinned one).
    #[inline]
    pub fn inbound(&mut self, pkt: &mut Packet, local: bool) -> Step {
        let csum = Self::csum(pkt);
        if pkt.meta.flags & flags::NAT_HANDED != 0 {
            return self.translate_in(pkt, csum);
        }
        if ipv4_protocol(pkt) == nat::esp::PROTO_ESP {
            return self.esp_in(pkt);
        }
        let d = dispatch(
            &pkt.frame()[HEADER_LEN..],
            Direction::Inbound,
            &self.rt.cfg,
            &self.vids,
            &self.flows,
        );
        match d {
            // The worker checks the VID itself (it counts a misdelivery).
            Dispatch::ToWorker { worker, .. } if worker == self.id => self.translate_in(pkt, csum),
            Dispatch::ToWorker { worker, vid } => self.hand_off(pkt, worker, vid, StageKind::NatIn),
            Dispatch::NotNat if local => Step::Local,
            Dispatch::NotNat => Step::Continue,
            Dispatch::SetupRequest => Step::Continue,
            Dispatch::Drop(d) => Step::Drop(d.into()),
        }
    }

    fn translate_in(&mut self, pkt: &mut Packet, csum: L4Csum) -> Step {
        let now = self.now_s;
        match self
            .nw
            .inbound(&mut pkt.frame_mut()[HEADER_LEN..], csum, now)
        {
            NatVerdict::Forward | NatVerdict::Hairpin => Step::Continue,
            NatVerdict::Prohibited => Step::Prohibited,
            NatVerdict::Drop(d) => Step::Drop(d.into()),
        }
    }

    /// `nat-out`: a packet routed out of outside interface `out_if`.
    #[inline]
    pub fn outbound(&mut self, pkt: &mut Packet, out_if: u16) -> Step {
        let csum = Self::csum(pkt);
        if pkt.meta.flags & flags::NAT_HANDED != 0 {
            let setup = pkt.meta.flags & flags::NAT_SETUP != 0;
            return self.translate_out(pkt, csum, out_if, pkt.meta.nat_vid, setup);
        }
        if ipv4_protocol(pkt) == nat::esp::PROTO_ESP {
            return self.esp_out(pkt, out_if);
        }
        let d = dispatch(
            &pkt.frame()[HEADER_LEN..],
            Direction::Outbound(u32::from(out_if)),
            &self.rt.cfg,
            &self.vids,
            &self.flows,
        );
        match d {
            Dispatch::ToWorker { worker, vid } if worker == self.id => {
                self.translate_out(pkt, csum, out_if, vid, false)
            }
            Dispatch::ToWorker { worker, vid } => {
                self.hand_off(pkt, worker, vid, StageKind::NatOut)
            }
            // Both HA nodes allocate from the same pool: only the active one creates sessions.
            Dispatch::SetupRequest if !self.active => {
                self.rt.ha.standby_drops.fetch_add(1, Ordering::Relaxed);
                Step::Drop(crate::pipeline::drop::DropReason::NatStandby)
            }
            Dispatch::SetupRequest => Step::HandedOff,
            Dispatch::NotNat => Step::Continue,
            Dispatch::Drop(d) => Step::Drop(d.into()),
        }
    }

    /// An inside host's ESP packet: the shared ESP table (no VID, no hand-off).
    fn esp_out(&mut self, pkt: &mut Packet, out_if: u16) -> Step {
        let l3 = &mut pkt.frame_mut()[HEADER_LEN..];
        let src = crate::wire::ipv4::src(l3);
        let dst = crate::wire::ipv4::dst(l3);
        let Some(pool) = self.rt.cfg.pool_addr_for(src, u32::from(out_if)) else {
            // No rule translates this source: forwarded as it is, like other protocols.
            return Step::Continue;
        };
        match self
            .rt
            .esp
            .outbound(l3, pool, self.now_s, self.active, &self.rt.feed)
        {
            super::esp::EspVerdict::Forward if self.rt.cfg.is_pool_addr(dst) => Step::Hairpin,
            super::esp::EspVerdict::Forward => Step::Continue,
            super::esp::EspVerdict::Drop(r) => Step::Drop(r),
        }
    }

    /// An ESP packet from the outside to a pool address.
    fn esp_in(&mut self, pkt: &mut Packet) -> Step {
        let l3 = &mut pkt.frame_mut()[HEADER_LEN..];
        match self.rt.esp.inbound(l3, self.now_s, &self.rt.feed) {
            super::esp::EspVerdict::Forward => Step::Continue,
            super::esp::EspVerdict::Drop(r) => Step::Drop(r),
        }
    }

    fn translate_out(
        &mut self,
        pkt: &mut Packet,
        csum: L4Csum,
        out_if: u16,
        vid: Vid,
        setup: bool,
    ) -> Step {
        let now = self.now_s;
        let v = self.nw.outbound(
            &mut pkt.frame_mut()[HEADER_LEN..],
            csum,
            u32::from(out_if),
            vid,
            setup,
            now,
        );
        if setup && !matches!(v, NatVerdict::Forward | NatVerdict::Hairpin) {
            // The switch processor installed the endpoint for this session: take it back.
            if let Ok(f) = translate::parse(&pkt.frame()[HEADER_LEN..]) {
                let ep = Endpoint {
                    proto: f.proto,
                    addr: f.src,
                    port: f.sport,
                };
                let _ = self.rt.to_switch(SwitchMsg::SetupFailed(ep));
            }
        }
        if v == NatVerdict::Drop(nat::worker::NatDrop::Standby) {
            self.rt.ha.standby_drops.fetch_add(1, Ordering::Relaxed);
        }
        match v {
            NatVerdict::Forward => Step::Continue,
            NatVerdict::Hairpin => Step::Hairpin,
            NatVerdict::Prohibited => Step::Prohibited,
            NatVerdict::Drop(d) => Step::Drop(d.into()),
        }
    }

    /// The packet is a set-up request: give it to the switch processor; gives it back when
    /// the switch processor's queue is full.
    fn send_setup(&mut self, pkt: Packet) -> Result<(), Packet> {
        match self.rt.to_switch(SwitchMsg::Setup(pkt)) {
            Ok(()) => {
                self.stats.setup_requests += 1;
                Ok(())
            }
            Err(m) => {
                self.rt.switch_full.fetch_add(1, Ordering::Relaxed);
                match m {
                    SwitchMsg::Setup(p) => Err(p),
                    // `to_switch` gives back what it was given.
                    _ => Ok(()),
                }
            }
        }
    }

    /// Marks `pkt` for `worker` and says so; the stage then moves the packet out with
    /// [`WorkerNat::push_handoff`].
    fn hand_off(&mut self, pkt: &mut Packet, worker: WorkerId, vid: Vid, at: StageKind) -> Step {
        pkt.meta.flags |= flags::NAT_HANDED;
        pkt.meta.nat_vid = vid;
        pkt.meta.stage = at as u8;
        self.handoff_to = worker;
        Step::HandedOff
    }

    /// Moves a packet [`WorkerNat::outbound`]/[`WorkerNat::inbound`] marked as handed off to
    /// its worker's queue (or, unmarked, to the switch processor as a set-up request). Gives
    /// it back when the queue is full.
    pub fn push_handoff(
        &mut self,
        pkt: Packet,
    ) -> Result<(), (Packet, crate::pipeline::drop::DropReason)> {
        use crate::pipeline::drop::DropReason;
        if pkt.meta.flags & flags::NAT_HANDED == 0 {
            return self
                .send_setup(pkt)
                .map_err(|p| (p, DropReason::NatSwitchFull));
        }
        let w = self.handoff_to;
        let Some(ib) = self.rt.inboxes.get(usize::from(w)) else {
            return Err((pkt, DropReason::NatWorkerDown));
        };
        match ib.handoff.push(pkt) {
            Ok(()) => {
                self.stats.handed_off += 1;
                self.to_wake |= 1u64 << (w % 64);
                Ok(())
            }
            Err(p) => Err((p, DropReason::NatHandoffFull)),
        }
    }

    /// Wakes the workers this one handed packets to since the last call.
    pub fn wake_targets(&mut self) {
        let mut m = std::mem::take(&mut self.to_wake);
        while m != 0 {
            let w = m.trailing_zeros() as usize;
            m &= m - 1;
            if let Some(ib) = self.rt.inboxes.get(w) {
                ib.wake.notify();
            }
        }
    }

    /// The start of a loop: the clock, the VID table, orders, flow-table changes, mirror
    /// records. Returns false when the worker was fenced (declared failed) and must stop.
    pub fn begin_loop(&mut self, now: Instant) -> bool {
        let rt = self.rt.clone();
        let ib = &rt.inboxes[usize::from(self.id)];
        if ib.fenced.load(Ordering::Acquire) {
            return false;
        }
        self.loops += 1;
        ib.heartbeat.store(self.loops, Ordering::Release);
        ib.wake.drain();
        self.now_s = self.rt.secs(now);
        self.follow_ha();
        while let Some(c) = ib.control.pop() {
            self.handle_control(c);
        }
        while let Some(u) = ib.flows.pop() {
            match u {
                FlowUpdate::Install(ep, vid) => self.flows.install(ep, vid),
                FlowUpdate::Remove(ep) => {
                    self.flows.remove(ep);
                }
                FlowUpdate::RemoveVid(vid) => self.flows.remove_vid(vid),
            }
        }
        let mut batch: Vec<Wire> = Vec::new();
        while let Some(r) = ib.mirror.pop() {
            batch.push(r);
            if batch.len() == 1024 {
                self.nw.handle_mirror(&batch);
                batch.clear();
            }
        }
        if !batch.is_empty() {
            self.nw.handle_mirror(&batch);
        }
        // Loaded after the orders: a take-over is acknowledged before the switch processor
        // publishes the table that sends this worker the VID's packets.
        self.vids = self.rt.vids.load_full();
        true
    }

    /// Follows the node's HA role and export requests (once per loop: two atomic loads).
    fn follow_ha(&mut self) {
        let active = self.rt.is_active();
        if active != self.active {
            self.active = active;
            self.nw.set_active(active, self.now_s);
            self.nw.set_sync(active && self.rt.feed.enabled());
        } else if self.loops == 1 {
            self.nw.set_sync(active && self.rt.feed.enabled());
        }
        let gen = self.rt.export_gen();
        if gen != self.export_seen {
            self.export_seen = gen;
            if self.rt.feed.enabled() {
                // What was recorded before goes first; the export repeats it anyway.
                self.flush_sync();
                let mut all = Vec::new();
                self.nw.export(&mut all);
                let n = all.len() as u64;
                for ev in &all {
                    publish(&self.rt.feed, ev);
                }
                self.rt.ha.exported.fetch_add(n, Ordering::Relaxed);
                tracing::debug!(
                    worker = self.id,
                    sessions = n,
                    "NAT: sessions exported for the HA peer"
                );
            }
        }
    }

    /// Publishes the session changes recorded since the last call.
    fn flush_sync(&mut self) {
        self.nw.poll_sync(&mut self.sync);
        if self.sync.is_empty() {
            return;
        }
        for ev in &self.sync {
            publish(&self.rt.feed, ev);
        }
        self.rt
            .ha
            .published
            .fetch_add(self.sync.len() as u64, Ordering::Relaxed);
        self.sync.clear();
    }

    /// Handed-over packets waiting for this worker (at most `max`), to run through the
    /// pipeline from their `meta.stage`.
    pub fn take_handoffs(&mut self, out: &mut Vec<Packet>, max: usize) {
        let rt = self.rt.clone();
        let ib = &rt.inboxes[usize::from(self.id)];
        for _ in 0..max {
            match ib.handoff.pop() {
                Some(p) => {
                    self.stats.handed_in += 1;
                    out.push(p);
                }
                None => break,
            }
        }
    }

    /// True when handed-over packets are waiting.
    pub fn has_handoffs(&self) -> bool {
        !self.rt.inboxes[usize::from(self.id)].handoff.is_empty()
    }

    fn handle_control(&mut self, c: Control) {
        let now = self.now_s;
        match c {
            Control::Grant(vid) => {
                self.nw.handle_grant(vid);
                tracing::info!(worker = self.id, vid, "NAT: VID granted");
            }
            Control::ExtraVid(vid) => self.nw.handle_extra(vid),
            Control::TakeOver(vid, ack) => {
                let n = self.nw.take_over(vid, now);
                tracing::warn!(
                    worker = self.id,
                    vid,
                    sessions = n,
                    "NAT: took over a failed worker's VID"
                );
                let _ = ack.send(n);
            }
            Control::Resync(vid, to) => {
                let mut snap = Vec::new();
                self.nw.snapshot(vid, &mut snap);
                if let Some(ib) = self.rt.inboxes.get(usize::from(to)) {
                    for r in snap {
                        if ib.mirror.push(r).is_err() {
                            self.mirror_overflow += 1;
                        }
                    }
                    ib.wake.notify();
                }
            }
            Control::ForgetShadow(vid) => self.nw.forget_shadow(vid),
            Control::HandBack(vid, to) => {
                let mut recs = Vec::new();
                self.nw.hand_back(vid, &mut recs);
                self.rt.control(to, Control::Adopt(vid, recs));
            }
            Control::Adopt(vid, recs) => {
                self.nw.handle_mirror(&recs);
                self.nw.take_over(vid, now);
            }
            Control::Flows(entries) => {
                for (ep, vid) in entries {
                    self.flows.install(ep, vid);
                }
            }
            Control::Synced(evs) => {
                let (mut ok, mut refused) = (0u64, 0u64);
                for ev in &evs {
                    if self.nw.apply_synced(ev, now) {
                        ok += 1;
                    } else {
                        refused += 1;
                    }
                }
                self.rt.ha.applied.fetch_add(ok, Ordering::Relaxed);
                if refused > 0 {
                    self.rt.ha.refused.fetch_add(refused, Ordering::Relaxed);
                    tracing::debug!(worker = self.id, refused, "NAT: HA peer's sessions refused");
                }
            }
            Control::DropIds(ids, done) => {
                // Records of the ids' last changes go out before the release marker the
                // driver publishes once every worker passed.
                self.flush_sync();
                let mut events = std::mem::take(&mut self.events);
                let n = self.nw.drop_ids(&ids, &mut events);
                self.events = events;
                done.dropped.fetch_add(n as u64, Ordering::Relaxed);
                done.remaining.fetch_sub(1, Ordering::AcqRel);
            }
            Control::Barrier(done) => {
                done.remaining.fetch_sub(1, Ordering::AcqRel);
            }
            Control::List(reply) => {
                let _ = reply.send(self.list());
            }
            Control::Kill { panic } => {
                if !self.rt.test_hooks {
                    return;
                }
                if panic {
                    panic!("NAT test hook: worker {} killed", self.id);
                }
                // A real stall: no loop, no heartbeat, until the watchdog notices (after
                // STALL_TIMEOUT) and fences this worker; then the loop sees the fence and exits.
                tracing::warn!(worker = self.id, "NAT test hook: worker stalls");
                let ib = &self.rt.inboxes[usize::from(self.id)];
                let give_up = std::time::Instant::now() + 20 * super::STALL_TIMEOUT;
                while !ib.fenced.load(Ordering::Acquire) && std::time::Instant::now() < give_up {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                ib.fenced.store(true, Ordering::Release);
            }
        }
    }

    fn list(&self) -> Vec<SessionRow> {
        let mut all = Vec::new();
        self.nw.table().list(&mut all);
        let g = self.vids.geometry;
        all.into_iter()
            .map(|(s, last)| {
                let icmp = s.proto == netwire::ipv4::PROTO_ICMP;
                let ep = |a: std::net::Ipv4Addr, p: u16| {
                    if icmp {
                        format!("{a}#{p}")
                    } else {
                        format!("{a}:{p}")
                    }
                };
                SessionRow {
                    proto: proto_name(s.proto).to_string(),
                    inside: ep(s.inside_addr, s.inside_port),
                    outside: ep(s.pool_addr, s.outside_port),
                    remote: if icmp {
                        s.remote_addr.to_string()
                    } else {
                        ep(s.remote_addr, s.remote_port)
                    },
                    state: if s.proto == netwire::ipv4::PROTO_TCP {
                        tcp_name(s.tcp)
                    } else {
                        "-"
                    }
                    .to_string(),
                    idle_s: self.now_s.saturating_sub(last),
                    worker: self.id,
                    vid: g.vid_of_port(s.outside_port).unwrap_or(u16::MAX),
                    spi_out: None,
                    spi_in: None,
                }
            })
            .collect()
    }

    /// The end of a loop: expiry, events to the switch processor, mirror records to the
    /// backups, wake-ups, statistics.
    pub fn end_loop(&mut self, now: Instant) {
        self.wake_targets();
        self.nw
            .poll_expired(self.now_s, EXPIRY_BUDGET, &mut self.events);
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            if let Err(SwitchMsg::Event(_, ev)) = self.rt.to_switch(SwitchMsg::Event(self.id, ev)) {
                // The switch processor is far behind; the event is retried next loop.
                self.rt.switch_full.fetch_add(1, Ordering::Relaxed);
                self.events.push(ev);
            }
        }
        if self.events.is_empty() {
            self.events = events;
        }
        self.flush_sync();
        self.mirror.clear();
        self.nw.poll_mirror(&mut self.mirror, MIRROR_BATCH);
        if !self.mirror.is_empty() {
            // Backups pick the records up on their next loop; no wake-up needed.
            let g = self.vids.geometry;
            for r in &self.mirror {
                let backup = vid_of_record(&g, r)
                    .and_then(|v| self.vids.entries.get(usize::from(v)))
                    .and_then(|e| e.backup);
                if let Some(b) = backup {
                    if let Some(ib) = self.rt.inboxes.get(usize::from(b)) {
                        if ib.mirror.push(*r).is_err() {
                            self.mirror_overflow += 1;
                        }
                    }
                }
            }
        }
        if now >= self.next_stats {
            self.next_stats = now + STATS_EVERY;
            self.publish();
        }
    }

    fn publish(&mut self) {
        let t = self.nw.table();
        let c = &self.nw.counters;
        let s = &mut self.stats;
        s.home_vid = self.nw.home();
        s.extra_vids = self.nw.allocating().len().saturating_sub(1) as u16;
        s.sessions = t.len() as u64;
        s.mappings = t.mappings() as u64;
        s.shadow = self.nw.shadow().len() as u64;
        s.created = t.counters.created;
        s.expired = t.counters.expired;
        s.adopted = t.counters.adopted;
        s.out_translated = c.out_translated;
        s.in_translated = c.in_translated;
        s.icmp_errors = c.icmp_errors;
        s.hairpin = c.hairpin;
        s.port_exhausted = c.exhausted;
        s.misdelivered = c.misdelivered;
        s.mirror_overflow = self.nw.mirror_overflow() + self.mirror_overflow;
        s.flow_entries = self.flows.len() as u64;
        if let Ok(mut p) = self.rt.inboxes[usize::from(self.id)].stats.lock() {
            *p = *s;
        }
        // The switch processor picks the least-loaded worker by mapping count.
        let _ = self
            .rt
            .to_switch(SwitchMsg::Load(self.id, t.mappings() as u32));
    }
}

/// Publishes one session change as a `NAT_SESSION` record.
fn publish(feed: &crate::statesync::SyncFeed, ev: &SyncEvent) {
    let rec = match ev {
        SyncEvent::Upsert(s) => {
            let (k, v) = nat::sync::encode(s);
            hasync::Record::upsert(hasync::TableId::NAT_SESSION, k.to_vec(), v.to_vec())
        }
        SyncEvent::Delete(s) => hasync::Record::delete(
            hasync::TableId::NAT_SESSION,
            nat::sync::SessionKey::of(s).encode().to_vec(),
        ),
    };
    feed.publish(rec);
}

fn tcp_name(bits: u8) -> &'static str {
    use tcp_state::*;
    if bits & RST != 0 {
        "reset"
    } else if bits & FIN_OUT != 0 && bits & FIN_IN != 0 {
        "closed"
    } else if bits & (FIN_OUT | FIN_IN) != 0 {
        "closing"
    } else if bits & SYN_OUT != 0 && bits & SYN_IN != 0 {
        "established"
    } else {
        "syn-sent"
    }
}

/// The IP protocol of `pkt` (an IPv4 frame the earlier stages validated).
#[inline]
fn ipv4_protocol(pkt: &Packet) -> u8 {
    pkt.frame()
        .get(HEADER_LEN..)
        .map_or(0, crate::wire::ipv4::protocol)
}
