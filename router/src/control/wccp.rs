//! The WCCP driver: one loop around the sans-IO `RouterEngine` (ARCHITECTURE.md §2), the
//! fast-failover prober, and the data plane's view of both.
//!
//! Inputs are the UDP 2048 datagrams the pipeline delivers (with the local address they were
//! sent to, which our answers come from, and whether the source is on the receiving link), the engine's own deadline, the probe
//! tick and the probes' answers; after every input the driver drains the engine until it is
//! quiet: datagrams go to the outbox (and through the pipeline), events are logged and their
//! assignments kept. Whenever an assignment, a cache's probe state or the configuration
//! changes, a new [`WccpPlane`] is published into the tables snapshot.
//!
//! Multicast service groups (issue 17 item 2): the router is an IGMP host member of every
//! configured group on every interface with `wccp-caches` ([`super::igmp`]); datagrams to a
//! group arrive here with their TTL (more than [`MAX_MULTICAST_TTL`] is dropped and counted as
//! `wccp-multicast-ttl-exceeded`), and the engine's datagrams to a group leave through the
//! outbox's L2 entry (the group's MAC) on the interface of their source address, with TTL
//! [`MAX_MULTICAST_TTL`].

use super::igmp::{IgmpHost, IgmpOut};
use crate::outbox::{OutDatagram, Outbox};
use crate::probe::{
    ProbeAnswer, ProbeChange, ProbeTarget, ProbeVia, Prober, Rounds, REDIRECT_PROBE_ORIGIN,
};
use crate::status::{
    AffinitySyncStatus, FastFailoverStatus, FlowAffinityStatus, IgmpStatus, WccpCacheStatus,
    WccpServiceStatus, WccpStatus, WccpTrafficStatus,
};
use crate::tables::affinity::AffinitySync;
use crate::tables::local::LocalDatagram;
use crate::tables::wccp::{
    AffinityConf, AffinityStats, CacheCounters, ServiceCounters, ServicePlane, Traffic,
};
use crate::tables::{Tables, WccpPlane};
use crate::worker::Shared;
use conf::{WccpOptions, WccpProbe, WccpServiceConf};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wccp::engine::ForwardingMethod;
use wccp::router::{RouterEngine, RouterEvent};
use wccp::wire::{ServiceFlags, ServiceInfo, ServiceType};

/// WCCP multicast TTL limit (reference §1, Cisco: ≤ 15): the TTL of what the router sends to
/// a group, and the most a datagram to a group may arrive with.
pub const MAX_MULTICAST_TTL: u8 = 15;

/// An IPv4 + UDP packet from `src`:2048 to `dst`:2048 with `ttl`.
fn wccp_udp_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8], ttl: u8) -> Vec<u8> {
    use crate::wire::ipv4::{self, Ipv4Repr};
    use crate::wire::udp::{UdpPacket, UdpRepr};
    let udp = UdpRepr {
        src_port: ::wccp::engine::WCCP_PORT,
        dst_port: ::wccp::engine::WCCP_PORT,
        payload_len: payload.len(),
    };
    let at = ipv4::MIN_HEADER_LEN;
    let mut p = vec![0u8; at + udp.buffer_len()];
    p[at + udp.header_len()..].copy_from_slice(payload);
    udp.emit(&mut UdpPacket::new_unchecked(&mut p[at..]), src, dst);
    Ipv4Repr {
        src,
        dst,
        protocol: ipv4::PROTO_UDP,
        payload_len: udp.buffer_len(),
        ttl,
        ident: ipv4::next_ident(),
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut p[..at]);
    p
}

/// How fast failover probes one service's caches, from its `probe` setting and the service's
/// definition (pinned or learnt from the caches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbePlan {
    /// A SYN to this port of [`REDIRECT_PROBE_ORIGIN`], sent the way the service's traffic is.
    Redirect(u16),
    /// A SYN straight to this port of the cache's own address.
    Direct(u16),
    /// Not probed (`probe = "off"`).
    Off,
    /// `probe = "redirect"` for a service whose traffic a TCP SYN to a port is not: why.
    Impossible(&'static str),
}

impl ProbePlan {
    fn of(probe: WccpProbe, info: &ServiceInfo) -> ProbePlan {
        match probe {
            WccpProbe::Off => ProbePlan::Off,
            WccpProbe::Direct { port } => ProbePlan::Direct(port),
            WccpProbe::Redirect if info.service_type == ServiceType::Standard => {
                ProbePlan::Redirect(80)
            }
            WccpProbe::Redirect if !matches!(info.protocol, 0 | 6) => {
                ProbePlan::Impossible("the service is not TCP")
            }
            WccpProbe::Redirect if info.flags.contains(ServiceFlags::PORTS_SOURCE) => {
                ProbePlan::Impossible("the service's ports are source ports")
            }
            WccpProbe::Redirect => {
                ProbePlan::Redirect(info.port_list().first().copied().unwrap_or(80))
            }
        }
    }

    /// The status text of a service's probe.
    fn describe(self) -> String {
        match self {
            ProbePlan::Redirect(port) => format!("redirect to port {port}"),
            ProbePlan::Direct(port) => format!("direct to port {port}"),
            ProbePlan::Off => "off".into(),
            ProbePlan::Impossible(why) => format!(
                "none: {why}, so no redirect probe can reach its proxy; its caches are not failed over fast (set probe = \"direct\" with the proxy's port as probe-port)"
            ),
        }
    }

    /// Why a cache that never answered this probe is not failed over, and what to change.
    fn unanswered_note(self, cache: Ipv4Addr) -> String {
        match self {
            ProbePlan::Redirect(port) => format!(
                "never answered: a SYN to {REDIRECT_PROBE_ORIGIN}:{port} sent to {cache} the way redirected traffic goes got no SYN-ACK, so it is not failed over; check that the cache intercepts the service's port {port} (e.g. an nft/iptables rule handing it to Squid's `http_port ... intercept`) and can reach this router, or set probe = \"direct\" with probe-port = the proxy's port, or probe = \"off\""
            ),
            ProbePlan::Direct(port) => format!(
                "never answered: nothing accepts a TCP connection on {cache}:{port}, so it is not failed over; set probe-port to where its proxy listens (e.g. Squid's http_port 3128), or drop probe-port and probe to use the default probe = \"redirect\""
            ),
            ProbePlan::Off | ProbePlan::Impossible(_) => String::new(),
        }
    }
}

/// The IPv4 packet that carries `inner` (a redirect probe's SYN or RST) to `cache` as GRE with
/// the WCCP redirect header, from `router_id`, as the redirect stage encapsulates data packets.
fn gre_probe(
    inner: &[u8],
    router_id: Ipv4Addr,
    cache: Ipv4Addr,
    redirect: &gre::WccpRedirectRepr,
) -> Option<Vec<u8>> {
    use crate::wire::ipv4::{self, Ipv4Repr};
    let gre_at = ipv4::MIN_HEADER_LEN;
    let inner_at = gre_at + gre::WCCP_GRE_OVERHEAD;
    let mut p = vec![0u8; inner_at + inner.len()];
    p.get_mut(inner_at..)?.copy_from_slice(inner);
    gre::encapsulate_in_place(
        p.get_mut(gre_at..)?,
        gre::WCCP_GRE_OVERHEAD,
        inner.len(),
        &gre::GreRepr::WCCP,
        Some(redirect),
    )
    .ok()?;
    Ipv4Repr {
        src: router_id,
        dst: cache,
        protocol: ipv4::PROTO_GRE,
        payload_len: gre::WCCP_GRE_OVERHEAD + inner.len(),
        ttl: 64,
        ident: ipv4::next_ident(),
        tos: 0,
        dont_fragment: false,
    }
    .emit(p.get_mut(..gre_at)?);
    Some(p)
}

