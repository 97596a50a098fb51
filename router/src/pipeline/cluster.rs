//! The cluster stage (issue 16, seed 003; design note §4–5): every node of a router cluster
//! receives every frame sent to the cluster MAC, and this stage lets through only those whose
//! distribution id (`cluster::packet_id`) this node owns (`tables::cluster`).
//!
//! - Only frames that arrived addressed to the cluster MAC are distributed. Frames to the
//!   node's own MAC (another node's hand-off, the node's own addresses, ARP and anything the
//!   router originates) pass untouched.
//! - `Owned`: passed on, with the id in `PacketMeta::cluster_id` (for held frames and the
//!   trace; the NAT derives the same id from the inside endpoint, `nat::cluster::endpoint_id`,
//!   when it allocates a new mapping's outside port). `Foreign`: dropped, `cluster-foreign`, counted but never
//!   logged (the normal fate of the other nodes' share). No id (the id function could not read
//!   the packet): handled here as without a cluster, counted `not_distributed`.
//! - `Releasing` (the id is moving away): the packet is *held* in this worker's bounded queue
//!   (`hold-limit`, preallocated; overflow dropped as `cluster-hold-full`). At the start of each
//!   burst and each poll the worker looks at what it holds ([`ClusterStage::release`]): an id
//!   now `Owned` runs on from the stage after this one; an id handed to another node is sent
//!   to that node's MAC out of the interface it came in on (the new owner receives it as a
//!   frame to its own MAC, not distributed); an id `Foreign` without a hand-off (a fence) is
//!   dropped (`cluster-hold-dropped`); an id still `Releasing` stays, in order.
//! - A cluster address (the hosts' gateway) is local to the id's owner: its packets go to
//!   local delivery from here, after the ownership check, so one node answers a ping. Pool
//!   addresses arriving on a NAT outside interface go on to nat-in as without a cluster.
//!
//! Counters: the drop reasons above, the stage's in/out (a held packet counts as out when it
//! leaves the queue, run or handed, like the neighbour stage's), and `WorkerCounters::cluster`.

use super::drop::DropReason;
use super::packet::{flags, Packet};
use super::stage::{StageCx, StageKind, Verdict};
use crate::tables::cluster::ClusterPlane;
use crate::wire::ethernet::{self, HEADER_LEN};
use crate::wire::ipv4;
use ::cluster::PlaneState;
use std::collections::VecDeque;

/// Where a held packet of an id that became `Owned` runs on: the stage after this one.
const AFTER: StageKind = StageKind::ALL[StageKind::Cluster as usize + 1];

/// The stage with this worker's hold queue.
#[derive(Default)]
pub struct ClusterStage {
    held: VecDeque<Packet>,
}

impl ClusterStage {
    /// Passes, drops or holds one packet by its id's owner.
    #[inline(always)]
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let Some(plane) = cx.tables.cluster.as_deref() else {
            return Verdict::Continue;
        };
        if ethernet::dst(pkt.frame()) != plane.mac() || pkt.meta.flags & flags::LOCAL != 0 {
            if pkt.meta.flags & flags::LOCAL == 0
                && plane.dedupe_active(cx.now)
                && plane.is_cluster_iface(pkt.meta.rx_if)
                && is_handed_duplicate(plane, pkt, cx)
            {
                cx.counters.cluster.duplicates.inc();
                return Verdict::Drop(DropReason::ClusterDuplicate);
            }
            return owned(plane, pkt, cx);
        }
        self.distribute(plane, pkt, cx)
    }

    /// A frame to the cluster MAC.
    #[inline(always)]
    fn distribute(&self, plane: &ClusterPlane, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let c = &cx.counters.cluster;
        let Some(cfg) = plane.id_config() else {
            // Not joined yet: no id is this node's.
            c.foreign.inc();
            return Verdict::Drop(DropReason::ClusterForeign);
        };
        let outside = plane.is_nat_outside(pkt.meta.rx_if);
        let Some(id) = ::cluster::packet_id(cfg, &pkt.frame()[HEADER_LEN..], outside) else {
            c.not_distributed.inc();
            return owned(plane, pkt, cx);
        };
        pkt.meta.cluster_id = Some(id);
        match plane.state(id) {
            PlaneState::Owned => {
                c.owned.inc();
                if plane.dedupe_active(cx.now) {
                    let fp = fingerprint(&pkt.frame()[HEADER_LEN..]);
                    plane.note_handled(id, fp, cx.now);
                }
                owned(plane, pkt, cx)
            }
            PlaneState::Foreign => {
                c.foreign.inc();
                Verdict::Drop(DropReason::ClusterForeign)
            }
            PlaneState::Releasing => {
                if self.held.len() >= plane.hold_limit() {
                    c.hold_full.inc();
                    Verdict::Drop(DropReason::ClusterHoldFull)
                } else {
                    c.held.inc();
                    Verdict::Queued
                }
            }
        }
    }

    /// Takes a packet `process` answered `Queued` for.
    pub fn hold(&mut self, pkt: Packet, cx: &mut StageCx<'_>) {
        let limit = cx.tables.cluster.as_deref().map_or(0, |p| p.hold_limit());
        if self.held.len() < limit {
            self.held.push_back(pkt);
        } else {
            // Queued packets are counted when they leave the queue; this one leaves now.
            cx.counters.stages[StageKind::Cluster as usize].drops
                [DropReason::ClusterHoldFull as usize]
                .inc();
            cx.pool.put(pkt);
        }
    }

    /// Preallocates the hold queue, so holding allocates nothing per packet.
    pub fn reserve(&mut self, limit: usize) {
        self.held
            .reserve_exact(limit.saturating_sub(self.held.len()));
    }

    /// True when packets are held.
    #[inline]
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Looks at every held packet once (module docs): runs, hands off, drops or keeps it.
    /// Run and handed packets are emitted (at the next stage, or at tx).
    pub fn release(&mut self, cx: &mut StageCx<'_>) {
        let (tables, counters) = (cx.tables, cx.counters);
        let sc = &counters.stages[StageKind::Cluster as usize];
        let c = &counters.cluster;
        for _ in 0..self.held.len() {
            let Some(mut pkt) = self.held.pop_front() else {
                break;
            };
            let id = pkt.meta.cluster_id.unwrap_or(0);
            let state = tables.cluster.as_deref().map(|p| (p, p.state(id)));
            match state {
                Some((_, PlaneState::Releasing)) => self.held.push_back(pkt),
                Some((plane, PlaneState::Owned)) => {
                    c.released.inc();
                    sc.packets_out.inc();
                    let at = match owned(plane, &pkt, cx) {
                        Verdict::Jump(to) => to,
                        _ => AFTER,
                    };
                    cx.emit(pkt, at);
                }
                Some((plane, PlaneState::Foreign)) => {
                    let rx = pkt.meta.rx_if;
                    let to = plane.handoff_mac(rx, id);
                    match (to, tables.ifaces.get(usize::from(rx))) {
                        (Some(mac), Some(iface)) => {
                            // Our own MAC as the source, as on every frame we send: the
                            // switches never learn a host's MAC (or the cluster MAC) on our
                            // port.
                            // Sent on as it is, like any forwarded frame: a partial
                            // (offloaded) checksum must be complete first.
                            pkt.complete_checksum();
                            let f = pkt.frame_mut();
                            f[ethernet::field::DST].copy_from_slice(&mac.0);
                            f[ethernet::field::SRC].copy_from_slice(&iface.mac.0);
                            pkt.meta.tx_if = rx;
                            c.handed.inc();
                            sc.packets_out.inc();
                            cx.emit(pkt, StageKind::Tx);
                        }
                        _ => {
                            c.hold_dropped.inc();
                            sc.drops[DropReason::ClusterHoldDropped as usize].inc();
                            cx.pool.put(pkt);
                        }
                    }
                }
                None => {
                    c.hold_dropped.inc();
                    sc.drops[DropReason::ClusterHoldDropped as usize].inc();
                    cx.pool.put(pkt);
                }
            }
        }
    }
}

