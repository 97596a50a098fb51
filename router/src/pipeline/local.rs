//! The local-delivery stage: datagrams addressed to one of the router's own addresses, entered
//! by ipv4-input's jump. The port table (`tables::local`) names the handler: ICMP echo is
//! answered in place, UDP to a control-plane port (WCCP's 2048) and TCP to a probe port
//! (health-check answers) go to their bounded control-plane queues, GRE goes to WCCP's return
//! path, VRRP advertisements (protocol 112, let in by ipv4-input) to the VRRP driver's queue; anything else gets the ICMP error a host would send.
//!
//! Counters: `local-fragment`, `icmp-malformed`, `local-icmp-ignored`,
//! `icmp-echo-rate-limited` (echo replies are limited per source and per worker, see
//! `pipeline/limit.rs`), `local-port-unreachable`, `local-protocol-unsupported`,
//! `udp-malformed`, `udp-bad-checksum`, `tcp-malformed`, `tcp-bad-checksum`,
//! `probe-port-closed`, `probe-queue-full`, `wccp-not-cache-interface`, `wccp-reverse-path`,
//! `control-queue-full-known`, `control-queue-full-others`, `wccp-return-not-member`,
//! `wccp-return-wrong-service`, `wccp-return-not-gre`, `wccp-return-wrong-interface`,
//! `gre-malformed`, `vrrp-queue-full`; echo requests answered and datagrams delivered count as consumed.

use super::drop::DropReason;
use super::icmp::send_error;
use super::packet::{flags, Packet, PacketMeta};
use super::stage::{StageCx, StageKind, Verdict};
use crate::probe::TcpSegment;
use crate::tables::local::{Handler, LocalDatagram};
use crate::tables::IfId;
use crate::wire::ethernet::HEADER_LEN;
use crate::wire::icmp::{self as icmpw, Icmpv4Packet};
use crate::wire::ipv4;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::{checksum, put16};
use std::net::SocketAddrV4;
use tokio::sync::mpsc::Sender;

/// The stage (stateless).
#[derive(Default)]
pub struct LocalDeliveryStage;

