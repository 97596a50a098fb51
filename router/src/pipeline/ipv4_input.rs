//! The ipv4-input stage: validates the header (RFC 1812 §5.2.2), classifies the addresses,
//! refuses martians and broadcasts for forwarding, and sends datagrams addressed to the router
//! to the local-delivery stage (a jump, counted as consumed here).
//!
//! Counters: `ipv4-truncated`, `ipv4-bad-version`, `ipv4-bad-header-length`,
//! `ipv4-bad-total-length`, `ipv4-bad-checksum`, `martian-source`, `martian-destination`,
//! `broadcast-not-forwarded`, `multicast-not-forwarded`, `vrrp-not-accepted`.

use super::drop::DropReason;
use super::packet::Packet;
use super::stage::{StageCx, StageKind, Verdict};
use crate::tables::vrrp::{VipRole, VrrpPlane};
use crate::tables::AddrClass;
use crate::wire::ethernet::HEADER_LEN;
use crate::wire::ipv4::{self, Ipv4Error};

/// VRRP (issue 15): advertisements on an interface that speaks VRRP go to local delivery (and
/// on to the VRRP driver); a master's virtual addresses are its own with Accept_Mode and
/// dropped without it (RFC 5798 §6.4.3), except WCCP (UDP 2048) and GRE returns: caches
/// register with the virtual address and tunnel back to it, so a master takes those as an
/// address owner would, and a takeover keeps the Router ID the caches know.
#[cold]
#[inline(never)]
fn vrrp_input(v: &VrrpPlane, pkt: &Packet, dst: std::net::Ipv4Addr) -> Option<Verdict> {
    if dst == ::vrrp::wire::MULTICAST_ADDR {
        let l3 = &pkt.frame()[HEADER_LEN..];
        return (ipv4::protocol(l3) == ::vrrp::wire::PROTOCOL && v.speaks_on(pkt.meta.rx_if))
            .then_some(Verdict::Jump(StageKind::LocalDelivery));
    }
    match v.vip_role(dst)? {
        VipRole::Accepted => Some(Verdict::Jump(StageKind::LocalDelivery)),
        VipRole::NotAccepted if wccp_to_vip(pkt) => Some(Verdict::Jump(StageKind::LocalDelivery)),
        VipRole::NotAccepted => Some(Verdict::Drop(DropReason::VrrpNotAccepted)),
    }
}

/// True for WCCP's own traffic: UDP to port 2048, or GRE (a cache's return).
fn wccp_to_vip(pkt: &Packet) -> bool {
    let l3 = &pkt.frame()[HEADER_LEN..];
    match ipv4::protocol(l3) {
        ipv4::PROTO_GRE => true,
        ipv4::PROTO_UDP => l3
            .get(ipv4::header_len(l3)..)
            .and_then(ipv4::ports)
            .is_some_and(|(_, d)| d == ::wccp::engine::WCCP_PORT),
        _ => false,
    }
}

/// The stage (stateless).
#[derive(Default)]
pub struct Ipv4InputStage;

impl Ipv4InputStage {
    /// Processes one frame whose EtherType is IPv4.
    #[inline(always)]
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let l3 = &pkt.frame()[HEADER_LEN..];
        let total = match ipv4::check(l3) {
            Ok(t) => t,
            Err(e) => {
                return Verdict::Drop(match e {
                    Ipv4Error::Truncated => DropReason::Ipv4Truncated,
                    Ipv4Error::BadVersion(_) => DropReason::Ipv4BadVersion,
                    Ipv4Error::BadHeaderLength(_) => DropReason::Ipv4BadHeaderLength,
                    Ipv4Error::BadTotalLength(_) => DropReason::Ipv4BadTotalLength,
                    Ipv4Error::BadChecksum => DropReason::Ipv4BadChecksum,
                })
            }
        };
        let (src, dst) = (ipv4::src(l3), ipv4::dst(l3));
        let protocol = ipv4::protocol(l3);
        // Ethernet pads short frames; the padding is not part of the datagram.
        pkt.truncate(HEADER_LEN + total);
        let (src_class, dst_class) = cx.tables.classify_pair(src, dst);
        if ipv4::is_martian_source(src) || src_class != AddrClass::Other {
            return Verdict::Drop(DropReason::MartianSource);
        }
        match dst_class {
            // A pool address that is ours goes to nat-in first, which delivers what is not NAT.
            AddrClass::Local
                if cx
                    .tables
                    .nat
                    .as_deref()
                    .is_some_and(|n| n.is_outside(pkt.meta.rx_if) && n.cfg.is_pool_addr(dst)) => {}
            AddrClass::Local => return Verdict::Jump(StageKind::LocalDelivery),
            AddrClass::Broadcast => return Verdict::Drop(DropReason::BroadcastNotForwarded),
            AddrClass::Other => {}
        }
        if let Some(v) = cx.tables.vrrp.as_deref() {
            if let Some(verdict) = vrrp_input(v, pkt, dst) {
                return verdict;
            }
        }
        if dst.is_multicast() {
            // A WCCP service group's address (and IGMP about it) on a cache interface is
            // ours to receive; nothing multicast is ever forwarded.
            let on_cache_if = cx
                .tables
                .ifaces
                .get(usize::from(pkt.meta.rx_if))
                .is_some_and(|i| i.wccp_caches);
            if on_cache_if && cx.tables.wccp.takes_multicast(dst, protocol) {
                return Verdict::Jump(StageKind::LocalDelivery);
            }
            return Verdict::Drop(DropReason::MulticastNotForwarded);
        }
        if ipv4::is_martian_destination(dst) {
            return Verdict::Drop(DropReason::MartianDestination);
        }
        // A frame sent to our MAC's broadcast form is not a request to forward it; one sent to
        // the cluster MAC on a shared segment is (the cluster stage decides who forwards it).
        let dst_mac = crate::wire::ethernet::dst(pkt.frame());
        if dst_mac.is_multicast()
            && !cx
                .tables
                .cluster
                .as_deref()
                .is_some_and(|c| c.takes_mac(pkt.meta.rx_if, dst_mac))
        {
            return Verdict::Drop(DropReason::BroadcastNotForwarded);
        }
        Verdict::Continue
    }
}
