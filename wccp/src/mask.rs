//! Mask assignment on the router: matching packets against Mask/Value sets (reference §7.2)
//! and the Value Sequence Numbers of alternate mask/value sets (§7.4).

use core::net::Ipv4Addr;

use crate::hash::FlowKey;
use crate::wire::{AltMaskValueSet, MaskElement, MaskValueSet, ValueElement};

/// A packet's fields after masking: what value elements are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskedKey {
    /// Source IP & mask.
    pub src_ip: u32,
    /// Destination IP & mask.
    pub dst_ip: u32,
    /// Source port & mask.
    pub src_port: u16,
    /// Destination port & mask.
    pub dst_port: u16,
}

/// Applies a mask to a packet's fields (§7.2; ports are 0 when the packet has none).
pub fn apply(mask: &MaskElement, key: &FlowKey) -> MaskedKey {
    MaskedKey {
        src_ip: u32::from(key.src_ip) & mask.src_ip,
        dst_ip: u32::from(key.dst_ip) & mask.dst_ip,
        src_port: key.src_port & mask.src_port,
        dst_port: key.dst_port & mask.dst_port,
    }
}

/// True when all four masked fields equal the value element's fields.
pub fn value_matches(value: &ValueElement, masked: &MaskedKey) -> bool {
    value.src_ip == masked.src_ip
        && value.dst_ip == masked.dst_ip
        && value.src_port == masked.src_port
        && value.dst_port == masked.dst_port
}

/// Where a packet matched: set and value positions, and the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskMatch {
    /// Index of the matching mask/value set.
    pub set: usize,
    /// Index of the matching value element inside that set.
    pub value: usize,
    /// The cache to redirect to.
    pub cache_ip: Ipv4Addr,
}

/// Matches a packet against mask/value sets in order; the first equal value element wins,
/// `None` = forward normally (§7.2).
pub fn lookup(sets: &[MaskValueSet], key: &FlowKey) -> Option<MaskMatch> {
    sets.iter().enumerate().find_map(|(set, s)| {
        let masked = apply(&s.mask, key);
        s.values
            .iter()
            .position(|v| value_matches(v, &masked))
            .and_then(|value| {
                s.values.get(value).map(|v| MaskMatch {
                    set,
                    value,
                    cache_ip: v.cache_ip,
                })
            })
    })
}

/// The mask bits in VSN order (§7.4): dst port, src port, dst IP, src IP, each from its least
/// significant bit up. Yields (field, bit position) with field 0..3 in that order.
fn vsn_bits(mask: &MaskElement) -> impl Iterator<Item = (usize, u32)> + '_ {
    let fields = [
        u32::from(mask.dst_port),
        u32::from(mask.src_port),
        mask.dst_ip,
        mask.src_ip,
    ];
    fields.into_iter().enumerate().flat_map(|(f, m)| {
        (0..32u32)
            .filter(move |b| m & (1 << b) != 0)
            .map(move |b| (f, b))
    })
}

/// Value Sequence Number of a packet under a mask (§7.4): the i-th set mask bit becomes VSN
/// bit i. Masks with more than 32 bits are truncated to their first 32 (VSNs are u32).
pub fn vsn(mask: &MaskElement, key: &FlowKey) -> u32 {
    let m = apply(mask, key);
    let fields = [
        u32::from(m.dst_port),
        u32::from(m.src_port),
        m.dst_ip,
        m.src_ip,
    ];
    vsn_bits(mask)
        .take(32)
        .enumerate()
        .filter(|(_, (f, b))| fields.get(*f).is_some_and(|v| v & (1 << b) != 0))
        .fold(0u32, |acc, (i, _)| acc | (1 << i))
}

/// The masked values that correspond to a VSN (inverse of [`vsn`]); listing VSN 0, 1, 2, …
/// gives the values in ascending numeric order, as Squid lists them (§7.3, §7.4).
pub fn value_for_vsn(mask: &MaskElement, vsn: u32) -> MaskedKey {
    let mut fields = [0u32; 4];
    for (i, (f, b)) in vsn_bits(mask).take(32).enumerate() {
        if vsn & (1 << i) != 0 {
            if let Some(v) = fields.get_mut(f) {
                *v |= 1 << b;
            }
        }
    }
    let [dst_port, src_port, dst_ip, src_ip] = fields;
    MaskedKey {
        src_ip,
        dst_ip,
        // The port fields only ever receive bits of 16-bit masks.
        src_port: u16::try_from(src_port).unwrap_or(u16::MAX),
        dst_port: u16::try_from(dst_port).unwrap_or(u16::MAX),
    }
}

