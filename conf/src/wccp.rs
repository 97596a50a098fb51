//! The WCCP part of router.conf: `[wccp]` (fast failover, flow affinity), `[[wccp.service]]`
//! (methods, password, group list, pinned service definition, redirect list, probe) and
//! their effective-config emitter. Interface keys (`wccp-redirect-in/out`, `wccp-exclude-in`)
//! are parsed with the interface; their cross-checks against the services are here.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Serialize;
use toml::Spanned;

use wccp::engine::{AssignmentMethod, ForwardingMethod, ReturnMethod};
use wccp::router::RouterServiceConfig;
use wccp::wire::{AssignmentMethods, ForwardingMethods, ReturnMethods, ServiceFlags, ServiceInfo};

use crate::error::Locator;
use crate::raw::{Int, RawWccp, RawWccpAclRule, RawWccpService};
use crate::{ConfError, Ipv4Network};

type Result<T> = std::result::Result<T, ConfError>;

/// Permit or deny in a redirect list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WccpAclAction {
    /// Redirect matching packets.
    Permit,
    /// Forward matching packets normally.
    Deny,
}

/// One rule of a service's redirect list; an absent field matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WccpAclRule {
    /// Permit (redirect) or deny (forward normally).
    pub action: WccpAclAction,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// Source prefix.
    pub source: Option<Ipv4Network>,
    /// Destination prefix.
    pub destination: Option<Ipv4Network>,
    /// Source port range, inclusive.
    pub source_port: Option<(u16, u16)>,
    /// Destination port range, inclusive.
    pub destination_port: Option<(u16, u16)>,
}

impl WccpAclRule {
    /// True when the packet matches every field the rule names.
    pub fn matches(
        &self,
        protocol: u8,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
    ) -> bool {
        let port_in =
            |r: Option<(u16, u16)>, p: u16| r.map_or(true, |(lo, hi)| (lo..=hi).contains(&p));
        self.protocol.map_or(true, |p| p == protocol)
            && self.source.map_or(true, |n| n.contains(src))
            && self.destination.map_or(true, |n| n.contains(dst))
            && port_in(self.source_port, sport)
            && port_in(self.destination_port, dport)
    }
}

/// First match wins; an empty list permits everything; a list that matches nothing denies
/// (like an IOS access list's implicit deny).
pub fn acl_permits(
    rules: &[WccpAclRule],
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> bool {
    if rules.is_empty() {
        return true;
    }
    rules
        .iter()
        .find(|r| r.matches(protocol, src, dst, sport, dport))
        .is_some_and(|r| r.action == WccpAclAction::Permit)
}

/// Default TCP port of the direct fast-failover probe (`probe = "direct"` without `probe-port`).
pub const DEFAULT_PROBE_PORT: u16 = 80;

/// How fast failover probes the caches of one service (`probe`, `probe-port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WccpProbe {
    /// A SYN sent the way redirected traffic goes (GRE with the redirect header, or L2 to the
    /// cache's MAC) to the service's port of an origin address the router chose: proves the
    /// tunnel, the interception and the proxy together. The default.
    Redirect,
    /// A SYN straight to this port of the cache's own address: proves only that something
    /// listens there (what `probe-port` alone meant before `probe` existed).
    Direct {
        /// The cache's TCP port.
        port: u16,
    },
    /// No probe: the service's caches are never failed over fast.
    Off,
}

impl WccpProbe {
    /// The `probe` value that selects this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            WccpProbe::Redirect => "redirect",
            WccpProbe::Direct { .. } => "direct",
            WccpProbe::Off => "off",
        }
    }
}
/// Default interval between fast-failover probes of one cache, in milliseconds.
pub const DEFAULT_PROBE_INTERVAL_MS: u32 = 250;
/// Default number of consecutive unanswered probes that fail a cache.
pub const DEFAULT_PROBE_MISSES: u32 = 3;
/// Default flow-affinity table size (flows, over all workers).
pub const DEFAULT_AFFINITY_MAX_FLOWS: u32 = 65536;
/// Default idle time after which an affinity entry is forgotten, in seconds.
pub const DEFAULT_AFFINITY_IDLE_SECS: u32 = 120;

/// What the router does with a service's packet when no cache holds its bucket (or mask value):
/// the bucket is unassigned, the group has no cache at all, or fast failover took the assigned
/// cache out (`fail-policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WccpFailPolicy {
    /// Forward it normally, as if there were no WCCP (IOS's default `mode open`).
    #[default]
    Open,
    /// Drop it silently (IOS `mode closed`): the service must never bypass its caches.
    ClosedDrop,
    /// Drop it and tell the client at once: a TCP RST from the destination's address, ICMP
    /// destination unreachable (administratively prohibited) for other protocols.
    ClosedReject,
}

