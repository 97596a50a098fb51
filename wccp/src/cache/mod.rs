//! The cache (web-cache / proxy) side of WCCPv2 as a sans-IO state machine: [`CacheEngine`].
//!
//! Per service group it sends a HERE_I_AM to every configured router each TRANSMIT_T (10 s),
//! echoing each router's last Receive ID in its Web-Cache View; chooses one forwarding,
//! return and assignment method among those a router offers; answers REMOVAL_QUERY with
//! three HERE_I_AMs 1 s apart; forgets a router after 30 s without I_SEE_YOU; and, when it is
//! the designated cache (the lowest address among the caches every live router lists, §5),
//! sends a REDIRECT_ASSIGN 15 s after the last membership change and resends it every 10 s
//! while a router echoes a stale assignment key. Assignments move as few buckets or mask
//! values as possible ([`crate::assign`]).
//!
//! Departures from Squid, on purpose: the first I_SEE_YOU from a router is answered at once
//! (Squid waits for the next period), routers not yet heard are not listed in the Web-Cache
//! View (\[R1\]; Squid lists them with Receive ID 0), a router offering nothing acceptable is
//! reported ([`CacheEvent::Incompatible`]) but HERE_I_AMs continue so that a reconfigured
//! router is picked up (Squid shuts WCCP down), and the election compares addresses as
//! big-endian integers (Squid's compares host-order words, §9).

mod config;
mod service;
mod status;

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::engine::{ConfigError, Counters, DropReason, Methods, Outbox, Transmit};
use crate::timer::earliest;
use crate::wire::{AssignmentKey, Header, Message, MessageType};

pub use config::{CacheConfig, CacheServiceConfig};
pub use status::{CacheServiceStatus, RouterStatus};

use service::{Io, Service};

/// What the cache engine tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// This cache is now usable at a router (listed in its Router View): set up the return
    /// path (GRE tunnel or L2) with the negotiated methods.
    RouterUp {
        /// Service ID.
        service: u8,
        /// Router address (as configured).
        router: Ipv4Addr,
        /// The methods chosen for that router.
        methods: Methods,
    },
    /// A router stopped listing this cache or went silent for 30 s.
    RouterDown {
        /// Service ID.
        service: u8,
        /// Router address.
        router: Ipv4Addr,
    },
    /// A router offers no method this cache supports for some capability (§5).
    Incompatible {
        /// Service ID.
        service: u8,
        /// Router address.
        router: Ipv4Addr,
    },
    /// This cache became (or stopped being) the designated cache of a group.
    DesignatedChanged {
        /// Service ID.
        service: u8,
        /// True when it is now designated.
        designated: bool,
    },
    /// As designated cache, it sent a new assignment.
    AssignmentSent {
        /// Service ID.
        service: u8,
        /// The assignment's key.
        key: AssignmentKey,
    },
}

/// The WCCPv2 cache protocol engine for any number of service groups.
///
/// Same contract as [`crate::router::RouterEngine`]: no I/O, no clock, no panics. Inputs are
/// [`handle_message`](Self::handle_message) (every UDP datagram to port 2048, with its
/// source), [`handle_timeout`](Self::handle_timeout) and the commands
/// [`add_service`](Self::add_service), [`remove_service`](Self::remove_service),
/// [`reconfigure`](Self::reconfigure). After every input drain
/// [`poll_transmit`](Self::poll_transmit) (send from `Transmit::src`:2048 to
/// `Transmit::dst`:2048), then [`poll_event`](Self::poll_event), then re-arm the timer from
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug, Clone)]
pub struct CacheEngine {
    config: CacheConfig,
    services: BTreeMap<u8, Service>,
    outbox: Outbox,
    events: VecDeque<CacheEvent>,
    counters: Counters,
}

impl CacheEngine {
    /// An engine for `config`; every service sends its first HERE_I_AMs at `now`.
    pub fn new(now: Instant, config: CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let services = config
            .services
            .iter()
            .map(|s| {
                (
                    s.service.service_id,
                    Service::new(now, s.clone(), &config.routers),
                )
            })
            .collect();
        Ok(Self {
            config,
            services,
            outbox: Outbox::default(),
            events: VecDeque::new(),
            counters: Counters::default(),
        })
    }

