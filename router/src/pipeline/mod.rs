//! The packet pipeline (SPEC.md §3): an ordered list of stages run over bursts of frames.
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
pub mod counters;
pub mod drop;
mod ethernet;
mod gso;
mod icmp;
mod ipv4_input;
mod neighbour;
pub mod packet;
mod route;
mod steering;
mod wccp;

use crate::tables::neighbours::{NeighSnapshot, Neighbours};
use crate::tables::Tables;
use counters::WorkerCounters;
use drop::DropReason;
pub use ethernet::build_arp;
pub use icmp::{next_ident, TokenBucket, ICMP_BURST, ICMP_RATE_PER_SEC};
use packet::{Packet, Pool};
use std::sync::Arc;
use std::time::Instant;

/// The stages, in pipeline order (SPEC.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StageKind {
    /// Frames from the I/O backend.
    Rx,
    /// Ethernet demux, ARP answers and learning.
    Ethernet,
    /// IPv4 validation and local delivery.
    Ipv4Input,
    /// WCCP redirection to caches (redirect in).
    WccpRedirect,
    /// Service-chain steering (SPEC.md §5).
    Steering,
    /// Longest-prefix match, TTL, ICMP errors.
    Route,
    /// Next-hop MAC, pending queues.
    Neighbour,
    /// Hand-off to the egress interface.
    Tx,
}

impl StageKind {
    /// All stages in order.
    pub const ALL: [StageKind; 8] = [
        StageKind::Rx,
        StageKind::Ethernet,
        StageKind::Ipv4Input,
        StageKind::WccpRedirect,
        StageKind::Steering,
        StageKind::Route,
        StageKind::Neighbour,
        StageKind::Tx,
    ];

    /// Stable kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Rx => "rx",
            StageKind::Ethernet => "ethernet",
            StageKind::Ipv4Input => "ipv4-input",
            StageKind::WccpRedirect => "wccp-redirect",
            StageKind::Steering => "steering",
            StageKind::Route => "route",
            StageKind::Neighbour => "neighbour",
            StageKind::Tx => "tx",
        }
    }
}

/// What a stage decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass to the next stage.
    Continue,
    /// Used up here on purpose (answered or delivered); its buffer returns to the pool.
    Consumed,
    /// Held by the stage (the neighbour stage's pending queue).
    Queued,
    /// Ready for the egress interface in `meta.tx_if`.
    Transmit,
    /// Continue at a later stage (the packet became the router's own reply).
    Jump(StageKind),
    /// Dropped and counted.
    Drop(DropReason),
}

/// What a stage may use besides the packet.
pub struct StageCx<'a> {
    /// Time of this burst.
    pub now: Instant,
    /// Interfaces and routes.
    pub tables: &'a Tables,
    /// Neighbour bindings for lookups.
    pub neigh: &'a NeighSnapshot,
    /// The shared neighbour table for learning.
    pub neighbours: &'a Neighbours,
    /// Buffers for emitted packets.
    pub pool: &'a mut Pool,
    /// Packets emitted by stages; each enters at `meta.stage`.
    pub emitted: &'a mut Vec<Packet>,
    /// ICMP error rate limiter.
    pub icmp_limit: &'a mut TokenBucket,
    /// This worker's counters.
    pub counters: &'a WorkerCounters,
}

impl StageCx<'_> {
    /// Queues `pkt` to enter the pipeline at `at`.
    pub fn emit(&mut self, mut pkt: Packet, at: StageKind) {
        pkt.meta.stage = at as u8;
        self.emitted.push(pkt);
    }
}

/// One stage, statically dispatched.
enum AnyStage {
    Rx,
    Ethernet(ethernet::EthernetStage),
    Ipv4Input(ipv4_input::Ipv4InputStage),
    WccpRedirect(wccp::WccpRedirectStage),
    Steering(steering::SteeringStage),
    Route(route::RouteStage),
    Neighbour(neighbour::NeighbourStage),
    Tx,
}

