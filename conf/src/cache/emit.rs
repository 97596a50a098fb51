//! [`CacheConf`] → TOML text: the effective cache.conf, every default written out, in a fixed
//! key order (the router.conf counterpart is `crate::emit`).

use std::fmt::Write as _;

use super::CacheConf;
use crate::emit::quote;
use crate::wccp::{emit_definition, method_list};

/// The effective configuration as TOML; see [`CacheConf::to_toml`].
pub(crate) fn to_toml(c: &CacheConf) -> String {
    let mut out = String::new();
    // `write!` into a String cannot fail; the results are discarded for that reason.
    let list = |v: Vec<String>| v.iter().map(|x| quote(x)).collect::<Vec<_>>().join(", ");
    out.push_str("# swcache effective configuration (defaults filled in)\n\n[cache]\n");
    if let Some(a) = c.address {
        let _ = writeln!(out, "address = {}", quote(&a.to_string()));
    }
    let _ = writeln!(out, "gre-only = {}", c.gre_only);
    let _ = writeln!(out, "tun = {}", quote(&c.tun));
    if let Some(s) = &c.socket {
        let _ = writeln!(out, "socket = {}", quote(&s.to_string_lossy()));
    }
    let _ = writeln!(out, "log-level = {}", quote(c.log_level.as_str()));
    let _ = writeln!(
        out,
        "bypass = [{}]",
        list(c.bypass.iter().map(|p| p.to_string()).collect())
    );
    let _ = writeln!(
        out,
        "return-rewrite = [{}]",
        list(c.return_rewrite.iter().map(|r| r.to_string()).collect())
    );
    if let Some(copy) = &c.return_copy {
        let _ = writeln!(out, "return-copy = {}", quote(&copy.to_string()));
    }
    out.push_str("\n[wccp]\n");
    let _ = writeln!(
        out,
        "routers = [{}]",
        list(c.routers.iter().map(|r| r.to_string()).collect())
    );
    if let Some(g) = c.multicast_group {
        let _ = writeln!(out, "multicast-group = {}", quote(&g.to_string()));
    }
    let _ = writeln!(out, "weight = {}", c.weight);
    let _ = writeln!(out, "forwarding = [{}]", method_list(&c.forwarding, quote));
    let _ = writeln!(out, "return = [{}]", method_list(&c.packet_return, quote));
    let _ = writeln!(out, "assignment = [{}]", method_list(&c.assignment, quote));
    let _ = writeln!(out, "transmit-timer-ms = {}", c.transmit_timer_ms);
    let _ = writeln!(out, "timeout-scale = {}", c.timeout_scale);
    let _ = writeln!(out, "ra-timer-scale = {}", c.ra_timer_scale);
    for s in &c.services {
        out.push_str("\n[[wccp.service]]\n");
        let _ = writeln!(out, "id = {}", s.service.service_id);
        if let Some(p) = &s.password {
            let _ = writeln!(out, "password = {}", quote(p));
        }
        if s.service.service_type == wccp::wire::ServiceType::Dynamic {
            emit_definition(&mut out, &s.service, quote);
        }
    }
    out
}
