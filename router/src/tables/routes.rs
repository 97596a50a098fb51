//! Longest-prefix-match routing table.
//!
//! Lookups read a 16-8-8 multibit trie with prefixes expanded (after DIR-24-8, Gupta et al.,
//! with a smaller first level): the top 16 bits of the destination index a 65,536-entry table
//! whose entry is the route, or a 256-entry block for the next 8 bits, and so on. A lookup is
//! one to three loads and no comparison loop, whatever the number of routes; the first level
//! is 256 KiB, each /16 holding longer prefixes adds 1 KiB and each /24 holding longer ones
//! another 1 KiB.

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
    /// The expanded trie the lookups read.
    trie: Trie,
    /// Per interface, in interface order: our address and the prefix's directed broadcast (the
    /// address again for /31 and /32, which have none). Kept here, beside the connected
    /// routes built from the same interfaces, so the two never disagree.
    own: Vec<(u32, u32)>,
    /// One bit per address of `own`, by [`own_bit`]: an address whose
    /// bit is clear is certainly not ours, which spares forwarded packets the scan.
    own_bits: u64,
}

/// The bit of `a` in [`RouteTable::may_be_own`]'s filter.
#[inline(always)]
fn own_bit(a: u32) -> u64 {
    1 << (a.wrapping_mul(0x9e37_79b9) >> 26)
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
        let trie = Trie::build(&routes);
        let own: Vec<(u32, u32)> = ifaces
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
        let own_bits = own
            .iter()
            .fold(0, |bits, &(a, b)| bits | own_bit(a) | own_bit(b));
        Ok(RouteTable {
            routes,
            trie,
            own,
            own_bits,
        })
    }

    /// The most specific route to `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        let i = self.trie.lookup(u32::from(dst))?;
        self.routes.get(i)
    }

    /// False when `a` is certainly none of [`RouteTable::own_addresses`] nor the limited
    /// broadcast (one multiply and a bit test).
    #[inline(always)]
    pub fn may_be_own(&self, a: u32) -> bool {
        a == u32::MAX || self.own_bits & own_bit(a) != 0
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

/// A trie entry with this bit names a child block; without it, the route index + 1 (0: none).
const CHILD: u32 = 1 << 31;
/// Entries of a second- or third-level block (8 bits of the address).
const BLOCK: usize = 256;

/// The 16-8-8 trie: every entry holds the longest route covering it (prefix expansion).
#[derive(Debug, Clone)]
struct Trie {
    /// Indexed by the top 16 bits.
    top: Box<[u32]>,
    /// 256-entry blocks for bits 15..8, one per /16 holding a longer prefix.
    mid: Vec<u32>,
    /// 256-entry blocks for bits 7..0, one per /24 holding a longer prefix.
    low: Vec<u32>,
}

impl Default for Trie {
    fn default() -> Self {
        Trie {
            top: vec![0; 1 << 16].into_boxed_slice(),
            mid: Vec::new(),
            low: Vec::new(),
        }
    }
}

impl Trie {
    /// Expands `routes` (indices into it become entries), shortest prefixes first so that a
    /// longer prefix overwrites the shorter ones it refines.
    fn build(routes: &[Route]) -> Trie {
        let mut t = Trie::default();
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| routes.get(i).map_or(0, |r| r.len));
        for i in order {
            let Some(r) = routes.get(i) else { continue };
            let Ok(value) = u32::try_from(i + 1) else {
                continue;
            };
            let len = u32::from(r.len.min(32));
            if value & CHILD != 0 {
                continue;
            }
            let prefix = u32::from(r.prefix) & prefix_mask(r.len);
            if len <= 16 {
                let start = (prefix >> 16) as usize;
                let n = 1usize << (16 - len);
                fill(&mut t.top, start, n, value);
                continue;
            }
            let mid = t.child(Level::Top, (prefix >> 16) as usize);
            let mid_at = mid * BLOCK + ((prefix >> 8) & 0xff) as usize;
            if len <= 24 {
                fill(&mut t.mid, mid_at, 1usize << (24 - len), value);
                continue;
            }
            let low = t.child(Level::Mid, mid_at);
            let low_at = low * BLOCK + (prefix & 0xff) as usize;
            fill(&mut t.low, low_at, 1usize << (32 - len), value);
        }
        t
    }

    /// The block under entry `at` of `level`, created (inheriting the entry's route) if needed.
    fn child(&mut self, level: Level, at: usize) -> usize {
        let (table, next) = match level {
            Level::Top => (&mut self.top[..], &mut self.mid),
            Level::Mid => (&mut self.mid[..], &mut self.low),
        };
        let Some(e) = table.get_mut(at) else {
            return 0;
        };
        if *e & CHILD != 0 {
            return (*e & !CHILD) as usize;
        }
        let block = next.len() / BLOCK;
        next.resize(next.len() + BLOCK, *e);
        *e = CHILD | block as u32;
        block
    }

    /// The index of the longest route covering `d`.
    #[inline]
    fn lookup(&self, d: u32) -> Option<usize> {
        let mut e = *self.top.get((d >> 16) as usize)?;
        if e & CHILD != 0 {
            e = *self
                .mid
                .get((e & !CHILD) as usize * BLOCK + ((d >> 8) & 0xff) as usize)?;
            if e & CHILD != 0 {
                e = *self
                    .low
                    .get((e & !CHILD) as usize * BLOCK + (d & 0xff) as usize)?;
            }
        }
        (e as usize).checked_sub(1)
    }
}

