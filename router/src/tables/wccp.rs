//! What the WCCP data plane reads: per service group the installed assignment, its redirect
//! list, which caches fast failover has taken out, and the counters the redirect and return
//! paths add to (shared by all workers, kept by the control plane across assignment changes so
//! `swrouter status` shows totals since start).

use conf::WccpAclRule;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wccp::assign::Assignment;

/// Packets and bytes, added to by any worker.
#[derive(Debug, Default)]
pub struct Traffic {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    /// Counts one packet of `len` bytes.
    #[inline]
    pub fn add(&self, len: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// (packets, bytes) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Counters of one service group (SPEC.md §4: redirected, returned, bypassed, denied,
/// unassigned).
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Sent to a cache.
    pub redirected: Traffic,
    /// Came back from a cache (GRE or L2 return) and were forwarded normally.
    pub returned: Traffic,
    /// Forwarded normally because fast failover took their cache out.
    pub bypassed: Traffic,
    /// Forwarded normally because their bucket or mask value has no cache.
    pub unassigned: Traffic,
    /// Forwarded normally because the redirect list denied them.
    pub denied: Traffic,
    /// Sent to the cache their TCP flow started on rather than the bucket's new owner.
    pub affinity_kept: Traffic,
    /// Non-first IP fragments sent where their datagram's first fragment went (also counted
    /// in `redirected`).
    pub fragments_redirected: Traffic,
    /// Non-first IP fragments of a protocol this service intercepts whose first fragment this
    /// worker had not seen (reordered, expired or evicted): forwarded normally.
    pub fragments_unmatched: Traffic,
    /// No cache could take them (unassigned or bypassed) and `fail-policy = "open"` forwarded
    /// them normally.
    pub fail_open_forwarded: Traffic,
    /// No cache could take them and `fail-policy = "closed-drop"` (or a closed policy's later
    /// fragment) dropped them.
    pub fail_closed_dropped: Traffic,
    /// No cache could take them and `fail-policy = "closed-reject"` dropped them and answered
    /// the client (TCP RST or ICMP administratively prohibited; the answer is rate limited).
    pub fail_closed_rejected: Traffic,
    /// GRE-redirected TCP SYNs (client to cache) and their SYN-ACKs (cache to client) whose
    /// MSS option was lowered (`gre-mss-clamp`).
    pub mss_clamped: Traffic,
    /// GRE-redirected packets without DF too big for the cache link once encapsulated: the
    /// outer packet leaves in IP fragments.
    pub gre_fragmented: Traffic,
    /// GRE-redirected packets with DF too big for the cache link once encapsulated: dropped,
    /// and the client told the MTU it can use (ICMP fragmentation needed, rate limited).
    pub gre_too_big: Traffic,
}

/// Counters of one cache in one service group.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Sent to this cache.
    pub redirected: Traffic,
    /// Returned by this cache.
    pub returned: Traffic,
    /// Meant for this cache while fast failover had taken it out.
    pub bypassed: Traffic,
}

/// Flow-affinity table statistics, summed over the per-worker tables.
#[derive(Debug, Default)]
pub struct AffinityStats {
    /// Flows currently remembered.
    pub entries: AtomicU64,
    /// Flows forgotten early because their table slot set was full.
    pub evicted: AtomicU64,
}

/// Flow-affinity settings the workers' tables follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityConf {
    /// Remember flows at all.
    pub enabled: bool,
    /// Table size per worker (flows).
    pub flows_per_worker: u32,
    /// Seconds of silence after which a flow is forgotten.
    pub idle_secs: u32,
}

impl Default for AffinityConf {
    fn default() -> Self {
        AffinityConf {
            enabled: false,
            flows_per_worker: 0,
            idle_secs: conf::DEFAULT_AFFINITY_IDLE_SECS,
        }
    }
}

/// One service group as the data plane sees it.
#[derive(Debug, Clone)]
pub struct ServicePlane {
    /// Service id.
    pub id: u8,
    /// The assignment in force.
    pub assignment: Arc<Assignment>,
    /// Redirect list (empty = everything the service intercepts).
    pub redirect_list: Arc<[WccpAclRule]>,
    /// Per cache (index of [`Assignment::caches`]): taken out by fast failover.
    pub failed: Vec<bool>,
    /// The group's counters.
    pub counters: Arc<ServiceCounters>,
    /// Per cache (index of [`Assignment::caches`]).
    pub cache_counters: Vec<Arc<CacheCounters>>,
    /// What happens to packets no cache can take.
    pub fail_policy: conf::WccpFailPolicy,
    /// MSS clamping of GRE-redirected SYNs.
    pub gre_mss_clamp: conf::GreMssClamp,
}

impl ServicePlane {
    /// The index of the cache at `addr` in the assignment, if it is one.
    pub fn cache_index(&self, addr: Ipv4Addr) -> Option<usize> {
        self.assignment
            .caches()
            .iter()
            .position(|c| c.address == addr)
    }

    /// True when fast failover has taken cache `index` out.
    #[inline]
    pub fn is_failed(&self, index: usize) -> bool {
        self.failed.get(index).copied().unwrap_or(false)
    }
}

