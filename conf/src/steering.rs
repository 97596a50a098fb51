//! The `[steering]` part of router.conf (issue 7, SPEC.md §5): devices, pools and services,
//! parsed with positions and mapped onto the `steering` crate's model.
//!
//! Kept in its own module (raw structs, validation and emission together) so the rest of the
//! crate only gains one field per struct. Validation checks what needs a position first (names,
//! interfaces, addresses, ports, references, overlapping dynamic ranges), then compiles the
//! definitions with [`steering::compile`] so that everything the data plane would reject is
//! rejected here, at the name of the item the compile error is about.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use steering::{
    AclAction, AclRule, ActiveCheck, Definitions, DeviceDef, DeviceMode, HopDef, HopTarget,
    OnFailure, PassiveCheck, Policy, PoolDef, PortRange, Prefix, Restore, ServiceDef, ServiceKey,
    Subject,
};

use crate::error::{ConfError, Locator};
use crate::raw::Int;
use crate::{InterfaceConf, MacAddr};

type Result<T> = std::result::Result<T, ConfError>;

/// Default time between active probes.
pub const DEFAULT_PROBE_INTERVAL_MS: u64 = 1000;
/// Default time a probe may take.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 500;
/// Default consecutive successes to come back up.
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures to go down.
pub const DEFAULT_FALL: u32 = 3;
/// Default passive window.
pub const DEFAULT_PASSIVE_WINDOW_MS: u64 = 3000;
/// Default window during which a `reset` pool resets a dead member's flows.
pub const DEFAULT_RESET_WINDOW_MS: u64 = 30_000;

/// The validated `[steering]` section. Interfaces are [`steering::IfId`]s: positions in
/// [`crate::RouterConf::interfaces`], which is also the router's interface index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SteeringConf {
    /// Devices, pools and services in file order, ready for [`steering::compile`].
    pub definitions: Definitions,
}

impl SteeringConf {
    /// True when nothing is steered (no `[steering]` section, or an empty one).
    pub fn is_empty(&self) -> bool {
        let d = &self.definitions;
        d.devices.is_empty() && d.pools.is_empty() && d.services.is_empty()
    }
}

/// Keys of `[steering]`.
pub(crate) const STEERING_KEYS: &[&str] = &["device", "pool", "service"];
/// Keys of `[[steering.device]]`.
pub(crate) const DEVICE_KEYS: &[&str] =
    &["name", "mode", "interfaces", "mac", "out-mac", "address"];
/// Keys of `[[steering.pool]]`.
pub(crate) const POOL_KEYS: &[&str] = &[
    "name",
    "members",
    "alternate",
    "policy",
    "on-failure",
    "reset-window-ms",
    "restore",
    "probe-port",
    "probe-interval-ms",
    "probe-timeout-ms",
    "rise",
    "fall",
    "passive-syns",
    "passive-window-ms",
];
/// Keys of `[[steering.service]]`.
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "name",
    "address",
    "protocol",
    "port",
    "subscriber",
    "ingress",
    "chain",
    "translate-port",
    "dynamic-ports",
    "dscp",
    "acl",
    "acl-default",
];
/// Keys of one chain hop.
pub(crate) const HOP_KEYS: &[&str] = &["device", "pool", "copy"];
/// Keys of one ACL rule.
pub(crate) const ACL_KEYS: &[&str] = &["action", "source", "protocol", "source-ports", "ports"];

/// The section and key list of a steering struct whose keys are `expected` (for
/// `raw::explain`'s unknown-key wording).
pub(crate) fn sections() -> [(&'static str, &'static [&'static str]); 6] {
    [
        ("[steering]", STEERING_KEYS),
        ("[[steering.device]]", DEVICE_KEYS),
        ("[[steering.pool]]", POOL_KEYS),
        ("[[steering.service]]", SERVICE_KEYS),
        ("a chain hop", HOP_KEYS),
        ("an ACL rule", ACL_KEYS),
    ]
}

/// `[steering]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [steering] table")]
pub(crate) struct RawSteering {
    #[serde(default)]
    device: Vec<Spanned<RawDevice>>,
    #[serde(default)]
    pool: Vec<Spanned<RawPool>>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

/// `[[steering.device]]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [[steering.device]] table"
)]
struct RawDevice {
    name: Spanned<String>,
    mode: Spanned<String>,
    interfaces: Spanned<Vec<Spanned<String>>>,
    mac: Option<Spanned<String>>,
    out_mac: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
}

/// `[[steering.pool]]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [[steering.pool]] table"
)]
struct RawPool {
    name: Spanned<String>,
    members: Spanned<Vec<Spanned<String>>>,
    alternate: Option<Spanned<String>>,
    policy: Option<Spanned<String>>,
    on_failure: Option<Spanned<String>>,
    reset_window_ms: Option<Spanned<Int>>,
    restore: Option<Spanned<String>>,
    probe_port: Option<Spanned<Int>>,
    probe_interval_ms: Option<Spanned<Int>>,
    probe_timeout_ms: Option<Spanned<Int>>,
    rise: Option<Spanned<Int>>,
    fall: Option<Spanned<Int>>,
    passive_syns: Option<Spanned<Int>>,
    passive_window_ms: Option<Spanned<Int>>,
}

