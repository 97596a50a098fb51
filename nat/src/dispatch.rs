//! The line interface's decision (seed claims 2, 5, 6, 12, 14): which worker a packet goes to,
//! as a pure function of the packet, its direction, the VID table and the flow table.
//!
//! - **Outside → pool address.** The VID is in the destination port (TCP/UDP), the identifier
//!   (echo reply) or the quoted packet's source port or identifier (ICMP error): the packet goes
//!   to that VID's owner, or to its backup when the owner is not operational, without the
//!   switch processor. Other traffic to a pool address (ports outside the VID blocks, echo
//!   requests, other protocols) is `NotNat`: the router's own.
//! - **Inside, leaving through a NAT interface.** The flow table, keyed by the inside endpoint
//!   (protocol, address, port) and installed by the switch processor when it set the endpoint's
//!   mapping up, gives the VID. Keying by endpoint rather than 5-tuple follows endpoint-
//!   independent mapping: every flow of an endpoint shares its mapping, so it must reach the
//!   worker that holds it. Without an entry, a TCP SYN (without ACK), a UDP datagram or an
//!   echo request is a set-up request for the switch processor; other TCP segments follow
//!   [`NonSynPolicy`]; ICMP errors about unknown sessions are dropped.

use crate::config::{Config, IfaceId, NonSynPolicy};
use crate::hash::MixState;
use crate::session::Endpoint;
use crate::translate::{self, Kind, Skip};
use crate::vid::{Vid, VidTable, WorkerId};
use netwire::ipv4::{Ipv4Packet, PROTO_TCP};
use netwire::tcp::flags;
use std::collections::HashMap;

/// Where a packet was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the inside, routed out of this NAT outside interface.
    Outbound(IfaceId),
    /// Arrived on a NAT outside interface.
    Inbound,
}

/// Why the line interface drops a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchDrop {
    /// Truncated or inconsistent headers.
    Malformed,
    /// A fragment (see `translate`).
    Fragment,
    /// A protocol or ICMP type NAT does not translate, from a NAT'd source.
    Unsupported,
    /// Inside TCP without SYN and without a session (policy `Drop`).
    NonSyn,
    /// An ICMP error about no known session.
    NoSession,
    /// The VID's owner and backup are both down.
    WorkerDown,
}

/// The line interface's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// A new session: to the switch processor.
    SetupRequest,
    /// To this worker, for the session of this VID.
    ToWorker {
        /// The worker.
        worker: WorkerId,
        /// The VID the decision went by (the worker checks it owns it).
        vid: Vid,
    },
    /// Not NAT traffic: the router handles it as before.
    NotNat,
    /// Dropped, for a reason.
    Drop(DispatchDrop),
}

/// The switch processor's flow table: inside endpoint → VID.
#[derive(Debug, Clone)]
pub struct FlowTable {
    map: HashMap<u64, Vid, MixState>,
}

impl FlowTable {
    /// A table with room for `cap` endpoints, hashing with `seed`.
    pub fn new(cap: usize, seed: u64) -> FlowTable {
        FlowTable {
            map: HashMap::with_capacity_and_hasher(cap, MixState::new(seed)),
        }
    }

    /// Installs (or re-points) an endpoint.
    pub fn install(&mut self, ep: Endpoint, vid: Vid) {
        self.map.insert(ep.key(), vid);
    }

    /// Removes an endpoint (its mapping expired).
    pub fn remove(&mut self, ep: Endpoint) -> Option<Vid> {
        self.map.remove(&ep.key())
    }

    /// The VID of an endpoint.
    #[inline]
    pub fn get(&self, ep: Endpoint) -> Option<Vid> {
        self.map.get(&ep.key()).copied()
    }

    /// Removes every endpoint of `vid` (the VID was lost with its sessions).
    pub fn remove_vid(&mut self, vid: Vid) {
        self.map.retain(|_, v| *v != vid);
    }

    /// Every endpoint and its VID (a snapshot for a worker whose replica starts empty).
    pub fn entries(&self) -> Vec<(Endpoint, Vid)> {
        self.map
            .iter()
            .map(|(&k, &v)| {
                let ep = Endpoint {
                    proto: (k >> 48) as u8,
                    addr: std::net::Ipv4Addr::from((k >> 16) as u32),
                    port: k as u16,
                };
                (ep, v)
            })
            .collect()
    }

