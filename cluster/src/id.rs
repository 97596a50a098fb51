//! Distribution ids (claim 2, design note §4): which of the 256 ids a packet belongs to, and the
//! NAT port rule that makes the id recoverable from a mapping's outside port (claims 10, 12).
//!
//! The id must be the same for both directions of a flow and on both sides of the NAT, because
//! every node sees every frame and exactly one of them (the id's owner) may handle it:
//!
//! 1. **NAT inbound** (arrived on a NAT outside interface, destination a pool address, TCP/UDP
//!    destination port or ICMP echo-reply identifier in `port_min..=port_max`): the id is the
//!    port's low byte relative to `port_min` ([`id_of_port`]). An ICMP error to a pool address
//!    uses the quoted packet's source port or identifier the same way.
//! 2. **Exactly one endpoint inside** (its address in one of the NAT rules' inside prefixes):
//!    [`endpoint_id`] of the inside endpoint. The NAT gives a new mapping of that endpoint an
//!    outside port whose id is this one ([`port_for_id`]), so rule 1 agrees on the replies.
//! 3. **Otherwise** (routed traffic with no NAT side): [`pair_id`], symmetric in the endpoints.
//! 4. **Fragments** (MF or an offset, the first included): [`addr_pair_id`] on the addresses
//!    only, so every fragment of a datagram agrees (the NAT drops fragments anyway).
//! 5. **ESP** (IP protocol 50, no ports; the NAT keys its sessions by SPI, claim 7): from an
//!    inside address, or arrived on a NAT outside interface for a pool address, the id is
//!    [`nat::cluster::esp_id`] of the remote address (the destination going out, the source
//!    coming back), so both directions of every SA with one remote, and the remote's pending
//!    session the NAT binds an unknown inbound SPI to, are on one node. Other ESP (no NAT side)
//!    takes rule 3.
//!
//! ICMP query messages use their identifier as the port; ICMP errors take the id of the packet
//! they quote (rules 1–3 on the quoted tuple), which is the id of the flow they are about.
//! Packets that are not distributed (ARP, VRRP, frames to a node's own MAC or addresses) never
//! reach [`packet_id`]: the caller decides that from the frame. A packet [`packet_id`] cannot
//! parse gives `None`, and the caller handles it locally as today (it is usually dropped).

use core::net::Ipv4Addr;

use netwire::icmp::{self, Icmpv4Packet};
use netwire::ipv4::{Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use netwire::{TcpPacket, UdpPacket};

/// A distribution id: one of 256, like a WCCP bucket.
pub type Id = u8;

/// Number of distribution ids.
pub const IDS: usize = 256;

/// An IPv4 prefix (address and length), e.g. a NAT rule's inside source range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Network address (host bits are ignored).
    pub addr: Ipv4Addr,
    /// Prefix length, 0–32 (larger values count as 32).
    pub len: u8,
}

impl Prefix {
    /// True when `a` lies inside the prefix.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let len = u32::from(self.len.min(32));
        if len == 0 {
            return true;
        }
        let mask = u32::MAX << (32 - len);
        u32::from(a) & mask == u32::from(self.addr) & mask
    }
}

/// What the id function needs: the same on every node (the hash key is derived from the
/// cluster's shared key file, the rest from the NAT configuration every node shares and the
/// `config` record in etcd pins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdConfig {
    /// Key of the keyed hash (random at cluster creation, so outsiders cannot aim at one node).
    pub key: u64,
    /// First port of the NAT's outside port range.
    pub port_min: u16,
    /// Last port of the NAT's outside port range.
    pub port_max: u16,
    /// The NAT pool addresses (the cluster's outside addresses).
    pub pool: Vec<Ipv4Addr>,
    /// The NAT rules' inside source prefixes; empty without NAT.
    pub inside: Vec<Prefix>,
}

impl IdConfig {
    /// A configuration without NAT: every packet takes rule 3 (or 4).
    pub fn routed(key: u64) -> IdConfig {
        IdConfig {
            key,
            port_min: 1024,
            port_max: 65535,
            pool: Vec::new(),
            inside: Vec::new(),
        }
    }

    fn is_inside(&self, a: Ipv4Addr) -> bool {
        self.inside.iter().any(|p| p.contains(a))
    }

    fn is_pool(&self, a: Ipv4Addr) -> bool {
        self.pool.contains(&a)
    }

    fn in_range(&self, port: u16) -> bool {
        (self.port_min..=self.port_max).contains(&port)
    }
}

/// Domain tags of the pair hashes (the endpoint hash, nat's, uses tag 1).
const TAG_PAIR: u64 = 2 << 8;
const TAG_ADDRS: u64 = 3 << 8;

pub use nat::cluster::{endpoint_id, hash_words};

