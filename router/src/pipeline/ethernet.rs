//! The ethernet/arp stage: keeps frames addressed to us (or broadcast), answers ARP for our
//! addresses, learns neighbours from ARP, and passes IPv4 on. With VRRP, "us" includes the
//! virtual MAC and addresses of the virtual routers this router is master for, and the
//! advertisements' group MAC on interfaces that speak VRRP (`tables::vrrp`). In a router
//! cluster (`tables::cluster`), "us" includes the cluster MAC on the shared segments, and the
//! cluster addresses (and, with NAT, the pool addresses) there are answered in ARP with the
//! cluster MAC. Every node answers the same request with the same binding: the requester gets
//! one identical reply per node, which is harmless (each one refreshes the same entry), and no
//! node has to be elected to answer. The reply's Ethernet source is the node's own interface
//! MAC, as on every frame swrouter sends, so switches never learn the cluster MAC on a port
//! and keep flooding frames to it to every node.
//!
//! Counters: `frame-truncated`, `l2-other-host` (unicast for another MAC, which promiscuous mode
//! shows us), `l2-multicast`, `ethertype-unsupported`, `arp-truncated`, `arp-unsupported`,
//! `arp-other-target`, `arp-bad-sender`; ARP it answered or learnt from counts as consumed.

use super::packet::{Packet, Pool};
use super::stage::{StageCx, StageKind, Verdict};
use crate::pipeline::drop::DropReason;
use crate::tables::{IfId, Iface};
use crate::wire::arp::{self, ArpError, ArpRepr};
use crate::wire::ethernet::{self, MacAddr};
use std::net::Ipv4Addr;

/// The stage (stateless).
#[derive(Default)]
pub struct EthernetStage;

impl EthernetStage {
    /// Processes one frame.
    #[inline(always)]
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let frame = pkt.frame();
        if frame.len() < ethernet::HEADER_LEN {
            return Verdict::Drop(DropReason::FrameTruncated);
        }
        let Some(iface) = cx.tables.ifaces.get(pkt.meta.rx_if as usize) else {
            return Verdict::Drop(DropReason::L2OtherHost);
        };
        let dst = ethernet::dst(frame);
        if dst != iface.mac
            && dst != MacAddr::BROADCAST
            && !vrrp_takes(cx, iface.id, dst)
            && !cluster_takes(cx, iface.id, dst)
            // A joined WCCP group's (or all systems', for IGMP queries) on a cache interface.
            && !(iface.wccp_caches && cx.tables.wccp.takes_mac(dst))
        {
            return Verdict::Drop(if dst.is_multicast() {
                DropReason::L2Multicast
            } else {
                DropReason::L2OtherHost
            });
        }
        match ethernet::ethertype(frame) {
            ethernet::ETHERTYPE_IPV4 => Verdict::Continue,
            ethernet::ETHERTYPE_ARP => handle_arp(pkt, iface, cx),
            _ => Verdict::Drop(DropReason::EthertypeUnsupported),
        }
    }
}

/// VRRP (issue 15): the receive filter of the virtual MACs this router is master for (frames
/// to them are routed like frames to the interface's own MAC) and of the advertisements'
/// group address on interfaces that speak VRRP.
#[cold]
#[inline(never)]
fn vrrp_takes(cx: &StageCx<'_>, iface: IfId, dst: MacAddr) -> bool {
    cx.tables.vrrp.as_deref().is_some_and(|v| {
        (dst == ::vrrp::wire::MULTICAST_MAC && v.speaks_on(iface)) || v.takes_mac(iface, dst)
    })
}

/// Cluster (issue 16): the receive filter of the cluster MAC on the shared segments.
#[inline]
fn cluster_takes(cx: &StageCx<'_>, iface: IfId, dst: MacAddr) -> bool {
    cx.tables
        .cluster
        .as_deref()
        .is_some_and(|c| c.takes_mac(iface, dst))
}

