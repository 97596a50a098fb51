//! The `[nat]` part of router.conf (issue 14): source NAT (NAPT) rules, the outside port range,
//! timeouts and table sizes, parsed with positions and mapped onto the `nat` crate's
//! [`nat::config::Config`].
//!
//! Kept in its own module (raw structs, validation and emission together), like `steering`.
//! Interfaces become [`nat::config::IfaceId`]s: positions in [`crate::RouterConf::interfaces`],
//! which is also the router's interface index.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Deserialize;
use toml::Spanned;

use nat::config::{Config, NonSynPolicy, Prefix, Rule, Timeouts};

use crate::error::{ConfError, Locator};
use crate::raw::Int;
use crate::InterfaceConf;

type Result<T> = std::result::Result<T, ConfError>;

/// Keys of `[nat]`, in documentation order.
pub(crate) const NAT_KEYS: &[&str] = &[
    "port-range",
    "max-sessions",
    "esp-sessions",
    "non-syn",
    "mirror-queue",
    "tcp-established-timeout",
    "tcp-transitory-timeout",
    "udp-timeout",
    "icmp-timeout",
    "esp-timeout",
    "rule",
];
/// Keys of `[[nat.rule]]`, in documentation order.
pub(crate) const RULE_KEYS: &[&str] = &["inside", "outside", "pool"];

