//! Raw file → [`RouterConf`]: parse each value, fill defaults, check fields against each other.
//!
//! Checks run in a fixed order and stop at the first error: `[router]` scalars, then each
//! interface in file order (its own values, then against the interfaces before it), then each
//! route likewise, then the router id (which needs the interface addresses). Every error points
//! at the value that is wrong; for a clash between two entries, at the later one, naming the
//! line of the earlier.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use toml::Spanned;

use crate::error::Locator;
use crate::raw::{Int, RawFile, RawInterface, RawRoute, RawRouter};
use crate::{
    ConfError, InterfaceConf, IoBackend, Ipv4Network, LogLevel, MacAddr, RouteConf, RouterConf,
    RouterSection, DEFAULT_MANAGEMENT_SOCKET, DEFAULT_MTU, DEFAULT_WORKERS, MAX_MTU, MAX_WORKERS,
    MIN_MTU,
};

/// Longest Unix socket path: `sun_path` is 108 bytes on Linux, one of them the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Longest group name that shadow-utils' `groupadd` creates.
const MAX_GROUP_NAME: usize = 32;
/// Longest Linux interface name: IFNAMSIZ (16) less the terminating NUL.
const MAX_IFNAME: usize = 15;

type Result<T> = std::result::Result<T, ConfError>;

/// Validates the whole file.
pub(crate) fn validate(at: &Locator<'_>, raw: RawFile) -> Result<RouterConf> {
    let router = raw.router.unwrap_or(RawRouter {
        id: None,
        workers: None,
        management_socket: None,
        management_group: None,
        log_level: None,
        io_backend: None,
        metrics_listen: None,
    });
    let workers = workers(at, router.workers.as_ref())?;
    let management_socket = management_socket(at, router.management_socket.as_ref())?;
    let management_group = management_group(at, router.management_group.as_ref())?;
    let log_level = match &router.log_level {
        None => LogLevel::default(),
        Some(s) => s
            .get_ref()
            .parse()
            .map_err(|e| at.err(&s.span(), format!("{e}")))?,
    };
    let io_backend = backend(at, router.io_backend.as_ref(), IoBackend::default())?;
    let metrics_listen = metrics_listen(at, router.metrics_listen.as_ref())?;
    let interfaces = interfaces(at, &raw.interface, io_backend)?;
    let routes = routes(at, &raw.route, &interfaces)?;
    let (wccp, wccp_options) = match &raw.wccp {
        Some(w) => (
            crate::wccp::services(at, &w.service)?,
            crate::wccp::options(at, w)?,
        ),
        None => (Vec::new(), crate::WccpOptions::default()),
    };
    // Every service an interface redirects must be configured.
    for (table, iface) in raw.interface.iter().zip(&interfaces) {
        let t = table.get_ref();
        for (ids, raw_ids, key) in [
            (&iface.conf.wccp_redirect_in, &t.wccp_redirect_in, "in"),
            (&iface.conf.wccp_redirect_out, &t.wccp_redirect_out, "out"),
        ] {
            if let Some(id) = ids.iter().find(|id| !wccp.iter().any(|s| s.id == **id)) {
                let span = raw_ids.as_ref().map(|s| s.span()).unwrap_or(table.span());
                return Err(at.err(
                    &span,
                    format!(
                        "interface `{}` redirects WCCP service {id} {key}, which no [[wccp.service]] defines",
                        iface.conf.name
                    ),
                ));
            }
        }
    }
    if let Some(first) = raw.wccp.as_ref().and_then(|w| w.service.first()) {
        if !interfaces.iter().any(|i| i.conf.wccp_caches) {
            return Err(at.err(
                &first.span(),
                "no interface accepts WCCP caches (an interface that redirects traffic takes none unless marked): set `wccp-caches = true` on the interface the caches are reached through",
            ));
        }
    }
    let interfaces: Vec<InterfaceConf> = interfaces.into_iter().map(|i| i.conf).collect();
    let steering = crate::steering::validate(at, raw.steering.as_ref(), &interfaces)?;
    let nat = crate::nat::validate(at, raw.nat.as_ref(), &interfaces, workers)?;
    let ha = crate::ha::validate(at, raw.ha.as_ref(), &interfaces)?;
    let cluster = crate::cluster::validate(at, raw.cluster.as_ref(), &interfaces, &ha, &nat)?;
    // Interfaces marked `wccp-caches = true` in the file (not by default): the caches' side.
    let marked: Vec<&str> = raw
        .interface
        .iter()
        .zip(&interfaces)
        .filter(|(r, _)| {
            r.get_ref()
                .wccp_caches
                .as_ref()
                .is_some_and(|b| *b.get_ref())
        })
        .map(|(_, i)| i.name.as_str())
        .collect();
    let id = router_id(
        at,
        router.id.as_ref(),
        &interfaces,
        &ha,
        !wccp.is_empty(),
        &marked,
    )?;
    Ok(RouterConf {
        router: RouterSection {
            id,
            workers,
            management_socket,
            management_group,
            log_level,
            io_backend,
            metrics_listen,
        },
        interfaces,
        routes,
        wccp,
        wccp_options,
        steering,
        nat,
        ha,
        cluster,
    })
}

