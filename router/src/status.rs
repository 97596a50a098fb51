//! What `swrouter status` shows: a snapshot of the router's state and counters, exchanged as JSON
//! over the management socket and rendered as tables for people.

use crate::pipeline::drop::DropReason;
use crate::pipeline::StageKind;
use crate::worker::Shared;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

/// The whole status document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Router identity and process facts.
    pub router: RouterInfo,
    /// One entry per interface.
    pub interfaces: Vec<InterfaceStatus>,
    /// Installed routes.
    pub routes: Vec<RouteStatus>,
    /// ARP table.
    pub arp: Vec<ArpStatus>,
    /// Per stage, summed over workers.
    pub pipeline: Vec<StageStatus>,
    /// Per worker totals.
    pub workers: Vec<WorkerStatus>,
    /// Neighbour table totals.
    pub neighbour_stats: NeighbourStats,
    /// WCCP service groups, when WCCP is configured.
    #[serde(default)]
    pub wccp: Option<WccpStatus>,
    /// Service-chain steering counters and device health, when steering is configured.
    #[serde(default)]
    pub steering: Option<crate::steering_status::SteeringStatus>,
    /// The management socket's clients and refusals.
    #[serde(default)]
    pub management: Option<ManagementStatus>,
    /// The health prober's counters (WCCP fast failover and steering checks).
    #[serde(default)]
    pub probes: Option<ProbeStatus>,
    /// NAT sessions, workers and the switch processor, when NAT is configured.
    #[serde(default)]
    pub nat: Option<crate::natd::NatStatus>,
    /// The Prometheus metrics listener, when `metrics-listen` is set.
    #[serde(default)]
    pub metrics: Option<MetricsStatus>,
    /// The packet trace: armed or not, packets left to mark, records captured.
    #[serde(default)]
    pub trace: Option<crate::pipeline::trace::TraceStatus>,
    /// High availability (VRRP), when `[ha]` is configured.
    #[serde(default)]
    pub ha: Option<crate::ha_status::HaStatus>,
    /// The router cluster's data plane (ids, frames by fate), when `[cluster]` is configured.
    #[serde(default)]
    pub cluster: Option<crate::tables::cluster::ClusterStatus>,
    /// The cluster driver's view (membership, the id table, etcd, the mesh), when `[cluster]`
    /// is configured.
    #[serde(default)]
    pub cluster_node: Option<crate::control::cluster::ClusterNodeStatus>,
}

/// The metrics listener's address and counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsStatus {
    /// The address it listens on (`metrics-listen`).
    pub listen: String,
    /// Scrapes answered with metrics.
    pub served: u64,
    /// Connections refused because the most clients were being served.
    pub refused_busy: u64,
    /// Requests that were not well-formed HTTP/1.x, too big, or not GET.
    pub bad_requests: u64,
    /// Requests for another path than /metrics.
    pub not_found: u64,
    /// Clients that sent no request, or took no reply, in time.
    pub timed_out: u64,
}

/// The health prober's counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// SYNs sent.
    pub sent: u64,
    /// Answers that matched a probe (accepted or refused).
    pub answered: u64,
    /// Segments to a probe port that matched no probe (late, spoofed, out of window).
    pub ignored: u64,
    /// Steering probes lost to a full outbox (each counts as unanswered at its timeout).
    pub steering_outbox_full: u64,
}

/// The management socket's counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagementStatus {
    /// Clients being served now (this request included).
    pub clients: u64,
    /// Clients served at most at once.
    pub max_clients: u64,
    /// Requests answered.
    pub served: u64,
    /// Connections refused because `max_clients` were being served.
    pub refused_busy: u64,
    /// Connections refused by the peer check (not root, our user or the management group).
    pub refused_peer: u64,
    /// Request lines too long or not UTF-8.
    pub bad_requests: u64,
    /// Clients that sent no request, or took no reply, in time.
    pub timed_out: u64,
}

/// WCCP state, like `show ip wccp`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WccpStatus {
    /// One entry per service group.
    pub services: Vec<WccpServiceStatus>,
    /// Messages received, by type.
    pub received: BTreeMap<String, u64>,
    /// Messages sent, by type.
    pub sent: BTreeMap<String, u64>,
    /// Messages dropped or rejected, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Datagrams the outbox refused (control plane faster than worker 0).
    pub outbox_full: u64,
    /// Fast failover: on, probe interval and misses that fail a cache.
    pub fast_failover: Option<FastFailoverStatus>,
    /// Flow affinity table, when on.
    pub flow_affinity: Option<FlowAffinityStatus>,
    /// IGMP membership of the multicast service groups, when any is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub igmp: Option<IgmpStatus>,
    /// HA state sync of the service groups (issue 15), when `[ha.sync]` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_sync: Option<WccpSyncStatus>,
}