#[inline]
fn ep(addr: Ipv4Addr, port: u16) -> u64 {
    nat::cluster::endpoint_word(addr, port)
}

/// The id of a flow between two endpoints with no NAT side (rule 3): symmetric, so both
/// directions agree.
pub fn pair_id(key: u64, proto: u8, a: (Ipv4Addr, u16), b: (Ipv4Addr, u16)) -> Id {
    let (x, y) = (ep(a.0, a.1), ep(b.0, b.1));
    hash_words(key, &[TAG_PAIR | u64::from(proto), x.min(y), x.max(y)])
}

/// The id of a fragment (rule 4): addresses only, symmetric.
pub fn addr_pair_id(key: u64, proto: u8, a: Ipv4Addr, b: Ipv4Addr) -> Id {
    let (x, y) = (u64::from(u32::from(a)), u64::from(u32::from(b)));
    hash_words(key, &[TAG_ADDRS | u64::from(proto), x.min(y), x.max(y)])
}

/// The id an outside port (or ICMP identifier) encodes: its low byte relative to `port_min`
/// (the NAT's own rule, [`nat::cluster::id_of_port`], which allocates such ports).
pub use nat::cluster::id_of_port;

/// The `k`-th outside port carrying `id`: `port_min + id + 256·k`, or `None` past 65535 (the
/// caller also checks its own `port_max`).
pub fn port_for_id(port_min: u16, id: Id, k: u16) -> Option<u16> {
    let p = u32::from(port_min) + u32::from(id) + 256 * u32::from(k);
    u16::try_from(p).ok()
}

/// The id of the IPv4 packet `packet` (the bytes from the IPv4 header on), by the module's
/// rules; `arrived_on_nat_outside` says whether it came in on a NAT outside interface. `None`:
/// the packet does not parse, and the caller handles it locally.
pub fn packet_id(cfg: &IdConfig, packet: &[u8], arrived_on_nat_outside: bool) -> Option<Id> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.protocol());
    if ip.is_fragment() {
        return Some(addr_pair_id(cfg.key, proto, src, dst));
    }
    let l4 = ip.payload();
    let (sport, dport) = match proto {
        PROTO_TCP => {
            let t = TcpPacket::new_checked(l4).ok()?;
            (t.src_port(), t.dst_port())
        }
        PROTO_UDP => {
            let u = UdpPacket::new_checked(l4).ok()?;
            (u.src_port(), u.dst_port())
        }
        nat::esp::PROTO_ESP => {
            if arrived_on_nat_outside && cfg.is_pool(dst) {
                return Some(nat::cluster::esp_id(cfg.key, src));
            }
            if cfg.is_inside(src) && !cfg.is_inside(dst) {
                return Some(nat::cluster::esp_id(cfg.key, dst));
            }
            (0, 0)
        }
        PROTO_ICMP => {
            let m = Icmpv4Packet::new_checked(l4).ok()?;
            if icmp::is_error(m.msg_type()) {
                return error_id(cfg, &m, dst, arrived_on_nat_outside);
            }
            // A query: the identifier is the port on both sides.
            let ident = m.echo_ident();
            if arrived_on_nat_outside
                && m.msg_type() == icmp::ECHO_REPLY
                && cfg.is_pool(dst)
                && cfg.in_range(ident)
            {
                return Some(id_of_port(cfg.port_min, ident));
            }
            (ident, ident)
        }
        _ => (0, 0),
    };
    if arrived_on_nat_outside
        && matches!(proto, PROTO_TCP | PROTO_UDP)
        && cfg.is_pool(dst)
        && cfg.in_range(dport)
    {
        return Some(id_of_port(cfg.port_min, dport));
    }
    Some(tuple_id(cfg, proto, (src, sport), (dst, dport)))
}

/// The id of a flow's packets from `s` to `d` that did not arrive on a NAT outside
/// interface (rules 2 and 3): how state keyed by a flow (WCCP flow affinity) is selected by id.
pub fn flow_id(cfg: &IdConfig, proto: u8, s: (Ipv4Addr, u16), d: (Ipv4Addr, u16)) -> Id {
    tuple_id(cfg, proto, s, d)
}

/// Rules 2 and 3 on a tuple.
fn tuple_id(cfg: &IdConfig, proto: u8, s: (Ipv4Addr, u16), d: (Ipv4Addr, u16)) -> Id {
    match (cfg.is_inside(s.0), cfg.is_inside(d.0)) {
        (true, false) => endpoint_id(cfg.key, proto, s.0, s.1),
        (false, true) => endpoint_id(cfg.key, proto, d.0, d.1),
        _ => pair_id(cfg.key, proto, s, d),
    }
}

