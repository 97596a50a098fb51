//! NAT44 configuration as plain data: rules, the port range, timeouts, and their validation.
//!
//! The router's `conf` crate will parse router.conf into these types; this module only says what
//! a valid configuration is and what the defaults are.

use std::net::Ipv4Addr;

/// An opaque interface id chosen by the router (its interface table index).
pub type IfaceId = u32;

/// An IPv4 prefix: address and length; host bits must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub len: u8,
}

impl Prefix {
    /// A prefix; not checked (see [`Config::validate`]).
    pub const fn new(addr: Ipv4Addr, len: u8) -> Prefix {
        Prefix { addr, len }
    }

    /// The netmask as a u32 (0 for /0, which `u32 << 32` cannot express).
    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len.min(32)))
        }
    }

    /// True when `addr` lies inside the prefix.
    #[inline]
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.addr)
    }
}

/// One NAT rule: sources in `inside` leaving through `outside` are translated to `pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Inside source prefixes this rule translates.
    pub inside: Vec<Prefix>,
    /// The outside interface (the router's id for it).
    pub outside: IfaceId,
    /// Pool addresses (an interface address, or a list); every VID has a port block on each.
    pub pool: Vec<Ipv4Addr>,
}

/// Idle timeouts in seconds, per protocol and TCP state.
///
/// The defaults are VPP's NAT44 defaults, which are the minimums the RFCs recommend:
/// - `tcp_established` 7440 s: RFC 5382 REQ-5 (at least 2 h 4 min);
/// - `tcp_transitory` 240 s: RFC 5382 REQ-5 (at least 4 min, 2·MSL), used for half-open
///   (SYN only), closing (FIN both ways) and reset sessions;
/// - `udp` 300 s: RFC 4787 REQ-5 (at least 2 min, 5 min recommended);
/// - `icmp` 60 s: RFC 5508 REQ-1 (ICMP query mappings at least 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp_established: u32,
    /// TCP connections opening, closing or reset.
    pub tcp_transitory: u32,
    /// UDP sessions.
    pub udp: u32,
    /// ICMP query (echo) sessions.
    pub icmp: u32,
    /// ESP sessions ([`crate::esp`]), like UDP (an SA idle this long has been re-keyed or
    /// torn down).
    pub esp: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_established: 7440,
            tcp_transitory: 240,
            udp: 300,
            icmp: 60,
            esp: 300,
        }
    }
}

/// What a worker does with an inside TCP segment without SYN that has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonSynPolicy {
    /// Drop it and count `non-syn-dropped` (a connection whose mapping expired cannot resume
    /// on a new outside port anyway; the host's own timeout ends it).
    #[default]
    Drop,
    /// Treat it as a set-up request (Linux `nf_conntrack_tcp_loose=1` behaviour).
    Setup,
}

/// The whole NAT44 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Rules, tried in order.
    pub rules: Vec<Rule>,
    /// First outside port (and ICMP identifier) handed out; default 1024.
    pub port_min: u16,
    /// Last outside port handed out; default 65535.
    pub port_max: u16,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Worker count the VID blocks are sized for.
    pub workers: u16,
    /// Sessions a worker's table holds (preallocated); default 65536.
    pub max_sessions: u32,
    /// ESP sessions each of the router's shards of the shared ESP table holds (preallocated;
    /// a remote's sessions share one shard); default 4096.
    pub esp_sessions: u32,
    /// Inside TCP without SYN and without a session.
    pub non_syn: NonSynPolicy,
    /// Mirror records a worker buffers for its backup before it counts an overflow.
    pub mirror_queue: u32,
    /// Ports never handed out: the router's own listeners on its addresses (which may be pool
    /// addresses), so a mapping's replies are never taken for the router's own traffic.
    pub reserved: ReservedPorts,
    /// In a router cluster (issue 16), the key of the distribution-id hash: a new mapping's
    /// outside port then carries its inside endpoint's id ([`crate::cluster`]). `None` on a
    /// router of its own.
    pub cluster_key: Option<u64>,
}

/// Up to [`ReservedPorts::MAX`] port ranges, each for one protocol, that NAT never allocates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReservedPorts {
    ranges: [(u8, u16, u16); ReservedPorts::MAX],
    len: u8,
}

impl ReservedPorts {
    /// Ranges it holds at most.
    pub const MAX: usize = 8;

    /// Adds `lo..=hi` of `proto`; false when full.
    pub fn add(&mut self, proto: u8, lo: u16, hi: u16) -> bool {
        let Some(slot) = self.ranges.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = (proto, lo.min(hi), lo.max(hi));
        self.len += 1;
        true
    }

