//! `router.conf`: the schema of swrouter's configuration file, its defaults, and the cross-field
//! validation that turns a TOML document into a [`RouterConf`] the router can trust; and
//! `cache.conf`, swcache's file, in [`cache`].
//!
//! # Contract
//!
//! - **One entry point per source.** [`load_file`] reads a path, [`parse_str`] takes text; both
//!   return either a fully validated [`RouterConf`] (every default filled in) or exactly one
//!   [`ConfError`]. Nothing here opens sockets, spawns threads or reads the clock; the only I/O is
//!   the single read in [`load_file`].
//! - **No panic on any input.** Any string, however malformed, yields `Ok` or `Err`; a property
//!   test feeds arbitrary text and random mutations of the shipped examples.
//! - **Every error has a position.** [`ConfError`] carries `file:line:col` (1-based; the column
//!   counts characters). Syntax errors take theirs from `toml::de::Error::span()`; meaning errors
//!   (a bad address, an overlapping prefix, an unreachable next hop) point at the offending value,
//!   through `toml::Spanned` fields in the raw deserialization structs. Unknown keys are errors
//!   that name the section and list the keys it accepts.
//! - **Lossless effective config.** [`RouterConf::to_toml`] prints the effective configuration
//!   (defaults included) as TOML that [`parse_str`] accepts again and turns into an equal value.
//!
//! # Shape of the file
//!
//! ```toml
//! [router]                      # optional; every key has a default
//! workers = 2
//!
//! [[interface]]                 # one table per interface swrouter owns
//! name = "eth0"
//! address = "10.0.1.1/24"
//!
//! [[interface]]
//! name = "eth1"
//! address = "10.0.2.1/24"
//!
//! [[route]]                     # static routes; the next hop must be on a connected network
//! prefix = "0.0.0.0/0"
//! via = "10.0.1.254"
//! ```
//!
//! The keys, defaults and constraints are documented in this crate's README.md.
//!
//! # cache.conf
//!
//! [`cache`] reads swcache's file (`swcache -c cache.conf`) under the same contract. Both files
//! turn their WCCP sections into the `wccp` crate's own types through the same code (method
//! names, service ids, passwords, dynamic-service definitions), so a router and a cache
//! configured with the same lines agree: [`WccpServiceConf::engine_config`] builds the router
//! engine's service, [`cache::CacheConf::engine_config`] the cache engine's configuration.
#![forbid(unsafe_code)]

pub mod cache;
mod cluster;
mod emit;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod ha;
mod nat;
mod raw;
mod steering;
mod types;
mod validate;
mod wccp;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use cluster::{
    ClusterConf, ClusterInterface, DEFAULT_HANDOVER_TIMEOUT, DEFAULT_HEARTBEAT, DEFAULT_HOLD_LIMIT,
    DEFAULT_LEASE_TTL_S, DEFAULT_PEER_TIMEOUT,
};
pub use error::ConfError;
pub use ha::{HaConf, SyncConf, VrrpConf, DEFAULT_GARP_COUNT, PSEUDO_STANDBY_ID_BIT};
pub use ipnetwork::Ipv4Network;
pub use nat::NatConf;
pub use steering::SteeringConf;
pub use types::{
    IoBackend, LogLevel, MacAddr, ParseIoBackendError, ParseLogLevelError, ParseMacError,
};
pub use wccp::{
    acl_permits, GreMssClamp, WccpAclAction, WccpAclRule, WccpFailPolicy, WccpOptions, WccpProbe,
    WccpServiceConf, DEFAULT_AFFINITY_IDLE_SECS, DEFAULT_AFFINITY_MAX_FLOWS,
    DEFAULT_PROBE_INTERVAL_MS, DEFAULT_PROBE_MISSES, DEFAULT_PROBE_PORT,
};

/// Default path of the management socket that `swrouter status`/`reload` talk to.
pub const DEFAULT_MANAGEMENT_SOCKET: &str = "/run/swrouter/swrouter.sock";
/// Default number of pipeline worker threads.
pub const DEFAULT_WORKERS: usize = 1;
/// Largest accepted number of pipeline worker threads.
pub const MAX_WORKERS: usize = 64;
/// Default interface MTU in bytes (the largest IPv4 packet sent on the link).
pub const DEFAULT_MTU: u16 = 1500;
/// Smallest accepted interface MTU (RFC 791: every host must accept 576-byte datagrams).
pub const MIN_MTU: u16 = 576;
/// Largest accepted interface MTU (jumbo frames).
pub const MAX_MTU: u16 = 9000;

/// The whole validated configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterConf {
    /// The `[router]` section, defaults filled in.
    pub router: RouterSection,
    /// The `[[interface]]` tables, in file order.
    #[serde(rename = "interface")]
    pub interfaces: Vec<InterfaceConf>,
    /// The `[[route]]` tables, in file order.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConf>,
    /// The `[[wccp.service]]` tables, in file order; empty means WCCP is off.
    #[serde(skip)]
    pub wccp: Vec<WccpServiceConf>,
    /// The `[wccp]` keys that apply to every service (defaults when absent).
    #[serde(skip)]
    pub wccp_options: WccpOptions,
    /// The `[steering]` section (devices, pools, services); empty means nothing is steered.
    #[serde(skip)]
    pub steering: SteeringConf,
    /// The `[nat]` section (rules, ports, timeouts); empty means nothing is translated.
    #[serde(skip)]
    pub nat: NatConf,
    /// The `[ha]` section (VRRP virtual routers); empty means no high availability.
    #[serde(skip)]
    pub ha: HaConf,
    /// The `[cluster]` section (issue 16), if this router is a cluster node.
    #[serde(skip)]
    pub cluster: Option<ClusterConf>,
}

