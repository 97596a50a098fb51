//! In-place rewriting of IPv4 packets: parse once, then patch addresses, ports, ICMP identifiers
//! and every checksum that covers them incrementally (RFC 1624), with netwire's views and
//! checksum functions.
//!
//! - **Plain TCP/UDP/ICMP query.** [`rewrite`] changes the source or destination address and port
//!   (ICMP echo: the identifier). UDP without a checksum (0) stays without one (RFC 768).
//! - **Offloaded checksums.** A packet a local stack sent over veth or to an offloading NIC
//!   carries a *partial* TCP/UDP checksum: the field holds the folded pseudo-header sum, not
//!   complemented, and the kernel or the router completes it later over the whole segment. With
//!   [`L4Csum::Partial`] only the pseudo-header part (the addresses) is updated; port changes are
//!   summed in when the checksum is completed. The router passes `Partial` when its packet's
//!   offload state says `needs_csum()` (virtio-net `NEEDS_CSUM` or the ring's
//!   `TP_STATUS_CSUMNOTREADY`).
//! - **ICMP errors (RFC 5508 REQ-3, REQ-4).** [`rewrite_error`] translates the outer address and
//!   the quoted packet's address and port or identifier, patching the quoted IP header checksum,
//!   the quoted TCP/UDP/ICMP checksum when the quote holds it, and the outer ICMP checksum over
//!   all of it.
//! - **Fragments.** [`parse`] refuses every fragment ([`Skip::Fragment`]): later fragments carry
//!   no ports, and without reassembly a translated first fragment is useless. The worker counts
//!   and drops them; TCP uses path-MTU discovery (whose ICMP errors are translated) and UDP
//!   applications that fragment do not work through this NAT yet.

use netwire::checksum::{fold, update16, update32};
use netwire::icmp::{self, Icmpv4Packet};
use netwire::ipv4::{Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use netwire::tcp::TcpPacket;
use netwire::udp::UdpPacket;
use std::net::Ipv4Addr;

/// What the TCP/UDP checksum field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4Csum {
    /// A complete checksum.
    #[default]
    Full,
    /// An offload partial checksum (the pseudo-header sum); completed later.
    Partial,
}

/// Which address (and port) to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Source.
    Src,
    /// Destination.
    Dst,
}

/// The packet quoted by an ICMP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    /// Its protocol.
    pub proto: u8,
    /// Its source.
    pub src: Ipv4Addr,
    /// Its destination.
    pub dst: Ipv4Addr,
    /// Its source port; for a quoted echo request its identifier, for an echo reply 0.
    pub sport: u16,
    /// Its destination port; for a quoted echo reply its identifier, for a request 0.
    pub dport: u16,
    /// Offset of its IP header in the packet.
    at: usize,
    /// Its IP header length.
    ihl: usize,
}

/// What kind of message a parsed packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP or UDP.
    Plain,
    /// ICMP echo request (identifier in `sport`).
    EchoRequest,
    /// ICMP echo reply (identifier in `dport`).
    EchoReply,
    /// An ICMP error quoting a TCP, UDP or ICMP echo packet.
    Error(Inner),
}

/// A parsed packet: the fields NAT looks up with, and where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (echo request: identifier; otherwise 0 for ICMP).
    pub sport: u16,
    /// Destination port (echo reply: identifier; otherwise 0 for ICMP).
    pub dport: u16,
    /// TCP flags, 0 for others.
    pub tcp_flags: u8,
    /// The message kind.
    pub kind: Kind,
    /// Offset of the L4 header.
    l4: usize,
}

/// Why a packet is not translatable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A header is truncated or inconsistent.
    Malformed,
    /// A fragment (see the module doc).
    Fragment,
    /// A protocol or ICMP type NAT does not handle (GRE, ICMP timestamp, an error quoting GRE).
    Unsupported,
}

