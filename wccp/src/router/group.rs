//! One service group on the router: its caches and their phases, the Receive ID and Member
//! Change Number, the Router View, capability negotiation, REDIRECT_ASSIGN validation, the
//! installed assignment and the group's timers (reference §1, §3.5, §3.10, §5).

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::admission::{source_net, ReplyLimiter, JOINING_PER_NET, MAX_JOINING};
use super::config::RouterServiceConfig;
use super::receive_id::ReceiveIds;
use super::RouterEvent;
use crate::assign::{Assignment, CacheTarget, MAX_CACHES};
use crate::engine::{
    next_nonzero, AssignmentMethod, Counters, DropReason, ForwardingMethod, Methods, Outbox,
    ReturnMethod,
};
use crate::timer::{earliest, TimerConfig, TimerKind, TimerTable};
use crate::wire::{
    AltMaskValueSet, AssignmentBody, AssignmentData, AssignmentKey, AssignmentMap,
    AssignmentMethods, CapabilitiesInfo, Capability, Command, CommandExtension, ForwardingMethods,
    HashAssignmentData, HereIAm, ISeeYou, IdentityFlags, MaskAssignmentData, MaskValueSet, Message,
    RedirectAssign, RedirectAssignment, RemovalQuery, ReturnMethods, RouterAssignmentElement,
    RouterIdElement, RouterIdentityInfo, RouterQueryInfo, RouterViewInfo, ServiceInfo, ServiceType,
    WebCacheIdentityElement, BUCKETS,
};

/// How long a cache that left with a SHUTDOWN stays a target for the flows already on it.
pub(crate) const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(120);

/// Caches a group tracks at most (usable or not): bounds memory against address floods.
pub(crate) const MAX_TRACKED: usize = 4 * MAX_CACHES;

/// Per-cache timers (reference §1, §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheTimer {
    /// 25 s of silence: unicast a REMOVAL_QUERY.
    RemovalQuery,
    /// 30 s of silence: drop the cache.
    Expire,
}

impl TimerKind for CacheTimer {
    const ALL: &'static [Self] = &[Self::RemovalQuery, Self::Expire];
    fn index(self) -> usize {
        self as usize
    }
}

/// Per-group timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupTimer {
    /// 50 s after a change without a valid REDIRECT_ASSIGN: discard it (§1) and, with usable
    /// caches, move the change number again.
    Flush,
    /// The scheduled I_SEE_YOU to the multicast group (§1: every 0.9 × TRANSMIT_T ± 10 %),
    /// running while caches talk to the group.
    MulticastISeeYou,
}

impl TimerKind for GroupTimer {
    const ALL: &'static [Self] = &[Self::Flush, Self::MulticastISeeYou];
    fn index(self) -> usize {
        self as usize
    }
}

/// Where a cache stands in the two-way handshake and negotiation (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CachePhase {
    /// Heard from, but it has not yet echoed a Receive ID this router sent it.
    Joining,
    /// Echoed the Receive ID and chose supported methods: in the Router View and assignable.
    Usable(Methods),
    /// Echoed the Receive ID but cannot be used (unsupported choice, too many caches).
    Unusable(DropReason),
}

impl CachePhase {
    /// The negotiated methods of a usable cache.
    pub fn methods(&self) -> Option<Methods> {
        match self {
            Self::Usable(m) => Some(*m),
            Self::Joining | Self::Unusable(_) => None,
        }
    }

    /// True for [`CachePhase::Usable`].
    pub fn is_usable(&self) -> bool {
        matches!(self, Self::Usable(_))
    }
}

/// What the router knows about one cache.
#[derive(Debug, Clone)]
pub(crate) struct CacheEntry {
    /// The router address this cache talks to (its HERE_I_AMs' destination): source of what
    /// is sent to it, "Sent To", and the Router ID unless one is configured.
    pub(crate) router_id: Ipv4Addr,
    /// First HERE_I_AM.
    pub(crate) first_seen: Instant,
    /// Last authenticated HERE_I_AM that echoed the Receive ID (first HERE_I_AM until then).
    pub(crate) last_seen: Instant,
    /// Receive ID of the last I_SEE_YOU sent to it, per local address: a cache configured
    /// with two addresses of this router echoes each one separately.
    pub(crate) sent_ids: BTreeMap<Ipv4Addr, u32>,
    /// Whether it has echoed a Receive ID sent to it.
    pub(crate) echoed: bool,
    /// Whether an I_SEE_YOU was sent to it (a Joining cache never answered cannot echo and
    /// is the first to make room).
    pub(crate) answered: bool,
    /// Handshake phase.
    pub(crate) phase: CachePhase,
    /// Assignment Weight it reported (opaque, echoed in the Router View).
    pub(crate) weight: u16,
    /// Assignment Status it reported (opaque, echoed).
    pub(crate) status: u16,
    /// Routers listed in its Web-Cache View (they make up the Router View's router list).
    pub(crate) reported_routers: BTreeSet<Ipv4Addr>,
    /// REMOVAL_QUERYs sent since it was last heard.
    pub(crate) queries_sent: u32,
    /// Its timers.
    pub(crate) timers: TimerTable<CacheTimer, 2>,
    /// TRANSMIT_T and scales negotiated with it (the defaults until it asks for others):
    /// its removal query and expiry follow them.
    pub(crate) timer_config: TimerConfig,
    /// Whether its last HERE_I_AM carried timer capabilities (then I_SEE_YOUs offer what
    /// the router accepts; Squid-like caches that never ask get the same bytes as before).
    pub(crate) asked_timers: bool,
    /// The multicast group it sends its HERE_I_AMs to (`None`: unicast to `router_id`):
    /// how it is answered, and the "Sent To" of what is sent to it.
    pub(crate) multicast: Option<Ipv4Addr>,
}

impl CacheEntry {
    /// Receive ID of the last I_SEE_YOU sent from its current router address.
    pub(crate) fn last_sent_id(&self) -> Option<u32> {
        self.sent_ids.get(&self.router_id).copied()
    }

