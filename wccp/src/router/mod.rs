//! The router side of WCCPv2 as a sans-IO state machine (quinn-proto style): [`RouterEngine`].
//!
//! Per configured service group the engine tracks caches through the two-way handshake
//! (reference §5), negotiates capabilities (§3.10), keeps the Member Change Number and the
//! Router View, answers every HERE_I_AM with a unicast I_SEE_YOU, validates and installs
//! REDIRECT_ASSIGNs, queries silent caches after 25 s and drops them after 30 s (at once on a
//! SHUTDOWN, answered with SHUTDOWN_RESPONSE), and flushes an assignment that no valid
//! REDIRECT_ASSIGN followed within 50 s of a membership change. With usable caches and no
//! assignment in force, the flush or a rejected REDIRECT_ASSIGN moves the Member Change
//! Number, since Squid-like caches assign only when it moves.
//!
//! Joining caches (not yet echoed) are bounded per source /24 and per group, the oldest
//! making room, and I_SEE_YOUs to sources that never echoed come out of token buckets per
//! source /24 and per group (see `admission`), so that a flood of spoofed HERE_I_AMs neither
//! locks real caches out nor is reflected at full rate.
//!
//! Multicast service groups (reference §1, draft §4.1): a group configured with a
//! [`RouterServiceConfig::multicast_group`] also takes HERE_I_AMs and REDIRECT_ASSIGNs sent to
//! that address ([`RouterEngine::handle_multicast`]); such caches are not answered one by one
//! but listed in a scheduled I_SEE_YOU to the group every 0.9 × TRANSMIT_T ± 10 % (9 s ± 0.9 s
//! by default), whose Sent-To is the group. Unicast and multicast caches may share a group;
//! each is answered the way it last talked. REMOVAL_QUERY stays unicast. Datagrams to any
//! other multicast or broadcast address are dropped and counted.
//!
//! HA state sync (issue 15, `sync`): [`RouterEngine::export_service`] turns a group's durable
//! state into versioned records, [`RouterEngine::import_sync`] applies a peer's on a standby,
//! and [`RouterEngine::resume`] restarts every liveness timer when the standby takes over, so
//! that caches talking to a shared virtual address see one router throughout.
//!
//! Not supported: version 2.01 features (Address Table; replies are always v2.00), negotiation of
//! TRANSMIT_T / TIMER_SCALE (never advertised; the cache's elements are ignored, so both sides
//! keep the defaults or the configured [`crate::timer::TimerConfig`]).

mod admission;
mod config;
mod group;
mod receive_id;
mod status;
mod sync;

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::assign::Assignment;
use crate::engine::{ConfigError, Counters, DropReason, Methods, Outbox, Transmit};
use crate::timer::earliest;
use crate::wire::{Header, Message, MessageType};

pub use admission::{
    source_net, JOINING_PER_NET, MAX_JOINING, NET_BURST, NET_EVERY, SOURCE_NET_BITS,
    UNECHOED_BURST, UNECHOED_EVERY,
};
pub use config::{valid_multicast_group, CachePrefix, RouterServiceConfig};
pub use group::CachePhase;
pub use status::{CacheStatus, ServiceStatus};
pub use sync::{
    reencode, SyncError, SyncExport, SyncKey, SyncRecord, KEY_CACHE, KEY_GROUP, SYNC_FORMAT,
};

use group::{Group, Io};
use receive_id::{ReceiveIds, Seed};

/// L2-adjacent addresses the engine keeps at most (a few KiB); when full, addresses no group
/// tracks any more are forgotten, and a newcomer beyond it is not marked adjacent.
pub const MAX_ADJACENT: usize = 4096;