impl WccpFailPolicy {
    /// Every policy, in documentation order.
    pub const ALL: [WccpFailPolicy; 3] = [
        WccpFailPolicy::Open,
        WccpFailPolicy::ClosedDrop,
        WccpFailPolicy::ClosedReject,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            WccpFailPolicy::Open => "open",
            WccpFailPolicy::ClosedDrop => "closed-drop",
            WccpFailPolicy::ClosedReject => "closed-reject",
        }
    }
}

/// Smallest MSS `gre-mss-clamp` accepts: RFC 879's default, which every host must take.
pub const MIN_GRE_MSS_CLAMP: u16 = 536;
/// Largest MSS `gre-mss-clamp` accepts (a 9000-byte jumbo path minus GRE and headers).
pub const MAX_GRE_MSS_CLAMP: u16 = 8932;

/// How TCP SYNs of GRE-redirected flows have their MSS option clamped (`gre-mss-clamp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum GreMssClamp {
    /// The egress MTU toward the cache − 20 (IP) − 20 (TCP) − 28 (outer IP, GRE, redirect
    /// header).
    #[default]
    Auto,
    /// This MSS at most.
    Fixed(u16),
    /// No clamping.
    Off,
}

impl GreMssClamp {
    /// The MSS to clamp to when the egress MTU toward the cache is `mtu`; `None` when off.
    pub fn for_mtu(self, mtu: u16) -> Option<u16> {
        match self {
            GreMssClamp::Auto => Some(mtu.saturating_sub(40 + 28).max(MIN_GRE_MSS_CLAMP)),
            GreMssClamp::Fixed(n) => Some(n),
            GreMssClamp::Off => None,
        }
    }
}

impl std::fmt::Display for GreMssClamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GreMssClamp::Auto => f.write_str("auto"),
            GreMssClamp::Fixed(n) => write!(f, "{n}"),
            GreMssClamp::Off => f.write_str("off"),
        }
    }
}

impl Serialize for GreMssClamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            GreMssClamp::Fixed(n) => s.serialize_u16(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

/// The `[wccp]` keys that apply to every service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WccpOptions {
    /// Probe caches and forward a failed cache's traffic normally (`fast-failover`).
    pub fast_failover: bool,
    /// Milliseconds between probes of one cache (`probe-interval-ms`).
    pub probe_interval_ms: u32,
    /// Consecutive misses that fail a cache (`probe-misses`).
    pub probe_misses: u32,
    /// Keep established TCP flows on their cache across reassignments (`flow-affinity`).
    pub flow_affinity: bool,
    /// Size of the flow-affinity table (`flow-affinity-max-flows`).
    pub affinity_max_flows: u32,
    /// Seconds of silence after which a flow's entry is forgotten (`flow-affinity-idle-secs`).
    pub affinity_idle_secs: u32,
}

impl Default for WccpOptions {
    fn default() -> Self {
        WccpOptions {
            fast_failover: true,
            probe_interval_ms: DEFAULT_PROBE_INTERVAL_MS,
            probe_misses: DEFAULT_PROBE_MISSES,
            flow_affinity: true,
            affinity_max_flows: DEFAULT_AFFINITY_MAX_FLOWS,
            affinity_idle_secs: DEFAULT_AFFINITY_IDLE_SECS,
        }
    }
}

/// One `[[wccp.service]]`: a service group the router serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WccpServiceConf {
    /// 0 (the standard web-cache service) or a dynamic service 1..=255.
    pub id: u8,
    /// MD5 password (1..=8 bytes), or none.
    pub password: Option<String>,
    /// The service group's multicast address (caches send to it; the router joins it on
    /// every interface with `wccp-caches`), or none.
    pub multicast_group: Option<Ipv4Addr>,
    /// Forwarding methods the router accepts.
    pub forwarding: Vec<ForwardingMethod>,
    /// Packet return methods the router accepts.
    pub packet_return: Vec<ReturnMethod>,
    /// Assignment methods the router accepts.
    pub assignment: Vec<AssignmentMethod>,
    /// Cache addresses or prefixes allowed to join (the group list); `None` admits any cache.
    pub caches: Option<Vec<Ipv4Network>>,
    /// Pinned definition of a dynamic service (protocol, priority, hash flags, ports), as the
    /// caches must announce it; `None` learns it from the first cache.
    pub definition: Option<ServiceInfo>,
    /// Redirect list: which packets of the service are redirected.
    pub redirect_list: Vec<WccpAclRule>,
    /// How fast failover probes this service's caches.
    pub probe: WccpProbe,
    /// What happens to packets no cache can take (`fail-policy`).
    pub fail_policy: WccpFailPolicy,
    /// MSS clamping of GRE-redirected TCP SYNs (`gre-mss-clamp`).
    pub gre_mss_clamp: GreMssClamp,
    /// Whether caches may negotiate non-default TRANSMIT_T and timer scales (`fast-timers`).
    pub fast_timers: bool,
}