/// Parses the IPv4 packet at the start of `pkt` (bytes past its total length are ignored).
///
/// Always inlined: returned through memory, the `Flow` costs a store-forwarding stall that
/// was a quarter of the fast path's time.
#[inline(always)]
pub fn parse(pkt: &[u8]) -> Result<Flow, Skip> {
    let ip = Ipv4Packet::new_checked(pkt).map_err(|_| Skip::Malformed)?;
    if ip.is_fragment() {
        return Err(Skip::Fragment);
    }
    let (src, dst, proto, l4) = (ip.src_addr(), ip.dst_addr(), ip.protocol(), ip.header_len());
    let payload = ip.payload();
    let mut f = Flow {
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        kind: Kind::Plain,
        l4,
    };
    match proto {
        PROTO_TCP => {
            let t = TcpPacket::new_checked(payload).map_err(|_| Skip::Malformed)?;
            (f.sport, f.dport, f.tcp_flags) = (t.src_port(), t.dst_port(), t.flags());
        }
        PROTO_UDP => {
            let u = UdpPacket::new_checked(payload).map_err(|_| Skip::Malformed)?;
            (f.sport, f.dport) = (u.src_port(), u.dst_port());
        }
        PROTO_ICMP => {
            let m = Icmpv4Packet::new_checked(payload).map_err(|_| Skip::Malformed)?;
            match (m.msg_type(), m.code()) {
                (icmp::ECHO_REQUEST, 0) => {
                    f.sport = m.echo_ident();
                    f.kind = Kind::EchoRequest;
                }
                (icmp::ECHO_REPLY, 0) => {
                    f.dport = m.echo_ident();
                    f.kind = Kind::EchoReply;
                }
                (
                    icmp::DEST_UNREACHABLE
                    | icmp::TIME_EXCEEDED
                    | icmp::PARAMETER_PROBLEM
                    | icmp::SOURCE_QUENCH,
                    _,
                ) => f.kind = Kind::Error(parse_inner(&m, l4)?),
                _ => return Err(Skip::Unsupported),
            }
        }
        _ => return Err(Skip::Unsupported),
    }
    Ok(f)
}