/// `[[steering.service]]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [[steering.service]] table"
)]
struct RawService {
    name: Spanned<String>,
    address: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    port: Option<Spanned<RawPorts>>,
    subscriber: Option<Spanned<String>>,
    ingress: Spanned<Vec<Spanned<String>>>,
    chain: Spanned<Vec<Spanned<RawHop>>>,
    translate_port: Option<Spanned<Int>>,
    dynamic_ports: Option<Spanned<Vec<Spanned<RawPorts>>>>,
    dscp: Option<Spanned<Int>>,
    #[serde(default)]
    acl: Vec<Spanned<RawAcl>>,
    acl_default: Option<Spanned<String>>,
}

/// One hop: `{ device = "fw" }`, `{ pool = "web" }`, `{ device = "ids", copy = true }`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a chain hop such as { device = \"fw\" }"
)]
struct RawHop {
    device: Option<Spanned<String>>,
    pool: Option<Spanned<String>>,
    copy: Option<Spanned<bool>>,
}

/// One ACL rule.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "an ACL rule such as { action = \"deny\", source = \"10.0.0.0/8\" }"
)]
struct RawAcl {
    action: Spanned<String>,
    source: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    source_ports: Option<Spanned<RawPorts>>,
    ports: Option<Spanned<RawPorts>>,
}

