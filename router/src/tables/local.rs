//! The local port table: what the router itself listens to. Maps (protocol, destination port)
//! of a datagram addressed to one of our addresses to the handler the local-delivery stage
//! hands it to: ICMP echo (answered in place), UDP to a control-plane port (WCCP's 2048), TCP to
//! the prober's ports (health-check answers), GRE (returns from WCCP caches), VRRP (protocol
//! 112, to the VRRP driver).
//!
//! Bound once at start, before the workers run; the queues behind the handlers are bounded
//! (a flood fills them and is then dropped and counted). A control port has two queues, one
//! for its known peers (WCCP's member caches) and one for everyone else, and the control plane
//! serves the known one first, so a flood from strangers cannot starve the members
//! (`control-queue-full-known` / `-others`). TCP reaches the prober only on the probe ports
//! with a probe in use ([`OpenPorts`]); the rest of the range is dropped here
//! (`probe-port-closed`), so a flood on it cannot fill the prober's queue (`probe-queue-full`).

use super::IfId;
use crate::probe::{OpenPorts, TcpSegment, PROBE_PORTS};
use crate::wire::ipv4;
use std::net::SocketAddrV4;
use std::sync::Arc;
use tokio::sync::mpsc::{channel, error::TryRecvError, Receiver, Sender};

/// A UDP datagram addressed to one of our bound ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDatagram {
    /// Interface it arrived on.
    pub rx_if: IfId,
    /// Sender.
    pub src: SocketAddrV4,
    /// Our address and port it was sent to.
    pub dst: SocketAddrV4,
    /// UDP payload (for a bound protocol: the IPv4 payload; ports are 0).
    pub payload: Vec<u8>,
    /// TTL it arrived with (WCCP multicast must not exceed 15, reference §1).
    pub ttl: u8,
}

/// A VRRP advertisement (IP protocol 112 to 224.0.0.18) for the control plane's VRRP driver:
/// the whole IPv4 datagram, parsed and checked there (`vrrp::wire::parse_ipv4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpDatagram {
    /// Interface it arrived on.
    pub rx_if: IfId,
    /// The IPv4 datagram, header included.
    pub packet: Vec<u8>,
}

