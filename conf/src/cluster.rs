//! The `[cluster]` part of router.conf (issue 16, seed 003): this node's membership in a router
//! cluster whose nodes share the load of the same segments by distribution ids, with
//! membership and the id → node table kept in etcd.
//!
//! Kept in its own module (raw structs, validation and emission together), like `ha`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use netwire::MacAddr;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{ConfError, Locator};
use crate::ha::int;
use crate::raw::Int;
use crate::InterfaceConf;

type Result<T> = std::result::Result<T, ConfError>;

/// Keys of `[cluster]`, in documentation order.
pub(crate) const CLUSTER_KEYS: &[&str] = &[
    "name",
    "node-id",
    "weight",
    "etcd",
    "sync-local",
    "key-file",
    "cluster-mac",
    "heartbeat-ms",
    "peer-timeout-ms",
    "lease-ttl-s",
    "hold-limit",
    "handover-timeout-ms",
    "interface",
];
/// Keys of `[[cluster.interface]]`, in documentation order.
pub(crate) const CLUSTER_IFACE_KEYS: &[&str] = &["name", "addresses"];

/// Sync heartbeat by default: tens of ms, so a dead node is noticed long before its lease ends.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(20);
/// A peer unheard this long is lost, by default (five heartbeats).
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_millis(100);
/// etcd lease of a member's record by default: the fencing backstop (etcd's minimum is 2 s).
pub const DEFAULT_LEASE_TTL_S: u32 = 3;
/// Packets of moving ids a worker holds during a handover, by default.
pub const DEFAULT_HOLD_LIMIT: u32 = 1024;
/// How long an old owner waits for the new owner to take a released id, by default.
pub const DEFAULT_HANDOVER_TIMEOUT: Duration = Duration::from_millis(500);

/// The section and key list of a cluster struct (for `raw::explain`'s unknown-key wording).
pub(crate) fn sections() -> [(&'static str, &'static [&'static str]); 2] {
    [
        ("[cluster]", CLUSTER_KEYS),
        ("[[cluster.interface]]", CLUSTER_IFACE_KEYS),
    ]
}

/// The validated `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConf {
    /// The cluster's name: its etcd keys live under `/swrouter/<name>/`.
    pub name: String,
    /// This node's id, unique in the cluster.
    pub node_id: u32,
    /// This node's share of the ids relative to the others' (0: a member that takes none).
    pub weight: u32,
    /// etcd client URLs (`http://address:port`), tried in order.
    pub etcd: Vec<SocketAddrV4>,
    /// This node's end of the sync channel (kernel UDP, a link swrouter does not own).
    pub sync_local: SocketAddrV4,
    /// The cluster's shared HMAC-SHA256 key's file, as written.
    pub key_file: PathBuf,
    /// The shared MAC every node receives on the cluster interfaces and answers ARP with.
    pub cluster_mac: [u8; 6],
    /// Sync heartbeat interval.
    pub heartbeat: Duration,
    /// A peer unheard this long is lost.
    pub peer_timeout: Duration,
    /// TTL of this node's etcd lease, in seconds.
    pub lease_ttl_s: u32,
    /// Packets of moving ids each worker holds during a handover.
    pub hold_limit: u32,
    /// How long a released id waits for its new owner before the next epoch decides.
    pub handover_timeout: Duration,
    /// The shared segments, with the addresses the cluster answers for there.
    pub interfaces: Vec<ClusterInterface>,
}

/// One `[[cluster.interface]]`: a segment every node is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInterface {
    /// The interface's name (one of `[[interface]]`).
    pub name: String,
    /// Addresses the cluster owns on that link (the hosts' gateway, NAT pool addresses):
    /// answered in ARP with the cluster MAC.
    pub addresses: Vec<Ipv4Addr>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [cluster] table"
)]
pub(crate) struct RawCluster {
    name: Spanned<String>,
    node_id: Spanned<Int>,
    weight: Option<Spanned<Int>>,
    etcd: Spanned<Vec<Spanned<String>>>,
    sync_local: Spanned<String>,
    key_file: Spanned<String>,
    cluster_mac: Option<Spanned<String>>,
    heartbeat_ms: Option<Spanned<Int>>,
    peer_timeout_ms: Option<Spanned<Int>>,
    lease_ttl_s: Option<Spanned<Int>>,
    hold_limit: Option<Spanned<Int>>,
    handover_timeout_ms: Option<Spanned<Int>>,
    #[serde(default)]
    interface: Vec<Spanned<RawClusterInterface>>,
}

/// `[[cluster.interface]]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [[cluster.interface]] table"
)]
struct RawClusterInterface {
    name: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
}