/// Matches a packet against alternate mask/value sets: the first set whose mask yields a VSN
/// listed for some cache decides (§7.4; a VSN is listed for at most one cache).
pub fn lookup_alt(sets: &[AltMaskValueSet], key: &FlowKey) -> Option<(usize, Ipv4Addr)> {
    sets.iter().enumerate().find_map(|(set, s)| {
        let n = vsn(&s.mask, key);
        s.caches
            .iter()
            .find(|c| c.vsns.contains(&n))
            .map(|c| (set, c.cache_ip))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WebCacheValueElement;

    fn key(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> FlowKey {
        FlowKey::new(Ipv4Addr::from(src), Ipv4Addr::from(dst), sport, dport)
    }

    /// Squid's mask: dst-IP 0x1741 (6 bits, 64 values).
    const SQUID: MaskElement = MaskElement {
        src_ip: 0,
        dst_ip: 0x1741,
        src_port: 0,
        dst_port: 0,
    };

    /// Reference §7.5, first example: dst 192.168.100.5 → masked 0x401 → VSN 17.
    #[test]
    fn squid_mask_example() {
        let k = key([10, 0, 0, 9], [192, 168, 100, 5], 40000, 80);
        assert_eq!(apply(&SQUID, &k).dst_ip, 0x0000_0401);
        assert_eq!(vsn(&SQUID, &k), 17);
        let firsts: Vec<u32> = (0..8).map(|v| value_for_vsn(&SQUID, v).dst_ip).collect();
        assert_eq!(
            firsts,
            vec![0x0, 0x1, 0x40, 0x41, 0x100, 0x101, 0x140, 0x141]
        );
        // Squid lists the 64 values ascending, value k → cache k mod n; with 2 caches
        // VSN 17 is the second cache.
        let caches = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)];
        let set = MaskValueSet {
            mask: SQUID,
            values: (0..64u32)
                .map(|v| {
                    let m = value_for_vsn(&SQUID, v);
                    ValueElement {
                        src_ip: m.src_ip,
                        dst_ip: m.dst_ip,
                        src_port: m.src_port,
                        dst_port: m.dst_port,
                        cache_ip: caches[(v % 2) as usize],
                    }
                })
                .collect(),
        };
        let hit = lookup(std::slice::from_ref(&set), &k).unwrap();
        assert_eq!(
            hit,
            MaskMatch {
                set: 0,
                value: 17,
                cache_ip: caches[1]
            }
        );
        for w in set.values.windows(2) {
            assert!(w[0].dst_ip < w[1].dst_ip, "ascending order");
        }
    }

    /// Reference §7.5, \[R1\] example: src 0x100, dst 0x3, dst-port 0x1 → VSN 13.
    #[test]
    fn r1_vsn_example() {
        let mask = MaskElement {
            src_ip: 0x100,
            dst_ip: 0x3,
            src_port: 0,
            dst_port: 0x1,
        };
        let k = key([10, 0, 1, 9], [10, 0, 0, 2], 1234, 81);
        let m = apply(&mask, &k);
        assert_eq!(
            (m.src_ip, m.dst_ip, m.src_port, m.dst_port),
            (0x100, 0x2, 0, 1)
        );
        assert_eq!(vsn(&mask, &k), 13);
        assert_eq!(value_for_vsn(&mask, 13), m);
        let sets = [AltMaskValueSet {
            mask,
            caches: vec![
                WebCacheValueElement {
                    cache_ip: Ipv4Addr::new(10, 0, 0, 7),
                    vsns: vec![1, 2],
                },
                WebCacheValueElement {
                    cache_ip: Ipv4Addr::new(10, 0, 0, 8),
                    vsns: vec![13],
                },
            ],
        }];
        assert_eq!(lookup_alt(&sets, &k), Some((0, Ipv4Addr::new(10, 0, 0, 8))));
    }

    #[test]
    fn no_match_forwards_normally() {
        let set = MaskValueSet {
            mask: SQUID,
            values: vec![ValueElement {
                src_ip: 0,
                dst_ip: 0x1,
                src_port: 0,
                dst_port: 0,
                cache_ip: Ipv4Addr::new(10, 0, 0, 2),
            }],
        };
        let k = key([10, 0, 0, 9], [192, 168, 100, 4], 1, 2);
        assert_eq!(lookup(&[set], &k), None);
        assert_eq!(lookup(&[], &k), None);
    }
}
