//! The ipv4-input stage: validates the header (RFC 1812 §5.2.2), refuses martians and broadcasts
//! for forwarding, and delivers packets addressed to the router: ICMP echo is answered here,
//! UDP to a port the control plane bound goes to its queue, UDP to a closed port gets port
//! unreachable, TCP to a probe port goes to the prober (health-check answers).
//!
//! Counters: `ipv4-truncated`, `ipv4-bad-version`, `ipv4-bad-header-length`,
//! `ipv4-bad-total-length`, `ipv4-bad-checksum`, `martian-source`, `martian-destination`,
//! `broadcast-not-forwarded`, `multicast-not-forwarded`, `local-fragment`, `icmp-malformed`,
//! `local-icmp-ignored`, `local-port-unreachable`, `local-protocol-unsupported`,
//! `udp-malformed`, `udp-bad-checksum`, `tcp-malformed`, `tcp-bad-checksum`,
//! `local-queue-full`; echo requests
//! answered count as consumed.

use super::icmp::{next_ident, send_error};
use super::packet::{flags, Packet};
use super::{StageCx, StageKind, Verdict};
use crate::local::DeliverError;
use crate::pipeline::drop::DropReason;
use crate::tables::AddrClass;
use crate::wire::ethernet::HEADER_LEN;
use crate::wire::icmp as icmpw;
use crate::wire::ipv4::{self, Ipv4Error};
use crate::wire::{checksum, put16};

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
        // Ethernet pads short frames; the padding is not part of the datagram.
        pkt.truncate(HEADER_LEN + total);
        let (src_class, dst_class) = cx.tables.classify_pair(src, dst);
        if ipv4::is_martian_source(src) || src_class != AddrClass::Other {
            return Verdict::Drop(DropReason::MartianSource);
        }
        match dst_class {
            AddrClass::Local => return deliver_local(pkt, cx),
            AddrClass::Broadcast => return Verdict::Drop(DropReason::BroadcastNotForwarded),
            AddrClass::Other => {}
        }
        if dst.is_multicast() {
            return Verdict::Drop(DropReason::MulticastNotForwarded);
        }
        if ipv4::is_martian_destination(dst) {
            return Verdict::Drop(DropReason::MartianDestination);
        }
        // A frame sent to our MAC's broadcast form is not a request to forward it.
        if crate::wire::ethernet::dst(pkt.frame()).is_multicast() {
            return Verdict::Drop(DropReason::BroadcastNotForwarded);
        }
        Verdict::Continue
    }
}

