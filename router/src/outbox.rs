//! The control plane's sending path: datagrams and whole packets it originates from the router's
//! addresses go through a bounded queue to worker 0, which builds each into a frame that enters
//! the pipeline at the route stage (routed, ARP-resolved and counted like any of the router's
//! packets). The queue refuses when full and the caller counts it; an eventfd wakes the worker.
//! A packet for a WCCP cache's MAC (an L2-forwarded redirect probe) skips the route lookup: it
//! enters at the neighbour stage with its interface and next hop set. A whole Ethernet frame
//! (VRRP's advertisements and gratuitous ARPs, whose source is the virtual MAC) enters at the
//! tx stage.

use crate::pipeline::packet::{flags, Packet, Pool};
use crate::pipeline::StageKind;
use crate::sys::EventFd;
use crate::tables::IfId;
use crate::wire::ethernet::{self, HEADER_LEN};
use crate::wire::ipv4::{self, Ipv4Repr};
use crate::wire::udp::{UdpPacket, UdpRepr};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// A datagram the control plane sends from one of our addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutDatagram {
    /// Our address and port.
    pub src: SocketAddrV4,
    /// Destination.
    pub dst: SocketAddrV4,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// What the control plane sends: a UDP datagram, or a whole IPv4 packet it built (a probe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A datagram from one of our addresses.
    Udp(OutDatagram),
    /// An IPv4 packet, header included, sourced from one of our addresses.
    Ipv4(Vec<u8>),
    /// An IPv4 packet sent as it is to `next_hop`'s MAC on interface `tx_if`, whatever its
    /// destination (WCCP L2 forwarding).
    L2 {
        /// The interface the next hop is on.
        tx_if: IfId,
        /// Whose MAC the frame goes to.
        next_hop: Ipv4Addr,
        /// The IPv4 packet, header included.
        packet: Vec<u8>,
    },
    /// A whole Ethernet frame sent as it is on `tx_if` (VRRP advertisements and gratuitous
    /// ARPs, from the virtual MAC).
    Frame {
        /// The interface to send it on.
        tx_if: IfId,
        /// The frame, Ethernet header included.
        frame: Vec<u8>,
    },
}

/// The control plane's handle for sending datagrams; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: SyncSender<Outgoing>,
    wake: Arc<EventFd>,
}

/// The worker's end of the outbox.
pub struct OutboxReceiver {
    rx: Receiver<Outgoing>,
    wake: Arc<EventFd>,
}

/// A bounded outbox of `capacity` datagrams.
pub fn outbox(capacity: usize) -> std::io::Result<(Outbox, OutboxReceiver)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
    let wake = Arc::new(EventFd::new()?);
    Ok((
        Outbox {
            tx,
            wake: wake.clone(),
        },
        OutboxReceiver { rx, wake },
    ))
}

impl Outbox {
    /// Queues a datagram and wakes the worker; gives it back when the queue is full.
    pub fn send(&self, d: OutDatagram) -> Result<(), OutDatagram> {
        match self.send_any(Outgoing::Udp(d)) {
            Ok(()) => Ok(()),
            Err(Outgoing::Udp(d)) => Err(d),
            Err(_) => Ok(()),
        }
    }

    /// Queues a whole IPv4 packet; false when the queue is full.
    pub fn send_ipv4(&self, packet: Vec<u8>) -> bool {
        self.send_any(Outgoing::Ipv4(packet)).is_ok()
    }

    /// Queues a whole IPv4 packet for `next_hop`'s MAC on `tx_if`; false when the queue is full.
    pub fn send_l2(&self, tx_if: IfId, next_hop: Ipv4Addr, packet: Vec<u8>) -> bool {
        self.send_any(Outgoing::L2 {
            tx_if,
            next_hop,
            packet,
        })
        .is_ok()
    }

    /// Queues a whole Ethernet frame for `tx_if`; false when the queue is full.
    pub fn send_frame(&self, tx_if: IfId, frame: Vec<u8>) -> bool {
        self.send_any(Outgoing::Frame { tx_if, frame }).is_ok()
    }

    fn send_any(&self, o: Outgoing) -> Result<(), Outgoing> {
        match self.tx.try_send(o) {
            Ok(()) => {
                self.wake.notify();
                Ok(())
            }
            Err(TrySendError::Full(o) | TrySendError::Disconnected(o)) => Err(o),
        }
    }
}

impl OutboxReceiver {
    /// The descriptor that becomes readable when datagrams wait.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.wake.fd()
    }

    /// The next waiting datagram, if any (tests: what the control plane sent).
    #[cfg(test)]
    pub fn try_recv(&self) -> Option<Outgoing> {
        self.rx.try_recv().ok()
    }

    /// Builds every waiting datagram into a packet that enters the pipeline at the route stage.
    pub fn drain_into(&self, pool: &mut Pool, out: &mut Vec<Packet>) {
        self.wake.drain();
        while let Ok(o) = self.rx.try_recv() {
            match o {
                Outgoing::Udp(d) => out.push(build_udp(pool, &d)),
                Outgoing::Ipv4(ip) => out.push(build_ipv4(pool, &ip)),
                Outgoing::L2 {
                    tx_if,
                    next_hop,
                    packet,
                } => {
                    let mut p = build_ipv4(pool, &packet);
                    p.meta.tx_if = tx_if;
                    p.meta.next_hop = next_hop;
                    p.meta.stage = StageKind::Neighbour as u8;
                    out.push(p);
                }
                Outgoing::Frame { tx_if, frame } => {
                    let mut p = pool.get();
                    p.reset(frame.len()).copy_from_slice(&frame);
                    p.meta.flags = flags::LOCAL;
                    p.meta.tx_if = tx_if;
                    p.meta.rx_if = tx_if;
                    p.meta.stage = StageKind::Tx as u8;
                    out.push(p);
                }
            }
        }
    }
}

/// An Ethernet frame around a whole IPv4 packet the control plane built, marked as the router's
/// own and starting at the route stage.
pub fn build_ipv4(pool: &mut Pool, ip: &[u8]) -> Packet {
    let mut p = pool.get();
    let f = p.reset(HEADER_LEN + ip.len());
    f[ethernet::field::ETHERTYPE].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    f[HEADER_LEN..].copy_from_slice(ip);
    p.meta.flags = flags::LOCAL;
    p.meta.stage = StageKind::Route as u8;
    p
}

/// An Ethernet + IPv4 + UDP frame for `d` (MACs are filled in by the neighbour stage), marked as
/// the router's own and starting at the route stage.
pub fn build_udp(pool: &mut Pool, d: &OutDatagram) -> Packet {
    let mut p = pool.get();
    let udp = UdpRepr {
        src_port: d.src.port(),
        dst_port: d.dst.port(),
        payload_len: d.payload.len(),
    };
    let udp_len = udp.buffer_len();
    let f = p.reset(HEADER_LEN + ipv4::MIN_HEADER_LEN + udp_len);
    f[ethernet::field::ETHERTYPE].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    let ip_at = HEADER_LEN;
    let udp_at = ip_at + ipv4::MIN_HEADER_LEN;
    f[udp_at + udp.header_len()..].copy_from_slice(&d.payload);
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut f[udp_at..]),
        *d.src.ip(),
        *d.dst.ip(),
    );
    Ipv4Repr {
        src: *d.src.ip(),
        dst: *d.dst.ip(),
        protocol: ipv4::PROTO_UDP,
        payload_len: udp_len,
        ttl: 64,
        ident: ipv4::next_ident(),
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[ip_at..]);
    p.meta.flags = flags::LOCAL;
    p.meta.stage = StageKind::Route as u8;
    p
}
