//! The control plane: takes over the configured interfaces, starts the workers, serves the
//! management socket, and handles signals (SIGINT/SIGTERM stop, SIGHUP reloads routes).
//!
//! It runs on a single-threaded tokio runtime; the workers are plain threads that never wait on it.
//! Management clients are served in their own tasks (`mgmt`), which hand each request line to
//! the control loop; the loop answers between its other events and never waits on a client.

pub mod cluster;
pub mod etcd;
pub mod health;
pub mod igmp;
pub mod mesh;
pub mod mgmt;
pub mod pseudo;
pub mod scrape;
pub mod statesync;
pub mod vrrp;
pub mod wccp;

use crate::pipeline::counters::WorkerCounters;
use crate::pipeline::Pipeline;
use crate::status::{self, StatusContext};
use crate::tables::neighbours::Neighbours;
use crate::tables::routes::RouteTable;
use crate::tables::{Iface, Tables};
use crate::wire::ethernet::MacAddr;
use crate::worker::{self, Shared};
use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use conf::RouterConf;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;

/// A management request, one line of text.
pub const REQ_STATUS: &str = "status";
/// Reload request.
pub const REQ_RELOAD: &str = "reload";
/// Management request prefix: `steering restore DEVICE` (answered like a reload).
pub const REQ_STEERING_RESTORE: &str = "steering restore ";
/// Management request: the NAT session list (a JSON array of `natd::SessionRow`).
pub const REQ_NAT_SESSIONS: &str = "nat sessions";
/// Management request: the HA status (a JSON `ha_status::HaStatus`).
pub const REQ_HA_STATUS: &str = "ha status";
/// Management request: the cluster status (a JSON [`cluster::ClusterStatusReply`]).
pub const REQ_CLUSTER_STATUS: &str = "cluster status";
/// Management request: `ha switchover [INTERFACE]` (answered like a reload).
pub const REQ_HA_SWITCHOVER: &str = "ha switchover";
/// Management request prefix (test hook, only with SWROUTER_TEST_HOOKS=1 in the router's
/// environment): `nat kill-worker N panic|stall`.
pub const REQ_NAT_KILL: &str = "nat kill-worker ";
/// Management request prefix: `trace add N [FILTER]` (answered with a [`ReloadReply`]).
pub const REQ_TRACE_ADD: &str = "trace add";
/// Management request: the trace records (a `pipeline::trace::TraceShow`).
pub const REQ_TRACE_SHOW: &str = "trace show";
/// Management request: disarm the trace and forget its records.
pub const REQ_TRACE_CLEAR: &str = "trace clear";
/// Sessions `nat sessions` lists at most.
const MAX_LISTED_SESSIONS: usize = 200_000;

/// Answer to a reload request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReply {
    /// True when the new config is in force.
    pub ok: bool,
    /// What happened, or why the file was rejected.
    pub message: String,
}

/// What we changed on an interface and put back on exit.
struct Restore {
    name: String,
    flags: u32,
    disable_ipv6: Option<String>,
    forwarding: Option<String>,
    /// The file that holds this state until a clean stop (see `saved_state_path`).
    saved: Option<PathBuf>,
}

/// Builds the interface table from the config and the kernel's view of each device.
pub fn build_ifaces(conf: &RouterConf) -> Result<Vec<Iface>> {
    let kernel = pnet_datalink::interfaces();
    let mut out = Vec::new();
    for (id, ic) in conf.interfaces.iter().enumerate() {
        let link = crate::sys::link_info(&ic.name).with_context(|| {
            format!(
                "interface {} named in the config is not usable (is the name right? see `ip link`)",
                ic.name
            )
        })?;
        if let Some(k) = kernel.iter().find(|k| k.name == ic.name) {
            if let Some(v4) = k.ips.iter().find(|ip| ip.is_ipv4()) {
                bail!(
                    "interface {} has the kernel IPv4 address {v4}; swrouter is the IP stack of its interfaces, so remove it first (ip addr flush dev {} scope global)",
                    ic.name,
                    ic.name
                );
            }
        }
        out.push(Iface {
            id: id as u16,
            name: ic.name.clone(),
            ifindex: link.ifindex,
            mac: ic.mac.unwrap_or(MacAddr(link.mac)),
            addr: ic.address,
            prefix_len: ic.network.prefix(),
            mtu: ic.mtu,
            backend: ic.io_backend,
            redirect_in: ic.wccp_redirect_in.clone(),
            redirect_out: ic.wccp_redirect_out.clone(),
            exclude_in: ic.wccp_exclude_in,
            wccp_caches: ic.wccp_caches,
        });
    }
    Ok(out)
}

/// Static routes of a config in the form the route table takes.
fn statics(conf: &RouterConf) -> Vec<(std::net::Ipv4Addr, u8, std::net::Ipv4Addr, Option<String>)> {
    conf.routes
        .iter()
        .map(|r| {
            (
                r.prefix.network(),
                r.prefix.prefix(),
                r.via,
                r.interface.clone(),
            )
        })
        .collect()
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn write_sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        tracing::debug!(path, error = %e, "could not set sysctl");
    }
}

/// Brings the interfaces up under our control: up, kernel ARP off (we answer ARP), no IPv6
/// chatter, no kernel forwarding of what arrives there, MTU as configured.
fn take_over(ifaces: &[Iface]) -> Result<Vec<Restore>> {
    let mut restore = Vec::new();
    for i in ifaces {
        let link = crate::sys::link_info(&i.name)?;
        if link.mtu != i.mtu as u32 {
            crate::sys::set_link_mtu(&i.name, i.mtu as u32)
                .with_context(|| format!("setting MTU {} on {}", i.mtu, i.name))?;
        }
        let flags = link.flags | libc::IFF_UP as u32 | libc::IFF_NOARP as u32;
        crate::sys::set_link_flags(&i.name, flags)
            .with_context(|| format!("bringing {} up", i.name))?;
        let v6 = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", i.name);
        let fwd = format!("/proc/sys/net/ipv4/conf/{}/forwarding", i.name);
        let mut r = Restore {
            name: i.name.clone(),
            flags: link.flags,
            disable_ipv6: read_sysctl(&v6),
            forwarding: read_sysctl(&fwd),
            saved: None,
        };
        // A run that did not stop cleanly (kill -9, a crash) left its changes in place and
        // the original state in a file: that state, not the one found now, is given back.
        let saved = saved_state_path(i);
        match saved
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            Some(text) => match Restore::parse(&i.name, &text) {
                Some(orig) => {
                    tracing::warn!(interface = %i.name, "interface left taken over by a run that did not stop cleanly; its original state will be given back on stop");
                    r = orig;
                }
                None => {
                    tracing::warn!(interface = %i.name, "unreadable saved interface state ignored")
                }
            },
            None => {
                if let Some(p) = &saved {
                    if let Err(e) = std::fs::write(p, r.to_text()) {
                        tracing::debug!(path = %p.display(), error = %e, "could not save the interface's original state");
                    }
                }
            }
        }
        r.saved = saved;
        write_sysctl(&v6, "1");
        write_sysctl(&fwd, "0");
        tracing::info!(interface = %i.name, address = %i.addr, prefix = i.prefix_len, mac = %i.mac, mtu = i.mtu, "interface taken over");
        restore.push(r);
    }
    Ok(restore)
}

/// Where the original state of `i` is kept while swrouter holds it: /run/swrouter, keyed by
/// the network namespace (its inode) and the interface index, so that routers in different
/// namespaces with the same interface names do not mix their files.
fn saved_state_path(i: &Iface) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let netns = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
    let dir = Path::new(SAVED_STATE_DIR);
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .ok()?;
    }
    Some(dir.join(format!("iface-{netns}-{}-{}", i.ifindex, i.name)))
}