/// What the router engine tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterEvent {
    /// A service group's installed assignment changed: hand it to the data plane (store it
    /// in the `ArcSwap`). An empty assignment means "redirect nothing".
    AssignmentChanged {
        /// Service ID.
        service: u8,
        /// The new assignment.
        assignment: Arc<Assignment>,
    },
    /// A cache became usable (Member Change Number incremented).
    CacheUsable {
        /// Service ID.
        service: u8,
        /// Cache address.
        cache: Ipv4Addr,
        /// What was negotiated with it.
        methods: Methods,
    },
    /// A usable cache was lost: silent for 30 s, shut down (Command Extension SHUTDOWN),
    /// unusable after a change, or removed by reconfiguration.
    CacheLost {
        /// Service ID.
        service: u8,
        /// Cache address.
        cache: Ipv4Addr,
    },
}

/// The WCCPv2 router protocol engine for any number of service groups.
///
/// It does no I/O and reads no clock. The driver feeds it four kinds of input and drains
/// three kinds of output (after quinn-proto's `Connection`):
///
/// - **Inputs.** [`handle_message`](Self::handle_message) for every UDP datagram received
///   on port 2048, with its source and the local address it was sent to (or
///   [`handle_message_on_link`](Self::handle_message_on_link), which also says whether the
///   source is on the receiving link: L2 adjacency, recorded only for accepted HERE_I_AMs);
///   [`handle_timeout`](Self::handle_timeout) when the instant returned by
///   [`poll_timeout`](Self::poll_timeout) has passed; [`set_l2_adjacent`](Self::set_l2_adjacent)
///   when a driver learns a cache's L2 adjacency out of band; and the commands [`add_service`](Self::add_service),
///   [`reconfigure`](Self::reconfigure) and [`remove_service`](Self::remove_service).
/// - **Outputs**, to drain after *every* input, in this order:
///   1. [`poll_transmit`](Self::poll_transmit) until `None`: send each datagram from
///      `Transmit::src`:2048 to `Transmit::dst`:2048;
///   2. [`poll_event`](Self::poll_event) until `None`: install assignments, log changes;
///   3. [`poll_timeout`](Self::poll_timeout): re-arm the single driver timer (it may have
///      moved earlier or later; `None` = no timer).
///
/// Status getters ([`service`](Self::service), [`services`](Self::services),
/// [`counters`](Self::counters)) are snapshots for `show ip wccp`.
///
/// No input makes it panic; malformed, unauthenticated or unexpected datagrams are dropped
/// and counted under a stable reason name (engine counters before the service is known,
/// the group's counters after). A malformed *optional* component is left out instead
/// ([`crate::wire::skippable`]) and counted as `wccp-skipped-component`.
#[derive(Debug, Clone, Default)]
pub struct RouterEngine {
    groups: BTreeMap<u8, Group>,
    adjacent: BTreeSet<Ipv4Addr>,
    outbox: Outbox,
    events: VecDeque<RouterEvent>,
    counters: Counters,
    seed: Option<Seed>,
    router_id: Option<Ipv4Addr>,
    /// Group record parts received from an HA peer, by service and part.
    sync_parts: BTreeMap<u8, BTreeMap<u8, sync::Part>>,
}

impl RouterEngine {
    /// An engine without service groups whose Receive IDs count 1, 2, 3… per group:
    /// reproducible, for tests and capture replays. Drivers use [`Self::with_seed`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine without service groups whose Receive IDs are drawn from `seed`, which the
    /// driver takes from a random source at start: a host that cannot see a cache's traffic
    /// cannot predict the Receive ID it must echo (§5).
    pub fn with_seed(seed: u64) -> Self {
        Self {
            seed: Some(Seed(seed)),
            ..Self::default()
        }
    }

    /// Announces `id` as this router's Router ID in every group (I_SEE_YOU, REMOVAL_QUERY)
    /// and finds this router's element in caches' views and assignments by it, so that a
    /// cache talking to two of our addresses sees one router (issue 13 item 2). Datagrams
    /// still go out from the local address the cache talked to, which also stays in
    /// "Sent To". Without it the Router ID is that local address.
    pub fn set_router_id(&mut self, id: Ipv4Addr) {
        self.router_id = Some(id);
        for g in self.groups.values_mut() {
            g.router_id = Some(id);
        }
    }

