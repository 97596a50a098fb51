//! The route stage: longest-prefix match, TTL decrement with incremental checksum (RFC 1624),
//! MTU check, and the ICMP errors that go with them (time exceeded, net unreachable,
//! fragmentation needed), all rate limited.
//!
//! Counters: `ttl-expired`, `no-route`, `mtu-exceeded`.

use super::icmp::send_error;
use super::packet::{flags, Packet};
use super::{StageCx, Verdict};
use crate::pipeline::drop::DropReason;
use crate::wire::ethernet::HEADER_LEN;
use crate::wire::icmp as icmpw;
use crate::wire::ipv4;

/// The stage (stateless).
pub struct RouteStage;

impl RouteStage {
    /// Routes one IPv4 packet.
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let l3 = &pkt.frame()[HEADER_LEN..];
        let local = pkt.meta.flags & flags::LOCAL != 0;
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
        if len > out.mtu as usize && !pkt.meta.offload.is_gso() {
            // Fragmentation is not implemented: with DF the sender learns the path MTU
            // (RFC 1191); without DF the packet is dropped and counted under the same reason.
            if ipv4::flags_frag(l3) & ipv4::FLAG_DF != 0 {
                send_error(
                    pkt,
                    icmpw::DEST_UNREACHABLE,
                    icmpw::CODE_FRAG_NEEDED,
                    out.mtu as u32,
                    cx,
                );
            }
            return Verdict::Drop(DropReason::MtuExceeded);
        }
        pkt.meta.tx_if = route.out_if;
        pkt.meta.next_hop = route.via.unwrap_or(dst);
        if !local {
            ipv4::decrement_ttl(&mut pkt.frame_mut()[HEADER_LEN..]);
        }
        Verdict::Continue
    }
}