impl AnyStage {
    fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        match self {
            AnyStage::Rx => Verdict::Continue,
            AnyStage::Ethernet(s) => s.process(pkt, cx),
            AnyStage::Ipv4Input(s) => s.process(pkt, cx),
            AnyStage::WccpRedirect(s) => s.process(pkt, cx),
            AnyStage::Steering(s) => s.process(pkt, cx),
            AnyStage::Route(s) => s.process(pkt, cx),
            AnyStage::Neighbour(s) => s.process(pkt, cx),
            AnyStage::Tx => tx(pkt, cx),
        }
    }
}

/// The tx stage: make sure the frame is complete and ready for its egress.
fn tx(pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
    if pkt.meta.tx_if as usize >= cx.tables.ifaces.len() {
        return Verdict::Drop(DropReason::TxError);
    }
    pkt.pad_to(crate::wire::ethernet::MIN_FRAME_LEN);
    Verdict::Transmit
}

/// Most passes a packet may make through the pipeline (emitted packets re-enter once or twice).
const MAX_PASSES: u8 = 4;

/// The pipeline of one worker.
pub struct Pipeline {
    stages: Vec<AnyStage>,
    counters: Arc<WorkerCounters>,
    /// Frames ready to send, per egress interface; the worker drains them after each burst.
    pub tx_out: Vec<Vec<Packet>>,
    work: Vec<Option<Packet>>,
    emitted: Vec<Packet>,
    logged: [bool; DropReason::COUNT],
    icmp_limit: TokenBucket,
    worker: usize,
}

impl Pipeline {
    /// A pipeline for `n_ifaces` interfaces, counting into `counters`.
    pub fn new(worker: usize, n_ifaces: usize, counters: Arc<WorkerCounters>) -> Pipeline {
        Pipeline {
            stages: vec![
                AnyStage::Rx,
                AnyStage::Ethernet(ethernet::EthernetStage),
                AnyStage::Ipv4Input(ipv4_input::Ipv4InputStage),
                AnyStage::WccpRedirect(wccp::WccpRedirectStage::default()),
                AnyStage::Steering(steering::SteeringStage),
                AnyStage::Route(route::RouteStage),
                AnyStage::Neighbour(neighbour::NeighbourStage::default()),
                AnyStage::Tx,
            ],
            counters,
            tx_out: (0..n_ifaces).map(|_| Vec::new()).collect(),
            work: Vec::with_capacity(256),
            emitted: Vec::with_capacity(64),
            logged: [false; DropReason::COUNT],
            icmp_limit: TokenBucket::default(),
            worker,
        }
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
        self.work.clear();
        self.work.extend(burst.drain(..).map(Some));
        self.run_work(tables, neigh, neighbours, pool, now);
    }

    /// Housekeeping of stateful stages: pending next hops that resolved or timed out.
    pub fn poll(
        &mut self,
        tables: &Tables,
        neigh: &NeighSnapshot,
        neighbours: &Neighbours,
        pool: &mut Pool,
        now: Instant,
    ) {
        let counters = self.counters.clone();
        let mut cx = StageCx {
            now,
            tables,
            neigh,
            neighbours,
            pool,
            emitted: &mut self.emitted,
            icmp_limit: &mut self.icmp_limit,
            counters: &counters,
        };
        for s in &mut self.stages {
            if let AnyStage::Neighbour(n) = s {
                n.poll(&mut cx);
            }
        }
        steering::send_probes(&mut cx);
        if !self.emitted.is_empty() {
            self.work.clear();
            self.work.extend(self.emitted.drain(..).map(Some));
            self.run_work(tables, neigh, neighbours, pool, now);
        }
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
        let mut cx = StageCx {
            now,
            tables,
            neigh,
            neighbours,
            pool,
            emitted: &mut self.emitted,
            icmp_limit: &mut self.icmp_limit,
            counters: &counters,
        };
        let stage = &mut self.stages[kind as usize];
        let mut passed = 0;
        for pkt in burst.iter_mut() {
            if matches!(
                stage.process(pkt, &mut cx),
                Verdict::Continue | Verdict::Transmit
            ) {
                passed += 1;
            }
        }
        for p in self.emitted.drain(..) {
            pool.put(p);
        }
        passed
    }