    /// Joins one more service group (first HERE_I_AMs at `now`).
    pub fn add_service(
        &mut self,
        now: Instant,
        service: CacheServiceConfig,
    ) -> Result<(), ConfigError> {
        service.validate()?;
        let id = service.service.service_id;
        if self.services.contains_key(&id) {
            return Err(ConfigError::DuplicateService(id));
        }
        self.config.services.push(service.clone());
        self.services
            .insert(id, Service::new(now, service, &self.config.routers));
        Ok(())
    }

    /// Leaves a service group (routers drop the cache after 30 s).
    pub fn remove_service(&mut self, service_id: u8) -> Result<(), ConfigError> {
        self.services
            .remove(&service_id)
            .ok_or(ConfigError::UnknownService(service_id))?;
        self.config
            .services
            .retain(|s| s.service.service_id != service_id);
        Ok(())
    }

    /// Applies a new configuration: routers are added or forgotten, changed services restart,
    /// removed ones stop, new ones start at `now`; weights, preferences and timers apply from
    /// the next message.
    pub fn reconfigure(&mut self, now: Instant, config: CacheConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.services.retain(|id, s| {
            config
                .services
                .iter()
                .any(|c| c.service.service_id == *id && *c == s.config)
        });
        for s in &config.services {
            self.services
                .entry(s.service.service_id)
                .or_insert_with(|| Service::new(now, s.clone(), &config.routers))
                .sync_routers(&config.routers);
        }
        self.config = config;
        Ok(())
    }

    /// A UDP datagram from `src` (port 2048): I_SEE_YOU and REMOVAL_QUERY are processed,
    /// everything else is counted and dropped.
    pub fn handle_message(&mut self, now: Instant, src: Ipv4Addr, data: &[u8]) {
        let Some(kind) = Header::peek_type(data) else {
            self.counters.rx.bump(MessageType::Unknown(0));
            return self.counters.count("wccp-truncated");
        };
        self.counters.rx.bump(kind);
        if !matches!(kind, MessageType::ISeeYou | MessageType::RemovalQuery) {
            return self.counters.reject(DropReason::UnexpectedType);
        }
        let datagram = match Message::decode_datagram(data) {
            Ok(d) => d,
            Err(e) => return self.counters.count(e.as_str()),
        };
        if datagram.trailing != 0 {
            self.counters.reject(DropReason::TrailingOctets);
        }
        let msg = datagram.message;
        let Some(info) = msg.service_info() else {
            return self.counters.count("wccp-missing-component");
        };
        let Some(service) = self.services.get_mut(&info.service_id) else {
            return self.counters.reject(DropReason::UnconfiguredService);
        };
        if info.service_type != service.config.service.service_type {
            return service.counters.reject(DropReason::ServiceTypeMismatch);
        }
        if let Err(e) = service.config.security.verify(data) {
            return service.counters.count(e.as_str());
        }
        service.counters.rx.bump(kind);
        let mut io = Io {
            config: &self.config,
            outbox: &mut self.outbox,
            events: &mut self.events,
            counters: &mut self.counters,
        };
        match kind {
            MessageType::ISeeYou => service.handle_i_see_you(now, src, &msg, &mut io),
            _ => service.handle_removal_query(now, src, &msg, &mut io),
        }
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut io = Io {
            config: &self.config,
            outbox: &mut self.outbox,
            events: &mut self.events,
            counters: &mut self.counters,
        };
        for service in self.services.values_mut() {
            if service.next_deadline().is_some_and(|d| d <= now) {
                service.handle_timeout(now, &mut io);
            }
        }
    }

    /// The next datagram to send, written into `buf` (cleared first).
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.outbox.pop(buf)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.services
            .values()
            .fold(None, |acc, s| earliest(acc, s.next_deadline()))
    }

    /// The next event for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<CacheEvent> {
        self.events.pop_front()
    }

    /// The configuration in force.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Status of one service group.
    pub fn service(&self, service_id: u8) -> Option<CacheServiceStatus> {
        self.services
            .get(&service_id)
            .map(|s| s.status(&self.config))
    }

    /// Status of every service group, by ID.
    pub fn services(&self) -> Vec<CacheServiceStatus> {
        self.services
            .values()
            .map(|s| s.status(&self.config))
            .collect()
    }

    /// Engine-wide counters (every datagram in and out; drops before a service is known).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

#[cfg(test)]
mod tests;
