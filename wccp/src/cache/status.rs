//! Status snapshots of the cache engine, per service group and per router.

use core::net::Ipv4Addr;
use std::time::Instant;

use super::config::CacheConfig;
use super::service::{Peer, SentBody, Service, ServiceTimer};
use crate::engine::{Counters, Methods};
use crate::timer::TimerConfig;
use crate::wire::{AssignmentKey, SecurityOption, ServiceInfo};

/// One service group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheServiceStatus {
    /// The Service Info announced.
    pub service: ServiceInfo,
    /// Security option in use.
    pub security: SecurityOption,
    /// Web-Cache View Change Number.
    pub view_change_number: u32,
    /// Caches every live router lists (the assignable ones), by address.
    pub caches: Vec<Ipv4Addr>,
    /// The designated cache by election (lowest of `caches`).
    pub designated_cache: Option<Ipv4Addr>,
    /// This cache is the designated one.
    pub designated: bool,
    /// Key of the last assignment this cache sent.
    pub sent_key: Option<AssignmentKey>,
    /// Buckets (hash) or values (mask) per cache in that assignment.
    pub sent_shares: Vec<(Ipv4Addr, usize)>,
    /// When the next REDIRECT_ASSIGN is due (designated cache).
    pub assign_at: Option<Instant>,
    /// When a stale key is checked again (designated cache).
    pub resend_at: Option<Instant>,
    /// Every configured router.
    pub routers: Vec<RouterStatus>,
    /// Messages in/out and rejects of this group.
    pub counters: Counters,
    /// The timers the service runs on (the shortest negotiated TRANSMIT_T, else configured).
    pub timers: TimerConfig,
}

/// One configured router, as this cache sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterStatus {
    /// The address HERE_I_AMs go to.
    pub address: Ipv4Addr,
    /// Heard within the last 30 s.
    pub alive: bool,
    /// Router ID it announces.
    pub router_id: Option<Ipv4Addr>,
    /// Last Receive ID received (echoed).
    pub receive_id: u32,
    /// Its Member Change Number.
    pub member_change_number: u32,
    /// The assignment key it echoes.
    pub key: AssignmentKey,
    /// This cache is in its Router View.
    pub usable_here: bool,
    /// Our choice among what it offers (`None` while unheard or when incompatible).
    pub methods: Option<Methods>,
    /// It offers nothing acceptable for some capability.
    pub incompatible: bool,
    /// TRANSMIT_T and scales chosen for it (`None` while unheard or when incompatible).
    pub timers: Option<TimerConfig>,
    /// Caches in its Router View.
    pub view_caches: Vec<Ipv4Addr>,
    /// Last I_SEE_YOU.
    pub last_heard: Option<Instant>,
}

impl CacheServiceStatus {
    /// The status of one router.
    pub fn router(&self, address: Ipv4Addr) -> Option<&RouterStatus> {
        self.routers.iter().find(|r| r.address == address)
    }
}

impl Service {
    /// The service's status snapshot.
    pub(crate) fn status(&self, config: &CacheConfig) -> CacheServiceStatus {
        let routers = self
            .peers
            .iter()
            .map(|(address, p)| router_status(*address, p, config.address))
            .collect();
        let sent_shares = self.sent.as_ref().map_or_else(Vec::new, |s| match &s.body {
            SentBody::Hash(t) => t.caches.iter().copied().zip(t.bucket_counts()).collect(),
            SentBody::Mask(sets) => {
                let mut counts: Vec<(Ipv4Addr, usize)> = Vec::new();
                for v in sets.iter().flat_map(|s| &s.values) {
                    match counts.iter_mut().find(|(a, _)| *a == v.cache_ip) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((v.cache_ip, 1)),
                    }
                }
                counts
            }
        });
        CacheServiceStatus {
            service: self.config.service.clone(),
            security: self.config.security.option(),
            view_change_number: self.view_change,
            caches: self.snapshot.caches.keys().copied().collect(),
            designated_cache: self.snapshot.caches.keys().next().copied(),
            designated: self.designated,
            sent_key: self.sent.as_ref().map(|s| s.key),
            sent_shares,
            assign_at: self.timers.get(ServiceTimer::Assign),
            resend_at: self.timers.get(ServiceTimer::Resend),
            routers,
            counters: self.counters.clone(),
            timers: self.timers(config),
        }
    }
}

/// One router's status.
fn router_status(address: Ipv4Addr, p: &Peer, me: Ipv4Addr) -> RouterStatus {
    match p.view() {
        None => RouterStatus {
            address,
            alive: false,
            router_id: None,
            receive_id: 0,
            member_change_number: 0,
            key: AssignmentKey::NONE,
            usable_here: false,
            methods: None,
            incompatible: false,
            timers: None,
            view_caches: Vec::new(),
            last_heard: None,
        },
        Some(v) => RouterStatus {
            address,
            alive: true,
            router_id: Some(v.router_id),
            receive_id: v.receive_id,
            member_change_number: v.change_number,
            key: v.key,
            usable_here: v.caches.iter().any(|c| c.cache_ip == me),
            methods: v.choice,
            incompatible: v.choice.is_none(),
            timers: v.choice.map(|_| v.timers),
            view_caches: v.caches.iter().map(|c| c.cache_ip).collect(),
            last_heard: Some(v.heard),
        },
    }
}