/// A frame to this node's own MAC on a shared segment while an id is newly gained: the old
/// owner's hand-over copy of a frame this node already handled from the cluster MAC?
fn is_handed_duplicate(plane: &ClusterPlane, pkt: &Packet, cx: &StageCx<'_>) -> bool {
    let Some(cfg) = plane.id_config() else {
        return false;
    };
    let ip = &pkt.frame()[HEADER_LEN..];
    let outside = plane.is_nat_outside(pkt.meta.rx_if);
    ::cluster::packet_id(cfg, ip, outside)
        .is_some_and(|id| plane.is_duplicate(id, fingerprint(ip), cx.now))
}

/// A frame's identity across the nodes for handover de-duplication: the IPv4 packet as every
/// node received it from the shared segment (the hand-over copy is the same bytes: nothing
/// before this stage rewrites them), hashed over its header without TTL and checksum and up to
/// 48 octets past it (ports, sequence numbers, TCP options such as timestamps). Never 0.
fn fingerprint(ip: &[u8]) -> u64 {
    let hl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
    // Version to fragment offset, protocol, addresses: the header without TTL and checksum.
    let mut head = [0u8; 17];
    for (to, from) in [(0..8, 0..8), (8..9, 9..10), (9..17, 12..20)] {
        if let Some(b) = ip.get(from) {
            head[to].copy_from_slice(b);
        }
    }
    let past = ip.get(hl..).unwrap_or(&[]);
    let mut l4 = [0u8; 48];
    let n = past.len().min(48);
    l4[..n].copy_from_slice(&past[..n]);
    // Without the TCP/UDP checksum: the old owner completes a partial (offloaded) one before
    // it hands the frame over, while this node hashed the frame as received.
    let csum = match ip.get(9) {
        Some(&ipv4::PROTO_TCP) => Some(16),
        Some(&ipv4::PROTO_UDP) => Some(6),
        _ => None,
    };
    if let Some(at) = csum {
        l4[at..at + 2].fill(0);
    }
    let mut words = [0u64; 9];
    for (w, v) in words
        .iter_mut()
        .zip(nat::cluster::byte_words(&head).chain(nat::cluster::byte_words(&l4[..n])))
    {
        *w = v;
    }
    nat::cluster::hash64(0, &words) | 1
}

/// A packet this node handles: a cluster address is local (one node answers), except a pool
/// address arriving on a NAT outside interface, which nat-in takes.
#[inline(always)]
fn owned(plane: &ClusterPlane, pkt: &Packet, cx: &StageCx<'_>) -> Verdict {
    let dst = ipv4::dst(&pkt.frame()[HEADER_LEN..]);
    if !plane.is_address(dst) {
        return Verdict::Continue;
    }
    let to_nat = cx
        .tables
        .nat
        .as_deref()
        .is_some_and(|n| n.is_outside(pkt.meta.rx_if) && n.cfg.is_pool_addr(dst));
    if to_nat {
        Verdict::Continue
    } else {
        Verdict::Jump(StageKind::LocalDelivery)
    }
}