/// The installed WCCP service groups, highest service priority first (the order the redirect
/// stage tries them in).
#[derive(Debug, Clone, Default)]
pub struct WccpPlane {
    /// Service groups with a non-empty assignment, and those with a closed `fail-policy`
    /// whatever their assignment (their packets are dropped while no cache is there).
    pub services: Vec<ServicePlane>,
    /// Cache addresses of every group with an assignment, sorted (their own traffic is never
    /// redirected).
    members: Vec<Ipv4Addr>,
    /// Usable caches of every group, assignment or not, sorted: the WCCP port's known peers.
    peers: Vec<Ipv4Addr>,
    /// Caches that return packets at layer 2: (service index, cache index, address).
    pub l2_returners: Vec<(usize, usize, Ipv4Addr)>,
    /// Flow-affinity settings.
    pub affinity: AffinityConf,
    /// Flow-affinity statistics.
    pub affinity_stats: Arc<AffinityStats>,
    /// Flow affinity's HA sync: publishing, the peer's adopted flows, export requests.
    pub affinity_sync: Arc<super::affinity::AffinitySync>,
    /// Multicast service-group addresses the router has joined on its `wccp-caches`
    /// interfaces: datagrams to them (and IGMP) are the router's own there.
    pub groups: Vec<Ipv4Addr>,
}

impl WccpPlane {
    /// True when frames to the multicast MAC `mac` are for the router on a `wccp-caches`
    /// interface: a joined group's, or all systems' (IGMP queries) while any is joined.
    #[inline]
    pub fn takes_mac(&self, mac: crate::wire::ethernet::MacAddr) -> bool {
        use crate::wire::ethernet::MacAddr;
        !self.groups.is_empty()
            && (mac == MacAddr::ipv4_multicast(crate::wire::igmp::ALL_SYSTEMS)
                || self
                    .groups
                    .iter()
                    .any(|g| MacAddr::ipv4_multicast(*g) == mac))
    }

    /// True when a datagram of `protocol` to the multicast address `dst`, arriving on an
    /// interface with `wccp-caches`, is for the router: UDP to a joined group, IGMP to a
    /// joined group or to all systems (queries).
    #[inline]
    pub fn takes_multicast(&self, dst: Ipv4Addr, protocol: u8) -> bool {
        use crate::wire::ipv4::{PROTO_IGMP, PROTO_UDP};
        !self.groups.is_empty()
            && match protocol {
                PROTO_UDP => self.groups.contains(&dst),
                PROTO_IGMP => dst == crate::wire::igmp::ALL_SYSTEMS || self.groups.contains(&dst),
                _ => false,
            }
    }
    /// A plane from per-service data; empty assignments of open services are left out.
    pub fn new(
        services: impl IntoIterator<Item = ServicePlane>,
        affinity: AffinityConf,
        affinity_stats: Arc<AffinityStats>,
    ) -> WccpPlane {
        let all: Vec<ServicePlane> = services.into_iter().collect();
        let mut peers: Vec<Ipv4Addr> = all
            .iter()
            .flat_map(|s| s.assignment.members().iter().copied())
            .collect();
        peers.sort_unstable();
        peers.dedup();
        let mut services: Vec<_> = all
            .into_iter()
            .filter(|s| !s.assignment.is_empty() || s.fail_policy != conf::WccpFailPolicy::Open)
            .collect();
        // Reference §3.2: higher priority first; the standard service ranks as 240.
        let prio = |a: &Assignment| {
            if a.service().service_type == wccp::wire::ServiceType::Standard {
                240
            } else {
                a.service().priority
            }
        };
        services.sort_by_key(|s| (std::cmp::Reverse(prio(&s.assignment)), s.id));
        let mut members: Vec<Ipv4Addr> = services
            .iter()
            .flat_map(|s| s.assignment.members().iter().copied())
            .collect();
        members.sort_unstable();
        members.dedup();
        let l2_returners = services
            .iter()
            .enumerate()
            .flat_map(|(si, s)| {
                s.assignment
                    .caches()
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.packet_return == wccp::engine::ReturnMethod::L2)
                    .map(move |(ci, c)| (si, ci, c.address))
            })
            .collect();
        WccpPlane {
            services,
            members,
            peers,
            l2_returners,
            affinity,
            affinity_stats,
            affinity_sync: Default::default(),
            groups: Vec::new(),
        }
    }

    /// A plane from bare assignments: no redirect lists, nothing failed, fresh counters, no
    /// flow affinity (for tests and benchmarks).
    pub fn from_assignments(assignments: impl IntoIterator<Item = (u8, Arc<Assignment>)>) -> Self {
        let services = assignments.into_iter().map(|(id, a)| ServicePlane {
            id,
            failed: vec![false; a.caches().len()],
            cache_counters: a.caches().iter().map(|_| Default::default()).collect(),
            assignment: a,
            redirect_list: Arc::from(Vec::new()),
            counters: Default::default(),
            fail_policy: Default::default(),
            gre_mss_clamp: Default::default(),
        });
        WccpPlane::new(services, AffinityConf::default(), Default::default())
    }

    /// True when `src` is a cache of any installed group (its traffic is never redirected).
    #[inline]
    pub fn is_member(&self, src: Ipv4Addr) -> bool {
        self.members.binary_search(&src).is_ok()
    }

    /// True when `src` is a usable cache of any group (its WCCP datagrams take the known
    /// peers' queue).
    #[inline]
    pub fn is_peer(&self, src: Ipv4Addr) -> bool {
        self.peers.binary_search(&src).is_ok()
    }
}