/// The directory of the saved interface states.
const SAVED_STATE_DIR: &str = "/run/swrouter";

impl Restore {
    /// The state as the saved file holds it.
    fn to_text(&self) -> String {
        format!(
            "flags={}\ndisable_ipv6={}\nforwarding={}\n",
            self.flags,
            self.disable_ipv6.as_deref().unwrap_or("-"),
            self.forwarding.as_deref().unwrap_or("-")
        )
    }

    /// Reads [`Restore::to_text`]'s form back.
    fn parse(name: &str, text: &str) -> Option<Restore> {
        let mut flags = None;
        let (mut v6, mut fwd) = (None, None);
        for line in text.lines() {
            let (k, v) = line.split_once('=')?;
            let v = (v != "-").then(|| v.to_string());
            match k {
                "flags" => flags = v?.parse().ok(),
                "disable_ipv6" => v6 = v,
                "forwarding" => fwd = v,
                _ => return None,
            }
        }
        Some(Restore {
            name: name.to_string(),
            flags: flags?,
            disable_ipv6: v6,
            forwarding: fwd,
            saved: None,
        })
    }
}

fn give_back(restore: &[Restore]) {
    for r in restore {
        if let Some(p) = &r.saved {
            let _ = std::fs::remove_file(p);
        }
        // Keep the link up (traffic may still flow through it later) but hand ARP back.
        if let Ok(link) = crate::sys::link_info(&r.name) {
            let flags =
                (link.flags & !(libc::IFF_NOARP as u32)) | (r.flags & libc::IFF_NOARP as u32);
            let _ = crate::sys::set_link_flags(&r.name, flags);
        }
        if let Some(v) = &r.disable_ipv6 {
            write_sysctl(
                &format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", r.name),
                v,
            );
        }
        if let Some(v) = &r.forwarding {
            write_sysctl(&format!("/proc/sys/net/ipv4/conf/{}/forwarding", r.name), v);
        }
    }
}

/// Runs the router until SIGINT/SIGTERM. With `[ha.sync] local-socket` and a live process
/// answering there, it first runs as that process's pseudo-standby (`pseudo`) and becomes the
/// node's process only when that one dies.
pub fn run(config_path: &Path, conf: RouterConf) -> Result<()> {
    if crate::sys::euid() != 0 {
        bail!("swrouter needs root (CAP_NET_ADMIN and CAP_NET_RAW) to take over interfaces; run it as root, e.g. as the swrouter service (systemctl start swrouter)");
    }
    let group = match &conf.router.management_group {
        None => None,
        Some(name) => Some(
            crate::sys::group_id(name)
                .with_context(|| format!("looking up management-group `{name}`"))?
                .with_context(|| {
                    format!(
                        "{}: management-group `{name}` is not a group on this host",
                        config_path.display()
                    )
                })?,
        ),
    };
    let mut inherited = None;
    let local_socket = conf.ha.sync.as_ref().and_then(|s| s.local_socket.clone());
    if let Some(path) = local_socket {
        if let Ok(stream) = std::os::unix::net::UnixStream::connect(&path) {
            match pseudo::run_standby(config_path, &conf, group, stream)? {
                pseudo::Outcome::Stopped => return Ok(()),
                pseudo::Outcome::Promote(records) => inherited = Some(records),
            }
        }
    }
    run_node(config_path, conf, group, inherited)
}