/// WCCP's part of the HA state sync: what it published as active and applied as standby.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WccpSyncStatus {
    /// "active" (answers caches, publishes its groups) or "standby" (applies the peer's).
    pub role: String,
    /// Group and cache records published (upserts).
    pub published: u64,
    /// Deletes published (caches gone, groups removed, parts no longer needed).
    pub deleted: u64,
    /// Full re-exports (on taking over, or after the sync feed overflowed).
    pub exports: u64,
    /// Records left out because they would not fit in one sync record.
    pub omitted: u64,
    /// Peer records applied.
    pub applied: u64,
    /// Peer records refused, by reason (undecodable, unknown service, another table, ...).
    pub refused: BTreeMap<String, u64>,
    /// WCCP datagrams not answered while standby.
    pub standby_ignored: u64,
}

/// The router as an IGMP host member of the WCCP multicast service groups.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IgmpStatus {
    /// Groups joined.
    pub groups: Vec<String>,
    /// Interfaces they are joined on, each with the report version in force ("v2", "v3").
    pub interfaces: Vec<String>,
    /// Queries received, by version ("v1", "v2", "v3").
    pub queries: BTreeMap<String, u64>,
    /// Reports sent (unsolicited and answers).
    pub reports_sent: u64,
    /// Leaves sent.
    pub leaves_sent: u64,
    /// IGMP messages that did not decode or failed their checksum.
    pub malformed: u64,
    /// Other IGMP (other members' reports, queries about other groups).
    pub ignored: u64,
}

/// Fast-failover settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FastFailoverStatus {
    /// Milliseconds between probes of one cache.
    pub probe_interval_ms: u32,
    /// Misses in a row that fail a cache.
    pub probe_misses: u32,
}

/// Flow-affinity table use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowAffinityStatus {
    /// Flows remembered now.
    pub flows: u64,
    /// Table capacity over all workers.
    pub capacity: u64,
    /// Flows forgotten early because their slot set was full.
    pub evicted: u64,
    /// Seconds of silence after which a flow is forgotten.
    pub idle_secs: u32,
    /// HA state sync of the flows (issue 15), when `[ha.sync]` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_sync: Option<AffinitySyncStatus>,
}

/// Flow affinity's part of the HA state sync.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AffinitySyncStatus {
    /// Flow records published while active (new flows and re-exports).
    pub published: u64,
    /// Deletes published (flows ended, expired, evicted).
    pub deleted: u64,
    /// Full re-exports (takeovers, feed overflows).
    pub exports: u64,
    /// The peer's flows held now, waiting for a segment of theirs (the adopted table).
    pub adopted: u64,
    /// The peer's records applied to the adopted table.
    pub applied: u64,
    /// The peer's records refused (undecodable, or received while active).
    pub refused: u64,
    /// The peer's flows not adopted because the adopted table was full.
    pub adopt_full: u64,
    /// Segments whose flow a worker found in the adopted table (flows kept across a takeover).
    pub adopted_hits: u64,
    /// Adopted flows no segment claimed within the idle timeout of a takeover.
    pub expired: u64,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCount {
    /// Packets.
    pub packets: u64,
    /// Bytes (IPv4 packet lengths).
    pub bytes: u64,
}

impl From<(u64, u64)> for TrafficCount {
    fn from((packets, bytes): (u64, u64)) -> Self {
        TrafficCount { packets, bytes }
    }
}