/// An ICMP error takes the id of the packet it quotes.
fn error_id(
    cfg: &IdConfig,
    m: &Icmpv4Packet<&[u8]>,
    outer_dst: Ipv4Addr,
    arrived_on_nat_outside: bool,
) -> Option<Id> {
    let inner = m.invoking().ok()?;
    let proto = m.invoking_protocol().ok()?;
    let (qsrc, qdst) = (m.invoking_src_addr().ok()?, m.invoking_dst_addr().ok()?);
    let hlen = usize::from(inner.first()? & 0x0f) * 4;
    let frag = u16::from_be_bytes([*inner.get(6)?, *inner.get(7)?]) & 0x3fff;
    if frag != 0 {
        return Some(addr_pair_id(cfg.key, proto, qsrc, qdst));
    }
    let (qs, qd) = match proto {
        PROTO_TCP | PROTO_UDP => m.invoking_ports().ok()?,
        PROTO_ICMP => {
            // The quoted query's identifier (checked: the quote holds 8 octets past its header).
            let id = u16::from_be_bytes([*inner.get(hlen + 4)?, *inner.get(hlen + 5)?]);
            (id, id)
        }
        _ => (0, 0),
    };
    // Rule 1 on the quote: our translated packet (source = pool address, port in range) that
    // came back as an error from outside.
    if arrived_on_nat_outside
        && cfg.is_pool(outer_dst)
        && cfg.is_pool(qsrc)
        && matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_ICMP)
        && cfg.in_range(qs)
    {
        return Some(id_of_port(cfg.port_min, qs));
    }
    Some(tuple_id(cfg, proto, (qsrc, qs), (qdst, qd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_rule_round_trip_and_bounds() {
        assert_eq!(port_for_id(1024, 5, 0), Some(1029));
        assert_eq!(port_for_id(1024, 5, 3), Some(1024 + 5 + 768));
        assert_eq!(id_of_port(1024, 1024 + 5 + 768), 5);
        assert_eq!(port_for_id(65000, 255, 2), None);
    }

    #[test]
    fn prefix_contains() {
        let p = Prefix {
            addr: Ipv4Addr::new(10, 0, 1, 0),
            len: 24,
        };
        assert!(p.contains(Ipv4Addr::new(10, 0, 1, 200)));
        assert!(!p.contains(Ipv4Addr::new(10, 0, 2, 1)));
        let all = Prefix {
            addr: Ipv4Addr::UNSPECIFIED,
            len: 0,
        };
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
    }

    /// An IPv4 ESP packet `src` → `dst` with SPI `spi`.
    fn esp(src: [u8; 4], dst: [u8; 4], spi: u32) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 16];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&36u16.to_be_bytes());
        p[8] = 64;
        p[9] = 50;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..24].copy_from_slice(&spi.to_be_bytes());
        p
    }

    #[test]
    fn both_directions_of_every_esp_sa_with_one_remote_share_the_remotes_id() {
        let cfg = IdConfig {
            key: 99,
            port_min: 1024,
            port_max: 65535,
            pool: vec![Ipv4Addr::new(192, 0, 2, 1)],
            inside: vec![Prefix {
                addr: Ipv4Addr::new(10, 0, 1, 0),
                len: 24,
            }],
        };
        let remote = Ipv4Addr::new(198, 51, 100, 2);
        let want = nat::cluster::esp_id(99, remote);
        // Two inside hosts' SAs going out, whatever their SPI, and the answers to the pool.
        for (inside, spi) in [([10, 0, 1, 2], 0x1000), ([10, 0, 1, 3], 0x7777_0001)] {
            let out = esp(inside, remote.octets(), spi);
            assert_eq!(packet_id(&cfg, &out, false), Some(want));
        }
        let back = esp(remote.octets(), [192, 0, 2, 1], 0x2000);
        assert_eq!(packet_id(&cfg, &back, true), Some(want));
        // The same packet not on a NAT outside interface is routed ESP: the pair rule.
        let routed = esp([10, 0, 9, 1], remote.octets(), 1);
        assert_eq!(
            packet_id(&cfg, &routed, false),
            Some(pair_id(
                99,
                50,
                (Ipv4Addr::new(10, 0, 9, 1), 0),
                (remote, 0)
            ))
        );
        // Another remote, most likely another id; the key changes it.
        assert_ne!(nat::cluster::esp_id(100, remote), want);
    }

    #[test]
    fn hashes_are_keyed_and_spread() {
        let a = Ipv4Addr::new(10, 0, 1, 10);
        assert_ne!(
            (0..32)
                .map(|k| endpoint_id(k, 6, a, 4000))
                .collect::<Vec<_>>(),
            vec![endpoint_id(0, 6, a, 4000); 32]
        );
        let mut seen = [false; 256];
        for p in 0..2048u16 {
            seen[usize::from(endpoint_id(7, 17, a, p))] = true;
        }
        assert!(seen.iter().filter(|s| **s).count() > 240);
    }
}