/// Runs the router as the node's process; `inherited` is a promoted pseudo-standby's replica.
fn run_node(
    config_path: &Path,
    conf: RouterConf,
    group: Option<u32>,
    inherited: Option<Vec<::hasync::Record>>,
) -> Result<()> {
    let ifaces = build_ifaces(&conf).with_context(|| config_path.display().to_string())?;
    let routes = RouteTable::build(&ifaces, &statics(&conf))
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    // Before the interfaces are touched (a second router on the same socket stops here) and
    // before any other thread runs (the socket is bound under a temporary umask).
    let (socket_file, listener) = mgmt::bind(&conf.router.management_socket, group)?;
    let access = mgmt::Access {
        own_uid: crate::sys::euid(),
        group,
    };
    tracing::info!(socket = %conf.router.management_socket.display(), mode = if group.is_some() { "0660" } else { "0600" }, group = ?group, "management socket ready");
    // Also before the interfaces are touched: a taken port stops the start with nothing changed.
    let metrics_listener = match conf.router.metrics_listen {
        Some(addr) => Some((addr, scrape::bind(addr)?)),
        None => None,
    };
    // The pseudo-standby's socket, bound as early: a process started from now on finds a live
    // node process there.
    let local_listener = match conf
        .ha
        .sync
        .as_ref()
        .and_then(|s| s.local_socket.as_deref())
    {
        Some(p) => Some(pseudo::bind_local(p)?),
        None => None,
    };
    // The cluster key, also before the interfaces are touched (a bad key file stops the start
    // with nothing changed).
    let cluster_key = match &conf.cluster {
        Some(c) => {
            let path = if c.key_file.is_absolute() {
                c.key_file.clone()
            } else {
                config_path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
                    .join(&c.key_file)
            };
            Some(statesync::read_key_of("[cluster]", &path)?)
        }
        None => None,
    };
    let restore = take_over(&ifaces)?;
    let mut tables = Tables::new(ifaces, routes);
    // State sync (HA's peer, or the cluster's mesh): state owners publish into this feed; the
    // sync driver drains it.
    let sync_feed = if conf.ha.sync.is_some() || conf.cluster.is_some() {
        crate::statesync::SyncFeed::new(crate::statesync::FEED_CAPACITY)
    } else {
        crate::statesync::SyncFeed::disabled()
    };
    let mut steering_plane = crate::tables::steer::SteeringPlane::build(&conf.steering.definitions)
        .map_err(|e| anyhow::anyhow!("{}: [steering]: {e}", config_path.display()))?;
    steering_plane.drain_sync = Arc::new(crate::tables::steer::DrainSync::new(sync_feed.clone()));
    tables.steering = Arc::new(steering_plane);
    // NAT: the runtime the workers, the switch processor and status share.
    let nat_rt = match &conf.nat.config {
        Some(cfg) => {
            // Ports the router listens on its own addresses, which may be pool addresses.
            let mut cfg = cfg.clone();
            // In a cluster, a mapping's outside port carries its distribution id.
            cfg.cluster_key = cluster_key.as_deref().map(cluster::hash_key);
            cfg.reserved.add(
                crate::wire::ipv4::PROTO_UDP,
                ::wccp::engine::WCCP_PORT,
                ::wccp::engine::WCCP_PORT,
            );
            cfg.reserved.add(
                crate::wire::ipv4::PROTO_TCP,
                *crate::probe::PROBE_PORTS.start(),
                *crate::probe::PROBE_PORTS.end(),
            );
            let rt = Arc::new(crate::natd::NatRuntime::new(
                cfg.clone(),
                sync_feed.clone(),
            )?);
            tables.nat = Some(Arc::new(crate::natd::NatPlane::new(
                cfg.clone(),
                tables.ifaces.len(),
                rt.clone(),
            )));
            Some(rt)
        }
        None => None,
    };
    // WCCP listens on UDP 2048 on every router address (reference §1); members and others
    // queue apart (issue 13 item 13).
    let wccp_rx =
        (!conf.wccp.is_empty()).then(|| tables.local.bind(::wccp::engine::WCCP_PORT, 512));
    // IGMP queries about the WCCP multicast service groups the router joins (as a host).
    // Bound with WCCP, so that a group added by a reload is answered too; IGMP reaches it
    // only while a group is joined (`WccpPlane::takes_multicast`).
    let igmp_rx = (!conf.wccp.is_empty()).then(|| {
        tables
            .local
            .bind_protocol(crate::wire::ipv4::PROTO_IGMP, 64)
    });
    // Answers to the health probes (WCCP fast failover, steering): TCP to the probe ports
    // the prober has in use.
    let open_probe_ports = Arc::new(crate::probe::OpenPorts::default());
    let probe_rx = Some(tables.local.bind_probes(1024, open_probe_ports.clone()));
    // VRRP: the data plane's view of the virtual routers and the advertisements' queue.
    let vrrp = if conf.ha.is_empty() {
        None
    } else {
        let plane = Arc::new(
            vrrp::VrrpDriver::plane(&conf.ha, &tables.ifaces)
                .with_context(|| config_path.display().to_string())?,
        );
        tables.vrrp = Some(plane.clone());
        Some((plane, tables.local.bind_vrrp(256)))
    };
    // Cluster: the data plane's view (shared MAC and addresses, every id foreign until the
    // cluster driver says otherwise).
    let mut cluster_start = None;
    if let (Some(c), Some(key)) = (&conf.cluster, cluster_key) {
        let plane = Arc::new(
            crate::tables::cluster::ClusterPlane::new(c, &tables.ifaces, conf.nat.config.as_ref())
                .with_context(|| config_path.display().to_string())?,
        );
        // The key is set once, here: it never changes while the node runs.
        let _ = plane.set_hash_key(cluster::hash_key(&key));
        tables.cluster = Some(plane.clone());
        cluster_start = Some(cluster::DriverStart {
            key,
            feed: sync_feed.clone(),
            plane,
            nat: nat_rt.clone(),
            macs: tables
                .ifaces
                .iter()
                .map(|i| (i.name.clone(), i.mac))
                .collect(),
            config_digest: cluster::config_digest(c, conf.nat.config.as_ref()),
        });
    }
    let n_ifaces = tables.ifaces.len();
    let (outbox, outbox_rx) = crate::outbox::outbox(1024)?;
    let shared = Arc::new(Shared {
        tables: ArcSwap::from_pointee(tables),
        neighbours: Neighbours::default(),
        stop: Default::default(),
        counters: (0..conf.router.workers)
            .map(|_| Arc::new(WorkerCounters::new(Pipeline::stage_count(), n_ifaces)))
            .collect(),
        outbox,
        trace: Arc::new(crate::pipeline::trace::Tracer::new(conf.router.workers)),
        sync: sync_feed.clone(),
    });
    let nat_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let result = (|| -> Result<()> {
        // The switch processor grants every worker its VID before the workers start.
        let switch = match &nat_rt {
            Some(rt) => Some(crate::natd::start(rt.clone(), nat_stop.clone())?),
            None => None,
        };
        let handles = worker::start(shared.clone(), outbox_rx)?;
        tracing::info!(workers = handles.len(), router_id = %conf.router.id, "swrouter running");
        // Interfaces taken over, socket bound, workers polling: a Type=notify unit is started.
        let notify = crate::sd_notify::Notifier::from_env();
        notify.notify(&format!(
            "READY=1\nSTATUS=routing on {n_ifaces} interfaces with {} workers",
            handles.len()
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let outcome = rt.block_on(control_loop(
            config_path.to_path_buf(),
            conf,
            shared.clone(),
            (listener, access),
            (
                wccp_rx,
                igmp_rx,
                vrrp,
                HaStart {
                    local_listener,
                    inherited,
                    cluster: cluster_start,
                },
            ),
            (probe_rx, open_probe_ports),
            (metrics_listener, notify.clone()),
        ));
        notify.notify("STOPPING=1");
        shared.stop.store(true, Ordering::Relaxed);
        nat_stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        if let Some(h) = switch {
            let _ = h.join();
        }
        outcome
    })();
    nat_stop.store(true, Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    give_back(&restore);
    drop(socket_file);
    tracing::info!("swrouter stopped");
    result
}

struct ControlState {
    config_path: PathBuf,
    conf: RouterConf,
    shared: Arc<Shared>,
    started: Instant,
    reloads: u64,
    wccp: Option<wccp::WccpDriver>,
    /// Steering health checks of the plane in force.
    health: health::HealthDriver,
    /// The one TCP prober both health checks send through.
    prober: crate::probe::Prober,
    /// The management server's counters.
    mgmt: Arc<mgmt::Counters>,
    /// The Prometheus metrics listener (`metrics-listen`).
    metrics: MetricsServer,
    /// systemd's readiness protocol: reloads are announced to it.
    notify: crate::sd_notify::Notifier,
    /// The VRRP virtual routers (`[ha]`).
    vrrp: Option<vrrp::VrrpDriver>,
    /// The state-sync channel to the peer node (`[ha.sync]`).
    sync: Option<statesync::SyncDriver>,
    /// The cluster driver (`[cluster]`).
    cluster: Option<cluster::ClusterDriver>,
    /// With a sync peer: the virtual routers have not started yet; they start when the peer's
    /// state has arrived, or at this time if no peer answered.
    vrrp_start_by: Option<Instant>,
}

/// The metrics listener in force: its address and accept task, rebound by a reload.
struct MetricsServer {
    /// Where it listens; `None` when `metrics-listen` is not set.
    listen: Option<std::net::SocketAddrV4>,
    /// The accept task; aborting it closes the listener (clients being served finish).
    task: Option<tokio::task::JoinHandle<()>>,
    /// Kept across rebinds: the counters are the router's, not one listener's.
    counters: Arc<scrape::Counters>,
    /// Where scrapes ask the control loop for snapshots.
    snapshots: tokio::sync::mpsc::Sender<scrape::SnapshotRequest>,
}

/// What a reload does to the metrics listener; prepared (bound) before the reload commits.
enum MetricsRebind {
    /// The address did not change.
    Keep,
    /// `metrics-listen` was removed.
    Off,
    /// A new address, already bound.
    To(std::net::SocketAddrV4, std::net::TcpListener),
}

impl MetricsServer {
    /// Serves `listener` from now on, in place of any listener before it.
    fn start(&mut self, addr: std::net::SocketAddrV4, listener: std::net::TcpListener) {
        self.stop();
        self.task = Some(tokio::spawn(scrape::serve(
            listener,
            scrape::Limits::default(),
            self.snapshots.clone(),
            self.counters.clone(),
        )));
        self.listen = Some(addr);
        tracing::info!(listen = %addr, "metrics listener ready: GET /metrics");
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(a) = self.listen.take() {
            tracing::info!(listen = %a, "metrics listener closed");
        }
    }

    /// Binds a changed `metrics-listen`; the running listener stays until [`Self::apply`].
    fn prepare(&self, new: Option<std::net::SocketAddrV4>) -> Result<MetricsRebind, String> {
        match (self.listen, new) {
            (old, new) if old == new => Ok(MetricsRebind::Keep),
            (_, None) => Ok(MetricsRebind::Off),
            (old, Some(addr)) => match scrape::bind(addr) {
                Ok(l) => Ok(MetricsRebind::To(addr, l)),
                Err(e) => {
                    let hint = match old {
                        Some(o) if o.port() == addr.port() => format!(
                            " (the running listener {o} holds that port until the new one is up: use another port, or restart)"
                        ),
                        _ => String::new(),
                    };
                    Err(format!("{e:#}{hint}"))
                }
            },
        }
    }

    fn apply(&mut self, r: MetricsRebind) {
        match r {
            MetricsRebind::Keep => {}
            MetricsRebind::Off => self.stop(),
            MetricsRebind::To(addr, l) => self.start(addr, l),
        }
    }
}

/// What the control loop needs to run VRRP: the data plane's view and the advertisements'
/// queue.
type VrrpStart = (
    Arc<crate::tables::vrrp::VrrpPlane>,
    tokio::sync::mpsc::Receiver<crate::tables::local::VrrpDatagram>,
);

/// What HA sync starts with besides its configuration.
struct HaStart {
    /// The pseudo-standby's socket (`[ha.sync] local-socket`), bound.
    local_listener: Option<pseudo::LocalListener>,
    /// A promoted pseudo-standby's replica.
    inherited: Option<Vec<::hasync::Record>>,
    /// What the cluster driver starts with (`[cluster]`).
    cluster: Option<cluster::DriverStart>,
}

async fn control_loop(
    config_path: PathBuf,
    conf: RouterConf,
    shared: Arc<Shared>,
    (listener, access): (std::os::unix::net::UnixListener, mgmt::Access),
    // The protocols' queues from local delivery: WCCP (UDP 2048), IGMP, and VRRP (with its
    // plane); and what HA sync starts with.
    (
        mut wccp_rx,
        mut igmp_rx,
        vrrp,
        HaStart {
            local_listener,
            inherited,
            cluster: cluster_start,
        },
    ): (
        Option<crate::tables::local::ControlReceiver>,
        Option<tokio::sync::mpsc::Receiver<crate::tables::local::LocalDatagram>>,
        Option<VrrpStart>,
        HaStart,
    ),
    (mut probe_rx, open_probe_ports): (
        Option<tokio::sync::mpsc::Receiver<crate::probe::TcpSegment>>,
        Arc<crate::probe::OpenPorts>,
    ),
    (metrics_listener, notify): (
        Option<(std::net::SocketAddrV4, std::net::TcpListener)>,
        crate::sd_notify::Notifier,
    ),
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    let limits = mgmt::Limits::default();
    // One request per client at most is ever waiting here.
    let (mgmt_tx, mut mgmt_rx) = tokio::sync::mpsc::channel(limits.max_clients);
    let mgmt_counters = Arc::new(mgmt::Counters::default());
    // Dropped with the runtime when the loop ends, which closes every client.
    tokio::spawn(mgmt::serve(
        listener,
        access,
        limits,
        mgmt_tx,
        mgmt_counters.clone(),
    ));
    let wccp = match &wccp_rx {
        Some(_) => Some(wccp::WccpDriver::new(
            &conf.wccp,
            &conf.wccp_options,
            conf.router.workers,
            conf.router.id,
            shared.clone(),
        )?),
        None => None,
    };
    let mut health = health::HealthDriver::new(shared.tables.load().steering.clone(), &conf, None);
    health.set_sync_feed(shared.sync.clone());
    let (vrrp, mut vrrp_rx) = match vrrp {
        Some((plane, rx)) => {
            let mut d = vrrp::VrrpDriver::new(
                &conf.ha,
                &shared.tables.load().ifaces,
                plane,
                shared.outbox.clone(),
                Instant::now(),
            )?;
            // With a sync peer, the virtual routers start once the peer's state is here (see
            // `ha_sync_after`): a node that comes back is synced before it is eligible.
            if conf.ha.sync.is_none() {
                d.start(Instant::now());
            }
            (Some(d), Some(rx))
        }
        None => (None, None),
    };
    let sync = match &conf.ha.sync {
        Some(sc) => {
            let dir = config_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            Some(statesync::SyncDriver::new(
                sc,
                &dir,
                shared.sync.clone(),
                local_listener,
                Instant::now(),
            )?)
        }
        None => None,
    };
    let mut sync = sync;
    let (cluster, mut cluster_rx) = match (&conf.cluster, cluster_start) {
        (Some(c), Some(start)) => {
            let (mut d, rx) = cluster::ClusterDriver::from_conf(c, start, Instant::now())?;
            tracing::info!(
                cluster = %c.name,
                node = c.node_id,
                sync = %d.mesh().local(),
                etcd = ?c.etcd,
                "cluster: joining"
            );
            d.set_state_owners(
                wccp.as_ref().map(|w| w.affinity_sync()),
                Some(shared.tables.load().steering.drain_sync.clone()),
            );
            d.start(Instant::now());
            (Some(d), Some(rx))
        }
        _ => (None, None),
    };
    let cluster_socket = cluster.as_ref().map(|c| c.mesh().socket());
    let mut cluster_buf = vec![0u8; statesync::MAX_DATAGRAM];
    let mut local_rx = sync.as_mut().and_then(|s| s.take_local_events());
    let sync_socket = sync.as_ref().map(|s| s.socket());
    let sync_feed = shared.sync.clone();
    let mut sync_buf = vec![0u8; statesync::MAX_DATAGRAM];
    // One snapshot request per scrape client at most is ever waiting here.
    let (snapshots, mut snapshot_rx) = tokio::sync::mpsc::channel(scrape::MAX_CLIENTS);
    let mut metrics = MetricsServer {
        listen: None,
        task: None,
        counters: Default::default(),
        snapshots,
    };
    if let Some((addr, l)) = metrics_listener {
        metrics.start(addr, l);
    }
    let (has_vrrp, has_sync) = (vrrp.is_some(), sync.is_some());
    let mut state = ControlState {
        health,
        prober: crate::probe::Prober::with_open_ports(
            crate::probe::random_seed(),
            open_probe_ports,
        ),
        config_path,
        conf,
        shared,
        started: Instant::now(),
        reloads: 0,
        wccp,
        mgmt: mgmt_counters,
        metrics,
        notify,
        vrrp_start_by: (has_vrrp && has_sync).then(|| Instant::now() + VRRP_SYNC_GRACE),
        vrrp,
        sync,
        cluster,
    };
    if let Some(s) = state.sync.as_mut() {
        s.publish_node(0);
    }
    if let Some(records) = inherited {
        // The owners take the inherited state the way a standby takes its peer's: an active
        // owner refuses a peer's records (the active owns its state). The first role update
        // below makes them active again when this node is master.
        let now = Instant::now();
        if let Some(nat) = state.shared.tables.load().nat.as_ref() {
            nat.rt.set_active(false);
        }
        if let Some(w) = state.wccp.as_mut() {
            w.set_ha_active(false, now);
        }
        state.health.set_ha_active(false, now);
        adopt_replica(&mut state, records);
    }
    ha_sync_after(&mut state);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Fast-failover probe rounds; the period follows the (reloadable) configuration.
    let mut probe_period = state.wccp.as_ref().and_then(|w| w.probe_interval());
    let mut next_probe = tokio::time::Instant::now();
    let mut health_tick = tokio::time::interval(health::TICK);
    // The neighbour table is compared with what was published this often.
    let mut sync_neighbour_tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        let far_probe = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        // The WCCP engine's next deadline; far away when it has none (or WCCP is off).
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        let wccp_deadline = state
            .wccp
            .as_ref()
            .and_then(|w| w.deadline())
            .map(tokio::time::Instant::from_std)
            .unwrap_or(far);
        let vrrp_deadline = state
            .vrrp
            .as_ref()
            .and_then(|v| v.deadline())
            .map(tokio::time::Instant::from_std)
            .unwrap_or(far);
        let sync_deadline = state
            .sync
            .as_ref()
            .and_then(|s| s.deadline())
            .into_iter()
            .chain(state.vrrp_start_by)
            .min()
            .map(tokio::time::Instant::from_std)
            .unwrap_or(far);
        let cluster_deadline = state
            .cluster
            .as_ref()
            .map(|c| tokio::time::Instant::from_std(c.deadline(Instant::now())))
            .unwrap_or(far);
        tokio::select! {
            r = recv_sync(cluster_socket.as_deref(), &mut cluster_buf) => {
                if let (Ok((n, from)), Some(c)) = (r, state.cluster.as_mut()) {
                    c.on_datagram(&cluster_buf[..n], from, Instant::now());
                }
            }
            Some(r) = recv_etcd(&mut cluster_rx) => {
                if let Some(c) = state.cluster.as_mut() {
                    c.on_etcd(r, Instant::now());
                }
            }
            _ = tokio::time::sleep_until(cluster_deadline) => {
                if let Some(c) = state.cluster.as_mut() {
                    c.on_tick(Instant::now());
                }
            }
            r = recv_sync(sync_socket.as_deref(), &mut sync_buf) => {
                if let (Ok((n, from)), Some(s)) = (r, state.sync.as_mut()) {
                    let changes = s.on_datagram(&sync_buf[..n], from, Instant::now());
                    apply_peer_changes(&mut state, changes);
                }
            }
            _ = sync_feed.ready() => {}
            ev = recv_local(&mut local_rx) => {
                if let (Some(ev), Some(s)) = (ev, state.sync.as_mut()) {
                    s.on_local_event(ev, Instant::now());
                }
            }
            _ = tokio::time::sleep_until(sync_deadline) => {}
            _ = sync_neighbour_tick.tick(), if state.sync.is_some() => {
                if let Some(s) = state.sync.as_mut() {
                    s.publish_neighbours(&state.shared.neighbours, &state.shared.tables.load().ifaces);
                }
            }
            d = recv_vrrp(&mut vrrp_rx) => {
                if let (Some(d), Some(v)) = (d, state.vrrp.as_mut()) {
                    v.on_datagram(&d, Instant::now());
                }
            }
            _ = tokio::time::sleep_until(vrrp_deadline) => {
                if let Some(v) = state.vrrp.as_mut() {
                    v.on_timer(Instant::now());
                }
            }
            d = recv_wccp(&mut wccp_rx) => {
                if let (Some(d), Some(w)) = (d, state.wccp.as_mut()) {
                    let tables = state.shared.tables.load();
                    w.handle(d, &tables);
                }
            }
            Some(d) = recv_igmp(&mut igmp_rx) => {
                if let Some(w) = state.wccp.as_mut() {
                    w.on_igmp(d);
                }
            }
            _ = tokio::time::sleep_until(wccp_deadline) => {
                if let Some(w) = state.wccp.as_mut() {
                    w.on_timeout();
                }
            }
            _ = tokio::time::sleep_until(if probe_period.is_some() { next_probe } else { far_probe }) => {
                if let (Some(w), Some(p)) = (state.wccp.as_mut(), probe_period) {
                    w.on_probe_tick(&mut state.prober);
                    next_probe = tokio::time::Instant::now() + p;
                }
            }
            seg = recv_probe(&mut probe_rx) => {
                if let Some(seg) = seg {
                    on_probe_segment(&mut state, &seg);
                }
            }
            _ = health_tick.tick() => state.health.tick(&mut state.prober, &state.shared.outbox),
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                let r = reload(&mut state);
                tracing::info!(ok = r.ok, message = %r.message, "SIGHUP reload");
                probe_period = state.wccp.as_ref().and_then(|w| w.probe_interval());
            }
            // Never closed: `state.metrics` holds a sender.
            Some(reply) = snapshot_rx.recv() => {
                let _ = reply.send(Box::new(snapshot(&state, &limits)));
            }
            Some(req) = mgmt_rx.recv() => {
                let reply = answer(&mut state, req.line.trim(), &limits);
                // The client may have gone; its task then just ends.
                let _ = req.reply.send(reply);
                probe_period = state.wccp.as_ref().and_then(|w| w.probe_interval());
            }
        }
        ha_sync_after(&mut state);
        if let Some(c) = state.cluster.as_mut() {
            c.pump(Instant::now());
            // Adopted WCCP flows no segment claimed within the idle timeout are forgotten.
            if let Some(w) = state.wccp.as_ref() {
                w.affinity_housekeeping(Instant::now());
            }
        }
    }
    // A clean stop: masters send priority 0 (RFC 5798 §6.4.3) and the workers get a moment
    // to put it on the wire before they stop.
    if let Some(v) = state.vrrp.as_mut() {
        let was_master = v.any_master();
        v.shutdown(Instant::now());
        if was_master {
            tokio::time::sleep(vrrp::STOP_GRACE).await;
        }
    }
    if let Some(w) = state.wccp.as_mut() {
        // Leave the multicast groups while worker 0 still drains the outbox.
        w.leave_groups();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// With a sync peer, how long a starting node waits for an answer before its virtual routers
/// start without the peer's state (it is alone).
const VRRP_SYNC_GRACE: Duration = Duration::from_millis(500);
/// How much longer it waits for a peer that answered to finish its bulk resync.
const VRRP_SYNC_WAIT: Duration = Duration::from_secs(10);

/// After every event of the control loop: the node's role follows VRRP (the owners hear of a
/// change), the feed is drained into the sync channel, and the channel sends what is due.
fn ha_sync_after(state: &mut ControlState) {
    let Some(sync) = state.sync.as_mut() else {
        return;
    };
    let now = Instant::now();
    if let (Some(by), Some(v)) = (state.vrrp_start_by, state.vrrp.as_mut()) {
        let in_sync = sync.in_sync();
        let alone = now >= by && !sync.peer_alive();
        if in_sync || alone || now >= by + VRRP_SYNC_WAIT {
            if in_sync {
                tracing::info!("HA: the peer's state is here; the virtual routers start");
            } else {
                tracing::warn!(
                    peer_alive = sync.peer_alive(),
                    "HA: the virtual routers start without the peer's state (no peer answered, or its resync did not finish)"
                );
            }
            v.start(now);
            state.vrrp_start_by = None;
        }
    }
    let role = match state.vrrp.as_ref() {
        Some(v) if !v.any_master() => statesync::Role::Standby,
        _ => statesync::Role::Active,
    };
    let cause = state
        .vrrp
        .as_ref()
        .and_then(|v| v.last_cause())
        .unwrap_or_else(|| "start".to_string());
    let mut reexport = false;
    let nat = state
        .shared
        .tables
        .load()
        .nat
        .as_ref()
        .map(|p| p.rt.clone());
    if sync.set_role(role, &cause, now) {
        // The state owners follow the role.
        if let Some(nat) = &nat {
            nat.set_active(role == statesync::Role::Active);
        }
        if let Some(w) = state.wccp.as_mut() {
            w.set_ha_active(role == statesync::Role::Active, now);
        }
        state
            .health
            .set_ha_active(role == statesync::Role::Active, now);
        // Becoming active, the synced state is now this node's own: owners re-publish it.
        // Becoming standby, it is the new active's: our copy of it goes (owners publish
        // nothing while standby).
        reexport |= role == statesync::Role::Active;
        if role == statesync::Role::Standby {
            sync.forget_own(&[
                ::hasync::TableId::NAT_SESSION,
                ::hasync::TableId::WCCP_GROUP,
                ::hasync::TableId::AFFINITY,
                ::hasync::TableId::STEERING_HEALTH,
                ::hasync::TableId::STEERING_DRAIN,
            ]);
        }
    }
    if let Some(w) = state.wccp.as_ref() {
        w.affinity_housekeeping(now);
    }
    reexport |= sync.pump_feed(now);
    if reexport {
        // Owners re-export everything they hold.
        if let Some(nat) = &nat {
            nat.export_all();
        }
        sync.republish_all_neighbours();
        if let Some(w) = state.wccp.as_mut() {
            // Into the feed: the wake it raises brings the records through pump_feed next.
            w.export_all();
        }
        state.health.export_all();
    }
    sync.on_tick(now);
}

/// Hands the peer's state changes to their owners.
fn apply_peer_changes(state: &mut ControlState, changes: Vec<::hasync::Record>) {
    let Some(sync) = state.sync.as_mut() else {
        return;
    };
    let now = Instant::now();
    let tables = state.shared.tables.load();
    let own = |a: std::net::Ipv4Addr| {
        tables.ifaces.iter().any(|i| i.addr == a)
            || tables
                .vrrp
                .as_ref()
                .is_some_and(|v| v.vip_role(a).is_some())
    };
    for rec in changes {
        let applied = match rec.table {
            ::hasync::TableId::NEIGHBOUR => statesync::apply_neighbour(
                rec.as_ref(),
                &state.shared.neighbours,
                &tables.ifaces,
                own,
                now,
            ),
            // The node record is shown in status.
            ::hasync::TableId::CONFIG => true,
            ::hasync::TableId::NAT_SESSION => {
                tables.nat.as_ref().is_some_and(|p| p.rt.apply_synced(&rec))
            }
            ::hasync::TableId::WCCP_GROUP => state
                .wccp
                .as_mut()
                .is_some_and(|w| w.apply_synced(&rec, now)),
            ::hasync::TableId::AFFINITY => state
                .wccp
                .as_ref()
                .is_some_and(|w| w.apply_affinity(&rec, now)),
            ::hasync::TableId::STEERING_HEALTH => state.health.apply_synced(&rec, now),
            ::hasync::TableId::STEERING_DRAIN => state.health.apply_drain(&rec),
            _ => false,
        };
        sync.count_change(rec.table, applied);
    }
}

/// A promoted pseudo-standby's replica: the peer node's state goes to the owners as peer
/// changes, then the node's own state the dead process published, which this process also
/// republishes as its own (to the peer node and to its next pseudo-standby).
fn adopt_replica(state: &mut ControlState, records: Vec<::hasync::Record>) {
    let (mut own, mut peer) = (Vec::new(), Vec::new());
    for mut r in records {
        let (is_peer, table) = pseudo::split_table(r.table);
        r.table = table;
        if is_peer {
            peer.push(r);
        } else {
            own.push(r);
        }
    }
    tracing::warn!(
        own = own.len(),
        peer = peer.len(),
        "promoted pseudo-standby: this process is now the node's process; applying the state it held"
    );
    apply_peer_changes(state, peer);
    // The node record is this process's own (published at start).
    own.retain(|r| r.table != ::hasync::TableId::CONFIG);
    let republish: Vec<::hasync::Record> = own.clone();
    apply_peer_changes(state, own);
    for r in republish {
        state.shared.sync.publish(r);
    }
}

/// The next event of the pseudo-standby's socket, or never without `local-socket`.
async fn recv_local(
    rx: &mut Option<tokio::sync::mpsc::Receiver<pseudo::LocalEvent>>,
) -> Option<pseudo::LocalEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next sync datagram, or never when `[ha.sync]` is off.
async fn recv_sync(
    socket: Option<&tokio::net::UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// The cluster status: the driver's view (membership, epoch table, etcd, mesh) and the data
/// plane's (ids by state, frames by fate).
fn cluster_status(state: &ControlState) -> Option<cluster::ClusterStatusReply> {
    let driver = state.cluster.as_ref()?;
    let tables = state.shared.tables.load();
    let plane = tables
        .cluster
        .as_ref()?
        .status(state.shared.counters.iter().map(|w| &w.cluster));
    Some(cluster::ClusterStatusReply {
        node: driver.status(Instant::now()),
        plane,
    })
}

/// The HA status: VRRP, the node's role and the sync channel.
fn ha_status(state: &ControlState) -> Option<crate::ha_status::HaStatus> {
    let mut h = state
        .vrrp
        .as_ref()
        .map(|v| v.status(&state.shared.tables.load().ifaces))?;
    if let Some(s) = state.sync.as_ref() {
        h.role = s.role().as_str().to_string();
        h.sync = Some(s.status(Instant::now()));
    }
    Some(h)
}

/// The next VRRP advertisement, or never when VRRP is off.
async fn recv_vrrp(
    rx: &mut Option<tokio::sync::mpsc::Receiver<crate::tables::local::VrrpDatagram>>,
) -> Option<crate::tables::local::VrrpDatagram> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next IGMP message, or never when no multicast group is configured.
async fn recv_igmp(
    rx: &mut Option<tokio::sync::mpsc::Receiver<crate::tables::local::LocalDatagram>>,
) -> Option<crate::tables::local::LocalDatagram> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A segment to a probe port: the prober validates it, closes an accepted handshake, and the
/// answer goes to whichever health check sent the probe.
fn on_probe_segment(state: &mut ControlState, seg: &crate::probe::TcpSegment) {
    let r = state.prober.on_segment(seg, Instant::now());
    if let Some(rst) = r.reply {
        // A RST that finds the outbox full is lost; the target times the half-open
        // connection out on its own. A redirect probe's RST goes the way its SYN went.
        match (r.target.filter(|t| t.via.is_some()), state.wccp.as_mut()) {
            (Some(t), Some(w)) => {
                let _ = w.send_probe(&t, rst);
            }
            (Some(_), None) => {}
            (None, _) => {
                let _ = state.shared.outbox.send_ipv4(rst);
            }
        }
    }
    match r.answer {
        Some(
            a @ crate::probe::ProbeAnswer {
                owner: crate::probe::ProbeOwner::Wccp,
                ..
            },
        ) => {
            if let Some(w) = state.wccp.as_mut() {
                w.on_probe_answer(&a);
            }
        }
        Some(a) => state.health.on_probe_answer(&a),
        None => {}
    }
}

/// The next probe answer, or never when nothing probes.
async fn recv_probe(
    rx: &mut Option<tokio::sync::mpsc::Receiver<crate::probe::TcpSegment>>,
) -> Option<crate::probe::TcpSegment> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next etcd result of the cluster driver, or never without `[cluster]`.
async fn recv_etcd(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<cluster::EtcdResult>>,
) -> Option<cluster::EtcdResult> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next WCCP datagram, or never when WCCP is off.
async fn recv_wccp(
    rx: &mut Option<crate::tables::local::ControlReceiver>,
) -> Option<crate::tables::local::LocalDatagram> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The status snapshot: what `swrouter status` shows and `/metrics` encodes.
fn snapshot(state: &ControlState, limits: &mgmt::Limits) -> status::Status {
    let cx = StatusContext {
        router_id: state.conf.router.id.to_string(),
        config: state.config_path.display().to_string(),
        started: state.started,
        reloads: state.reloads,
        shared: &state.shared,
        wccp: state.wccp.as_ref().map(|w| w.status()),
        management: Some(state.mgmt.status(limits)),
        probes: Some({
            let c = state.prober.counters();
            status::ProbeStatus {
                sent: c.sent,
                answered: c.answered,
                ignored: c.ignored,
                steering_outbox_full: state.health.outbox_full(),
            }
        }),
        metrics: state
            .metrics
            .listen
            .map(|a| state.metrics.counters.status(a)),
        ha: ha_status(state),
    };
    let mut s = status::collect(&cx);
    if let Some(st) = s.steering.as_mut() {
        st.ha_sync = state.health.sync_status();
    }
    s.cluster_node = state.cluster.as_ref().map(|c| c.status(Instant::now()));
    s
}

/// The answer to one management request line, as one line of JSON. Runs inside the control
/// loop, so every request must be quick: status reads counters, reload reads one file.
fn answer(state: &mut ControlState, line: &str, limits: &mgmt::Limits) -> String {
    let reply = match line {
        REQ_STATUS => serde_json::to_string(&snapshot(state, limits)),
        REQ_RELOAD => serde_json::to_string(&reload(state)),
        REQ_HA_STATUS => match ha_status(state) {
            Some(h) => serde_json::to_string(&h),
            None => serde_json::to_string(&ha_not_configured(state)),
        },
        REQ_CLUSTER_STATUS => match cluster_status(state) {
            Some(c) => serde_json::to_string(&c),
            None => serde_json::to_string(&ReloadReply {
                ok: false,
                message: format!(
                    "{}: no [cluster] section: this router is not a cluster node",
                    state.config_path.display()
                ),
            }),
        },
        l if l == REQ_HA_SWITCHOVER || l.starts_with("ha switchover ") => {
            let iface = l[REQ_HA_SWITCHOVER.len()..].trim();
            let reply = match state.vrrp.as_mut() {
                None => ha_not_configured(state),
                Some(v) => {
                    let r = v.switchover((!iface.is_empty()).then_some(iface), Instant::now());
                    let (ok, message) = match r {
                        Ok(m) => (true, m),
                        Err(m) => (false, m),
                    };
                    tracing::info!(ok, message = %message, "HA switchover requested");
                    ReloadReply { ok, message }
                }
            };
            serde_json::to_string(&reply)
        }
        REQ_NAT_SESSIONS => match state.shared.tables.load().nat.as_ref() {
            Some(n) => {
                let mut rows = n.rt.list_sessions(std::time::Duration::from_millis(1000));
                rows.truncate(MAX_LISTED_SESSIONS);
                serde_json::to_string(&rows)
            }
            None => serde_json::to_string(&ReloadReply {
                ok: false,
                message: "NAT is not configured (no [nat] section)".into(),
            }),
        },
        REQ_TRACE_SHOW => serde_json::to_string(&state.shared.trace.show()),
        REQ_TRACE_CLEAR => {
            state.shared.trace.clear();
            tracing::info!("packet trace cleared");
            serde_json::to_string(&ReloadReply {
                ok: true,
                message: "trace cleared: disarmed, records forgotten".into(),
            })
        }
        l if l.starts_with(REQ_TRACE_ADD) => {
            let (ok, message) = trace_add(state, &l[REQ_TRACE_ADD.len()..]);
            serde_json::to_string(&ReloadReply { ok, message })
        }
        l if l.starts_with(REQ_NAT_KILL) => {
            let (ok, message) = nat_kill(state, l.trim_start_matches(REQ_NAT_KILL));
            serde_json::to_string(&ReloadReply { ok, message })
        }
        l if l.starts_with(REQ_STEERING_RESTORE) => {
            let name = l.trim_start_matches(REQ_STEERING_RESTORE).trim();
            let (ok, message) = match state.health.restore(name) {
                Ok(m) => (true, m),
                Err(m) => (false, m),
            };
            serde_json::to_string(&ReloadReply { ok, message })
        }
        other => serde_json::to_string(&ReloadReply {
            ok: false,
            message: format!("unknown request {other:?}; expected `status` or `reload`"),
        }),
    };
    // Our own types always serialize; should one ever fail, the client still gets a line.
    reply.unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("could not encode the answer: {e}") }).to_string()
    })
}