impl LocalDeliveryStage {
    /// Hands a datagram addressed to one of our addresses (header checked by ipv4-input) to
    /// its handler.
    #[cold]
    #[inline(never)]
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let l3 = &pkt.frame()[HEADER_LEN..];
        if ipv4::is_fragment(l3) {
            return Verdict::Drop(DropReason::LocalFragment);
        }
        let hlen = ipv4::header_len(l3);
        let protocol = ipv4::protocol(l3);
        let dport = ipv4::ports(&l3[hlen..]).map(|(_, d)| d);
        let partial = pkt.meta.offload.needs_csum();
        match cx.tables.local.handler(protocol, dport) {
            Some(Handler::IcmpEcho) => {
                let Some(msg) = Icmpv4Packet::new_checked(&l3[hlen..])
                    .ok()
                    .filter(|m| m.verify())
                else {
                    return Verdict::Drop(DropReason::IcmpMalformed);
                };
                if msg.msg_type() != icmpw::ECHO_REQUEST {
                    return Verdict::Drop(DropReason::LocalIcmpIgnored);
                }
                if !cx.icmp_limits.echo.allow(ipv4::src(l3), cx.now) {
                    return Verdict::Drop(DropReason::IcmpEchoRateLimited);
                }
                echo_reply(pkt, hlen);
                Verdict::Jump(StageKind::Route)
            }
            Some(Handler::Control(queue)) => {
                // UDP 2048 (WCCP) is the only control port: caches join only where the
                // operator expects them (issue 13 item 9).
                let rx_if = pkt.meta.rx_if;
                if !cx
                    .tables
                    .ifaces
                    .get(usize::from(rx_if))
                    .is_some_and(|i| i.wccp_caches)
                {
                    return Verdict::Drop(DropReason::WccpNotCacheInterface);
                }
                // Strict reverse path: the route back to the sender leaves through the
                // interface the datagram came in on, so a host on one cache segment cannot
                // pose as a cache on another (and take the members' queue).
                let src = ipv4::src(l3);
                if cx.tables.routes.lookup(src).map(|r| r.out_if) != Some(rx_if) {
                    return Verdict::Drop(DropReason::WccpReversePath);
                }
                let known = cx.tables.wccp.is_peer(src);
                let (tx, full) = if known {
                    (&queue.known, DropReason::ControlQueueFullKnown)
                } else {
                    (&queue.others, DropReason::ControlQueueFullOthers)
                };
                match deliver_udp(l3, hlen, partial, rx_if, tx) {
                    Ok(()) => Verdict::Consumed,
                    Err(DeliverError::Malformed) => Verdict::Drop(DropReason::UdpMalformed),
                    Err(DeliverError::BadChecksum) => Verdict::Drop(DropReason::UdpBadChecksum),
                    Err(DeliverError::QueueFull) => Verdict::Drop(full),
                }
            }
            Some(Handler::ProbeAnswer(tx, open)) => {
                if !dport.is_some_and(|p| open.is_open(p)) {
                    return Verdict::Drop(DropReason::ProbePortClosed);
                }
                match deliver_tcp(l3, hlen, partial, tx) {
                    Ok(()) => Verdict::Consumed,
                    Err(DeliverError::Malformed) => Verdict::Drop(DropReason::TcpMalformed),
                    Err(DeliverError::BadChecksum) => Verdict::Drop(DropReason::TcpBadChecksum),
                    Err(DeliverError::QueueFull) => Verdict::Drop(DropReason::ProbeQueueFull),
                }
            }
            Some(Handler::WccpReturn) => match super::wccp::decapsulate_return(pkt, hlen, cx) {
                // The inner packet starts over at ipv4-input: validated, then routed.
                super::wccp::ReturnOutcome::Returned => Verdict::Jump(StageKind::Ipv4Input),
                super::wccp::ReturnOutcome::NotMember => {
                    Verdict::Drop(DropReason::WccpReturnNotMember)
                }
                super::wccp::ReturnOutcome::WrongService => {
                    Verdict::Drop(DropReason::WccpReturnWrongService)
                }
                super::wccp::ReturnOutcome::NotGre => Verdict::Drop(DropReason::WccpReturnNotGre),
                super::wccp::ReturnOutcome::WrongInterface => {
                    Verdict::Drop(DropReason::WccpReturnWrongInterface)
                }
                super::wccp::ReturnOutcome::Malformed => Verdict::Drop(DropReason::GreMalformed),
            },
            Some(Handler::Vrrp(tx)) => {
                let d = crate::tables::local::VrrpDatagram {
                    rx_if: pkt.meta.rx_if,
                    packet: l3.to_vec(),
                };
                match tx.try_send(d) {
                    Ok(()) => Verdict::Consumed,
                    Err(_) => Verdict::Drop(DropReason::VrrpQueueFull),
                }
            }
            Some(Handler::Protocol(tx)) => {
                let end = ipv4::total_len(l3).min(l3.len());
                let d = LocalDatagram {
                    rx_if: pkt.meta.rx_if,
                    src: SocketAddrV4::new(ipv4::src(l3), 0),
                    dst: SocketAddrV4::new(ipv4::dst(l3), 0),
                    payload: l3.get(hlen..end).unwrap_or_default().to_vec(),
                    ttl: ipv4::ttl(l3),
                };
                match tx.try_send(d) {
                    Ok(()) => Verdict::Consumed,
                    Err(_) => Verdict::Drop(DropReason::ControlQueueFullOthers),
                }
            }
            // Never an ICMP error about a multicast datagram (RFC 1122 §3.2.2).
            None if ipv4::dst(l3).is_multicast() => Verdict::Drop(DropReason::LocalPortUnreachable),
            // UDP and TCP to a port nobody listens on: port unreachable, as a host answers
            // (the router's only TCP is its prober's).
            None if matches!(protocol, ipv4::PROTO_UDP) => {
                send_error(
                    pkt,
                    icmpw::DEST_UNREACHABLE,
                    icmpw::CODE_PORT_UNREACHABLE,
                    0,
                    cx,
                );
                Verdict::Drop(DropReason::LocalPortUnreachable)
            }
            None if matches!(protocol, ipv4::PROTO_TCP) => {
                Verdict::Drop(DropReason::LocalProtocolUnsupported)
            }
            None => {
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
}

/// Why a datagram could not be delivered to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeliverError {
    /// Shorter than its header or its length field.
    Malformed,
    /// The checksum does not verify.
    BadChecksum,
    /// The handler's queue is full.
    QueueFull,
}

/// Hands a UDP datagram (IPv4 header at `l3`) to a control-plane queue.
fn deliver_udp(
    l3: &[u8],
    hlen: usize,
    partial_csum: bool,
    rx_if: IfId,
    tx: &Sender<LocalDatagram>,
) -> Result<(), DeliverError> {
    let udp = l3
        .get(hlen..)
        .and_then(|b| UdpPacket::new_checked(b).ok())
        .ok_or(DeliverError::Malformed)?;
    let (src, dst) = (ipv4::src(l3), ipv4::dst(l3));
    // A partial checksum was made by a local stack that never put it on a wire.
    if !partial_csum && !udp.verify_checksum(src, dst) {
        return Err(DeliverError::BadChecksum);
    }
    let d = LocalDatagram {
        rx_if,
        src: SocketAddrV4::new(src, udp.src_port()),
        dst: SocketAddrV4::new(dst, udp.dst_port()),
        payload: udp.payload().to_vec(),
        ttl: ipv4::ttl(l3),
    };
    tx.try_send(d).map_err(|_| DeliverError::QueueFull)
}

/// Hands a TCP segment (IPv4 header at `l3`) to the prober's queue.
fn deliver_tcp(
    l3: &[u8],
    hlen: usize,
    partial_csum: bool,
    tx: &Sender<TcpSegment>,
) -> Result<(), DeliverError> {
    let tcp = l3
        .get(hlen..)
        .and_then(|b| TcpPacket::new_checked(b).ok())
        .ok_or(DeliverError::Malformed)?;
    let (src, dst) = (ipv4::src(l3), ipv4::dst(l3));
    if !partial_csum && !tcp.verify_checksum(src, dst) {
        return Err(DeliverError::BadChecksum);
    }
    let seg = TcpSegment {
        src: SocketAddrV4::new(src, tcp.src_port()),
        dst: SocketAddrV4::new(dst, tcp.dst_port()),
        seq: tcp.seq_number(),
        ack: tcp.ack_number(),
        flags: tcp.flags(),
    };
    tx.try_send(seg).map_err(|_| DeliverError::QueueFull)
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
        ident: ipv4::next_ident(),
        tos: f[ip + 1],
        dont_fragment: false,
    }
    .emit(&mut f[ip..]);
    let rx = pkt.meta.rx_if;
    pkt.meta = PacketMeta {
        rx_if: rx,
        flags: flags::LOCAL,
        ..Default::default()
    };
}
