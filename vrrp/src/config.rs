//! A virtual router's parameters (RFC 5798 §6.1) and their validation.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::wire::{ChecksumMode, MAX_ADDRS, MAX_ADVER_INT};

/// Priority of the router that owns the virtual addresses (RFC 5798 §6.1).
pub const OWNER_PRIORITY: u8 = 255;
/// The RFC's default priority for backups.
pub const DEFAULT_PRIORITY: u8 = 100;
/// The RFC's default Advertisement_Interval: 1 s.
pub const DEFAULT_ADVER_INTERVAL: u16 = 100;
/// Gratuitous ARPs sent per virtual address on becoming master, by default.
pub const DEFAULT_GARP_COUNT: u8 = 1;

/// One virtual router on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Virtual Rtr ID, 1..=255.
    pub vrid: u8,
    /// 1..=254, or 255 for the owner of the virtual addresses.
    pub priority: u8,
    /// The interface's primary address: the source of advertisements and the tie-breaker.
    pub primary_addr: Ipv4Addr,
    /// The virtual addresses, 1..=255 of them.
    pub virtual_addrs: Vec<Ipv4Addr>,
    /// Advertisement_Interval in centiseconds, 1..=4095 (1 = 10 ms).
    pub adver_interval: u16,
    /// Preempt_Mode: a higher-priority backup takes over from a lower-priority master.
    pub preempt: bool,
    /// Accept_Mode: the master accepts packets addressed to virtual addresses it does not own.
    pub accept_mode: bool,
    /// After start-up, preemption waits this long (zero: none), so a router that has just come
    /// up does not take over before its routes and neighbours are ready.
    pub preempt_delay: Duration,
    /// Which checksum advertisements are sent with (both are accepted).
    pub checksum: ChecksumMode,
    /// Gratuitous ARPs per virtual address on becoming master, at least 1.
    pub garp_count: u8,
}

impl Config {
    /// The RFC defaults (priority 100, 1 s, preempt on, accept off) for `vrid` on an interface
    /// with `primary_addr`.
    pub fn new(vrid: u8, primary_addr: Ipv4Addr, virtual_addrs: Vec<Ipv4Addr>) -> Self {
        Self {
            vrid,
            priority: DEFAULT_PRIORITY,
            primary_addr,
            virtual_addrs,
            adver_interval: DEFAULT_ADVER_INTERVAL,
            preempt: true,
            accept_mode: false,
            preempt_delay: Duration::ZERO,
            checksum: ChecksumMode::PseudoHeader,
            garp_count: DEFAULT_GARP_COUNT,
        }
    }

    /// Checks every field against the ranges above.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if self.priority == 0 {
            return Err(ConfigError::Priority);
        }
        if self.virtual_addrs.is_empty() || self.virtual_addrs.len() > MAX_ADDRS {
            return Err(ConfigError::AddressCount(self.virtual_addrs.len()));
        }
        if self.adver_interval == 0 || self.adver_interval > MAX_ADVER_INT {
            return Err(ConfigError::Interval(self.adver_interval));
        }
        if self.primary_addr.is_unspecified() || self.primary_addr.is_multicast() {
            return Err(ConfigError::PrimaryAddr(self.primary_addr));
        }
        if self.garp_count == 0 {
            return Err(ConfigError::GarpCount);
        }
        Ok(())
    }

    /// True for the address owner (priority 255).
    pub fn is_owner(&self) -> bool {
        self.priority == OWNER_PRIORITY
    }
}

/// Why a [`Config`] (or a run-time priority change) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// VRID 0 is not a virtual router.
    #[error("VRID must be 1..=255")]
    Vrid,
    /// Priority 0 is reserved for a master leaving.
    #[error("priority must be 1..=254, or 255 for the address owner")]
    Priority,
    /// Virtual address list empty or too long.
    #[error("{0} virtual addresses: a virtual router has 1 to 255")]
    AddressCount(usize),
    /// Advertisement interval out of the 12-bit field.
    #[error("advertisement interval {0} cs is outside 1..=4095 (10 ms to 40.95 s)")]
    Interval(u16),
    /// The primary address cannot source advertisements.
    #[error("primary address {0} cannot be the source of advertisements")]
    PrimaryAddr(std::net::Ipv4Addr),
    /// No gratuitous ARP would be sent.
    #[error("gratuitous ARP count must be at least 1")]
    GarpCount,
    /// Owner status (priority 255) cannot change at run time: ownership is configuration.
    #[error("priority cannot change to or from 255 (address owner) at run time")]
    OwnerChange,
}