/// `trace add N [FILTER]`: arms the packet trace.
fn trace_add(state: &ControlState, args: &str) -> (bool, String) {
    use crate::pipeline::trace::{TraceFilter, MAX_TRACE_COUNT};
    let args = args.trim_start();
    let (count, filter) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    let filter = filter.trim();
    let count = match count.parse::<u32>() {
        Ok(n) if (1..=MAX_TRACE_COUNT).contains(&n) => n,
        _ => {
            return (
                false,
                format!(
                    "usage: trace add N [FILTER], N from 1 to {MAX_TRACE_COUNT}; got {count:?}"
                ),
            )
        }
    };
    let tables = state.shared.tables.load();
    let parsed = TraceFilter::parse(filter, |name| {
        tables.ifaces.iter().find(|i| i.name == name).map(|i| i.id)
    });
    match parsed {
        Ok(f) => {
            state.shared.trace.arm(count, f, filter);
            tracing::info!(count, filter, "packet trace armed");
            let what = if filter.is_empty() {
                "every packet".to_string()
            } else {
                format!("`{filter}`")
            };
            (
                true,
                format!("tracing the next {count} received packets matching {what}; see `swrouter trace show`"),
            )
        }
        Err(e) => (
            false,
            format!(
                "{e}
  {filter}
  {:>w$}",
                "^",
                w = e.column
            ),
        ),
    }
}