/// Which level a child block hangs from.
enum Level {
    Top,
    Mid,
}

/// Sets `n` entries from `start` to `value`.
fn fill(table: &mut [u32], start: usize, n: usize, value: u32) {
    if let Some(s) = table.get_mut(start..start + n) {
        s.fill(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::MacAddr;

    fn iface(id: IfId, name: &str, addr: [u8; 4], len: u8) -> Iface {
        Iface {
            id,
            name: name.into(),
            ifindex: id as u32 + 1,
            mac: MacAddr([2, 0, 0, 0, 0, id as u8]),
            addr: addr.into(),
            prefix_len: len,
            mtu: 1500,
            backend: conf::IoBackend::Pnet,
            redirect_in: Vec::new(),
            redirect_out: Vec::new(),
            exclude_in: false,
            wccp_caches: true,
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

        /// Nested prefixes of one base address (every trie level, blocks inheriting shorter
        /// routes) and destinations inside them agree with the linear scan.
        #[test]
        fn nested_prefixes_agree_with_linear_scan(
            base in proptest::num::u32::ANY,
            lens in proptest::collection::vec(0u8..=32, 1..12),
            flips in proptest::collection::vec(proptest::num::u32::ANY, 1..12),
            host in proptest::num::u32::ANY,
            pick in 0usize..12,
        ) {
            let ifs = [iface(0, "eth0", [10, 0, 1, 1], 24)];
            // Each prefix is the base with a few low bits flipped: siblings and nested ones.
            let statics: Vec<_> = lens
                .iter()
                .zip(flips.iter().cycle())
                .map(|(&l, &f)| (Ipv4Addr::from(base ^ (f & 0x0001_0101)), l, Ipv4Addr::new(10, 0, 1, 2), None))
                .collect();
            let t = RouteTable::build(&ifs, &statics).unwrap();
            let (p, l, _, _) = statics[pick % statics.len()];
            let d = Ipv4Addr::from((u32::from(p) & prefix_mask(l)) | (host & !prefix_mask(l)));
            let best = t.routes().iter().filter(|r| u32::from(d) & prefix_mask(r.len) == u32::from(r.prefix)).map(|r| r.len).max();
            proptest::prop_assert_eq!(t.lookup(d).map(|r| r.len), best);
        }
    }
}
