//! ICMP errors the router originates (RFC 792, RFC 1812 §4.3.2), rate limited per destination
//! and per worker ([`IcmpLimiter`](super::limit::IcmpLimiter).

use super::packet::{flags, Packet};
use super::stage::{StageCx, StageKind};
use crate::wire::ethernet;
use crate::wire::icmp as icmpw;
use crate::wire::ipv4::{self, Ipv4Repr};

/// Emits the TCP reset `rst` from `from` to `to` into the route stage, as the router's own
/// packet caused by a packet that arrived on `rx_if` (steering's dead-pool resets, WCCP's
/// closed-reject answers).
pub fn send_rst(
    rx_if: crate::tables::IfId,
    from: std::net::Ipv4Addr,
    to: std::net::Ipv4Addr,
    rst: &crate::wire::tcp::TcpRepr,
    cx: &mut StageCx<'_>,
) {
    use crate::wire::tcp;
    let mut out = cx.pool.get();
    let f = out.reset(ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + rst.buffer_len());
    ethernet::write_header(
        f,
        ethernet::MacAddr::ZERO,
        ethernet::MacAddr::ZERO,
        ethernet::ETHERTYPE_IPV4,
    );
    let l3 = &mut f[ethernet::HEADER_LEN..];
    Ipv4Repr {
        src: from,
        dst: to,
        protocol: ipv4::PROTO_TCP,
        payload_len: rst.buffer_len(),
        ttl: 64,
        ident: ipv4::next_ident(),
        tos: 0,
        dont_fragment: true,
    }
    .emit(&mut l3[..ipv4::MIN_HEADER_LEN]);
    rst.emit(
        &mut tcp::TcpPacket::new_unchecked(&mut l3[ipv4::MIN_HEADER_LEN..]),
        from,
        to,
    );
    out.meta.rx_if = rx_if;
    out.meta.flags = flags::LOCAL;
    cx.emit(out, StageKind::Route);
}

/// Largest ICMP error datagram (RFC 1812 §4.3.2.3: no more than 576 bytes).
const MAX_ICMP_DATAGRAM: usize = 576;

/// Emits an ICMP error about `offending` (its IPv4 header at offset 14) into the route stage.
///
/// Follows RFC 1812 §4.3.2.7: never about an ICMP error, a non-initial fragment, a packet whose
/// source is not a unicast host, or a packet the router itself sent; the source of the error is
/// the address of the interface the offending packet came in on.
#[cold]
#[inline(never)]
pub fn send_error(offending: &Packet, icmp_type: u8, code: u8, rest: u32, cx: &mut StageCx<'_>) {
    if offending.meta.flags & flags::LOCAL != 0 {
        return;
    }
    let Some(l3) = offending.frame().get(ethernet::HEADER_LEN..) else {
        return;
    };
    if l3.len() < ipv4::MIN_HEADER_LEN {
        return;
    }
    let src = ipv4::src(l3);
    if ipv4::is_martian_source(src)
        || cx.tables.classify(src) == crate::tables::AddrClass::Broadcast
        || ipv4::is_later_fragment(l3)
    {
        return;
    }
    let hlen = ipv4::header_len(l3);
    if ipv4::protocol(l3) == ipv4::PROTO_ICMP && l3.get(hlen).is_some_and(|&t| icmpw::is_error(t)) {
        return;
    }
    let Some(iface) = cx.tables.ifaces.get(offending.meta.rx_if as usize) else {
        return;
    };
    if !cx.icmp_limits.errors.allow(src, cx.now) {
        cx.counters.icmp_rate_limited.inc();
        return;
    }
    let quote = ipv4::total_len(l3)
        .min(l3.len())
        .min(MAX_ICMP_DATAGRAM - ipv4::MIN_HEADER_LEN - icmpw::HEADER_LEN);
    let mut p = cx.pool.get();
    let icmp_len = icmpw::HEADER_LEN + quote;
    let f = p.reset(ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + icmp_len);
    f[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    let ip_at = ethernet::HEADER_LEN;
    let icmp_at = ip_at + ipv4::MIN_HEADER_LEN;
    f[icmp_at + icmpw::HEADER_LEN..].copy_from_slice(&l3[..quote]);
    let mut msg = icmpw::Icmpv4Packet::new_unchecked(&mut f[icmp_at..]);
    msg.set_msg_type(icmp_type);
    msg.set_code(code);
    msg.set_rest_of_header(rest);
    msg.fill_checksum();
    Ipv4Repr {
        src: iface.addr,
        dst: src,
        protocol: ipv4::PROTO_ICMP,
        payload_len: icmp_len,
        ttl: 64,
        ident: ipv4::next_ident(),
        tos: 0xc0,
        dont_fragment: false,
    }
    .emit(&mut f[ip_at..]);
    p.meta.flags = flags::LOCAL;
    p.meta.rx_if = offending.meta.rx_if;
    cx.emit(p, StageKind::Route);
}