/// The `[router]` section: identity and process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RouterSection {
    /// Router id (WCCP router identity): one of the interface addresses, by default the highest.
    pub id: Ipv4Addr,
    /// Number of pipeline worker threads, 1..=64.
    pub workers: usize,
    /// Unix socket of the management API (`management-socket`).
    pub management_socket: PathBuf,
    /// Group whose members may use the management socket (`management-group`); `None` keeps
    /// it to root and the router's own user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub management_group: Option<String>,
    /// Log verbosity (`log-level`).
    pub log_level: LogLevel,
    /// Default I/O backend of the interfaces (`io-backend`).
    pub io_backend: IoBackend,
    /// Where `/metrics` is served in the Prometheus text format (`metrics-listen`); `None`
    /// serves no metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddrV4>,
}

/// One `[[interface]]` table: a Linux interface swrouter owns and is the IP stack of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InterfaceConf {
    /// Linux interface name (1..=15 bytes, no '/', ':' or whitespace).
    pub name: String,
    /// Our address on this interface (the host part of the TOML `address`).
    #[serde(skip)]
    pub address: Ipv4Addr,
    /// The connected network as written, address and prefix length, e.g. 10.0.1.1/24.
    #[serde(rename = "address")]
    pub network: Ipv4Network,
    /// MAC address override; `None` keeps the interface's own MAC.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "types::serialize_mac"
    )]
    pub mac: Option<MacAddr>,
    /// Largest IPv4 packet sent on this link, 576..=9000 bytes.
    pub mtu: u16,
    /// I/O backend of this interface (`io-backend`; defaults to the `[router]` one).
    pub io_backend: IoBackend,
    /// WCCP services whose traffic arriving here is redirected (`wccp-redirect-in`).
    pub wccp_redirect_in: Vec<u8>,
    /// WCCP services whose traffic leaving through here is redirected (`wccp-redirect-out`).
    pub wccp_redirect_out: Vec<u8>,
    /// Traffic arriving here is never redirected, in or out (`wccp-exclude-in`).
    pub wccp_exclude_in: bool,
    /// WCCP caches may join through this interface (`wccp-caches`): WCCP datagrams arriving
    /// elsewhere are dropped. Defaults to true for interfaces that redirect nothing.
    pub wccp_caches: bool,
}

/// One `[[route]]` table: a static route to a next hop on a connected network.
///
/// Equality and hashing ignore [`RouteConf::line`]: two routes are the same route wherever they
/// are written, so a reload that only moves lines around changes nothing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RouteConf {
    /// Destination prefix with host bits zero; 0.0.0.0/0 is the default route.
    pub prefix: Ipv4Network,
    /// Next-hop address, inside a connected prefix and not one of ours.
    pub via: Ipv4Addr,
    /// Egress interface name; when given, `via` must be inside that interface's prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// 1-based line of the `[[route]]` table in its file (for messages; 0 if not from a file).
    #[serde(skip)]
    pub line: usize,
}

// `line` is where the route was written, not what it means; see the type's doc.
impl PartialEq for RouteConf {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix && self.via == other.via && self.interface == other.interface
    }
}

impl Eq for RouteConf {}

impl std::hash::Hash for RouteConf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.prefix.ip().hash(state);
        self.prefix.prefix().hash(state);
        self.via.hash(state);
        self.interface.hash(state);
    }
}

impl RouterConf {
    /// The effective configuration (defaults filled in) as TOML that [`parse_str`] accepts again.
    pub fn to_toml(&self) -> String {
        emit::to_toml(self)
    }

    /// The interface called `name`, if configured.
    pub fn interface(&self, name: &str) -> Option<&InterfaceConf> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The interface whose connected prefix contains `addr`, if any (prefixes never overlap).
    pub fn connected_interface(&self, addr: Ipv4Addr) -> Option<&InterfaceConf> {
        self.interfaces.iter().find(|i| i.network.contains(addr))
    }
}

/// Reads, parses and validates the file at `path`.
///
/// An unreadable file gives `file: cannot read: <reason>; <what to do>`; text that is not UTF-8
/// gives the position of the first bad byte.
pub fn load_file(path: &Path) -> Result<RouterConf, ConfError> {
    let (file, text) = read_text(path)?;
    parse_str(&file, &text)
}

/// The file name for messages and the text of the file at `path` (router.conf or cache.conf).
fn read_text(path: &Path) -> Result<(String, String), ConfError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfError {
        file: file.clone(),
        line: 0,
        col: 0,
        msg: format!("cannot read: {e}{}", read_hint(path, &e)),
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok((file, text)),
        Err(e) => {
            // Position the error at the first bad byte, counted in the valid prefix before it.
            let good = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let prefix = String::from_utf8_lossy(bytes.get(..good).unwrap_or_default());
            let (line, col) = error::line_col(&prefix, good);
            Err(ConfError {
                file,
                line,
                col,
                msg: "file is not valid UTF-8 text".to_string(),
            })
        }
    }
}

/// What to do about a config file that could not be read, after `; `.
fn read_hint(path: &Path, e: &std::io::Error) -> &'static str {
    if path.is_dir() {
        return "; give the config file, not its directory";
    }
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            "; check the path (commented examples are in conf/examples/, installed in /usr/share/doc/swrouter/examples/)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; run as a user that may read it (root, or give your user read access)"
        }
        _ => "",
    }
}

/// Parses and validates `text`; `file` is used only to label error positions.
pub fn parse_str(file: &str, text: &str) -> Result<RouterConf, ConfError> {
    let at = error::Locator::new(file, text);
    let raw: raw::RawFile = toml::from_str(text).map_err(|e| at.toml_error(&e))?;
    validate::validate(&at, raw)
}
