//! The packet pipeline (SPEC.md §3): an ordered list of stages run over bursts of frames, each
//! packet of a burst run to completion (rx to tx) before the next.
//!
//! Each stage looks at a packet and returns a [`Verdict`]: pass it on, consume it (answered,
//! delivered locally, queued), drop it with a named reason, hand it to the egress, or jump to a
//! later stage (a packet the router turned into its own reply). Stages may also emit extra
//! packets (ARP requests and replies, ICMP errors) that enter the pipeline at a named stage.
//! Every stage counts packets in, out, consumed and dropped by reason; nothing is dropped
//! without a counter.
//!
//! Stages run in the canonical order of [`StageKind`]; a stage's index in the pipeline is its
//! `StageKind` discriminant, so counters, traces and emitters agree on positions. Stages of later
//! features (dispatch, acl, wccp redirect/return, steering) slot into the enum at their SPEC.md
//! place without touching the others.

mod affinity;
mod cluster;
pub mod counters;
pub mod drop;
mod ethernet;
mod fragments;
mod gso;
mod icmp;
mod ipv4_input;
mod limit;
mod local;
mod nat_stage;
mod neighbour;
pub mod packet;
mod route;
mod stage;
mod steering;
pub mod trace;
mod wccp;

use crate::tables::neighbours::{NeighSnapshot, Neighbours};
use crate::tables::Tables;
use counters::WorkerCounters;
use drop::DropReason;
pub use ethernet::build_arp;
pub use limit::{
    IcmpLimiter, IcmpLimits, LimitConf, TokenBucket, ECHO_LIMITS, ERROR_LIMITS, ICMP_BURST,
    ICMP_RATE_PER_SEC,
};
use packet::{flags, Packet, Pool};
pub use stage::{StageCx, StageKind, Verdict};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// The rx stage: frames enter here; nothing to check yet.
#[derive(Default)]
struct RxStage;

impl RxStage {
    #[inline(always)]
    fn process(&mut self, _pkt: &mut Packet, _cx: &mut StageCx<'_>) -> Verdict {
        Verdict::Continue
    }
}

/// The tx stage: make sure the frame is complete and ready for its egress.
#[derive(Default)]
struct TxStage;

impl TxStage {
    #[inline(always)]
    fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        if pkt.meta.tx_if as usize >= cx.tables.ifaces.len() {
            return Verdict::Drop(DropReason::TxError);
        }
        pkt.pad_to(crate::wire::ethernet::MIN_FRAME_LEN);
        Verdict::Transmit
    }
}

/// A stage's call, behind the runner flag that gates it (`always`: no flag).
macro_rules! gated {
    ($runner:ident, always, $call:expr) => {
        $call
    };
    // Unconfigured features cost a predicted branch, not a call.
    ($runner:ident, $flag:ident, $call:expr) => {
        if $runner.$flag {
            $call
        } else {
            Verdict::Continue
        }
    };
}

/// Whether a stage behind the runner flag ran (`always`: it did).
macro_rules! gate_on {
    ($runner:ident, always) => {
        true
    };
    ($runner:ident, $flag:ident) => {
        $runner.$flag
    };
}