/// `io-backend`: one of the backend names; `default` when absent.
fn backend(
    at: &Locator<'_>,
    raw: Option<&Spanned<String>>,
    default: IoBackend,
) -> Result<IoBackend> {
    match raw {
        None => Ok(default),
        Some(s) => s
            .get_ref()
            .parse()
            .map_err(|e| at.err(&s.span(), format!("{e}"))),
    }
}

/// `workers`: default 1, range 1..=64.
fn workers(at: &Locator<'_>, raw: Option<&Spanned<Int>>) -> Result<usize> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_WORKERS);
    };
    let n = raw.get_ref().0;
    match usize::try_from(n) {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(at.err(
            &raw.span(),
            format!("workers = {n} is out of range; expected 1..={MAX_WORKERS} pipeline threads"),
        )),
    }
}

/// `management-socket`: an absolute path that fits in a Unix socket address.
fn management_socket(at: &Locator<'_>, raw: Option<&Spanned<String>>) -> Result<PathBuf> {
    let Some(raw) = raw else {
        return Ok(PathBuf::from(DEFAULT_MANAGEMENT_SOCKET));
    };
    socket_path(
        raw.get_ref(),
        "management-socket",
        DEFAULT_MANAGEMENT_SOCKET,
        &format!("the default is \"{DEFAULT_MANAGEMENT_SOCKET}\""),
    )
    .map_err(|m| at.err(&raw.span(), m))
}

/// A Unix socket path given as `key`: absolute (a relative one would depend on the daemon's
/// working directory, and a client run elsewhere would not find it), without NUL, and short
/// enough for a socket address. `example` is shown for a relative path, `if_empty` after the
/// message for an empty one.
pub(crate) fn socket_path(
    path: &str,
    key: &str,
    example: &str,
    if_empty: &str,
) -> std::result::Result<PathBuf, String> {
    if path.is_empty() {
        Err(format!("{key} must not be empty; {if_empty}"))
    } else if path.contains('\0') {
        Err(format!("{key} must not contain NUL characters"))
    } else if !path.starts_with('/') {
        Err(format!(
            "{key} `{path}` must be an absolute path, e.g. \"{example}\""
        ))
    } else if path.len() > MAX_SOCKET_PATH {
        Err(format!(
            "{key} path is {} bytes long; a Unix socket path holds at most {MAX_SOCKET_PATH}",
            path.len()
        ))
    } else {
        Ok(PathBuf::from(path))
    }
}

/// `management-group`: a group name as the group database spells them. Whether the group exists
/// is a fact of the host, checked when the router starts, not here.
fn management_group(at: &Locator<'_>, raw: Option<&Spanned<String>>) -> Result<Option<String>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let name = raw.get_ref();
    let msg = if name.is_empty() {
        "management-group must not be empty; leave the key out to allow only root and the router's own user".to_string()
    } else if name.len() > MAX_GROUP_NAME {
        format!(
            "management-group `{name}` is {} bytes long; group names hold at most {MAX_GROUP_NAME}",
            name.len()
        )
    } else if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | ',' | '/'))
    {
        // `:` and `,` separate fields and members in /etc/group; no group name holds them.
        format!("management-group `{}` contains {c:?}; a group name has no whitespace, control characters, `:`, `,` or `/`", name.escape_debug())
    } else if name.starts_with('-') {
        format!("management-group `{name}` must not start with `-`")
    } else {
        return Ok(Some(name.clone()));
    };
    Err(at.err(&raw.span(), msg))
}

