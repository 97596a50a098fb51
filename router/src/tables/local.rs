//! The local port table: what the router itself listens to. Maps (protocol, destination port)
//! of a datagram addressed to one of our addresses to the handler the local-delivery stage
//! hands it to: ICMP echo (answered in place), UDP to a control-plane port (WCCP's 2048), TCP to
//! the prober's ports (health-check answers), GRE (returns from WCCP caches).
//!
//! Bound once at start, before the workers run; the queues behind the handlers are bounded
//! (a flood fills them and is then dropped and counted, `local-queue-full`).

use super::IfId;
use crate::probe::{TcpSegment, PROBE_PORTS};
use crate::wire::ipv4;
use std::net::SocketAddrV4;
use tokio::sync::mpsc::{channel, Receiver, Sender};

/// A UDP datagram addressed to one of our bound ports.
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

/// Who handles a datagram addressed to the router.
#[derive(Debug, Clone, Copy)]
pub enum Handler<'a> {
    /// ICMP echo request: answered in place.
    IcmpEcho,
    /// UDP to a control-plane port: its queue.
    Control(&'a Sender<LocalDatagram>),
    /// TCP to a probe port: the prober's queue.
    ProbeAnswer(&'a Sender<TcpSegment>),
    /// GRE: a WCCP cache returning a redirected packet.
    WccpReturn,
}

/// The ports the control plane listens on, fixed at start.
#[derive(Debug, Default, Clone)]
pub struct LocalPorts {
    udp: Vec<(u16, Sender<LocalDatagram>)>,
    probes: Option<Sender<TcpSegment>>,
}

impl LocalPorts {
    /// Binds UDP `port` on every router address; datagrams arrive on the returned receiver, at
    /// most `capacity` waiting.
    pub fn bind(&mut self, port: u16, capacity: usize) -> Receiver<LocalDatagram> {
        let (tx, rx) = channel(capacity.max(1));
        self.udp.retain(|(p, _)| *p != port);
        self.udp.push((port, tx));
        rx
    }

    /// Sends TCP segments to [`PROBE_PORTS`] to the returned receiver, at most `capacity`
    /// waiting.
    pub fn bind_probes(&mut self, capacity: usize) -> Receiver<TcpSegment> {
        let (tx, rx) = channel(capacity.max(1));
        self.probes = Some(tx);
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
                    .map(Handler::ProbeAnswer)
            }
            _ => None,
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
        let _tcp = t.bind_probes(4);
        assert!(matches!(
            t.handler(ipv4::PROTO_UDP, Some(2048)),
            Some(Handler::Control(_))
        ));
        assert!(t.handler(ipv4::PROTO_UDP, Some(2049)).is_none());
        assert!(t.handler(ipv4::PROTO_UDP, None).is_none());
        assert!(matches!(
            t.handler(ipv4::PROTO_TCP, Some(*PROBE_PORTS.start())),
            Some(Handler::ProbeAnswer(_))
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
    }
}