/// A service group's traffic counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WccpTrafficStatus {
    /// Sent to caches.
    pub redirected: TrafficCount,
    /// Returned by caches and forwarded.
    pub returned: TrafficCount,
    /// Forwarded normally because fast failover took their cache out.
    pub bypassed: TrafficCount,
    /// Forwarded normally: no cache holds their bucket or mask value.
    pub unassigned: TrafficCount,
    /// Forwarded normally: the redirect list denied them.
    pub denied: TrafficCount,
    /// Kept on the cache their TCP flow started on (flow affinity).
    pub affinity_kept: TrafficCount,
    /// Non-first IP fragments sent where their first fragment went (part of `redirected`).
    #[serde(default)]
    pub fragments_redirected: TrafficCount,
    /// Non-first IP fragments whose first fragment was not seen (forwarded normally).
    #[serde(default)]
    pub fragments_unmatched: TrafficCount,
    /// No cache could take them (unassigned or bypassed); forwarded normally (`open`).
    #[serde(default)]
    pub fail_open_forwarded: TrafficCount,
    /// No cache could take them; dropped (`closed-drop`, and later fragments of `closed-*`).
    #[serde(default)]
    pub fail_closed_dropped: TrafficCount,
    /// No cache could take them; dropped and answered (`closed-reject`).
    #[serde(default)]
    pub fail_closed_rejected: TrafficCount,
    /// GRE-redirected SYNs and their SYN-ACKs whose MSS option was lowered.
    #[serde(default)]
    pub mss_clamped: TrafficCount,
    /// GRE-redirected packets without DF sent in IP fragments (too big once encapsulated).
    #[serde(default)]
    pub gre_fragmented: TrafficCount,
    /// GRE-redirected packets with DF too big once encapsulated: dropped, fragmentation needed
    /// sent to the client.
    #[serde(default)]
    pub gre_too_big: TrafficCount,
}

/// One service group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WccpServiceStatus {
    /// Service id.
    pub id: u8,
    /// "standard" or "dynamic".
    pub kind: String,
    /// "none" or "md5".
    pub security: String,
    /// The service definition in force (learnt for dynamic services).
    pub definition: Option<String>,
    /// Our Router IDs toward the caches.
    pub router_ids: Vec<String>,
    /// Receive ID of the last I_SEE_YOU.
    pub receive_id: u32,
    /// Member Change Number.
    pub change_number: u32,
    /// Assignment key.
    pub key: String,
    /// The designated cache.
    pub designated_cache: Option<String>,
    /// Assignment method in use.
    pub assignment_method: Option<String>,
    /// Caches heard from.
    pub caches: Vec<WccpCacheStatus>,
    /// Messages received for this service.
    pub messages_in: u64,
    /// Drops for this service, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Data-plane traffic of this service.
    pub traffic: WccpTrafficStatus,
    /// Rules in the redirect list (0 = everything the service intercepts).
    pub redirect_list_rules: usize,
    /// How fast failover probes this service's caches: "redirect to port 80", "direct to port
    /// 3128", "off", or why its caches cannot be probed.
    #[serde(default)]
    pub probe: String,
    /// What happens when no cache can take a packet: open, closed-drop or closed-reject.
    #[serde(default)]
    pub fail_policy: String,
    /// MSS clamping of GRE-redirected SYNs: auto, off or the MSS.
    #[serde(default)]
    pub gre_mss_clamp: String,
    /// The service group's multicast address, if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_group: Option<String>,
    /// Interfaces the group is joined on (those with `wccp-caches`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multicast_interfaces: Vec<String>,
    /// Rounds of scheduled I_SEE_YOUs sent to the group.
    #[serde(default)]
    pub multicast_i_see_you: u64,
    /// Whether caches may negotiate non-default timers (`fast-timers`).
    #[serde(default)]
    pub fast_timers: bool,
    /// The group's timers: fixed by its first usable cache, else the defaults.
    #[serde(default)]
    pub timers: WccpTimers,
    /// Whether the first usable cache fixed `timers` (\[R1\]: until the group empties).
    #[serde(default)]
    pub timers_fixed: bool,
}

/// WCCP protocol timers (\[R1\] TRANSMIT_T and the two scales) and the removal times that
/// follow from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WccpTimers {
    /// TRANSMIT_T: the cache's HERE_I_AM period, ms.
    pub transmit_ms: u64,
    /// TIMEOUT_SCALE.
    pub timeout_scale: u32,
    /// RA_TIMER_SCALE.
    pub ra_timer_scale: u32,
    /// Silence after which the router sends a REMOVAL_QUERY, ms.
    pub query_after_ms: u64,
    /// Silence after which the router removes the cache, ms.
    pub remove_after_ms: u64,
}

impl From<wccp::timer::TimerConfig> for WccpTimers {
    fn from(t: wccp::timer::TimerConfig) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        WccpTimers {
            transmit_ms: ms(t.transmit_t),
            timeout_scale: t.timeout_scale,
            ra_timer_scale: t.ra_timer_scale,
            query_after_ms: ms(t.removal_query()),
            remove_after_ms: ms(t.member_dead()),
        }
    }
}