/// Handles a datagram addressed to one of our addresses.
#[cold]
#[inline(never)]
fn deliver_local(pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
    let l3 = &pkt.frame()[HEADER_LEN..];
    if ipv4::is_fragment(l3) {
        return Verdict::Drop(DropReason::LocalFragment);
    }
    let hlen = ipv4::header_len(l3);
    match ipv4::protocol(l3) {
        ipv4::PROTO_ICMP => {
            let msg = &l3[hlen..];
            if !icmpw::verify(msg) {
                return Verdict::Drop(DropReason::IcmpMalformed);
            }
            if msg[0] != icmpw::ECHO_REQUEST {
                return Verdict::Drop(DropReason::LocalIcmpIgnored);
            }
            echo_reply(pkt, hlen);
            Verdict::Jump(StageKind::Route)
        }
        ipv4::PROTO_UDP => {
            let dport = l3
                .get(hlen + 2..hlen + 4)
                .map(|b| u16::from_be_bytes([b[0], b[1]]));
            if let Some(tx) = dport.and_then(|p| cx.tables.local.lookup(p)) {
                let partial = pkt.meta.offload.needs_csum();
                return match crate::local::deliver(l3, hlen, partial, pkt.meta.rx_if, tx) {
                    Ok(()) => Verdict::Consumed,
                    Err(DeliverError::Malformed) => Verdict::Drop(DropReason::UdpMalformed),
                    Err(DeliverError::BadChecksum) => Verdict::Drop(DropReason::UdpBadChecksum),
                    Err(DeliverError::QueueFull) => Verdict::Drop(DropReason::LocalQueueFull),
                };
            }
            send_error(
                pkt,
                icmpw::DEST_UNREACHABLE,
                icmpw::CODE_PORT_UNREACHABLE,
                0,
                cx,
            );
            Verdict::Drop(DropReason::LocalPortUnreachable)
        }
        ipv4::PROTO_GRE => match super::wccp::decapsulate_return(pkt, hlen, cx) {
            // The inner packet starts over at ipv4-input: validated, then routed.
            super::wccp::ReturnOutcome::Returned => Verdict::Jump(StageKind::Ipv4Input),
            super::wccp::ReturnOutcome::NotMember => Verdict::Drop(DropReason::WccpReturnNotMember),
            super::wccp::ReturnOutcome::Malformed => Verdict::Drop(DropReason::GreMalformed),
        },
        // The router's only TCP: answers to its health probes (WCCP fast failover, steering).
        ipv4::PROTO_TCP => {
            let dport = l3
                .get(hlen + 2..hlen + 4)
                .map(|b| u16::from_be_bytes([b[0], b[1]]));
            let Some(tx) = dport.and_then(|p| cx.tables.local.probe_queue(p)) else {
                return Verdict::Drop(DropReason::LocalProtocolUnsupported);
            };
            let partial = pkt.meta.offload.needs_csum();
            match crate::local::deliver_tcp(l3, hlen, partial, tx) {
                Ok(()) => Verdict::Consumed,
                Err(DeliverError::BadChecksum) => Verdict::Drop(DropReason::TcpBadChecksum),
                Err(DeliverError::QueueFull) => Verdict::Drop(DropReason::LocalQueueFull),
                Err(DeliverError::Malformed) => Verdict::Drop(DropReason::TcpMalformed),
            }
        }
        _ => {
            send_error(
                pkt,
                icmpw::DEST_UNREACHABLE,
                icmpw::CODE_PROTOCOL_UNREACHABLE,
                0,
                cx,
            );
            Verdict::Drop(DropReason::LocalProtocolUnsupported)
        }
    }
}

/// Turns an echo request into its reply in place (RFC 792): addresses swapped, type 0, the
/// ICMP checksum patched incrementally, a fresh IP header checksum. IP options are dropped
/// (RFC 1812 §4.3.3.6 lets a router answer without them).
fn echo_reply(pkt: &mut Packet, hlen: usize) {
    let f = pkt.frame_mut();
    let ip = HEADER_LEN;
    if hlen > ipv4::MIN_HEADER_LEN {
        let total = f.len();
        f.copy_within(ip + hlen..total, ip + ipv4::MIN_HEADER_LEN);
        let new_len = total - (hlen - ipv4::MIN_HEADER_LEN);
        pkt.truncate(new_len);
    }
    let f = pkt.frame_mut();
    let total = f.len() - ip;
    let (src, dst) = (ipv4::src(&f[ip..]), ipv4::dst(&f[ip..]));
    let icmp_at = ip + ipv4::MIN_HEADER_LEN;
    let old = u16::from_be_bytes([f[icmp_at], f[icmp_at + 1]]);
    f[icmp_at] = icmpw::ECHO_REPLY;
    let new = u16::from_be_bytes([f[icmp_at], f[icmp_at + 1]]);
    let c = checksum::update16(
        u16::from_be_bytes([f[icmp_at + 2], f[icmp_at + 3]]),
        old,
        new,
    );
    put16(f, icmp_at + 2, c);
    ipv4::Ipv4Repr {
        src: dst,
        dst: src,
        protocol: ipv4::PROTO_ICMP,
        payload_len: total - ipv4::MIN_HEADER_LEN,
        ttl: 64,
        ident: next_ident(),
        tos: f[ip + 1],
        dont_fragment: false,
    }
    .emit(&mut f[ip..]);
    let rx = pkt.meta.rx_if;
    pkt.meta = super::packet::PacketMeta {
        rx_if: rx,
        flags: flags::LOCAL,
        ..Default::default()
    };
}
