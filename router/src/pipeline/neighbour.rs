//! The neighbour stage: writes the next hop's MAC from the ARP table, or holds the packet in a
//! bounded queue per unresolved next hop while ARP runs (RFC 1812 §3.3.2).
//!
//! A next hop gets [`ARP_TRIES`] broadcast requests one second apart; if none is answered its
//! queue is dropped (`neighbour-unresolved`) and the sender gets host unreachable. Queues hold at
//! most [`QUEUE_PER_HOP`] packets (`neighbour-queue-full`), and at most [`MAX_PENDING_HOPS`] next
//! hops are resolved at once per worker (`neighbour-pending-full`). Answers may arrive on another
//! worker: every worker notices through the table's generation number.

use super::ethernet::build_arp;
use super::icmp::send_error;
use super::packet::Packet;
use super::stage::{StageCx, StageKind, Verdict};
use crate::pipeline::drop::DropReason;
use crate::tables::{IfId, Iface};
use crate::wire::ethernet::{self, MacAddr, HEADER_LEN};
use crate::wire::icmp as icmpw;
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Packets held per unresolved next hop.
pub const QUEUE_PER_HOP: usize = 16;
/// Next hops resolved at once per worker.
pub const MAX_PENDING_HOPS: usize = 256;
/// ARP requests sent before giving up on a next hop.
pub const ARP_TRIES: u8 = 3;
/// Time between ARP requests for one next hop.
pub const ARP_RETRY: Duration = Duration::from_secs(1);

struct Pending {
    queue: VecDeque<Packet>,
    tries: u8,
    last_sent: Instant,
}

/// The stage with its pending queues.
#[derive(Default)]
pub struct NeighbourStage {
    pending: HashMap<(IfId, Ipv4Addr), Pending>,
    seen_generation: u64,
}

impl NeighbourStage {
    /// Resolves the next hop of one routed packet.
    #[inline(always)]
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let (out, hop) = (pkt.meta.tx_if, pkt.meta.next_hop);
        let Some(iface) = cx.tables.ifaces.get(out as usize) else {
            return Verdict::Drop(DropReason::TxError);
        };
        if let Some(mac) = cx.neigh.lookup(out, hop) {
            write_macs(pkt, mac, iface.mac);
            return Verdict::Continue;
        }
        if hop.is_multicast() {
            // The control plane's own multicast (WCCP's I_SEE_YOU to a group, IGMP): the
            // group's MAC, no resolution.
            write_macs(pkt, MacAddr::ipv4_multicast(hop), iface.mac);
            return Verdict::Continue;
        }
        self.unresolved(out, hop, iface, cx)
    }

    /// The next hop has no binding: queue behind a pending resolution, or start one.
    #[cold]
    #[inline(never)]
    fn unresolved(
        &mut self,
        out: IfId,
        hop: Ipv4Addr,
        iface: &Iface,
        cx: &mut StageCx<'_>,
    ) -> Verdict {
        match self.pending.get(&(out, hop)) {
            Some(p) if p.queue.len() >= QUEUE_PER_HOP => {
                Verdict::Drop(DropReason::NeighbourQueueFull)
            }
            Some(_) => Verdict::Queued,
            None if self.pending.len() >= MAX_PENDING_HOPS => {
                Verdict::Drop(DropReason::NeighbourPendingFull)
            }
            None => {
                let req = build_arp(cx.pool, iface, hop, MacAddr::BROADCAST);
                cx.emit(req, StageKind::Tx);
                self.pending.insert(
                    (out, hop),
                    Pending {
                        queue: VecDeque::new(),
                        tries: 1,
                        last_sent: cx.now,
                    },
                );
                Verdict::Queued
            }
        }
    }

    /// Takes a packet `process` answered `Queued` for.
    pub fn enqueue(&mut self, pkt: Packet, cx: &mut StageCx<'_>) {
        match self.pending.get_mut(&(pkt.meta.tx_if, pkt.meta.next_hop)) {
            Some(p) => p.queue.push_back(pkt),
            None => {
                // Queued packets are counted when they leave the queue; this one leaves now.
                let sc = &cx.counters.stages[StageKind::Neighbour as usize];
                sc.drops[DropReason::NeighbourUnresolved as usize].inc();
                cx.pool.put(pkt);
            }
        }
    }

    /// True when packets wait for ARP.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Releases packets whose next hop resolved, retries ARP, and gives up on silent next hops.
    pub fn poll(&mut self, cx: &mut StageCx<'_>) {
        if self.pending.is_empty() {
            self.seen_generation = cx.neigh.generation;
            return;
        }
        let resolved_check = cx.neigh.generation != self.seen_generation;
        self.seen_generation = cx.neigh.generation;
        let counters = cx.counters;
        let sc = &counters.stages[StageKind::Neighbour as usize];
        let mut done = Vec::new();
        for (&(out, hop), p) in self.pending.iter_mut() {
            let Some(iface) = cx.tables.ifaces.get(out as usize) else {
                done.push((out, hop));
                continue;
            };
            if resolved_check {
                if let Some(mac) = cx.neigh.lookup(out, hop) {
                    while let Some(mut pkt) = p.queue.pop_front() {
                        write_macs(&mut pkt, mac, iface.mac);
                        sc.packets_out.inc();
                        cx.emit(pkt, StageKind::Tx);
                    }
                    done.push((out, hop));
                    continue;
                }
            }
            if cx.now.saturating_duration_since(p.last_sent) < ARP_RETRY {
                continue;
            }
            if p.tries < ARP_TRIES {
                p.tries += 1;
                p.last_sent = cx.now;
                let req = build_arp(cx.pool, iface, hop, MacAddr::BROADCAST);
                cx.emit(req, StageKind::Tx);
                continue;
            }
            // Give up: one host unreachable per queue (rate limited), every packet counted.
            let mut first = true;
            while let Some(pkt) = p.queue.pop_front() {
                if first {
                    send_error(
                        &pkt,
                        icmpw::DEST_UNREACHABLE,
                        icmpw::CODE_HOST_UNREACHABLE,
                        0,
                        cx,
                    );
                    first = false;
                }
                sc.drops[DropReason::NeighbourUnresolved as usize].inc();
                cx.pool.put(pkt);
            }
            done.push((out, hop));
        }
        for k in done {
            self.pending.remove(&k);
        }
    }
}

fn write_macs(pkt: &mut Packet, dst: MacAddr, src: MacAddr) {
    let f = pkt.frame_mut();
    if f.len() >= HEADER_LEN {
        f[ethernet::field::DST].copy_from_slice(&dst.0);
        f[ethernet::field::SRC].copy_from_slice(&src.0);
    }
}
