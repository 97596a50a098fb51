//! The kernel's main IPv4 routing table, read from `/proc/net/route`: an L2 return is only sent
//! when the kernel would frame it to the router (see [`crate::bypass`]).

use conf::Ipv4Network;
use std::net::Ipv4Addr;

/// One IPv4 route of the kernel's main table (`/proc/net/route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRoute {
    /// Destination prefix.
    pub dst: Ipv4Network,
    /// Gateway, when the route is through one (RTF_GATEWAY).
    pub gateway: Option<Ipv4Addr>,
    /// Metric (lower wins between equal prefixes).
    pub metric: u32,
}

/// Parses `/proc/net/route` text (addresses as host-order hex of network-order words); lines
/// that do not parse, and routes that are not up, are skipped.
pub fn parse_proc_route(text: &str) -> Vec<KernelRoute> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let hex_addr = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dst = hex_addr(f.get(1)?)?;
            let gw = hex_addr(f.get(2)?)?;
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let metric = f.get(6)?.parse().ok()?;
            let mask = u32::from(hex_addr(f.get(7)?)?);
            if flags & RTF_UP == 0 || mask.leading_ones() + mask.trailing_zeros() != 32 {
                return None;
            }
            let len = mask.leading_ones() as u8;
            Some(KernelRoute {
                dst: Ipv4Network::new(Ipv4Addr::from(u32::from(dst) & mask), len).ok()?,
                gateway: (flags & RTF_GATEWAY != 0).then_some(gw),
                metric,
            })
        })
        .collect()
}

/// The gateway the kernel would send a packet for `dst` through (longest prefix, then lowest
/// metric), or `None` when the best route is on-link or there is none.
pub fn next_hop(routes: &[KernelRoute], dst: Ipv4Addr) -> Option<Ipv4Addr> {
    routes
        .iter()
        .filter(|r| r.dst.contains(dst))
        .min_by_key(|r| (std::cmp::Reverse(r.dst.prefix()), r.metric))
        .and_then(|r| r.gateway)
}

/// The kernel's main IPv4 routing table (empty if it cannot be read: L2 returns then fail
/// with `l2-router-not-next-hop`, counted).
pub fn read_routes() -> Vec<KernelRoute> {
    match std::fs::read_to_string("/proc/net/route") {
        Ok(text) => parse_proc_route(&text),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read /proc/net/route");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn routes_and_next_hops() {
        // A cache with a default route through 10.0.3.1 and 10.0.3.0/24 on-link.
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0103000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0003000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            garbage line\n";
        let routes = parse_proc_route(text);
        assert_eq!(routes.len(), 2);
        let router = Ipv4Addr::new(10, 0, 3, 1);
        assert_eq!(next_hop(&routes, Ipv4Addr::new(10, 0, 2, 3)), Some(router));
        assert_eq!(next_hop(&routes, Ipv4Addr::new(10, 0, 3, 9)), None);
        assert_eq!(next_hop(&[], Ipv4Addr::new(10, 0, 2, 3)), None);
    }

    #[test]
    fn routes_that_are_down_or_oddly_masked_are_skipped_and_metrics_break_ties() {
        let text = "header\n\
            eth0\t0002000A\t0103000A\t0002\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            eth0\t0002000A\t0F03000A\t0003\t0\t0\t0\t00FF00FF\t0\t0\t0\n\
            eth0\t0002000A\t0203000A\t0003\t0\t0\t20\t00FFFFFF\t0\t0\t0\n\
            eth1\t0002000A\t0304000A\t0003\t0\t0\t10\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_proc_route(text);
        assert_eq!(routes.len(), 2, "{routes:?}");
        assert_eq!(
            next_hop(&routes, Ipv4Addr::new(10, 0, 2, 7)),
            Some(Ipv4Addr::new(10, 0, 4, 3)),
            "the lower metric wins"
        );
    }
}