impl WccpServiceConf {
    /// True for the standard web-cache service (id 0).
    pub fn is_standard(&self) -> bool {
        self.id == 0
    }

    /// True when packets with these fields pass the redirect list.
    pub fn permits(
        &self,
        protocol: u8,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
    ) -> bool {
        acl_permits(&self.redirect_list, protocol, src, dst, sport, dport)
    }

    /// The router engine's configuration of this group: password, the accepted methods as
    /// capability bits, group list and pinned definition. Redirect list and probe mode are the
    /// data plane's and the prober's, not the protocol's.
    pub fn engine_config(&self) -> RouterServiceConfig {
        let mut c = if self.is_standard() {
            RouterServiceConfig::standard(self.id)
        } else {
            RouterServiceConfig::dynamic(self.id)
        };
        if let Some(p) = &self.password {
            c = c.with_password(p.as_bytes());
        }
        c.multicast_group = self.multicast_group;
        c.forwarding = self
            .forwarding
            .iter()
            .fold(ForwardingMethods::empty(), |a, m| a | m.bits());
        c.packet_return = self
            .packet_return
            .iter()
            .fold(ReturnMethods::empty(), |a, m| a | m.bits());
        c.assignment = self
            .assignment
            .iter()
            .fold(AssignmentMethods::empty(), |a, m| a | m.bits());
        c.group_list = self.caches.as_ref().map(|list| {
            list.iter()
                .filter_map(|n| wccp::router::CachePrefix::new(n.network(), n.prefix()))
                .collect()
        });
        if !self.is_standard() {
            c.definition = self.definition.clone();
        }
        c.fast_timers = self.fast_timers;
        c
    }
}

/// A method enum of the `wccp` crate as a list of names in the configuration.
pub(crate) trait MethodName: Copy + PartialEq + 'static {
    /// Every method, in the default order.
    const ALL: &'static [Self];
    /// The method's configuration name.
    fn name(self) -> &'static str;
}

