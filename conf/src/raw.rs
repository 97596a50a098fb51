//! The file as written: serde structs whose leaves are `toml::Spanned`, so that validation can
//! point at any value, and the section-aware wording of unknown/missing-key errors.
//!
//! Values that need checking (addresses, names, numbers) are read as plain strings and integers
//! here and parsed in `validate`, where the span is at hand; only TOML types are checked by serde.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// Top-level tables, as they appear in serde's "expected one of" lists.
const TOP_KEYS: &[&str] = &[
    "router",
    "interface",
    "route",
    "wccp",
    "steering",
    "nat",
    "ha",
    "cluster",
];
/// Keys of `[router]`, in documentation order.
pub(crate) const ROUTER_KEYS: &[&str] = &[
    "id",
    "workers",
    "management-socket",
    "management-group",
    "log-level",
    "io-backend",
    "metrics-listen",
];
/// Keys of `[[interface]]`, in documentation order.
pub(crate) const INTERFACE_KEYS: &[&str] = &[
    "name",
    "address",
    "mac",
    "mtu",
    "io-backend",
    "wccp-redirect-in",
    "wccp-redirect-out",
    "wccp-exclude-in",
    "wccp-caches",
];
/// Keys of `[wccp]`.
pub(crate) const WCCP_KEYS: &[&str] = &[
    "fast-failover",
    "probe-interval-ms",
    "probe-misses",
    "flow-affinity",
    "flow-affinity-max-flows",
    "flow-affinity-idle-secs",
    "service",
];
/// Keys of `[[wccp.service]]`, in documentation order.
pub(crate) const WCCP_SERVICE_KEYS: &[&str] = &[
    "id",
    "password",
    "multicast-group",
    "forwarding",
    "return",
    "assignment",
    "caches",
    "protocol",
    "priority",
    "ports",
    "port-type",
    "hash",
    "alternate-hash",
    "probe",
    "probe-port",
    "fail-policy",
    "gre-mss-clamp",
    "fast-timers",
    "redirect-list",
];
/// Keys of `[[wccp.service.redirect-list]]`, in documentation order.
pub(crate) const WCCP_ACL_KEYS: &[&str] = &[
    "action",
    "protocol",
    "source",
    "destination",
    "source-port",
    "destination-port",
];
/// Keys of `[[route]]`, in documentation order.
pub(crate) const ROUTE_KEYS: &[&str] = &["prefix", "via", "interface"];

/// The whole document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a swrouter configuration")]
pub(crate) struct RawFile {
    /// `[router]`, optional.
    #[serde(default)]
    pub router: Option<RawRouter>,
    /// `[[interface]]` tables; the span is the whole table, header included.
    #[serde(default)]
    pub interface: Vec<Spanned<RawInterface>>,
    /// `[[route]]` tables; the span is the whole table, header included.
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    /// `[wccp]`, optional.
    #[serde(default)]
    pub wccp: Option<RawWccp>,
    /// `[steering]`, optional (see `crate::steering`).
    #[serde(default)]
    pub steering: Option<crate::steering::RawSteering>,
    /// `[nat]`, optional (see `crate::nat`).
    #[serde(default)]
    pub nat: Option<crate::nat::RawNat>,
    /// `[ha]`, optional (see `crate::ha`).
    #[serde(default)]
    pub ha: Option<crate::ha::RawHa>,
    /// `[cluster]`, optional (see `crate::cluster`).
    #[serde(default)]
    pub cluster: Option<Spanned<crate::cluster::RawCluster>>,
}

/// `[wccp]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [wccp] table"
)]
pub(crate) struct RawWccp {
    /// `fast-failover = true`.
    pub fast_failover: Option<Spanned<bool>>,
    /// `probe-interval-ms = 250`.
    pub probe_interval_ms: Option<Spanned<Int>>,
    /// `probe-misses = 3`.
    pub probe_misses: Option<Spanned<Int>>,
    /// `flow-affinity = true`.
    pub flow_affinity: Option<Spanned<bool>>,
    /// `flow-affinity-max-flows = 65536`.
    pub flow_affinity_max_flows: Option<Spanned<Int>>,
    /// `flow-affinity-idle-secs = 120`.
    pub flow_affinity_idle_secs: Option<Spanned<Int>>,
    /// `[[wccp.service]]` tables.
    #[serde(default)]
    pub service: Vec<Spanned<RawWccpService>>,
}

