//! What every stage shares: which stage it is ([`StageKind`]), what it decided about a packet
//! ([`Verdict`]) and what it may use besides the packet ([`StageCx`]). Kept apart from the
//! runner (`pipeline/mod.rs`) so stages and the runner both depend on it and not on each other.

use super::counters::WorkerCounters;
use super::drop::DropReason;
use super::limit::IcmpLimits;
use super::packet::{Packet, Pool};
use crate::tables::neighbours::{NeighSnapshot, Neighbours};
use crate::tables::Tables;
use std::time::Instant;

/// The stages in pipeline order (SPEC.md §3): the one list a stage is registered in. Each
/// entry names the [`StageKind`] variant, its status name, the runner's field and the stage's
/// type (a path from `pipeline/`), and the runner flag that gates it per burst (`always`, or a
/// `Runner` field). `$m` is a macro that expands the list: [`StageKind`] here, the runner's
/// stage table and its run-to-completion loop in `pipeline/mod.rs`.
macro_rules! for_each_stage {
    ($m:ident) => {
        $m! {
            /// Frames from the I/O backend.
            Rx, "rx", rx: RxStage, always;
            /// Ethernet demux, ARP answers and learning.
            Ethernet, "ethernet", ethernet: ethernet::EthernetStage, always;
            /// IPv4 validation and address classification.
            Ipv4Input, "ipv4-input", ipv4_input: ipv4_input::Ipv4InputStage, always;
            /// Router cluster: frames to the cluster MAC pass only on their id's owner.
            Cluster, "cluster", cluster: cluster::ClusterStage, cluster_on;
            /// NAT: outside packets to a pool address, dispatched by VID and translated back.
            NatIn, "nat-in", nat_in: nat_stage::NatInStage, nat_on;
            /// WCCP redirection to caches (redirect in).
            WccpRedirect, "wccp-redirect", wccp_redirect: wccp::WccpRedirectStage, wccp_on;
            /// Service-chain steering (SPEC.md §5).
            Steering, "steering", steering: steering::SteeringStage, steering_on;
            /// Longest-prefix match, TTL, ICMP errors.
            Route, "route", route: route::RouteStage, always;
            /// NAT: packets routed out of an outside interface, dispatched and translated.
            NatOut, "nat-out", nat_out: nat_stage::NatOutStage, nat_on;
            /// Next-hop MAC, pending queues.
            Neighbour, "neighbour", neighbour: neighbour::NeighbourStage, always;
            /// Hand-off to the egress interface.
            Tx, "tx", tx: TxStage, always;
            /// Datagrams addressed to the router, handed to their handler (ICMP echo, control-plane
            /// UDP, probe answers, WCCP GRE returns). Entered only by ipv4-input's jump, so it sits
            /// after tx, outside the linear order: no packet on its way out ever passes it.
            LocalDelivery, "local-delivery", local: local::LocalDeliveryStage, always;
        }
    };
}
pub(crate) use for_each_stage;

/// Defines [`StageKind`] from the stage list.
macro_rules! define_stage_kinds {
    ($( $(#[$doc:meta])* $kind:ident, $name:literal, $field:ident: $ty:ty, $gate:ident; )*) => {
        /// The stages, in pipeline order; a stage's discriminant is its index everywhere
        /// (counters, traces, emitters).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum StageKind {
            $( $(#[$doc])* $kind, )*
        }

        impl StageKind {
            /// All stages in order.
            pub const ALL: [StageKind; [$(StageKind::$kind),*].len()] = [$(StageKind::$kind),*];

            /// Stable kebab-case name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( StageKind::$kind => $name, )*
                }
            }
        }
    };
}
for_each_stage!(define_stage_kinds);

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
    /// Continue at another stage (the packet became the router's own reply, or a hairpinned
    /// NAT packet goes round again).
    Jump(StageKind),
    /// NAT: the packet belongs to another worker (or is a set-up request for the switch
    /// processor); the runner moves it to that queue.
    HandOff,
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
    /// Rate limiters of ICMP errors and echo replies.
    pub icmp_limits: &'a mut IcmpLimits,
    /// This worker's counters.
    pub counters: &'a WorkerCounters,
    /// This worker's NAT state, when NAT is configured.
    pub nat: Option<&'a mut crate::natd::WorkerNat>,
    /// Where a stage writes what it decided about a `TRACED` packet (module `trace`).
    pub trace: &'a mut super::trace::StageNotes,
}

impl StageCx<'_> {
    /// Queues `pkt` to enter the pipeline at `at`.
    pub fn emit(&mut self, mut pkt: Packet, at: StageKind) {
        pkt.meta.stage = at as u8;
        self.emitted.push(pkt);
    }
}