#[cold]
#[inline(never)]
fn handle_arp(pkt: &mut Packet, iface: &Iface, cx: &mut StageCx<'_>) -> Verdict {
    let arp = match ArpRepr::parse(&pkt.frame()[ethernet::HEADER_LEN..]) {
        Ok(a) => a,
        Err(ArpError::Truncated) => return Verdict::Drop(DropReason::ArpTruncated),
        Err(ArpError::Unsupported) => return Verdict::Drop(DropReason::ArpUnsupported),
    };
    // A virtual address this router is master for: answered with the virtual MAC (RFC 5798
    // §6.4.3); a neighbour claiming one is not believed, as one claiming our own address.
    let vmac = |ip| {
        cx.tables
            .vrrp
            .as_deref()
            .and_then(|v| v.arp_mac(iface.id, ip))
    };
    // A cluster address on this shared segment, or a NAT pool address on it: the cluster MAC.
    let cluster = cx.tables.cluster.as_deref();
    let cmac = |ip| {
        cluster.and_then(|c| {
            let pool = || {
                cx.tables
                    .nat
                    .as_deref()
                    .is_some_and(|n| n.is_pool_on(ip, iface.id))
            };
            (c.is_address_on(iface.id, ip) || (c.is_cluster_iface(iface.id) && pool()))
                .then(|| c.mac())
        })
    };
    let answer_mac = vmac(arp.target_ip).or_else(|| cmac(arp.target_ip));
    // Only neighbours on the connected prefix, with a unicast MAC, are believed.
    let sender_ok = arp.sender_mac != MacAddr::ZERO
        && !arp.sender_mac.is_multicast()
        && iface.contains(arp.sender_ip)
        && arp.sender_ip != iface.addr
        && (cx.tables.vrrp.is_none() || vmac(arp.sender_ip).is_none())
        && !cluster.is_some_and(|c| c.is_address(arp.sender_ip));
    // Our address, a master's virtual address, or a NAT pool address on this (outside)
    // interface.
    let for_us = arp.target_ip == iface.addr
        || answer_mac.is_some()
        || cx
            .tables
            .nat
            .as_deref()
            .is_some_and(|n| n.is_pool_on(arp.target_ip, iface.id));
    if sender_ok {
        // RFC 826: refresh an existing binding from any ARP; create one only when it was for us.
        cx.neighbours
            .learn(iface.id, arp.sender_ip, arp.sender_mac, for_us, cx.now);
    }
    if !for_us {
        return if sender_ok {
            Verdict::Consumed
        } else {
            Verdict::Drop(DropReason::ArpOtherTarget)
        };
    }
    if !sender_ok {
        return Verdict::Drop(DropReason::ArpBadSender);
    }
    if arp.operation == arp::OP_REQUEST {
        // Answer in place: the request's buffer becomes the reply.
        let mac = answer_mac.unwrap_or(iface.mac);
        let reply = ArpRepr {
            operation: arp::OP_REPLY,
            sender_mac: mac,
            sender_ip: arp.target_ip,
            target_mac: arp.sender_mac,
            target_ip: arp.sender_ip,
        };
        let rx_if = pkt.meta.rx_if;
        // VRRP's reply comes from the virtual MAC (RFC 5798 §6.4.3); the cluster's from the
        // node's own MAC (a multicast source MAC is invalid, and switches must not learn it).
        let src = if cluster.is_some() { iface.mac } else { mac };
        fill_arp(pkt, arp.sender_mac, src, &reply);
        pkt.meta.tx_if = rx_if;
        return Verdict::Jump(StageKind::Tx);
    }
    Verdict::Consumed
}

/// Writes an Ethernet+ARP frame into `pkt`.
fn fill_arp(pkt: &mut Packet, dst: MacAddr, src: MacAddr, arp: &ArpRepr) {
    let f = pkt.reset(ethernet::HEADER_LEN + arp::PAYLOAD_LEN);
    ethernet::write_header(f, dst, src, ethernet::ETHERTYPE_ARP);
    arp.emit(&mut f[ethernet::HEADER_LEN..]);
}

/// Builds an ARP request from `iface` for `target`, sent to `dst_mac` (broadcast to resolve,
/// unicast to probe a stale binding, broadcast with `target == iface.addr` for gratuitous ARP).
pub fn build_arp(pool: &mut Pool, iface: &Iface, target: Ipv4Addr, dst_mac: MacAddr) -> Packet {
    let mut p = pool.get();
    let req = ArpRepr {
        operation: arp::OP_REQUEST,
        sender_mac: iface.mac,
        sender_ip: iface.addr,
        target_mac: MacAddr::ZERO,
        target_ip: target,
    };
    fill_arp(&mut p, dst_mac, iface.mac, &req);
    p.meta.tx_if = iface.id;
    p.meta.rx_if = iface.id as IfId;
    p.meta.flags |= super::packet::flags::LOCAL;
    p
}