/// Who handles a datagram addressed to the router.
#[derive(Debug, Clone, Copy)]
pub enum Handler<'a> {
    /// ICMP echo request: answered in place.
    IcmpEcho,
    /// UDP to a control-plane port: its queues.
    Control(&'a ControlQueue),
    /// TCP to a probe port: the prober's queue and the ports it has in use.
    ProbeAnswer(&'a Sender<TcpSegment>, &'a OpenPorts),
    /// GRE: a WCCP cache returning a redirected packet.
    WccpReturn,
    /// VRRP (protocol 112): the VRRP driver's queue.
    Vrrp(&'a Sender<VrrpDatagram>),
    /// A whole protocol bound by the control plane (IGMP): its queue.
    Protocol(&'a Sender<LocalDatagram>),
}

/// The sending side of a control port's two queues.
#[derive(Debug, Clone)]
pub struct ControlQueue {
    /// Datagrams from the port's known peers (the WCCP member caches).
    pub known: Sender<LocalDatagram>,
    /// Datagrams from anyone else (caches still joining, strangers).
    pub others: Sender<LocalDatagram>,
}

/// The receiving side of a control port's queues: known peers first.
#[derive(Debug)]
pub struct ControlReceiver {
    known: Receiver<LocalDatagram>,
    others: Receiver<LocalDatagram>,
}

impl ControlReceiver {
    /// The next datagram, a known peer's whenever one waits; `None` once both queues closed.
    pub async fn recv(&mut self) -> Option<LocalDatagram> {
        if let Ok(d) = self.known.try_recv() {
            return Some(d);
        }
        tokio::select! {
            biased;
            Some(d) = self.known.recv() => Some(d),
            Some(d) = self.others.recv() => Some(d),
            else => None,
        }
    }

    /// The next datagram without waiting, a known peer's first.
    pub fn try_recv(&mut self) -> Result<LocalDatagram, TryRecvError> {
        self.known.try_recv().or_else(|_| self.others.try_recv())
    }
}

/// The ports the control plane listens on, fixed at start.
#[derive(Debug, Default, Clone)]
pub struct LocalPorts {
    udp: Vec<(u16, ControlQueue)>,
    probes: Option<(Sender<TcpSegment>, Arc<OpenPorts>)>,
    vrrp: Option<Sender<VrrpDatagram>>,
    protocols: Vec<(u8, Sender<LocalDatagram>)>,
}

impl LocalPorts {
    /// Binds UDP `port` on every router address; datagrams arrive on the returned receiver, at
    /// most `capacity` waiting in each of its two queues.
    pub fn bind(&mut self, port: u16, capacity: usize) -> ControlReceiver {
        let (known, known_rx) = channel(capacity.max(1));
        let (others, others_rx) = channel(capacity.max(1));
        self.udp.retain(|(p, _)| *p != port);
        self.udp.push((port, ControlQueue { known, others }));
        ControlReceiver {
            known: known_rx,
            others: others_rx,
        }
    }

    /// Sends every datagram of IP `protocol` (one without ports, such as IGMP) addressed to
    /// the router to the returned receiver, at most `capacity` waiting.
    pub fn bind_protocol(&mut self, protocol: u8, capacity: usize) -> Receiver<LocalDatagram> {
        let (tx, rx) = channel(capacity.max(1));
        self.protocols.retain(|(p, _)| *p != protocol);
        self.protocols.push((protocol, tx));
        rx
    }

    /// Sends TCP segments to the [`PROBE_PORTS`] that `open` marks in use to the returned
    /// receiver, at most `capacity` waiting.
    pub fn bind_probes(&mut self, capacity: usize, open: Arc<OpenPorts>) -> Receiver<TcpSegment> {
        let (tx, rx) = channel(capacity.max(1));
        self.probes = Some((tx, open));
        rx
    }

    /// Sends VRRP advertisements to the returned receiver, at most `capacity` waiting.
    pub fn bind_vrrp(&mut self, capacity: usize) -> Receiver<VrrpDatagram> {
        let (tx, rx) = channel(capacity.max(1));
        self.vrrp = Some(tx);
        rx
    }

    /// The handler of a datagram of `protocol` to our port `dport` (None for protocols
    /// without ports or a header too short to carry one), if anything listens.
    #[inline]
    pub fn handler(&self, protocol: u8, dport: Option<u16>) -> Option<Handler<'_>> {
        match protocol {
            ipv4::PROTO_ICMP => Some(Handler::IcmpEcho),
            ipv4::PROTO_GRE => Some(Handler::WccpReturn),
            ipv4::PROTO_UDP => {
                let port = dport?;
                self.udp
                    .iter()
                    .find(|(p, _)| *p == port)
                    .map(|(_, tx)| Handler::Control(tx))
            }
            ipv4::PROTO_TCP => {
                let port = dport?;
                self.probes
                    .as_ref()
                    .filter(|_| PROBE_PORTS.contains(&port))
                    .map(|(tx, open)| Handler::ProbeAnswer(tx, open))
            }
            ::vrrp::wire::PROTOCOL => self.vrrp.as_ref().map(Handler::Vrrp),
            _ => self
                .protocols
                .iter()
                .find(|(p, _)| *p == protocol)
                .map(|(_, tx)| Handler::Protocol(tx)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn handlers_by_protocol_and_port() {
        let mut t = LocalPorts::default();
        assert!(t.handler(ipv4::PROTO_UDP, Some(2048)).is_none());
        assert!(t.handler(ipv4::PROTO_TCP, Some(60000)).is_none());
        let _udp = t.bind(2048, 4);
        let _tcp = t.bind_probes(4, Arc::default());
        assert!(matches!(
            t.handler(ipv4::PROTO_UDP, Some(2048)),
            Some(Handler::Control(_))
        ));
        assert!(t.handler(ipv4::PROTO_UDP, Some(2049)).is_none());
        assert!(t.handler(ipv4::PROTO_UDP, None).is_none());
        assert!(matches!(
            t.handler(ipv4::PROTO_TCP, Some(*PROBE_PORTS.start())),
            Some(Handler::ProbeAnswer(..))
        ));
        assert!(t.handler(ipv4::PROTO_TCP, Some(80)).is_none());
        assert!(matches!(
            t.handler(ipv4::PROTO_ICMP, None),
            Some(Handler::IcmpEcho)
        ));
        assert!(matches!(
            t.handler(ipv4::PROTO_GRE, None),
            Some(Handler::WccpReturn)
        ));
        assert!(t.handler(132, None).is_none());
        assert!(t.handler(112, None).is_none(), "no VRRP configured");
        let _vrrp = t.bind_vrrp(4);
        assert!(matches!(t.handler(112, None), Some(Handler::Vrrp(_))));
        assert!(t.handler(ipv4::PROTO_IGMP, None).is_none());
        let _igmp = t.bind_protocol(ipv4::PROTO_IGMP, 4);
        assert!(matches!(
            t.handler(ipv4::PROTO_IGMP, None),
            Some(Handler::Protocol(_))
        ));
    }

    fn datagram(payload: &[u8]) -> LocalDatagram {
        LocalDatagram {
            rx_if: 0,
            src: "10.0.3.2:2048".parse().unwrap(),
            dst: "10.0.3.1:2048".parse().unwrap(),
            payload: payload.to_vec(),
            ttl: 64,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn known_peers_are_served_first() {
        let mut t = LocalPorts::default();
        let mut rx = t.bind(2048, 4);
        let Some(Handler::Control(q)) = t.handler(ipv4::PROTO_UDP, Some(2048)) else {
            panic!("bound");
        };
        for _ in 0..4 {
            q.others.try_send(datagram(b"stranger")).unwrap();
        }
        assert!(q.others.try_send(datagram(b"stranger")).is_err(), "bounded");
        // A member's datagram still gets in and jumps the strangers' queue.
        q.known.try_send(datagram(b"member")).unwrap();
        assert_eq!(rx.recv().await.unwrap().payload, b"member");
        assert_eq!(rx.recv().await.unwrap().payload, b"stranger");
        assert_eq!(rx.try_recv().unwrap().payload, b"stranger");
    }
}