    /// True when stateful stages hold packets that need `poll` soon.
    pub fn has_pending(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s, AnyStage::Neighbour(n) if n.has_pending()))
    }

    fn run_work(
        &mut self,
        tables: &Tables,
        neigh: &NeighSnapshot,
        neighbours: &Neighbours,
        pool: &mut Pool,
        now: Instant,
    ) {
        let counters = self.counters.clone();
        let mut cx = StageCx {
            now,
            tables,
            neigh,
            neighbours,
            pool,
            emitted: &mut self.emitted,
            icmp_limit: &mut self.icmp_limit,
            counters: &counters,
        };
        for _pass in 0..MAX_PASSES {
            let mut again = false;
            for si in 0..self.stages.len() {
                let sc = &counters.stages[si];
                // Tallied locally and published once per stage and burst: three counter writes
                // per stage instead of two or three per packet.
                let (mut n_in, mut n_out, mut n_consumed) = (0u64, 0u64, 0u64);
                let mut i = 0;
                while i < self.work.len() {
                    let Some(pkt) = self.work[i].as_mut() else {
                        i += 1;
                        continue;
                    };
                    if pkt.meta.stage as usize != si {
                        i += 1;
                        continue;
                    }
                    n_in += 1;
                    let verdict = self.stages[si].process(pkt, &mut cx);
                    match verdict {
                        Verdict::Continue => {
                            n_out += 1;
                            pkt.meta.stage += 1;
                        }
                        Verdict::Jump(to) => {
                            n_consumed += 1;
                            pkt.meta.stage = to as u8;
                            pkt.meta.passes += 1;
                            if to as usize <= si {
                                again = true;
                            }
                        }
                        Verdict::Consumed => {
                            n_consumed += 1;
                            if let Some(p) = self.work[i].take() {
                                cx.pool.put(p);
                            }
                        }
                        Verdict::Drop(reason) => {
                            sc.drops[reason as usize].inc();
                            if !self.logged[reason as usize] {
                                self.logged[reason as usize] = true;
                                tracing::warn!(
                                    worker = self.worker,
                                    stage = StageKind::ALL[si].as_str(),
                                    reason = reason.as_str(),
                                    "first drop for this reason; later ones are only counted"
                                );
                            }
                            if let Some(p) = self.work[i].take() {
                                cx.pool.put(p);
                            }
                        }
                        Verdict::Queued => {
                            n_consumed += 1;
                            if let (Some(p), AnyStage::Neighbour(n)) =
                                (self.work[i].take(), &mut self.stages[si])
                            {
                                n.enqueue(p, &mut cx);
                            }
                        }
                        Verdict::Transmit => {
                            n_out += 1;
                            if let Some(p) = self.work[i].take() {
                                let q = p.meta.tx_if as usize;
                                match self.tx_out.get_mut(q) {
                                    Some(out) => out.push(p),
                                    None => cx.pool.put(p),
                                }
                            }
                        }
                    }
                    if !cx.emitted.is_empty() {
                        for p in cx.emitted.drain(..) {
                            if (p.meta.stage as usize) <= si {
                                again = true;
                            }
                            self.work.push(Some(p));
                        }
                    }
                    i += 1;
                }
                if n_in > 0 {
                    sc.packets_in.add(n_in);
                    sc.packets_out.add(n_out);
                    sc.consumed.add(n_consumed);
                }
            }
            if !again {
                break;
            }
        }
        // Whatever is still in flight went round too often.
        for p in self.work.drain(..).flatten() {
            let si = (p.meta.stage as usize).min(self.stages.len() - 1);
            counters.stages[si].drops[DropReason::PipelineLoop as usize].inc();
            cx.pool.put(p);
        }
    }

    /// This worker's counters.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }
}