/// The answer to an HA request when `[ha]` is absent.
fn ha_not_configured(state: &ControlState) -> ReloadReply {
    ReloadReply {
        ok: false,
        message: format!(
            "HA is not configured: {} has no [[ha.vrrp]] (see conf/README.md, [ha])",
            state.config_path.display()
        ),
    }
}

/// The test hook `nat kill-worker N panic|stall`.
fn nat_kill(state: &ControlState, args: &str) -> (bool, String) {
    let tables = state.shared.tables.load();
    let Some(n) = tables.nat.as_ref() else {
        return (false, "NAT is not configured".into());
    };
    if !n.rt.test_hooks {
        return (
            false,
            "test hooks are off (start the router with SWROUTER_TEST_HOOKS=1)".into(),
        );
    }
    let mut it = args.split_whitespace();
    let (Some(Ok(w)), Some(how)) = (it.next().map(str::parse::<u16>), it.next()) else {
        return (false, "usage: nat kill-worker N panic|stall".into());
    };
    let panic = match how {
        "panic" => true,
        "stall" => false,
        _ => return (false, "usage: nat kill-worker N panic|stall".into()),
    };
    if usize::from(w) >= n.rt.inboxes.len() {
        return (false, format!("no worker {w}"));
    }
    tracing::warn!(worker = w, how, "test hook: killing a worker");
    let sent = n.rt.control(w, crate::natd::Control::Kill { panic });
    (sent, format!("worker {w}: {how} requested"))
}

