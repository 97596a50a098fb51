//! UDP for the router's own control plane: datagrams addressed to a bound port on one of our
//! addresses are handed to the control plane (WCCP listens on 2048), and the control plane
//! sends datagrams from our addresses through the same pipeline (routed, ARP-resolved, counted).
//!
//! Both directions are bounded queues: a flood of datagrams to a bound port fills the inbound
//! queue and is then dropped and counted (`local-queue-full`) instead of growing memory or
//! slowing the workers; the outbound queue refuses when full and the caller counts it.

use crate::pipeline::packet::{flags, Packet, Pool};
use crate::pipeline::StageKind;
use crate::probe::{TcpSegment, PROBE_PORTS};
use crate::sys::EventFd;
use crate::tables::IfId;
use crate::wire::checksum;
use crate::wire::ethernet::{self, HEADER_LEN};
use crate::wire::ipv4::{self, Ipv4Repr};
use std::net::SocketAddrV4;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// A datagram addressed to one of our bound ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDatagram {
    /// Interface it arrived on.
    pub rx_if: IfId,
    /// Sender.
    pub src: SocketAddrV4,
    /// Our address and port it was sent to.
    pub dst: SocketAddrV4,
    /// UDP payload.
    pub payload: Vec<u8>,
}

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

/// The UDP ports the control plane listens on, fixed at start, and the TCP prober's queue.
#[derive(Debug, Default, Clone)]
pub struct LocalPorts {
    bindings: Vec<(u16, tokio::sync::mpsc::Sender<LocalDatagram>)>,
    probes: Option<tokio::sync::mpsc::Sender<TcpSegment>>,
}

impl LocalPorts {
    /// Binds `port` on every router address; datagrams arrive on the returned receiver, at most
    /// `capacity` waiting.
    pub fn bind(
        &mut self,
        port: u16,
        capacity: usize,
    ) -> tokio::sync::mpsc::Receiver<LocalDatagram> {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        self.bindings.retain(|(p, _)| *p != port);
        self.bindings.push((port, tx));
        rx
    }

    /// Sends TCP segments to [`PROBE_PORTS`] to the returned receiver, at most `capacity` waiting.
    pub fn bind_probes(&mut self, capacity: usize) -> tokio::sync::mpsc::Receiver<TcpSegment> {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        self.probes = Some(tx);
        rx
    }

    /// The prober's queue when `port` is a probe port.
    #[inline]
    pub fn probe_queue(&self, port: u16) -> Option<&tokio::sync::mpsc::Sender<TcpSegment>> {
        self.probes.as_ref().filter(|_| PROBE_PORTS.contains(&port))
    }

    /// The queue of a bound port.
    #[inline]
    pub fn lookup(&self, port: u16) -> Option<&tokio::sync::mpsc::Sender<LocalDatagram>> {
        self.bindings
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, tx)| tx)
    }
}

/// Why a datagram could not be delivered to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverError {
    /// Shorter than its header or its length field.
    Malformed,
    /// The UDP checksum does not verify.
    BadChecksum,
    /// The port's queue is full.
    QueueFull,
}

/// Hands a UDP datagram (IPv4 header at `l3`) to the bound port's queue.
pub fn deliver(
    l3: &[u8],
    hlen: usize,
    partial_csum: bool,
    rx_if: IfId,
    tx: &tokio::sync::mpsc::Sender<LocalDatagram>,
) -> Result<(), DeliverError> {
    let udp = l3.get(hlen..).ok_or(DeliverError::Malformed)?;
    if udp.len() < UDP_HEADER_LEN {
        return Err(DeliverError::Malformed);
    }
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
        return Err(DeliverError::Malformed);
    }
    let udp = &udp[..udp_len];
    let (src, dst) = (ipv4::src(l3), ipv4::dst(l3));
    // A zero checksum means "none" (RFC 768); a partial one was made by a local stack that
    // never put it on a wire.
    if u16::from_be_bytes([udp[6], udp[7]]) != 0 && !partial_csum {
        let acc = checksum::sum(
            checksum::pseudo_header(src.octets(), dst.octets(), ipv4::PROTO_UDP, udp_len as u16),
            udp,
        );
        if checksum::fold(acc) != 0xffff {
            return Err(DeliverError::BadChecksum);
        }
    }
    let d = LocalDatagram {
        rx_if,
        src: SocketAddrV4::new(src, u16::from_be_bytes([udp[0], udp[1]])),
        dst: SocketAddrV4::new(dst, u16::from_be_bytes([udp[2], udp[3]])),
        payload: udp[UDP_HEADER_LEN..].to_vec(),
    };
    match tx.try_send(d) {
        Ok(()) => Ok(()),
        Err(
            tokio::sync::mpsc::error::TrySendError::Full(_)
            | tokio::sync::mpsc::error::TrySendError::Closed(_),
        ) => Err(DeliverError::QueueFull),
    }
}

