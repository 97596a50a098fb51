//! Configuration of the cache engine: plain data with defaults (Squid's `wccp2_*` directives
//! map onto it one to one).

use core::net::Ipv4Addr;

use crate::assign::{default_mask, DEFAULT_MASK_BITS};
use crate::engine::{AssignmentMethod, ConfigError, ForwardingMethod, ReturnMethod};
use crate::hash::BitOrder;
use crate::security::{Password, Security};
use crate::timer::TimerConfig;
use crate::wire::{MaskElement, ServiceInfo};

/// The cache and what it offers to every service group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// This cache's address (Web-Cache Identity, source of its messages).
    pub address: Ipv4Addr,
    /// Routers to send HERE_I_AMs to (unicast, reference §1).
    pub routers: Vec<Ipv4Addr>,
    /// Service groups to join.
    pub services: Vec<CacheServiceConfig>,
    /// Assignment Weight (Squid `wccp2_weight`, default 10000).
    pub weight: u16,
    /// Forwarding methods this cache accepts, most preferred first (default GRE).
    pub forwarding: Vec<ForwardingMethod>,
    /// Packet return methods, most preferred first (default GRE).
    pub packet_return: Vec<ReturnMethod>,
    /// Assignment methods, most preferred first (default hash).
    pub assignment: Vec<AssignmentMethod>,
    /// Bit order used to read the routers' bucket bitmaps (reference §6.3).
    pub bit_order: BitOrder,
    /// Protocol timers (reference §1).
    pub timers: TimerConfig,
    /// Multicast mode (reference §1): HERE_I_AMs and REDIRECT_ASSIGNs of every service go to
    /// this group address instead of to each router, and routers are learnt from the
    /// I_SEE_YOUs sent to it (besides the configured ones). `None`: unicast.
    pub multicast_group: Option<Ipv4Addr>,
}

impl CacheConfig {
    /// A cache at `address` using `routers`, with Squid's defaults (GRE/hash/GRE, weight
    /// 10000) and no services yet.
    pub fn new(address: Ipv4Addr, routers: Vec<Ipv4Addr>) -> Self {
        Self {
            address,
            routers,
            services: Vec::new(),
            weight: 10000,
            forwarding: vec![ForwardingMethod::Gre],
            packet_return: vec![ReturnMethod::Gre],
            assignment: vec![AssignmentMethod::Hash],
            bit_order: BitOrder::default(),
            timers: TimerConfig::default(),
            multicast_group: None,
        }
    }

    /// The same with one more service.
    pub fn with_service(mut self, service: CacheServiceConfig) -> Self {
        self.services.push(service);
        self
    }

    /// Checks that the fields agree with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.forwarding.is_empty() || self.packet_return.is_empty() || self.assignment.is_empty()
        {
            return Err(ConfigError::Invalid(
                "every capability needs at least one method",
            ));
        }
        self.timers.validate()?;
        if self.address.is_unspecified() || self.address.is_multicast() {
            return Err(ConfigError::Invalid("the cache address must be unicast"));
        }
        if self
            .multicast_group
            .is_some_and(|g| !crate::router::valid_multicast_group(g))
        {
            return Err(ConfigError::Invalid(
                "the multicast group must be in 224.0.0.0/4, outside 224.0.0.0/24",
            ));
        }
        for (i, s) in self.services.iter().enumerate() {
            s.validate()?;
            if self.services[..i]
                .iter()
                .any(|o| o.service.service_id == s.service.service_id)
            {
                return Err(ConfigError::DuplicateService(s.service.service_id));
            }
        }
        Ok(())
    }
}

/// One service group the cache joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheServiceConfig {
    /// The Service Info announced (standard, or a full dynamic definition).
    pub service: ServiceInfo,
    /// Security (MD5 password) of this group.
    pub security: Security,
    /// Mask used when this cache assigns by mask (`None`: 0x1741 on the hashed field, §7.3).
    pub mask: Option<MaskElement>,
    /// Most mask bits allowed (default 7, the Cisco platform limit of §7.3).
    pub max_mask_bits: u32,
}

impl CacheServiceConfig {
    /// A service without password, default mask.
    pub fn new(service: ServiceInfo) -> Self {
        Self {
            service,
            security: Security::None,
            mask: None,
            max_mask_bits: DEFAULT_MASK_BITS,
        }
    }

    /// The same with MD5 security and this password.
    pub fn with_password(mut self, secret: &[u8]) -> Self {
        self.security = Security::Md5(Password::new(secret));
        self
    }

    /// The mask this service assigns with.
    pub fn effective_mask(&self) -> MaskElement {
        self.mask.unwrap_or_else(|| default_mask(&self.service))
    }

    /// Checks the mask against the limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bits = self.effective_mask().bit_count();
        if bits == 0 || bits > self.max_mask_bits.min(crate::assign::MAX_MASK_BITS) {
            return Err(ConfigError::Invalid(
                "the mask must have between 1 and max_mask_bits (≤ 12) bits",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = CacheConfig::new(Ipv4Addr::new(10, 0, 0, 2), vec![Ipv4Addr::new(10, 0, 0, 1)])
            .with_service(CacheServiceConfig::new(ServiceInfo::standard(0)).with_password(b"x"));
        c.validate().unwrap();
        assert_eq!(c.services[0].effective_mask().dst_ip, 0x1741);
        let dup = c
            .clone()
            .with_service(CacheServiceConfig::new(ServiceInfo::standard(0)));
        assert_eq!(dup.validate(), Err(ConfigError::DuplicateService(0)));
        let wide = CacheServiceConfig {
            mask: Some(MaskElement {
                dst_ip: 0xff,
                ..MaskElement::default()
            }),
            ..CacheServiceConfig::new(ServiceInfo::standard(0))
        };
        assert!(wide.validate().is_err());
        let none = CacheConfig {
            forwarding: vec![],
            ..c
        };
        assert!(none.validate().is_err());
    }
}