    pub(crate) fn new(now: Instant, router_id: Ipv4Addr) -> Self {
        Self {
            router_id,
            first_seen: now,
            last_seen: now,
            sent_ids: BTreeMap::new(),
            echoed: false,
            answered: false,
            phase: CachePhase::Joining,
            weight: 0,
            status: 0,
            reported_routers: BTreeSet::new(),
            queries_sent: 0,
            timers: TimerTable::default(),
            timer_config: TimerConfig::default(),
            asked_timers: false,
            multicast: None,
        }
    }
}

/// The body of the last valid REDIRECT_ASSIGN, kept as received and recompiled against the
/// current usable caches whenever they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AcceptedBody {
    /// Hash: the cache list and the 256 bucket octets.
    Hash {
        /// Cache list (bucket octets index it).
        caches: Vec<Ipv4Addr>,
        /// Bucket octets.
        buckets: Box<[u8; BUCKETS]>,
    },
    /// Mask/value sets.
    Mask(Vec<MaskValueSet>),
    /// Alternate mask/value sets (\[R1\]).
    AltMask(Vec<AltMaskValueSet>),
}

/// The last valid REDIRECT_ASSIGN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// Its key (echoed in the Router View).
    pub(crate) key: AssignmentKey,
    /// The Member Change Number it was accepted for.
    pub(crate) change_number: u32,
    /// Its assignment.
    pub(crate) body: AcceptedBody,
}

/// Engine-wide things a group writes to or reads.
pub(crate) struct Io<'a> {
    /// Datagrams to send.
    pub(crate) outbox: &'a mut Outbox,
    /// Events for the driver.
    pub(crate) events: &'a mut VecDeque<RouterEvent>,
    /// Caches marked L2-adjacent.
    pub(crate) adjacent: &'a mut BTreeSet<Ipv4Addr>,
    /// Whether the datagram being handled arrived on a link holding its source (`None`:
    /// the driver does not say; adjacency is left alone).
    pub(crate) on_link: Option<bool>,
    /// The multicast group the datagram was sent to (`None`: one of our addresses).
    pub(crate) via_group: Option<Ipv4Addr>,
    /// Set when that took a cache's adjacency away (the engine revalidates every group).
    pub(crate) adjacency_lost: bool,
    /// Engine-wide counters.
    pub(crate) counters: &'a mut Counters,
}

/// One service group.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// Configuration.
    pub(crate) config: RouterServiceConfig,
    /// Definition in force: configured, or learnt from the first cache that echoed a Receive
    /// ID (\[R1\] §3.2).
    pub(crate) definition: Option<ServiceInfo>,
    /// Receive IDs: the source and the last one sent (0 = none yet; never sent as 0, §5).
    pub(crate) receive_ids: ReceiveIds,
    /// Member Change Number.
    pub(crate) change_number: u32,
    /// When the Member Change Number last moved.
    pub(crate) changed_at: Option<Instant>,
    /// Assignment method fixed by the first usable cache (\[R1\]).
    pub(crate) method: Option<AssignmentMethod>,
    /// TRANSMIT_T and scales fixed by the first usable cache (\[R1\]), until the group empties.
    pub(crate) fixed_timers: Option<TimerConfig>,
    /// Every cache heard from, by address.
    pub(crate) caches: BTreeMap<Ipv4Addr, CacheEntry>,
    /// Usable caches as of the last change-number update.
    pub(crate) members: BTreeSet<Ipv4Addr>,
    /// Caches that left with a SHUTDOWN, until when: targets for their established flows
    /// (flow affinity), holding no buckets.
    pub(crate) draining: BTreeMap<Ipv4Addr, (CacheTarget, Instant)>,
    /// Routers reported by usable caches (Router View router list, §3.5).
    pub(crate) view_routers: BTreeSet<Ipv4Addr>,
    /// Last valid REDIRECT_ASSIGN.
    pub(crate) accepted: Option<Accepted>,
    /// The compiled assignment the data plane has.
    pub(crate) installed: Arc<Assignment>,
    /// Group timers.
    pub(crate) timers: TimerTable<GroupTimer, 2>,
    /// Group counters.
    pub(crate) counters: Counters,
    /// Budget of I_SEE_YOUs to sources that have not echoed.
    pub(crate) limiter: ReplyLimiter,
    /// The configured Router ID (`None`: the local address each cache talks to).
    pub(crate) router_id: Option<Ipv4Addr>,
    /// State of the jitter of the multicast I_SEE_YOU schedule (splitmix64).
    pub(crate) jitter: u64,
    /// Scheduled rounds of I_SEE_YOUs sent to the multicast group.
    pub(crate) multicast_sent: u64,
}

impl Group {
    /// A group without caches.
    pub(crate) fn new(config: RouterServiceConfig, receive_ids: ReceiveIds) -> Self {
        let definition = config.fixed_definition();
        let mut g = Self {
            config,
            definition,
            receive_ids,
            change_number: 0,
            changed_at: None,
            method: None,
            fixed_timers: None,
            caches: BTreeMap::new(),
            members: BTreeSet::new(),
            draining: BTreeMap::new(),
            view_routers: BTreeSet::new(),
            accepted: None,
            installed: Arc::new(Assignment::empty(ServiceInfo::standard(0))),
            timers: TimerTable::default(),
            counters: Counters::default(),
            limiter: ReplyLimiter::default(),
            router_id: None,
            jitter: 0,
            multicast_sent: 0,
        };
        g.installed = Arc::new(Assignment::empty(g.service_info()));
        g
    }

    /// The Router ID announced to a cache that talks to our address `local`.
    pub(crate) fn announced(&self, local: Ipv4Addr) -> Ipv4Addr {
        self.router_id.unwrap_or(local)
    }

    /// The group's service ID.
    pub(crate) fn id(&self) -> u8 {
        self.config.service_id
    }

