//! One service group on the cache: the routers and what each one reported, the Web-Cache
//! View, capability choice, answers to REMOVAL_QUERY, designated-cache election and the
//! REDIRECT_ASSIGN the designated cache sends (reference §3.6, §3.10, §5, §6.4).

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::config::{CacheConfig, CacheServiceConfig};
use super::CacheEvent;
use crate::assign::{assign_hash, assign_mask, BucketOwners, ValueOwners, WeightedCache};
use crate::engine::{
    next_nonzero, AssignmentMethod, Counters, DropReason, ForwardingMethod, Methods, Outbox,
    ReturnMethod,
};
use crate::hash::BucketBitmap;
use crate::timer::{earliest, TimerConfig, TimerKind, TimerTable};
use crate::wire::{
    AlternateAssignment, AssignmentBody, AssignmentData, AssignmentInfo, AssignmentKey,
    AssignmentMethods, CapabilitiesInfo, ForwardingMethods, HashAssignmentData,
    HashBucketsAssignment, HereIAm, ISeeYou, MaskAssignmentData, MaskValueSet, Message,
    RedirectAssign, RedirectAssignment, RemovalQuery, ReturnMethods, RouterAssignmentElement,
    RouterIdElement, WebCacheIdentityElement, WebCacheViewInfo,
};

/// \[R1\] §3.15: at most this many fast retries without an I_SEE_YOU in between.
const MAX_RETRIES: u8 = 6;

/// Routers a service learns from multicast I_SEE_YOUs at most (reference §1: ≤ 32 routers
/// per service group); further ones are counted (`wccp-too-many-routers`) and ignored.
pub(crate) const MAX_ROUTERS: usize = 32;

/// Per-service timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceTimer {
    /// Periodic HERE_I_AM to every router (TRANSMIT_T).
    HereIAm,
    /// Designated cache: send REDIRECT_ASSIGN (15 s after the last membership change).
    Assign,
    /// Designated cache: resend while a router echoes a stale key (10 s).
    Resend,
    /// Not designated, but no router has any assignment 35 s (twice the assignment wait and
    /// half a HERE_I_AM period) after the cache joined: the cache the draft elects does not assign (a Squid, whose election
    /// compares addresses as little-endian integers, may think another cache is), so assign.
    Fallback,
}

impl TimerKind for ServiceTimer {
    const ALL: &'static [Self] = &[Self::HereIAm, Self::Assign, Self::Resend, Self::Fallback];
    fn index(self) -> usize {
        self as usize
    }
}

/// Per-router timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerTimer {
    /// No I_SEE_YOU for 30 s: forget the router's view.
    Dead,
    /// Next HERE_I_AM answering a REMOVAL_QUERY.
    QueryReply,
    /// \[R1\] §3.15 fast retry: the I_SEE_YOU for the last HERE_I_AM is missing.
    Retry,
}

impl TimerKind for PeerTimer {
    const ALL: &'static [Self] = &[Self::Dead, Self::QueryReply, Self::Retry];
    fn index(self) -> usize {
        self as usize
    }
}

/// What one router last told this cache (its I_SEE_YOU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerView {
    /// Router ID from the Router Identity.
    pub(crate) router_id: Ipv4Addr,
    /// Last Receive ID received (echoed in the Web-Cache View).
    pub(crate) receive_id: u32,
    /// When it was heard.
    pub(crate) heard: Instant,
    /// Member Change Number.
    pub(crate) change_number: u32,
    /// Assignment key it echoes.
    pub(crate) key: AssignmentKey,
    /// Usable caches in its Router View.
    pub(crate) caches: Vec<WebCacheIdentityElement>,
    /// Its Assignment Map (mask), if any.
    pub(crate) assignment_map: Option<Vec<MaskValueSet>>,
    /// Our choice among what it offered; `None` = no supported option (§5: abort joining).
    pub(crate) choice: Option<Methods>,
    /// TRANSMIT_T and scales chosen from its offer (the configured ones clamped into it;
    /// absent = the defaults).
    pub(crate) timers: TimerConfig,
}