/// An interface's settings that need a restart to change (everything but the WCCP keys).
fn restart_part(i: &conf::InterfaceConf) -> conf::InterfaceConf {
    conf::InterfaceConf {
        wccp_redirect_in: Vec::new(),
        wccp_redirect_out: Vec::new(),
        wccp_exclude_in: false,
        wccp_caches: false,
        ..i.clone()
    }
}

/// Re-reads the config (see [`reload_config`]), telling systemd a reload is under way so
/// `systemctl reload` returns once it is done.
fn reload(state: &mut ControlState) -> ReloadReply {
    state.notify.notify("RELOADING=1");
    let r = reload_config(state);
    state
        .notify
        .notify(&format!("READY=1\nSTATUS={}", r.message.replace('\n', " ")));
    r
}

/// Re-reads the config and installs its routes and WCCP settings; on any error the running
/// config stays.
fn reload_config(state: &mut ControlState) -> ReloadReply {
    let new = match conf::load_file(&state.config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload rejected: the running config stays in force");
            return ReloadReply {
                ok: false,
                message: format!("rejected, running config kept: {e}"),
            };
        }
    };
    let fixed = |c: &RouterConf| c.interfaces.iter().map(restart_part).collect::<Vec<_>>();
    if fixed(&new) != fixed(&state.conf) {
        let msg = "rejected, running config kept: interface changes (names, addresses, MAC, MTU, io-backend) need a restart; routes and WCCP settings are reloaded".to_string();
        tracing::error!("{msg}");
        return ReloadReply {
            ok: false,
            message: msg,
        };
    }
    let old = state.shared.tables.load_full();
    let routes = match RouteTable::build(&old.ifaces, &statics(&new)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reload rejected: the running config stays in force");
            return ReloadReply {
                ok: false,
                message: format!("rejected, running config kept: {e}"),
            };
        }
    };
    // NAT's rules, ports and tables are fixed while sessions live on them; the worker count
    // is a [router] setting (restart) and is not compared here.
    let nat_part = |c: &RouterConf| {
        c.nat.config.clone().map(|mut n| {
            n.workers = 0;
            n
        })
    };
    if nat_part(&new) != nat_part(&state.conf) {
        let msg = "rejected, running config kept: [nat] changes need a restart (sessions live on the running rules); routes, WCCP and steering are reloaded".to_string();
        tracing::error!("{msg}");
        return ReloadReply {
            ok: false,
            message: msg,
        };
    }
    if new.cluster != state.conf.cluster {
        let msg = "rejected, running config kept: [cluster] changes need a restart".to_string();
        tracing::error!("{msg}");
        return ReloadReply {
            ok: false,
            message: msg,
        };
    }
    if new.ha != state.conf.ha {
        let msg = "rejected, running config kept: [ha] changes need a restart (the virtual routers run on the configuration they started with; restart the backup first, then the master, or use `swrouter ha switchover`); routes, WCCP and steering are reloaded".to_string();
        tracing::error!("{msg}");
        return ReloadReply {
            ok: false,
            message: msg,
        };
    }
    if new.wccp.is_empty() != state.conf.wccp.is_empty() {
        let msg = "rejected, running config kept: turning WCCP on or off needs a restart; changes within [wccp] are reloaded".to_string();
        tracing::error!("{msg}");
        return ReloadReply {
            ok: false,
            message: msg,
        };
    }
    // Steering: new tables (and counters) only when the section changed; they replace the
    // old ones in the same snapshot swap as the routes (flash cut-over, issue 7).
    let steering_changed = new.steering != state.conf.steering;
    let steering = if steering_changed {
        match crate::tables::steer::SteeringPlane::build(&new.steering.definitions) {
            Ok(mut p) => {
                let running = state.shared.tables.load();
                // The drain memory's HA sync outlives a plane (the workers' memories do).
                p.drain_sync = running.steering.drain_sync.clone();
                // Frames inside the old chain's devices finish their walk (hitless swap).
                p.retired = crate::tables::steer::RetiredSteering::of(
                    &running.steering,
                    std::time::Instant::now(),
                );
                Arc::new(p)
            }
            Err(e) => {
                tracing::error!(error = %e, "reload rejected: the running config stays in force");
                return ReloadReply {
                    ok: false,
                    message: format!("rejected, running config kept: [steering]: {e}"),
                };
            }
        }
    } else {
        state.shared.tables.load().steering.clone()
    };
    // Bound now, installed with the rest: a port in use rejects the reload and the running
    // listener stays.
    let metrics = match state.metrics.prepare(new.router.metrics_listen) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "reload rejected: the running config stays in force");
            return ReloadReply {
                ok: false,
                message: format!("rejected, running config kept: {e}"),
            };
        }
    };
    if let Some(w) = state.wccp.as_mut() {
        if new.wccp != state.conf.wccp || new.wccp_options != state.conf.wccp_options {
            if let Err(e) = w.reconfigure(&new.wccp, &new.wccp_options) {
                tracing::error!(error = %e, "reload rejected: the running config stays in force");
                return ReloadReply {
                    ok: false,
                    message: format!("rejected, running config kept: {e}"),
                };
            }
        }
    }
    // The WCCP driver may have published a new plane: build on the latest snapshot.
    let old = state.shared.tables.load_full();
    let ifaces = old
        .ifaces
        .iter()
        .map(|i| {
            let mut i = i.clone();
            if let Some(c) = new.interface(&i.name) {
                i.redirect_in = c.wccp_redirect_in.clone();
                i.redirect_out = c.wccp_redirect_out.clone();
                i.exclude_in = c.wccp_exclude_in;
                i.wccp_caches = c.wccp_caches;
            }
            i
        })
        .collect();
    let restart_keys = |r: &conf::RouterSection| conf::RouterSection {
        metrics_listen: None,
        ..r.clone()
    };
    if restart_keys(&new.router) != restart_keys(&state.conf.router) {
        tracing::warn!(
            "[router] changes (workers, socket, log level, id) take effect at the next restart; metrics-listen is reloaded"
        );
    }
    state.metrics.apply(metrics);
    state.conf.router.metrics_listen = new.router.metrics_listen;
    let n = new.routes.len();
    let services = new.steering.definitions.services.len();
    state.shared.tables.store(Arc::new(Tables {
        routes,
        ifaces,
        steering,
        ..(*old).clone()
    }));
    let wccp_services = new.wccp.len();
    state.conf.routes = new.routes;
    state.conf.interfaces = new.interfaces;
    state.conf.wccp = new.wccp;
    state.conf.wccp_options = new.wccp_options;
    state.conf.steering = new.steering;
    if steering_changed {
        let plane = state.shared.tables.load().steering.clone();
        state.health = health::HealthDriver::new(plane, &state.conf, Some(&state.health));
        // Device indices may mean other devices now: answers to the old plane's probes are
        // closed but not reported.
        state
            .prober
            .forget(|o| matches!(o, crate::probe::ProbeOwner::Steering(_)));
    }
    state.reloads += 1;
    if let Some(s) = state.sync.as_mut() {
        s.publish_node(state.reloads);
    }
    tracing::info!(
        static_routes = n,
        wccp_services,
        steering_services = services,
        steering_changed,
        "config reloaded"
    );
    ReloadReply {
        ok: true,
        message: format!(
            "reloaded: {n} static routes, {wccp_services} WCCP services, {services} steering services in force{}",
            if steering_changed {
                " (steering tables replaced)"
            } else {
                ""
            }
        ),
    }
}

