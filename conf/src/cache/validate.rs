//! Raw cache.conf → [`CacheConf`]: parse each value, fill defaults, check values against each
//! other. Checks run in file order (`[cache]`, then `[wccp]`, then each service) and stop at the
//! first error, which points at the offending value.

use std::net::Ipv4Addr;

use toml::Spanned;
use wccp::engine::{AssignmentMethod, ForwardingMethod, ReturnMethod};

use super::raw::{RawCache, RawCacheFile, RawCacheService, RawCacheWccp};
use super::{CacheConf, CacheServiceConf, DEFAULT_WEIGHT};
use crate::error::Locator;
use crate::validate::{bad_ifname, socket_path};
use crate::wccp::{definition, methods, password, service_id, DefinitionKeys};
use crate::{ConfError, Ipv4Network};

type Result<T> = std::result::Result<T, ConfError>;

/// An example status socket path for messages.
const EXAMPLE_SOCKET: &str = "/run/swcache.sock";

/// Validates the whole file.
pub(crate) fn validate(at: &Locator<'_>, raw: RawCacheFile) -> Result<CacheConf> {
    let d = CacheConf::default();
    let c = raw.cache.unwrap_or_default();
    let w = raw.wccp.unwrap_or_default();
    let address = c
        .address
        .as_ref()
        .map(|a| unicast(at, a, "address"))
        .transpose()?;
    let tun = match &c.tun {
        None => d.tun,
        Some(t) => {
            if let Some(msg) = bad_ifname(t.get_ref()) {
                return Err(at.err(&t.span(), format!("tun: {msg}")));
            }
            t.get_ref().clone()
        }
    };
    let socket = c
        .socket
        .as_ref()
        .map(|s| {
            socket_path(
                s.get_ref(),
                "socket",
                EXAMPLE_SOCKET,
                "leave `socket` out for no status socket",
            )
            .map_err(|m| at.err(&s.span(), m))
        })
        .transpose()?;
    let log_level = match &c.log_level {
        None => d.log_level,
        Some(s) => s
            .get_ref()
            .parse()
            .map_err(|e| at.err(&s.span(), format!("{e}")))?,
    };
    let bypass = bypass(at, &c)?;
    let mut return_rewrite: Vec<super::ReturnRewrite> = Vec::new();
    for v in c.return_rewrite.iter().flatten() {
        let r: super::ReturnRewrite = v
            .get_ref()
            .parse()
            .map_err(|e: String| at.err(&v.span(), format!("return-rewrite: {e}")))?;
        if return_rewrite.iter().any(|x| x.prefix == r.prefix) {
            return Err(at.err(
                &v.span(),
                format!(
                    "return-rewrite: {} is rewritten twice; keep one entry per prefix",
                    r.prefix
                ),
            ));
        }
        return_rewrite.push(r);
    }
    let return_copy = c
        .return_copy
        .as_ref()
        .map(|v| {
            v.get_ref()
                .parse::<super::ReturnCopy>()
                .map_err(|e| at.err(&v.span(), format!("return-copy: {e}")))
        })
        .transpose()?;
    let routers = routers(at, &w)?;
    let multicast_group = crate::wccp::multicast_group(at, w.multicast_group.as_ref())?;
    let weight = match &w.weight {
        None => DEFAULT_WEIGHT,
        Some(n) => u16::try_from(n.get_ref().0).map_err(|_| {
            at.err(
                &n.span(),
                format!(
                    "weight = {} is out of range; expected 0..=65535 (default {DEFAULT_WEIGHT})",
                    n.get_ref().0
                ),
            )
        })?,
    };
    let forwarding = methods(at, &w.forwarding, "forwarding", vec![ForwardingMethod::Gre])?;
    let packet_return = methods(at, &w.return_methods, "return", vec![ReturnMethod::Gre])?;
    let assignment = methods(
        at,
        &w.assignment,
        "assignment",
        vec![AssignmentMethod::Hash],
    )?;
    let (t_lo, t_hi) = wccp::timer::ACCEPTED_TRANSMIT_MS;
    let (s_lo, s_hi) = wccp::timer::ACCEPTED_SCALES;
    let transmit_timer_ms = ranged(
        at,
        &w.transmit_timer_ms,
        "transmit-timer-ms",
        (t_lo.into(), t_hi.into()),
        d.transmit_timer_ms.into(),
    )?;
    let timeout_scale = ranged(
        at,
        &w.timeout_scale,
        "timeout-scale",
        (s_lo.into(), s_hi.into()),
        d.timeout_scale.into(),
    )?;
    let ra_timer_scale = ranged(
        at,
        &w.ra_timer_scale,
        "ra-timer-scale",
        (s_lo.into(), s_hi.into()),
        d.ra_timer_scale.into(),
    )?;
    let services = services(at, &w.service)?;
    Ok(CacheConf {
        address,
        gre_only: c.gre_only.map(|b| *b.get_ref()).unwrap_or(d.gre_only),
        tun,
        socket,
        log_level,
        bypass,
        return_rewrite,
        return_copy,
        routers,
        multicast_group,
        weight,
        forwarding,
        packet_return,
        assignment,
        // The ranges checked above fit the narrower types.
        transmit_timer_ms: u16::try_from(transmit_timer_ms).unwrap_or(d.transmit_timer_ms),
        timeout_scale: u8::try_from(timeout_scale).unwrap_or(d.timeout_scale),
        ra_timer_scale: u8::try_from(ra_timer_scale).unwrap_or(d.ra_timer_scale),
        services: if services.is_empty() {
            d.services
        } else {
            services
        },
    })
}