impl PeerView {
    /// True when this cache is in the router's Router View (usable there).
    fn lists(&self, cache: Ipv4Addr) -> bool {
        self.caches.iter().any(|c| c.cache_ip == cache)
    }
}

/// A router's phase, as this cache sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerPhase {
    /// No I_SEE_YOU yet, or none for 30 s.
    Unseen,
    /// Heard within the last 30 s.
    Seen(Box<PeerView>),
}

/// One configured router.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Phase and view.
    pub(crate) phase: PeerPhase,
    /// HERE_I_AMs still owed to a REMOVAL_QUERY.
    pub(crate) query_replies_left: u8,
    /// Fast retries sent since the last I_SEE_YOU (\[R1\] §3.15: at most 6).
    pub(crate) retries: u8,
    /// Its timers.
    pub(crate) timers: TimerTable<PeerTimer, 3>,
}

impl Peer {
    fn new() -> Self {
        Self {
            phase: PeerPhase::Unseen,
            query_replies_left: 0,
            retries: 0,
            timers: TimerTable::default(),
        }
    }

    /// The router's view, when heard recently.
    pub(crate) fn view(&self) -> Option<&PeerView> {
        match &self.phase {
            PeerPhase::Seen(v) => Some(v),
            PeerPhase::Unseen => None,
        }
    }
}

/// Membership as the designated cache sees it: each live router's Member Change Number and
/// the caches every live router lists, with their weights. A change restarts the 15 s wait.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Snapshot {
    /// Live routers → Member Change Number.
    pub(crate) routers: BTreeMap<Ipv4Addr, u32>,
    /// Caches seen by every live router (the assignable ones) → weight.
    pub(crate) caches: BTreeMap<Ipv4Addr, u16>,
}

/// The assignment this cache last sent as designated cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Its key.
    pub(crate) key: AssignmentKey,
    /// Membership it was computed for.
    pub(crate) snapshot: Snapshot,
    /// Hash table (with cache list) or mask/value sets.
    pub(crate) body: SentBody,
}

/// What was assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SentBody {
    /// Hash buckets.
    Hash(HashBucketsAssignment),
    /// Mask/value sets.
    Mask(Vec<MaskValueSet>),
}

/// Engine-wide things a service writes to.
pub(crate) struct Io<'a> {
    /// Engine-wide settings.
    pub(crate) config: &'a CacheConfig,
    /// Datagrams to send.
    pub(crate) outbox: &'a mut Outbox,
    /// Events for the driver.
    pub(crate) events: &'a mut VecDeque<CacheEvent>,
    /// Engine-wide counters.
    pub(crate) counters: &'a mut Counters,
}

/// One service group on the cache.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    /// Its configuration.
    pub(crate) config: CacheServiceConfig,
    /// Configured routers, by the address HERE_I_AMs go to.
    pub(crate) peers: BTreeMap<Ipv4Addr, Peer>,
    /// Web-Cache View Change Number.
    pub(crate) view_change: u32,
    /// The Web-Cache View as last sent: routers heard and caches learnt.
    pub(crate) view_key: (Vec<RouterIdElement>, Vec<Ipv4Addr>),
    /// Whether this cache is the designated one.
    pub(crate) designated: bool,
    /// Membership at the last check.
    pub(crate) snapshot: Snapshot,
    /// Key Change Number of the last assignment sent.
    pub(crate) key_change: u32,
    /// The last assignment sent.
    pub(crate) sent: Option<Sent>,
    /// Per-service timers.
    pub(crate) timers: TimerTable<ServiceTimer, 4>,
    /// Counters of this service.
    pub(crate) counters: Counters,
}

impl Service {
    /// A service that starts sending HERE_I_AMs at `now`.
    pub(crate) fn new(now: Instant, config: CacheServiceConfig, routers: &[Ipv4Addr]) -> Self {
        let mut timers = TimerTable::default();
        timers.set(ServiceTimer::HereIAm, now);
        Self {
            config,
            peers: routers.iter().map(|r| (*r, Peer::new())).collect(),
            view_change: 0,
            view_key: (Vec::new(), Vec::new()),
            designated: false,
            snapshot: Snapshot::default(),
            key_change: 0,
            sent: None,
            timers,
            counters: Counters::default(),
        }
    }