impl MethodName for ForwardingMethod {
    const ALL: &'static [Self] = &ForwardingMethod::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl MethodName for ReturnMethod {
    const ALL: &'static [Self] = &ReturnMethod::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl MethodName for AssignmentMethod {
    const ALL: &'static [Self] = &AssignmentMethod::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// Longest WCCP MD5 password: the reference (§3.1) pads or truncates it to 8 octets, so a longer
/// one would silently mean its first 8; say so instead.
const MAX_WCCP_PASSWORD: usize = 8;

/// `[wccp]`'s own keys.
pub(crate) fn options(at: &Locator<'_>, raw: &RawWccp) -> Result<WccpOptions> {
    let d = WccpOptions::default();
    let int =
        |v: &Option<Spanned<Int>>, key: &str, lo: i64, hi: i64, default: u32| -> Result<u32> {
            match v {
                None => Ok(default),
                Some(n) if (lo..=hi).contains(&n.get_ref().0) => Ok(n.get_ref().0 as u32),
                Some(n) => Err(at.err(
                    &n.span(),
                    format!(
                        "{key} = {} is out of range; expected {lo}..={hi} (default {default})",
                        n.get_ref().0
                    ),
                )),
            }
        };
    Ok(WccpOptions {
        fast_failover: raw
            .fast_failover
            .as_ref()
            .map(|b| *b.get_ref())
            .unwrap_or(d.fast_failover),
        probe_interval_ms: int(
            &raw.probe_interval_ms,
            "probe-interval-ms",
            50,
            10_000,
            d.probe_interval_ms,
        )?,
        probe_misses: int(&raw.probe_misses, "probe-misses", 1, 20, d.probe_misses)?,
        flow_affinity: raw
            .flow_affinity
            .as_ref()
            .map(|b| *b.get_ref())
            .unwrap_or(d.flow_affinity),
        affinity_max_flows: int(
            &raw.flow_affinity_max_flows,
            "flow-affinity-max-flows",
            64,
            16_777_216,
            d.affinity_max_flows,
        )?,
        affinity_idle_secs: int(
            &raw.flow_affinity_idle_secs,
            "flow-affinity-idle-secs",
            1,
            86_400,
            d.affinity_idle_secs,
        )?,
    })
}

/// All `[[wccp.service]]` tables: ids valid and unique, methods known, group lists well formed.
pub(crate) fn services(
    at: &Locator<'_>,
    raw: &[Spanned<RawWccpService>],
) -> Result<Vec<WccpServiceConf>> {
    let mut out: Vec<(WccpServiceConf, usize)> = Vec::new();
    for table in raw {
        let r = table.get_ref();
        let line = at.line_of(table.span().start);
        let id = service_id(at, &r.id)?;
        if let Some((_, prev)) = out.iter().find(|(s, _)| s.id == id) {
            return Err(at.err(
                &r.id.span(),
                format!("WCCP service {id} is already defined at line {prev}"),
            ));
        }
        let password = password(at, r.password.as_ref())?;
        let multicast_group = multicast_group(at, r.multicast_group.as_ref())?;
        let forwarding = methods(
            at,
            &r.forwarding,
            "forwarding",
            ForwardingMethod::ALL.to_vec(),
        )?;
        let packet_return = methods(at, &r.return_methods, "return", ReturnMethod::ALL.to_vec())?;
        let assignment = methods(
            at,
            &r.assignment,
            "assignment",
            AssignmentMethod::ALL.to_vec(),
        )?;
        let caches = match &r.caches {
            None => None,
            Some(v) => {
                let mut list: Vec<Ipv4Network> = Vec::new();
                for a in v.get_ref() {
                    let n = crate::validate::prefix_or_address(at, a, "caches", "10.0.3.0/24")?;
                    if !list.contains(&n) {
                        list.push(n);
                    }
                }
                Some(list)
            }
        };
        let definition = definition(at, &DefinitionKeys::of(r), id)?;
        let redirect_list = r
            .redirect_list
            .iter()
            .map(|rule| acl_rule(at, rule))
            .collect::<Result<Vec<_>>>()?;
        let probe = probe_mode(at, r)?;
        let fail_policy = fail_policy(at, r.fail_policy.as_ref(), id, definition.is_some())?;
        let gre_mss_clamp = gre_mss_clamp(at, r.gre_mss_clamp.as_ref())?;
        let fast_timers = r.fast_timers.as_ref().map_or(true, |b| *b.get_ref());
        out.push((
            WccpServiceConf {
                id,
                password,
                multicast_group,
                forwarding,
                packet_return,
                assignment,
                caches,
                definition,
                redirect_list,
                probe,
                fail_policy,
                gre_mss_clamp,
                fast_timers,
            },
            line,
        ));
    }
    Ok(out.into_iter().map(|(s, _)| s).collect())
}

/// `probe` and `probe-port` of one service: `probe-port` alone means the direct probe (as it
/// did before `probe` existed); with neither, the redirect probe.
fn probe_mode(at: &Locator<'_>, r: &RawWccpService) -> Result<WccpProbe> {
    let port = match &r.probe_port {
        None => None,
        Some(p) => match u16::try_from(p.get_ref().0) {
            Ok(port) if port != 0 => Some((port, p.span())),
            _ => {
                return Err(at.err(
                    &p.span(),
                    format!(
                        "probe-port = {} is not a TCP port (1..=65535)",
                        p.get_ref().0
                    ),
                ))
            }
        },
    };
    let mode = match &r.probe {
        None => None,
        Some(m) => match m.get_ref().as_str() {
            "redirect" => Some((WccpProbe::Redirect, m.span())),
            "direct" => Some((WccpProbe::Direct { port: 0 }, m.span())),
            "off" => Some((WccpProbe::Off, m.span())),
            other => {
                return Err(at.err(
                    &m.span(),
                    format!("unknown probe `{other}`; expected redirect, direct or off"),
                ))
            }
        },
    };
    Ok(match (mode, port) {
        (None, None) => WccpProbe::Redirect,
        (None | Some((WccpProbe::Direct { .. }, _)), Some((port, _))) => WccpProbe::Direct { port },
        (Some((WccpProbe::Direct { .. }, _)), None) => WccpProbe::Direct {
            port: DEFAULT_PROBE_PORT,
        },
        (Some((m, _)), None) => m,
        (Some((m, _)), Some((_, span))) => {
            return Err(at.err(
                &span,
                format!(
                "probe-port applies only to probe = \"direct\" (this service has probe = \"{}\"{})",
                m.as_str(),
                if m == WccpProbe::Redirect {
                    ", which probes the service's own port through the redirection path"
                } else {
                    ""
                }
            ),
            ))
        }
    })
}

/// A service's `fail-policy`. A closed policy needs to know which packets are the service's
/// while no cache is there to announce it: service 0 knows, a dynamic service must be pinned
/// (a learnt definition is forgotten when the last cache leaves).
fn fail_policy(
    at: &Locator<'_>,
    v: Option<&Spanned<String>>,
    id: u8,
    pinned: bool,
) -> Result<WccpFailPolicy> {
    let Some(v) = v else {
        return Ok(WccpFailPolicy::default());
    };
    let Some(p) = WccpFailPolicy::ALL
        .into_iter()
        .find(|p| p.as_str() == v.get_ref())
    else {
        return Err(at.err(
            &v.span(),
            format!(
                "unknown fail-policy `{}`; expected open, closed-drop or closed-reject",
                v.get_ref()
            ),
        ));
    };
    if p != WccpFailPolicy::Open && id != 0 && !pinned {
        return Err(at.err(
            &v.span(),
            format!("fail-policy = \"{}\" needs the definition of service {id} pinned (`protocol`, `ports`, ...): with no cache in the group the router would not know which packets are the service's", p.as_str()),
        ));
    }
    Ok(p)
}

/// A service's `gre-mss-clamp`: "auto", "off" or an MSS.
fn gre_mss_clamp(at: &Locator<'_>, v: Option<&Spanned<toml::Value>>) -> Result<GreMssClamp> {
    let Some(v) = v else {
        return Ok(GreMssClamp::default());
    };
    let bad = || {
        at.err(
            &v.span(),
            format!("`gre-mss-clamp` must be \"auto\", \"off\" or an MSS {MIN_GRE_MSS_CLAMP}..={MAX_GRE_MSS_CLAMP}"),
        )
    };
    match v.get_ref() {
        toml::Value::String(s) if s == "auto" => Ok(GreMssClamp::Auto),
        toml::Value::String(s) if s == "off" => Ok(GreMssClamp::Off),
        toml::Value::Integer(n) => u16::try_from(*n)
            .ok()
            .filter(|n| (MIN_GRE_MSS_CLAMP..=MAX_GRE_MSS_CLAMP).contains(n))
            .map(GreMssClamp::Fixed)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A service `id`: 0 (the standard web-cache service) or a dynamic service 1..=255.
///
/// The draft reserves 1..=50 for well-known services but defines none of them; IOS (and
/// Squid) accept them as dynamic services, so a router or cache configured that way must work.
pub(crate) fn service_id(at: &Locator<'_>, id: &Spanned<Int>) -> Result<u8> {
    let n = id.get_ref().0;
    u8::try_from(n).map_err(|_| {
        at.err(
            &id.span(),
            format!("WCCP service id {n} is not supported; use 0 (the standard web-cache service) or a dynamic service 1..=255"),
        )
    })
}

/// A service's `multicast-group`: an IPv4 multicast address outside 224.0.0.0/24.
pub(crate) fn multicast_group(
    at: &Locator<'_>,
    g: Option<&Spanned<String>>,
) -> Result<Option<Ipv4Addr>> {
    let Some(g) = g else { return Ok(None) };
    match g.get_ref().parse::<Ipv4Addr>() {
        Ok(a) if wccp::router::valid_multicast_group(a) => Ok(Some(a)),
        Ok(a) => Err(at.err(
            &g.span(),
            format!("multicast-group {a} must be a multicast address (224.0.0.0/4) outside 224.0.0.0/24, the link-local control block; e.g. \"239.255.0.1\""),
        )),
        Err(_) => Err(at.err(
            &g.span(),
            format!("multicast-group {:?} is not an IPv4 address; e.g. \"239.255.0.1\"", g.get_ref()),
        )),
    }
}

/// A service's MD5 `password`: 1..=8 bytes.
pub(crate) fn password(at: &Locator<'_>, p: Option<&Spanned<String>>) -> Result<Option<String>> {
    let Some(p) = p else { return Ok(None) };
    let v = p.get_ref();
    if v.is_empty() || v.len() > MAX_WCCP_PASSWORD {
        return Err(at.err(
            &p.span(),
            format!("WCCP password must be 1..={MAX_WCCP_PASSWORD} bytes (WCCP's MD5 security uses 8 octets); this one has {}", v.len()),
        ));
    }
    Ok(Some(v.clone()))
}

/// A list of method names, duplicates dropped, order kept (most preferred first); `default`
/// when absent.
pub(crate) fn methods<T: MethodName>(
    at: &Locator<'_>,
    v: &Option<Spanned<Vec<String>>>,
    what: &str,
    default: Vec<T>,
) -> Result<Vec<T>> {
    let expected = T::ALL
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(" and/or ");
    let Some(v) = v else {
        return Ok(default);
    };
    let mut m = Vec::new();
    for name in v.get_ref() {
        let Some(x) = T::ALL.iter().find(|x| x.name() == name) else {
            return Err(at.err(
                &v.span(),
                format!("unknown {what} method `{name}`; expected {expected}"),
            ));
        };
        if !m.contains(x) {
            m.push(*x);
        }
    }
    if m.is_empty() {
        return Err(at.err(
            &v.span(),
            format!("`{what}` needs at least one method ({expected})"),
        ));
    }
    Ok(m)
}

/// The keys of a table that define a dynamic service (`[[wccp.service]]` of router.conf, of
/// cache.conf): the router pins what caches must announce, a cache announces it.
pub(crate) struct DefinitionKeys<'a> {
    /// `protocol = "tcp"`.
    pub protocol: &'a Option<Spanned<String>>,
    /// `priority = 100`.
    pub priority: &'a Option<Spanned<Int>>,
    /// `ports = [80, 8080]`.
    pub ports: &'a Option<Spanned<Vec<Int>>>,
    /// `port-type = "destination"`.
    pub port_type: &'a Option<Spanned<String>>,
    /// `hash = ["dst-ip"]`.
    pub hash: &'a Option<Spanned<Vec<String>>>,
    /// `alternate-hash = ["src-ip"]`.
    pub alternate_hash: &'a Option<Spanned<Vec<String>>>,
}

impl<'a> DefinitionKeys<'a> {
    /// The definition keys of a router.conf `[[wccp.service]]`.
    fn of(r: &'a RawWccpService) -> Self {
        DefinitionKeys {
            protocol: &r.protocol,
            priority: &r.priority,
            ports: &r.ports,
            port_type: &r.port_type,
            hash: &r.hash,
            alternate_hash: &r.alternate_hash,
        }
    }

    /// The span of the first key given, if any.
    fn first(&self) -> Option<std::ops::Range<usize>> {
        [
            self.protocol.as_ref().map(|p| p.span()),
            self.priority.as_ref().map(|p| p.span()),
            self.ports.as_ref().map(|p| p.span()),
            self.port_type.as_ref().map(|p| p.span()),
            self.hash.as_ref().map(|p| p.span()),
            self.alternate_hash.as_ref().map(|p| p.span()),
        ]
        .into_iter()
        .flatten()
        .next()
    }
}

/// The definition keys of service `id`: `None` when none is given, the service's Service Info
/// otherwise (`hash` defaults to the destination address, as for the standard service).
pub(crate) fn definition(
    at: &Locator<'_>,
    r: &DefinitionKeys<'_>,
    id: u8,
) -> Result<Option<ServiceInfo>> {
    let Some(first) = r.first() else {
        return Ok(None);
    };
    if id == 0 {
        return Err(at.err(
            &first,
            "the standard service 0 is TCP port 80 by definition; protocol, priority, ports, port-type and hash apply to dynamic services (1..=255) only",
        ));
    }
    let Some(p) = r.protocol else {
        return Err(at.err(
            &first,
            format!("the definition of service {id} needs `protocol`"),
        ));
    };
    let protocol = protocol_number(p.get_ref()).ok_or_else(|| {
        at.err(
            &p.span(),
            format!(
                "unknown protocol `{}`; expected tcp, udp, or a number 0..=255",
                p.get_ref()
            ),
        )
    })?;
    let priority = match r.priority {
        None => 0,
        Some(n) => u8::try_from(n.get_ref().0).map_err(|_| {
            at.err(
                &n.span(),
                format!(
                    "priority = {} is out of range; expected 0..=255",
                    n.get_ref().0
                ),
            )
        })?,
    };
    let mut ports = Vec::new();
    if let Some(list) = r.ports {
        for n in list.get_ref() {
            match u16::try_from(n.0) {
                Ok(port) if port != 0 => {
                    if !ports.contains(&port) {
                        ports.push(port)
                    }
                }
                _ => {
                    return Err(at.err(
                        &list.span(),
                        format!("{} in `ports` is not a port (1..=65535)", n.0),
                    ))
                }
            }
        }
        if ports.len() > 8 {
            return Err(at.err(
                &list.span(),
                format!(
                    "a WCCP service carries at most 8 ports; this list has {}",
                    ports.len()
                ),
            ));
        }
    }
    let mut flags = match r.port_type {
        None => ServiceFlags::empty(),
        Some(t) => match t.get_ref().as_str() {
            "destination" => ServiceFlags::empty(),
            "source" => ServiceFlags::PORTS_SOURCE,
            other => {
                return Err(at.err(
                    &t.span(),
                    format!("unknown port-type `{other}`; expected destination or source"),
                ))
            }
        },
    };
    let fields = |v: &Option<Spanned<Vec<String>>>, key: &str| -> Result<ServiceFlags> {
        let mut out = ServiceFlags::empty();
        for name in v.iter().flat_map(|s| s.get_ref()) {
            let Some(f) = ServiceFlags::hash_field(name, key == "alternate-hash") else {
                let span = v.as_ref().map(|s| s.span()).unwrap_or_default();
                return Err(at.err(
                    &span,
                    format!(
                        "unknown {key} field `{name}`; expected src-ip, dst-ip, src-port, dst-port"
                    ),
                ));
            };
            out |= f;
        }
        Ok(out)
    };
    let hash = fields(r.hash, "hash")?;
    // No primary field would hash every packet to one bucket; hash on the destination address,
    // as the standard service does.
    flags |= if hash.is_empty() {
        ServiceFlags::DST_IP_HASH
    } else {
        hash
    };
    flags |= fields(r.alternate_hash, "alternate-hash")?;
    Ok(Some(ServiceInfo::dynamic(
        id, protocol, priority, flags, &ports,
    )))
}

/// A protocol name or number.
pub(crate) fn protocol_number(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "gre" => Some(47),
        _ => s.parse().ok(),
    }
}

/// One `[[wccp.service.redirect-list]]` rule.
fn acl_rule(at: &Locator<'_>, table: &Spanned<RawWccpAclRule>) -> Result<WccpAclRule> {
    let r = table.get_ref();
    let action = match r.action.get_ref().as_str() {
        "permit" => WccpAclAction::Permit,
        "deny" => WccpAclAction::Deny,
        other => {
            return Err(at.err(
                &r.action.span(),
                format!("unknown action `{other}`; expected permit or deny"),
            ))
        }
    };
    let protocol = match &r.protocol {
        None => None,
        Some(p) if p.get_ref() == "any" => None,
        Some(p) => Some(protocol_number(p.get_ref()).ok_or_else(|| {
            at.err(
                &p.span(),
                format!(
                    "unknown protocol `{}`; expected any, tcp, udp, icmp, gre or a number 0..=255",
                    p.get_ref()
                ),
            )
        })?),
    };
    let prefix = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<Ipv4Network>> {
        let Some(v) = v else { return Ok(None) };
        let s = v.get_ref();
        if s == "any" {
            return Ok(None);
        }
        crate::validate::prefix_or_address(at, v, key, "10.0.0.0/8").map(Some)
    };
    let ports = |v: &Option<Spanned<toml::Value>>, key: &str| -> Result<Option<(u16, u16)>> {
        let Some(v) = v else { return Ok(None) };
        let bad = || {
            at.err(
                &v.span(),
                format!("`{key}` must be a port (80) or a range (\"8000-8080\") within 0..=65535"),
            )
        };
        let range = match v.get_ref() {
            toml::Value::Integer(n) => {
                let p = u16::try_from(*n).map_err(|_| bad())?;
                (p, p)
            }
            toml::Value::String(s) => {
                let (lo, hi) = s.split_once('-').unwrap_or((s, s));
                let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
                let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
                if lo > hi {
                    return Err(bad());
                }
                (lo, hi)
            }
            _ => return Err(bad()),
        };
        Ok(Some(range))
    };
    Ok(WccpAclRule {
        action,
        protocol,
        source: prefix(&r.source, "source")?,
        destination: prefix(&r.destination, "destination")?,
        source_port: ports(&r.source_port, "source-port")?,
        destination_port: ports(&r.destination_port, "destination-port")?,
    })
}

/// Writes `[wccp]` and every `[[wccp.service]]` as TOML `parse_str` reads back to equal values.
pub(crate) fn emit(
    out: &mut String,
    options: &WccpOptions,
    services: &[WccpServiceConf],
    quote: fn(&str) -> String,
) {
    if services.is_empty() {
        return;
    }
    let o = options;
    out.push_str("\n[wccp]\n");
    let _ = writeln!(out, "fast-failover = {}", o.fast_failover);
    let _ = writeln!(out, "probe-interval-ms = {}", o.probe_interval_ms);
    let _ = writeln!(out, "probe-misses = {}", o.probe_misses);
    let _ = writeln!(out, "flow-affinity = {}", o.flow_affinity);
    let _ = writeln!(out, "flow-affinity-max-flows = {}", o.affinity_max_flows);
    let _ = writeln!(out, "flow-affinity-idle-secs = {}", o.affinity_idle_secs);
    let list = |v: Vec<&str>| v.iter().map(|x| quote(x)).collect::<Vec<_>>().join(", ");
    for s in services {
        out.push_str("\n[[wccp.service]]\n");
        let _ = writeln!(out, "id = {}", s.id);
        if let Some(p) = &s.password {
            let _ = writeln!(out, "password = {}", quote(p));
        }
        if let Some(g) = s.multicast_group {
            let _ = writeln!(out, "multicast-group = {}", quote(&g.to_string()));
        }
        let _ = writeln!(out, "forwarding = [{}]", method_list(&s.forwarding, quote));
        let _ = writeln!(out, "return = [{}]", method_list(&s.packet_return, quote));
        let _ = writeln!(out, "assignment = [{}]", method_list(&s.assignment, quote));
        if let Some(c) = &s.caches {
            let c: Vec<String> = c
                .iter()
                .map(|n| match n.prefix() {
                    32 => n.ip().to_string(),
                    _ => n.to_string(),
                })
                .collect();
            let _ = writeln!(
                out,
                "caches = [{}]",
                list(c.iter().map(String::as_str).collect())
            );
        }
        if let Some(d) = &s.definition {
            emit_definition(out, d, quote);
        }
        let _ = writeln!(out, "probe = {}", quote(s.probe.as_str()));
        if let WccpProbe::Direct { port } = s.probe {
            let _ = writeln!(out, "probe-port = {port}");
        }
        let _ = writeln!(out, "fail-policy = {}", quote(s.fail_policy.as_str()));
        let _ = writeln!(out, "fast-timers = {}", s.fast_timers);
        match s.gre_mss_clamp {
            GreMssClamp::Fixed(n) => {
                let _ = writeln!(out, "gre-mss-clamp = {n}");
            }
            c => {
                let _ = writeln!(out, "gre-mss-clamp = {}", quote(&c.to_string()));
            }
        }
        for r in &s.redirect_list {
            out.push_str("\n[[wccp.service.redirect-list]]\n");
            let action = match r.action {
                WccpAclAction::Permit => "permit",
                WccpAclAction::Deny => "deny",
            };
            let _ = writeln!(out, "action = {}", quote(action));
            if let Some(p) = r.protocol {
                let _ = writeln!(out, "protocol = {}", quote(&p.to_string()));
            }
            if let Some(n) = r.source {
                let _ = writeln!(out, "source = {}", quote(&n.to_string()));
            }
            if let Some(n) = r.destination {
                let _ = writeln!(out, "destination = {}", quote(&n.to_string()));
            }
            if let Some((lo, hi)) = r.source_port {
                let _ = writeln!(out, "source-port = {}", quote(&format!("{lo}-{hi}")));
            }
            if let Some((lo, hi)) = r.destination_port {
                let _ = writeln!(out, "destination-port = {}", quote(&format!("{lo}-{hi}")));
            }
        }
    }
}

/// A method list as a TOML array body: `"gre", "l2"`.
pub(crate) fn method_list<T: MethodName>(v: &[T], quote: fn(&str) -> String) -> String {
    v.iter()
        .map(|m| quote(m.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the definition keys of a dynamic service, every default written out.
pub(crate) fn emit_definition(out: &mut String, d: &ServiceInfo, quote: fn(&str) -> String) {
    let list = |names: Vec<&str>| names.into_iter().map(quote).collect::<Vec<_>>().join(", ");
    let _ = writeln!(out, "protocol = {}", quote(&d.protocol.to_string()));
    let _ = writeln!(out, "priority = {}", d.priority);
    let ports: Vec<String> = d.port_list().iter().map(|p| p.to_string()).collect();
    let _ = writeln!(out, "ports = [{}]", ports.join(", "));
    let port_type = if d.flags.contains(ServiceFlags::PORTS_SOURCE) {
        "source"
    } else {
        "destination"
    };
    let _ = writeln!(out, "port-type = {}", quote(port_type));
    let _ = writeln!(
        out,
        "hash = [{}]",
        list(d.flags.hash_fields(false).collect())
    );
    let _ = writeln!(
        out,
        "alternate-hash = [{}]",
        list(d.flags.hash_fields(true).collect())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: WccpAclAction) -> WccpAclRule {
        WccpAclRule {
            action,
            protocol: None,
            source: None,
            destination: None,
            source_port: None,
            destination_port: None,
        }
    }

    #[test]
    fn acl_first_match_wins_and_implicit_deny() {
        let a: Ipv4Addr = "10.0.1.2".parse().unwrap();
        let b: Ipv4Addr = "10.0.2.2".parse().unwrap();
        assert!(acl_permits(&[], 6, a, b, 1, 80));
        let deny_b = WccpAclRule {
            destination: Some("10.0.2.2/32".parse().unwrap()),
            ..rule(WccpAclAction::Deny)
        };
        let permit_tcp = WccpAclRule {
            protocol: Some(6),
            destination_port: Some((80, 90)),
            ..rule(WccpAclAction::Permit)
        };
        let rules = [deny_b.clone(), permit_tcp.clone()];
        assert!(!acl_permits(&rules, 6, a, b, 1, 80), "first rule denies");
        assert!(acl_permits(&rules, 6, a, a, 1, 85), "second permits");
        assert!(
            !acl_permits(&rules, 6, a, a, 1, 91),
            "no match: implicit deny"
        );
        assert!(!acl_permits(&rules, 17, a, a, 1, 80), "protocol differs");
        let rules = [permit_tcp, deny_b];
        assert!(acl_permits(&rules, 6, a, b, 1, 80), "order matters");
    }
}
