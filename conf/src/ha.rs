//! The `[ha]` part of router.conf (issue 15): VRRPv3 virtual routers on the data interfaces,
//! parsed with positions and mapped onto the `vrrp` crate's [`vrrp::Config`].
//!
//! Kept in its own module (raw structs, validation and emission together), like `nat`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use vrrp::ChecksumMode;

use crate::error::{ConfError, Locator};
use crate::raw::Int;
use crate::InterfaceConf;

type Result<T> = std::result::Result<T, ConfError>;

/// Keys of `[ha]`, in documentation order.
pub(crate) const HA_KEYS: &[&str] = &["vrrp", "sync"];
/// Keys of `[ha.sync]`, in documentation order.
pub(crate) const SYNC_KEYS: &[&str] = &[
    "local",
    "peer",
    "key-file",
    "node-id",
    "peer-node-id",
    "local-socket",
];
/// The bit set in a pseudo-standby's endpoint id (its node id with this bit): both processes
/// of a node share `node-id`, so their local channel needs two ids.
pub const PSEUDO_STANDBY_ID_BIT: u32 = 0x8000_0000;
/// Keys of `[[ha.vrrp]]`, in documentation order.
pub(crate) const VRRP_KEYS: &[&str] = &[
    "interface",
    "vrid",
    "priority",
    "virtual-addresses",
    "advert-interval-ms",
    "advert-interval-cs",
    "preempt",
    "preempt-delay-ms",
    "accept-mode",
    "checksum",
    "garp-count",
];
/// Gratuitous ARPs per virtual address on becoming master, by default: a short burst, so one
/// lost frame does not leave a switch pointing at the old master.
pub const DEFAULT_GARP_COUNT: u8 = 3;

/// The section and key list of an HA struct (for `raw::explain`'s unknown-key wording).
pub(crate) fn sections() -> [(&'static str, &'static [&'static str]); 3] {
    [
        ("[ha]", HA_KEYS),
        ("[[ha.vrrp]]", VRRP_KEYS),
        ("[ha.sync]", SYNC_KEYS),
    ]
}

/// The validated `[ha]` section: empty when the file has none (no VRRP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaConf {
    /// The virtual routers, in file order.
    pub vrrp: Vec<VrrpConf>,
    /// The state-sync channel to the peer node (`[ha.sync]`), if configured.
    pub sync: Option<SyncConf>,
}

/// `[ha.sync]`: the state-sync channel to the other node, a kernel UDP socket on a link
/// swrouter does not own (a dedicated back-to-back link, like conntrackd's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConf {
    /// Where this node listens (and sends from).
    pub local: SocketAddrV4,
    /// The peer node's `local`.
    pub peer: SocketAddrV4,
    /// The shared HMAC-SHA256 key's file, as written (relative paths are relative to the
    /// configuration file's directory).
    pub key_file: PathBuf,
    /// This node's id in the channel.
    pub node_id: u32,
    /// The peer's id: the only sender accepted.
    pub peer_node_id: u32,
    /// The Unix stream socket of the local sync to this node's pseudo-standby process, if any
    /// (an absolute path).
    pub local_socket: Option<PathBuf>,
}

impl HaConf {
    /// True when no virtual router is configured.
    pub fn is_empty(&self) -> bool {
        self.vrrp.is_empty()
    }
}

/// One `[[ha.vrrp]]`: a virtual router on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConf {
    /// The interface's name (one of `[[interface]]`).
    pub interface: String,
    /// The state machine's parameters; `primary_addr` is the interface's address.
    pub config: vrrp::Config,
}

/// `[ha]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "an [ha] table"
)]
pub(crate) struct RawHa {
    #[serde(default)]
    vrrp: Vec<Spanned<RawVrrp>>,
    sync: Option<Spanned<RawSync>>,
}

/// `[ha.sync]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "an [ha.sync] table"
)]
struct RawSync {
    local: Spanned<String>,
    peer: Spanned<String>,
    key_file: Spanned<String>,
    node_id: Spanned<Int>,
    peer_node_id: Spanned<Int>,
    local_socket: Option<Spanned<String>>,
}