/// Warns about a group any host on a cache interface could join and take traffic with.
fn warn_if_open(s: &WccpServiceConf) {
    if s.password.is_none() && s.caches.is_none() {
        tracing::warn!(
            service = s.id,
            "WCCP service group has neither `password` nor `caches`: any host on an interface with `wccp-caches` can join it and be assigned its traffic"
        );
    }
}

/// The engine, its assignments, the prober, and what the driver itself counts.
pub struct WccpDriver {
    engine: RouterEngine,
    outbox: Outbox,
    buf: Vec<u8>,
    /// Latest assignment per service, as the data plane will read it.
    assignments: BTreeMap<u8, Arc<wccp::assign::Assignment>>,
    outbox_full: u64,
    shared: Arc<Shared>,
    services: Vec<WccpServiceConf>,
    options: WccpOptions,
    workers: usize,
    /// Fast-failover probe rounds (the probes go through the control plane's one prober).
    rounds: Rounds,
    counters: BTreeMap<u8, Arc<ServiceCounters>>,
    cache_counters: BTreeMap<(u8, Ipv4Addr), Arc<CacheCounters>>,
    affinity_stats: Arc<AffinityStats>,
    /// Flow affinity's HA sync, shared with the workers through every plane.
    affinity_sync: Arc<AffinitySync>,
    /// Services whose caches cannot be probed as configured, already logged.
    unprobeable_logged: BTreeSet<u8>,
    /// IGMP membership of the multicast service groups.
    igmp: IgmpHost,
    /// Datagrams to a group that arrived with a TTL above 15.
    ttl_exceeded: u64,
    /// HA role (issue 15): active answers caches and publishes its groups; standby keeps
    /// the peer's. Always active without HA.
    ha_active: bool,
    /// What this node published as active, key → value: the next publication sends only
    /// the differences (and deletes what is gone).
    synced: BTreeMap<Vec<u8>, Vec<u8>>,
    /// HA sync counters.
    sync_counters: SyncCounters,
}

/// The longest WCCP sync value: what fits in one record of hasync's default 1472-byte
/// message with the longest tag, with room for the key and the record and chunk prefixes.
pub const SYNC_VALUE_MAX: usize = 1200;

/// What the driver counts about HA sync.
#[derive(Debug, Clone, Default)]
struct SyncCounters {
    published: u64,
    deleted: u64,
    exports: u64,
    omitted: u64,
    applied: u64,
    refused: BTreeMap<&'static str, u64>,
    standby_ignored: u64,
}

impl WccpDriver {
    /// A driver serving `services`, sending through the shared outbox;
    /// `router_id` is `[router] id`: the one Router ID every cache sees, whichever of our
    /// addresses it talks to.
    pub fn new(
        services: &[WccpServiceConf],
        options: &WccpOptions,
        workers: usize,
        router_id: Ipv4Addr,
        shared: Arc<Shared>,
    ) -> anyhow::Result<WccpDriver> {
        let outbox = shared.outbox.clone();
        let affinity_sync = Arc::new(AffinitySync::new(
            shared.sync.clone(),
            options.affinity_max_flows as usize,
        ));
        // Receive IDs a host off the caches' path cannot predict (issue 13 item 3).
        let mut engine = RouterEngine::with_seed(crate::probe::random_seed());
        engine.set_router_id(router_id);
        for s in services {
            engine
                .add_service(s.engine_config())
                .map_err(|e| anyhow::anyhow!("WCCP service {}: {e}", s.id))?;
            tracing::info!(
                service = s.id,
                md5 = s.password.is_some(),
                "WCCP service group configured"
            );
            warn_if_open(s);
        }
        let mut d = WccpDriver {
            engine,
            outbox,
            buf: Vec::with_capacity(2048),
            assignments: BTreeMap::new(),
            outbox_full: 0,
            shared,
            services: services.to_vec(),
            options: options.clone(),
            workers: workers.max(1),
            rounds: Rounds::new(options.probe_misses),
            counters: BTreeMap::new(),
            cache_counters: BTreeMap::new(),
            affinity_stats: Default::default(),
            affinity_sync,
            unprobeable_logged: BTreeSet::new(),
            igmp: IgmpHost::new(crate::probe::random_seed()),
            ttl_exceeded: 0,
            ha_active: true,
            synced: BTreeMap::new(),
            sync_counters: SyncCounters::default(),
        };
        d.sync_membership(Instant::now());
        d.publish();
        Ok(d)
    }

    /// Applies a reloaded `[wccp]`: a service whose protocol settings (password, methods, group
    /// list, definition) changed is reconfigured in place, keeping its caches and assignment
    /// (the engine restarts a group itself only when its pinned definition changes); new ones
    /// start, removed ones stop. Redirect lists, probe settings and options apply at once.
    pub fn reconfigure(
        &mut self,
        services: &[WccpServiceConf],
        options: &WccpOptions,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        // Check every new configuration before touching the engine, so that a refused reload
        // leaves all groups as they were.
        for s in services {
            s.engine_config()
                .validate()
                .map_err(|e| anyhow::anyhow!("WCCP service {}: {e}", s.id))?;
        }
        for old in &self.services {
            if !services.iter().any(|s| s.id == old.id) {
                self.engine
                    .remove_service(old.id)
                    .map_err(|e| anyhow::anyhow!("WCCP service {}: {e}", old.id))?;
                self.assignments.remove(&old.id);
                tracing::info!(service = old.id, "WCCP service group stopped by reload");
            }
        }
        for s in services {
            match self.services.iter().find(|o| o.id == s.id) {
                None => {
                    self.engine
                        .add_service(s.engine_config())
                        .map_err(|e| anyhow::anyhow!("WCCP service {}: {e}", s.id))?;
                    tracing::info!(service = s.id, "WCCP service group started by reload");
                    warn_if_open(s);
                }
                Some(o) if o.engine_config() != s.engine_config() => {
                    // In place: no redirection blackout while the caches rejoin (issue 13
                    // item 16). Caches signed with an old password fail authentication
                    // from now on and expire in 30 s; the assignment stays until then.
                    self.engine
                        .reconfigure(now, s.engine_config())
                        .map_err(|e| anyhow::anyhow!("WCCP service {}: {e}", s.id))?;
                    tracing::info!(service = s.id, "WCCP service group reconfigured by reload");
                    warn_if_open(s);
                }
                Some(_) => {}
            }
        }
        self.rounds.set_misses(options.probe_misses);
        self.services = services.to_vec();
        self.options = options.clone();
        self.drain(now);
        self.sync_membership(now);
        self.publish();
        Ok(())
    }