    /// The Service Info sent: the definition in force, or a bare one before any is known.
    pub(crate) fn service_info(&self) -> ServiceInfo {
        self.definition.clone().unwrap_or_else(|| ServiceInfo {
            service_type: self.config.service_type,
            ..ServiceInfo::standard(self.config.service_id)
        })
    }

    /// Earliest deadline of the group and its caches.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let drained = self.draining.values().map(|(_, until)| *until).min();
        self.caches
            .values()
            .fold(earliest(self.timers.next_deadline(), drained), |acc, e| {
                earliest(acc, e.timers.next_deadline())
            })
    }

    /// \[R1\] §3.2: standard services match on type and ID; a dynamic one must equal the
    /// definition in force (if any).
    fn definition_accepts(&self, announced: &ServiceInfo) -> bool {
        match self.config.service_type {
            ServiceType::Standard => announced.service_type == ServiceType::Standard,
            ServiceType::Dynamic | ServiceType::Unknown(_) => self
                .definition
                .as_ref()
                .map_or(true, |d| d.same_definition(announced)),
        }
    }

    /// Forwarding methods offered to a cache: the configured ones, L2 only if adjacent.
    fn offered_forwarding(&self, adjacent: bool) -> ForwardingMethods {
        let mut allowed = ForwardingMethods::GRE;
        if adjacent {
            allowed |= ForwardingMethods::L2;
        }
        self.config.forwarding.intersection(allowed)
    }

    /// Return methods offered to a cache: the configured ones, L2 only if adjacent.
    fn offered_return(&self, adjacent: bool) -> ReturnMethods {
        let mut allowed = ReturnMethods::GRE;
        if adjacent {
            allowed |= ReturnMethods::L2;
        }
        self.config.packet_return.intersection(allowed)
    }

    /// Assignment methods offered: the group's once fixed, else the configured ones.
    fn offered_assignment(&self) -> AssignmentMethods {
        let known = AssignmentMethods::HASH | AssignmentMethods::MASK;
        match self.method {
            Some(m) => self.config.assignment.intersection(m.bits()),
            None => self.config.assignment.intersection(known),
        }
    }

    /// The group's timers: the ones the first usable cache fixed, else the configured ones.
    pub(crate) fn group_timers(&self) -> TimerConfig {
        self.fixed_timers.unwrap_or(self.config.timers)
    }

    /// True when a cache may use `t` (\[R1\]): the group's once fixed, else the defaults or,
    /// with `fast_timers`, values within the accepted ranges.
    fn timers_supported(&self, t: &TimerConfig) -> bool {
        t.acceptable(self.config.fast_timers) && self.fixed_timers.map_or(true, |f| f == *t)
    }

    /// The timer elements of an I_SEE_YOU (\[R1\]): the group's values once fixed to
    /// non-default ones (for every cache), else — to a cache that asked — the accepted ranges
    /// (with `fast_timers`) or the defaults as single values. Nothing otherwise, so that the
    /// bytes Squid-like caches see do not change.
    fn offered_timers(&self, asked: bool) -> Option<[Capability; 2]> {
        match self.fixed_timers {
            Some(f) if !f.is_default() => Some(f.capabilities()),
            _ if !asked => None,
            Some(f) => Some(f.capabilities()),
            None if self.config.fast_timers => Some(TimerConfig::accepted_ranges()),
            None => Some(TimerConfig::default().capabilities()),
        }
    }

    /// A cache's timer choice (absent = the defaults): single values the router supports.
    fn negotiate_timers(&self, caps: Option<&CapabilitiesInfo>) -> Result<TimerConfig, DropReason> {
        TimerConfig::from_choice(caps)
            .filter(|t| self.timers_supported(t))
            .ok_or(DropReason::TimersUnsupported)
    }

    /// A cache's choices (absent = GRE/hash/GRE, §3.10): exactly one offered option each.
    fn negotiate(
        &self,
        caps: Option<&CapabilitiesInfo>,
        adjacent: bool,
    ) -> Result<Methods, DropReason> {
        let unsupported = DropReason::CapabilityUnsupported;
        let fwd = caps
            .and_then(CapabilitiesInfo::forwarding)
            .unwrap_or(ForwardingMethods::GRE);
        let ret = caps
            .and_then(CapabilitiesInfo::packet_return)
            .unwrap_or(ReturnMethods::GRE);
        let asg = caps
            .and_then(CapabilitiesInfo::assignment)
            .unwrap_or(AssignmentMethods::HASH);
        let methods = Methods {
            forwarding: ForwardingMethod::from_choice(fwd).ok_or(unsupported)?,
            packet_return: ReturnMethod::from_choice(ret).ok_or(unsupported)?,
            assignment: AssignmentMethod::from_choice(asg).ok_or(unsupported)?,
        };
        self.still_supported(&methods, adjacent)
            .then_some(methods)
            .ok_or(unsupported)
    }

    /// True when `m` is (still) within what this router offers the cache.
    fn still_supported(&self, m: &Methods, adjacent: bool) -> bool {
        self.offered_forwarding(adjacent)
            .contains(m.forwarding.bits())
            && self
                .offered_return(adjacent)
                .contains(m.packet_return.bits())
            && self.offered_assignment().contains(m.assignment.bits())
    }

    /// HERE_I_AM (§5): track the cache, check the Receive ID it echoes, negotiate, update the
    /// membership, and always answer with a unicast I_SEE_YOU.
    pub(crate) fn handle_here_i_am(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        local: Ipv4Addr,
        msg: &Message,
        io: &mut Io<'_>,
    ) {
        let hia = match HereIAm::try_from(msg) {
            Ok(h) => h,
            Err(e) => return self.counters.count(e.as_str()),
        };
        if hia.identity.cache_ip != src {
            return self.counters.reject(DropReason::IdentityMismatch);
        }
        if !self.config.admits(src) {
            return self.counters.reject(DropReason::NotInGroupList);
        }
        if !self.definition_accepts(&hia.service) {
            return self.counters.reject(DropReason::ServiceConflict);
        }
        if !self.caches.contains_key(&src) && !self.make_room(src) {
            return self.counters.reject(DropReason::TooManyCaches);
        }
        // Authenticated and admitted: only now may the receiving link say whether the cache
        // is L2-adjacent (issue 13 item 11), before negotiation reads it.
        match io.on_link {
            Some(true) if io.adjacent.len() < super::MAX_ADJACENT || io.adjacent.contains(&src) => {
                io.adjacent.insert(src);
            }
            Some(true) => io.counters.count("wccp-adjacency-full"),
            Some(false) => io.adjacency_lost |= io.adjacent.remove(&src),
            None => {}
        }

        // §5 two-way check: the echo must be the last Receive ID sent to this cache.
        let last_sent = self
            .caches
            .get(&src)
            .and_then(|e| e.sent_ids.get(&local).copied());
        // Caches echo the Router ID we announced (Squid and swcache copy it from the
        // I_SEE_YOU); the local address is accepted too, as before an ID was configured. A
        // cache talking to two of our addresses lists the Router ID twice: any element may
        // carry the echo.
        let ours = [self.announced(local), local];
        let echo_ok = last_sent.is_some()
            && hia
                .view
                .routers
                .iter()
                .any(|r| ours.contains(&r.router_ip) && Some(r.receive_id) == last_sent);
        if echo_ok && self.definition.is_none() {
            // [R1] §3.2: the first cache defines a dynamic service; only one that completed
            // the handshake, so that one stray datagram cannot fix a wrong definition.
            self.definition = Some(hia.service.clone());
        }
        // Until a definition is learnt a joining cache is answered with its own.
        let reply_service = self
            .definition
            .clone()
            .unwrap_or_else(|| hia.service.clone());
        let caps = hia.capabilities.as_ref();
        let verdict = echo_ok.then(|| {
            let methods = self.negotiate(caps, io.adjacent.contains(&src))?;
            Ok((methods, self.negotiate_timers(caps)?))
        });
        let asked_timers =
            caps.is_some_and(|c| c.transmit_t().is_some() || c.timer_scale().is_some());
        // SHUTDOWN (\[R1\] §6.12) counts only with a valid echo, like the rest of the message:
        // otherwise anyone who can spoof a cache's address could take it out.
        let shutdown = echo_ok
            && hia
                .command
                .as_ref()
                .is_some_and(|c| c.commands.contains(&Command::Shutdown(src)));
        if shutdown {
            // Out at once rather than after 30 s of silence; refresh moves the change number
            // and tells the driver. Its buckets go, but it stays a target for the flows
            // already on it for a while (a graceful shutdown finishes them).
            if let Some(t) = self.target(src) {
                self.draining.insert(src, (t, now + SHUTDOWN_DRAIN));
            }
            self.caches.remove(&src);
            self.refresh(now, io);
            let ack = CommandExtension {
                commands: vec![Command::ShutdownResponse(src)],
            };
            return self.send_i_see_you(src, local, reply_service, Some(ack), io);
        }
        let usable_others = self
            .caches
            .iter()
            .filter(|(a, e)| **a != src && e.phase.is_usable())
            .count();

        let default_timers = self.config.timers;
        let entry = self.caches.entry(src).or_insert_with(|| {
            let mut e = CacheEntry::new(now, local);
            // A cache that never echoes is forgotten like a silent one (no query: it is
            // not a member).
            e.timers
                .set(CacheTimer::Expire, now + default_timers.member_dead());
            e
        });
        entry.asked_timers = asked_timers;
        if let Some(Ok((_, t))) = &verdict {
            // Its own timers from now on: it sends HERE_I_AMs every TRANSMIT_T it chose.
            entry.timer_config = *t;
        }
        let timers = entry.timer_config;
        if echo_ok || !entry.echoed {
            // How it talks now decides how it is answered (a cache that has not proven
            // anything yet may still change its mind without waiting to expire).
            entry.multicast = io.via_group;
        }
        if echo_ok {
            // Only a valid echo is a keepalive ([R1]: ignore the message otherwise), so that
            // a stale or spoofed HERE_I_AM cannot keep a dead cache in the view.
            entry.router_id = local;
            entry.last_seen = now;
            entry.queries_sent = 0;
            entry.echoed = true;
            entry
                .timers
                .set(CacheTimer::RemovalQuery, now + timers.removal_query());
            entry
                .timers
                .set(CacheTimer::Expire, now + timers.member_dead());
        }
        match verdict {
            None => self.counters.reject(DropReason::ReceiveIdMismatch),
            Some(verdict) => {
                // [R1]: everything else in the message is considered only after a valid echo.
                let (weight, status) = hia.identity.data.weight_status().unwrap_or((0, 0));
                entry.weight = weight;
                entry.status = status;
                entry.reported_routers = hia.view.routers.iter().map(|r| r.router_ip).collect();
                entry.phase = match verdict {
                    Ok(_) if usable_others >= MAX_CACHES => {
                        CachePhase::Unusable(DropReason::TooManyCaches)
                    }
                    Ok((m, _)) => CachePhase::Usable(m),
                    Err(reason) => CachePhase::Unusable(reason),
                };
                if let CachePhase::Unusable(reason) = entry.phase {
                    self.counters.reject(reason);
                }
            }
        }
        // Update the membership first so that the reply already shows the cache as usable.
        self.refresh(now, io);
        if io.via_group.is_some() {
            // Draft §4.1: a multicast HERE_I_AM is answered by the scheduled I_SEE_YOU.
            let at = now + self.multicast_interval();
            return self.timers.set_if_idle(GroupTimer::MulticastISeeYou, at);
        }
        // A source that never echoed has not shown it receives what we send: answer it
        // within the budget only, so that spoofed HERE_I_AMs cannot make us a reflector.
        let proven = self.caches.get(&src).is_some_and(|e| e.echoed);
        if !proven && !self.limiter.allow(now, src) {
            return self.counters.count("wccp-i-see-you-rate-limited");
        }
        self.send_i_see_you(src, local, reply_service, None, io);
    }

    /// Makes room to track the newcomer `src` (issue 13 item 10): a network at its
    /// [`JOINING_PER_NET`] loses its oldest Joining cache, a group at [`MAX_JOINING`] (or
    /// [`MAX_TRACKED`]) the oldest Joining cache of its most crowded network; caches never
    /// answered go first, echoed ones never. False when only echoed caches are left.
    fn make_room(&mut self, src: Ipv4Addr) -> bool {
        let mut per_net: BTreeMap<u32, usize> = BTreeMap::new();
        for (a, _) in self.caches.iter().filter(|(_, e)| !e.echoed) {
            *per_net.entry(source_net(*a)).or_insert(0) += 1;
        }
        let joining: usize = per_net.values().sum();
        let net = source_net(src);
        let victim = if per_net.get(&net).copied().unwrap_or(0) >= JOINING_PER_NET {
            self.oldest_joining(|a| source_net(a) == net, &per_net)
        } else if joining >= MAX_JOINING || self.caches.len() >= MAX_TRACKED {
            self.oldest_joining(|_| true, &per_net)
        } else {
            return true;
        };
        match victim {
            Some(v) => {
                self.caches.remove(&v);
                self.counters.count("wccp-joining-evicted");
                true
            }
            None => false,
        }
    }

    /// The Joining cache to evict among those `within` picks: never answered first, then
    /// from the most crowded network, then the oldest.
    fn oldest_joining(
        &self,
        within: impl Fn(Ipv4Addr) -> bool,
        per_net: &BTreeMap<u32, usize>,
    ) -> Option<Ipv4Addr> {
        self.caches
            .iter()
            .filter(|(a, e)| !e.echoed && within(**a))
            .min_by_key(|(a, e)| {
                let crowd = per_net.get(&source_net(**a)).copied().unwrap_or(0);
                (e.answered, core::cmp::Reverse(crowd), e.first_seen)
            })
            .map(|(a, _)| *a)
    }

    /// REDIRECT_ASSIGN (§5): from a usable cache, keyed with that cache's address, with this
    /// router's element carrying the last Receive ID sent to that cache and the current
    /// Member Change Number, in the group's method. Installs it and stops the flush timer.
    pub(crate) fn handle_redirect_assign(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        local: Ipv4Addr,
        msg: &Message,
        io: &mut Io<'_>,
    ) {
        let ra = match RedirectAssign::try_from(msg) {
            Ok(r) => r,
            Err(e) => return self.counters.count(e.as_str()),
        };
        if !self.caches.get(&src).is_some_and(|e| e.phase.is_usable()) {
            return self.counters.reject(DropReason::AssignFromUnusableCache);
        }
        match self
            .validate_assign(src, local, ra)
            .and_then(|a| self.arbitrate(src, a))
        {
            Ok(accepted) => {
                self.accepted = Some(accepted);
                self.timers.stop(GroupTimer::Flush);
                if self.recompile(io) > 0 {
                    self.counters.reject(DropReason::AssignUnknownCache);
                }
            }
            Err(reason) => {
                self.counters.reject(reason);
                // Squid assigns only when the change number moves, so with nothing in force
                // a rejected assignment would otherwise leave the group unredirected until
                // the flush. A cache cannot have assigned for the current number before
                // the assignment wait, so earlier rejections (or a stale number) are left
                // alone rather than restarting its wait.
                let waited = self
                    .changed_at
                    .map_or(true, |t| now >= t + self.group_timers().assignment_wait());
                if self.accepted.is_none()
                    && reason != DropReason::AssignStaleChangeNumber
                    && waited
                {
                    self.bump_change_number(now);
                }
            }
        }
    }

    /// One assignment per Member Change Number, so that caches whose designated-cache
    /// elections disagree (Squid compares addresses as little-endian host integers, the draft
    /// and swcache as big-endian) cannot make it flap: the first valid assignment for a number
    /// stays, and the same cache may update it; another cache's is refused
    /// (`wccp-assign-competing`) unless that cache is the one the draft elects (the lowest
    /// address among the usable caches), which then replaces it once. A new number (a
    /// membership change) opens the choice again.
    fn arbitrate(&self, src: Ipv4Addr, a: Accepted) -> Result<Accepted, DropReason> {
        let Some(cur) = &self.accepted else {
            return Ok(a);
        };
        let elected = self.members.iter().next().copied();
        let open = cur.change_number != self.change_number
            || cur.key.cache_ip == src
            || elected == Some(src);
        if open {
            Ok(a)
        } else {
            Err(DropReason::AssignCompeting)
        }
    }

    /// Checks a REDIRECT_ASSIGN from the usable cache `src` (§5) and returns what to keep.
    fn validate_assign(
        &self,
        src: Ipv4Addr,
        local: Ipv4Addr,
        ra: RedirectAssign,
    ) -> Result<Accepted, DropReason> {
        let Some(entry) = self.caches.get(&src) else {
            return Err(DropReason::AssignFromUnusableCache);
        };
        let (key, routers, body) = match ra.assignment {
            RedirectAssignment::Hash(info) => (
                info.key,
                info.routers,
                AcceptedBody::Hash {
                    caches: info.buckets.caches,
                    buckets: info.buckets.buckets,
                },
            ),
            RedirectAssignment::Alternate(alt) => {
                let body = match alt.body {
                    AssignmentBody::Hash(h) => AcceptedBody::Hash {
                        caches: h.caches,
                        buckets: h.buckets,
                    },
                    AssignmentBody::Mask(sets) => AcceptedBody::Mask(sets),
                    AssignmentBody::AltMask(sets) => AcceptedBody::AltMask(sets),
                    AssignmentBody::Unknown { .. } => return Err(DropReason::AssignWrongMethod),
                };
                (alt.key, alt.routers, body)
            }
        };
        // §3.13: the key is the designated cache's address and its change number.
        if key.cache_ip != src {
            return Err(DropReason::AssignBadKey);
        }
        let method = match body {
            AcceptedBody::Hash { .. } => AssignmentMethod::Hash,
            AcceptedBody::Mask(_) | AcceptedBody::AltMask(_) => AssignmentMethod::Mask,
        };
        if self.method != Some(method) {
            return Err(DropReason::AssignWrongMethod);
        }
        // Caches list us by the Router ID we announced (or, before one was configured, by
        // the address they talk to).
        let ours = [self.announced(local), local, entry.router_id];
        let listed: Vec<&RouterAssignmentElement> = routers
            .iter()
            .filter(|r| ours.contains(&r.router_ip))
            .collect();
        if listed.is_empty() {
            return Err(DropReason::AssignNotListed);
        }
        let sent = entry.sent_ids.get(&local).copied();
        // Listed twice (two of our addresses, one Router ID): the element echoing what was
        // sent through `local` is ours.
        let Some(own) = listed
            .iter()
            .find(|r| Some(r.receive_id) == sent)
            .or_else(|| listed.first())
        else {
            return Err(DropReason::AssignNotListed);
        };
        if sent != Some(own.receive_id) {
            return Err(DropReason::AssignStaleReceiveId);
        }
        if own.change_number != self.change_number {
            return Err(DropReason::AssignStaleChangeNumber);
        }
        Ok(Accepted {
            key,
            change_number: self.change_number,
            body,
        })
    }

    /// Moves the Member Change Number (never to 0, §5) and starts waiting for an assignment.
    fn bump_change_number(&mut self, now: Instant) {
        self.change_number = next_nonzero(self.change_number);
        self.changed_at = Some(now);
        self.timers.set_if_idle(
            GroupTimer::Flush,
            now + self.group_timers().assignment_flush(),
        );
    }

    /// Timers: flush the assignment, query silent caches, drop dead ones.
    pub(crate) fn handle_timeout(&mut self, now: Instant, io: &mut Io<'_>) {
        self.draining.retain(|_, (_, until)| *until > now);
        let mut multicast_due = false;
        while let Some(t) = self.timers.pop_expired(now) {
            if t == GroupTimer::MulticastISeeYou {
                multicast_due = true;
                continue;
            }
            // §1: no valid REDIRECT_ASSIGN within 50 s of a membership change.
            self.counters.count("wccp-assignment-flushed");
            self.accepted = None;
            if !self.members.is_empty() {
                // A lost REDIRECT_ASSIGN is never resent by Squid-like caches until the
                // number moves: move it so the designated cache assigns again.
                self.bump_change_number(now);
            }
        }
        let mut query = Vec::new();
        let mut dead = Vec::new();
        for (addr, e) in &mut self.caches {
            while let Some(t) = e.timers.pop_expired(now) {
                match t {
                    CacheTimer::RemovalQuery => query.push(*addr),
                    CacheTimer::Expire => dead.push(*addr),
                }
            }
        }
        for addr in query.into_iter().filter(|a| !dead.contains(a)) {
            self.send_removal_query(addr, io);
        }
        for addr in &dead {
            // Forgetting a cache that never echoed loses nothing: it is not counted, so that
            // a cache like Squid 5.7 is not reported as expiring every 30 s.
            if self.caches.remove(addr).is_some_and(|e| e.echoed) {
                self.counters.count("wccp-cache-expired");
            }
        }
        self.refresh(now, io);
        if multicast_due {
            self.send_multicast_i_see_you(now, io);
        }
    }

    /// The next gap of the multicast I_SEE_YOU schedule: 0.9 × TRANSMIT_T ± 10 % (draft
    /// §4.1: 9 s with 10 % jitter), uniformly spread so that routers sharing a group drift
    /// apart instead of answering in lock-step.
    pub(crate) fn multicast_interval(&mut self) -> std::time::Duration {
        // splitmix64: deterministic per seed (tests), unpredictable enough for spreading.
        self.jitter = self.jitter.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.jitter;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let base = self.config.timers.here_i_am_interval().saturating_mul(9) / 10;
        // 0.9..=1.1 of the base, in thousandths.
        let permille = 900 + (z % 201) as u32;
        base.saturating_mul(permille) / 1000
    }

    /// The scheduled I_SEE_YOU to the multicast group (§1, §3.3): for each of our addresses
    /// that multicast caches reach, one message (per 32 caches) whose Received-From lists
    /// them and whose Sent-To is the group; each listed cache is to echo its Receive ID. The
    /// schedule goes on while any cache talks to the group.
    fn send_multicast_i_see_you(&mut self, now: Instant, io: &mut Io<'_>) {
        let Some(group) = self.config.multicast_group else {
            return;
        };
        let mut by_local: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> = BTreeMap::new();
        for (a, e) in &self.caches {
            if e.multicast == Some(group) {
                by_local.entry(e.router_id).or_default().push(*a);
            }
        }
        if by_local.is_empty() {
            return;
        }
        let service = self.service_info();
        for (local, caches) in by_local {
            for chunk in caches.chunks(MAX_CACHES) {
                self.send_group_i_see_you(group, local, chunk, service.clone(), io);
            }
        }
        self.multicast_sent = self.multicast_sent.saturating_add(1);
        let at = now + self.multicast_interval();
        self.timers.set(GroupTimer::MulticastISeeYou, at);
    }

    /// One I_SEE_YOU from our address `local` to `group` for `caches` (all talking to it).
    fn send_group_i_see_you(
        &mut self,
        group: Ipv4Addr,
        local: Ipv4Addr,
        caches: &[Ipv4Addr],
        service: ServiceInfo,
        io: &mut Io<'_>,
    ) {
        let Some(first) = caches.first() else {
            return;
        };
        let receive_id = self.receive_ids.next(*first);
        for c in caches {
            if let Some(e) = self.caches.get_mut(c) {
                e.sent_ids.insert(local, receive_id);
                e.answered = true;
            }
        }
        // One message for all: L2 is offered only if every cache it names may use it.
        let adjacent = caches.iter().all(|c| io.adjacent.contains(c));
        let identity = RouterIdentityInfo {
            router: RouterIdElement {
                router_ip: self.announced(local),
                receive_id,
            },
            sent_to: group,
            received_from: caches.to_vec(),
        };
        let mut isy = ISeeYou::new(service, identity, self.router_view());
        isy.capabilities = Some(CapabilitiesInfo::methods(
            self.offered_forwarding(adjacent),
            self.offered_assignment(),
            self.offered_return(adjacent),
        ));
        if self.installed.is_mask() && !self.installed.is_empty() {
            isy.assignment_map = Some(AssignmentMap {
                sets: self.installed.mask_value_sets(),
            });
        }
        self.send(&isy.into_message(), group, local, io);
    }

    /// Re-checks usable caches against what is offered now (after a reconfiguration or an
    /// adjacency change) and updates the membership.
    pub(crate) fn revalidate(&mut self, now: Instant, io: &mut Io<'_>) {
        let admitted: Vec<Ipv4Addr> = self
            .caches
            .keys()
            .copied()
            .filter(|a| !self.config.admits(*a))
            .collect();
        for a in admitted {
            self.caches.remove(&a);
        }
        let broken: Vec<(Ipv4Addr, DropReason)> = self
            .caches
            .iter()
            .filter_map(|(a, e)| {
                let m = e.phase.methods()?;
                if !self.still_supported(&m, io.adjacent.contains(a)) {
                    Some((*a, DropReason::CapabilityUnsupported))
                } else if !self.timers_supported(&e.timer_config) {
                    Some((*a, DropReason::TimersUnsupported))
                } else {
                    None
                }
            })
            .collect();
        for (a, reason) in broken {
            if let Some(e) = self.caches.get_mut(&a) {
                e.phase = CachePhase::Unusable(reason);
            }
        }
        self.refresh(now, io);
    }

    /// Replaces the configuration; a changed definition or service type restarts the group.
    pub(crate) fn reconfigure(
        &mut self,
        now: Instant,
        config: RouterServiceConfig,
        io: &mut Io<'_>,
    ) {
        let fixed = config.fixed_definition();
        let conflict = config.service_type != self.config.service_type
            || fixed
                .as_ref()
                .is_some_and(|f| self.definition.as_ref().is_some_and(|d| d != f));
        self.config = config;
        if conflict {
            self.caches.clear();
        }
        if fixed.is_some() || self.caches.is_empty() {
            self.definition = fixed;
        }
        self.revalidate(now, io);
    }

    /// After any change to the caches: Member Change Number, Router View routers, events,
    /// the group's method and definition, and the compiled assignment.
    pub(crate) fn refresh(&mut self, now: Instant, io: &mut Io<'_>) {
        let members: BTreeSet<Ipv4Addr> = self
            .caches
            .iter()
            .filter(|(_, e)| e.phase.is_usable())
            .map(|(a, _)| *a)
            .collect();
        let routers: BTreeSet<Ipv4Addr> = members
            .iter()
            .filter_map(|a| self.caches.get(a))
            .flat_map(|e| e.reported_routers.iter().copied())
            .collect();
        if members != self.members || routers != self.view_routers {
            // §5: the number changes whenever the usable-cache set or router list changes.
            self.bump_change_number(now);
            let service = self.id();
            for cache in members.difference(&self.members) {
                if let Some(methods) = self.caches.get(cache).and_then(|e| e.phase.methods()) {
                    io.events.push_back(RouterEvent::CacheUsable {
                        service,
                        cache: *cache,
                        methods,
                    });
                }
            }
            for cache in self.members.difference(&members) {
                io.events.push_back(RouterEvent::CacheLost {
                    service,
                    cache: *cache,
                });
            }
            self.members = members;
            self.view_routers = routers;
        }
        // A cache that is usable again is no longer draining.
        self.draining.retain(|a, _| !self.members.contains(a));
        if self.members.is_empty() && self.draining.is_empty() {
            // The group is empty: the method and timers are free again and nothing is
            // assigned.
            self.method = None;
            self.fixed_timers = None;
            self.accepted = None;
            self.timers.stop(GroupTimer::Flush);
        } else {
            let first = self
                .members
                .iter()
                .filter_map(|a| self.caches.get(a))
                .find(|e| e.phase.is_usable());
            if self.method.is_none() {
                self.method = first.and_then(|e| e.phase.methods()).map(|m| m.assignment);
            }
            if self.fixed_timers.is_none() {
                self.fixed_timers = first.map(|e| e.timer_config);
            }
        }
        if self.caches.is_empty() {
            // [R1] §3.2: a learnt definition is forgotten when the last cache leaves.
            self.definition = self.config.fixed_definition();
        }
        self.recompile(io);
    }

    /// A usable cache as a data-plane target.
    fn target(&self, cache: Ipv4Addr) -> Option<CacheTarget> {
        let e = self.caches.get(&cache)?;
        let m = e.phase.methods()?;
        Some(CacheTarget {
            address: cache,
            router_id: e.router_id,
            forwarding: m.forwarding,
            packet_return: m.packet_return,
        })
    }

    /// The accepted assignment compiled against the usable caches now, and how many buckets
    /// or values pointed at caches that are not usable.
    fn compile(&self) -> (Assignment, usize) {
        let service = self.service_info();
        let (a, dropped) = match &self.accepted {
            None => (Assignment::empty(service), 0),
            Some(acc) => match &acc.body {
                AcceptedBody::Hash { caches, buckets } => {
                    let targets: Vec<Option<CacheTarget>> =
                        caches.iter().map(|c| self.target(*c)).collect();
                    Assignment::hash(service, acc.key, &targets, buckets)
                }
                AcceptedBody::Mask(sets) => {
                    Assignment::mask(service, acc.key, sets, |c| self.target(c))
                }
                AcceptedBody::AltMask(sets) => {
                    Assignment::alt_mask(service, acc.key, sets, |c| self.target(c))
                }
            },
        };
        // Draining caches count as members too: their own traffic is never redirected.
        let a = a
            .with_members(self.members.iter().chain(self.draining.keys()).copied())
            .with_draining(self.draining.values().map(|(t, _)| *t));
        (a, dropped)
    }

    /// Recompiles and, when the result differs, installs it and tells the driver. Returns
    /// the number of buckets or values dropped for pointing at caches that are not usable.
    pub(crate) fn recompile(&mut self, io: &mut Io<'_>) -> usize {
        let (a, dropped) = self.compile();
        if a != *self.installed {
            let a = Arc::new(a);
            self.installed = Arc::clone(&a);
            io.events.push_back(RouterEvent::AssignmentChanged {
                service: self.id(),
                assignment: a,
            });
        }
        dropped
    }

    /// The Router View (§3.5): change number, the echoed key, routers reported by the usable
    /// caches, and the usable caches' identity elements.
    fn router_view(&self) -> RouterViewInfo {
        RouterViewInfo {
            member_change_number: self.change_number,
            key: self
                .accepted
                .as_ref()
                .map_or(AssignmentKey::NONE, |a| a.key),
            routers: self.view_routers.iter().copied().collect(),
            caches: self
                .members
                .iter()
                .filter_map(|a| self.view_element(*a))
                .collect(),
        }
    }

    /// A usable cache's identity element as the router reports it: hash data with its
    /// buckets (U set while nothing is installed), or — for mask — the 16-octet layout Squid
    /// can skip (no sets, U clear; reference §9), the sets going in the Assignment Map.
    fn view_element(&self, cache: Ipv4Addr) -> Option<WebCacheIdentityElement> {
        let e = self.caches.get(&cache)?;
        let m = e.phase.methods()?;
        let (weight, status) = (e.weight, e.status);
        let mut element = match m.assignment {
            AssignmentMethod::Mask => WebCacheIdentityElement::new(
                cache,
                AssignmentData::Mask(MaskAssignmentData {
                    sets: Vec::new(),
                    weight,
                    status,
                }),
            ),
            AssignmentMethod::Hash => WebCacheIdentityElement::new(
                cache,
                AssignmentData::Hash(HashAssignmentData {
                    buckets: self.installed.bitmap_for(cache, self.config.bit_order),
                    weight,
                    status,
                }),
            ),
        };
        if m.assignment == AssignmentMethod::Hash && self.installed.is_empty() {
            element.flags = IdentityFlags::HISTORICAL;
        }
        Some(element)
    }

    /// Unicast I_SEE_YOU to `cache` from the local address it talked to, `router_id` (§4,
    /// §5; also "Sent To"), announcing the configured Router ID, with a fresh Receive ID
    /// (remembered if the cache is still tracked).
    fn send_i_see_you(
        &mut self,
        cache: Ipv4Addr,
        router_id: Ipv4Addr,
        service: ServiceInfo,
        command: Option<CommandExtension>,
        io: &mut Io<'_>,
    ) {
        let receive_id = self.receive_ids.next(cache);
        if let Some(e) = self.caches.get_mut(&cache) {
            e.sent_ids.insert(router_id, receive_id);
            e.answered = true;
        }
        let adjacent = io.adjacent.contains(&cache);
        let identity = RouterIdentityInfo {
            router: RouterIdElement {
                router_ip: self.announced(router_id),
                receive_id,
            },
            sent_to: router_id,
            received_from: vec![cache],
        };
        let mut isy = ISeeYou::new(service, identity, self.router_view());
        isy.command = command;
        let mut caps = CapabilitiesInfo::methods(
            self.offered_forwarding(adjacent),
            self.offered_assignment(),
            self.offered_return(adjacent),
        );
        let asked = self.caches.get(&cache).is_some_and(|e| e.asked_timers);
        if let Some(timers) = self.offered_timers(asked) {
            caps.elements.extend(timers);
        }
        isy.capabilities = Some(caps);
        if self.installed.is_mask() && !self.installed.is_empty() {
            isy.assignment_map = Some(AssignmentMap {
                sets: self.installed.mask_value_sets(),
            });
        }
        self.send(&isy.into_message(), cache, router_id, io);
    }

    /// Unicast REMOVAL_QUERY to a silent cache (§3.8, §5).
    fn send_removal_query(&mut self, cache: Ipv4Addr, io: &mut Io<'_>) {
        let Some(e) = self.caches.get_mut(&cache) else {
            return;
        };
        e.queries_sent = e.queries_sent.saturating_add(1);
        let router_id = e.router_id;
        let sent_to = e.multicast.unwrap_or(router_id);
        let receive_id = e.last_sent_id().unwrap_or(self.receive_ids.last());
        let query = RouterQueryInfo {
            router: RouterIdElement {
                router_ip: self.announced(router_id),
                receive_id,
            },
            sent_to,
            target: cache,
        };
        let msg = RemovalQuery::new(self.service_info(), query).into_message();
        self.send(&msg, cache, router_id, io);
    }

    /// Signs, encodes and queues a message.
    fn send(&mut self, msg: &Message, dst: Ipv4Addr, src: Ipv4Addr, io: &mut Io<'_>) {
        match self.config.security.encode(msg) {
            Ok(bytes) => {
                if !io.outbox.push(dst, src, bytes) {
                    io.counters.reject(DropReason::TxQueueFull);
                }
                self.counters.tx.bump(msg.kind);
                io.counters.tx.bump(msg.kind);
            }
            Err(e) => self.counters.count(e.as_str()),
        }
    }
}