/// Hands a TCP segment (IPv4 header at `l3`) to the prober's queue.
pub fn deliver_tcp(
    l3: &[u8],
    hlen: usize,
    partial_csum: bool,
    tx: &tokio::sync::mpsc::Sender<TcpSegment>,
) -> Result<(), DeliverError> {
    let tcp = l3.get(hlen..).ok_or(DeliverError::Malformed)?;
    if tcp.len() < TCP_HEADER_LEN || usize::from(tcp[12] >> 4) * 4 < TCP_HEADER_LEN {
        return Err(DeliverError::Malformed);
    }
    let (src, dst) = (ipv4::src(l3), ipv4::dst(l3));
    if !partial_csum {
        let acc = checksum::sum(
            checksum::pseudo_header(
                src.octets(),
                dst.octets(),
                ipv4::PROTO_TCP,
                tcp.len() as u16,
            ),
            tcp,
        );
        if checksum::fold(acc) != 0xffff {
            return Err(DeliverError::BadChecksum);
        }
    }
    let be32 = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    let seg = TcpSegment {
        src: SocketAddrV4::new(src, u16::from_be_bytes([tcp[0], tcp[1]])),
        dst: SocketAddrV4::new(dst, u16::from_be_bytes([tcp[2], tcp[3]])),
        seq: be32(4),
        ack: be32(8),
        flags: tcp[13],
    };
    tx.try_send(seg).map_err(|_| DeliverError::QueueFull)
}

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;

/// What the control plane sends: a UDP datagram, or a whole IPv4 packet it built (a probe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A datagram from one of our addresses.
    Udp(OutDatagram),
    /// An IPv4 packet, header included, sourced from one of our addresses.
    Ipv4(Vec<u8>),
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
            Err(Outgoing::Ipv4(_)) => Ok(()),
        }
    }

    /// Queues a whole IPv4 packet; false when the queue is full.
    pub fn send_ipv4(&self, packet: Vec<u8>) -> bool {
        self.send_any(Outgoing::Ipv4(packet)).is_ok()
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

    /// Builds every waiting datagram into a packet that enters the pipeline at the route stage.
    pub fn drain_into(&self, pool: &mut Pool, out: &mut Vec<Packet>) {
        self.wake.drain();
        while let Ok(o) = self.rx.try_recv() {
            match o {
                Outgoing::Udp(d) => out.push(build_udp(pool, &d)),
                Outgoing::Ipv4(ip) => out.push(build_ipv4(pool, &ip)),
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
    let udp_len = UDP_HEADER_LEN + d.payload.len();
    let f = p.reset(HEADER_LEN + ipv4::MIN_HEADER_LEN + udp_len);
    f[ethernet::field::ETHERTYPE].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    let ip_at = HEADER_LEN;
    let udp_at = ip_at + ipv4::MIN_HEADER_LEN;
    {
        let udp = &mut f[udp_at..];
        udp[0..2].copy_from_slice(&d.src.port().to_be_bytes());
        udp[2..4].copy_from_slice(&d.dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        udp[UDP_HEADER_LEN..].copy_from_slice(&d.payload);
        let acc = checksum::sum(
            checksum::pseudo_header(
                d.src.ip().octets(),
                d.dst.ip().octets(),
                ipv4::PROTO_UDP,
                udp_len as u16,
            ),
            udp,
        );
        let mut c = !checksum::fold(acc);
        if c == 0 {
            c = 0xffff; // RFC 768: a computed zero is sent as all ones
        }
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
    Ipv4Repr {
        src: *d.src.ip(),
        dst: *d.dst.ip(),
        protocol: ipv4::PROTO_UDP,
        payload_len: udp_len,
        ttl: 64,
        ident: crate::pipeline::next_ident(),
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[ip_at..]);
    p.meta.flags = flags::LOCAL;
    p.meta.stage = StageKind::Route as u8;
    p
}