    /// Endpoints installed.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Decides where `pkt` (an IPv4 packet, header first) goes.
#[inline]
pub fn dispatch(
    pkt: &[u8],
    dir: Direction,
    cfg: &Config,
    vids: &VidTable,
    flows: &FlowTable,
) -> Dispatch {
    let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
        return match dir {
            Direction::Inbound => Dispatch::NotNat,
            Direction::Outbound(_) => Dispatch::Drop(DispatchDrop::Malformed),
        };
    };
    match dir {
        Direction::Inbound => {
            if !cfg.is_pool_addr(ip.dst_addr()) {
                return Dispatch::NotNat;
            }
            let f = match translate::parse(pkt) {
                Ok(f) => f,
                Err(Skip::Fragment) => return Dispatch::Drop(DispatchDrop::Fragment),
                Err(Skip::Malformed) => return Dispatch::Drop(DispatchDrop::Malformed),
                Err(Skip::Unsupported) => return Dispatch::NotNat,
            };
            let port = match f.kind {
                Kind::Plain | Kind::EchoReply => f.dport,
                Kind::Error(q) if q.src == f.dst => q.sport,
                _ => return Dispatch::NotNat,
            };
            match vids.geometry.vid_of_port(port) {
                Some(vid) => to_worker(vids, vid),
                None => Dispatch::NotNat,
            }
        }
        Direction::Outbound(iface) => {
            if cfg.rule_for(ip.src_addr(), iface).is_none() {
                return Dispatch::NotNat;
            }
            let f = match translate::parse(pkt) {
                Ok(f) => f,
                Err(Skip::Fragment) => return Dispatch::Drop(DispatchDrop::Fragment),
                Err(Skip::Malformed) => return Dispatch::Drop(DispatchDrop::Malformed),
                Err(Skip::Unsupported) => return Dispatch::Drop(DispatchDrop::Unsupported),
            };
            let ep = match f.kind {
                Kind::Plain | Kind::EchoRequest => Endpoint {
                    proto: f.proto,
                    addr: f.src,
                    port: f.sport,
                },
                // An inside host's error about a packet it received: the quoted destination is
                // the endpoint.
                Kind::Error(q) => {
                    let ep = Endpoint {
                        proto: q.proto,
                        addr: q.dst,
                        port: q.dport,
                    };
                    return match flows.get(ep) {
                        Some(vid) => to_worker(vids, vid),
                        None => Dispatch::Drop(DispatchDrop::NoSession),
                    };
                }
                Kind::EchoReply => return Dispatch::Drop(DispatchDrop::Unsupported),
            };
            if let Some(vid) = flows.get(ep) {
                return to_worker(vids, vid);
            }
            if is_setup(f.proto, f.tcp_flags, cfg.non_syn) {
                Dispatch::SetupRequest
            } else {
                Dispatch::Drop(DispatchDrop::NonSyn)
            }
        }
    }
}

/// True when a packet of an endpoint without a mapping may create one.
#[inline]
pub fn is_setup(proto: u8, tcp_flags: u8, policy: NonSynPolicy) -> bool {
    proto != PROTO_TCP
        || tcp_flags & (flags::SYN | flags::ACK | flags::RST) == flags::SYN
        || policy == NonSynPolicy::Setup
}

