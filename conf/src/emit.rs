//! [`RouterConf`] → TOML text: the effective configuration, every default written out.
//!
//! Written by hand rather than through `toml::to_string` so the output has a fixed key order and
//! layout (diffable between `swrouter check` runs) and cannot fail.

use std::fmt::Write as _;

use crate::{Ipv4Network, RouterConf};

/// The effective configuration as TOML; see [`RouterConf::to_toml`].
pub(crate) fn to_toml(conf: &RouterConf) -> String {
    let mut out = String::new();
    // `write!` into a String cannot fail; the results are discarded for that reason.
    let r = &conf.router;
    out.push_str("# swrouter effective configuration (defaults filled in)\n\n[router]\n");
    let _ = writeln!(out, "id = {}", quote(&r.id.to_string()));
    let _ = writeln!(out, "workers = {}", r.workers);
    let _ = writeln!(
        out,
        "management-socket = {}",
        quote(&r.management_socket.to_string_lossy())
    );
    if let Some(g) = &r.management_group {
        let _ = writeln!(out, "management-group = {}", quote(g));
    }
    let _ = writeln!(out, "log-level = {}", quote(r.log_level.as_str()));
    let _ = writeln!(out, "io-backend = {}", quote(r.io_backend.as_str()));
    if let Some(a) = &r.metrics_listen {
        let _ = writeln!(out, "metrics-listen = {}", quote(&a.to_string()));
    }
    for i in &conf.interfaces {
        out.push_str("\n[[interface]]\n");
        let _ = writeln!(out, "name = {}", quote(&i.name));
        // `address` carries our address and the prefix length together, as the operator wrote it.
        let cidr = Ipv4Network::new(i.address, i.network.prefix()).unwrap_or(i.network);
        let _ = writeln!(out, "address = {}", quote(&cidr.to_string()));
        if let Some(mac) = i.mac {
            let _ = writeln!(out, "mac = {}", quote(&mac.to_string()));
        }
        let _ = writeln!(out, "mtu = {}", i.mtu);
        let _ = writeln!(out, "io-backend = {}", quote(i.io_backend.as_str()));
        if !i.wccp_redirect_in.is_empty() {
            let ids: Vec<String> = i.wccp_redirect_in.iter().map(|id| id.to_string()).collect();
            let _ = writeln!(out, "wccp-redirect-in = [{}]", ids.join(", "));
        }
        if !i.wccp_redirect_out.is_empty() {
            let ids: Vec<String> = i
                .wccp_redirect_out
                .iter()
                .map(|id| id.to_string())
                .collect();
            let _ = writeln!(out, "wccp-redirect-out = [{}]", ids.join(", "));
        }
        if i.wccp_exclude_in {
            out.push_str("wccp-exclude-in = true\n");
        }
        // Written only where it differs from its default, which depends on the lists above.
        if i.wccp_caches != (i.wccp_redirect_in.is_empty() && i.wccp_redirect_out.is_empty()) {
            let _ = writeln!(out, "wccp-caches = {}", i.wccp_caches);
        }
    }
    crate::wccp::emit(&mut out, &conf.wccp_options, &conf.wccp, quote);
    for route in &conf.routes {
        out.push_str("\n[[route]]\n");
        let _ = writeln!(out, "prefix = {}", quote(&route.prefix.to_string()));
        let _ = writeln!(out, "via = {}", quote(&route.via.to_string()));
        if let Some(name) = &route.interface {
            let _ = writeln!(out, "interface = {}", quote(name));
        }
    }
    crate::steering::emit(&mut out, &conf.steering, &conf.interfaces);
    crate::nat::emit(&mut out, &conf.nat, &conf.interfaces, quote);
    crate::ha::emit(&mut out, &conf.ha, quote);
    crate::cluster::emit(&mut out, conf.cluster.as_ref(), quote);
    out
}

/// `s` as a one-line TOML basic string, escaping what TOML requires (quote, backslash, controls).
pub(crate) fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_through_toml() {
        for s in [
            "plain",
            "a\"b",
            "back\\slash",
            "tab\tnl\ncr\r",
            "bell\u{7}del\u{7f}",
            "é ünï",
        ] {
            let doc = format!("k = {}", quote(s));
            let table: toml::Table = toml::from_str(&doc).unwrap();
            assert_eq!(table["k"].as_str(), Some(s), "{doc}");
            assert!(!quote(s).contains('\n'));
        }
    }
}