    /// Service ID.
    pub(crate) fn id(&self) -> u8 {
        self.config.service.service_id
    }

    /// Earliest deadline of the service and its routers.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .fold(self.timers.next_deadline(), |acc, p| {
                earliest(acc, p.timers.next_deadline())
            })
    }

    /// Adds and removes routers to match the configuration.
    pub(crate) fn sync_routers(&mut self, routers: &[Ipv4Addr]) {
        self.peers.retain(|r, _| routers.contains(r));
        for r in routers {
            self.peers.entry(*r).or_insert_with(Peer::new);
        }
    }

    /// Picks one offered option per capability, in our preference order; absent elements
    /// mean the defaults GRE / hash / GRE (§3.10). `None` if some capability has no option
    /// we support.
    fn choose(caps: Option<&CapabilitiesInfo>, config: &CacheConfig) -> Option<Methods> {
        let fwd = caps
            .and_then(CapabilitiesInfo::forwarding)
            .unwrap_or(ForwardingMethods::GRE);
        let ret = caps
            .and_then(CapabilitiesInfo::packet_return)
            .unwrap_or(ReturnMethods::GRE);
        let asg = caps
            .and_then(CapabilitiesInfo::assignment)
            .unwrap_or(AssignmentMethods::HASH);
        Some(Methods {
            forwarding: *config.forwarding.iter().find(|m| fwd.contains(m.bits()))?,
            packet_return: *config
                .packet_return
                .iter()
                .find(|m| ret.contains(m.bits()))?,
            assignment: *config.assignment.iter().find(|m| asg.contains(m.bits()))?,
        })
    }

    /// I_SEE_YOU (§5): record the router's view and our choice; the first one from a router
    /// is answered at once so that the Receive ID is echoed without waiting 10 s.
    pub(crate) fn handle_i_see_you(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        msg: &Message,
        io: &mut Io<'_>,
    ) {
        let isy = match ISeeYou::try_from(msg) {
            Ok(i) => i,
            Err(e) => return self.counters.count(e.as_str()),
        };
        let me = io.config.address;
        // §3.3: a cache not listed in Received-From drops the message (as ATS does).
        if !isy.identity.received_from.contains(&me) {
            return self.counters.reject(DropReason::NotForUs);
        }
        let group = io.config.multicast_group;
        let router = match self.peer_address(src, isy.identity.sent_to) {
            Some(r) => r,
            // Multicast mode: a router answering the group is learnt (draft §4.1).
            None if group.is_some() && group == Some(isy.identity.sent_to) => {
                if self.peers.len() >= MAX_ROUTERS {
                    return self.counters.count("wccp-too-many-routers");
                }
                self.peers.insert(src, Peer::new());
                self.counters.count("wccp-router-learnt");
                src
            }
            None => return self.counters.reject(DropReason::UnknownRouter),
        };
        let timers = io.config.timers.choose_from(isy.capabilities.as_ref());
        let choice =
            Self::choose(isy.capabilities.as_ref(), io.config).filter(|_| timers.is_some());
        let timers = timers.unwrap_or_default();
        let view = PeerView {
            router_id: isy.identity.router.router_ip,
            receive_id: isy.identity.router.receive_id,
            heard: now,
            change_number: isy.view.member_change_number,
            key: isy.view.key,
            caches: isy.view.caches,
            assignment_map: isy.assignment_map.map(|m| m.sets),
            choice,
            timers,
        };
        let Some(peer) = self.peers.get_mut(&router) else {
            return;
        };
        let old = peer.view().cloned();
        let first =
            old.is_none() || old.as_ref().map(|v| (v.choice, v.timers)) != Some((choice, timers));
        let was_usable = old.as_ref().is_some_and(|v| v.lists(me));
        let usable = view.lists(me);
        peer.timers.set(PeerTimer::Dead, now + timers.member_dead());
        peer.timers.stop(PeerTimer::Retry);
        peer.retries = 0;
        peer.phase = PeerPhase::Seen(Box::new(view));

        let service = self.id();
        match (choice, usable, was_usable) {
            (None, _, _) => {
                self.counters.reject(DropReason::CapabilityUnsupported);
                if first {
                    io.events
                        .push_back(CacheEvent::Incompatible { service, router });
                }
            }
            (Some(methods), true, false) => io.events.push_back(CacheEvent::RouterUp {
                service,
                router,
                methods,
            }),
            (Some(_), false, true) => io
                .events
                .push_back(CacheEvent::RouterDown { service, router }),
            _ => {}
        }
        if first {
            // Fast join: echo the new Receive ID now rather than at the next period.
            self.send_here_i_am(router, io);
        }
        self.check_membership(now, io);
    }

    /// REMOVAL_QUERY (§5): answer the querying router with 3 HERE_I_AMs, 1 s apart.
    pub(crate) fn handle_removal_query(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        msg: &Message,
        io: &mut Io<'_>,
    ) {
        let q = match RemovalQuery::try_from(msg) {
            Ok(q) => q,
            Err(e) => return self.counters.count(e.as_str()),
        };
        if q.query.target != io.config.address {
            return self.counters.reject(DropReason::QueryWrongTarget);
        }
        let Some(router) = self.peer_address(src, q.query.sent_to) else {
            return self.counters.reject(DropReason::UnknownRouter);
        };
        self.send_here_i_am(router, io);
        if let Some(peer) = self.peers.get_mut(&router) {
            peer.query_replies_left = TimerConfig::QUERY_REPLIES - 1;
            let spacing = peer
                .view()
                .map_or(io.config.timers, |v| v.timers)
                .query_reply_spacing();
            peer.timers.set(PeerTimer::QueryReply, now + spacing);
        }
    }

    /// The configured router a message came from: by source, else by the Sent-To address.
    fn peer_address(&self, src: Ipv4Addr, sent_to: Ipv4Addr) -> Option<Ipv4Addr> {
        [src, sent_to]
            .into_iter()
            .find(|a| self.peers.contains_key(a))
    }

    /// The timers the service runs on: those negotiated with the router that chose the
    /// shortest TRANSMIT_T (sending HERE_I_AMs more often than another router asked for is
    /// harmless; less often would get the cache removed), else the configured ones.
    pub(crate) fn timers(&self, config: &CacheConfig) -> TimerConfig {
        self.peers
            .values()
            .filter_map(Peer::view)
            .filter(|v| v.choice.is_some())
            .map(|v| v.timers)
            .min_by_key(|t| t.transmit_t)
            .unwrap_or(config.timers)
    }

    /// Timers: periodic HERE_I_AMs, query replies, dead routers, assignment and resend.
    pub(crate) fn handle_timeout(&mut self, now: Instant, io: &mut Io<'_>) {
        let timers = self.timers(io.config);
        let mut dead = Vec::new();
        let mut replies = Vec::new();
        for (addr, peer) in &mut self.peers {
            while let Some(t) = peer.timers.pop_expired(now) {
                match t {
                    PeerTimer::Dead => dead.push(*addr),
                    PeerTimer::Retry => {
                        if peer.retries < MAX_RETRIES {
                            peer.retries += 1;
                            replies.push(*addr);
                        }
                    }
                    PeerTimer::QueryReply => {
                        replies.push(*addr);
                        peer.query_replies_left = peer.query_replies_left.saturating_sub(1);
                        if peer.query_replies_left > 0 {
                            peer.timers
                                .set(PeerTimer::QueryReply, now + timers.query_reply_spacing());
                        }
                    }
                }
            }
        }
        for router in dead {
            let was_usable = self
                .peers
                .get(&router)
                .and_then(Peer::view)
                .is_some_and(|v| v.lists(io.config.address));
            if let Some(peer) = self.peers.get_mut(&router) {
                peer.phase = PeerPhase::Unseen;
            }
            self.counters.count("wccp-router-lost");
            if io.config.multicast_group.is_some() && !io.config.routers.contains(&router) {
                // A learnt router is forgotten, so the learnt set stays bounded.
                self.peers.remove(&router);
            }
            if was_usable {
                io.events.push_back(CacheEvent::RouterDown {
                    service: self.id(),
                    router,
                });
            }
        }
        for router in replies {
            self.send_here_i_am(router, io);
        }
        while let Some(t) = self.timers.pop_expired(now) {
            match t {
                ServiceTimer::HereIAm if io.config.multicast_group.is_some() => {
                    // One HERE_I_AM to the group for all routers; no fast retry: routers
                    // answer a multicast HERE_I_AM on their own schedule (draft §4.1).
                    let any = self.peers.keys().next().copied();
                    self.send_here_i_am(any.unwrap_or(Ipv4Addr::UNSPECIFIED), io);
                    self.timers
                        .set(ServiceTimer::HereIAm, now + timers.here_i_am_interval());
                }
                ServiceTimer::HereIAm => {
                    let routers: Vec<Ipv4Addr> = self.peers.keys().copied().collect();
                    for r in routers {
                        self.send_here_i_am(r, io);
                    }
                    // [R1] §3.15: retry after half a period if the reply is missing, but only
                    // towards routers whose last reply listed this cache.
                    let me = io.config.address;
                    for peer in self.peers.values_mut() {
                        if peer.view().is_some_and(|v| v.lists(me)) {
                            peer.timers
                                .set(PeerTimer::Retry, now + timers.here_i_am_interval() / 2);
                        }
                    }
                    self.timers
                        .set(ServiceTimer::HereIAm, now + timers.here_i_am_interval());
                }
                ServiceTimer::Assign => self.send_assignment(now, io, false),
                ServiceTimer::Resend => self.resend_assignment(now, io),
                ServiceTimer::Fallback => {
                    self.counters.count("wccp-assignment-fallback");
                    self.send_assignment(now, io, true);
                }
            }
        }
        self.check_membership(now, io);
    }

    /// The membership now: live routers' change numbers and the caches all of them list.
    fn current_snapshot(&self) -> Snapshot {
        let views: Vec<&PeerView> = self.peers.values().filter_map(Peer::view).collect();
        let mut caches: BTreeMap<Ipv4Addr, u16> = BTreeMap::new();
        if let Some((first, rest)) = views.split_first() {
            for c in &first.caches {
                if rest.iter().all(|v| v.lists(c.cache_ip)) {
                    let weight = c.data.weight_status().map_or(0, |(w, _)| w);
                    caches.entry(c.cache_ip).or_insert(weight);
                }
            }
        }
        Snapshot {
            routers: self
                .peers
                .iter()
                .filter_map(|(a, p)| p.view().map(|v| (*a, v.change_number)))
                .collect(),
            caches,
        }
    }

    /// §5 election: the lowest address (as a big-endian integer) among the caches every live
    /// router lists.
    fn designated_cache(snapshot: &Snapshot) -> Option<Ipv4Addr> {
        snapshot.caches.keys().next().copied()
    }

    /// Re-evaluates membership, designation and the Web-Cache View after any change; a
    /// membership change restarts the designated cache's 15 s wait (§1).
    fn check_membership(&mut self, now: Instant, io: &mut Io<'_>) {
        let me = io.config.address;
        let snapshot = self.current_snapshot();
        let designated = Self::designated_cache(&snapshot) == Some(me);
        let changed = snapshot != self.snapshot;
        if designated != self.designated {
            self.designated = designated;
            io.events.push_back(CacheEvent::DesignatedChanged {
                service: self.id(),
                designated,
            });
        }
        // Every live router shows no assignment although this cache is a member of all.
        let unassigned = snapshot.caches.contains_key(&me)
            && self
                .peers
                .values()
                .filter_map(Peer::view)
                .all(|v| v.key.cache_ip == Ipv4Addr::UNSPECIFIED);
        if designated || !unassigned {
            self.timers.stop(ServiceTimer::Fallback);
        } else if self.timers.get(ServiceTimer::Fallback).is_none() {
            // Half a HERE_I_AM period off the 10 s rhythm, so that the assignment never leaves
            // just after a HERE_I_AM whose I_SEE_YOU (and new Receive ID) is still on its way.
            let timers = self.timers(io.config);
            let wait = timers.assignment_wait() * 2 + timers.here_i_am_interval() / 2;
            self.timers.set(ServiceTimer::Fallback, now + wait);
        }
        // A cache whose fallback assignment every router installed keeps assigning as the
        // designated cache would, until the one the draft elects takes over.
        let acting = designated || self.installed_ours(me);
        if !acting {
            self.timers.stop(ServiceTimer::Assign);
            self.timers.stop(ServiceTimer::Resend);
        } else if changed
            || (self.timers.get(ServiceTimer::Assign).is_none() && self.sent.is_none())
        {
            let wait = self.timers(io.config).assignment_wait();
            self.timers.set(ServiceTimer::Assign, now + wait);
        }
        self.snapshot = snapshot;
        // The Web-Cache View's change number follows its content (§5).
        let view_key = self.view_content();
        if view_key != self.view_key {
            self.view_key = view_key;
            self.view_change = next_nonzero(self.view_change);
        }
    }

    /// Routers heard (with their last Receive ID) and caches learnt from them.
    fn view_content(&self) -> (Vec<RouterIdElement>, Vec<Ipv4Addr>) {
        let routers = self
            .peers
            .values()
            .filter_map(Peer::view)
            .map(|v| RouterIdElement {
                router_ip: v.router_id,
                receive_id: v.receive_id,
            })
            .collect();
        let caches: BTreeSet<Ipv4Addr> = self
            .peers
            .values()
            .filter_map(Peer::view)
            .flat_map(|v| v.caches.iter().map(|c| c.cache_ip))
            .collect();
        (routers, caches.into_iter().collect())
    }

    /// HERE_I_AM to one router (§4): identity, Web-Cache View with Receive IDs of the routers
    /// heard (\[R1\]: routers not yet heard are not listed), and our choices for that router.
    /// In multicast mode it goes to the group instead, with the choices made for any router
    /// heard (one message serves them all).
    fn send_here_i_am(&mut self, router: Ipv4Addr, io: &mut Io<'_>) {
        let config = io.config;
        // The choices (methods, timers) a router answered with: in multicast mode any
        // router heard, else this one.
        let answered = match config.multicast_group {
            Some(_) => self
                .peers
                .values()
                .filter_map(Peer::view)
                .find(|v| v.choice.is_some()),
            None => match self.peers.get(&router) {
                Some(peer) => peer.view().filter(|v| v.choice.is_some()),
                None => return,
            },
        };
        let (peer_choice, peer_timers) =
            (answered.and_then(|v| v.choice), answered.map(|v| v.timers));
        let dst = config.multicast_group.unwrap_or(router);
        let preferred = Methods {
            forwarding: config
                .forwarding
                .first()
                .copied()
                .unwrap_or(ForwardingMethod::Gre),
            packet_return: config
                .packet_return
                .first()
                .copied()
                .unwrap_or(ReturnMethod::Gre),
            assignment: config
                .assignment
                .first()
                .copied()
                .unwrap_or(AssignmentMethod::Hash),
        };
        let methods = peer_choice.unwrap_or(preferred);
        // Our timers as chosen for this router (or the group's routers), or (before a first
        // answer) as configured.
        let timers = peer_timers.unwrap_or(config.timers);
        let data = match methods.assignment {
            AssignmentMethod::Hash => AssignmentData::Hash(HashAssignmentData {
                buckets: BucketBitmap::EMPTY,
                weight: config.weight,
                status: 0,
            }),
            // One set with the mask and no values, as Squid sends (Cisco rejects zero sets).
            AssignmentMethod::Mask => AssignmentData::Mask(MaskAssignmentData {
                sets: vec![MaskValueSet {
                    mask: self.config.effective_mask(),
                    values: Vec::new(),
                }],
                weight: config.weight,
                status: 0,
            }),
        };
        let (routers, caches) = self.view_content();
        let view = WebCacheViewInfo {
            change_number: self.view_change,
            routers,
            caches,
        };
        let mut hia = HereIAm::new(
            self.config.service.clone(),
            WebCacheIdentityElement::new(config.address, data),
            view,
        );
        let mut caps = CapabilitiesInfo::methods(
            methods.forwarding.bits(),
            methods.assignment.bits(),
            methods.packet_return.bits(),
        );
        // Only non-default timers are sent (\[R1\]: absent = the defaults), so a cache with
        // the defaults sends what Squid sends.
        if !timers.is_default() {
            caps.elements.extend(timers.capabilities());
        }
        hia.capabilities = Some(caps);
        self.send(&hia.into_message(), dst, io);
    }

    /// The owners to start from: our last assignment if the routers still echo it, else
    /// what the routers report (a new designated cache takes over with minimal movement).
    fn previous(&self, order: crate::hash::BitOrder) -> (BucketOwners, ValueOwners) {
        let mask = self.config.effective_mask();
        let ours = self.sent.as_ref().map(|s| match &s.body {
            SentBody::Hash(t) => (BucketOwners::from_table(t), ValueOwners::default()),
            SentBody::Mask(sets) => (BucketOwners::NONE, ValueOwners::from_sets(sets, &mask)),
        });
        let echoed = self.sent.as_ref().is_some_and(|s| {
            self.peers
                .values()
                .filter_map(Peer::view)
                .any(|v| v.key == s.key)
        });
        if let (Some(ours), true) = (&ours, echoed) {
            return ours.clone();
        }
        let reported = self.peers.values().filter_map(Peer::view).find_map(|v| {
            let bitmaps: Vec<(Ipv4Addr, BucketBitmap)> = v
                .caches
                .iter()
                .filter(|c| !c.is_historical())
                .filter_map(|c| match &c.data {
                    AssignmentData::Hash(h) => Some((c.cache_ip, h.buckets)),
                    _ => None,
                })
                .collect();
            let buckets = BucketOwners::from_bitmaps(bitmaps.iter().map(|(a, b)| (*a, b)), order);
            let values = v
                .assignment_map
                .as_ref()
                .map(|sets| ValueOwners::from_sets(sets, &mask))
                .unwrap_or_default();
            (buckets.unassigned() < crate::wire::BUCKETS || values.0.iter().any(Option::is_some))
                .then_some((buckets, values))
        });
        reported.or(ours).unwrap_or_default()
    }

    /// True when every live router echoes an assignment key of this cache.
    fn installed_ours(&self, me: Ipv4Addr) -> bool {
        let mut views = self.peers.values().filter_map(Peer::view).peekable();
        views.peek().is_some() && views.all(|v| v.key.cache_ip == me)
    }

    /// Designated cache, 15 s after a change (or any member, as a `fallback` when no router
    /// has an assignment): compute and send the assignment to every live router (§5, §6.4).
    fn send_assignment(&mut self, now: Instant, io: &mut Io<'_>, fallback: bool) {
        let me = io.config.address;
        let snapshot = self.current_snapshot();
        let designated = Self::designated_cache(&snapshot) == Some(me);
        let member = snapshot.caches.contains_key(&me);
        if !designated && !(member && (fallback || self.installed_ours(me))) {
            return;
        }
        let Some(method) = self
            .peers
            .values()
            .filter_map(Peer::view)
            .find_map(|v| v.choice)
            .map(|m| m.assignment)
        else {
            return;
        };
        let caches: Vec<WeightedCache> = snapshot
            .caches
            .iter()
            .map(|(address, weight)| WeightedCache {
                address: *address,
                weight: *weight,
            })
            .collect();
        let (prev_buckets, prev_values) = self.previous(io.config.bit_order);
        let body = match method {
            AssignmentMethod::Hash => assign_hash(&caches, &prev_buckets).map(SentBody::Hash),
            AssignmentMethod::Mask => assign_mask(
                &caches,
                &self.config.effective_mask(),
                self.config.max_mask_bits,
                &prev_values,
            )
            .map(SentBody::Mask),
        };
        let body = match body {
            Ok(b) => b,
            Err(_) => return self.counters.count("wccp-assignment-failed"),
        };
        self.key_change = next_nonzero(self.key_change);
        let key = AssignmentKey {
            cache_ip: me,
            change_number: self.key_change,
        };
        let routers: Vec<Ipv4Addr> = snapshot.routers.keys().copied().collect();
        self.sent = Some(Sent {
            key,
            snapshot,
            body,
        });
        self.send_redirect_assign(&routers, io);
        io.events.push_back(CacheEvent::AssignmentSent {
            service: self.id(),
            key,
        });
        let resend = self.timers(io.config).assignment_resend();
        self.timers.set(ServiceTimer::Resend, now + resend);
    }

    /// Every 10 s while some live router echoes no key or an older one of ours: send the same
    /// assignment again with fresh Receive IDs (§5; ATS does this, Squid does not). Skipped
    /// when membership changed since (the 15 s timer sends a new one), and toward a router
    /// that installed another cache's assignment.
    fn resend_assignment(&mut self, now: Instant, io: &mut Io<'_>) {
        let Some(sent) = &self.sent else { return };
        if self.current_snapshot() != sent.snapshot {
            return;
        }
        // The cache the draft elects insists (the router prefers its assignment); one that
        // assigned as a fallback follows a router that installed another cache's assignment
        // (whose election differs from ours, as Squid's does) rather than compete.
        let me = io.config.address;
        let designated = Self::designated_cache(&sent.snapshot) == Some(me);
        let stale: Vec<Ipv4Addr> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.view().is_some_and(|v| {
                    v.key != sent.key
                        && (designated
                            || v.key.cache_ip == me
                            || v.key.cache_ip == Ipv4Addr::UNSPECIFIED)
                })
            })
            .map(|(a, _)| *a)
            .collect();
        if stale.is_empty() {
            return;
        }
        self.counters.count("wccp-assignment-resent");
        self.send_redirect_assign(&stale, io);
        let resend = self.timers(io.config).assignment_resend();
        self.timers.set(ServiceTimer::Resend, now + resend);
    }

    /// REDIRECT_ASSIGN with the last assignment to `to`, listing every live router with the
    /// Receive ID and Member Change Number it last sent (§3.13).
    fn send_redirect_assign(&mut self, to: &[Ipv4Addr], io: &mut Io<'_>) {
        let Some(sent) = &self.sent else { return };
        let routers: Vec<RouterAssignmentElement> = self
            .peers
            .values()
            .filter_map(Peer::view)
            .map(|v| RouterAssignmentElement {
                router_ip: v.router_id,
                receive_id: v.receive_id,
                change_number: v.change_number,
            })
            .collect();
        let assignment = match &sent.body {
            // Hash in Assignment Info (type 6), mask in Alternate Assignment: as Squid does.
            SentBody::Hash(table) => RedirectAssignment::Hash(AssignmentInfo {
                key: sent.key,
                routers,
                buckets: table.clone(),
            }),
            SentBody::Mask(sets) => RedirectAssignment::Alternate(AlternateAssignment {
                key: sent.key,
                routers,
                body: AssignmentBody::Mask(sets.clone()),
            }),
        };
        let msg = RedirectAssign::new(self.config.service.clone(), assignment).into_message();
        if let Some(group) = io.config.multicast_group {
            // Draft §4.8.1: to the same addresses as the HERE_I_AMs.
            if !to.is_empty() {
                self.send(&msg, group, io);
            }
            return;
        }
        for router in to {
            self.send(&msg, *router, io);
        }
    }

    /// Signs, encodes and queues a message to a router.
    fn send(&mut self, msg: &Message, dst: Ipv4Addr, io: &mut Io<'_>) {
        match self.config.security.encode(msg) {
            Ok(bytes) => {
                if !io.outbox.push(dst, io.config.address, bytes) {
                    io.counters.reject(DropReason::TxQueueFull);
                }
                self.counters.tx.bump(msg.kind);
                io.counters.tx.bump(msg.kind);
            }
            Err(e) => self.counters.count(e.as_str()),
        }
    }
}
