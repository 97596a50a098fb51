//! The `nat-in` and `nat-out` stages (issue 14): the line interface's dispatch and the owning
//! worker's translation, around the worker's `natd::WorkerNat`.
//!
//! - `nat-in` (after ipv4-input) takes packets that arrived on an outside interface for a pool
//!   address, and hairpinned ones: the VID in the destination port names the worker; its owner
//!   translates the destination back to the inside host and the packet goes on to routing.
//!   Traffic to a pool address that is not NAT (a ping to the router's outside address, WCCP,
//!   ports outside the VID blocks) goes to local delivery when the address is the router's.
//! - `nat-out` (after route) takes packets routed out of an outside interface: the flow table
//!   names the endpoint's worker; unknown endpoints' set-up requests go to the switch
//!   processor; the owner translates the source.
//!
//! Packets whose session lives on another worker end here with [`Verdict::HandOff`]; the owner
//! runs them from the same stage. Counters: `nat-*` drop reasons, and per-worker NAT statistics
//! in status.

use super::drop::DropReason;
use super::icmp::send_error;
use super::packet::{flags, Packet};
use super::stage::{StageCx, StageKind, Verdict};
use crate::natd::Step;
use crate::tables::AddrClass;
use crate::wire::ethernet::HEADER_LEN;
use crate::wire::icmp as icmpw;
use crate::wire::ipv4;

/// ICMP destination unreachable code 13: communication administratively prohibited
/// (RFC 1812 §5.2.7.1), the answer to a new flow the NAT has no port for.
const CODE_ADMIN_PROHIBITED: u8 = 13;

/// The `nat-in` stage (stateless; the state is the worker's `WorkerNat`).
#[derive(Default)]
pub struct NatInStage;

impl NatInStage {
    /// Dispatches or translates one inbound packet.
    #[inline(always)]
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let Some(plane) = cx.tables.nat.as_deref() else {
            return Verdict::Continue;
        };
        let dst = ipv4::dst(&pkt.frame()[HEADER_LEN..]);
        if pkt.meta.flags & (flags::NAT_HANDED | flags::NAT_HAIRPIN) == 0
            && !(plane.is_outside(pkt.meta.rx_if) && plane.cfg.is_pool_addr(dst))
        {
            return Verdict::Continue;
        }
        let local = cx.tables.classify(dst) == AddrClass::Local;
        if local && for_local_listener(&pkt.frame()[HEADER_LEN..], cx) {
            // The router's own listeners on its address (WCCP, probe answers) come first; NAT
            // never allocates their ports (`nat::config::ReservedPorts`).
            return Verdict::Jump(StageKind::LocalDelivery);
        }
        let Some(nw) = cx.nat.take() else {
            return if local {
                Verdict::Jump(StageKind::LocalDelivery)
            } else {
                Verdict::Continue
            };
        };
        let step = nw.inbound(pkt, local);
        cx.nat = Some(nw);
        finish(step, pkt, cx)
    }
}

/// The `nat-out` stage.
#[derive(Default)]
pub struct NatOutStage;

impl NatOutStage {
    /// Dispatches or translates one packet routed out of an outside interface.
    #[inline(always)]
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let Some(plane) = cx.tables.nat.as_deref() else {
            return Verdict::Continue;
        };
        let handed = pkt.meta.flags & flags::NAT_HANDED != 0;
        if !handed && (pkt.meta.flags & flags::LOCAL != 0 || !plane.is_outside(pkt.meta.tx_if)) {
            return Verdict::Continue;
        }
        let Some(nw) = cx.nat.take() else {
            return Verdict::Continue;
        };
        let out_if = pkt.meta.tx_if;
        let step = nw.outbound(pkt, out_if);
        cx.nat = Some(nw);
        finish(step, pkt, cx)
    }
}

/// True for UDP or TCP to a port the router itself listens on.
#[inline]
fn for_local_listener(l3: &[u8], cx: &StageCx<'_>) -> bool {
    let proto = ipv4::protocol(l3);
    if proto != ipv4::PROTO_UDP && proto != ipv4::PROTO_TCP {
        return false;
    }
    let hl = ipv4::header_len(l3);
    let dport = l3
        .get(hl + 2..hl + 4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    dport.is_some() && cx.tables.local.handler(proto, dport).is_some()
}

/// Turns a NAT step into the stage's verdict.
#[inline(always)]
fn finish(step: Step, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
    match step {
        Step::Continue => {
            pkt.meta.flags &= !(flags::NAT_HANDED | flags::NAT_SETUP | flags::NAT_HAIRPIN);
            Verdict::Continue
        }
        Step::Hairpin => {
            // Dispatched again as an inbound packet; routed once more without a second TTL
            // decrement.
            pkt.meta.flags &= !(flags::NAT_HANDED | flags::NAT_SETUP);
            pkt.meta.flags |= flags::NAT_HAIRPIN | flags::TTL_DONE;
            Verdict::Jump(StageKind::NatIn)
        }
        Step::HandedOff => Verdict::HandOff,
        Step::Local => Verdict::Jump(StageKind::LocalDelivery),
        Step::Prohibited => {
            send_error(pkt, icmpw::DEST_UNREACHABLE, CODE_ADMIN_PROHIBITED, 0, cx);
            Verdict::Drop(DropReason::NatPortExhausted)
        }
        Step::Drop(r) => Verdict::Drop(r),
    }
}
