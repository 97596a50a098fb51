//! Longest-prefix-match routing table.
//!
//! Routes are grouped by prefix length, longest first; each group is a sorted vector searched by
//! binary search. With the handful of distinct lengths a router table has, a lookup is a few
//! binary searches and no allocation.

use super::{prefix_mask, IfId, Iface};
use std::net::Ipv4Addr;

/// Where a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// The prefix of one of our interfaces.
    Connected,
    /// A `[[route]]` from the config.
    Static,
}

/// One installed route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Network address (host bits zero).
    pub prefix: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
    /// Egress interface.
    pub out_if: IfId,
    /// Gateway; `None` for connected routes (the destination itself is the next hop).
    pub via: Option<Ipv4Addr>,
    /// Connected or static.
    pub kind: RouteKind,
}

/// Why a static route could not be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The named interface does not exist.
    #[error("route {prefix}/{len}: unknown interface {name:?}")]
    UnknownInterface {
        /// Route prefix.
        prefix: Ipv4Addr,
        /// Route length.
        len: u8,
        /// Interface name given.
        name: String,
    },
    /// No connected prefix holds the gateway.
    #[error("route {prefix}/{len}: gateway {via} is not on a connected network")]
    GatewayUnreachable {
        /// Route prefix.
        prefix: Ipv4Addr,
        /// Route length.
        len: u8,
        /// Gateway.
        via: Ipv4Addr,
    },
}

/// The LPM table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// All routes, for status.
    routes: Vec<Route>,
    /// (length, sorted (masked prefix, index into `routes`)), longest length first.
    by_len: Vec<(u8, Vec<(u32, usize)>)>,
    /// Per interface, in interface order: our address and the prefix's directed broadcast (the
    /// address again for /31 and /32, which have none). Kept here, beside the connected
    /// routes built from the same interfaces, so the two never disagree.
    own: Vec<(u32, u32)>,
}

impl RouteTable {
    /// Builds the table from connected prefixes plus static routes `(prefix, len, via, interface)`.
    ///
    /// A static route for the same prefix as a connected one loses to it (connected routes win, as
    /// administrative distance 0 does elsewhere).
    pub fn build(
        ifaces: &[Iface],
        statics: &[(Ipv4Addr, u8, Ipv4Addr, Option<String>)],
    ) -> Result<RouteTable, RouteError> {
        let mut routes = Vec::new();
        for i in ifaces {
            routes.push(Route {
                prefix: Ipv4Addr::from(u32::from(i.addr) & i.mask()),
                len: i.prefix_len,
                out_if: i.id,
                via: None,
                kind: RouteKind::Connected,
            });
        }
        for (prefix, len, via, name) in statics {
            let (prefix, len, via) = (*prefix, *len, *via);
            let out_if = match name {
                Some(n) => {
                    let i = ifaces.iter().find(|i| &i.name == n).ok_or_else(|| {
                        RouteError::UnknownInterface {
                            prefix,
                            len,
                            name: n.clone(),
                        }
                    })?;
                    if !i.contains(via) {
                        return Err(RouteError::GatewayUnreachable { prefix, len, via });
                    }
                    i.id
                }
                None => {
                    ifaces
                        .iter()
                        .find(|i| i.contains(via))
                        .ok_or(RouteError::GatewayUnreachable { prefix, len, via })?
                        .id
                }
            };
            let masked = Ipv4Addr::from(u32::from(prefix) & prefix_mask(len));
            if routes
                .iter()
                .any(|r: &Route| r.prefix == masked && r.len == len)
            {
                continue;
            }
            routes.push(Route {
                prefix: masked,
                len,
                out_if,
                via: Some(via),
                kind: RouteKind::Static,
            });
        }
        let mut by_len: Vec<(u8, Vec<(u32, usize)>)> = Vec::new();
        for (idx, r) in routes.iter().enumerate() {
            let key = u32::from(r.prefix);
            match by_len.iter_mut().find(|(l, _)| *l == r.len) {
                Some((_, v)) => v.push((key, idx)),
                None => by_len.push((r.len, vec![(key, idx)])),
            }
        }
        by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        for (_, v) in &mut by_len {
            v.sort_unstable();
        }
        let own = ifaces
            .iter()
            .map(|i| {
                let addr = u32::from(i.addr);
                let bcast = if i.prefix_len < 31 {
                    addr | !i.mask()
                } else {
                    addr
                };
                (addr, bcast)
            })
            .collect();
        Ok(RouteTable {
            routes,
            by_len,
            own,
        })
    }

