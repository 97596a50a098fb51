//! Per-service configuration of the router engine: plain data with defaults, which the
//! router's config layer fills from TOML.

use core::net::Ipv4Addr;

use crate::engine::ConfigError;
use crate::hash::BitOrder;
use crate::security::{Password, Security};
use crate::timer::TimerConfig;
use crate::wire::{AssignmentMethods, ForwardingMethods, ReturnMethods, ServiceInfo, ServiceType};

/// An IPv4 prefix of a group list: the caches allowed to join (a single cache is a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CachePrefix {
    network: Ipv4Addr,
    len: u8,
}

impl CachePrefix {
    /// The prefix `addr/len` (host bits cleared); `None` when `len` exceeds 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then(|| Self {
            network: Ipv4Addr::from(u32::from(addr) & Self::mask(len)),
            len,
        })
    }

    /// The prefix holding only `addr`.
    pub fn host(addr: Ipv4Addr) -> Self {
        Self {
            network: addr,
            len: 32,
        }
    }

    /// Network address (host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// Prefix length, 0..=32.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True when `addr` lies inside the prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & Self::mask(self.len) == u32::from(self.network)
    }

    fn mask(len: u8) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0)
    }
}

impl From<Ipv4Addr> for CachePrefix {
    fn from(addr: Ipv4Addr) -> Self {
        Self::host(addr)
    }
}

/// One service group a router takes part in (reference §3.2, §3.10, §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterServiceConfig {
    /// Service ID (0–255; 0 = standard HTTP).
    pub service_id: u8,
    /// Standard (well-known) or dynamic.
    pub service_type: ServiceType,
    /// Dynamic services: a pinned definition (protocol, priority, flags, ports) that caches
    /// must announce exactly; `None` learns it from the first cache that completes the
    /// two-way handshake and rejects conflicting ones until the group empties (\[R1\] §3.2). Ignored for standard services.
    pub definition: Option<ServiceInfo>,
    /// Security (MD5 password) of this group (reference §3.1).
    pub security: Security,
    /// Forwarding methods offered; L2 only to caches the driver marks L2-adjacent (§5).
    pub forwarding: ForwardingMethods,
    /// Packet return methods offered; L2 only to L2-adjacent caches.
    pub packet_return: ReturnMethods,
    /// Assignment methods offered; the first usable cache fixes the group's (\[R1\]).
    pub assignment: AssignmentMethods,
    /// Caches allowed to join (`None` = any), like IOS `group-list`: addresses or prefixes.
    pub group_list: Option<Vec<CachePrefix>>,
    /// Bit order of the bucket bitmaps reported in I_SEE_YOU (reference §6.3).
    pub bit_order: BitOrder,
    /// Protocol timers (reference §1) while no cache has negotiated others.
    pub timers: TimerConfig,
    /// Whether caches may negotiate non-default TRANSMIT_T and timer scales (\[R1\]
    /// capabilities 4 and 5) within the ranges \[R1\] suggests; off, only the defaults.
    pub fast_timers: bool,
    /// The service group's multicast address (reference §1): caches may send their
    /// HERE_I_AMs and REDIRECT_ASSIGNs to it, and are answered by a scheduled I_SEE_YOU to it
    /// (every 0.9 × TRANSMIT_T ± 10 %). `None`: unicast only.
    pub multicast_group: Option<Ipv4Addr>,
}

/// True when `group` may be a service group's multicast address: in 224.0.0.0/4 but not in
/// 224.0.0.0/24, the link-local control block (IGMP, routing protocols) that hosts never
/// join with IGMP reports.
pub fn valid_multicast_group(group: Ipv4Addr) -> bool {
    group.is_multicast() && group.octets()[..3] != [224, 0, 0]
}

impl RouterServiceConfig {
    /// A standard service with the defaults: no password, GRE or L2 forwarding and return,
    /// hash or mask assignment, any cache, MSB-first bitmaps, reference timers (caches may
    /// negotiate faster ones).
    pub fn standard(service_id: u8) -> Self {
        Self {
            service_id,
            service_type: ServiceType::Standard,
            definition: None,
            security: Security::None,
            forwarding: ForwardingMethods::GRE | ForwardingMethods::L2,
            packet_return: ReturnMethods::GRE | ReturnMethods::L2,
            assignment: AssignmentMethods::HASH | AssignmentMethods::MASK,
            group_list: None,
            bit_order: BitOrder::default(),
            timers: TimerConfig::default(),
            fast_timers: true,
            multicast_group: None,
        }
    }

    /// A dynamic service learnt from the first cache, with the same defaults.
    pub fn dynamic(service_id: u8) -> Self {
        Self {
            service_type: ServiceType::Dynamic,
            ..Self::standard(service_id)
        }
    }

    /// The same with MD5 security and this password (truncated/padded to 8 octets, §3.1).
    pub fn with_password(mut self, secret: &[u8]) -> Self {
        self.security = Security::Md5(Password::new(secret));
        self
    }