/// Validates `[cluster]` against the interfaces, `[ha]` (the two exclude each other) and the
/// NAT (its port blocks must hold every id).
pub(crate) fn validate(
    at: &Locator<'_>,
    raw: Option<&Spanned<RawCluster>>,
    interfaces: &[InterfaceConf],
    ha: &crate::HaConf,
    nat: &crate::NatConf,
) -> Result<Option<ClusterConf>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let r = raw.get_ref();
    if !ha.is_empty() || ha.sync.is_some() {
        return Err(at.err(
            &r.name.span(),
            "[cluster] and [ha] exclude each other: a cluster node's ids move to the other nodes when it fails, so it needs no VRRP pair; remove one of the two sections",
        ));
    }
    let name = r.name.get_ref();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(at.err(
            &r.name.span(),
            format!("name = `{name}`: give 1 to 64 letters, digits, `-` or `_` (it names the cluster's etcd keys)"),
        ));
    }
    let node_id = int(at, &r.node_id, "node-id", 1, i64::from(u32::MAX >> 1))? as u32;
    let weight = match &r.weight {
        None => 1,
        Some(w) => int(at, w, "weight", 0, 1000)? as u32,
    };
    let list = r.etcd.get_ref();
    if list.is_empty() {
        return Err(at.err(
            &r.etcd.span(),
            "etcd = []: give the cluster's etcd client URLs, e.g. [\"http://10.8.0.100:2379\"]",
        ));
    }
    let mut etcd = Vec::new();
    for u in list {
        let s = u.get_ref();
        let Some(rest) = s.strip_prefix("http://") else {
            return Err(at.err(
                &u.span(),
                format!("etcd URL `{s}`: only http://address:port is supported (no TLS: reach etcd over a management network)"),
            ));
        };
        let a: SocketAddrV4 = rest.trim_end_matches('/').parse().map_err(|_| {
            at.err(
                &u.span(),
                format!("etcd URL `{s}`: expected http://IPv4-address:port, e.g. http://10.8.0.100:2379"),
            )
        })?;
        etcd.push(a);
    }
    let sync_local: SocketAddrV4 = r.sync_local.get_ref().parse().map_err(|_| {
        at.err(
            &r.sync_local.span(),
            format!(
                "sync-local = `{}` is not an IPv4 address with a port, e.g. 10.8.0.1:7788",
                r.sync_local.get_ref()
            ),
        )
    })?;
    if sync_local.port() == 0 || !is_unicast(*sync_local.ip()) {
        return Err(at.err(
            &r.sync_local.span(),
            format!("sync-local = {sync_local}: give a unicast address and a port other than 0"),
        ));
    }
    if let Some(i) = interfaces.iter().find(|i| i.address == *sync_local.ip()) {
        return Err(at.err(
            &r.sync_local.span(),
            format!(
                "sync-local {} is interface `{}`'s address, which swrouter owns; the sync channel runs over a link the kernel keeps (a management network)",
                sync_local.ip(),
                i.name
            ),
        ));
    }
    if r.key_file.get_ref().trim().is_empty() {
        return Err(at.err(&r.key_file.span(), "key-file is empty: give the path of the cluster's shared key (at least 16 bytes, e.g. from `openssl rand -hex 32`)"));
    }
    let cluster_mac = match &r.cluster_mac {
        None => default_mac(name),
        Some(m) => {
            let mac = m.get_ref().parse::<MacAddr>().map(|m| m.0).map_err(|_| {
                at.err(
                    &m.span(),
                    format!(
                        "cluster-mac = `{}` is not a MAC address like 03:00:5e:c1:00:01",
                        m.get_ref()
                    ),
                )
            })?;
            if mac[0] & 1 == 0 {
                return Err(at.err(
                    &m.span(),
                    "cluster-mac must be a multicast MAC (lowest bit of the first octet set, e.g. 03:00:5e:c1:00:01): switches flood it to every node, and a unicast one would be learnt on one port",
                ));
            }
            mac
        }
    };
    let ms =
        |v: &Option<Spanned<Int>>, key: &str, lo: i64, hi: i64, d: Duration| -> Result<Duration> {
            Ok(match v {
                None => d,
                Some(v) => Duration::from_millis(int(at, v, key, lo, hi)? as u64),
            })
        };
    let heartbeat = ms(
        &r.heartbeat_ms,
        "heartbeat-ms",
        5,
        10_000,
        DEFAULT_HEARTBEAT,
    )?;
    let peer_timeout = ms(
        &r.peer_timeout_ms,
        "peer-timeout-ms",
        15,
        60_000,
        DEFAULT_PEER_TIMEOUT,
    )?;
    if peer_timeout < heartbeat * 3 {
        let span = r
            .peer_timeout_ms
            .as_ref()
            .map_or(r.name.span(), |v| v.span());
        return Err(at.err(
            &span,
            format!(
                "peer-timeout-ms = {} is under three heartbeats ({} ms): one late datagram would declare a live node dead",
                peer_timeout.as_millis(),
                (heartbeat * 3).as_millis()
            ),
        ));
    }
    let lease_ttl_s = match &r.lease_ttl_s {
        None => DEFAULT_LEASE_TTL_S,
        Some(v) => int(at, v, "lease-ttl-s", 2, 3600)? as u32,
    };
    let hold_limit = match &r.hold_limit {
        None => DEFAULT_HOLD_LIMIT,
        Some(v) => int(at, v, "hold-limit", 0, 1 << 20)? as u32,
    };
    let handover_timeout = ms(
        &r.handover_timeout_ms,
        "handover-timeout-ms",
        10,
        60_000,
        DEFAULT_HANDOVER_TIMEOUT,
    )?;
    if r.interface.is_empty() {
        return Err(at.err(
            &r.name.span(),
            "[cluster] has no [[cluster.interface]]: name the shared segments (name, addresses the cluster answers for there)",
        ));
    }
    let mut out_ifaces: Vec<ClusterInterface> = Vec::new();
    for ri in &r.interface {
        let ri = ri.get_ref();
        let iface = interfaces
            .iter()
            .find(|i| i.name == *ri.name.get_ref())
            .ok_or_else(|| {
                let known: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
                at.err(
                    &ri.name.span(),
                    format!(
                        "unknown interface `{}`; configured interfaces: {}",
                        ri.name.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
        if out_ifaces.iter().any(|o| o.name == iface.name) {
            return Err(at.err(
                &ri.name.span(),
                format!(
                    "interface `{}` is listed twice in [[cluster.interface]]",
                    iface.name
                ),
            ));
        }
        let mut addresses = Vec::new();
        for a in ri.addresses.get_ref() {
            let addr: Ipv4Addr = a.get_ref().parse().map_err(|_| {
                at.err(
                    &a.span(),
                    format!(
                        "invalid IPv4 address `{}`; expected e.g. 10.0.1.254",
                        a.get_ref()
                    ),
                )
            })?;
            if !is_unicast(addr) || interfaces.iter().any(|i| i.address == addr) {
                return Err(at.err(
                    &a.span(),
                    format!("cluster address {addr} must be a unicast address no interface has (every node answers for it, so it cannot be one node's own)"),
                ));
            }
            if out_ifaces
                .iter()
                .flat_map(|o| &o.addresses)
                .chain(&addresses)
                .any(|x| *x == addr)
            {
                return Err(at.err(&a.span(), format!("cluster address {addr} is listed twice")));
            }
            addresses.push(addr);
        }
        out_ifaces.push(ClusterInterface {
            name: iface.name.clone(),
            addresses,
        });
    }
    if let Some(c) = &nat.config {
        let g = nat::vid::Geometry::new(c.port_min, c.port_max, c.workers);
        if let Err(e) = nat::cluster::check_geometry(&g, c.workers) {
            return Err(at.err(&at.header_span("[nat]"), e));
        }
    }
    Ok(Some(ClusterConf {
        name: name.clone(),
        node_id,
        weight,
        etcd,
        sync_local,
        key_file: PathBuf::from(r.key_file.get_ref()),
        cluster_mac,
        heartbeat,
        peer_timeout,
        lease_ttl_s,
        hold_limit,
        handover_timeout,
        interfaces: out_ifaces,
    }))
}

fn is_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_multicast() || a.is_broadcast())
}

/// The default cluster MAC: locally administered multicast (so IGMP-snooping switches leave it
/// alone and flood it), the last two octets from the cluster's name.
fn default_mac(name: &str) -> [u8; 6] {
    // FNV-1a: a fixed, documented function, the same on every node.
    let h = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    [0x03, 0x00, 0x5e, 0xc1, (h >> 8) as u8, h as u8]
}

/// Appends the effective `[cluster]` section (nothing without one).
pub(crate) fn emit(out: &mut String, c: Option<&ClusterConf>, quote: fn(&str) -> String) {
    let Some(c) = c else { return };
    // `write!` into a String cannot fail.
    out.push_str("\n[cluster]\n");
    let _ = writeln!(out, "name = {}", quote(&c.name));
    let _ = writeln!(out, "node-id = {}", c.node_id);
    let _ = writeln!(out, "weight = {}", c.weight);
    let urls: Vec<String> = c
        .etcd
        .iter()
        .map(|a| quote(&format!("http://{a}")))
        .collect();
    let _ = writeln!(out, "etcd = [{}]", urls.join(", "));
    let _ = writeln!(out, "sync-local = {}", quote(&c.sync_local.to_string()));
    let _ = writeln!(
        out,
        "key-file = {}",
        quote(&c.key_file.display().to_string())
    );
    let _ = writeln!(
        out,
        "cluster-mac = {}",
        quote(&MacAddr(c.cluster_mac).to_string())
    );
    let _ = writeln!(out, "heartbeat-ms = {}", c.heartbeat.as_millis());
    let _ = writeln!(out, "peer-timeout-ms = {}", c.peer_timeout.as_millis());
    let _ = writeln!(out, "lease-ttl-s = {}", c.lease_ttl_s);
    let _ = writeln!(out, "hold-limit = {}", c.hold_limit);
    let _ = writeln!(
        out,
        "handover-timeout-ms = {}",
        c.handover_timeout.as_millis()
    );
    for i in &c.interfaces {
        out.push_str("\n[[cluster.interface]]\n");
        let _ = writeln!(out, "name = {}", quote(&i.name));
        let a: Vec<String> = i.addresses.iter().map(|a| quote(&a.to_string())).collect();
        let _ = writeln!(out, "addresses = [{}]", a.join(", "));
    }
}