/// `metrics-listen`: an IPv4 `address:port` with a non-zero port (a port the kernel picks
/// would be one no scrape config can name). Whether it can be bound is a fact of the host,
/// checked when the router starts.
fn metrics_listen(at: &Locator<'_>, raw: Option<&Spanned<String>>) -> Result<Option<SocketAddrV4>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = raw.get_ref();
    let msg = match text.parse::<SocketAddrV4>() {
        Ok(a) if a.port() == 0 => format!(
            "metrics-listen `{text}` has port 0; name the port Prometheus scrapes, e.g. \"127.0.0.1:9469\""
        ),
        Ok(a) => return Ok(Some(a)),
        Err(_) => format!(
            "metrics-listen `{}` is not an IPv4 address and port, e.g. \"127.0.0.1:9469\" (leave the key out to serve no metrics)",
            text.escape_debug()
        ),
    };
    Err(at.err(&raw.span(), msg))
}

/// A validated interface with the positions later checks report against.
struct Iface {
    /// The public result.
    conf: InterfaceConf,
    /// Line of the `[[interface]]` table.
    line: usize,
}

/// All `[[interface]]` tables: at least one, unique names and addresses, disjoint prefixes.
fn interfaces(
    at: &Locator<'_>,
    raw: &[Spanned<RawInterface>],
    default_backend: IoBackend,
) -> Result<Vec<Iface>> {
    if raw.is_empty() {
        return Err(at.err(
            &(0..0),
            "no interfaces configured; add at least one [[interface]] table with `name` and `address`, e.g. name = \"eth0\", address = \"10.0.1.1/24\"",
        ));
    }
    let mut done: Vec<Iface> = Vec::with_capacity(raw.len());
    for table in raw {
        let iface = interface(at, table, default_backend)?;
        let r = table.get_ref();
        // Pairwise against the earlier ones: a router has a handful of interfaces, and the
        // message can then name both sides of the clash.
        for prev in &done {
            let (p, c) = (&prev.conf, &iface.conf);
            if p.name == c.name {
                return Err(at.err(
                    &r.name.span(),
                    format!(
                        "duplicate interface name `{}`; already defined at line {}",
                        c.name, prev.line
                    ),
                ));
            }
            if p.address == c.address {
                return Err(at.err(
                    &r.address.span(),
                    format!(
                        "address {} is already used by interface `{}` (line {}); each interface needs its own address",
                        c.address, p.name, prev.line
                    ),
                ));
            }
            // Overlapping connected prefixes would make the egress interface for an address
            // ambiguous (and ARP would answer on the wrong link).
            if overlaps(p.network, c.network) {
                return Err(at.err(
                    &r.address.span(),
                    format!(
                        "prefix {} of interface `{}` overlaps {} of interface `{}` (line {}); connected networks must not overlap",
                        net(c.network), c.name, net(p.network), p.name, prev.line
                    ),
                ));
            }
        }
        done.push(iface);
    }
    Ok(done)
}