    /// True when `port` of `proto` is reserved.
    #[inline]
    pub fn contains(&self, proto: u8, port: u16) -> bool {
        self.ranges[..usize::from(self.len)]
            .iter()
            .any(|&(p, lo, hi)| p == proto && (lo..=hi).contains(&port))
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            rules: Vec::new(),
            port_min: 1024,
            port_max: 65535,
            timeouts: Timeouts::default(),
            workers: 1,
            max_sessions: 65536,
            esp_sessions: 4096,
            non_syn: NonSynPolicy::Drop,
            mirror_queue: 4096,
            reserved: ReservedPorts::default(),
            cluster_key: None,
        }
    }
}

/// Why a configuration is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A prefix length above 32.
    #[error("rule {rule}: prefix length {len} is above 32")]
    PrefixLen {
        /// Rule index.
        rule: usize,
        /// The length given.
        len: u8,
    },
    /// A prefix with host bits set.
    #[error("rule {rule}: {addr}/{len} has host bits set")]
    HostBits {
        /// Rule index.
        rule: usize,
        /// The address given.
        addr: Ipv4Addr,
        /// The length given.
        len: u8,
    },
    /// A rule without inside prefixes.
    #[error("rule {0}: no inside prefixes")]
    NoInside(usize),
    /// A rule without pool addresses.
    #[error("rule {0}: the pool is empty")]
    EmptyPool(usize),
    /// A pool address that is unspecified, broadcast, multicast or loopback.
    #[error("rule {rule}: pool address {addr} is not a unicast address")]
    BadPoolAddr {
        /// Rule index.
        rule: usize,
        /// The address given.
        addr: Ipv4Addr,
    },
    /// The same pool address twice (in one rule or two): its ports would be handed out twice.
    #[error("pool address {0} appears twice")]
    DuplicatePoolAddr(Ipv4Addr),
    /// A port range that is empty or starts at 0.
    #[error("port range {min}..={max} is empty or starts at 0")]
    PortRange {
        /// First port.
        min: u16,
        /// Last port.
        max: u16,
    },
    /// Too few ports to give every worker two blocks of at least 16 ports.
    #[error("port range {min}..={max} is too small for {workers} workers (need 32 ports each)")]
    TooFewPorts {
        /// First port.
        min: u16,
        /// Last port.
        max: u16,
        /// Worker count.
        workers: u16,
    },
    /// No workers.
    #[error("workers must be at least 1")]
    NoWorkers,
    /// A zero timeout.
    #[error("timeout {0} must be at least 1 second")]
    ZeroTimeout(&'static str),
    /// A zero session capacity or mirror queue.
    #[error("{0} must be at least 1")]
    ZeroCapacity(&'static str),
}

impl Config {
    /// Checks every rule, the port range against the worker count, timeouts and capacities.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<Ipv4Addr> = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.inside.is_empty() {
                return Err(ConfigError::NoInside(i));
            }
            for p in &r.inside {
                if p.len > 32 {
                    return Err(ConfigError::PrefixLen {
                        rule: i,
                        len: p.len,
                    });
                }
                if u32::from(p.addr) & !p.mask() != 0 {
                    return Err(ConfigError::HostBits {
                        rule: i,
                        addr: p.addr,
                        len: p.len,
                    });
                }
            }
            if r.pool.is_empty() {
                return Err(ConfigError::EmptyPool(i));
            }
            for &a in &r.pool {
                if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
                    return Err(ConfigError::BadPoolAddr { rule: i, addr: a });
                }
                if seen.contains(&a) {
                    return Err(ConfigError::DuplicatePoolAddr(a));
                }
                seen.push(a);
            }
        }
        if self.port_min == 0 || self.port_min > self.port_max {
            return Err(ConfigError::PortRange {
                min: self.port_min,
                max: self.port_max,
            });
        }
        if self.workers == 0 {
            return Err(ConfigError::NoWorkers);
        }
        let ports = u32::from(self.port_max) - u32::from(self.port_min) + 1;
        if ports < 32 * u32::from(self.workers) {
            return Err(ConfigError::TooFewPorts {
                min: self.port_min,
                max: self.port_max,
                workers: self.workers,
            });
        }
        let t = &self.timeouts;
        for (v, name) in [
            (t.tcp_established, "tcp-established"),
            (t.tcp_transitory, "tcp-transitory"),
            (t.udp, "udp"),
            (t.icmp, "icmp"),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroTimeout(name));
            }
        }
        if self.max_sessions == 0 {
            return Err(ConfigError::ZeroCapacity("max-sessions"));
        }
        if self.mirror_queue == 0 {
            return Err(ConfigError::ZeroCapacity("mirror-queue"));
        }
        Ok(())
    }

    /// The first rule translating `src` out of `outside`.
    pub fn rule_for(&self, src: Ipv4Addr, outside: IfaceId) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.outside == outside && r.inside.iter().any(|p| p.contains(src)))
    }

    /// The pool address the NAT gives inside host `src` leaving through `outside` (its rule's
    /// paired-pool choice, [`crate::session::pool_addr_for`]): what an ESP session of `src` uses
    /// ([`crate::esp::EspTable::outbound`]). `None` when no rule translates it.
    pub fn pool_addr_for(&self, src: Ipv4Addr, outside: IfaceId) -> Option<Ipv4Addr> {
        let rule = self.rule_for(src, outside)?;
        crate::session::pool_addr_for(&self.rules[rule].pool, src)
    }

    /// True when `addr` is a pool address of any rule.
    pub fn is_pool_addr(&self, addr: Ipv4Addr) -> bool {
        self.rules.iter().any(|r| r.pool.contains(&addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Config {
        Config {
            rules: vec![Rule {
                inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
                outside: 1,
                pool: vec![Ipv4Addr::new(192, 0, 2, 1)],
            }],
            workers: 4,
            ..Config::default()
        }
    }

    #[test]
    fn defaults_are_the_rfc_minimums() {
        let c = Config::default();
        assert_eq!((c.port_min, c.port_max), (1024, 65535));
        assert_eq!(c.timeouts.tcp_established, 7440);
        assert_eq!(c.timeouts.tcp_transitory, 240);
        assert_eq!(c.timeouts.udp, 300);
        assert_eq!(c.timeouts.icmp, 60);
        assert_eq!(good().validate(), Ok(()));
    }

    #[test]
    fn reserved_ports() {
        let mut r = ReservedPorts::default();
        assert!(!r.contains(17, 2048));
        assert!(r.add(17, 2048, 2048));
        assert!(r.add(6, 61999, 60000));
        assert!(r.contains(17, 2048) && !r.contains(6, 2048));
        assert!(r.contains(6, 60000) && r.contains(6, 61999) && !r.contains(6, 62000));
        for _ in 2..ReservedPorts::MAX {
            assert!(r.add(1, 1, 1));
        }
        assert!(!r.add(1, 2, 2));
    }

    #[test]
    fn prefixes() {
        let p = Prefix::new(Ipv4Addr::new(10, 1, 0, 0), 16);
        assert!(p.contains(Ipv4Addr::new(10, 1, 200, 3)));
        assert!(!p.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!(Prefix::new(Ipv4Addr::UNSPECIFIED, 0).contains(Ipv4Addr::new(1, 2, 3, 4)));
        let c = good();
        assert_eq!(c.rule_for(Ipv4Addr::new(10, 9, 9, 9), 1), Some(0));
        assert_eq!(c.rule_for(Ipv4Addr::new(10, 9, 9, 9), 2), None);
        assert!(c.is_pool_addr(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn rejections_name_the_fault() {
        let mut c = good();
        c.rules[0].inside[0] = Prefix::new(Ipv4Addr::new(10, 0, 0, 1), 8);
        assert!(matches!(c.validate(), Err(ConfigError::HostBits { .. })));
        let mut c = good();
        c.rules[0].inside[0].len = 33;
        assert!(matches!(c.validate(), Err(ConfigError::PrefixLen { .. })));
        let mut c = good();
        c.rules[0].pool.clear();
        assert_eq!(c.validate(), Err(ConfigError::EmptyPool(0)));
        let mut c = good();
        c.rules[0].pool.push(Ipv4Addr::new(192, 0, 2, 1));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DuplicatePoolAddr(_))
        ));
        let mut c = good();
        c.rules[0].pool[0] = Ipv4Addr::BROADCAST;
        assert!(matches!(c.validate(), Err(ConfigError::BadPoolAddr { .. })));
        let mut c = good();
        c.port_min = 0;
        assert!(matches!(c.validate(), Err(ConfigError::PortRange { .. })));
        let mut c = good();
        (c.port_min, c.port_max) = (5000, 5100);
        assert!(matches!(c.validate(), Err(ConfigError::TooFewPorts { .. })));
        let mut c = good();
        c.timeouts.udp = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroTimeout("udp")));
        let mut c = good();
        c.workers = 0;
        assert_eq!(c.validate(), Err(ConfigError::NoWorkers));
        assert!(ConfigError::NoInside(3).to_string().contains("rule 3"));
    }
}
