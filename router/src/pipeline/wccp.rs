//! The wccp-redirect stage (SPEC.md §4, reference §8): traffic of a WCCP service group that
//! arrives on an interface with redirect-in goes to the cache the group's assignment names —
//! GRE-encapsulated with the WCCP redirect header, or with only its destination MAC rewritten
//! (L2) — instead of being routed. Packets a cache returned (RETURNED), packets the router made
//! (LOCAL), and packets sourced from any cache of a group are never redirected; a flow whose
//! bucket (or mask value) is unassigned is routed normally.
//!
//! Returned packets come back as GRE to one of our addresses and are stripped by the ipv4-input
//! stage ([`decapsulate_return`]), which marks them RETURNED.
//!
//! Counters: redirected packets count as consumed here (they continue at route or neighbour as
//! the outer packet); unassigned or bypassed packets pass on. GSO super-packets are not
//! redirected yet (they would need software segmentation before encapsulation) and pass on.

use super::packet::{flags, Packet};
use super::{StageCx, StageKind, Verdict};
use crate::wire::ethernet::{self, HEADER_LEN};
use crate::wire::ipv4::{self, Ipv4Repr};
use gre::{GreRepr, WccpRedirectRepr};
use wccp::assign::Redirect;
use wccp::engine::ForwardingMethod;
use wccp::hash::FlowKey;

/// Bytes GRE forwarding adds in front of the inner IPv4 packet: outer IPv4 + GRE + redirect.
const GRE_OVERHEAD: usize = ipv4::MIN_HEADER_LEN + gre::WCCP_GRE_OVERHEAD;

/// The stage (stateless; assignments come with the table snapshot).
pub struct WccpRedirectStage;

impl WccpRedirectStage {
    /// Redirects one packet or passes it on.
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        if pkt.meta.flags & (flags::LOCAL | flags::RETURNED) != 0
            || cx.tables.wccp.services.is_empty()
        {
            return Verdict::Continue;
        }
        let Some(iface) = cx.tables.ifaces.get(pkt.meta.rx_if as usize) else {
            return Verdict::Continue;
        };
        if iface.redirect_in.is_empty() {
            return Verdict::Continue;
        }
        let l3 = &pkt.frame()[HEADER_LEN..];
        if ipv4::is_later_fragment(l3) {
            return Verdict::Continue;
        }
        let (src, dst, proto) = (ipv4::src(l3), ipv4::dst(l3), ipv4::protocol(l3));
        let hlen = ipv4::header_len(l3);
        let (sport, dport) = match proto {
            ipv4::PROTO_TCP | ipv4::PROTO_UDP => ipv4::ports(&l3[hlen..]).unwrap_or((0, 0)),
            _ => (0, 0),
        };
        // A cache's own traffic (its fetches toward origin servers) is never redirected.
        if cx.tables.wccp.is_member(src) {
            return Verdict::Continue;
        }
        for (id, a) in &cx.tables.wccp.services {
            if !iface.redirect_in.contains(id) || !a.intercepts(proto, sport, dport) {
                continue;
            }
            let Some(r) = a.redirect(&FlowKey::new(src, dst, sport, dport)) else {
                return Verdict::Continue; // unassigned: routed normally
            };
            let dynamic = a.service().service_type == wccp::wire::ServiceType::Dynamic;
            return match r.target.forwarding {
                ForwardingMethod::Gre => encapsulate(pkt, *id, dynamic, &r),
                ForwardingMethod::L2 => l2_forward(pkt, &r, cx),
            };
        }
        Verdict::Continue
    }
}

/// GRE forwarding (§8): outer IPv4 from the router address the cache talks to, GRE 0x883E, and
/// the redirect header with D=0x01 / A=0x02 in the low bits as Wireshark and Linux read them.
fn encapsulate(pkt: &mut Packet, service: u8, dynamic: bool, r: &Redirect) -> Verdict {
    // The cache receives the inner packet as data: its checksum must be whole now.
    pkt.complete_checksum();
    if pkt.meta.offload.is_gso() {
        return Verdict::Continue;
    }
    let inner_len = pkt.len() - HEADER_LEN;
    let redirect = WccpRedirectRepr {
        dynamic,
        alternate_used: r.alternate_bucket.is_some(),
        unavailable: false,
        service_id: service,
        alternate_bucket: r.alternate_bucket.unwrap_or(0),
        primary_bucket: r.primary_bucket,
        unknown_flags: 0,
    };
    let Some(f) = pkt.prepend(GRE_OVERHEAD) else {
        return Verdict::Continue;
    };
    // The inner packet now starts at HEADER_LEN + GRE_OVERHEAD; the headers go in front of it.
    let gre_at = HEADER_LEN + ipv4::MIN_HEADER_LEN;
    if gre::encapsulate_in_place(
        &mut f[gre_at..],
        gre::WCCP_GRE_OVERHEAD,
        inner_len,
        &GreRepr::WCCP,
        Some(&redirect),
    )
    .is_err()
    {
        return Verdict::Continue;
    }
    Ipv4Repr {
        src: r.target.router_id,
        dst: r.target.address,
        protocol: ipv4::PROTO_GRE,
        payload_len: gre::WCCP_GRE_OVERHEAD + inner_len,
        ttl: 64,
        ident: super::next_ident(),
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[HEADER_LEN..gre_at]);
    f[ethernet::field::ETHERTYPE].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    pkt.meta.offload = Default::default();
    // The outer packet is the router's own: routed to the cache without a TTL decrement.
    pkt.meta.flags |= flags::LOCAL;
    Verdict::Jump(StageKind::Route)
}

/// L2 forwarding (§8): the packet unchanged, sent to the cache's MAC on the shared network.
fn l2_forward(pkt: &mut Packet, r: &Redirect, cx: &mut StageCx<'_>) -> Verdict {
    let Some(out) = cx
        .tables
        .ifaces
        .iter()
        .find(|i| i.contains(r.target.address))
    else {
        return Verdict::Continue;
    };
    pkt.meta.tx_if = out.id;
    pkt.meta.next_hop = r.target.address;
    Verdict::Jump(StageKind::Neighbour)
}

/// What became of a GRE packet addressed to the router.
pub enum ReturnOutcome {
    /// Stripped: the frame now holds the inner packet, marked RETURNED.
    Returned,
    /// The sender is no cache of any group.
    NotMember,
    /// Not a WCCP/GRE packet we can read.
    Malformed,
}

/// Strips the GRE (and redirect header) of a packet a cache returned (§8, return): the inner
/// IPv4 packet is forwarded normally and never redirected again.
pub fn decapsulate_return(pkt: &mut Packet, hlen: usize, cx: &StageCx<'_>) -> ReturnOutcome {
    let l3 = &pkt.frame()[HEADER_LEN..];
    if !cx.tables.wccp.is_member(ipv4::src(l3)) {
        return ReturnOutcome::NotMember;
    }
    let inner_at = match gre::decapsulate(&l3[hlen..]) {
        Ok(d) if d.inner.first().is_some_and(|b| b >> 4 == 4) => hlen + d.inner_offset,
        _ => return ReturnOutcome::Malformed,
    };
    // Drop the outer IPv4 and GRE headers; the Ethernet header is rebuilt in front of the inner.
    if !pkt.advance(inner_at) {
        return ReturnOutcome::Malformed;
    }
    let f = pkt.frame_mut();
    f[ethernet::field::ETHERTYPE].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    pkt.meta.offload = Default::default();
    pkt.meta.flags |= flags::RETURNED;
    ReturnOutcome::Returned
}