/// One `[[interface]]` table on its own.
fn interface(
    at: &Locator<'_>,
    table: &Spanned<RawInterface>,
    default_backend: IoBackend,
) -> Result<Iface> {
    let raw = table.get_ref();
    let name = raw.name.get_ref();
    if let Some(msg) = bad_ifname(name) {
        return Err(at.err(&raw.name.span(), msg));
    }
    let network =
        interface_address(raw.address.get_ref()).map_err(|m| at.err(&raw.address.span(), m))?;
    let mac = match &raw.mac {
        None => None,
        Some(s) => Some(interface_mac(s.get_ref()).map_err(|m| at.err(&s.span(), m))?),
    };
    let mtu = match &raw.mtu {
        None => DEFAULT_MTU,
        Some(m) => {
            let n = m.get_ref().0;
            match u16::try_from(n) {
                Ok(n) if (MIN_MTU..=MAX_MTU).contains(&n) => n,
                _ => {
                    return Err(at.err(
                        &m.span(),
                        format!("mtu = {n} is out of range; expected {MIN_MTU}..={MAX_MTU} bytes (default {DEFAULT_MTU})"),
                    ))
                }
            }
        }
    };
    let io_backend = backend(at, raw.io_backend.as_ref(), default_backend)?;
    let wccp_redirect_in = service_ids(at, raw.wccp_redirect_in.as_ref(), "wccp-redirect-in")?;
    let wccp_redirect_out = service_ids(at, raw.wccp_redirect_out.as_ref(), "wccp-redirect-out")?;
    let wccp_exclude_in = raw.wccp_exclude_in.as_ref().is_some_and(|b| *b.get_ref());
    // Caches sit apart from the traffic they serve: an interface that redirects is a client
    // or an uplink side, where a host must not be able to join a group (issue 13 item 9).
    let wccp_caches = raw.wccp_caches.as_ref().map_or(
        wccp_redirect_in.is_empty() && wccp_redirect_out.is_empty(),
        |b| *b.get_ref(),
    );
    Ok(Iface {
        conf: InterfaceConf {
            name: name.clone(),
            address: network.ip(),
            network,
            mac,
            mtu,
            io_backend,
            wccp_redirect_in,
            wccp_redirect_out,
            wccp_exclude_in,
            wccp_caches,
        },
        line: at.line_of(table.span().start),
    })
}

/// A list of WCCP service ids (`wccp-redirect-in`/`-out`), duplicates dropped.
fn service_ids(at: &Locator<'_>, list: Option<&Spanned<Vec<Int>>>, key: &str) -> Result<Vec<u8>> {
    let mut ids = Vec::new();
    for n in list.map(|l| l.get_ref().as_slice()).unwrap_or_default() {
        match u8::try_from(n.0) {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(_) => {
                let span = list.map(|l| l.span()).unwrap_or_default();
                return Err(at.err(
                    &span,
                    format!("{} in `{key}` is not a WCCP service id (0..=255)", n.0),
                ));
            }
        }
    }
    Ok(ids)
}

/// Why `name` cannot be a Linux interface name (the kernel's `dev_valid_name`), if it cannot.
pub(crate) fn bad_ifname(name: &str) -> Option<String> {
    const RULE: &str = "Linux interface names are 1 to 15 bytes without '/', ':', whitespace or control characters";
    if name.is_empty() {
        return Some(format!("interface name must not be empty; {RULE}"));
    }
    if name.len() > MAX_IFNAME {
        return Some(format!(
            "interface name `{name}` is {} bytes long; {RULE}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!(
            "interface name `{name}` is not allowed by Linux; {RULE}"
        ));
    }
    let bad = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())?;
    Some(format!("interface name {name:?} contains {bad:?}; {RULE}"))
}

/// Parses an interface `address` ("10.0.1.1/24") and checks it can be a host address.
fn interface_address(s: &str) -> std::result::Result<Ipv4Network, String> {
    const EXAMPLE: &str = "e.g. \"10.0.1.1/24\"";
    let network = match parse_cidr(s) {
        Ok(n) => n,
        Err(CidrError::NoLength) => {
            return Err(format!(
                "address `{s}` needs a prefix length: write ADDRESS/LENGTH, {EXAMPLE}"
            ))
        }
        Err(CidrError::Invalid) => {
            return Err(format!(
                "invalid address `{s}`: expected an IPv4 address with prefix length, {EXAMPLE}"
            ))
        }
    };
    let ip = network.ip();
    // RFC 1122 §3.2.1.3 / RFC 6890: none of these may be a host's own source address; the
    // network and broadcast addresses of the prefix are not hosts either (except on a /31, per
    // RFC 3021, and a /32, which has a single address).
    let why = if network.prefix() == 0 {
        Some("has prefix length 0, which would make every destination connected".to_string())
    } else if ip.is_broadcast() {
        Some("is the limited broadcast address".to_string())
    } else if ip.octets()[0] == 0 {
        Some("is in 0.0.0.0/8 (\"this network\"), which no host may use".to_string())
    } else if ip.is_loopback() {
        Some("is a loopback address".to_string())
    } else if ip.is_multicast() {
        Some("is a multicast address".to_string())
    } else if ip.octets()[0] >= 240 {
        Some("is in the reserved range 240.0.0.0/4".to_string())
    } else if network.prefix() < 31 && ip == network.network() {
        Some(format!("is the network address of {}", net(network)))
    } else if network.prefix() < 31 && ip == network.broadcast() {
        Some(format!("is the broadcast address of {}", net(network)))
    } else {
        None
    };
    match why {
        None => Ok(network),
        Some(why) => Err(format!(
            "interface address {ip} {why}; use a unicast host address with its prefix length, {EXAMPLE}"
        )),
    }
}