/// One `[[wccp.service]]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [[wccp.service]] table"
)]
pub(crate) struct RawWccpService {
    /// `id = 0`.
    pub id: Spanned<Int>,
    /// `password = "secret"`.
    pub password: Option<Spanned<String>>,
    /// `multicast-group = "239.1.2.3"`.
    pub multicast_group: Option<Spanned<String>>,
    /// `forwarding = ["gre", "l2"]`.
    pub forwarding: Option<Spanned<Vec<String>>>,
    /// `return = ["gre"]`.
    #[serde(rename = "return")]
    pub return_methods: Option<Spanned<Vec<String>>>,
    /// `assignment = ["hash"]`.
    pub assignment: Option<Spanned<Vec<String>>>,
    /// `caches = ["10.0.3.2"]`.
    pub caches: Option<Spanned<Vec<Spanned<String>>>>,
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
    /// `probe = "redirect"`.
    pub probe: Option<Spanned<String>>,
    /// `probe-port = 80`.
    pub probe_port: Option<Spanned<Int>>,
    /// `fail-policy = "open"`.
    pub fail_policy: Option<Spanned<String>>,
    /// `gre-mss-clamp = "auto"` or a number.
    pub gre_mss_clamp: Option<Spanned<toml::Value>>,
    /// `fast-timers = true`.
    pub fast_timers: Option<Spanned<bool>>,
    /// `[[wccp.service.redirect-list]]` rules.
    #[serde(default)]
    pub redirect_list: Vec<Spanned<RawWccpAclRule>>,
}

/// One `[[wccp.service.redirect-list]]` rule.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [[wccp.service.redirect-list]] table"
)]
pub(crate) struct RawWccpAclRule {
    /// `action = "permit"`.
    pub action: Spanned<String>,
    /// `protocol = "tcp"`.
    pub protocol: Option<Spanned<String>>,
    /// `source = "10.0.0.0/8"`.
    pub source: Option<Spanned<String>>,
    /// `destination = "192.0.2.0/24"`.
    pub destination: Option<Spanned<String>>,
    /// `source-port = "1024-65535"`.
    pub source_port: Option<Spanned<toml::Value>>,
    /// `destination-port = 80`.
    pub destination_port: Option<Spanned<toml::Value>>,
}

/// `[router]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [router] table"
)]
pub(crate) struct RawRouter {
    /// `id = "10.0.1.1"`.
    pub id: Option<Spanned<String>>,
    /// `workers = 2`.
    pub workers: Option<Spanned<Int>>,
    /// `management-socket = "/run/swrouter/swrouter.sock"`.
    pub management_socket: Option<Spanned<String>>,
    /// `management-group = "swrouter"`.
    pub management_group: Option<Spanned<String>>,
    /// `log-level = "info"`.
    pub log_level: Option<Spanned<String>>,
    /// `io-backend = "pnet"`.
    pub io_backend: Option<Spanned<String>>,
    /// `metrics-listen = "127.0.0.1:9469"`.
    pub metrics_listen: Option<Spanned<String>>,
}

/// One `[[interface]]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "an [[interface]] table"
)]
pub(crate) struct RawInterface {
    /// `name = "eth0"`.
    pub name: Spanned<String>,
    /// `address = "10.0.1.1/24"`.
    pub address: Spanned<String>,
    /// `mac = "02:00:00:00:00:01"`.
    pub mac: Option<Spanned<String>>,
    /// `mtu = 1500`.
    pub mtu: Option<Spanned<Int>>,
    /// `io-backend = "mmap"`.
    pub io_backend: Option<Spanned<String>>,
    /// `wccp-redirect-in = [0, 90]`.
    pub wccp_redirect_in: Option<Spanned<Vec<Int>>>,
    /// `wccp-redirect-out = [0]`.
    pub wccp_redirect_out: Option<Spanned<Vec<Int>>>,
    /// `wccp-exclude-in = true`.
    pub wccp_exclude_in: Option<Spanned<bool>>,
    /// `wccp-caches = true`.
    pub wccp_caches: Option<Spanned<bool>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a [[route]] table"
)]
pub(crate) struct RawRoute {
    /// `prefix = "10.9.0.0/16"`.
    pub prefix: Spanned<String>,
    /// `via = "10.0.1.254"`.
    pub via: Spanned<String>,
    /// `interface = "eth0"`.
    pub interface: Option<Spanned<String>>,
}

/// A TOML integer; its own type so that a wrong type reads "expected an integer", not "i64".
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                // TOML integers are i64; saturate anything else so range checks still reject it.
                Ok(Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_i64(IntVisitor)
    }
}

