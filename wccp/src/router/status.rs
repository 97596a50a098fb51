//! Status snapshots: what an operator's `show ip wccp` (and `show ip wccp <svc> detail`)
//! shows, per service group and per cache.

use core::net::Ipv4Addr;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use super::group::{CachePhase, CacheTimer, Group, GroupTimer};
use crate::assign::Assignment;
use crate::engine::{AssignmentMethod, Counters, Methods};
use crate::timer::TimerConfig;
use crate::wire::{AssignmentKey, SecurityOption, ServiceInfo, ServiceType};

/// One service group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Service ID.
    pub service_id: u8,
    /// Standard or dynamic.
    pub service_type: ServiceType,
    /// Definition in force (configured or learnt); `None` for a dynamic service without caches.
    pub definition: Option<ServiceInfo>,
    /// Security option in use.
    pub security: SecurityOption,
    /// Router IDs announced: the configured one, else the router addresses caches talk to.
    pub router_ids: Vec<Ipv4Addr>,
    /// Last Receive ID sent (0 = no I_SEE_YOU sent yet).
    pub receive_id: u32,
    /// Member Change Number.
    pub member_change_number: u32,
    /// Key of the installed assignment (zero when none).
    pub key: AssignmentKey,
    /// The designated cache: the one whose assignment is installed.
    pub designated_cache: Option<Ipv4Addr>,
    /// Assignment method fixed by the first usable cache.
    pub assignment_method: Option<AssignmentMethod>,
    /// TRANSMIT_T and scales in force for the group (\[R1\]: fixed by the first usable cache
    /// until the group empties; the configured defaults before).
    pub timers: TimerConfig,
    /// Whether the first usable cache fixed them (`false`: none yet, `timers` is the default).
    pub timers_fixed: bool,
    /// Routers reported by the usable caches (Router View).
    pub routers_in_view: Vec<Ipv4Addr>,
    /// Every cache heard from, usable or not, by address.
    pub caches: Vec<CacheStatus>,
    /// The installed assignment.
    pub assignment: Arc<Assignment>,
    /// When the assignment will be flushed unless a valid REDIRECT_ASSIGN arrives.
    pub flush_deadline: Option<Instant>,
    /// The service group's multicast address, if configured.
    pub multicast_group: Option<Ipv4Addr>,
    /// When the next scheduled I_SEE_YOU goes to the group (while caches talk to it).
    pub next_multicast_i_see_you: Option<Instant>,
    /// Scheduled rounds of I_SEE_YOUs sent to the group.
    pub multicast_i_see_you_rounds: u64,
    /// Messages in/out and rejects of this group.
    pub counters: Counters,
}

impl ServiceStatus {
    /// The status of one cache.
    pub fn cache(&self, address: Ipv4Addr) -> Option<&CacheStatus> {
        self.caches.iter().find(|c| c.address == address)
    }

    /// Addresses of the usable caches.
    pub fn usable_caches(&self) -> Vec<Ipv4Addr> {
        self.caches
            .iter()
            .filter(|c| c.usable)
            .map(|c| c.address)
            .collect()
    }
}