#[inline]
fn to_worker(vids: &VidTable, vid: Vid) -> Dispatch {
    match vids.worker_for(vid) {
        Some(worker) => Dispatch::ToWorker { worker, vid },
        None => Dispatch::Drop(DispatchDrop::WorkerDown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Prefix, Rule};
    use crate::translate::build;
    use crate::vid::{Geometry, VidManager};
    use netwire::icmp;
    use std::net::Ipv4Addr;

    const I: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const P: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const R: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    fn setup() -> (Config, VidManager) {
        let cfg = Config {
            rules: vec![Rule {
                inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
                outside: 1,
                pool: vec![P],
            }],
            workers: 2,
            ..Config::default()
        };
        let mut m = VidManager::new(Geometry::new(1024, 65535, 2), 2);
        m.request_vid(0).unwrap();
        m.request_vid(1).unwrap();
        (cfg, m)
    }

    #[test]
    fn entries_give_back_the_endpoints() {
        let mut t = FlowTable::new(4, 1);
        let ep = Endpoint {
            proto: 6,
            addr: std::net::Ipv4Addr::new(10, 1, 2, 3),
            port: 4567,
        };
        t.install(ep, 3);
        assert_eq!(t.entries(), vec![(ep, 3)]);
    }

    #[test]
    fn inside_packets() {
        let (cfg, m) = setup();
        let t = m.table();
        let mut flows = FlowTable::new(16, 1);
        let out = Direction::Outbound(1);
        let syn = build::tcp((I, 4000), (R, 80), flags::SYN, 0);
        let ack = build::tcp((I, 4000), (R, 80), flags::ACK, 0);
        assert_eq!(
            dispatch(&syn, out, &cfg, &t, &flows),
            Dispatch::SetupRequest
        );
        assert_eq!(
            dispatch(&ack, out, &cfg, &t, &flows),
            Dispatch::Drop(DispatchDrop::NonSyn)
        );
        let mut loose = cfg.clone();
        loose.non_syn = NonSynPolicy::Setup;
        assert_eq!(
            dispatch(&ack, out, &loose, &t, &flows),
            Dispatch::SetupRequest
        );
        let udp = build::udp((I, 53), (R, 53), 4, false);
        assert_eq!(
            dispatch(&udp, out, &cfg, &t, &flows),
            Dispatch::SetupRequest
        );
        flows.install(
            Endpoint {
                proto: PROTO_TCP,
                addr: I,
                port: 4000,
            },
            1,
        );
        assert_eq!(
            dispatch(&ack, out, &cfg, &t, &flows),
            Dispatch::ToWorker { worker: 1, vid: 1 }
        );
        // Other interface, or a source no rule covers: not NAT.
        assert_eq!(
            dispatch(&ack, Direction::Outbound(2), &cfg, &t, &flows),
            Dispatch::NotNat
        );
        let other = build::udp((Ipv4Addr::new(172, 16, 0, 1), 53), (R, 53), 4, false);
        assert_eq!(dispatch(&other, out, &cfg, &t, &flows), Dispatch::NotNat);
    }

    #[test]
    fn outside_packets_follow_the_vid_then_the_backup() {
        let (cfg, m) = setup();
        let mut t = m.table();
        let flows = FlowTable::new(16, 1);
        let port = 1024 + 8192 + 77; // VID 1, owner 1, backup 0
        let reply = build::tcp((R, 80), (P, port), flags::ACK, 0);
        assert_eq!(
            dispatch(&reply, Direction::Inbound, &cfg, &t, &flows),
            Dispatch::ToWorker { worker: 1, vid: 1 }
        );
        t.operational[1] = false;
        assert_eq!(
            dispatch(&reply, Direction::Inbound, &cfg, &t, &flows),
            Dispatch::ToWorker { worker: 0, vid: 1 }
        );
        t.operational[0] = false;
        assert_eq!(
            dispatch(&reply, Direction::Inbound, &cfg, &t, &flows),
            Dispatch::Drop(DispatchDrop::WorkerDown)
        );
        let t = m.table();
        // Below the range (the router's own ssh), echo requests, other addresses: not NAT.
        let ssh = build::tcp((R, 5555), (P, 22), flags::SYN, 0);
        assert_eq!(
            dispatch(&ssh, Direction::Inbound, &cfg, &t, &flows),
            Dispatch::NotNat
        );
        let ping = build::echo(R, P, true, 9, 1);
        assert_eq!(
            dispatch(&ping, Direction::Inbound, &cfg, &t, &flows),
            Dispatch::NotNat
        );
        let elsewhere = build::tcp((R, 80), (I, port), flags::ACK, 0);
        assert_eq!(
            dispatch(&elsewhere, Direction::Inbound, &cfg, &t, &flows),
            Dispatch::NotNat
        );
        // Echo replies by identifier, errors by the quoted source port.
        let pong = build::echo(R, P, false, port, 1);
        assert_eq!(
            dispatch(&pong, Direction::Inbound, &cfg, &t, &flows),
            Dispatch::ToWorker { worker: 1, vid: 1 }
        );
        let sent = build::udp((P, 1024 + 5), (R, 33434), 8, false);
        let err = build::error(R, P, icmp::TIME_EXCEEDED, 0, 0, &sent, 28);
        assert_eq!(
            dispatch(&err, Direction::Inbound, &cfg, &t, &flows),
            Dispatch::ToWorker { worker: 0, vid: 0 }
        );
    }
}