    /// The most specific route to `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        let d = u32::from(dst);
        for (len, v) in &self.by_len {
            let key = d & prefix_mask(*len);
            if let Ok(pos) = v.binary_search_by_key(&key, |(k, _)| *k) {
                return self.routes.get(v[pos].1);
            }
        }
        None
    }

    /// Our interface addresses and their directed broadcasts, in interface order.
    #[inline]
    pub fn own_addresses(&self) -> &[(u32, u32)] {
        &self.own
    }

    /// All routes, connected first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::Mac;

    fn iface(id: IfId, name: &str, addr: [u8; 4], len: u8) -> Iface {
        Iface {
            id,
            name: name.into(),
            ifindex: id as u32 + 1,
            mac: Mac([2, 0, 0, 0, 0, id as u8]),
            addr: addr.into(),
            prefix_len: len,
            mtu: 1500,
            backend: conf::IoBackend::Pnet,
            redirect_in: Vec::new(),
            redirect_out: Vec::new(),
            exclude_in: false,
        }
    }

    fn table() -> RouteTable {
        let ifs = [
            iface(0, "eth0", [10, 0, 1, 1], 24),
            iface(1, "eth1", [10, 0, 2, 1], 24),
        ];
        RouteTable::build(
            &ifs,
            &[
                ([0, 0, 0, 0].into(), 0, [10, 0, 2, 254].into(), None),
                ([192, 168, 0, 0].into(), 16, [10, 0, 1, 254].into(), None),
                (
                    [192, 168, 7, 0].into(),
                    24,
                    [10, 0, 2, 253].into(),
                    Some("eth1".into()),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table();
        let r = t.lookup([192, 168, 7, 9].into()).unwrap();
        assert_eq!((r.len, r.via), (24, Some([10, 0, 2, 253].into())));
        let r = t.lookup([192, 168, 8, 9].into()).unwrap();
        assert_eq!((r.len, r.out_if), (16, 0));
        let r = t.lookup([10, 0, 1, 77].into()).unwrap();
        assert_eq!((r.kind, r.via), (RouteKind::Connected, None));
        let r = t.lookup([8, 8, 8, 8].into()).unwrap();
        assert_eq!((r.len, r.out_if), (0, 1));
    }

    #[test]
    fn no_default_means_no_route() {
        let ifs = [iface(0, "eth0", [10, 0, 1, 1], 24)];
        let t = RouteTable::build(&ifs, &[]).unwrap();
        assert!(t.lookup([10, 0, 2, 1].into()).is_none());
        assert!(t.lookup([10, 0, 1, 0].into()).is_some());
    }

    #[test]
    fn unreachable_gateway_is_rejected() {
        let ifs = [iface(0, "eth0", [10, 0, 1, 1], 24)];
        let e = RouteTable::build(
            &ifs,
            &[([0, 0, 0, 0].into(), 0, [10, 9, 9, 9].into(), None)],
        )
        .unwrap_err();
        assert!(matches!(e, RouteError::GatewayUnreachable { .. }));
        let e = RouteTable::build(
            &ifs,
            &[(
                [0, 0, 0, 0].into(),
                0,
                [10, 0, 1, 9].into(),
                Some("eth7".into()),
            )],
        )
        .unwrap_err();
        assert!(matches!(e, RouteError::UnknownInterface { .. }));
    }

    proptest::proptest! {
        /// The table agrees with a linear scan for the longest matching prefix.
        #[test]
        fn agrees_with_linear_scan(dst in proptest::num::u32::ANY, extra in proptest::collection::vec((proptest::num::u32::ANY, 0u8..=32), 0..20)) {
            let ifs = [iface(0, "eth0", [10, 0, 1, 1], 24)];
            let statics: Vec<_> = extra.iter().map(|(p, l)| (Ipv4Addr::from(*p), *l, Ipv4Addr::new(10, 0, 1, 2), None)).collect();
            let t = RouteTable::build(&ifs, &statics).unwrap();
            let d = Ipv4Addr::from(dst);
            let best = t.routes().iter().filter(|r| u32::from(d) & prefix_mask(r.len) == u32::from(r.prefix)).map(|r| r.len).max();
            proptest::prop_assert_eq!(t.lookup(d).map(|r| r.len), best);
        }
    }
}