    /// Adds a service group (configured services only: HERE_I_AMs for others are dropped).
    pub fn add_service(&mut self, config: RouterServiceConfig) -> Result<(), ConfigError> {
        config.validate()?;
        if self.groups.contains_key(&config.service_id) {
            return Err(ConfigError::DuplicateService(config.service_id));
        }
        let ids = ReceiveIds::new(self.seed, config.service_id);
        let jitter_seed = self.seed.map_or(0, |s| s.0) ^ u64::from(config.service_id);
        let mut group = Group::new(config, ids);
        group.router_id = self.router_id;
        group.jitter = jitter_seed;
        self.groups.insert(group.id(), group);
        Ok(())
    }

    /// Replaces a group's configuration in place: its caches, Member Change Number and
    /// assignment stay. Caches outside a new group list are dropped, usable caches whose
    /// methods are no longer offered become unusable (the assignment is recompiled without
    /// them), a new password applies to the next message (caches that keep the old one fail
    /// authentication and expire like silent ones), and only a changed service type or pinned
    /// definition restarts the group.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        config: RouterServiceConfig,
    ) -> Result<(), ConfigError> {
        config.validate()?;
        let id = config.service_id;
        let Some(group) = self.groups.get_mut(&id) else {
            return Err(ConfigError::UnknownService(id));
        };
        let mut io = Io {
            outbox: &mut self.outbox,
            events: &mut self.events,
            adjacent: &mut self.adjacent,
            on_link: None,
            via_group: None,
            adjacency_lost: false,
            counters: &mut self.counters,
        };
        group.reconfigure(now, config, &mut io);
        Ok(())
    }

    /// Service group `service_id`'s durable state as HA sync records (issue 15), each value
    /// at most `max_len` bytes: what a standby imports with [`Self::import_sync`] to answer
    /// the caches' next HERE_I_AM with the same Router ID, a Receive ID after the last one,
    /// the same change number and assignment. `None` for an unknown service.
    pub fn export_service(&self, service_id: u8, max_len: usize) -> Option<SyncExport> {
        self.groups
            .get(&service_id)
            .map(|g| g.export(&self.adjacent, max_len))
    }

    /// Applies one of a peer's records (`value` `None`: its delete). A group record takes
    /// effect once all its parts of one version are in; a cache's liveness timers restart from
    /// `now`. The change number does not move and no cache events are raised; an
    /// `AssignmentChanged` event follows when the compiled assignment changes. Any bytes are
    /// safe: a malformed record is refused and changes nothing.
    pub fn import_sync(
        &mut self,
        now: Instant,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), SyncError> {
        let k = SyncKey::parse(key)?;
        let service = k.service();
        if !self.groups.contains_key(&service) {
            return Err(SyncError::UnknownService(service));
        }
        let mut io = Io {
            outbox: &mut self.outbox,
            events: &mut self.events,
            adjacent: &mut self.adjacent,
            on_link: None,
            via_group: None,
            adjacency_lost: false,
            counters: &mut self.counters,
        };
        let Some(group) = self.groups.get_mut(&service) else {
            return Err(SyncError::UnknownService(service));
        };
        match (k, value) {
            (SyncKey::Cache { cache, .. }, v) => {
                let state = v.map(sync::CacheState::decode).transpose()?;
                group.import_cache(now, cache, state, &mut io)
            }
            (SyncKey::Group { part, .. }, None) => {
                let parts = self.sync_parts.entry(service).or_default();
                parts.remove(&part);
                if part == 0 {
                    parts.clear();
                    group.import_reset(now, &mut io);
                }
                Ok(())
            }
            (SyncKey::Group { part, .. }, Some(v)) => {
                let p = sync::Part::decode(part, v)?;
                let parts = self.sync_parts.entry(service).or_default();
                // Parts beyond the record's count are stale (the peer deletes them too).
                let count = p.parts;
                parts.insert(part, p);
                parts.retain(|i, q| *i < count || q.parts != count);
                let Some(payload) = sync::Part::assemble(parts) else {
                    return Ok(());
                };
                let state = sync::GroupState::decode(&payload)?;
                group.import_state(now, state, &mut io);
                Ok(())
            }
        }
    }

    /// Becoming the active router of an HA pair: every imported (and own) cache's removal
    /// query and expiry, and the assignment flush, count from `now`, as if each had just
    /// been heard. The driver runs no engine timers while standby.
    pub fn resume(&mut self, now: Instant) {
        for g in self.groups.values_mut() {
            g.resume(now);
        }
    }

    /// Removes a group; an empty assignment is announced for it.
    pub fn remove_service(&mut self, service_id: u8) -> Result<(), ConfigError> {
        let group = self
            .groups
            .remove(&service_id)
            .ok_or(ConfigError::UnknownService(service_id))?;
        self.sync_parts.remove(&service_id);
        self.events.push_back(RouterEvent::AssignmentChanged {
            service: service_id,
            assignment: Arc::new(Assignment::empty(group.service_info())),
        });
        Ok(())
    }

    /// Marks `cache` as directly attached (L2 forwarding and return may be granted, §5) or
    /// not; a usable cache using L2 that is no longer adjacent becomes unusable at once. For
    /// drivers that learn adjacency out of band (and tests); a driver that only knows the
    /// receiving link passes it to [`Self::handle_message_on_link`] instead, so that only
    /// authenticated, admitted HERE_I_AMs record it. At most [`MAX_ADJACENT`] addresses are
    /// kept (further ones are refused and counted as `wccp-adjacency-full`).
    pub fn set_l2_adjacent(&mut self, now: Instant, cache: Ipv4Addr, adjacent: bool) {
        if adjacent && !self.adjacent.contains(&cache) && self.adjacent.len() >= MAX_ADJACENT {
            return self.counters.count("wccp-adjacency-full");
        }
        let changed = if adjacent {
            self.adjacent.insert(cache)
        } else {
            self.adjacent.remove(&cache)
        };
        if !changed || adjacent {
            // Becoming adjacent takes effect with the cache's next HERE_I_AM.
            return;
        }
        self.revalidate_all(now);
    }

    /// Re-checks every group's usable caches against the adjacency now.
    fn revalidate_all(&mut self, now: Instant) {
        let mut io = Io {
            outbox: &mut self.outbox,
            events: &mut self.events,
            adjacent: &mut self.adjacent,
            on_link: None,
            via_group: None,
            adjacency_lost: false,
            counters: &mut self.counters,
        };
        for group in self.groups.values_mut() {
            group.revalidate(now, &mut io);
        }
    }

    /// Forgets the adjacency of addresses no group tracks any more (when the set is full).
    fn prune_adjacent(&mut self) {
        let groups = &self.groups;
        self.adjacent
            .retain(|a| groups.values().any(|g| g.caches.contains_key(a)));
    }

    /// [`Self::handle_message`] for a datagram that arrived on a link whose prefix holds
    /// `src` (`on_link`) or not. The engine records `src` as L2-adjacent (or no longer) only
    /// once a HERE_I_AM from it passed authentication and the group's admission checks
    /// (identity, group list, definition, tracking slots): a spoofed or unauthenticated
    /// datagram changes nothing, and the set stays bounded by the caches tracked.
    pub fn handle_message_on_link(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        local: Ipv4Addr,
        on_link: bool,
        data: &[u8],
    ) {
        if self.adjacent.len() >= MAX_ADJACENT {
            self.prune_adjacent();
        }
        if self.handle(now, src, local, None, data, Some(on_link)) {
            // A cache that moved off link: its L2 methods in other groups are void too.
            self.revalidate_all(now);
        }
    }

    /// A UDP datagram from `src` to the multicast address `group` (port 2048), received on
    /// the link where this router's address is `local` (the source of what is sent back, the
    /// Router ID unless one is set, and the GRE source toward the cache). Taken only by a
    /// service group configured with that `group`; a HERE_I_AM is answered by the group's
    /// next scheduled multicast I_SEE_YOU, not at once. The driver checks the TTL rule
    /// (reference §1: ≤ 15) before calling.
    pub fn handle_multicast(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        group: Ipv4Addr,
        local: Ipv4Addr,
        on_link: bool,
        data: &[u8],
    ) {
        if self.adjacent.len() >= MAX_ADJACENT {
            self.prune_adjacent();
        }
        if self.handle(now, src, local, Some(group), data, Some(on_link)) {
            self.revalidate_all(now);
        }
    }

    /// The multicast addresses of the configured service groups, by service ID.
    pub fn multicast_groups(&self) -> impl Iterator<Item = (u8, Ipv4Addr)> + '_ {
        self.groups
            .iter()
            .filter_map(|(id, g)| Some((*id, g.config.multicast_group?)))
    }

    /// A UDP datagram from `src` to the local address `local` (port 2048). HERE_I_AM and
    /// REDIRECT_ASSIGN are processed; everything else is counted and dropped.
    /// L2 adjacency is left as [`Self::set_l2_adjacent`] set it.
    pub fn handle_message(&mut self, now: Instant, src: Ipv4Addr, local: Ipv4Addr, data: &[u8]) {
        self.handle(now, src, local, None, data, None);
    }

    /// Processes one datagram; true when it took a cache's L2 adjacency away.
    fn handle(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        local: Ipv4Addr,
        via_group: Option<Ipv4Addr>,
        data: &[u8],
        on_link: Option<bool>,
    ) -> bool {
        let Some(kind) = Header::peek_type(data) else {
            self.counters.rx.bump(MessageType::Unknown(0));
            self.counters
                .count(crate::Error::as_str(&crate::Error::Truncated {
                    need: 4,
                    have: data.len(),
                    at: 0,
                }));
            return false;
        };
        self.counters.rx.bump(kind);
        if !matches!(kind, MessageType::HereIAm | MessageType::RedirectAssign) {
            self.counters.reject(DropReason::UnexpectedType);
            return false;
        }
        if local.is_multicast()
            || local.is_broadcast()
            || via_group.is_some_and(|g| {
                !self
                    .groups
                    .values()
                    .any(|s| s.config.multicast_group == Some(g))
            })
        {
            self.counters.reject(DropReason::MulticastUnsupported);
            return false;
        }
        // Tolerant: a garbled optional component costs that component, not the message.
        let datagram = match Message::decode_datagram_tolerant(data) {
            Ok(d) => d,
            Err(e) => {
                self.counters.count(e.as_str());
                return false;
            }
        };
        if datagram.trailing != 0 {
            self.counters.reject(DropReason::TrailingOctets);
        }
        let msg = &datagram.message;
        let Some(service) = msg.service_info() else {
            self.counters.count("wccp-missing-component");
            return false;
        };
        let Some(group) = self.groups.get_mut(&service.service_id) else {
            self.counters.reject(DropReason::UnconfiguredService);
            return false;
        };
        if service.service_type != group.config.service_type {
            group.counters.reject(DropReason::ServiceTypeMismatch);
            return false;
        }
        if via_group.is_some() && via_group != group.config.multicast_group {
            // Another service's group address: not this group's multicast channel.
            group.counters.reject(DropReason::MulticastUnsupported);
            return false;
        }
        // §3.1: the configured option must match and the MD5 digest must verify.
        if let Err(e) = group.config.security.verify(data) {
            group.counters.count(e.as_str());
            return false;
        }
        group.counters.rx.bump(kind);
        // Counted only once the datagram is authentic, like everything else per group.
        for _ in &datagram.skipped {
            group.counters.reject(DropReason::SkippedComponent);
        }
        let mut io = Io {
            outbox: &mut self.outbox,
            events: &mut self.events,
            adjacent: &mut self.adjacent,
            on_link,
            via_group,
            adjacency_lost: false,
            counters: &mut self.counters,
        };
        match kind {
            MessageType::HereIAm => group.handle_here_i_am(now, src, local, msg, &mut io),
            _ => group.handle_redirect_assign(now, src, local, msg, &mut io),
        }
        io.adjacency_lost
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut io = Io {
            outbox: &mut self.outbox,
            events: &mut self.events,
            adjacent: &mut self.adjacent,
            on_link: None,
            via_group: None,
            adjacency_lost: false,
            counters: &mut self.counters,
        };
        for group in self.groups.values_mut() {
            if group.next_deadline().is_some_and(|d| d <= now) {
                group.handle_timeout(now, &mut io);
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
        self.groups
            .values()
            .fold(None, |acc, g| earliest(acc, g.next_deadline()))
    }

    /// The next event for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RouterEvent> {
        self.events.pop_front()
    }

    /// IDs of the configured service groups, ascending.
    pub fn service_ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.groups.keys().copied()
    }

    /// Status of one service group.
    pub fn service(&self, service_id: u8) -> Option<ServiceStatus> {
        self.groups
            .get(&service_id)
            .map(|g| g.status(&self.adjacent))
    }

    /// Status of one cache of a service group (cheaper than [`Self::service`]).
    pub fn cache(&self, service_id: u8, cache: Ipv4Addr) -> Option<CacheStatus> {
        self.groups
            .get(&service_id)?
            .cache_status(cache, &self.adjacent)
    }

    /// Member Change Number and usable caches of a service group (cheaper than
    /// [`Self::service`]).
    pub fn membership(&self, service_id: u8) -> Option<(u32, Vec<Ipv4Addr>)> {
        let g = self.groups.get(&service_id)?;
        Some((g.change_number, g.members.iter().copied().collect()))
    }

    /// Status of every service group, by ID.
    pub fn services(&self) -> Vec<ServiceStatus> {
        self.groups
            .values()
            .map(|g| g.status(&self.adjacent))
            .collect()
    }

    /// The assignment installed for a service group.
    pub fn assignment(&self, service_id: u8) -> Option<Arc<Assignment>> {
        self.groups
            .get(&service_id)
            .map(|g| Arc::clone(&g.installed))
    }

    /// Engine-wide counters: every datagram received and sent, and drops that happen before
    /// a service group is known (decode errors, unconfigured services, unexpected types).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Checks the engine's invariants (tests and fuzzing): every bucket or mask value of an
    /// installed assignment points at one usable cache or none, every target is usable, and
    /// no group tracks more than its limits, and the adjacency set is bounded.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        if self.adjacent.len() > MAX_ADJACENT {
            return Err("too many adjacent addresses");
        }
        for g in self.groups.values() {
            g.installed.check_invariants()?;
            for t in g.installed.caches() {
                if g.draining.get(&t.address).is_some_and(|(d, _)| d == t) {
                    continue;
                }
                let usable = g.caches.get(&t.address).is_some_and(|e| {
                    e.router_id == t.router_id
                        && e.phase.methods().is_some_and(|m| {
                            m.forwarding == t.forwarding && m.packet_return == t.packet_return
                        })
                });
                if !usable {
                    return Err("an assignment target is not a usable cache");
                }
            }
            let usable = g.caches.values().filter(|e| e.phase.is_usable()).count();
            if usable > crate::assign::MAX_CACHES || g.caches.len() > group::MAX_TRACKED {
                return Err("too many caches");
            }
            if g.members.len() != usable {
                return Err("membership out of date");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod timer_tests;