/// Parses a `mac` override and checks it is unicast.
fn interface_mac(s: &str) -> std::result::Result<MacAddr, String> {
    let mac: MacAddr = s.parse().map_err(|e| format!("{e}"))?;
    // We send frames from this address and answer ARP with it: a group address would make every
    // neighbour's reply a multicast, and all zeros is no address at all.
    let why = if mac.is_broadcast() {
        "the broadcast address"
    } else if mac.is_multicast() {
        "a multicast address (lowest bit of the first octet set)"
    } else if mac.is_zero() {
        "all zeros"
    } else {
        return Ok(mac);
    };
    Err(format!(
        "mac {mac} is {why}; an interface MAC must be unicast, e.g. a locally administered 02:00:00:00:00:01"
    ))
}

/// All `[[route]]` tables, checked against each other and the interfaces.
fn routes(at: &Locator<'_>, raw: &[Spanned<RawRoute>], ifaces: &[Iface]) -> Result<Vec<RouteConf>> {
    let mut done: Vec<RouteConf> = Vec::with_capacity(raw.len());
    // Prefix → line of the route that defined it; a map because route lists can be long.
    let mut lines: HashMap<(Ipv4Addr, u8), usize> = HashMap::with_capacity(raw.len());
    for table in raw {
        let r = table.get_ref();
        let line = at.line_of(table.span().start);
        // One next hop per prefix: the forwarding table is a longest-prefix-match map, so a
        // second route for the same prefix would silently replace the first.
        let prefix = route_prefix(r.prefix.get_ref()).map_err(|m| at.err(&r.prefix.span(), m))?;
        if let Some(prev) = lines.insert((prefix.ip(), prefix.prefix()), line) {
            return Err(at.err(
                &r.prefix.span(),
                format!(
                    "duplicate route for {}: already defined by the [[route]] at line {prev}; keep one next hop per prefix",
                    net(prefix)
                ),
            ));
        }
        // A connected network is already routed out of its interface; a static route for the
        // same prefix would compete with it in the forwarding table.
        if let Some(i) = ifaces
            .iter()
            .map(|i| &i.conf)
            .find(|i| net(i.network) == prefix)
        {
            return Err(at.err(
                &r.prefix.span(),
                format!(
                    "route prefix {} is the connected network of interface `{}`; connected networks are routed without a [[route]]",
                    net(prefix), i.name
                ),
            ));
        }
        // The named egress interface, if any, must exist before `via` can be checked against it.
        let egress = match &r.interface {
            None => None,
            Some(name) => Some(find_iface(ifaces, name.get_ref()).ok_or_else(|| {
                at.err(
                    &name.span(),
                    format!(
                        "unknown interface `{}`; the configured interfaces are: {}",
                        name.get_ref(),
                        ifaces
                            .iter()
                            .map(|i| i.conf.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?),
        };
        let via =
            next_hop(r.via.get_ref(), egress, ifaces).map_err(|m| at.err(&r.via.span(), m))?;
        done.push(RouteConf {
            prefix,
            via,
            interface: r.interface.as_ref().map(|n| n.get_ref().clone()),
            line,
        });
    }
    Ok(done)
}

/// The interface called `name`.
fn find_iface<'i>(ifaces: &'i [Iface], name: &str) -> Option<&'i InterfaceConf> {
    ifaces.iter().map(|i| &i.conf).find(|i| i.name == name)
}

/// Parses a route `prefix` ("10.9.0.0/16") and checks its host bits are zero.
fn route_prefix(s: &str) -> std::result::Result<Ipv4Network, String> {
    let prefix = match parse_cidr(s) {
        Ok(p) => p,
        Err(CidrError::NoLength) => {
            return Err(format!(
                "route prefix `{s}` needs a length: write NETWORK/LENGTH, e.g. \"10.9.0.0/16\" (\"{s}/32\" for a host route)"
            ))
        }
        Err(CidrError::Invalid) => {
            return Err(format!(
                "invalid route prefix `{s}`: expected NETWORK/LENGTH, e.g. \"10.9.0.0/16\", or \"0.0.0.0/0\" for the default route"
            ))
        }
    };
    if prefix.ip() != prefix.network() {
        return Err(format!(
            "route prefix {s} has host bits set; did you mean {}?",
            net(prefix)
        ));
    }
    Ok(prefix)
}

/// Parses a route's `via` and checks it is a neighbour on a connected network (on `egress`'s
/// network when the route names one).
fn next_hop(
    s: &str,
    egress: Option<&InterfaceConf>,
    ifaces: &[Iface],
) -> std::result::Result<Ipv4Addr, String> {
    // Static routes are not recursive: the next hop is resolved by ARP on a connected link, so
    // it must be a neighbour there, not us, and not the link's network or broadcast address.
    let via: Ipv4Addr = s.parse().map_err(|_| {
        if s.contains('/') {
            format!("next hop `{s}` is a prefix; `via` takes a plain address, e.g. \"10.0.1.254\"")
        } else {
            format!("invalid next hop `{s}`: expected an IPv4 address, e.g. \"10.0.1.254\"")
        }
    })?;
    if let Some(own) = ifaces.iter().map(|i| &i.conf).find(|i| i.address == via) {
        return Err(format!(
            "next hop {via} is this router's own address on `{}`; `via` must be a neighbour's address",
            own.name
        ));
    }
    let on = ifaces
        .iter()
        .map(|i| &i.conf)
        .find(|i| i.network.contains(via));
    let iface = match (egress, on) {
        (Some(e), Some(o)) if e.name == o.name => o,
        (Some(e), Some(o)) => {
            return Err(format!(
                "next hop {via} is not inside {} of interface `{}` (it is on `{}`); fix `via` or `interface`",
                net(e.network), e.name, o.name
            ))
        }
        (Some(e), None) => {
            return Err(format!(
                "next hop {via} is not inside {} of interface `{}`; `via` must be a neighbour on that network",
                net(e.network), e.name
            ))
        }
        (None, Some(o)) => o,
        (None, None) => {
            let nets: Vec<String> = ifaces
                .iter()
                .map(|i| format!("{} ({})", net(i.conf.network), i.conf.name))
                .collect();
            return Err(format!(
                "next hop {via} is not on a connected network; `via` must be inside one of: {}",
                nets.join(", ")
            ));
        }
    };
    let n = iface.network;
    if n.prefix() < 31 && (via == n.network() || via == n.broadcast()) {
        let which = if via == n.network() {
            "network"
        } else {
            "broadcast"
        };
        return Err(format!(
            "next hop {via} is the {which} address of {} ({}); `via` must be a neighbour's address",
            net(n),
            iface.name
        ));
    }
    Ok(via)
}

/// `id`: explicit and one of ours, or the highest interface address. With WCCP services and
/// VRRP on an interface that takes caches (issue 15), it is that virtual router's first
/// virtual address: caches register with the virtual address, and after a takeover the new
/// master must announce the Router ID they know; an explicit `id` must be one of those
/// virtual addresses.
fn router_id(
    at: &Locator<'_>,
    raw: Option<&Spanned<String>>,
    ifaces: &[InterfaceConf],
    ha: &crate::HaConf,
    wccp: bool,
    marked: &[&str],
) -> Result<Ipv4Addr> {
    let ours = ifaces.iter().map(|i| i.address);
    let vips = ha
        .vrrp
        .iter()
        .flat_map(|v| v.config.virtual_addrs.iter().copied());
    // The virtual routers on the caches' side, when WCCP runs.
    let caches_side: Vec<&crate::VrrpConf> = ha
        .vrrp
        .iter()
        .filter(|v| {
            wccp && ifaces
                .iter()
                .any(|i| i.name == v.interface && i.wccp_caches)
        })
        .collect();
    let Some(raw) = raw else {
        // An interface marked for caches in the file before one that takes them by default.
        let first = caches_side
            .iter()
            .find(|v| marked.contains(&v.interface.as_str()))
            .or(caches_side.first());
        if let Some(v) = first {
            if let Some(vip) = v.config.virtual_addrs.first() {
                return Ok(*vip);
            }
        }
        // Like Cisco IOS's WCCP router id: the highest interface address (reference §3.3).
        // `interfaces` guaranteed at least one entry; UNSPECIFIED is never reached.
        return Ok(ours.max().unwrap_or(Ipv4Addr::UNSPECIFIED));
    };
    let s = raw.get_ref();
    let id: Ipv4Addr = s.parse().map_err(|_| {
        at.err(
            &raw.span(),
            format!("invalid router id `{s}`: expected one of this router's interface addresses, e.g. \"10.0.1.1\""),
        )
    })?;
    if !caches_side.is_empty() {
        if caches_side
            .iter()
            .any(|v| v.config.virtual_addrs.contains(&id))
        {
            return Ok(id);
        }
        let list: Vec<String> = caches_side
            .iter()
            .flat_map(|v| {
                v.config.virtual_addrs.iter().map(move |a| {
                    format!(
                        "{a} ([[ha.vrrp]] vrid {} on {})",
                        v.config.vrid, v.interface
                    )
                })
            })
            .collect();
        return Err(at.err(
            &raw.span(),
            format!(
                "router id {id} is not a virtual address of the VRRP virtual router on the caches' interface: with [[ha.vrrp]] on an interface with `wccp-caches`, caches register with the virtual address and a takeover must keep their Router ID; use one of {}, or omit `id` to use the first",
                list.join(", ")
            ),
        ));
    }
    if ours.clone().chain(vips).any(|a| a == id) {
        return Ok(id);
    }
    let list: Vec<String> = ifaces
        .iter()
        .map(|i| format!("{} ({})", i.address, i.name))
        .collect();
    Err(at.err(
        &raw.span(),
        format!(
            "router id {id} is not an address of this router; use one of {}, or omit `id` to use the highest",
            list.join(", ")
        ),
    ))
}

/// Why a CIDR string did not parse.
pub(crate) enum CidrError {
    /// A valid address without a "/LENGTH" part.
    NoLength,
    /// Anything else: bad address, bad or too long length.
    Invalid,
}

/// A prefix (`10.0.2.0/24`) or an address (a /32) without a position, host bits zero; the
/// error says what is wrong.
pub(crate) fn parse_prefix_or_address(s: &str) -> std::result::Result<Ipv4Network, String> {
    let n = if s.contains('/') {
        parse_cidr(s).map_err(|_| format!("`{s}` is not an IPv4 prefix such as 10.0.2.0/24"))?
    } else {
        let a: Ipv4Addr = s
            .parse()
            .map_err(|_| format!("`{s}` is not an IPv4 address or prefix"))?;
        Ipv4Network::new(a, 32).map_err(|_| "bad prefix".to_string())?
    };
    if n.ip() != n.network() {
        return Err(format!(
            "`{s}` has host bits set; did you mean {}/{}?",
            n.network(),
            n.prefix()
        ));
    }
    Ok(n)
}

/// An element of list `key` that is an IPv4 prefix (`example` shows the form in errors) or an
/// address (a /32), with its host bits zero.
pub(crate) fn prefix_or_address(
    at: &Locator<'_>,
    v: &Spanned<String>,
    key: &str,
    example: &str,
) -> Result<Ipv4Network> {
    let s = v.get_ref();
    let n = if s.contains('/') {
        parse_cidr(s).map_err(|_| {
            at.err(
                &v.span(),
                format!("`{s}` in `{key}` is not an IPv4 prefix such as {example}"),
            )
        })?
    } else {
        let a: Ipv4Addr = s.parse().map_err(|_| {
            at.err(
                &v.span(),
                format!("`{s}` in `{key}` is not an IPv4 address or prefix"),
            )
        })?;
        Ipv4Network::new(a, 32).map_err(|_| at.err(&v.span(), "bad prefix"))?
    };
    if n.ip() != n.network() {
        return Err(at.err(
            &v.span(),
            format!(
                "`{s}` in `{key}` has host bits set; did you mean {}/{}?",
                n.network(),
                n.prefix()
            ),
        ));
    }
    Ok(n)
}

/// Strict "A.B.C.D/LEN": the address as std parses it (four decimal octets, no leading zeros),
/// the length one or two decimal digits up to 32. Stricter than ipnetwork, which also takes
/// netmasks after the '/'.
pub(crate) fn parse_cidr(s: &str) -> std::result::Result<Ipv4Network, CidrError> {
    let Some((addr, len)) = s.split_once('/') else {
        // Only a well-formed address is "missing its length"; anything else is just invalid.
        return Err(match s.parse::<Ipv4Addr>() {
            Ok(_) => CidrError::NoLength,
            Err(_) => CidrError::Invalid,
        });
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::Invalid)?;
    if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CidrError::Invalid);
    }
    let len: u8 = len.parse().map_err(|_| CidrError::Invalid)?;
    Ipv4Network::new(addr, len).map_err(|_| CidrError::Invalid)
}

/// `n` with host bits cleared, for messages ("10.0.1.1/24" → "10.0.1.0/24").
fn net(n: Ipv4Network) -> Ipv4Network {
    // The prefix came from a valid network, so `new` cannot fail; fall back to `n` regardless.
    Ipv4Network::new(n.network(), n.prefix()).unwrap_or(n)
}

/// True when `a` and `b` share at least one address.
fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    // CIDR blocks are either nested or disjoint, so one contains the other's first address.
    a.contains(b.network()) || b.contains(a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_is_strict() {
        assert!(parse_cidr("10.0.1.1/24").is_ok());
        assert!(parse_cidr("0.0.0.0/0").is_ok());
        assert!(matches!(parse_cidr("10.0.1.1"), Err(CidrError::NoLength)));
        for s in [
            "10.0.1/24",
            "10.0.1.1/33",
            "10.0.1.1/",
            "10.0.1.1/+4",
            "10.0.1.1/255.255.255.0",
            "10.0.1.1/024",
            "010.0.1.1/24",
            " 10.0.1.1/24",
        ] {
            assert!(matches!(parse_cidr(s), Err(CidrError::Invalid)), "{s}");
        }
    }

    #[test]
    fn overlap_is_symmetric() {
        let a: Ipv4Network = "10.0.0.0/16".parse().unwrap();
        let b: Ipv4Network = "10.0.1.1/24".parse().unwrap();
        let c: Ipv4Network = "10.1.0.1/24".parse().unwrap();
        assert!(overlaps(a, b) && overlaps(b, a));
        assert!(!overlaps(a, c) && !overlaps(c, a));
    }

    #[test]
    fn interface_names() {
        assert!(bad_ifname("eth0").is_none());
        assert!(bad_ifname("veth-r1.100").is_none());
        assert!(bad_ifname("123456789012345").is_none());
        for n in [
            "",
            "1234567890123456",
            ".",
            "..",
            "a/b",
            "a:1",
            "a b",
            "a\tb",
            "a\u{7}",
        ] {
            assert!(bad_ifname(n).is_some(), "{n:?}");
        }
    }

    #[test]
    fn point_to_point_prefixes_have_no_network_address() {
        // RFC 3021: on a /31 both addresses are hosts; a /32 is a lone host.
        assert!(interface_address("10.0.0.0/31").is_ok());
        assert!(interface_address("10.0.0.1/31").is_ok());
        assert!(interface_address("10.0.0.7/32").is_ok());
        assert!(interface_address("10.0.0.0/30").is_err());
    }
}