/// The quoted packet of an ICMP error whose message starts at `icmp_at`.
fn parse_inner(m: &Icmpv4Packet<&[u8]>, icmp_at: usize) -> Result<Inner, Skip> {
    // `invoking` guarantees an IPv4 header and 8 octets after it.
    let q = m.invoking().map_err(|_| Skip::Malformed)?;
    let ihl = usize::from(q[0] & 0x0f) * 4;
    let qip = Ipv4Packet::new_unchecked(q);
    if qip.frag_offset() != 0 {
        // A later fragment's quote holds no L4 header.
        return Err(Skip::Unsupported);
    }
    let (sport, dport) = match qip.protocol() {
        PROTO_TCP | PROTO_UDP => (be16(q, ihl), be16(q, ihl + 2)),
        PROTO_ICMP => match q[ihl] {
            icmp::ECHO_REQUEST => (be16(q, ihl + 4), 0),
            icmp::ECHO_REPLY => (0, be16(q, ihl + 4)),
            _ => return Err(Skip::Unsupported),
        },
        _ => return Err(Skip::Unsupported),
    };
    Ok(Inner {
        proto: qip.protocol(),
        src: qip.src_addr(),
        dst: qip.dst_addr(),
        sport,
        dport,
        at: icmp_at + icmp::HEADER_LEN,
        ihl,
    })
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Rewrites `side`'s address to `addr` and its port (echo: identifier) to `port`, patching the
/// IP header checksum and the L4 checksum. `f` must come from [`parse`] of this packet, and not
/// be an error (use [`rewrite_error`]).
#[inline]
pub fn rewrite(pkt: &mut [u8], f: &Flow, side: Side, addr: Ipv4Addr, port: u16, csum: L4Csum) {
    let addr_at = if side == Side::Src { 12 } else { 16 };
    let (old_hi, old_lo) = (be16(pkt, addr_at), be16(pkt, addr_at + 2));
    let new = u32::from(addr);
    let (new_hi, new_lo) = ((new >> 16) as u16, new as u16);
    put16(pkt, addr_at, new_hi);
    put16(pkt, addr_at + 2, new_lo);
    // Word by word with update16: cheaper than the general update over byte slices.
    let ipc = update16(update16(be16(pkt, 10), old_hi, new_hi), old_lo, new_lo);
    put16(pkt, 10, ipc);
    let l4 = f.l4;
    let port_at = l4 + if side == Side::Src { 0 } else { 2 };
    match f.proto {
        PROTO_TCP | PROTO_UDP => {
            let old_port = be16(pkt, port_at);
            put16(pkt, port_at, port);
            let c_at = l4 + if f.proto == PROTO_TCP { 16 } else { 6 };
            let c = be16(pkt, c_at);
            let c = match csum {
                // The field is the pseudo-header sum: only the addresses are in it.
                L4Csum::Partial => !update16(update16(!c, old_hi, new_hi), old_lo, new_lo),
                // UDP without a checksum stays without one.
                L4Csum::Full if f.proto == PROTO_UDP && c == 0 => return,
                L4Csum::Full => {
                    let c = update16(update16(c, old_hi, new_hi), old_lo, new_lo);
                    let c = update16(c, old_port, port);
                    if f.proto == PROTO_UDP && c == 0 {
                        0xffff
                    } else {
                        c
                    }
                }
            };
            put16(pkt, c_at, c);
        }
        _ => {
            // ICMP query: the identifier; no pseudo header in the ICMP checksum.
            let id_at = l4 + 4;
            let old = be16(pkt, id_at);
            put16(pkt, id_at, port);
            let c = update16(be16(pkt, l4 + 2), old, port);
            put16(pkt, l4 + 2, c);
        }
    }
}

/// Writes a 16-bit word inside an ICMP message and adds its change to `acc`, the pending
/// update of the outer ICMP checksum (RFC 1624 eqn. 3 summed over several words).
#[inline]
fn put16_tracked(b: &mut [u8], at: usize, new: u16, acc: &mut u64) {
    let old = be16(b, at);
    *acc += u64::from(!old) + u64::from(new);
    put16(b, at, new);
}

/// Translates an ICMP error: the outer `outer` address becomes `outer_addr`, and the quoted
/// packet's `inner` address and port (or echo identifier) become `inner_addr`, `inner_port`.
///
/// Inbound errors (to a pool address) use `Side::Dst` outside and `Side::Src` inside (the quote
/// is the packet we sent out); errors an inside host sends use `Side::Src` and `Side::Dst`.
pub fn rewrite_error(
    pkt: &mut [u8],
    f: &Flow,
    outer: Side,
    outer_addr: Ipv4Addr,
    inner: Side,
    inner_addr: Ipv4Addr,
    inner_port: u16,
) {
    let Kind::Error(q) = f.kind else {
        return;
    };
    let mut ip = Ipv4Packet::new_unchecked(&mut *pkt);
    match outer {
        Side::Src => ip.replace_src_addr(outer_addr),
        Side::Dst => ip.replace_dst_addr(outer_addr),
    };
    let end = ip.total_len();
    let b = &mut pkt[..end];
    let mut acc = 0u64;
    // The quoted IP header: address and its checksum.
    let addr_at = q.at + if inner == Side::Src { 12 } else { 16 };
    let old_addr = u32::from_be_bytes([b[addr_at], b[addr_at + 1], b[addr_at + 2], b[addr_at + 3]]);
    let new_addr = u32::from(inner_addr);
    put16_tracked(b, addr_at, (new_addr >> 16) as u16, &mut acc);
    put16_tracked(b, addr_at + 2, new_addr as u16, &mut acc);
    let ic = update32(be16(b, q.at + 10), old_addr, new_addr);
    put16_tracked(b, q.at + 10, ic, &mut acc);
    // The quoted L4 header (parse checked 8 octets of it are present).
    let l4 = q.at + q.ihl;
    match q.proto {
        PROTO_TCP | PROTO_UDP => {
            let port_at = l4 + if inner == Side::Src { 0 } else { 2 };
            let old_port = be16(b, port_at);
            put16_tracked(b, port_at, inner_port, &mut acc);
            let c_at = l4 + if q.proto == PROTO_TCP { 16 } else { 6 };
            if c_at + 2 <= b.len() {
                let c = be16(b, c_at);
                if !(q.proto == PROTO_UDP && c == 0) {
                    let mut n = update16(update32(c, old_addr, new_addr), old_port, inner_port);
                    if q.proto == PROTO_UDP && n == 0 {
                        n = 0xffff;
                    }
                    put16_tracked(b, c_at, n, &mut acc);
                }
            }
        }
        _ => {
            let old_id = be16(b, l4 + 4);
            put16_tracked(b, l4 + 4, inner_port, &mut acc);
            let c = update16(be16(b, l4 + 2), old_id, inner_port);
            put16_tracked(b, l4 + 2, c, &mut acc);
        }
    }
    let c_at = f.l4 + 2;
    let c = !fold(u64::from(!be16(b, c_at)) + acc);
    put16(b, c_at, c);
}

/// Packet builders for tests, benches and the router's tests: valid checksums, no options.
pub mod build {
    use super::*;

    /// An IPv4 header for `proto` carrying `l4`, with a valid checksum.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20 + l4.len()];
        let mut ip = Ipv4Packet::new_unchecked(&mut b[..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len((20 + l4.len()) as u16);
        ip.set_ident(0x1c46);
        ip.set_dont_frag(true);
        ip.set_ttl(ttl);
        ip.set_protocol(proto);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.payload_mut().copy_from_slice(l4);
        ip.fill_checksum();
        b
    }

    /// A TCP segment with `flags` and `payload` octets of data.
    pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, payload: usize) -> Vec<u8> {
        let mut l4 = vec![0u8; 20 + payload];
        for (i, x) in l4[20..].iter_mut().enumerate() {
            *x = i as u8;
        }
        let mut t = TcpPacket::new_unchecked(&mut l4[..]);
        t.set_src_port(src.1);
        t.set_dst_port(dst.1);
        t.set_seq_number(0x0102_0304);
        t.set_ack_number(0x0a0b_0c0d);
        t.set_header_len(20);
        t.set_flags(flags);
        t.set_window_len(64240);
        t.fill_checksum(src.0, dst.0);
        ipv4(src.0, dst.0, PROTO_TCP, 64, &l4)
    }

    /// A UDP datagram with `payload` octets (checksum 0 when `no_csum`).
    pub fn udp(
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        payload: usize,
        no_csum: bool,
    ) -> Vec<u8> {
        let mut l4 = vec![0u8; 8 + payload];
        for (i, x) in l4[8..].iter_mut().enumerate() {
            *x = (i * 7) as u8;
        }
        let mut u = UdpPacket::new_unchecked(&mut l4[..]);
        u.set_src_port(src.1);
        u.set_dst_port(dst.1);
        u.set_len((8 + payload) as u16);
        if !no_csum {
            u.fill_checksum(src.0, dst.0);
        }
        ipv4(src.0, dst.0, PROTO_UDP, 64, &l4)
    }

    /// An ICMP echo request (or reply) with identifier `id`.
    pub fn echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, id: u16, seq: u16) -> Vec<u8> {
        let mut l4 = vec![0u8; 8 + 16];
        let mut m = Icmpv4Packet::new_unchecked(&mut l4[..]);
        m.set_msg_type(if request {
            icmp::ECHO_REQUEST
        } else {
            icmp::ECHO_REPLY
        });
        m.set_code(0);
        m.set_echo_ident(id);
        m.set_echo_seq(seq);
        m.fill_checksum();
        ipv4(src, dst, PROTO_ICMP, 64, &l4)
    }

    /// An ICMP error of `msg_type`/`code` from `src` to `dst` quoting the first `quote` octets
    /// of `invoking` (RFC 1812 routers quote as much as fits in 576 octets).
    pub fn error(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        msg_type: u8,
        code: u8,
        mtu: u16,
        invoking: &[u8],
        quote: usize,
    ) -> Vec<u8> {
        let q = &invoking[..quote.min(invoking.len())];
        let mut l4 = vec![0u8; 8 + q.len()];
        let mut m = Icmpv4Packet::new_unchecked(&mut l4[..]);
        m.set_msg_type(msg_type);
        m.set_code(code);
        m.set_rest_of_header(u32::from(mtu));
        m.data_mut().copy_from_slice(q);
        m.fill_checksum();
        ipv4(src, dst, PROTO_ICMP, 64, &l4)
    }
}

