//! cache.conf as written: serde structs whose leaves are `toml::Spanned`, and the section-aware
//! wording of its unknown/missing-key errors (the router.conf counterpart is `crate::raw`).

use serde::Deserialize;
use toml::Spanned;

use crate::raw::{backticked, suggest, Int};

/// Top-level tables, as they appear in serde's "expected one of" lists.
const TOP_KEYS: &[&str] = &["cache", "wccp"];
/// Keys of `[cache]`, in documentation order.
pub(crate) const CACHE_KEYS: &[&str] = &[
    "address",
    "gre-only",
    "tun",
    "socket",
    "log-level",
    "bypass",
    "return-rewrite",
    "return-copy",
];
/// Keys of `[wccp]`, in documentation order.
pub(crate) const WCCP_KEYS: &[&str] = &[
    "routers",
    "multicast-group",
    "weight",
    "forwarding",
    "return",
    "assignment",
    "transmit-timer-ms",
    "timeout-scale",
    "ra-timer-scale",
    "service",
];
/// Keys of `[[wccp.service]]`, in documentation order.
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "id",
    "password",
    "protocol",
    "priority",
    "ports",
    "port-type",
    "hash",
    "alternate-hash",
];

/// The whole document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a swcache configuration")]
pub(crate) struct RawCacheFile {
    /// `[cache]`, optional.
    #[serde(default)]
    pub cache: Option<RawCache>,
    /// `[wccp]`, optional.
    #[serde(default)]
    pub wccp: Option<RawCacheWccp>,
}

/// `[cache]`: this host and its GRE termination.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [cache] table"
)]
pub(crate) struct RawCache {
    /// `address = "10.0.3.2"`.
    pub address: Option<Spanned<String>>,
    /// `gre-only = false`.
    pub gre_only: Option<Spanned<bool>>,
    /// `tun = "wccp0"`.
    pub tun: Option<Spanned<String>>,
    /// `socket = "/run/swcache.sock"`.
    pub socket: Option<Spanned<String>>,
    /// `log-level = "info"`.
    pub log_level: Option<Spanned<String>>,
    /// `bypass = ["10.0.2.0/24"]`; each element keeps its own span.
    pub bypass: Option<Vec<Spanned<String>>>,
    /// `return-rewrite = ["10.0.2.3/32=10.0.2.9"]`; each element keeps its own span.
    pub return_rewrite: Option<Vec<Spanned<String>>>,
    /// `return-copy = "pcap:/var/tmp/returns.pcap"`.
    pub return_copy: Option<Spanned<String>>,
}

/// `[wccp]`: the routers to join and what this cache offers them.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [wccp] table"
)]
pub(crate) struct RawCacheWccp {
    /// `routers = ["10.0.3.1"]`; each element keeps its own span.
    pub routers: Option<Vec<Spanned<String>>>,
    /// `multicast-group = "239.255.0.1"`.
    pub multicast_group: Option<Spanned<String>>,
    /// `weight = 10000`.
    pub weight: Option<Spanned<Int>>,
    /// `forwarding = ["gre"]`.
    pub forwarding: Option<Spanned<Vec<String>>>,
    /// `return = ["gre"]`.
    #[serde(rename = "return")]
    pub return_methods: Option<Spanned<Vec<String>>>,
    /// `assignment = ["hash"]`.
    pub assignment: Option<Spanned<Vec<String>>>,
    /// `transmit-timer-ms = 10000`.
    pub transmit_timer_ms: Option<Spanned<Int>>,
    /// `timeout-scale = 1`.
    pub timeout_scale: Option<Spanned<Int>>,
    /// `ra-timer-scale = 1`.
    pub ra_timer_scale: Option<Spanned<Int>>,
    /// `[[wccp.service]]` tables.
    #[serde(default)]
    pub service: Vec<Spanned<RawCacheService>>,
}

/// One `[[wccp.service]]` of cache.conf: a group to join and, for a dynamic one, its definition.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [[wccp.service]] table"
)]
pub(crate) struct RawCacheService {
    /// `id = 0`.
    pub id: Spanned<Int>,
    /// `password = "secret"`.
    pub password: Option<Spanned<String>>,
    /// `protocol = "tcp"` (dynamic services).
    pub protocol: Option<Spanned<String>>,
    /// `priority = 100`.
    pub priority: Option<Spanned<Int>>,
    /// `ports = [80, 8080]`.
    pub ports: Option<Spanned<Vec<Int>>>,
    /// `port-type = "destination"`.
    pub port_type: Option<Spanned<String>>,
    /// `hash = ["dst-ip"]`.
    pub hash: Option<Spanned<Vec<String>>>,
    /// `alternate-hash = ["src-ip"]`.
    pub alternate_hash: Option<Spanned<Vec<String>>>,
}

/// Rewrites serde's unknown/missing-field messages into ones that name the cache.conf section;
/// `None` for any other message, which is then shown as toml wrote it.
pub(crate) fn explain(msg: &str) -> Option<String> {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (key, tail) = rest.split_once('`')?;
        let expected = backticked(tail);
        let same = |keys: &[&str]| {
            keys.len() == expected.len() && keys.iter().all(|k| expected.contains(k))
        };
        if same(TOP_KEYS) {
            let hint = suggest(key, TOP_KEYS)
                .map(|s| format!("; did you mean [{s}]?"))
                .unwrap_or_default();
            return Some(format!(
                "unknown section `{key}`; expected one of: [cache], [wccp]{hint}"
            ));
        }
        let (section, keys) = [
            ("[cache]", CACHE_KEYS),
            ("[wccp]", WCCP_KEYS),
            ("[[wccp.service]]", SERVICE_KEYS),
        ]
        .into_iter()
        .find(|(_, keys)| same(keys))?;
        let hint = suggest(key, keys)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Some(format!(
            "unknown key `{key}` in {section}; expected one of: {}{hint}",
            keys.join(", ")
        ));
    }
    if msg.starts_with("missing field `id`") {
        return Some(
            "missing key `id` in [[wccp.service]]; every WCCP service needs its `id` (0, or 1..=255)"
                .to_string(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_the_section() {
        assert_eq!(
            explain("unknown field `tunn`, expected one of `address`, `gre-only`, `tun`, `socket`, `log-level`, `bypass`, `return-rewrite`, `return-copy`").as_deref(),
            Some("unknown key `tunn` in [cache]; expected one of: address, gre-only, tun, socket, log-level, bypass, return-rewrite, return-copy; did you mean `tun`?")
        );
        assert_eq!(
            explain("unknown field `cahce`, expected `cache` or `wccp`").as_deref(),
            Some(
                "unknown section `cahce`; expected one of: [cache], [wccp]; did you mean [cache]?"
            )
        );
        assert_eq!(explain("unknown field `x`, expected `a` or `b`"), None);
        assert_eq!(explain("missing field `weird`"), None);
    }
}