impl WccpTimers {
    /// One line for the text status.
    fn describe(&self) -> String {
        format!(
            "transmit {} ms, timeout scale {}, ra scale {} (query after {} ms, removed after {} ms)",
            self.transmit_ms,
            self.timeout_scale,
            self.ra_timer_scale,
            self.query_after_ms,
            self.remove_after_ms
        )
    }
}

/// One cache of a service group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WccpCacheStatus {
    /// Cache address.
    pub address: String,
    /// "joining" (has not echoed our Receive ID), "usable", or "unusable: reason".
    pub phase: String,
    /// In the Router View and assignable.
    pub usable: bool,
    /// The designated cache of the group.
    pub designated: bool,
    /// Whether it echoed a Receive ID we sent.
    pub receive_id_echoed: bool,
    /// Negotiated forwarding/return/assignment.
    pub methods: Option<String>,
    /// Weight it announced.
    pub weight: u16,
    /// Hash buckets it holds.
    pub buckets: usize,
    /// The buckets it holds in the data plane, as ranges ("0-127,200").
    pub bucket_ranges: String,
    /// Mask values it holds.
    pub mask_values: usize,
    /// Seconds since its last HERE_I_AM.
    pub last_seen_secs: u64,
    /// On a connected network (L2 forwarding possible).
    pub l2_adjacent: bool,
    /// How the router learnt it: "unicast" (HERE_I_AMs to our address) or "multicast"
    /// (to the service group's address).
    #[serde(default)]
    pub learnt: String,
    /// Sent to this cache.
    pub redirected: TrafficCount,
    /// Returned by this cache.
    pub returned: TrafficCount,
    /// Meant for this cache while fast failover had taken it out.
    pub bypassed: TrafficCount,
    /// Fast-failover probe state: "up", "down", "unanswered" (never answered, so never failed
    /// over), or "-" when not probed.
    pub probe: String,
    /// Probe round-trip time of the last success, microseconds.
    pub probe_rtt_us: Option<u64>,
    /// Times fast failover took this cache out.
    pub failovers: u64,
    /// When fast failover last took it out or put it back, Unix time in milliseconds (0:
    /// never).
    #[serde(default)]
    pub probe_changed_unix_ms: u64,
    /// Why a cache that never answered a probe is not failed over, and what to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_note: Option<String>,
    /// Timers negotiated with it (its removal query and removal follow them).
    #[serde(default)]
    pub timers: WccpTimers,
}

/// Router identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterInfo {
    /// Router id.
    pub id: String,
    /// Process id.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Worker threads.
    pub workers: usize,
    /// Config file in use.
    pub config: String,
    /// Successful reloads.
    pub reloads: u64,
    /// I/O backend.
    pub backend: String,
}

/// One interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// Name.
    pub name: String,
    /// Address/prefix.
    pub address: String,
    /// MAC in use.
    pub mac: String,
    /// MTU.
    pub mtu: u16,
    /// Kernel index.
    pub ifindex: u32,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Frames dropped by the kernel before we could read them (`rx-ring-full`).
    pub rx_ring_full: u64,
    /// Frames the mmap ring handed over too big for their slot with no whole copy (lost).
    #[serde(default)]
    pub rx_truncated: u64,
    /// I/O backend.
    pub backend: String,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Send errors.
    pub tx_errors: u64,
}

/// One route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteStatus {
    /// Prefix in CIDR form.
    pub prefix: String,
    /// Gateway, if any.
    pub via: Option<String>,
    /// Egress interface.
    pub interface: String,
    /// "connected" or "static".
    pub kind: String,
}

/// One ARP binding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArpStatus {
    /// Neighbour address.
    pub address: String,
    /// Its MAC.
    pub mac: String,
    /// Interface.
    pub interface: String,
    /// Seconds since last confirmation.
    pub age_secs: u64,
    /// "reachable" or "probing".
    pub state: String,
}

/// Counters of one stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageStatus {
    /// Stage name.
    pub stage: String,
    /// Packets in.
    #[serde(rename = "in")]
    pub packets_in: u64,
    /// Packets passed on.
    pub out: u64,
    /// Packets consumed on purpose.
    pub consumed: u64,
    /// Drops by reason (only non-zero ones).
    pub drops: BTreeMap<String, u64>,
}

/// Per-worker totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Worker index.
    pub id: usize,
    /// Frames received.
    pub rx_packets: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bursts run.
    pub bursts: u64,
    /// ICMP errors suppressed by the rate limit.
    pub icmp_rate_limited: u64,
}

