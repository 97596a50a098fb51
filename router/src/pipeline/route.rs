//! The route stage: longest-prefix match, TTL decrement with incremental checksum (RFC 1624),
//! MTU check with fragmentation (RFC 791 §3.2, RFC 1812 §4.2.2.7), and the ICMP errors that go
//! with them (time exceeded, net unreachable, fragmentation needed), all rate limited.
//!
//! Counters: `ttl-expired`, `no-route`, `mtu-exceeded` (DF set: fragmentation needed sent);
//! a packet split into fragments counts as consumed, its fragments as emitted packets.

use super::icmp::send_error;
use super::packet::{flags, Packet};
use super::stage::{StageCx, Verdict};
use crate::pipeline::drop::DropReason;
use crate::wire::ethernet::HEADER_LEN;
use crate::wire::icmp as icmpw;
use crate::wire::ipv4;

/// The stage (stateless).
#[derive(Default)]
pub struct RouteStage;

impl RouteStage {
    /// Routes one IPv4 packet.
    #[inline(always)]
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let l3 = &pkt.frame()[HEADER_LEN..];
        let local = pkt.meta.flags & (flags::LOCAL | flags::TTL_DONE) != 0;
        if !local && ipv4::ttl(l3) <= 1 {
            send_error(pkt, icmpw::TIME_EXCEEDED, icmpw::CODE_TTL_EXCEEDED, 0, cx);
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let dst = ipv4::dst(l3);
        let Some(route) = cx.tables.routes.lookup(dst) else {
            send_error(
                pkt,
                icmpw::DEST_UNREACHABLE,
                icmpw::CODE_NET_UNREACHABLE,
                0,
                cx,
            );
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(out) = cx.tables.ifaces.get(route.out_if as usize) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let len = l3.len();
        let (out_if, mtu) = (route.out_if, out.mtu as usize);
        let next_hop = route.via.unwrap_or(dst);
        if len > mtu && !pkt.meta.offload.is_gso() {
            if ipv4::flags_frag(l3) & ipv4::FLAG_DF != 0 {
                // The sender learns the path MTU (RFC 1191).
                send_error(
                    pkt,
                    icmpw::DEST_UNREACHABLE,
                    icmpw::CODE_FRAG_NEEDED,
                    mtu as u32,
                    cx,
                );
                return Verdict::Drop(DropReason::MtuExceeded);
            }
            if !local {
                ipv4::decrement_ttl(&mut pkt.frame_mut()[HEADER_LEN..]);
            }
            return fragment(pkt, mtu, out_if, next_hop, cx);
        }
        pkt.meta.tx_if = out_if;
        pkt.meta.next_hop = next_hop;
        if !local {
            ipv4::decrement_ttl(&mut pkt.frame_mut()[HEADER_LEN..]);
        }
        Verdict::Continue
    }
}

/// Splits `pkt` into fragments of at most `mtu` bytes and emits them into the neighbour stage.
///
/// Options marked "copied" (RFC 791 §3.1, high bit of the type) are repeated in every fragment;
/// the others stay in the first only. A partial checksum is completed first: fragments cannot
/// carry checksum offload.
#[cold]
#[inline(never)]
fn fragment(
    pkt: &mut Packet,
    mtu: usize,
    out_if: crate::tables::IfId,
    next_hop: std::net::Ipv4Addr,
    cx: &mut StageCx<'_>,
) -> Verdict {
    pkt.complete_checksum();
    let f = pkt.frame();
    let l3 = &f[HEADER_LEN..];
    let hlen = ipv4::header_len(l3);
    let payload = &l3[hlen..];
    let word = ipv4::flags_frag(l3);
    let (base_offset, orig_mf) = ((word & 0x1fff) as usize * 8, word & ipv4::FLAG_MF != 0);
    // Options that every fragment repeats.
    let mut later_opts = [0u8; 40];
    let mut later_len = 0;
    let opts = &l3[ipv4::MIN_HEADER_LEN..hlen];
    let mut i = 0;
    while i < opts.len() {
        let t = opts[i];
        let olen = match t {
            0 => break,
            1 => 1,
            _ => match opts.get(i + 1) {
                Some(&l) if l >= 2 && i + l as usize <= opts.len() => l as usize,
                _ => break,
            },
        };
        if t & 0x80 != 0 && later_len + olen <= later_opts.len() {
            later_opts[later_len..later_len + olen].copy_from_slice(&opts[i..i + olen]);
            later_len += olen;
        }
        i += olen;
    }
    let later_hlen = ipv4::MIN_HEADER_LEN + later_len.div_ceil(4) * 4;
    let mut done = 0;
    let mut first = true;
    while done < payload.len() {
        let this_hlen = if first { hlen } else { later_hlen };
        let room = (mtu.saturating_sub(this_hlen)) & !7;
        if room == 0 {
            return Verdict::Drop(DropReason::MtuExceeded);
        }
        let chunk = room.min(payload.len() - done);
        let last = done + chunk == payload.len();
        let mut frag = cx.pool.get();
        let out = frag.reset(HEADER_LEN + this_hlen + chunk);
        out[..HEADER_LEN].copy_from_slice(&f[..HEADER_LEN]);
        let ip = &mut out[HEADER_LEN..];
        ip[..ipv4::MIN_HEADER_LEN].copy_from_slice(&l3[..ipv4::MIN_HEADER_LEN]);
        if first {
            ip[ipv4::MIN_HEADER_LEN..hlen].copy_from_slice(&l3[ipv4::MIN_HEADER_LEN..hlen]);
        } else {
            ip[ipv4::MIN_HEADER_LEN..ipv4::MIN_HEADER_LEN + later_len]
                .copy_from_slice(&later_opts[..later_len]);
        }
        ip[0] = 0x40 | (this_hlen / 4) as u8;
        ip[this_hlen..this_hlen + chunk].copy_from_slice(&payload[done..done + chunk]);
        crate::wire::put16(ip, ipv4::field::LENGTH, (this_hlen + chunk) as u16);
        let mf = if last { orig_mf } else { true };
        let off = ((base_offset + done) / 8) as u16;
        crate::wire::put16(
            ip,
            ipv4::field::FLAGS_FRAG,
            off | if mf { ipv4::FLAG_MF } else { 0 },
        );
        ipv4::fill_checksum(ip, this_hlen);
        frag.meta.rx_if = pkt.meta.rx_if;
        frag.meta.flags = pkt.meta.flags;
        frag.meta.tx_if = out_if;
        frag.meta.next_hop = next_hop;
        cx.emit(frag, super::StageKind::Neighbour);
        done += chunk;
        first = false;
    }
    Verdict::Consumed
}
