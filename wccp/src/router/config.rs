//! Per-service configuration of the router engine: plain data with defaults, which the
//! router's config layer fills from TOML.

use core::net::Ipv4Addr;

use crate::engine::ConfigError;
use crate::hash::BitOrder;
use crate::security::{Password, Security};
use crate::timer::TimerConfig;
use crate::wire::{AssignmentMethods, ForwardingMethods, ReturnMethods, ServiceInfo, ServiceType};

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
    /// Caches allowed to join (`None` = any), like IOS `group-list`.
    pub group_list: Option<Vec<Ipv4Addr>>,
    /// Bit order of the bucket bitmaps reported in I_SEE_YOU (reference §6.3).
    pub bit_order: BitOrder,
    /// Protocol timers (reference §1).
    pub timers: TimerConfig,
}

impl RouterServiceConfig {
    /// A standard service with the defaults: no password, GRE or L2 forwarding and return,
    /// hash or mask assignment, any cache, MSB-first bitmaps, reference timers.
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
            .map_or(true, |list| list.contains(&cache))
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
            group_list: Some(vec![Ipv4Addr::new(10, 0, 0, 3)]),
            ..RouterServiceConfig::standard(0)
        };
        assert!(!listed.admits(Ipv4Addr::new(10, 0, 0, 2)));
    }
}