/// One cache of a service group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    /// Cache address.
    pub address: Ipv4Addr,
    /// Router address it talks to (Router ID sent to it).
    pub router_id: Ipv4Addr,
    /// Handshake phase (why it is not usable, if so).
    pub phase: CachePhase,
    /// In the Router View and assignable.
    pub usable: bool,
    /// Its assignment is the installed one.
    pub designated: bool,
    /// Negotiated forwarding / return / assignment method (usable caches).
    pub methods: Option<Methods>,
    /// Assignment Weight it reported.
    pub weight: u16,
    /// Assignment Status it reported.
    pub status: u16,
    /// Hash buckets it holds in the installed assignment.
    pub buckets: usize,
    /// Mask values it holds in the installed assignment.
    pub mask_values: usize,
    /// First heard.
    pub first_seen: Instant,
    /// Last HERE_I_AM that echoed the Receive ID sent to it (the first one until then).
    pub last_seen: Instant,
    /// Whether it has echoed a Receive ID sent to it (Squid 5.7 never does).
    pub receive_id_echoed: bool,
    /// Receive ID of the last I_SEE_YOU sent to it.
    pub last_receive_id_sent: Option<u32>,
    /// REMOVAL_QUERYs sent since it was last heard.
    pub queries_sent: u32,
    /// When it will be queried / dropped if it stays silent.
    pub query_at: Option<Instant>,
    /// When it will be dropped if it stays silent.
    pub expires_at: Option<Instant>,
    /// The driver marks it L2-adjacent.
    pub l2_adjacent: bool,
    /// TRANSMIT_T and scales negotiated with it (its removal query and expiry follow them).
    pub timers: TimerConfig,
    /// The multicast group it talks to (`None`: unicast): how the router learnt it.
    pub multicast: Option<Ipv4Addr>,
}

impl Group {
    /// The status of one cache.
    pub(crate) fn cache_status(
        &self,
        address: Ipv4Addr,
        adjacent: &BTreeSet<Ipv4Addr>,
    ) -> Option<CacheStatus> {
        let e = self.caches.get(&address)?;
        let designated = self.accepted.as_ref().map(|a| a.key.cache_ip);
        let share = self
            .installed
            .share_counts()
            .into_iter()
            .find(|(a, _)| *a == address)
            .map_or(0, |(_, n)| n);
        let is_mask = self.installed.is_mask();
        Some(CacheStatus {
            address,
            router_id: e.router_id,
            phase: e.phase,
            usable: e.phase.is_usable(),
            designated: designated == Some(address),
            methods: e.phase.methods(),
            weight: e.weight,
            status: e.status,
            buckets: if is_mask { 0 } else { share },
            mask_values: if is_mask { share } else { 0 },
            first_seen: e.first_seen,
            last_seen: e.last_seen,
            receive_id_echoed: e.echoed,
            last_receive_id_sent: e.last_sent_id(),
            queries_sent: e.queries_sent,
            query_at: e.timers.get(CacheTimer::RemovalQuery),
            expires_at: e.timers.get(CacheTimer::Expire),
            l2_adjacent: adjacent.contains(&address),
            timers: e.timer_config,
            multicast: e.multicast,
        })
    }

    /// The group's status snapshot.
    pub(crate) fn status(&self, adjacent: &BTreeSet<Ipv4Addr>) -> ServiceStatus {
        let key = self
            .accepted
            .as_ref()
            .map_or(AssignmentKey::NONE, |a| a.key);
        let caches = self
            .caches
            .keys()
            .filter_map(|a| self.cache_status(*a, adjacent))
            .collect();
        let router_ids: BTreeSet<Ipv4Addr> = self
            .caches
            .values()
            .map(|e| self.announced(e.router_id))
            .collect();
        ServiceStatus {
            service_id: self.config.service_id,
            service_type: self.config.service_type,
            definition: self.definition.clone(),
            security: self.config.security.option(),
            router_ids: router_ids.into_iter().collect(),
            receive_id: self.receive_ids.last(),
            member_change_number: self.change_number,
            key,
            designated_cache: self.accepted.as_ref().map(|a| a.key.cache_ip),
            assignment_method: self.method,
            timers: self.group_timers(),
            timers_fixed: self.fixed_timers.is_some(),
            routers_in_view: self.view_routers.iter().copied().collect(),
            caches,
            assignment: Arc::clone(&self.installed),
            flush_deadline: self.timers.get(GroupTimer::Flush),
            multicast_group: self.config.multicast_group,
            next_multicast_i_see_you: self.timers.get(GroupTimer::MulticastISeeYou),
            multicast_i_see_you_rounds: self.multicast_sent,
            counters: self.counters.clone(),
        }
    }
}