/// Defines the per-worker stage table and the runner's run-to-completion loop from the stage
/// list (`stage::for_each_stage`).
macro_rules! define_runner {
    ($( $(#[$doc:meta])* $kind:ident, $name:literal, $field:ident: $ty:ty, $gate:ident; )*) => {
        /// The stages of one worker, each with its own state.
        #[derive(Default)]
        struct Stages {
            $( $field: $ty, )*
        }

        impl Stages {
            /// Runs stage `kind` on `pkt` (the per-stage benchmarks; the runner calls stages
            /// directly).
            fn process(&mut self, kind: StageKind, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
                match kind {
                    $( StageKind::$kind => self.$field.process(pkt, cx), )*
                }
            }
        }

        impl Runner<'_> {
            /// Runs one packet from its `meta.stage` until a stage ends its trip.
            ///
            /// The stages are written out in order, each a direct call behind a well-predicted
            /// comparison with the segment's entry stage (kept in a register; `meta.stage` is
            /// written only on a jump), rather than a loop over a stage table: an indirect call
            /// per stage costs more than some stages do. A stage that passes the packet on costs
            /// no bookkeeping.
            ///
            /// `TRACE` is the recording path of a traced packet (module `trace`): each stage's
            /// verdict is noted. The untraced instance has no trace code in it at all.
            fn run_stages<const TRACE: bool>(&mut self, mut pkt: Packet, cx: &mut StageCx<'_>) {
                loop {
                    let at = pkt.meta.stage;
                    $(
                        if at <= StageKind::$kind as u8 {
                            let verdict =
                                gated!(self, $gate, self.stages.$field.process(&mut pkt, cx));
                            if TRACE && gate_on!(self, $gate) {
                                self.note(StageKind::$kind, &verdict, &pkt, cx);
                            }
                            if !matches!(verdict, Verdict::Continue) {
                                let si = StageKind::$kind as usize;
                                match self.end_segment(at, si, verdict, &mut pkt, cx) {
                                    Step::Jump => continue,
                                    Step::Done => {
                                        // The common end, inline: the frame joins its egress
                                        // queue.
                                        if let Verdict::Transmit = verdict {
                                            if let Some(out) =
                                                self.tx_out.get_mut(pkt.meta.tx_if as usize)
                                            {
                                                out.push(pkt);
                                                return;
                                            }
                                        }
                                        self.finish(pkt, si, verdict, cx);
                                        return;
                                    }
                                }
                            }
                        }
                    )*
                    // Past the last stage without an end: cannot happen (tx ends every trip that
                    // passes it, local-delivery every trip that jumps to it).
                    let last = StageKind::ALL.len() - 1;
                    if TRACE {
                        self.note(
                            StageKind::ALL[last],
                            &Verdict::Drop(DropReason::PipelineLoop),
                            &pkt,
                            cx,
                        );
                    }
                    self.end_segment(
                        at,
                        last,
                        Verdict::Drop(DropReason::PipelineLoop),
                        &mut pkt,
                        cx,
                    );
                    self.drop(pkt, last, DropReason::PipelineLoop, cx);
                    return;
                }
            }
        }
    };
}
stage::for_each_stage!(define_runner);

/// Most times a packet may jump (or, for an emitted packet, its ancestors may have jumped or
/// emitted) before it is dropped as `pipeline-loop`; legitimate packets need two at most.
const MAX_PASSES: u8 = 4;

/// Per-stage tallies of one burst: segments that started and ended at each stage, consumed,
/// dropped. A *segment* is a run of stages a packet passes without a jump; a packet passing a
/// stage costs nothing, a segment two increments, and `publish` derives each stage's `in` from
/// the starts and ends before it (out is what is left). Kept on the stack and published once
/// per burst, so the per-packet path writes no shared counters except drops.
#[derive(Clone, Copy, Default)]
struct StageTally {
    started: u64,
    ended: u64,
    consumed: u64,
    dropped: u64,
    /// Held for ARP: neither passed on nor ended yet; the neighbour stage counts each one as
    /// out (released) or dropped (given up) when it leaves the queue, so it is counted once.
    queued: u64,
}

/// One tally per stage.
type Tally = [StageTally; StageKind::ALL.len()];

/// Runs packets to completion through the stages, one at a time.
///
/// Run-to-completion rather than stage-by-stage over the burst: a packet stays in registers
/// and cache from rx to tx, the burst is not rescanned for every stage, and the packets of a
/// flow leave in the order they came. Packets a stage emits run right after the packet that
/// caused them, in the order emitted.
struct Runner<'p> {
    stages: &'p mut Stages,
    tx_out: &'p mut [Vec<Packet>],
    follow: &'p mut VecDeque<Packet>,
    logged: &'p mut [bool; DropReason::COUNT],
    worker: usize,
    tally: Tally,
    /// The snapshot has WCCP services (else the wccp-redirect stage passes everything on).
    wccp_on: bool,
    /// The snapshot steers something (else the steering stage passes everything on).
    steering_on: bool,
    /// The snapshot translates (else the NAT stages pass everything on).
    nat_on: bool,
    /// The router is a cluster node (else the cluster stage passes everything on).
    cluster_on: bool,
    /// The trace shared with the control plane (None in tests and benches that set none).
    tracer: Option<&'p trace::Tracer>,
    /// The record of the traced packet being run.
    recorder: &'p mut trace::Recorder,
}