/// Rewrites serde's unknown/missing-field messages into ones that name the TOML section.
///
/// serde says "unknown field `workerz`, expected one of `id`, `workers`, …"; the section is
/// recognised by the list of expected keys, which is unique per struct. Returns `None` for any
/// other message, which is then shown as toml wrote it.
pub(crate) fn explain(msg: &str) -> Option<String> {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (key, tail) = rest.split_once('`')?;
        let expected = backticked(tail);
        return explain_unknown(key, &expected);
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let (key, _) = rest.split_once('`')?;
        let section = match key {
            "name" | "address" => "[[interface]]",
            "prefix" | "via" => "[[route]]",
            "id" => "[[wccp.service]]",
            "action" => "[[wccp.service.redirect-list]]",
            _ => return None,
        };
        let needs = match section {
            "[[route]]" => "every route needs `prefix` and `via`",
            "[[wccp.service]]" => "every WCCP service needs its `id` (0, or 1..=255)",
            "[[wccp.service.redirect-list]]" => {
                "every redirect-list rule needs `action` (permit or deny)"
            }
            _ => "every interface needs `name` and `address`",
        };
        return Some(format!("missing key `{key}` in {section}; {needs}"));
    }
    None
}

/// The message for an unknown `key` in the struct whose keys are `expected`.
fn explain_unknown(key: &str, expected: &[&str]) -> Option<String> {
    let same =
        |keys: &[&str]| keys.len() == expected.len() && keys.iter().all(|k| expected.contains(k));
    if same(TOP_KEYS) {
        // At the top level the keys are table names, so show them as headers.
        let hint = suggest(key, TOP_KEYS)
            .map(|s| format!("; did you mean {}?", header(s)))
            .unwrap_or_default();
        return Some(format!(
            "unknown section `{key}`; expected one of: [router], [[interface]], [[route]], [wccp], [steering], [nat], [ha]{hint}"
        ));
    }
    let (section, keys) = [
        ("[router]", ROUTER_KEYS),
        ("[[interface]]", INTERFACE_KEYS),
        ("[[route]]", ROUTE_KEYS),
        ("[wccp]", WCCP_KEYS),
        ("[[wccp.service]]", WCCP_SERVICE_KEYS),
        ("[[wccp.service.redirect-list]]", WCCP_ACL_KEYS),
    ]
    .into_iter()
    .chain(crate::steering::sections())
    .chain(crate::nat::sections())
    .chain(crate::ha::sections())
    .chain(crate::cluster::sections())
    .find(|(_, keys)| same(keys))?;
    let hint = suggest(key, keys)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    Some(format!(
        "unknown key `{key}` in {section}; expected one of: {}{hint}",
        keys.join(", ")
    ))
}

/// The header a top-level key is written as.
fn header(key: &str) -> &'static str {
    match key {
        "router" => "[router]",
        "interface" => "[[interface]]",
        "wccp" => "[wccp]",
        "steering" => "[steering]",
        "nat" => "[nat]",
        "ha" => "[ha]",
        "cluster" => "[cluster]",
        _ => "[[route]]",
    }
}

/// The words between backticks in `s`, in order.
pub(crate) fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// The known key closest to a misspelt `key`: same after '_' → '-' and lowercasing, or within
/// edit distance 2 (and less than its length, so "a" does not suggest "id").
pub(crate) fn suggest<'k>(key: &str, keys: &[&'k str]) -> Option<&'k str> {
    let norm = key.to_ascii_lowercase().replace('_', "-");
    keys.iter()
        .map(|k| (if **k == norm { 0 } else { distance(&norm, k) }, *k))
        .filter(|(d, _)| *d <= 2 && *d < key.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance between `a` and `b`, in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(distance("workerz", "workers"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("log_level", ROUTER_KEYS), Some("log-level"));
        assert_eq!(suggest("Workers", ROUTER_KEYS), Some("workers"));
        assert_eq!(suggest("interfaces", TOP_KEYS), Some("interface"));
        assert_eq!(suggest("gateway", ROUTE_KEYS), None);
        assert_eq!(suggest("a", ROUTER_KEYS), None);
    }

    #[test]
    fn serde_message_shapes_are_recognised() {
        // The three shapes of serde's `OneOf` (one, two, many) must all map to a section.
        assert_eq!(
            explain("unknown field `x`, expected one of `prefix`, `via`, `interface`").as_deref(),
            Some("unknown key `x` in [[route]]; expected one of: prefix, via, interface")
        );
        assert_eq!(explain("unknown field `x`, expected `a` or `b`"), None);
        assert_eq!(
            explain("invalid type: integer `5`, expected a string"),
            None
        );
        assert_eq!(explain("missing field `weird`"), None);
    }
}