/// The section and key list of a NAT struct (for `raw::explain`'s unknown-key wording).
pub(crate) fn sections() -> [(&'static str, &'static [&'static str]); 2] {
    [("[nat]", NAT_KEYS), ("[[nat.rule]]", RULE_KEYS)]
}

/// The validated `[nat]` section: `None` when the file has no rules (NAT off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatConf {
    /// The NAT configuration the router's workers run, sized for `[router] workers`.
    pub config: Option<Config>,
}

impl NatConf {
    /// True when nothing is translated.
    pub fn is_empty(&self) -> bool {
        self.config.is_none()
    }
}

/// `[nat]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [nat] table"
)]
pub(crate) struct RawNat {
    port_range: Option<Spanned<String>>,
    max_sessions: Option<Spanned<Int>>,
    esp_sessions: Option<Spanned<Int>>,
    non_syn: Option<Spanned<String>>,
    mirror_queue: Option<Spanned<Int>>,
    tcp_established_timeout: Option<Spanned<Int>>,
    tcp_transitory_timeout: Option<Spanned<Int>>,
    udp_timeout: Option<Spanned<Int>>,
    icmp_timeout: Option<Spanned<Int>>,
    esp_timeout: Option<Spanned<Int>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

/// `[[nat.rule]]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [[nat.rule]] table"
)]
struct RawRule {
    inside: Spanned<Vec<Spanned<String>>>,
    outside: Spanned<String>,
    pool: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Validates `[nat]` against the interfaces (validated, in file order) and the worker count.
pub(crate) fn validate(
    at: &Locator<'_>,
    raw: Option<&RawNat>,
    interfaces: &[InterfaceConf],
    workers: usize,
) -> Result<NatConf> {
    let Some(raw) = raw else {
        return Ok(NatConf::default());
    };
    // Where errors about the section as a whole point: its first key.
    let section = [
        raw.port_range.as_ref().map(|s| s.span()),
        raw.max_sessions.as_ref().map(|s| s.span()),
        raw.non_syn.as_ref().map(|s| s.span()),
        raw.mirror_queue.as_ref().map(|s| s.span()),
        raw.tcp_established_timeout.as_ref().map(|s| s.span()),
        raw.tcp_transitory_timeout.as_ref().map(|s| s.span()),
        raw.udp_timeout.as_ref().map(|s| s.span()),
        raw.icmp_timeout.as_ref().map(|s| s.span()),
        raw.esp_timeout.as_ref().map(|s| s.span()),
        raw.esp_sessions.as_ref().map(|s| s.span()),
        raw.rule.first().map(|s| s.span()),
    ]
    .into_iter()
    .flatten()
    .min_by_key(|s| s.start)
    .unwrap_or(0..0);
    let d = Config::default();
    let (port_min, port_max) = match &raw.port_range {
        Some(r) => port_range(at, r)?,
        None => (d.port_min, d.port_max),
    };
    let int = |r: &Option<Spanned<Int>>, key: &str, lo: i64, hi: i64, def: u32| -> Result<u32> {
        match r {
            None => Ok(def),
            Some(s) => {
                let n = s.get_ref().0;
                if n < lo || n > hi {
                    return Err(at.err(
                        &s.span(),
                        format!("{key} = {n} is out of range; expected {lo}..={hi}"),
                    ));
                }
                Ok(n as u32)
            }
        }
    };
    const DAY: i64 = 86_400;
    let timeouts = Timeouts {
        tcp_established: int(
            &raw.tcp_established_timeout,
            "tcp-established-timeout",
            1,
            7 * DAY,
            d.timeouts.tcp_established,
        )?,
        tcp_transitory: int(
            &raw.tcp_transitory_timeout,
            "tcp-transitory-timeout",
            1,
            DAY,
            d.timeouts.tcp_transitory,
        )?,
        udp: int(&raw.udp_timeout, "udp-timeout", 1, DAY, d.timeouts.udp)?,
        icmp: int(&raw.icmp_timeout, "icmp-timeout", 1, DAY, d.timeouts.icmp)?,
        esp: int(&raw.esp_timeout, "esp-timeout", 1, DAY, d.timeouts.esp)?,
    };
    let esp_sessions = int(
        &raw.esp_sessions,
        "esp-sessions",
        16,
        1 << 20,
        d.esp_sessions,
    )?;
    let max_sessions = int(
        &raw.max_sessions,
        "max-sessions",
        16,
        16 << 20,
        d.max_sessions,
    )?;
    let mirror_queue = int(
        &raw.mirror_queue,
        "mirror-queue",
        16,
        1 << 20,
        d.mirror_queue,
    )?;
    let non_syn = match &raw.non_syn {
        None => NonSynPolicy::Drop,
        Some(s) => match s.get_ref().as_str() {
            "drop" => NonSynPolicy::Drop,
            "setup" => NonSynPolicy::Setup,
            other => {
                return Err(at.err(
                    &s.span(),
                    format!("unknown non-syn policy `{other}`; expected one of: drop, setup"),
                ))
            }
        },
    };
    let mut rules = Vec::new();
    let mut pools: Vec<(Ipv4Addr, std::ops::Range<usize>)> = Vec::new();
    for r in &raw.rule {
        let rr = r.get_ref();
        let outside = interfaces
            .iter()
            .position(|i| i.name == *rr.outside.get_ref())
            .ok_or_else(|| {
                let known: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
                at.err(
                    &rr.outside.span(),
                    format!(
                        "unknown interface `{}`; configured interfaces: {}",
                        rr.outside.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
        let out_if = &interfaces[outside];
        if rr.inside.get_ref().is_empty() {
            return Err(at.err(
                &rr.inside.span(),
                "a NAT rule needs at least one inside prefix, e.g. inside = [\"10.0.0.0/8\"]",
            ));
        }
        let mut inside = Vec::new();
        for p in rr.inside.get_ref() {
            let pre = prefix(at, p)?;
            if out_if.network.contains(pre.addr) && pre.len >= out_if.network.prefix() {
                return Err(at.err(
                    &p.span(),
                    format!(
                        "inside prefix {} lies on the outside interface `{}` ({})",
                        p.get_ref(),
                        out_if.name,
                        out_if.network
                    ),
                ));
            }
            inside.push(pre);
        }
        let pool = match &rr.pool {
            None => vec![(out_if.address, rr.outside.span())],
            Some(list) if list.get_ref().is_empty() => {
                return Err(at.err(
                    &list.span(),
                    "the pool is empty; leave `pool` out to use the outside interface's address",
                ))
            }
            Some(list) => {
                let mut v = Vec::new();
                for a in list.get_ref() {
                    let addr: Ipv4Addr = a.get_ref().parse().map_err(|_| {
                        at.err(
                            &a.span(),
                            format!(
                                "invalid IPv4 address `{}`; expected dotted quad, e.g. 192.0.2.10",
                                a.get_ref()
                            ),
                        )
                    })?;
                    if addr.is_unspecified()
                        || addr.is_broadcast()
                        || addr.is_multicast()
                        || addr.is_loopback()
                    {
                        return Err(at.err(
                            &a.span(),
                            format!("pool address {addr} is not a unicast address"),
                        ));
                    }
                    if let Some(other) = interfaces
                        .iter()
                        .find(|i| i.address == addr && i.name != out_if.name)
                    {
                        return Err(at.err(
                            &a.span(),
                            format!(
                                "pool address {addr} is interface `{}`'s address, not the outside interface's",
                                other.name
                            ),
                        ));
                    }
                    v.push((addr, a.span()));
                }
                v
            }
        };
        for (addr, span) in &pool {
            if let Some((_, first)) = pools.iter().find(|(a, _)| a == addr) {
                return Err(at.err(
                    span,
                    format!(
                        "pool address {addr} is already used (line {}): its ports would be handed out twice",
                        at.line_of(first.start)
                    ),
                ));
            }
            if inside.iter().any(|p| p.contains(*addr)) {
                return Err(at.err(
                    span,
                    format!("pool address {addr} lies inside the rule's own inside prefixes"),
                ));
            }
            pools.push((*addr, span.clone()));
        }
        rules.push(Rule {
            inside,
            outside: outside as u32,
            pool: pool.into_iter().map(|(a, _)| a).collect(),
        });
    }
    if rules.is_empty() {
        return Err(at.err(
            &section,
            "[nat] has no [[nat.rule]]: add a rule (inside, outside) or remove the section",
        ));
    }
    let config = Config {
        rules,
        port_min,
        port_max,
        timeouts,
        workers: workers.min(usize::from(u16::MAX)) as u16,
        max_sessions,
        esp_sessions,
        non_syn,
        mirror_queue,
        // The router adds its own listeners' ports when it starts.
        reserved: Default::default(),
        // Set by the router when it runs a cluster node (the key comes from the cluster key).
        cluster_key: None,
    };
    if let Err(e) = config.validate() {
        let span = raw.port_range.as_ref().map(|s| s.span()).unwrap_or(section);
        return Err(at.err(&span, format!("[nat]: {e}")));
    }
    Ok(NatConf {
        config: Some(config),
    })
}

/// `"1024-65535"` → (1024, 65535).
fn port_range(at: &Locator<'_>, raw: &Spanned<String>) -> Result<(u16, u16)> {
    let bad = || {
        at.err(
            &raw.span(),
            format!(
                "invalid port-range `{}`; expected \"first-last\" within 1-65535, e.g. \"1024-65535\"",
                raw.get_ref()
            ),
        )
    };
    let (lo, hi) = raw.get_ref().split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
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
    if l > 32 {
        return Err(bad());
    }
    let mask = if l == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(l))
    };
    if u32::from(a) & !mask != 0 {
        return Err(at.err(
            &raw.span(),
            format!(
                "prefix `{s}` has host bits set; did you mean {}/{l}?",
                Ipv4Addr::from(u32::from(a) & mask)
            ),
        ));
    }
    Ok(Prefix::new(a, l))
}

/// Appends the effective `[nat]` section (nothing when NAT is off).
pub(crate) fn emit(
    out: &mut String,
    nat: &NatConf,
    interfaces: &[InterfaceConf],
    quote: fn(&str) -> String,
) {
    let Some(c) = &nat.config else {
        return;
    };
    // `write!` into a String cannot fail.
    out.push_str("\n[nat]\n");
    let _ = writeln!(
        out,
        "port-range = {}",
        quote(&format!("{}-{}", c.port_min, c.port_max))
    );
    let _ = writeln!(out, "max-sessions = {}", c.max_sessions);
    let _ = writeln!(
        out,
        "non-syn = {}",
        quote(match c.non_syn {
            NonSynPolicy::Drop => "drop",
            NonSynPolicy::Setup => "setup",
        })
    );
    let _ = writeln!(out, "mirror-queue = {}", c.mirror_queue);
    let t = &c.timeouts;
    let _ = writeln!(out, "tcp-established-timeout = {}", t.tcp_established);
    let _ = writeln!(out, "tcp-transitory-timeout = {}", t.tcp_transitory);
    let _ = writeln!(out, "udp-timeout = {}", t.udp);
    let _ = writeln!(out, "icmp-timeout = {}", t.icmp);
    for r in &c.rules {
        out.push_str("\n[[nat.rule]]\n");
        let inside: Vec<String> = r
            .inside
            .iter()
            .map(|p| quote(&format!("{}/{}", p.addr, p.len)))
            .collect();
        let _ = writeln!(out, "inside = [{}]", inside.join(", "));
        let name = interfaces
            .get(r.outside as usize)
            .map(|i| i.name.as_str())
            .unwrap_or("?");
        let _ = writeln!(out, "outside = {}", quote(name));
        let pool: Vec<String> = r.pool.iter().map(|a| quote(&a.to_string())).collect();
        let _ = writeln!(out, "pool = [{}]", pool.join(", "));
    }
}