/// How the runner goes on after a stage that did not pass the packet on.
enum Step {
    /// To the stage in `meta.stage` (a jump).
    Jump,
    /// The trip is over (transmitted, consumed, queued or dropped).
    Done,
}

impl Runner<'_> {
    /// Runs one packet from its `meta.stage`; a traced one on the recording path.
    #[inline(always)]
    fn run(&mut self, pkt: Packet, cx: &mut StageCx<'_>) {
        if pkt.meta.flags & flags::TRACED != 0 {
            self.run_traced(pkt, cx);
        } else {
            self.run_stages::<false>(pkt, cx);
        }
    }

    /// Runs a traced packet, recording its trip, and keeps the record.
    #[cold]
    #[inline(never)]
    fn run_traced(&mut self, mut pkt: Packet, cx: &mut StageCx<'_>) {
        pkt.meta.trace_part = pkt.meta.trace_part.saturating_add(1);
        let rec = trace::TraceRecord::start(
            u64::from(pkt.meta.trace_id),
            u32::from(pkt.meta.trace_part),
            self.worker,
            &pkt,
            cx.tables,
        );
        self.recorder.before = rec.summary.clone();
        self.recorder.current = Some(rec);
        *cx.trace = trace::StageNotes::default();
        self.run_stages::<true>(pkt, cx);
        if let (Some(rec), Some(t)) = (self.recorder.current.take(), self.tracer) {
            t.deposit(self.worker, rec);
        }
    }

    /// Notes stage `kind`'s verdict (and what it wrote in `cx.trace`) in the record.
    #[cold]
    #[inline(never)]
    fn note(&mut self, kind: StageKind, verdict: &Verdict, pkt: &Packet, cx: &mut StageCx<'_>) {
        let mut step = trace::step(kind, verdict, pkt, cx.tables, cx.trace);
        let now = trace::summarize(pkt.frame());
        if now != self.recorder.before {
            step.rewrote = Some(now.clone());
            self.recorder.before = now;
        }
        if let Some(rec) = self.recorder.current.as_mut() {
            rec.stages.push(step);
        }
    }

    /// Marks `pkt` for the trace when it is a received packet the filter wants and marks
    /// remain (the caller checked that a trace is armed).
    #[cold]
    fn mark(&mut self, pkt: &mut Packet, filter: &trace::TraceFilter) {
        let m = &pkt.meta;
        if m.stage != StageKind::Rx as u8
            || m.flags & (flags::LOCAL | flags::TRACED) != 0
            || !filter.matches(pkt.frame(), m.rx_if)
        {
            return;
        }
        if let Some(n) = self.tracer.and_then(|t| t.claim()) {
            pkt.meta.flags |= flags::TRACED;
            pkt.meta.trace_id = u32::try_from(n).unwrap_or(u32::MAX);
            pkt.meta.trace_part = 0;
        }
    }

    /// Cluster: looks at the held packets of moving ids and runs what that released (the
    /// re-run ones and the hand-offs), before anything newer of the same flows.
    #[cold]
    #[inline(never)]
    fn release_held(&mut self, cx: &mut StageCx<'_>) {
        self.stages.cluster.release(cx);
        self.follow.extend(cx.emitted.drain(..));
        while let Some(p) = self.follow.pop_front() {
            self.run(p, cx);
        }
    }

    /// Runs `pkt` and everything it (transitively) emits.
    fn run_with_followers(&mut self, pkt: Packet, cx: &mut StageCx<'_>) {
        self.run(pkt, cx);
        while let Some(p) = self.follow.pop_front() {
            self.run(p, cx);
        }
    }

    /// Counts the segment from stage `from` to stage `si`, whose verdict is not "continue",
    /// adopts what the segment emitted, and says where the packet goes next.
    #[inline(always)]
    fn end_segment(
        &mut self,
        from: u8,
        si: usize,
        verdict: Verdict,
        pkt: &mut Packet,
        cx: &mut StageCx<'_>,
    ) -> Step {
        if let Some(t) = self.tally.get_mut(from as usize) {
            t.started += 1;
        }
        if !cx.emitted.is_empty() {
            self.adopt_emitted(pkt, cx);
        }
        let tally = &mut self.tally[si];
        tally.ended += 1;
        match verdict {
            Verdict::Jump(to) => {
                pkt.meta.passes += 1;
                if pkt.meta.passes > MAX_PASSES {
                    tally.dropped += 1;
                    return Step::Done;
                }
                tally.consumed += 1;
                pkt.meta.stage = to as u8;
                Step::Jump
            }
            Verdict::Continue | Verdict::Transmit => Step::Done,
            Verdict::Consumed | Verdict::HandOff => {
                tally.consumed += 1;
                Step::Done
            }
            Verdict::Queued => {
                tally.queued += 1;
                Step::Done
            }
            Verdict::Drop(_) => {
                tally.dropped += 1;
                Step::Done
            }
        }
    }

    /// Ends a packet's trip after stage `si` decided `verdict`.
    #[inline(never)]
    fn finish(&mut self, pkt: Packet, si: usize, verdict: Verdict, cx: &mut StageCx<'_>) {
        match verdict {
            Verdict::Transmit => match self.tx_out.get_mut(pkt.meta.tx_if as usize) {
                Some(out) => out.push(pkt),
                None => cx.pool.put(pkt),
            },
            Verdict::Queued if si == StageKind::Cluster as usize => {
                self.stages.cluster.hold(pkt, cx)
            }
            Verdict::Queued => self.stages.neighbour.enqueue(pkt, cx),
            Verdict::Drop(reason) => self.drop(pkt, si, reason, cx),
            // A jump past the loop guard.
            Verdict::Jump(_) => self.drop(pkt, si, DropReason::PipelineLoop, cx),
            Verdict::HandOff => {
                let refused = match cx.nat.as_deref_mut() {
                    Some(n) => n.push_handoff(pkt).err(),
                    None => Some((pkt, DropReason::NatWorkerDown)),
                };
                if let Some((p, reason)) = refused {
                    self.drop(p, si, reason, cx);
                }
            }
            Verdict::Consumed | Verdict::Continue => cx.pool.put(pkt),
        }
    }

    /// Queues what a stage emitted while running `parent`, one generation deeper.
    fn adopt_emitted(&mut self, parent: &Packet, cx: &mut StageCx<'_>) {
        let depth = parent.meta.passes.saturating_add(1);
        for mut p in cx.emitted.drain(..) {
            p.meta.passes = p.meta.passes.max(depth);
            if p.meta.passes > MAX_PASSES {
                let si = (p.meta.stage as usize).min(StageKind::ALL.len() - 1);
                cx.counters.stages[si].drops[DropReason::PipelineLoop as usize].inc();
                cx.pool.put(p);
            } else {
                self.follow.push_back(p);
            }
        }
    }

    /// Counts, logs (the first time per reason) and recycles a dropped packet.
    fn drop(&mut self, pkt: Packet, si: usize, reason: DropReason, cx: &mut StageCx<'_>) {
        cx.counters.stages[si].drops[reason as usize].inc();
        if !self.logged[reason as usize] && !reason.is_quiet() {
            self.logged[reason as usize] = true;
            tracing::warn!(
                worker = self.worker,
                stage = StageKind::ALL[si].as_str(),
                reason = reason.as_str(),
                "first drop for this reason; later ones are only counted"
            );
        }
        cx.pool.put(pkt);
    }

    /// Adds the tallies to the shared counters: a stage's `in` is the segments that started
    /// at or before it and had not ended before it.
    fn publish(&self, counters: &WorkerCounters) {
        let mut open = 0u64;
        for (sc, t) in counters.stages.iter().zip(self.tally.iter()) {
            open += t.started;
            let packets_in = open;
            open = open.saturating_sub(t.ended);
            let (consumed, dropped) = (t.consumed, t.dropped);
            if packets_in > 0 {
                sc.packets_in.add(packets_in);
                sc.packets_out
                    .add(packets_in.saturating_sub(consumed + dropped + t.queued));
                sc.consumed.add(consumed);
            }
        }
    }
}