    /// Joins the configured groups on the interfaces with `wccp-caches` (and leaves what is
    /// no longer configured).
    fn sync_membership(&mut self, now: Instant) {
        let groups: BTreeSet<Ipv4Addr> = self.engine.multicast_groups().map(|(_, g)| g).collect();
        let tables = self.shared.tables.load();
        let links: Vec<(crate::tables::IfId, Ipv4Addr)> = tables
            .ifaces
            .iter()
            .filter(|i| i.wccp_caches)
            .map(|i| (i.id, i.addr))
            .collect();
        let mut out = Vec::new();
        self.igmp.set(now, &links, &groups, &mut out);
        for (i, a) in self.igmp.interfaces() {
            if out.iter().any(|o| o.tx_if == i) {
                tracing::info!(interface = i, address = %a, groups = ?groups, "IGMP: joined the WCCP multicast groups");
            }
        }
        self.send_igmp(out);
    }

    fn send_igmp(&mut self, out: Vec<IgmpOut>) {
        for o in out {
            if !self.outbox.send_l2(o.tx_if, o.dst, o.packet) {
                self.outbox_full += 1;
            }
        }
    }

    /// An IGMP message for the router (a query on a cache interface).
    pub fn on_igmp(&mut self, d: LocalDatagram) {
        self.igmp.on_message(Instant::now(), d.rx_if, &d.payload);
    }

    /// Leaves every multicast group (the router stops).
    pub fn leave_groups(&mut self) {
        let mut out = Vec::new();
        self.igmp.leave_all(Instant::now(), &mut out);
        if !out.is_empty() {
            tracing::info!(
                leaves = out.len(),
                "IGMP: leaving the WCCP multicast groups"
            );
        }
        self.send_igmp(out);
    }

    /// How often caches are probed; `None` when fast failover is off.
    pub fn probe_interval(&self) -> Option<Duration> {
        self.options
            .fast_failover
            .then(|| Duration::from_millis(self.options.probe_interval_ms.into()))
    }

    /// How the caches of service `svc` are probed.
    fn probe_plan(&self, svc: u8) -> ProbePlan {
        let probe = self
            .services
            .iter()
            .find(|s| s.id == svc)
            .map_or(WccpProbe::Redirect, |s| s.probe);
        match self.assignments.get(&svc) {
            Some(a) => ProbePlan::of(probe, a.service()),
            None if svc == 0 => ProbePlan::of(probe, &ServiceInfo::standard(0)),
            // Not installed yet: the definition may still be learnt.
            None => match probe {
                WccpProbe::Direct { port } => ProbePlan::Direct(port),
                WccpProbe::Off => ProbePlan::Off,
                WccpProbe::Redirect => ProbePlan::Redirect(80),
            },
        }
    }

    /// The probe target of a cache of service `svc`, if the service's caches are probed.
    fn target_of(&self, svc: u8, c: &wccp::assign::CacheTarget) -> Option<ProbeTarget> {
        match self.probe_plan(svc) {
            ProbePlan::Redirect(port) => Some(ProbeTarget {
                local: c.router_id,
                remote: SocketAddrV4::new(REDIRECT_PROBE_ORIGIN, port),
                via: Some(ProbeVia {
                    cache: c.address,
                    service: svc,
                }),
            }),
            ProbePlan::Direct(port) => Some(ProbeTarget {
                local: c.router_id,
                remote: SocketAddrV4::new(c.address, port),
                via: None,
            }),
            ProbePlan::Off | ProbePlan::Impossible(_) => None,
        }
    }