/// Neighbour table totals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NeighbourStats {
    /// Bindings learnt.
    pub learned: u64,
    /// Bindings whose MAC changed.
    pub changed: u64,
    /// Bindings expired.
    pub expired: u64,
    /// Bindings refused for a full table.
    pub table_full: u64,
}

/// Facts the collector needs besides the shared state.
pub struct StatusContext<'a> {
    /// Router id.
    pub router_id: String,
    /// Config path.
    pub config: String,
    /// Process start.
    pub started: Instant,
    /// Reload count.
    pub reloads: u64,
    /// Shared state.
    pub shared: &'a Shared,
    /// WCCP state, when configured.
    pub wccp: Option<WccpStatus>,
    /// Management socket counters.
    pub management: Option<ManagementStatus>,
    /// The health prober's counters.
    pub probes: Option<ProbeStatus>,
    /// The metrics listener's counters.
    pub metrics: Option<MetricsStatus>,
    /// The VRRP virtual routers, when configured.
    pub ha: Option<crate::ha_status::HaStatus>,
}

/// Collects a status snapshot.
pub fn collect(cx: &StatusContext<'_>) -> Status {
    let shared = cx.shared;
    let tables = shared.tables.load();
    let now = Instant::now();
    let interfaces = tables
        .ifaces
        .iter()
        .map(|i| {
            let sum = |f: &dyn Fn(&crate::pipeline::counters::PortCounters) -> u64| -> u64 {
                shared
                    .counters
                    .iter()
                    .filter_map(|w| w.ports.get(i.id as usize))
                    .map(f)
                    .sum()
            };
            InterfaceStatus {
                name: i.name.clone(),
                address: format!("{}/{}", i.addr, i.prefix_len),
                mac: i.mac.to_string(),
                mtu: i.mtu,
                ifindex: i.ifindex,
                rx_packets: sum(&|c| c.rx_packets.get()),
                rx_bytes: sum(&|c| c.rx_bytes.get()),
                rx_errors: sum(&|c| c.rx_errors.get()),
                rx_ring_full: sum(&|c| c.rx_ring_full.get()),
                rx_truncated: sum(&|c| c.rx_truncated.get()),
                backend: i.backend.to_string(),
                tx_packets: sum(&|c| c.tx_packets.get()),
                tx_bytes: sum(&|c| c.tx_bytes.get()),
                tx_errors: sum(&|c| c.tx_errors.get()),
            }
        })
        .collect();
    let ifname = |id: u16| {
        tables
            .ifaces
            .get(id as usize)
            .map(|i| i.name.clone())
            .unwrap_or_else(|| format!("#{id}"))
    };
    let routes = tables
        .routes
        .routes()
        .iter()
        .map(|r| RouteStatus {
            prefix: format!("{}/{}", r.prefix, r.len),
            via: r.via.map(|v| v.to_string()),
            interface: ifname(r.out_if),
            kind: match r.kind {
                crate::tables::routes::RouteKind::Connected => "connected".into(),
                crate::tables::routes::RouteKind::Static => "static".into(),
            },
        })
        .collect();
    let arp = shared
        .neighbours
        .entries()
        .into_iter()
        .map(|((ifid, addr), e)| ArpStatus {
            address: addr.to_string(),
            mac: e.mac.to_string(),
            interface: ifname(ifid),
            age_secs: now.saturating_duration_since(e.confirmed).as_secs(),
            state: if e.probes > 0 {
                "probing".into()
            } else {
                "reachable".into()
            },
        })
        .collect();
    let pipeline = StageKind::ALL
        .iter()
        .enumerate()
        .map(|(si, kind)| {
            let mut drops = BTreeMap::new();
            for r in DropReason::ALL {
                let n: u64 = shared
                    .counters
                    .iter()
                    .map(|w| w.stages[si].drops[r as usize].get())
                    .sum();
                if n > 0 {
                    drops.insert(r.as_str().to_string(), n);
                }
            }
            StageStatus {
                stage: kind.as_str().to_string(),
                packets_in: shared
                    .counters
                    .iter()
                    .map(|w| w.stages[si].packets_in.get())
                    .sum(),
                out: shared
                    .counters
                    .iter()
                    .map(|w| w.stages[si].packets_out.get())
                    .sum(),
                consumed: shared
                    .counters
                    .iter()
                    .map(|w| w.stages[si].consumed.get())
                    .sum(),
                drops,
            }
        })
        .collect();
    let workers = shared
        .counters
        .iter()
        .enumerate()
        .map(|(id, w)| WorkerStatus {
            id,
            rx_packets: w.ports.iter().map(|p| p.rx_packets.get()).sum(),
            tx_packets: w.ports.iter().map(|p| p.tx_packets.get()).sum(),
            bursts: w.bursts.get(),
            icmp_rate_limited: w.icmp_rate_limited.get(),
        })
        .collect();
    let ns = shared.neighbours.stats();
    Status {
        router: RouterInfo {
            id: cx.router_id.clone(),
            pid: std::process::id(),
            uptime_secs: now.saturating_duration_since(cx.started).as_secs(),
            workers: shared.counters.len(),
            config: cx.config.clone(),
            reloads: cx.reloads,
            backend: backends(&tables),
        },
        interfaces,
        routes,
        arp,
        pipeline,
        workers,
        wccp: cx.wccp.clone(),
        steering: crate::steering_status::collect(&tables.steering),
        management: cx.management.clone(),
        probes: cx.probes.clone(),
        nat: tables.nat.as_ref().map(|n| n.rt.status()),
        metrics: cx.metrics.clone(),
        trace: Some(shared.trace.status()),
        ha: cx.ha.clone(),
        cluster: tables
            .cluster
            .as_ref()
            .map(|c| c.status(shared.counters.iter().map(|w| &w.cluster))),
        cluster_node: None,
        neighbour_stats: NeighbourStats {
            learned: ns.learned,
            changed: ns.changed,
            expired: ns.expired,
            table_full: ns.table_full,
        },
    }
}