/// `[[ha.vrrp]]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "an [[ha.vrrp]] table"
)]
struct RawVrrp {
    interface: Spanned<String>,
    vrid: Spanned<Int>,
    priority: Option<Spanned<Int>>,
    virtual_addresses: Spanned<Vec<Spanned<String>>>,
    advert_interval_ms: Option<Spanned<Int>>,
    advert_interval_cs: Option<Spanned<Int>>,
    preempt: Option<bool>,
    preempt_delay_ms: Option<Spanned<Int>>,
    accept_mode: Option<bool>,
    checksum: Option<Spanned<String>>,
    garp_count: Option<Spanned<Int>>,
}

/// Validates `[ha]` against the interfaces (validated, in file order).
pub(crate) fn validate(
    at: &Locator<'_>,
    raw: Option<&RawHa>,
    interfaces: &[InterfaceConf],
) -> Result<HaConf> {
    let Some(raw) = raw else {
        return Ok(HaConf::default());
    };
    if raw.vrrp.is_empty() {
        return Err(at.err(
            &at.header_span("[ha]"),
            "[ha] has no [[ha.vrrp]]: add a virtual router (interface, vrid, virtual-addresses) or remove the section",
        ));
    }
    let mut out: Vec<VrrpConf> = Vec::new();
    // (interface, vrid, span) and (interface, address, vrid, span) seen so far.
    let mut vrids: Vec<(usize, u8, Range<usize>)> = Vec::new();
    let mut vips: Vec<(usize, Ipv4Addr, u8, Range<usize>)> = Vec::new();
    for r in &raw.vrrp {
        let r = r.get_ref();
        let ifx = interfaces
            .iter()
            .position(|i| i.name == *r.interface.get_ref())
            .ok_or_else(|| {
                let known: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
                at.err(
                    &r.interface.span(),
                    format!(
                        "unknown interface `{}`; configured interfaces: {}",
                        r.interface.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
        let iface = &interfaces[ifx];
        let vrid = int(at, &r.vrid, "vrid", 1, 255)? as u8;
        if let Some((_, _, first)) = vrids.iter().find(|(i, v, _)| *i == ifx && *v == vrid) {
            return Err(at.err(
                &r.vrid.span(),
                format!(
                    "vrid {vrid} is already used on interface `{}` (line {}): a VRID names one virtual router per link",
                    iface.name,
                    at.line_of(first.start)
                ),
            ));
        }
        vrids.push((ifx, vrid, r.vrid.span()));
        let priority = match &r.priority {
            None => vrrp::config::DEFAULT_PRIORITY,
            Some(p) if p.get_ref().0 == 255 => {
                return Err(at.err(
                    &p.span(),
                    "priority 255 (address owner) is not supported: a virtual address is never the interface's own address here; use 1..=254",
                ))
            }
            Some(p) => int(at, p, "priority", 1, 254)? as u8,
        };
        let list = r.virtual_addresses.get_ref();
        if list.is_empty() || list.len() > vrrp::wire::MAX_ADDRS {
            return Err(at.err(
                &r.virtual_addresses.span(),
                format!(
                    "{} virtual addresses: a virtual router has 1 to {}",
                    list.len(),
                    vrrp::wire::MAX_ADDRS
                ),
            ));
        }
        let mut virtual_addrs = Vec::new();
        for a in list {
            let addr = vip(at, a, iface)?;
            if let Some((_, _, other, first)) =
                vips.iter().find(|(i, v, _, _)| *i == ifx && *v == addr)
            {
                return Err(at.err(
                    &a.span(),
                    format!(
                        "virtual address {addr} is already one of vrid {other}'s on `{}` (line {})",
                        iface.name,
                        at.line_of(first.start)
                    ),
                ));
            }
            vips.push((ifx, addr, vrid, a.span()));
            virtual_addrs.push(addr);
        }
        let adver_interval = match (&r.advert_interval_ms, &r.advert_interval_cs) {
            (Some(_), Some(cs)) => return Err(at.err(
                &cs.span(),
                "give the advertisement interval once: advert-interval-ms or advert-interval-cs",
            )),
            (Some(ms), None) => {
                let n = int(at, ms, "advert-interval-ms", 10, 40_950)?;
                if n % 10 != 0 {
                    return Err(at.err(
                        &ms.span(),
                        format!(
                            "advert-interval-ms = {n} is not a whole number of centiseconds (VRRPv3 counts in 10 ms steps); use {} or {}",
                            n / 10 * 10,
                            (n / 10 + 1) * 10
                        ),
                    ));
                }
                (n / 10) as u16
            }
            (None, Some(cs)) => int(at, cs, "advert-interval-cs", 1, 4095)? as u16,
            (None, None) => vrrp::config::DEFAULT_ADVER_INTERVAL,
        };
        let preempt_delay = match &r.preempt_delay_ms {
            None => Duration::ZERO,
            Some(d) => Duration::from_millis(int(at, d, "preempt-delay-ms", 0, 3_600_000)? as u64),
        };
        let checksum = match &r.checksum {
            None => ChecksumMode::PseudoHeader,
            Some(s) => match s.get_ref().as_str() {
                "pseudo-header" => ChecksumMode::PseudoHeader,
                "no-pseudo-header" => ChecksumMode::NoPseudoHeader,
                other => {
                    return Err(at.err(
                        &s.span(),
                        format!(
                            "unknown checksum `{other}`; expected one of: pseudo-header, no-pseudo-header"
                        ),
                    ))
                }
            },
        };
        let garp_count = match &r.garp_count {
            None => DEFAULT_GARP_COUNT,
            Some(g) => int(at, g, "garp-count", 1, 255)? as u8,
        };
        let config = vrrp::Config {
            vrid,
            priority,
            primary_addr: iface.address,
            virtual_addrs,
            adver_interval,
            preempt: r.preempt.unwrap_or(true),
            accept_mode: r.accept_mode.unwrap_or(false),
            preempt_delay,
            checksum,
            garp_count,
        };
        if let Err(e) = config.validate() {
            return Err(at.err(&r.vrid.span(), format!("[[ha.vrrp]]: {e}")));
        }
        out.push(VrrpConf {
            interface: iface.name.clone(),
            config,
        });
    }
    let sync = match &raw.sync {
        None => None,
        Some(s) => Some(validate_sync(at, s, interfaces)?),
    };
    Ok(HaConf { vrrp: out, sync })
}

fn validate_sync(
    at: &Locator<'_>,
    raw: &Spanned<RawSync>,
    interfaces: &[InterfaceConf],
) -> Result<SyncConf> {
    let r = raw.get_ref();
    let sock = |s: &Spanned<String>, key: &str| -> Result<SocketAddrV4> {
        let a: SocketAddrV4 = s.get_ref().parse().map_err(|_| {
            at.err(
                &s.span(),
                format!(
                    "{key} = `{}` is not an IPv4 address with a port, e.g. 10.9.0.1:7420",
                    s.get_ref()
                ),
            )
        })?;
        if a.port() == 0
            || a.ip().is_unspecified()
            || a.ip().is_multicast()
            || a.ip().is_broadcast()
        {
            return Err(at.err(
                &s.span(),
                format!("{key} = {a}: give a unicast address and a port other than 0"),
            ));
        }
        Ok(a)
    };
    let local = sock(&r.local, "local")?;
    let peer = sock(&r.peer, "peer")?;
    if local == peer {
        return Err(at.err(
            &r.peer.span(),
            "peer is the same as local: give the other node's sync address",
        ));
    }
    if let Some(i) = interfaces.iter().find(|i| i.address == *local.ip()) {
        return Err(at.err(
            &r.local.span(),
            format!(
                "local {} is interface `{}`'s address, which swrouter owns; the sync channel runs over a link the kernel keeps (a dedicated back-to-back link or a management network)",
                local.ip(),
                i.name
            ),
        ));
    }
    if r.key_file.get_ref().trim().is_empty() {
        return Err(at.err(&r.key_file.span(), "key-file is empty: give the path of the shared key (at least 16 bytes, e.g. from `openssl rand -hex 32`)"));
    }
    let node_id = int(at, &r.node_id, "node-id", 1, u32::MAX as i64)? as u32;
    let peer_node_id = int(at, &r.peer_node_id, "peer-node-id", 1, u32::MAX as i64)? as u32;
    if node_id == peer_node_id {
        return Err(at.err(
            &r.peer_node_id.span(),
            format!("peer-node-id = {peer_node_id} is this node's own node-id: the two nodes need different ids"),
        ));
    }
    let local_socket = match &r.local_socket {
        None => None,
        Some(p) => {
            let path = PathBuf::from(p.get_ref());
            if !path.is_absolute() || p.get_ref().ends_with('/') {
                return Err(at.err(
                    &p.span(),
                    format!(
                        "local-socket = `{}` is not an absolute file path; give one like /run/swrouter/ha.sock",
                        p.get_ref()
                    ),
                ));
            }
            if node_id & PSEUDO_STANDBY_ID_BIT != 0 {
                return Err(at.err(
                    &r.node_id.span(),
                    format!(
                        "node-id = {node_id} is above 2147483647: with local-socket the pseudo-standby's id is node-id with the top bit set, so node-id must leave that bit clear"
                    ),
                ));
            }
            Some(path)
        }
    };
    Ok(SyncConf {
        local,
        peer,
        key_file: PathBuf::from(r.key_file.get_ref()),
        node_id,
        peer_node_id,
        local_socket,
    })
}

/// `s` as an integer in `lo..=hi`, or an error at its position naming `key` and the range.
pub(crate) fn int(at: &Locator<'_>, s: &Spanned<Int>, key: &str, lo: i64, hi: i64) -> Result<i64> {
    let n = s.get_ref().0;
    if n < lo || n > hi {
        return Err(at.err(
            &s.span(),
            format!("{key} = {n} is out of range; expected {lo}..={hi}"),
        ));
    }
    Ok(n)
}

/// A virtual address: a unicast host of `iface`'s connected network other than its own
/// address (hosts reach it by ARP on that link, RFC 5798 §1.2).
fn vip(at: &Locator<'_>, a: &Spanned<String>, iface: &InterfaceConf) -> Result<Ipv4Addr> {
    let addr: Ipv4Addr = a.get_ref().parse().map_err(|_| {
        at.err(
            &a.span(),
            format!(
                "invalid IPv4 address `{}`; expected dotted quad without a prefix length, e.g. 10.0.1.254",
                a.get_ref()
            ),
        )
    })?;
    let net = iface.network;
    if !net.contains(addr) {
        return Err(at.err(
            &a.span(),
            format!(
                "virtual address {addr} is outside interface `{}`'s network {}/{}: hosts on that link could not reach it",
                iface.name,
                net.network(),
                net.prefix()
            ),
        ));
    }
    if addr == iface.address {
        return Err(at.err(
            &a.span(),
            format!(
                "virtual address {addr} is interface `{}`'s own address; pick a free address of {}/{} (address owners, priority 255, are not supported)",
                iface.name,
                net.network(),
                net.prefix()
            ),
        ));
    }
    if net.prefix() < 31 && (addr == net.network() || addr == net.broadcast()) {
        return Err(at.err(
            &a.span(),
            format!(
                "virtual address {addr} is the network or broadcast address of {}/{}",
                net.network(),
                net.prefix()
            ),
        ));
    }
    Ok(addr)
}

/// Appends the effective `[ha]` section (nothing when HA is off).
pub(crate) fn emit(out: &mut String, ha: &HaConf, quote: fn(&str) -> String) {
    // `write!` into a String cannot fail.
    for v in &ha.vrrp {
        let c = &v.config;
        out.push_str("\n[[ha.vrrp]]\n");
        let _ = writeln!(out, "interface = {}", quote(&v.interface));
        let _ = writeln!(out, "vrid = {}", c.vrid);
        let _ = writeln!(out, "priority = {}", c.priority);
        let vips: Vec<String> = c
            .virtual_addrs
            .iter()
            .map(|a| quote(&a.to_string()))
            .collect();
        let _ = writeln!(out, "virtual-addresses = [{}]", vips.join(", "));
        let _ = writeln!(
            out,
            "advert-interval-ms = {}",
            u32::from(c.adver_interval) * 10
        );
        let _ = writeln!(out, "preempt = {}", c.preempt);
        let _ = writeln!(out, "preempt-delay-ms = {}", c.preempt_delay.as_millis());
        let _ = writeln!(out, "accept-mode = {}", c.accept_mode);
        let _ = writeln!(out, "checksum = {}", quote(c.checksum.as_str()));
        let _ = writeln!(out, "garp-count = {}", c.garp_count);
    }
    if let Some(s) = &ha.sync {
        out.push_str("\n[ha.sync]\n");
        let _ = writeln!(out, "local = {}", quote(&s.local.to_string()));
        let _ = writeln!(out, "peer = {}", quote(&s.peer.to_string()));
        let _ = writeln!(
            out,
            "key-file = {}",
            quote(&s.key_file.display().to_string())
        );
        let _ = writeln!(out, "node-id = {}", s.node_id);
        let _ = writeln!(out, "peer-node-id = {}", s.peer_node_id);
        if let Some(p) = &s.local_socket {
            let _ = writeln!(out, "local-socket = {}", quote(&p.display().to_string()));
        }
    }
}