/// Checksum verification for tests: every checksum of the packet (and of a fully quoted inner
/// packet) verifies, through netwire's views.
pub fn verify_all(pkt: &[u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
        return false;
    };
    if !ip.verify_checksum() {
        return false;
    }
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    let p = ip.payload();
    match ip.protocol() {
        PROTO_TCP => TcpPacket::new_checked(p).is_ok_and(|t| t.verify_checksum(s, d)),
        PROTO_UDP => UdpPacket::new_checked(p).is_ok_and(|u| u.verify_checksum(s, d)),
        PROTO_ICMP => {
            let Ok(m) = Icmpv4Packet::new_checked(p) else {
                return false;
            };
            if !m.verify() {
                return false;
            }
            match m.invoking() {
                // A complete quote verifies as a packet; a truncated one only its IP header.
                Ok(q) => {
                    let ihl = usize::from(q[0] & 0x0f) * 4;
                    let inner_ok = netwire::checksum::checksum(&q[..ihl]) == 0;
                    let full = usize::from(be16(q, 2)) == q.len();
                    inner_ok && (!full || verify_all(q))
                }
                Err(_) => true,
            }
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use netwire::tcp::flags;

    const I: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const P: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const R: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const HOP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

    #[test]
    fn parse_kinds() {
        let t = tcp((I, 40000), (R, 80), flags::SYN, 0);
        let f = parse(&t).unwrap();
        assert_eq!(
            (f.proto, f.sport, f.dport, f.tcp_flags),
            (PROTO_TCP, 40000, 80, flags::SYN)
        );
        let e = echo(I, R, true, 77, 1);
        assert_eq!(parse(&e).unwrap().kind, Kind::EchoRequest);
        assert_eq!(parse(&e).unwrap().sport, 77);
        let err = error(HOP, P, icmp::TIME_EXCEEDED, 0, 0, &t, 28);
        let Kind::Error(q) = parse(&err).unwrap().kind else {
            panic!("not an error")
        };
        assert_eq!((q.src, q.sport, q.dst, q.dport), (I, 40000, R, 80));
        let mut frag = t.clone();
        frag[6] = 0x20; // MF
        assert_eq!(parse(&frag), Err(Skip::Fragment));
        for n in 0..t.len() {
            assert!(parse(&t[..n]).is_err(), "prefix {n}");
        }
        let gre = ipv4(I, R, 47, 64, &[0; 8]);
        assert_eq!(parse(&gre), Err(Skip::Unsupported));
    }

    #[test]
    fn snat_and_back_restores_bytes() {
        for pkt in [
            tcp((I, 40000), (R, 80), flags::ACK, 11),
            udp((I, 5353), (R, 53), 13, false),
            udp((I, 5353), (R, 53), 13, true),
            echo(I, R, true, 0x1234, 9),
        ] {
            let mut b = pkt.clone();
            let f = parse(&b).unwrap();
            rewrite(&mut b, &f, Side::Src, P, 9000, L4Csum::Full);
            assert!(verify_all(&b));
            let g = parse(&b).unwrap();
            assert_eq!(g.src, P);
            rewrite(&mut b, &g, Side::Src, I, f.sport, L4Csum::Full);
            assert_eq!(b, pkt);
        }
        let mut b = udp((I, 5353), (R, 53), 13, true);
        let f = parse(&b).unwrap();
        rewrite(&mut b, &f, Side::Src, P, 9000, L4Csum::Full);
        assert_eq!(&b[26..28], &[0, 0], "UDP checksum 0 stays 0");
    }

    #[test]
    fn partial_checksum_updates_only_the_pseudo_header() {
        let pkt = tcp((I, 40000), (R, 80), flags::ACK, 11);
        // Make it partial: the field holds the folded pseudo-header sum.
        let mut b = pkt.clone();
        let len = (b.len() - 20) as u16;
        let ph = fold(netwire::checksum::pseudo_header(
            I.octets(),
            R.octets(),
            PROTO_TCP,
            len,
        ));
        put16(&mut b, 36, ph);
        let f = parse(&b).unwrap();
        rewrite(&mut b, &f, Side::Src, P, 9000, L4Csum::Partial);
        let want = fold(netwire::checksum::pseudo_header(
            P.octets(),
            R.octets(),
            PROTO_TCP,
            len,
        ));
        assert_eq!(be16(&b, 36), want);
        // Completing it (what the kernel does) gives a valid segment.
        let c = netwire::checksum::checksum(&b[20..]);
        put16(&mut b, 36, c);
        assert!(verify_all(&b));
    }

    #[test]
    fn icmp_error_with_embedded_tcp_translates_back() {
        // The segment as it left the NAT (already translated), and the error a hop sends back.
        let sent = tcp((P, 9000), (R, 80), flags::ACK, 40);
        for quote in [28, 48, sent.len()] {
            let mut b = error(
                HOP,
                P,
                icmp::DEST_UNREACHABLE,
                icmp::CODE_FRAG_NEEDED,
                1400,
                &sent,
                quote,
            );
            let f = parse(&b).unwrap();
            rewrite_error(&mut b, &f, Side::Dst, I, Side::Src, I, 40000);
            assert!(verify_all(&b), "quote {quote}");
            let g = parse(&b).unwrap();
            let Kind::Error(q) = g.kind else { panic!() };
            assert_eq!((g.dst, q.src, q.sport), (I, I, 40000));
            assert_eq!(Icmpv4Packet::new_unchecked(&b[20..]).next_hop_mtu(), 1400);
            if quote == sent.len() {
                assert_eq!(&b[28..], &tcp((I, 40000), (R, 80), flags::ACK, 40)[..]);
            }
        }
    }

    #[test]
    fn icmp_error_quoting_an_echo_request() {
        let sent = echo(P, R, true, 9000, 3);
        let mut b = error(HOP, P, icmp::TIME_EXCEEDED, 0, 0, &sent, sent.len());
        let f = parse(&b).unwrap();
        rewrite_error(&mut b, &f, Side::Dst, I, Side::Src, I, 0x1234);
        assert!(verify_all(&b));
        assert_eq!(&b[28..], &echo(I, R, true, 0x1234, 3)[..]);
    }
}