    /// Checks that the fields agree with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(d) = &self.definition {
            if d.service_id != self.service_id || d.service_type != self.service_type {
                return Err(ConfigError::Invalid(
                    "the pinned definition names another service",
                ));
            }
        }
        if matches!(self.service_type, ServiceType::Unknown(_)) {
            return Err(ConfigError::Invalid(
                "service type must be standard or dynamic",
            ));
        }
        self.timers.validate()?;
        if self
            .multicast_group
            .is_some_and(|g| !valid_multicast_group(g))
        {
            return Err(ConfigError::Invalid(
                "the multicast group must be in 224.0.0.0/4, outside 224.0.0.0/24",
            ));
        }
        let known_fwd = ForwardingMethods::GRE | ForwardingMethods::L2;
        let known_ret = ReturnMethods::GRE | ReturnMethods::L2;
        let known_asg = AssignmentMethods::HASH | AssignmentMethods::MASK;
        if !self.forwarding.intersects(known_fwd)
            || !self.packet_return.intersects(known_ret)
            || !self.assignment.intersects(known_asg)
        {
            return Err(ConfigError::Invalid(
                "every capability needs at least one known method",
            ));
        }
        Ok(())
    }

    /// The definition fixed by configuration: the standard service itself, or a pinned
    /// dynamic definition.
    pub(crate) fn fixed_definition(&self) -> Option<ServiceInfo> {
        match self.service_type {
            ServiceType::Standard => Some(ServiceInfo::standard(self.service_id)),
            ServiceType::Dynamic | ServiceType::Unknown(_) => self.definition.clone(),
        }
    }

    /// True when `cache` may join (group list).
    pub(crate) fn admits(&self, cache: Ipv4Addr) -> bool {
        self.group_list
            .as_ref()
            .map_or(true, |list| list.iter().any(|p| p.contains(cache)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = RouterServiceConfig::standard(0);
        c.validate().unwrap();
        assert_eq!(c.fixed_definition(), Some(ServiceInfo::standard(0)));
        assert!(c.admits(Ipv4Addr::new(10, 0, 0, 2)));
        let d = RouterServiceConfig::dynamic(90).with_password(b"secret");
        assert_eq!(d.fixed_definition(), None);
        assert_eq!(d.security, Security::Md5(Password::new(b"secret")));
        let bad = RouterServiceConfig {
            definition: Some(ServiceInfo::standard(1)),
            ..RouterServiceConfig::dynamic(90)
        };
        assert!(bad.validate().is_err());
        let none = RouterServiceConfig {
            forwarding: ForwardingMethods::empty(),
            ..RouterServiceConfig::standard(0)
        };
        assert!(none.validate().is_err());
        let listed = RouterServiceConfig {
            group_list: Some(vec![Ipv4Addr::new(10, 0, 0, 3).into()]),
            ..RouterServiceConfig::standard(0)
        };
        assert!(!listed.admits(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(listed.admits(Ipv4Addr::new(10, 0, 0, 3)));
        for (group, ok) in [
            ([224, 1, 1, 1], true),
            ([239, 255, 0, 1], true),
            ([224, 0, 1, 0], true),
            ([224, 0, 0, 5], false),
            ([10, 0, 0, 1], false),
            ([240, 0, 0, 1], false),
        ] {
            let c = RouterServiceConfig {
                multicast_group: Some(group.into()),
                ..RouterServiceConfig::standard(0)
            };
            assert_eq!(c.validate().is_ok(), ok, "{group:?}");
        }
    }

    #[test]
    fn group_list_prefixes() {
        let net = CachePrefix::new(Ipv4Addr::new(10, 0, 3, 77), 24).unwrap();
        assert_eq!(net.network(), Ipv4Addr::new(10, 0, 3, 0));
        assert_eq!(net.prefix_len(), 24);
        let listed = RouterServiceConfig {
            group_list: Some(vec![net, Ipv4Addr::new(10, 9, 0, 1).into()]),
            ..RouterServiceConfig::standard(0)
        };
        assert!(listed.admits(Ipv4Addr::new(10, 0, 3, 1)));
        assert!(listed.admits(Ipv4Addr::new(10, 0, 3, 255)));
        assert!(listed.admits(Ipv4Addr::new(10, 9, 0, 1)));
        assert!(!listed.admits(Ipv4Addr::new(10, 0, 4, 1)));
        assert!(!listed.admits(Ipv4Addr::new(10, 9, 0, 2)));
        let any = CachePrefix::new(Ipv4Addr::new(1, 2, 3, 4), 0).unwrap();
        assert!(any.contains(Ipv4Addr::new(203, 0, 113, 9)));
        assert!(CachePrefix::new(Ipv4Addr::new(1, 2, 3, 4), 33).is_none());
    }
}