/// Sends one request to a running router and returns its one-line JSON answer; a refusal by
/// the router (permission, busy, bad request) is an error carrying its reason.
pub fn request(socket: &Path, req: &str) -> Result<String> {
    use std::io::{BufRead, Write};
    let mut s = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "connecting to {}: {e}; the socket is for root, swrouter's own user and its management-group",
            socket.display()
        ),
        Err(e) => bail!(
            "connecting to {}: {e}; is swrouter running? It listens on the management-socket of its config (default {}); name another with -s PATH or -c FILE",
            socket.display(),
            conf::DEFAULT_MANAGEMENT_SOCKET
        ),
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    s.set_write_timeout(Some(std::time::Duration::from_secs(10)))?;
    // A router that refuses us answers and closes without reading: the write may then fail,
    // but the reason is still there to read.
    let sent = s.write_all(format!("{req}\n").as_bytes());
    let mut line = String::new();
    let read = std::io::BufReader::new(&s).read_line(&mut line);
    if line.is_empty() {
        sent.context("sending the request")?;
        read.context("reading the answer")?;
        bail!("swrouter closed the management connection without an answer");
    }
    if let Ok(e) = serde_json::from_str::<mgmt::ErrorReply>(&line) {
        bail!("swrouter refused the request: {}", e.error);
    }
    Ok(line)
}

#[cfg(test)]
mod restore_tests {
    use super::Restore;

    #[test]
    fn saved_interface_state_round_trips() {
        let r = Restore {
            name: "eth0".into(),
            flags: 0x1043,
            disable_ipv6: Some("0".into()),
            forwarding: None,
            saved: None,
        };
        let back = Restore::parse("eth0", &r.to_text()).unwrap();
        assert_eq!(
            (back.flags, back.disable_ipv6, back.forwarding),
            (0x1043, Some("0".into()), None)
        );
        assert!(Restore::parse("eth0", "flags=x\n").is_none());
        assert!(Restore::parse("eth0", "bogus").is_none());
    }
}