    /// One probe round over every cache that holds part of an assignment.
    pub fn on_probe_tick(&mut self, prober: &mut Prober) {
        let limit = self.options.probe_misses.max(1);
        for (t, h) in self.rounds.health() {
            if h.answered == 0 && h.misses == limit {
                let svc = t
                    .via
                    .map_or_else(|| self.service_of_direct(t), |v| Some(v.service));
                let cache = t.via.map_or(*t.remote.ip(), |v| v.cache);
                if let Some(svc) = svc {
                    tracing::warn!(
                        service = svc, %cache,
                        "WCCP fast failover: cache {}",
                        self.probe_plan(svc).unanswered_note(cache)
                    );
                }
            }
        }
        if self.options.fast_failover {
            for id in self.assignments.keys() {
                if let ProbePlan::Impossible(_) = self.probe_plan(*id) {
                    if self.unprobeable_logged.insert(*id) {
                        tracing::warn!(
                            service = id,
                            "WCCP fast failover: probe {}",
                            self.probe_plan(*id).describe()
                        );
                    }
                }
            }
        }
        // A standby probes nothing: its probes would leave from the virtual address, which
        // the active owns.
        let wanted: Vec<ProbeTarget> = if self.options.fast_failover && self.ha_active {
            self.assignments
                .iter()
                .flat_map(|(id, a)| {
                    a.caches()
                        .iter()
                        .filter_map(|c| self.target_of(*id, c))
                        .collect::<Vec<_>>()
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut changes = Vec::new();
        for (t, p) in self
            .rounds
            .tick(Instant::now(), wanted, prober, &mut changes)
        {
            if !self.send_probe(&t, p) {
                self.outbox_full += 1;
            }
        }
        self.apply(changes);
    }

    /// The service a direct probe target belongs to (for its log line).
    fn service_of_direct(&self, t: &ProbeTarget) -> Option<u8> {
        self.assignments.iter().find_map(|(id, a)| {
            a.caches()
                .iter()
                .any(|c| self.target_of(*id, c) == Some(*t))
                .then_some(*id)
        })
    }

    /// Sends one of a fast-failover probe's packets (its SYN, or the RST that closes it): a
    /// direct probe is routed; a redirect probe goes to its cache the way the service's
    /// traffic does, GRE-encapsulated with the redirect header or to the cache's MAC. It enters
    /// the pipeline after the redirect stage, so it is never redirected or counted as a client's
    /// traffic. False when it could not be queued (outbox full, or the cache left the group).
    pub fn send_probe(&mut self, t: &ProbeTarget, packet: Vec<u8>) -> bool {
        let Some(via) = t.via else {
            return self.outbox.send_ipv4(packet);
        };
        let Some(a) = self.assignments.get(&via.service) else {
            return false;
        };
        let Some(c) = a.caches().iter().find(|c| c.address == via.cache) else {
            return false;
        };
        match c.forwarding {
            ForwardingMethod::Gre => {
                // A bucket the cache holds (0 under mask assignment, as for data packets).
                let bucket = a
                    .bucket_owners()
                    .0
                    .iter()
                    .position(|o| *o == Some(c.address))
                    .unwrap_or(0);
                let redirect = gre::WccpRedirectRepr {
                    dynamic: a.service().service_type == ServiceType::Dynamic,
                    alternate_used: false,
                    unavailable: false,
                    service_id: via.service,
                    alternate_bucket: 0,
                    primary_bucket: u8::try_from(bucket).unwrap_or(0),
                    unknown_flags: 0,
                };
                match gre_probe(&packet, c.router_id, c.address, &redirect) {
                    Some(p) => self.outbox.send_ipv4(p),
                    None => false,
                }
            }
            ForwardingMethod::L2 => {
                let tables = self.shared.tables.load();
                match tables.ifaces.iter().find(|i| i.contains(c.address)) {
                    Some(i) => self.outbox.send_l2(i.id, c.address, packet),
                    None => false,
                }
            }
        }
    }

    /// An answer the prober validated for one of the fast-failover probes.
    pub fn on_probe_answer(&mut self, a: &ProbeAnswer) {
        let mut changes = Vec::new();
        self.rounds.on_answer(a, &mut changes);
        self.apply(changes);
    }

    fn apply(&mut self, changes: Vec<ProbeChange>) {
        if changes.is_empty() {
            return;
        }
        for c in &changes {
            match c {
                ProbeChange::Down(t) => tracing::warn!(
                    cache = %t.via.map_or(*t.remote.ip(), |v| v.cache), port = t.remote.port(),
                    probe = if t.via.is_some() { "redirect" } else { "direct" },
                    "WCCP fast failover: cache stopped answering probes; its traffic is forwarded normally"
                ),
                ProbeChange::Up(t) => tracing::info!(
                    cache = %t.via.map_or(*t.remote.ip(), |v| v.cache), port = t.remote.port(),
                    probe = if t.via.is_some() { "redirect" } else { "direct" },
                    "WCCP fast failover: cache answers probes again; redirecting to it"
                ),
            }
        }
        self.publish();
    }

    /// Builds the data plane's view and swaps it into the tables snapshot.
    fn publish(&mut self) {
        let mut planes = Vec::new();
        for (id, a) in &self.assignments {
            let conf = self.services.iter().find(|s| s.id == *id);
            let counters = self.counters.entry(*id).or_default().clone();
            let cache_counters = a
                .caches()
                .iter()
                .map(|c| {
                    self.cache_counters
                        .entry((*id, c.address))
                        .or_default()
                        .clone()
                })
                .collect();
            let failed = a
                .caches()
                .iter()
                .map(|c| {
                    self.options.fast_failover
                        && self
                            .target_of(*id, c)
                            .is_some_and(|t| !self.rounds.is_up(&t))
                })
                .collect();
            planes.push(ServicePlane {
                id: *id,
                assignment: a.clone(),
                redirect_list: Arc::from(conf.map(|c| c.redirect_list.clone()).unwrap_or_default()),
                failed,
                counters,
                cache_counters,
                fail_policy: conf.map(|c| c.fail_policy).unwrap_or_default(),
                gre_mss_clamp: conf.map(|c| c.gre_mss_clamp).unwrap_or_default(),
            });
        }
        // A closed service drops its packets from the start, before any cache has joined:
        // its definition is known (service 0, or pinned; the configuration insists).
        for c in &self.services {
            if c.fail_policy == conf::WccpFailPolicy::Open || self.assignments.contains_key(&c.id) {
                continue;
            }
            let service = match &c.definition {
                Some(d) if !c.is_standard() => d.clone(),
                _ => ::wccp::wire::ServiceInfo::standard(c.id),
            };
            planes.push(ServicePlane {
                id: c.id,
                assignment: Arc::new(::wccp::assign::Assignment::empty(service)),
                redirect_list: Arc::from(c.redirect_list.clone()),
                failed: Vec::new(),
                counters: self.counters.entry(c.id).or_default().clone(),
                cache_counters: Vec::new(),
                fail_policy: c.fail_policy,
                gre_mss_clamp: c.gre_mss_clamp,
            });
        }
        let affinity = AffinityConf {
            enabled: self.options.flow_affinity,
            flows_per_worker: (self.options.affinity_max_flows / self.workers as u32).max(64),
            idle_secs: self.options.affinity_idle_secs,
        };
        let mut plane = WccpPlane::new(planes, affinity, self.affinity_stats.clone());
        self.affinity_sync
            .set_capacity(self.options.affinity_max_flows as usize);
        plane.affinity_sync = self.affinity_sync.clone();
        if self.igmp.interfaces().next().is_some() {
            plane.groups = self.igmp.groups().iter().copied().collect();
        }
        let old = self.shared.tables.load_full();
        self.shared.tables.store(Arc::new(Tables {
            wccp: Arc::new(plane),
            ..(*old).clone()
        }));
    }

    /// One datagram to UDP 2048 on one of our addresses.
    pub fn handle(&mut self, d: LocalDatagram, tables: &Tables) {
        let now = Instant::now();
        if !self.ha_active {
            // The peer answers the caches (it owns the virtual address); answering here too
            // would fork the Receive IDs and the membership.
            self.sync_counters.standby_ignored += 1;
            return;
        }
        let src = *d.src.ip();
        // L2 forwarding is only for caches on the network the HERE_I_AM came in on; the
        // engine records that only for a HERE_I_AM it authenticated and admitted, so a
        // spoofed datagram neither grants L2 nor grows the set (issue 13 item 11).
        let on_link = tables
            .ifaces
            .get(d.rx_if as usize)
            .is_some_and(|i| i.contains(src));
        let dst = *d.dst.ip();
        if dst.is_multicast() {
            // Reference §1: WCCP multicast goes no further than TTL 15.
            if d.ttl > MAX_MULTICAST_TTL {
                self.ttl_exceeded += 1;
                return;
            }
            // Our address on the arrival link answers (and is the GRE source toward it).
            if let Some(i) = tables.ifaces.get(d.rx_if as usize) {
                self.engine
                    .handle_multicast(now, src, dst, i.addr, on_link, &d.payload);
            }
        } else {
            self.engine
                .handle_message_on_link(now, src, dst, on_link, &d.payload);
        }
        self.drain(now);
    }

    /// The next deadline of the engine or of IGMP.
    pub fn deadline(&self) -> Option<Instant> {
        // A standby's caches do not expire by their own timers: the active's deletes remove
        // them, and taking over restarts every timer.
        let engine = self.engine.poll_timeout().filter(|_| self.ha_active);
        match (engine, self.igmp.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the engine's and IGMP's timers.
    pub fn on_timeout(&mut self) {
        let now = Instant::now();
        if self.ha_active {
            self.engine.handle_timeout(now);
        }
        self.drain(now);
        let mut out = Vec::new();
        self.igmp.on_timeout(now, &mut out);
        self.send_igmp(out);
    }

    fn drain(&mut self, now: Instant) {
        while let Some(t) = self.engine.poll_transmit(now, &mut self.buf) {
            if t.dst.is_multicast() {
                // To the group, out of the interface whose address is the source.
                let payload = self.buf.get(..t.size).unwrap_or_default();
                let tables = self.shared.tables.load();
                let sent = tables
                    .ifaces
                    .iter()
                    .find(|i| i.addr == t.src && i.wccp_caches)
                    .is_some_and(|i| {
                        let p = wccp_udp_packet(t.src, t.dst, payload, MAX_MULTICAST_TTL);
                        self.outbox.send_l2(i.id, t.dst, p)
                    });
                if !sent {
                    self.outbox_full += 1;
                    tracing::warn!(group = %t.dst, "a WCCP datagram to the multicast group was not sent");
                }
                continue;
            }
            let payload = self.buf.get(..t.size).unwrap_or_default().to_vec();
            let d = OutDatagram {
                src: SocketAddrV4::new(t.src, ::wccp::engine::WCCP_PORT),
                dst: SocketAddrV4::new(t.dst, ::wccp::engine::WCCP_PORT),
                payload,
            };
            if self.outbox.send(d).is_err() {
                self.outbox_full += 1;
                tracing::warn!(cache = %t.dst, "outbox full: a WCCP datagram was not sent");
            }
        }
        let mut changed = false;
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                RouterEvent::AssignmentChanged {
                    service,
                    assignment,
                } => {
                    tracing::info!(service, key = ?assignment.key(), "WCCP assignment changed");
                    self.assignments.insert(service, assignment);
                    changed = true;
                }
                RouterEvent::CacheUsable {
                    service,
                    cache,
                    methods,
                } => {
                    tracing::info!(service, %cache, ?methods, "WCCP cache usable");
                }
                RouterEvent::CacheLost { service, cache } => {
                    tracing::warn!(service, %cache, "WCCP cache lost");
                }
            }
        }
        if changed {
            // The data plane reads assignments with its table snapshot: publish a new one.
            self.publish();
        }
        self.publish_sync(false);
    }

    /// Publishes the groups' records that changed since the last publication (all of them
    /// with `all`), and deletes for records that are gone. Only an active node with HA sync
    /// on publishes; otherwise nothing is encoded.
    fn publish_sync(&mut self, all: bool) {
        if !self.shared.sync.enabled() || !self.ha_active {
            return;
        }
        let mut now: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for id in self.engine.service_ids().collect::<Vec<_>>() {
            if let Some(x) = self.engine.export_service(id, SYNC_VALUE_MAX) {
                self.sync_counters.omitted += x.omitted as u64;
                now.extend(x.records.into_iter().map(|r| (r.key, r.value)));
            }
        }
        let table = hasync::TableId::WCCP_GROUP;
        // Parts and caches before the group's first part, so a standby assembles the group
        // record once the caches it names are in.
        let order = |k: &Vec<u8>| {
            (
                k.first() == Some(&wccp::router::KEY_GROUP) && k.get(2) == Some(&0),
                k.clone(),
            )
        };
        let mut upserts: Vec<(&Vec<u8>, &Vec<u8>)> = now
            .iter()
            .filter(|(k, v)| all || self.synced.get(*k) != Some(*v))
            .collect();
        upserts.sort_by_key(|(k, _)| order(k));
        for (k, v) in upserts {
            self.shared
                .sync
                .publish(hasync::Record::upsert(table, k.clone(), v.clone()));
            self.sync_counters.published += 1;
        }
        for k in self.synced.keys().filter(|k| !now.contains_key(*k)) {
            self.shared
                .sync
                .publish(hasync::Record::delete(table, k.clone()));
            self.sync_counters.deleted += 1;
        }
        self.synced = now;
    }

    /// Re-publishes every group record this node holds as its own (on taking over, or when
    /// the sync feed overflowed), so that the peer's copy equals this node's state. A
    /// standby holds nothing of its own and publishes nothing.
    pub fn export_all(&mut self) {
        if !self.shared.sync.enabled() || !self.ha_active {
            return;
        }
        self.sync_counters.exports += 1;
        self.publish_sync(true);
        self.affinity_sync.export_all();
    }

    /// One of the peer's flow-affinity records (table `AFFINITY`), adopted while standby
    /// (module `tables::affinity`). True when applied.
    pub fn apply_affinity(&self, rec: &hasync::Record, now: Instant) -> bool {
        self.affinity_sync.apply(rec, now)
    }

    /// The flow affinity's sync state (its adopted table), shared with the workers.
    pub fn affinity_sync(&self) -> Arc<AffinitySync> {
        self.affinity_sync.clone()
    }

    /// While active: forgets adopted flows no segment claimed within the idle timeout of the
    /// takeover (at most once a second, after any control-loop event).
    pub fn affinity_housekeeping(&self, now: Instant) {
        self.affinity_sync.sweep(
            now,
            std::time::Duration::from_secs(self.options.affinity_idle_secs.into()),
        );
    }

    /// One of the peer's records (table `WCCP_GROUP`), applied while standby: the standby's
    /// engine holds the active's groups, and its data plane the synced assignments, ready
    /// for a takeover. An active node ignores the peer's records (its own state is live).
    /// True when the record was applied.
    pub fn apply_synced(&mut self, rec: &hasync::Record, now: Instant) -> bool {
        let refused = if rec.table != hasync::TableId::WCCP_GROUP {
            Some("wccp-sync-wrong-table")
        } else if self.ha_active {
            Some("wccp-sync-while-active")
        } else {
            None
        };
        if let Some(reason) = refused {
            *self.sync_counters.refused.entry(reason).or_default() += 1;
            return false;
        }
        let value = (rec.op == hasync::Op::Upsert).then_some(&rec.value[..]);
        let applied = match self.engine.import_sync(now, &rec.key, value) {
            Ok(()) => {
                self.sync_counters.applied += 1;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "WCCP sync record refused");
                *self.sync_counters.refused.entry(e.as_str()).or_default() += 1;
                false
            }
        };
        self.drain(now);
        applied
    }

    /// The node's HA role changed. Becoming active: the imported groups are live, every
    /// cache's liveness timer restarts from `now` (the driver's caller then calls
    /// [`Self::export_all`]). Becoming standby: stop answering caches and running the
    /// engine's timers; the groups stay as they are until the peer's records replace them.
    pub fn set_ha_active(&mut self, active: bool, now: Instant) {
        // Workers publish their flows only while active.
        self.affinity_sync.set_active(active, now);
        if active == self.ha_active {
            return;
        }
        self.ha_active = active;
        if active {
            self.engine.resume(now);
            tracing::info!("WCCP: active; the synced service groups are live");
        } else {
            // Taking over again later re-exports everything.
            self.synced.clear();
            tracing::info!("WCCP: standby; caches are answered by the peer");
        }
    }

    /// True while this node answers caches (always without HA).
    pub fn ha_active(&self) -> bool {
        self.ha_active
    }

    /// What `swrouter status` shows about WCCP (`show ip wccp`).
    pub fn status(&self) -> WccpStatus {
        let now = Instant::now();
        let services = self
            .engine
            .services()
            .into_iter()
            .map(|s| WccpServiceStatus {
                id: s.service_id,
                kind: format!("{:?}", s.service_type).to_lowercase(),
                security: format!("{:?}", s.security).to_lowercase(),
                definition: s.definition.as_ref().map(|d| format!("{d:?}")),
                router_ids: s.router_ids.iter().map(|r| r.to_string()).collect(),
                receive_id: s.receive_id,
                change_number: s.member_change_number,
                key: format!("{:?}", s.key),
                designated_cache: s.designated_cache.map(|c| c.to_string()),
                assignment_method: s.assignment_method.map(|m| format!("{m:?}").to_lowercase()),
                traffic: self.traffic(s.service_id),
                redirect_list_rules: self
                    .services
                    .iter()
                    .find(|c| c.id == s.service_id)
                    .map(|c| c.redirect_list.len())
                    .unwrap_or(0),
                probe: if self.options.fast_failover {
                    self.probe_plan(s.service_id).describe()
                } else {
                    "off (fast-failover = false)".into()
                },
                fail_policy: self
                    .services
                    .iter()
                    .find(|c| c.id == s.service_id)
                    .map(|c| c.fail_policy)
                    .unwrap_or_default()
                    .as_str()
                    .into(),
                gre_mss_clamp: self
                    .services
                    .iter()
                    .find(|c| c.id == s.service_id)
                    .map(|c| c.gre_mss_clamp)
                    .unwrap_or_default()
                    .to_string(),
                fast_timers: self
                    .services
                    .iter()
                    .find(|c| c.id == s.service_id)
                    .is_some_and(|c| c.fast_timers),
                timers: s.timers.into(),
                timers_fixed: s.timers_fixed,
                caches: s
                    .caches
                    .iter()
                    .map(|c| WccpCacheStatus {
                        address: c.address.to_string(),
                        phase: match &c.phase {
                            wccp::router::CachePhase::Joining => "joining".into(),
                            wccp::router::CachePhase::Usable(_) => "usable".into(),
                            wccp::router::CachePhase::Unusable(r) => format!("unusable: {r}"),
                        },
                        usable: c.usable,
                        designated: c.designated,
                        receive_id_echoed: c.receive_id_echoed,
                        methods: c.methods.map(|m| {
                            format!(
                                "{:?}/{:?}/{:?}",
                                m.forwarding, m.packet_return, m.assignment
                            )
                            .to_lowercase()
                        }),
                        weight: c.weight,
                        buckets: c.buckets,
                        bucket_ranges: self.bucket_ranges(s.service_id, c.address),
                        mask_values: c.mask_values,
                        last_seen_secs: now.saturating_duration_since(c.last_seen).as_secs(),
                        l2_adjacent: c.l2_adjacent,
                        learnt: if c.multicast.is_some() {
                            "multicast".into()
                        } else {
                            "unicast".into()
                        },
                        redirected: self.cache_traffic(s.service_id, c.address, |t| &t.redirected),
                        returned: self.cache_traffic(s.service_id, c.address, |t| &t.returned),
                        bypassed: self.cache_traffic(s.service_id, c.address, |t| &t.bypassed),
                        probe: self
                            .probe_health(s.service_id, c.address)
                            .map(|h| h.state())
                            .unwrap_or("-")
                            .into(),
                        probe_rtt_us: self
                            .probe_health(s.service_id, c.address)
                            .and_then(|h| h.last_rtt)
                            .map(|d| d.as_micros() as u64),
                        failovers: self
                            .probe_health(s.service_id, c.address)
                            .map(|h| h.downs)
                            .unwrap_or(0),
                        probe_changed_unix_ms: self
                            .probe_health(s.service_id, c.address)
                            .map(|h| h.changed_unix_ms)
                            .unwrap_or(0),
                        probe_note: self
                            .probe_health(s.service_id, c.address)
                            .filter(|h| h.state() == "unanswered")
                            .map(|_| self.probe_plan(s.service_id).unanswered_note(c.address)),
                        timers: c.timers.into(),
                    })
                    .collect(),
                multicast_group: s.multicast_group.map(|g| g.to_string()),
                multicast_interfaces: if s.multicast_group.is_some() {
                    self.joined_interfaces()
                } else {
                    Vec::new()
                },
                multicast_i_see_you: s.multicast_i_see_you_rounds,
                messages_in: s.counters.rx.here_i_am
                    + s.counters.rx.redirect_assign
                    + s.counters.rx.other,
                drops: s
                    .counters
                    .drops
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
            })
            .collect();
        let c = self.engine.counters();
        let mut drops: BTreeMap<String, u64> =
            c.drops.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        if self.ttl_exceeded > 0 {
            drops.insert("wccp-multicast-ttl-exceeded".into(), self.ttl_exceeded);
        }
        let igmp = self.engine.multicast_groups().next().map(|_| {
            let k = &self.igmp.counters;
            IgmpStatus {
                groups: self.igmp.groups().iter().map(|g| g.to_string()).collect(),
                interfaces: self.joined_interfaces(),
                queries: [
                    ("v1", k.queries_v1),
                    ("v2", k.queries_v2),
                    ("v3", k.queries_v3),
                ]
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
                reports_sent: k.reports_sent,
                leaves_sent: k.leaves_sent,
                malformed: k.malformed,
                ignored: k.ignored,
            }
        });
        let k = &self.sync_counters;
        let ha_sync = self
            .shared
            .sync
            .enabled()
            .then(|| crate::status::WccpSyncStatus {
                role: if self.ha_active { "active" } else { "standby" }.into(),
                published: k.published,
                deleted: k.deleted,
                exports: k.exports,
                omitted: k.omitted,
                applied: k.applied,
                refused: k.refused.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
                standby_ignored: k.standby_ignored,
            });
        WccpStatus {
            services,
            igmp,
            ha_sync,
            received: counts(&c.rx),
            sent: counts(&c.tx),
            drops,
            outbox_full: self.outbox_full,
            fast_failover: self.options.fast_failover.then_some(FastFailoverStatus {
                probe_interval_ms: self.options.probe_interval_ms,
                probe_misses: self.options.probe_misses,
            }),
            flow_affinity: self.options.flow_affinity.then(|| {
                let plane = self.shared.tables.load().wccp.clone();
                FlowAffinityStatus {
                    flows: self.affinity_stats.entries.load(Ordering::Relaxed),
                    capacity: u64::from(plane.affinity.flows_per_worker) * self.workers as u64,
                    evicted: self.affinity_stats.evicted.load(Ordering::Relaxed),
                    idle_secs: self.options.affinity_idle_secs,
                    ha_sync: self.shared.sync.enabled().then(|| {
                        let c = &self.affinity_sync.counters;
                        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                        AffinitySyncStatus {
                            published: n(&c.published),
                            deleted: n(&c.deleted),
                            exports: n(&c.exports),
                            adopted: self.affinity_sync.adopted() as u64,
                            applied: n(&c.applied),
                            refused: n(&c.refused),
                            adopt_full: n(&c.adopt_full),
                            adopted_hits: n(&c.adopted_hits),
                            expired: n(&c.expired),
                        }
                    }),
                }
            }),
        }
    }

    /// The interfaces the groups are joined on, by name, with the IGMP version in force.
    fn joined_interfaces(&self) -> Vec<String> {
        let tables = self.shared.tables.load();
        let now = Instant::now();
        self.igmp
            .interfaces()
            .map(|(i, _)| {
                let name = tables
                    .ifaces
                    .get(i as usize)
                    .map_or_else(|| i.to_string(), |f| f.name.clone());
                let v = match self.igmp.version(i, now) {
                    crate::wire::igmp::IgmpVersion::V1 => "v1",
                    crate::wire::igmp::IgmpVersion::V2 => "v2",
                    crate::wire::igmp::IgmpVersion::V3 => "v3",
                };
                format!("{name} (IGMP{v})")
            })
            .collect()
    }

    fn traffic(&self, id: u8) -> WccpTrafficStatus {
        let Some(c) = self.counters.get(&id) else {
            return WccpTrafficStatus::default();
        };
        WccpTrafficStatus {
            redirected: c.redirected.get().into(),
            returned: c.returned.get().into(),
            bypassed: c.bypassed.get().into(),
            unassigned: c.unassigned.get().into(),
            denied: c.denied.get().into(),
            affinity_kept: c.affinity_kept.get().into(),
            fragments_redirected: c.fragments_redirected.get().into(),
            fragments_unmatched: c.fragments_unmatched.get().into(),
            fail_open_forwarded: c.fail_open_forwarded.get().into(),
            fail_closed_dropped: c.fail_closed_dropped.get().into(),
            fail_closed_rejected: c.fail_closed_rejected.get().into(),
            mss_clamped: c.mss_clamped.get().into(),
            gre_fragmented: c.gre_fragmented.get().into(),
            gre_too_big: c.gre_too_big.get().into(),
        }
    }

    fn cache_traffic(
        &self,
        id: u8,
        cache: Ipv4Addr,
        pick: impl Fn(&CacheCounters) -> &Traffic,
    ) -> crate::status::TrafficCount {
        self.cache_counters
            .get(&(id, cache))
            .map(|c| pick(c).get().into())
            .unwrap_or_default()
    }

    /// The buckets `cache` holds in the installed assignment of service `id`, as ranges.
    fn bucket_ranges(&self, id: u8, cache: Ipv4Addr) -> String {
        let Some(a) = self.assignments.get(&id) else {
            return String::new();
        };
        let owners = a.bucket_owners();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for (b, o) in owners.0.iter().enumerate() {
            if *o != Some(cache) {
                continue;
            }
            match ranges.last_mut() {
                Some((_, hi)) if *hi + 1 == b => *hi = b,
                _ => ranges.push((b, b)),
            }
        }
        ranges
            .iter()
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn probe_health(&self, id: u8, cache: Ipv4Addr) -> Option<crate::probe::ProbeHealth> {
        let a = self.assignments.get(&id)?;
        let c = a.caches().iter().find(|c| c.address == cache)?;
        self.rounds.get(&self.target_of(id, c)?).copied()
    }
}

fn counts(m: &wccp::engine::MessageCounts) -> BTreeMap<String, u64> {
    [
        ("here-i-am", m.here_i_am),
        ("i-see-you", m.i_see_you),
        ("redirect-assign", m.redirect_assign),
        ("removal-query", m.removal_query),
        ("other", m.other),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_redirect_probe_uses_the_services_own_port_or_says_why_it_cannot() {
        let std0 = ServiceInfo::standard(0);
        assert_eq!(
            ProbePlan::of(WccpProbe::Redirect, &std0),
            ProbePlan::Redirect(80)
        );
        let dynamic = |proto: u8, flags: ServiceFlags, ports: &[u16]| {
            ServiceInfo::dynamic(90, proto, 0, flags, ports)
        };
        let tcp = dynamic(6, ServiceFlags::DST_IP_HASH, &[8080, 3128]);
        assert_eq!(
            ProbePlan::of(WccpProbe::Redirect, &tcp),
            ProbePlan::Redirect(8080)
        );
        let all_ports = dynamic(0, ServiceFlags::DST_IP_HASH, &[]);
        assert_eq!(
            ProbePlan::of(WccpProbe::Redirect, &all_ports),
            ProbePlan::Redirect(80)
        );
        let udp = dynamic(17, ServiceFlags::DST_IP_HASH, &[53]);
        assert!(matches!(
            ProbePlan::of(WccpProbe::Redirect, &udp),
            ProbePlan::Impossible(_)
        ));
        let source = dynamic(6, ServiceFlags::PORTS_SOURCE, &[80]);
        assert!(matches!(
            ProbePlan::of(WccpProbe::Redirect, &source),
            ProbePlan::Impossible(_)
        ));
        // Direct and off are what the configuration says, whatever the service.
        assert_eq!(
            ProbePlan::of(WccpProbe::Direct { port: 3128 }, &udp),
            ProbePlan::Direct(3128)
        );
        assert_eq!(ProbePlan::of(WccpProbe::Off, &std0), ProbePlan::Off);
        // Status and the log name the fix.
        let cache = Ipv4Addr::new(10, 0, 3, 2);
        assert!(ProbePlan::Redirect(80)
            .unanswered_note(cache)
            .contains("intercept"));
        assert!(ProbePlan::Direct(80)
            .unanswered_note(cache)
            .contains("10.0.3.2:80"));
        assert!(ProbePlan::of(WccpProbe::Redirect, &udp)
            .describe()
            .contains("probe = \"direct\""));
    }

    #[test]
    fn a_gre_probe_decapsulates_to_the_syn_with_the_services_redirect_header() {
        let inner = crate::probe::Prober::new(3).probe(
            Instant::now(),
            ProbeTarget {
                local: [10, 0, 3, 1].into(),
                remote: SocketAddrV4::new(REDIRECT_PROBE_ORIGIN, 80),
                via: None,
            },
            crate::probe::ProbeOwner::Wccp,
        );
        let redirect = gre::WccpRedirectRepr {
            dynamic: false,
            alternate_used: false,
            unavailable: false,
            service_id: 0,
            alternate_bucket: 0,
            primary_bucket: 7,
            unknown_flags: 0,
        };
        let (rid, cache) = ([10, 0, 3, 1].into(), [10, 0, 3, 2].into());
        let p = gre_probe(&inner, rid, cache, &redirect).unwrap();
        assert_eq!(crate::wire::ipv4::check(&p).unwrap(), p.len());
        assert_eq!(crate::wire::ipv4::src(&p), rid);
        assert_eq!(crate::wire::ipv4::dst(&p), cache);
        assert_eq!(
            crate::wire::ipv4::protocol(&p),
            crate::wire::ipv4::PROTO_GRE
        );
        let d = gre::decapsulate(&p[20..]).unwrap();
        assert_eq!(d.redirect, Some(redirect));
        assert_eq!(&p[20 + d.inner_offset..], &inner[..]);
    }
    /// An HA pair's WCCP side without sockets: two drivers, each with its own sync feed.
    mod ha {
        use super::*;
        use crate::outbox::{OutboxReceiver, Outgoing};
        use crate::statesync::SyncFeed;
        use crate::tables::routes::RouteTable;
        use crate::tables::Iface;
        use ::wccp::cache::{CacheConfig, CacheEngine, CacheServiceConfig};

        const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 254);
        const CACHE: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 2);
        const CONF: &str = r#"
[[interface]]
name = "eth0"
address = "10.0.3.1/24"
wccp-caches = true
[[wccp.service]]
id = 0
"#;

        fn tables() -> Tables {
            let ifaces = vec![Iface {
                id: 0,
                name: "eth0".into(),
                ifindex: 1,
                mac: crate::wire::ethernet::MacAddr([2, 0, 0, 0, 0, 1]),
                addr: [10, 0, 3, 1].into(),
                prefix_len: 24,
                mtu: 1500,
                backend: conf::IoBackend::Pnet,
                redirect_in: Vec::new(),
                redirect_out: Vec::new(),
                exclude_in: false,
                wccp_caches: true,
            }];
            let routes = RouteTable::build(&ifaces, &[]).unwrap();
            Tables::new(ifaces, routes)
        }

        fn node(feed: SyncFeed) -> (WccpDriver, OutboxReceiver) {
            let c = conf::parse_str("ha.conf", CONF).unwrap();
            let (outbox, rx) = crate::outbox::outbox(1024).unwrap();
            let shared = Arc::new(Shared {
                tables: arc_swap::ArcSwap::from_pointee(tables()),
                neighbours: Default::default(),
                stop: Default::default(),
                counters: Vec::new(),
                outbox,
                trace: Arc::new(crate::pipeline::trace::Tracer::new(1)),
                sync: feed,
            });
            let d = WccpDriver::new(&c.wccp, &c.wccp_options, 1, VIP, shared).unwrap();
            (d, rx)
        }

        /// The driver's I_SEE_YOUs, handed to the cache.
        fn to_cache(rx: &OutboxReceiver, cache: &mut CacheEngine, now: Instant) -> usize {
            let mut n = 0;
            while let Some(o) = rx.try_recv() {
                if let Outgoing::Udp(d) = o {
                    assert_eq!(*d.src.ip(), VIP, "answered from the virtual address");
                    cache.handle_message(now, *d.src.ip(), &d.payload);
                    n += 1;
                }
            }
            n
        }

        /// The cache's datagrams, handed to the driver as the pipeline delivers them.
        fn to_router(cache: &mut CacheEngine, d: &mut WccpDriver, now: Instant) {
            let tables = tables();
            let mut buf = Vec::new();
            while let Some(t) = cache.poll_transmit(now, &mut buf) {
                d.handle(
                    LocalDatagram {
                        rx_if: 0,
                        src: SocketAddrV4::new(CACHE, 2048),
                        dst: SocketAddrV4::new(t.dst, 2048),
                        payload: buf[..t.size].to_vec(),
                        ttl: 64,
                    },
                    &tables,
                );
            }
        }

        fn drain(feed: &SyncFeed) -> Vec<hasync::Record> {
            let mut out = Vec::new();
            feed.drain(&mut out);
            out
        }

        #[test]
        fn the_standby_takes_over_the_actives_group_and_the_cache_sees_no_change() {
            let (fa, fb) = (SyncFeed::new(1024), SyncFeed::new(1024));
            let (mut a, rxa) = node(fa.clone());
            let (mut b, rxb) = node(fb.clone());
            let now = Instant::now();
            b.set_ha_active(false, now);
            // The cache registers with the virtual address; its clock runs ahead so that it
            // assigns without the test waiting 15 s.
            let mut cache = CacheEngine::new(
                now,
                CacheConfig::new(CACHE, vec![VIP])
                    .with_service(CacheServiceConfig::new(ServiceInfo::standard(0))),
            )
            .unwrap();
            let mut t = now;
            for _ in 0..4 {
                cache.handle_timeout(t);
                to_router(&mut cache, &mut a, t);
                to_cache(&rxa, &mut cache, t);
                t += Duration::from_secs(10);
            }
            let a_status = a.status();
            let svc = &a_status.services[0];
            assert_eq!(svc.caches.len(), 1);
            assert!(svc.caches[0].usable);
            assert_ne!(svc.key, format!("{:?}", ::wccp::wire::AssignmentKey::NONE));
            assert!(!a.shared.tables.load().wccp.services.is_empty());

            // Everything the active published, applied by the standby in order.
            let recs = drain(&fa);
            assert!(!recs.is_empty());
            for r in &recs {
                assert!(b.apply_synced(r, now));
            }
            assert!(drain(&fb).is_empty(), "a standby publishes nothing");
            let b_status = b.status();
            let h = b_status.ha_sync.as_ref().unwrap();
            assert_eq!((h.role.as_str(), h.applied), ("standby", recs.len() as u64));
            assert!(h.refused.is_empty(), "{:?}", h.refused);
            assert_eq!(b_status.services[0].change_number, svc.change_number);
            assert_eq!(b_status.services[0].key, svc.key);
            // The standby's data plane already redirects with the synced assignment.
            assert_eq!(
                b.assignments.get(&0).map(|x| x.share_counts()),
                a.assignments.get(&0).map(|x| x.share_counts())
            );
            // A standby does not answer the cache (it does not own the virtual address).
            cache.handle_timeout(t);
            let mut probe = cache.clone();
            to_router(&mut probe, &mut b, t);
            assert_eq!(to_cache(&rxb, &mut probe, t), 0);
            assert_eq!(b.status().ha_sync.unwrap().standby_ignored, 1);
            assert_eq!(b.deadline(), None, "no engine timers while standby");

            // The active dies; the standby takes over and answers the cache's next
            // HERE_I_AM: the cache keeps its membership and assignment.
            while cache.poll_event().is_some() {}
            b.set_ha_active(true, t);
            b.export_all();
            let exported = drain(&fb);
            assert_eq!(
                exported.len(),
                recs.iter()
                    .filter(|r| r.op == hasync::Op::Upsert)
                    .map(|r| &r.key)
                    .collect::<BTreeSet<_>>()
                    .len()
            );
            for _ in 0..3 {
                cache.handle_timeout(t);
                to_router(&mut cache, &mut b, t);
                assert_eq!(to_cache(&rxb, &mut cache, t), 1);
                t += Duration::from_secs(10);
            }
            let after = b.status();
            assert_eq!(after.services[0].change_number, svc.change_number);
            assert_eq!(after.services[0].key, svc.key);
            assert_eq!(
                after.services[0].drops.get("wccp-receive-id-mismatch"),
                None
            );
            let ev: Vec<_> = std::iter::from_fn(|| cache.poll_event()).collect();
            assert!(
                !ev.iter().any(|e| matches!(
                    e,
                    ::wccp::cache::CacheEvent::RouterDown { .. }
                        | ::wccp::cache::CacheEvent::RouterUp { .. }
                        | ::wccp::cache::CacheEvent::AssignmentSent { .. }
                )),
                "no re-registration, no reassignment: {ev:?}"
            );
            // The new active publishes as it goes.
            assert!(!drain(&fb).is_empty());
        }

        #[test]
        fn without_ha_sync_nothing_is_encoded_or_published() {
            let (mut a, rx) = node(SyncFeed::disabled());
            let now = Instant::now();
            let mut cache = CacheEngine::new(
                now,
                CacheConfig::new(CACHE, vec![VIP])
                    .with_service(CacheServiceConfig::new(ServiceInfo::standard(0))),
            )
            .unwrap();
            cache.handle_timeout(now);
            to_router(&mut cache, &mut a, now);
            assert_eq!(to_cache(&rx, &mut cache, now), 1);
            assert!(a.synced.is_empty());
            assert!(a.status().ha_sync.is_none());
            a.export_all();
            assert!(a.synced.is_empty());
        }

        #[test]
        fn an_active_node_refuses_the_peers_records() {
            let feed = SyncFeed::new(16);
            let (mut a, _rx) = node(feed);
            let rec =
                hasync::Record::upsert(hasync::TableId::WCCP_GROUP, vec![b'G', 0, 0], vec![1]);
            assert!(!a.apply_synced(&rec, Instant::now()));
            let other = hasync::Record::upsert(hasync::TableId::NAT_SESSION, vec![1], vec![1]);
            a.set_ha_active(false, Instant::now());
            a.apply_synced(&other, Instant::now());
            a.apply_synced(&rec, Instant::now());
            let h = a.status().ha_sync.unwrap();
            assert_eq!(h.refused.get("wccp-sync-while-active"), Some(&1));
            assert_eq!(h.refused.get("wccp-sync-wrong-table"), Some(&1));
            assert_eq!(h.refused.get("wccp-sync-malformed"), Some(&1));
            assert_eq!(h.applied, 0);
        }
    }
}