/// An integer `key` within `lo..=hi` (the ranges routers accept, \[R1\]), else `default`.
fn ranged(
    at: &Locator<'_>,
    v: &Option<Spanned<crate::raw::Int>>,
    key: &str,
    (lo, hi): (i64, i64),
    default: i64,
) -> Result<i64> {
    match v {
        None => Ok(default),
        Some(n) if (lo..=hi).contains(&n.get_ref().0) => Ok(n.get_ref().0),
        Some(n) => Err(at.err(
            &n.span(),
            format!(
                "{key} = {} is out of range; expected {lo}..={hi} (default {default}; routers accept no other values)",
                n.get_ref().0
            ),
        )),
    }
}

/// A unicast IPv4 address given as `key` (a cache's identity, a router to join).
fn unicast(at: &Locator<'_>, v: &Spanned<String>, key: &str) -> Result<Ipv4Addr> {
    let s = v.get_ref();
    let ip: Ipv4Addr = s.parse().map_err(|_| {
        at.err(
            &v.span(),
            format!("`{s}` in `{key}` is not an IPv4 address"),
        )
    })?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(at.err(
            &v.span(),
            format!("`{s}` in `{key}` is not a unicast address another host can reach"),
        ));
    }
    Ok(ip)
}

/// `bypass`: prefixes (`10.0.2.0/24`) or addresses (a /32), host bits zero.
fn bypass(at: &Locator<'_>, c: &RawCache) -> Result<Vec<Ipv4Network>> {
    let mut out: Vec<Ipv4Network> = Vec::new();
    for v in c.bypass.iter().flatten() {
        let n = crate::validate::prefix_or_address(at, v, "bypass", "10.0.2.0/24")?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// `routers`: unicast addresses, each once.
fn routers(at: &Locator<'_>, w: &RawCacheWccp) -> Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    for v in w.routers.iter().flatten() {
        let ip = unicast(at, v, "routers")?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// Every `[[wccp.service]]`: ids valid and unique, passwords in range, and a definition for
/// every dynamic service (a cache announces it; routers learn it from the first cache).
fn services(at: &Locator<'_>, raw: &[Spanned<RawCacheService>]) -> Result<Vec<CacheServiceConf>> {
    let mut out: Vec<(CacheServiceConf, usize)> = Vec::new();
    for table in raw {
        let r = table.get_ref();
        let id = service_id(at, &r.id)?;
        if let Some((_, prev)) = out.iter().find(|(s, _)| s.service.service_id == id) {
            return Err(at.err(
                &r.id.span(),
                format!("WCCP service {id} is already defined at line {prev}"),
            ));
        }
        let keys = DefinitionKeys {
            protocol: &r.protocol,
            priority: &r.priority,
            ports: &r.ports,
            port_type: &r.port_type,
            hash: &r.hash,
            alternate_hash: &r.alternate_hash,
        };
        let service = match definition(at, &keys, id)? {
            Some(d) => d,
            None if id == 0 => wccp::wire::ServiceInfo::standard(0),
            None => {
                return Err(at.err(
                    &r.id.span(),
                    format!("dynamic service {id} needs its definition: at least `protocol` (and usually `ports`); the cache announces it and the routers learn it"),
                ))
            }
        };
        out.push((
            CacheServiceConf {
                service,
                password: password(at, r.password.as_ref())?,
            },
            at.line_of(table.span().start),
        ));
    }
    Ok(out.into_iter().map(|(s, _)| s).collect())
}