/// A port or a port range: `80` or `"1025-1125"` (or `"80"`).
#[derive(Debug, Clone)]
enum RawPorts {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for RawPorts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawPorts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (80) or a port range (\"1025-1125\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<RawPorts, E> {
                Ok(RawPorts::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<RawPorts, E> {
                Ok(RawPorts::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RawPorts, E> {
                Ok(RawPorts::Str(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Where each named item was written, for compile errors.
struct Spans {
    devices: HashMap<String, Range<usize>>,
    pools: HashMap<String, Range<usize>>,
    services: HashMap<String, Range<usize>>,
}

/// Validates `[steering]` against the interfaces (already validated, in file order).
pub(crate) fn validate(
    at: &Locator<'_>,
    raw: Option<&RawSteering>,
    interfaces: &[InterfaceConf],
) -> Result<SteeringConf> {
    let Some(raw) = raw else {
        return Ok(SteeringConf::default());
    };
    let mut spans = Spans {
        devices: HashMap::new(),
        pools: HashMap::new(),
        services: HashMap::new(),
    };
    let mut defs = Definitions::default();
    for d in &raw.device {
        let name = unique_name(at, &d.get_ref().name, "device", &mut spans.devices)?;
        defs.devices
            .push(device(at, d.get_ref(), name, interfaces)?);
    }
    for p in &raw.pool {
        let name = unique_name(at, &p.get_ref().name, "pool", &mut spans.pools)?;
        defs.pools.push(pool(at, p.get_ref(), name, &spans)?);
    }
    let mut keyed: Vec<Keyed> = Vec::new();
    for s in &raw.service {
        let name = unique_name(at, &s.get_ref().name, "service", &mut spans.services)?;
        let def = service(at, s.get_ref(), name, interfaces, &spans)?;
        overlaps(at, s.get_ref(), &def, &keyed)?;
        keyed.push(Keyed {
            name: def.name.clone(),
            key: def.key,
            ranges: def.dynamic_ranges.clone(),
            line: at.line_of(s.get_ref().name.span().start),
        });
        defs.services.push(def);
    }
    if let Err(e) = steering::compile(&defs) {
        let span = match e.subject() {
            Subject::Device(n) => spans.devices.get(n),
            Subject::Pool(n) => spans.pools.get(n),
            Subject::Service(n) => spans.services.get(n),
            Subject::None => None,
        };
        let span = span
            .cloned()
            .or_else(|| raw.service.first().map(|s| s.span()))
            .unwrap_or(0..0);
        return Err(at.err(&span, e.to_string()));
    }
    Ok(SteeringConf { definitions: defs })
}

/// A name: non-empty, no whitespace, unique among its kind.
fn unique_name(
    at: &Locator<'_>,
    raw: &Spanned<String>,
    kind: &str,
    seen: &mut HashMap<String, Range<usize>>,
) -> Result<String> {
    let name = raw.get_ref();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(at.err(
            &raw.span(),
            format!("{kind} name `{name}` must be non-empty and without whitespace"),
        ));
    }
    if let Some(first) = seen.get(name) {
        return Err(at.err(
            &raw.span(),
            format!(
                "{kind} `{name}` is already defined (line {})",
                at.line_of(first.start)
            ),
        ));
    }
    seen.insert(name.clone(), raw.span());
    Ok(name.clone())
}

/// An interface name → its index.
fn iface(at: &Locator<'_>, raw: &Spanned<String>, interfaces: &[InterfaceConf]) -> Result<u16> {
    interfaces
        .iter()
        .position(|i| i.name == *raw.get_ref())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| {
            let known: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
            at.err(
                &raw.span(),
                format!(
                    "unknown interface `{}`; configured interfaces: {}",
                    raw.get_ref(),
                    known.join(", ")
                ),
            )
        })
}

fn mac(at: &Locator<'_>, raw: &Spanned<String>) -> Result<steering::MacAddr> {
    let m: MacAddr = raw
        .get_ref()
        .parse()
        .map_err(|e| at.err(&raw.span(), format!("{e}")))?;
    if !m.is_unicast() {
        return Err(at.err(
            &raw.span(),
            format!("device MAC {m} must be a unicast address"),
        ));
    }
    Ok(m)
}

fn addr(at: &Locator<'_>, raw: &Spanned<String>) -> Result<Ipv4Addr> {
    raw.get_ref().parse().map_err(|_| {
        at.err(
            &raw.span(),
            format!(
                "invalid IPv4 address `{}`; expected dotted quad, e.g. 10.0.2.10",
                raw.get_ref()
            ),
        )
    })
}

fn prefix(at: &Locator<'_>, raw: &Spanned<String>) -> Result<Prefix> {
    let bad = || {
        at.err(
            &raw.span(),
            format!(
                "invalid prefix `{}`; expected address/length, e.g. 10.0.1.0/24",
                raw.get_ref()
            ),
        )
    };
    let s = raw.get_ref();
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let l: u8 = l.parse().map_err(|_| bad())?;
    let p = Prefix::new(a, l).ok_or_else(bad)?;
    if p.addr() != a {
        return Err(at.err(
            &raw.span(),
            format!("prefix `{s}` has host bits set; did you mean {p}?"),
        ));
    }
    Ok(p)
}

/// An integer in `lo..=hi`.
fn int(at: &Locator<'_>, raw: &Spanned<Int>, key: &str, lo: i64, hi: i64) -> Result<i64> {
    let n = raw.get_ref().0;
    if n < lo || n > hi {
        return Err(at.err(
            &raw.span(),
            format!("{key} = {n} is out of range; expected {lo}..={hi}"),
        ));
    }
    Ok(n)
}

fn opt_int(
    at: &Locator<'_>,
    raw: Option<&Spanned<Int>>,
    key: &str,
    lo: i64,
    hi: i64,
    default: i64,
) -> Result<i64> {
    raw.map_or(Ok(default), |r| int(at, r, key, lo, hi))
}

fn ports(at: &Locator<'_>, raw: &Spanned<RawPorts>, key: &str) -> Result<PortRange> {
    let bad = |what: &str| {
        at.err(
            &raw.span(),
            format!("{key}: {what}; expected a port 0..=65535 or a range such as \"1025-1125\""),
        )
    };
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| bad(&format!("`{s}` is not a port")))
    };
    match raw.get_ref() {
        RawPorts::Int(n) => u16::try_from(*n)
            .map(PortRange::single)
            .map_err(|_| bad(&format!("{n} is not a port"))),
        RawPorts::Str(s) => {
            let r = match s.split_once('-') {
                Some((lo, hi)) => PortRange::new(port(lo)?, port(hi)?),
                None => PortRange::single(port(s)?),
            };
            if r.lo > r.hi {
                return Err(bad(&format!("range `{s}` is empty")));
            }
            Ok(r)
        }
    }
}

fn protocol(at: &Locator<'_>, raw: &Spanned<String>) -> Result<u8> {
    match raw.get_ref().as_str() {
        "tcp" => Ok(steering::proto::TCP),
        "udp" => Ok(steering::proto::UDP),
        "icmp" => Ok(steering::proto::ICMP),
        s => s.parse::<u8>().map_err(|_| {
            at.err(
                &raw.span(),
                format!("unknown protocol `{s}`; expected tcp, udp, icmp or a number 0..=255"),
            )
        }),
    }
}

/// A keyword from `choices`.
fn choice<T: Copy>(
    at: &Locator<'_>,
    raw: &Spanned<String>,
    key: &str,
    choices: &[(&str, T)],
) -> Result<T> {
    choices
        .iter()
        .find(|(n, _)| *n == raw.get_ref())
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            at.err(
                &raw.span(),
                format!(
                    "unknown {key} `{}`; expected one of: {}",
                    raw.get_ref(),
                    names.join(", ")
                ),
            )
        })
}

const MODES: &[(&str, DeviceMode)] = &[
    ("transparent", DeviceMode::Transparent),
    ("loopback", DeviceMode::Loopback),
    ("alias", DeviceMode::Alias),
    ("nat", DeviceMode::Nat),
    ("router", DeviceMode::Router),
];

fn device(
    at: &Locator<'_>,
    raw: &RawDevice,
    name: String,
    interfaces: &[InterfaceConf],
) -> Result<DeviceDef> {
    let mode = choice(at, &raw.mode, "device mode", MODES)?;
    let mut ifaces = Vec::new();
    for i in raw.interfaces.get_ref() {
        ifaces.push(iface(at, i, interfaces)?);
    }
    let want = if mode == DeviceMode::Transparent {
        2..=2
    } else {
        1..=8
    };
    if !want.contains(&ifaces.len()) {
        let what = if mode == DeviceMode::Transparent {
            "a transparent device needs two interfaces: the one frames are sent out on, then the one they come back on (the same twice for a one-armed device)"
        } else {
            "a device needs one to eight interfaces, the first is where frames are sent"
        };
        return Err(at.err(&raw.interfaces.span(), format!("device `{name}`: {what}")));
    }
    let mac_v = raw.mac.as_ref().map(|m| mac(at, m)).transpose()?;
    let out_mac = raw.out_mac.as_ref().map(|m| mac(at, m)).transpose()?;
    if let (Some(o), false) = (&raw.out_mac, mode == DeviceMode::Transparent) {
        return Err(at.err(
            &o.span(),
            format!("device `{name}`: `out-mac` applies to transparent devices only"),
        ));
    }
    let address = raw.address.as_ref().map(|a| addr(at, a)).transpose()?;
    let needs_mac = matches!(
        mode,
        DeviceMode::Transparent | DeviceMode::Loopback | DeviceMode::Alias
    );
    if needs_mac && mac_v.is_none() {
        return Err(at.err(
            &raw.name.span(),
            format!(
                "{} device `{name}` is addressed by MAC: add `mac = \"…\"`",
                mode.as_str()
            ),
        ));
    }
    if mode == DeviceMode::Nat && address.is_none() {
        return Err(at.err(
            &raw.name.span(),
            format!("nat device `{name}` needs its real `address`"),
        ));
    }
    Ok(DeviceDef {
        name,
        mode,
        interfaces: ifaces,
        mac: mac_v,
        out_mac,
        addr: address,
    })
}

fn ms(n: i64) -> Duration {
    Duration::from_millis(u64::try_from(n).unwrap_or(0))
}

fn pool(at: &Locator<'_>, raw: &RawPool, name: String, spans: &Spans) -> Result<PoolDef> {
    let known = |r: &Spanned<String>| -> Result<String> {
        if spans.devices.contains_key(r.get_ref()) {
            Ok(r.get_ref().clone())
        } else {
            Err(at.err(
                &r.span(),
                format!("pool `{name}` names unknown device `{}`", r.get_ref()),
            ))
        }
    };
    let mut members = Vec::new();
    for m in raw.members.get_ref() {
        members.push(known(m)?);
    }
    if members.is_empty() {
        return Err(at.err(&raw.members.span(), format!("pool `{name}` has no members")));
    }
    let alternate = raw.alternate.as_ref().map(known).transpose()?;
    let policy = match &raw.policy {
        None => Policy::default(),
        Some(p) => choice(
            at,
            p,
            "policy",
            &[
                ("flow-hash", Policy::FlowHash),
                ("client-hash", Policy::ClientHash),
            ],
        )?,
    };
    let reset = match &raw.on_failure {
        None => false,
        Some(p) => choice(at, p, "on-failure", &[("move", false), ("reset", true)])?,
    };
    let window = opt_int(
        at,
        raw.reset_window_ms.as_ref(),
        "reset-window-ms",
        1,
        86_400_000,
        DEFAULT_RESET_WINDOW_MS as i64,
    )?;
    if let (Some(w), false) = (&raw.reset_window_ms, reset) {
        return Err(at.err(
            &w.span(),
            "`reset-window-ms` needs `on-failure = \"reset\"`".to_string(),
        ));
    }
    let on_failure = if reset {
        OnFailure::Reset { window: ms(window) }
    } else {
        OnFailure::Move
    };
    let restore = match &raw.restore {
        None => Restore::default(),
        Some(p) => choice(
            at,
            p,
            "restore",
            &[("auto", Restore::Auto), ("manual", Restore::Manual)],
        )?,
    };
    let active = match &raw.probe_port {
        None => {
            for (k, v) in [
                ("probe-interval-ms", &raw.probe_interval_ms),
                ("probe-timeout-ms", &raw.probe_timeout_ms),
                ("rise", &raw.rise),
                ("fall", &raw.fall),
            ] {
                if let Some(v) = v {
                    return Err(at.err(
                        &v.span(),
                        format!("`{k}` needs `probe-port` (the TCP port the active check probes)"),
                    ));
                }
            }
            None
        }
        Some(p) => {
            let port = int(at, p, "probe-port", 1, 65535)?;
            let interval = opt_int(
                at,
                raw.probe_interval_ms.as_ref(),
                "probe-interval-ms",
                10,
                3_600_000,
                DEFAULT_PROBE_INTERVAL_MS as i64,
            )?;
            let timeout = opt_int(
                at,
                raw.probe_timeout_ms.as_ref(),
                "probe-timeout-ms",
                1,
                3_600_000,
                DEFAULT_PROBE_TIMEOUT_MS.min(interval as u64) as i64,
            )?;
            if timeout > interval {
                let span = raw.probe_timeout_ms.as_ref().map_or(p.span(), |t| t.span());
                return Err(at.err(
                    &span,
                    format!("probe-timeout-ms = {timeout} must not exceed probe-interval-ms = {interval}"),
                ));
            }
            let rise = opt_int(at, raw.rise.as_ref(), "rise", 1, 100, DEFAULT_RISE.into())?;
            let fall = opt_int(at, raw.fall.as_ref(), "fall", 1, 100, DEFAULT_FALL.into())?;
            Some(ActiveCheck {
                port: port as u16,
                interval: ms(interval),
                timeout: ms(timeout),
                rise: rise as u32,
                fall: fall as u32,
            })
        }
    };
    let passive = match &raw.passive_syns {
        None => {
            if let Some(w) = &raw.passive_window_ms {
                return Err(at.err(
                    &w.span(),
                    "`passive-window-ms` needs `passive-syns`".to_string(),
                ));
            }
            None
        }
        Some(s) => {
            let syns = int(at, s, "passive-syns", 1, 1000)?;
            let window = opt_int(
                at,
                raw.passive_window_ms.as_ref(),
                "passive-window-ms",
                10,
                3_600_000,
                DEFAULT_PASSIVE_WINDOW_MS as i64,
            )?;
            Some(PassiveCheck {
                syn_threshold: syns as u32,
                window: ms(window),
            })
        }
    };
    Ok(PoolDef {
        name,
        members,
        alternate,
        policy,
        on_failure,
        restore,
        active,
        passive,
    })
}

fn service(
    at: &Locator<'_>,
    raw: &RawService,
    name: String,
    interfaces: &[InterfaceConf],
    spans: &Spans,
) -> Result<ServiceDef> {
    let proto = raw.protocol.as_ref().map(|p| protocol(at, p)).transpose()?;
    let key = match (&raw.address, &raw.subscriber) {
        (Some(a), None) => {
            let address = addr(at, a)?;
            let port = raw.port.as_ref().ok_or_else(|| {
                at.err(
                    &raw.name.span(),
                    format!("service `{name}` needs `port` (a port or a range) with its `address`"),
                )
            })?;
            ServiceKey::Address {
                addr: address,
                proto: proto.unwrap_or(steering::proto::TCP),
                ports: ports(at, port, "port")?,
            }
        }
        (None, Some(s)) => {
            if let Some(p) = &raw.port {
                return Err(at.err(
                    &p.span(),
                    format!("service `{name}`: a subscriber service has no `port`"),
                ));
            }
            ServiceKey::Subscriber {
                prefix: prefix(at, s)?,
                proto,
            }
        }
        (Some(_), Some(s)) => {
            return Err(at.err(
                &s.span(),
                format!("service `{name}` has both `address` and `subscriber`; give one"),
            ))
        }
        (None, None) => {
            return Err(at.err(
                &raw.name.span(),
                format!("service `{name}` needs `address` (with `port`) or `subscriber`"),
            ))
        }
    };
    let mut ingress = Vec::new();
    for i in raw.ingress.get_ref() {
        ingress.push(iface(at, i, interfaces)?);
    }
    if ingress.is_empty() {
        return Err(at.err(
            &raw.ingress.span(),
            format!("service `{name}` needs at least one ingress interface"),
        ));
    }
    let mut chain = Vec::new();
    for hop in raw.chain.get_ref() {
        let h = hop.get_ref();
        let copy = h.copy.as_ref().is_some_and(|c| *c.get_ref());
        let target = match (&h.device, &h.pool) {
            (Some(d), None) => {
                if !spans.devices.contains_key(d.get_ref()) {
                    return Err(at.err(
                        &d.span(),
                        format!(
                            "service `{name}`: chain names unknown device `{}`",
                            d.get_ref()
                        ),
                    ));
                }
                HopTarget::Device(d.get_ref().clone())
            }
            (None, Some(p)) => {
                if !spans.pools.contains_key(p.get_ref()) {
                    return Err(at.err(
                        &p.span(),
                        format!(
                            "service `{name}`: chain names unknown pool `{}`",
                            p.get_ref()
                        ),
                    ));
                }
                HopTarget::Pool(p.get_ref().clone())
            }
            _ => {
                return Err(at.err(
                    &hop.span(),
                    format!("service `{name}`: a hop names exactly one of `device` or `pool`"),
                ))
            }
        };
        chain.push(HopDef { target, copy });
    }
    if !chain.iter().any(|h| !h.copy) {
        return Err(at.err(
            &raw.chain.span(),
            format!("service `{name}`: the chain needs at least one hop that is not a copy"),
        ));
    }
    let translate_port = raw
        .translate_port
        .as_ref()
        .map(|p| int(at, p, "translate-port", 1, 65535).map(|n| n as u16))
        .transpose()?;
    let mut dynamic_ranges = Vec::new();
    if let Some(list) = &raw.dynamic_ports {
        if matches!(key, ServiceKey::Subscriber { .. }) {
            return Err(at.err(
                &list.span(),
                format!("service `{name}`: a subscriber service has no dynamic ports"),
            ));
        }
        for r in list.get_ref() {
            dynamic_ranges.push(ports(at, r, "dynamic-ports")?);
        }
    }
    let dscp = raw
        .dscp
        .as_ref()
        .map(|d| int(at, d, "dscp", 0, 63).map(|n| n as u8))
        .transpose()?;
    let actions = &[("permit", AclAction::Permit), ("deny", AclAction::Deny)];
    let mut acl = Vec::new();
    for rule in &raw.acl {
        let r = rule.get_ref();
        acl.push(AclRule {
            action: choice(at, &r.action, "ACL action", actions)?,
            src: r
                .source
                .as_ref()
                .map(|s| prefix(at, s))
                .transpose()?
                .unwrap_or(Prefix::ANY),
            proto: r.protocol.as_ref().map(|p| protocol(at, p)).transpose()?,
            src_ports: r
                .source_ports
                .as_ref()
                .map(|p| ports(at, p, "source-ports"))
                .transpose()?,
            dst_ports: r
                .ports
                .as_ref()
                .map(|p| ports(at, p, "ports"))
                .transpose()?,
        });
    }
    let acl_default = match &raw.acl_default {
        None => AclAction::Permit,
        Some(a) => choice(at, a, "acl-default", actions)?,
    };
    Ok(ServiceDef {
        name,
        key,
        ingress,
        chain,
        translate_port,
        dynamic_ranges,
        dscp,
        acl,
        acl_default,
    })
}

/// What earlier services claim, for the overlap check.
struct Keyed {
    name: String,
    key: ServiceKey,
    ranges: Vec<PortRange>,
    line: usize,
}

/// Dynamic port ranges may not overlap the service's own port, nor the ports or dynamic ranges
/// of another service port of the same address and protocol.
fn overlaps(at: &Locator<'_>, raw: &RawService, def: &ServiceDef, earlier: &[Keyed]) -> Result<()> {
    let ServiceKey::Address { addr, proto, ports } = def.key else {
        return Ok(());
    };
    let spans: Vec<Range<usize>> = raw
        .dynamic_ports
        .as_ref()
        .map(|l| l.get_ref().iter().map(|r| r.span()).collect())
        .unwrap_or_default();
    let port_span = raw.port.as_ref().map_or(raw.name.span(), |p| p.span());
    for (i, r) in def.dynamic_ranges.iter().enumerate() {
        let span = spans.get(i).cloned().unwrap_or(port_span.clone());
        if r.overlaps(&ports) {
            return Err(at.err(
                &span,
                format!(
                    "dynamic port range {r} of service `{}` overlaps its own service port {ports}",
                    def.name
                ),
            ));
        }
        if let Some(o) = def
            .dynamic_ranges
            .get(..i)
            .and_then(|b| b.iter().find(|o| o.overlaps(r)))
        {
            return Err(at.err(
                &span,
                format!(
                    "dynamic port range {r} of service `{}` overlaps its range {o}",
                    def.name
                ),
            ));
        }
    }
    for e in earlier {
        let ServiceKey::Address {
            addr: ea,
            proto: ep,
            ports: eports,
        } = e.key
        else {
            continue;
        };
        // The same key on other ingress interfaces is one service group: compile checks it.
        if ea != addr || ep != proto || eports == ports {
            continue;
        }
        let clash = |mine: &PortRange| {
            if mine.overlaps(&eports) {
                return Some(format!("service port {eports}"));
            }
            e.ranges
                .iter()
                .find(|o| o.overlaps(mine))
                .map(|o| format!("dynamic port range {o}"))
        };
        for (i, r) in def.dynamic_ranges.iter().enumerate() {
            if let Some(what) = clash(r) {
                let span = spans.get(i).cloned().unwrap_or(port_span.clone());
                return Err(at.err(
                    &span,
                    format!(
                        "dynamic port range {r} of service `{}` overlaps {what} of service `{}` (line {}) on {addr}",
                        def.name, e.name, e.line
                    ),
                ));
            }
        }
        if let Some(what) = clash(&ports) {
            return Err(at.err(
                &port_span,
                format!(
                    "service port {ports} of service `{}` overlaps {what} of service `{}` (line {}) on {addr}",
                    def.name, e.name, e.line
                ),
            ));
        }
    }
    Ok(())
}

/// Appends `[steering]` as TOML that [`validate`] accepts again, every default written out.
pub(crate) fn emit(out: &mut String, s: &SteeringConf, interfaces: &[InterfaceConf]) {
    let q = |s: &str| crate::emit::quote(s);
    let ifname = |i: &u16| {
        q(interfaces
            .get(usize::from(*i))
            .map_or("?", |c| c.name.as_str()))
    };
    let list = |v: Vec<String>| v.join(", ");
    let range = |r: &PortRange| {
        if r.is_single() {
            r.lo.to_string()
        } else {
            q(&r.to_string())
        }
    };
    let proto = |p: u8| match p {
        steering::proto::TCP => q("tcp"),
        steering::proto::UDP => q("udp"),
        steering::proto::ICMP => q("icmp"),
        n => q(&n.to_string()),
    };
    let d = &s.definitions;
    for dev in &d.devices {
        out.push_str("\n[[steering.device]]\n");
        let _ = writeln!(out, "name = {}", q(&dev.name));
        let _ = writeln!(out, "mode = {}", q(dev.mode.as_str()));
        let _ = writeln!(
            out,
            "interfaces = [{}]",
            list(dev.interfaces.iter().map(ifname).collect())
        );
        if let Some(m) = dev.mac {
            let _ = writeln!(out, "mac = {}", q(&m.to_string()));
        }
        if let Some(m) = dev.out_mac {
            let _ = writeln!(out, "out-mac = {}", q(&m.to_string()));
        }
        if let Some(a) = dev.addr {
            let _ = writeln!(out, "address = {}", q(&a.to_string()));
        }
    }
    for p in &d.pools {
        out.push_str("\n[[steering.pool]]\n");
        let _ = writeln!(out, "name = {}", q(&p.name));
        let _ = writeln!(
            out,
            "members = [{}]",
            list(p.members.iter().map(|m| q(m)).collect())
        );
        if let Some(a) = &p.alternate {
            let _ = writeln!(out, "alternate = {}", q(a));
        }
        let policy = match p.policy {
            Policy::FlowHash => "flow-hash",
            Policy::ClientHash => "client-hash",
        };
        let _ = writeln!(out, "policy = {}", q(policy));
        match p.on_failure {
            OnFailure::Move => {
                let _ = writeln!(out, "on-failure = \"move\"");
            }
            OnFailure::Reset { window } => {
                let _ = writeln!(out, "on-failure = \"reset\"");
                let _ = writeln!(out, "reset-window-ms = {}", window.as_millis());
            }
        }
        let restore = match p.restore {
            Restore::Auto => "auto",
            Restore::Manual => "manual",
        };
        let _ = writeln!(out, "restore = {}", q(restore));
        if let Some(a) = p.active {
            let _ = writeln!(out, "probe-port = {}", a.port);
            let _ = writeln!(out, "probe-interval-ms = {}", a.interval.as_millis());
            let _ = writeln!(out, "probe-timeout-ms = {}", a.timeout.as_millis());
            let _ = writeln!(out, "rise = {}", a.rise);
            let _ = writeln!(out, "fall = {}", a.fall);
        }
        if let Some(ps) = p.passive {
            let _ = writeln!(out, "passive-syns = {}", ps.syn_threshold);
            let _ = writeln!(out, "passive-window-ms = {}", ps.window.as_millis());
        }
    }
    for sv in &d.services {
        out.push_str("\n[[steering.service]]\n");
        let _ = writeln!(out, "name = {}", q(&sv.name));
        match sv.key {
            ServiceKey::Address {
                addr,
                proto: p,
                ports,
            } => {
                let _ = writeln!(out, "address = {}", q(&addr.to_string()));
                let _ = writeln!(out, "protocol = {}", proto(p));
                let _ = writeln!(out, "port = {}", range(&ports));
            }
            ServiceKey::Subscriber { prefix, proto: p } => {
                let _ = writeln!(out, "subscriber = {}", q(&prefix.to_string()));
                if let Some(p) = p {
                    let _ = writeln!(out, "protocol = {}", proto(p));
                }
            }
        }
        let _ = writeln!(
            out,
            "ingress = [{}]",
            list(sv.ingress.iter().map(ifname).collect())
        );
        let hops: Vec<String> = sv
            .chain
            .iter()
            .map(|h| {
                let (k, n) = match &h.target {
                    HopTarget::Device(n) => ("device", n),
                    HopTarget::Pool(n) => ("pool", n),
                };
                let copy = if h.copy { ", copy = true" } else { "" };
                format!("{{ {k} = {}{copy} }}", q(n))
            })
            .collect();
        let _ = writeln!(out, "chain = [{}]", list(hops));
        if let Some(t) = sv.translate_port {
            let _ = writeln!(out, "translate-port = {t}");
        }
        if !sv.dynamic_ranges.is_empty() {
            let _ = writeln!(
                out,
                "dynamic-ports = [{}]",
                list(sv.dynamic_ranges.iter().map(range).collect())
            );
        }
        if let Some(v) = sv.dscp {
            let _ = writeln!(out, "dscp = {v}");
        }
        let action = |a: AclAction| match a {
            AclAction::Permit => q("permit"),
            AclAction::Deny => q("deny"),
        };
        let _ = writeln!(out, "acl-default = {}", action(sv.acl_default));
        if !sv.acl.is_empty() {
            let rules: Vec<String> = sv
                .acl
                .iter()
                .map(|r| {
                    let mut t = format!(
                        "{{ action = {}, source = {}",
                        action(r.action),
                        q(&r.src.to_string())
                    );
                    if let Some(p) = r.proto {
                        let _ = write!(t, ", protocol = {}", proto(p));
                    }
                    if let Some(p) = r.src_ports {
                        let _ = write!(t, ", source-ports = {}", range(&p));
                    }
                    if let Some(p) = r.dst_ports {
                        let _ = write!(t, ", ports = {}", range(&p));
                    }
                    t.push_str(" }");
                    t
                })
                .collect();
            let _ = writeln!(out, "acl = [{}]", list(rules));
        }
    }
}