/// The pipeline of one worker.
pub struct Pipeline {
    stages: Stages,
    counters: Arc<WorkerCounters>,
    /// Frames ready to send, per egress interface; the worker drains them after each burst.
    pub tx_out: Vec<Vec<Packet>>,
    /// Packets stages emitted, waiting to run right after the packet that caused them.
    follow: VecDeque<Packet>,
    emitted: Vec<Packet>,
    logged: [bool; DropReason::COUNT],
    icmp_limits: IcmpLimits,
    worker: usize,
    /// This worker's NAT state (when NAT is configured).
    nat: Option<crate::natd::WorkerNat>,
    /// The packet trace (set by the worker; tests may leave it out).
    tracer: Option<Arc<trace::Tracer>>,
    /// The record of the traced packet being run.
    recorder: trace::Recorder,
    /// What stages noted about the traced packet being run.
    notes: trace::StageNotes,
}

impl Pipeline {
    /// A pipeline for `n_ifaces` interfaces, counting into `counters`.
    pub fn new(worker: usize, n_ifaces: usize, counters: Arc<WorkerCounters>) -> Pipeline {
        Pipeline {
            stages: Stages::default(),
            counters,
            tx_out: (0..n_ifaces).map(|_| Vec::new()).collect(),
            follow: VecDeque::with_capacity(256),
            emitted: Vec::with_capacity(64),
            logged: [false; DropReason::COUNT],
            icmp_limits: IcmpLimits::default(),
            worker,
            nat: None,
            tracer: None,
            recorder: trace::Recorder::default(),
            notes: trace::StageNotes::default(),
        }
    }