/// The backends in use, e.g. "pnet" or "mmap" or "mmap+pnet".
fn backends(tables: &crate::tables::Tables) -> String {
    let mut v: Vec<&str> = tables.ifaces.iter().map(|i| i.backend.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v.join("+")
}

/// Renders the status as tables for a terminal.
pub fn render(s: &Status) -> String {
    let mut o = String::new();
    let r = &s.router;
    let _ = writeln!(
        o,
        "swrouter {}  pid {}  up {}s  workers {}  backend {}  reloads {}",
        r.id, r.pid, r.uptime_secs, r.workers, r.backend, r.reloads
    );
    let _ = writeln!(o, "config {}\n", r.config);
    let _ = writeln!(
        o,
        "{:<12} {:<18} {:<17} {:>5} {:<5} {:>10} {:>12} {:>10} {:>12} {:>6} {:>9} {:>9} {:>6}",
        "INTERFACE",
        "ADDRESS",
        "MAC",
        "MTU",
        "IO",
        "RX-PKTS",
        "RX-BYTES",
        "TX-PKTS",
        "TX-BYTES",
        "RX-ERR",
        "RING-FULL",
        "TRUNCATED",
        "TX-ERR"
    );
    for i in &s.interfaces {
        let _ = writeln!(
            o,
            "{:<12} {:<18} {:<17} {:>5} {:<5} {:>10} {:>12} {:>10} {:>12} {:>6} {:>9} {:>9} {:>6}",
            i.name,
            i.address,
            i.mac,
            i.mtu,
            i.backend,
            i.rx_packets,
            i.rx_bytes,
            i.tx_packets,
            i.tx_bytes,
            i.rx_errors,
            i.rx_ring_full,
            i.rx_truncated,
            i.tx_errors
        );
    }
    let _ = writeln!(
        o,
        "\n{:<20} {:<16} {:<12} KIND",
        "ROUTE", "VIA", "INTERFACE"
    );
    for rt in &s.routes {
        let _ = writeln!(
            o,
            "{:<20} {:<16} {:<12} {}",
            rt.prefix,
            rt.via.as_deref().unwrap_or("-"),
            rt.interface,
            rt.kind
        );
    }
    let _ = writeln!(
        o,
        "\n{:<16} {:<17} {:<12} {:>6} STATE",
        "NEIGHBOUR", "MAC", "INTERFACE", "AGE"
    );
    for a in &s.arp {
        let _ = writeln!(
            o,
            "{:<16} {:<17} {:<12} {:>5}s {}",
            a.address, a.mac, a.interface, a.age_secs, a.state
        );
    }
    let _ = writeln!(
        o,
        "\n{:<12} {:>10} {:>10} {:>10}  DROPS",
        "STAGE", "IN", "OUT", "CONSUMED"
    );
    for st in &s.pipeline {
        let drops: Vec<String> = st.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            o,
            "{:<12} {:>10} {:>10} {:>10}  {}",
            st.stage,
            st.packets_in,
            st.out,
            st.consumed,
            if drops.is_empty() {
                "-".into()
            } else {
                drops.join(" ")
            }
        );
    }
    if let Some(w) = &s.wccp {
        for svc in &w.services {
            let _ = writeln!(
                o,
                "\nWCCP service {} ({}, security {})  router ids {}  change {}  receive id {}  designated {}  assignment {}",
                svc.id,
                svc.kind,
                svc.security,
                svc.router_ids.join(","),
                svc.change_number,
                svc.receive_id,
                svc.designated_cache.as_deref().unwrap_or("-"),
                svc.assignment_method.as_deref().unwrap_or("-")
            );
            if let Some(g) = &svc.multicast_group {
                let _ = writeln!(
                    o,
                    "  multicast group {g}  joined on {}  I_SEE_YOUs to the group {}",
                    if svc.multicast_interfaces.is_empty() {
                        "-".to_string()
                    } else {
                        svc.multicast_interfaces.join(",")
                    },
                    svc.multicast_i_see_you
                );
            }
            let _ = writeln!(
                o,
                "  {:<16} {:<24} {:<6} {:<9} {:<8} {:<22} {:>6} {:>7} {:>5} {:>9} {:<6} {:>12} {:>12}",
                "CACHE",
                "STATE",
                "LEARNT",
                "ECHO",
                "WEIGHT",
                "METHODS",
                "BUCKETS",
                "MASKVAL",
                "L2",
                "LAST-SEEN",
                "PROBE",
                "REDIRECTED",
                "RETURNED"
            );
            for c in &svc.caches {
                let _ = writeln!(
                    o,
                    "  {:<16} {:<24} {:<6} {:<9} {:<8} {:<22} {:>6} {:>7} {:>5} {:>8}s {:<6} {:>12} {:>12}",
                    c.address,
                    if c.designated {
                        format!("{} (designated)", c.phase)
                    } else {
                        c.phase.clone()
                    },
                    if c.receive_id_echoed { "yes" } else { "no" },
                    c.learnt,
                    c.weight,
                    c.methods.as_deref().unwrap_or("-"),
                    c.buckets,
                    c.mask_values,
                    if c.l2_adjacent { "yes" } else { "no" },
                    c.last_seen_secs,
                    c.probe,
                    c.redirected.packets,
                    c.returned.packets
                );
                if let Some(n) = &c.probe_note {
                    let _ = writeln!(o, "    probe: {n}");
                }
                if c.timers != svc.timers {
                    let _ = writeln!(o, "    timers: {}", c.timers.describe());
                }
            }
            let _ = writeln!(
                o,
                "  timers: {}{}",
                svc.timers.describe(),
                match (svc.timers_fixed, svc.fast_timers) {
                    (true, _) => "  [fixed by the first cache]",
                    (false, true) => "  [caches may negotiate others]",
                    (false, false) => "  [fast-timers off]",
                }
            );
            let t = &svc.traffic;
            let _ = writeln!(
                o,
                "  packets: redirected {}  returned {}  bypassed {}  unassigned {}  denied {}  affinity-kept {}  fragments: redirected {} unmatched {}  (redirect list: {} rules, probe: {})",
                t.redirected.packets,
                t.returned.packets,
                t.bypassed.packets,
                t.unassigned.packets,
                t.denied.packets,
                t.affinity_kept.packets,
                t.fragments_redirected.packets,
                t.fragments_unmatched.packets,
                svc.redirect_list_rules,
                svc.probe
            );
            let _ = writeln!(
                o,
                "  no cache: fail-policy {}  forwarded {}  dropped {}  rejected {}  GRE: mss-clamp {} clamped {}  fragmented {}  too-big {}",
                svc.fail_policy,
                t.fail_open_forwarded.packets,
                t.fail_closed_dropped.packets,
                t.fail_closed_rejected.packets,
                svc.gre_mss_clamp,
                t.mss_clamped.packets,
                t.gre_fragmented.packets,
                t.gre_too_big.packets
            );
        }
        if let Some(f) = &w.fast_failover {
            let _ = writeln!(
                o,
                "WCCP fast failover: probe every {} ms, down after {} misses",
                f.probe_interval_ms, f.probe_misses
            );
        }
        if let Some(g) = &w.igmp {
            let _ = writeln!(
                o,
                "WCCP IGMP: groups {}  on {}  queries v1 {} v2 {} v3 {}  reports sent {}  leaves sent {}  malformed {}  ignored {}",
                g.groups.join(","),
                g.interfaces.join(","),
                g.queries.get("v1").copied().unwrap_or(0),
                g.queries.get("v2").copied().unwrap_or(0),
                g.queries.get("v3").copied().unwrap_or(0),
                g.reports_sent,
                g.leaves_sent,
                g.malformed,
                g.ignored
            );
        }
        if let Some(h) = &w.ha_sync {
            let refused: Vec<String> = h.refused.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                o,
                "WCCP HA sync: {}  published {}  deleted {}  exports {}  omitted {}  applied {}  refused {}  ignored as standby {}",
                h.role,
                h.published,
                h.deleted,
                h.exports,
                h.omitted,
                h.applied,
                if refused.is_empty() { "0".to_string() } else { refused.join(",") },
                h.standby_ignored
            );
        }
        if let Some(a) = &w.flow_affinity {
            let _ = writeln!(
                o,
                "WCCP flow affinity: {} flows of {} (evicted {}, idle timeout {} s)",
                a.flows, a.capacity, a.evicted, a.idle_secs
            );
            if let Some(h) = &a.ha_sync {
                let _ = writeln!(
                    o,
                    "  HA sync: published {} deleted {} exports {}; peer's flows adopted {} (applied {} refused {} full {}) hits {} expired {}",
                    h.published, h.deleted, h.exports, h.adopted, h.applied, h.refused, h.adopt_full, h.adopted_hits, h.expired
                );
            }
        }
        let fmt = |m: &BTreeMap<String, u64>| {
            m.iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            o,
            "WCCP messages in: {}  out: {}  dropped: {}",
            fmt(&w.received),
            fmt(&w.sent),
            fmt(&w.drops)
        );
    }
    if let Some(st) = &s.steering {
        crate::steering_status::render(&mut o, st);
    }
    if let Some(n) = &s.nat {
        crate::natd::render(&mut o, n);
    }
    if let Some(h) = &s.ha {
        crate::ha_status::render(&mut o, h);
    }
    if let Some(c) = &s.cluster {
        render_cluster(&mut o, c);
    }
    if let Some(p) = &s.probes {
        let _ = writeln!(
            o,
            "\nprobes sent: {}  answered: {}  ignored: {}  steering-outbox-full: {}",
            p.sent, p.answered, p.ignored, p.steering_outbox_full
        );
    }
    if let Some(t) = &s.trace {
        let _ = writeln!(o, "\n{}", crate::pipeline::trace::status_line(t));
    }
    if let Some(m) = &s.management {
        let _ = writeln!(
            o,
            "\nmanagement clients: {}/{}  served: {}  refused: busy={} peer={}  bad-requests: {}  timed-out: {}",
            m.clients, m.max_clients, m.served, m.refused_busy, m.refused_peer, m.bad_requests, m.timed_out
        );
    }
    if let Some(m) = &s.metrics {
        let _ = writeln!(
            o,
            "metrics on http://{}/metrics  scrapes: {}  refused: busy={}  bad-requests: {}  not-found: {}  timed-out: {}",
            m.listen, m.served, m.refused_busy, m.bad_requests, m.not_found, m.timed_out
        );
    }
    o
}

/// The cluster section of the text rendering (also the end of `swrouter cluster status`).
pub fn render_cluster(o: &mut String, c: &crate::tables::cluster::ClusterStatus) {
    let _ = writeln!(
        o,
        "\ncluster: MAC {}  epoch {}  key {}  ids owned {} releasing {} foreign {}  fences {}",
        c.cluster_mac,
        c.epoch,
        if c.hash_key_set {
            "set"
        } else {
            "not yet (not joined)"
        },
        c.ids_owned,
        c.ids_releasing,
        c.ids_foreign,
        c.fences
    );
    for i in &c.interfaces {
        let _ = writeln!(
            o,
            "  segment {}  addresses {}",
            i.name,
            if i.addresses.is_empty() {
                "-".to_string()
            } else {
                i.addresses.join(",")
            }
        );
    }
    let f = &c.frames;
    let _ = writeln!(
        o,
        "  frames to the cluster MAC: owned {}  foreign {}  held {} (released {} handed {} dropped {})  hold-full {}  not-distributed {}  handed-back duplicates {}",
        f.owned, f.foreign, f.held, f.released, f.handed, f.hold_dropped, f.hold_full, f.not_distributed, f.duplicates
    );
}