    /// Gives this worker the packet trace it marks and records into.
    pub fn set_tracer(&mut self, tracer: Arc<trace::Tracer>) {
        self.tracer = Some(tracer);
    }

    /// Gives this worker its NAT state.
    pub fn set_nat(&mut self, nat: crate::natd::WorkerNat) {
        self.nat = Some(nat);
    }

    /// This worker's NAT state, for the worker loop's housekeeping.
    pub fn nat_mut(&mut self) -> Option<&mut crate::natd::WorkerNat> {
        self.nat.as_mut()
    }

    /// The runner and the context its stages see, for one burst or one poll.
    fn split<'a>(
        &'a mut self,
        tables: &'a Tables,
        neigh: &'a NeighSnapshot,
        neighbours: &'a Neighbours,
        pool: &'a mut Pool,
        now: Instant,
        counters: &'a WorkerCounters,
    ) -> (Runner<'a>, StageCx<'a>) {
        let runner = Runner {
            stages: &mut self.stages,
            tx_out: &mut self.tx_out,
            follow: &mut self.follow,
            logged: &mut self.logged,
            worker: self.worker,
            tally: [StageTally::default(); StageKind::ALL.len()],
            wccp_on: !tables.wccp.services.is_empty(),
            steering_on: tables.steering.tables.is_some(),
            nat_on: tables.nat.is_some() && self.nat.is_some(),
            cluster_on: tables.cluster.is_some(),
            tracer: self.tracer.as_deref(),
            recorder: &mut self.recorder,
        };
        let cx = StageCx {
            now,
            tables,
            neigh,
            neighbours,
            pool,
            emitted: &mut self.emitted,
            icmp_limits: &mut self.icmp_limits,
            counters,
            nat: self.nat.as_mut(),
            trace: &mut self.notes,
        };
        (runner, cx)
    }

    /// Number of stages (the counter array length).
    pub fn stage_count() -> usize {
        StageKind::ALL.len()
    }

    /// Runs a burst of received frames (and anything they cause) through all stages.
    ///
    /// Frames leave either in `tx_out` or back in the pool; `burst` is left empty.
    pub fn run(
        &mut self,
        burst: &mut Vec<Packet>,
        tables: &Tables,
        neigh: &NeighSnapshot,
        neighbours: &Neighbours,
        pool: &mut Pool,
        now: Instant,
    ) {
        let counters = self.counters.clone();
        let (mut runner, mut cx) = self.split(tables, neigh, neighbours, pool, now, &counters);
        if runner.stages.cluster.has_held() {
            runner.release_held(&mut cx);
        }
        // The trace's one check per burst; marking (filter, claim) only while armed.
        match runner.tracer.filter(|t| t.is_armed()) {
            None => {
                for pkt in burst.drain(..) {
                    runner.run_with_followers(pkt, &mut cx);
                }
            }
            Some(t) => {
                let filter = t.filter();
                for mut pkt in burst.drain(..) {
                    runner.mark(&mut pkt, &filter);
                    runner.run_with_followers(pkt, &mut cx);
                }
            }
        }
        runner.publish(&counters);
    }

    /// Housekeeping of stateful stages: pending next hops that resolved or timed out, flow
    /// affinity's expiry, HA export requests and the peer's drain-memory connections.
    pub fn poll(
        &mut self,
        tables: &Tables,
        neigh: &NeighSnapshot,
        neighbours: &Neighbours,
        pool: &mut Pool,
        now: Instant,
    ) {
        let counters = self.counters.clone();
        let (mut runner, mut cx) = self.split(tables, neigh, neighbours, pool, now, &counters);
        runner.stages.wccp_redirect.housekeep(&tables.wccp, now);
        runner.stages.steering.housekeep(&tables.steering);
        if runner.stages.cluster.has_held() {
            runner.release_held(&mut cx);
        }
        runner.stages.neighbour.poll(&mut cx);
        if cx.emitted.is_empty() {
            runner.publish(&counters);
            return;
        }
        // Released packets start a generation of their own.
        runner.follow.extend(cx.emitted.drain(..));
        while let Some(p) = runner.follow.pop_front() {
            runner.run(p, &mut cx);
        }
        runner.publish(&counters);
    }

    /// Runs only stage `kind` over `burst`, in place, and returns how many packets it passed on.
    ///
    /// For per-stage benchmarks: packets stay in `burst` whatever the verdict (nothing is queued
    /// or transmitted) and anything the stage emits goes straight back to the pool.
    // The same inputs as `run` plus the stage; bundling them would only serve this bench hook.
    #[allow(clippy::too_many_arguments)]
    pub fn run_single_stage(
        &mut self,
        kind: StageKind,
        burst: &mut [Packet],
        tables: &Tables,
        neigh: &NeighSnapshot,
        neighbours: &Neighbours,
        pool: &mut Pool,
        now: Instant,
    ) -> usize {
        let counters = self.counters.clone();
        let (runner, mut cx) = self.split(tables, neigh, neighbours, pool, now, &counters);
        let mut passed = 0;
        for pkt in burst.iter_mut() {
            if matches!(
                runner.stages.process(kind, pkt, &mut cx),
                Verdict::Continue | Verdict::Transmit
            ) {
                passed += 1;
            }
        }
        for p in cx.emitted.drain(..) {
            cx.pool.put(p);
        }
        passed
    }

    /// True when stateful stages hold packets that need `poll` soon.
    pub fn has_pending(&self) -> bool {
        self.stages.neighbour.has_pending() || self.stages.cluster.has_held()
    }

    /// Cluster: preallocates this worker's hold queue for `limit` packets (`hold-limit`).
    pub fn reserve_cluster_hold(&mut self, limit: usize) {
        self.stages.cluster.reserve(limit);
    }

    /// This worker's counters.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }
}
