//! Hash assignment on the router: the bucket index function (reference §6.1), the bucket
//! table lookup with the alternate hash (§6.1 steps 3–4, §6.2), and the 256-bit bucket bitmap
//! of identity elements with its two bit orders (§6.3).

use core::net::Ipv4Addr;

use crate::wire::{BucketEntry, ServiceFlags, BUCKETS};

/// The packet fields WCCP hashes and masks on; ports are 0 when the packet has none (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source IPv4 address.
    pub src_ip: Ipv4Addr,
    /// Destination IPv4 address.
    pub dst_ip: Ipv4Addr,
    /// Source port (0 for non-TCP/UDP).
    pub src_port: u16,
    /// Destination port (0 for non-TCP/UDP).
    pub dst_port: u16,
}

impl FlowKey {
    /// A key from its four fields.
    pub const fn new(src_ip: Ipv4Addr, dst_ip: Ipv4Addr, src_port: u16, dst_port: u16) -> Self {
        Self {
            src_ip,
            dst_ip,
            src_port,
            dst_port,
        }
    }
}

/// XOR of the fields selected by the four *primary* flag bits (0x1 src IP, 0x2 dst IP,
/// 0x4 src port, 0x8 dst port); ports are zero-extended (§6.1 step 1).
fn xor_fields(select: u32, key: &FlowKey) -> u32 {
    let mut k = 0u32;
    if select & ServiceFlags::SRC_IP_HASH.bits() != 0 {
        k ^= u32::from(key.src_ip);
    }
    if select & ServiceFlags::DST_IP_HASH.bits() != 0 {
        k ^= u32::from(key.dst_ip);
    }
    if select & ServiceFlags::SRC_PORT_HASH.bits() != 0 {
        k ^= u32::from(key.src_port);
    }
    if select & ServiceFlags::DST_PORT_HASH.bits() != 0 {
        k ^= u32::from(key.dst_port);
    }
    k
}

/// The primary hash key: XOR of the fields whose primary flag is set (§6.1 step 1).
pub fn primary_key(flags: ServiceFlags, key: &FlowKey) -> u32 {
    xor_fields(flags.bits(), key)
}

/// The alternate hash key: the same XOR over the alternate flags 0x0100..0x0800 (§6.1 step 4).
pub fn alternate_key(flags: ServiceFlags, key: &FlowKey) -> u32 {
    // The alternate bits are the primary bits shifted left by 8.
    xor_fields(flags.bits() >> 8, key)
}

/// Folds a key to a bucket index: `h ^= h >> 16; h ^= h >> 8; h & 0xFF` (§6.1 step 2), which
/// equals the XOR of all four octets.
pub const fn fold(key: u32) -> u8 {
    let h = key ^ (key >> 16);
    let h = h ^ (h >> 8);
    h.to_be_bytes()[3]
}

/// Primary bucket index of a packet.
pub fn primary_bucket(flags: ServiceFlags, key: &FlowKey) -> u8 {
    fold(primary_key(flags, key))
}

/// Alternate bucket index of a packet.
pub fn alternate_bucket(flags: ServiceFlags, key: &FlowKey) -> u8 {
    fold(alternate_key(flags, key))
}

/// Result of looking a packet up in a 256-bucket table (§6.1 steps 3–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketLookup {
    /// Primary bucket index (always computed).
    pub primary_bucket: u8,
    /// Alternate bucket index, when the primary bucket had the A flag.
    pub alternate_bucket: Option<u8>,
    /// Cache index to redirect to; `None` = forward normally (a 0xFF bucket).
    pub cache_index: Option<u8>,
}

impl BucketLookup {
    /// True when the alternate bucket decided the outcome (the redirect header's A flag, §8).
    pub fn used_alternate(&self) -> bool {
        self.alternate_bucket.is_some()
    }
}

/// Looks a packet up in a bucket table: primary bucket; if its A flag is set, the alternate
/// bucket decides and *its* A flag is ignored (§6.1 step 4); 0xFF forwards normally.
pub fn lookup(buckets: &[u8; BUCKETS], flags: ServiceFlags, key: &FlowKey) -> BucketLookup {
    let primary = primary_bucket(flags, key);
    match BucketEntry::from_octet(buckets[usize::from(primary)]) {
        BucketEntry::Unassigned => BucketLookup {
            primary_bucket: primary,
            alternate_bucket: None,
            cache_index: None,
        },
        BucketEntry::Cache {
            index,
            alternate: false,
        } => BucketLookup {
            primary_bucket: primary,
            alternate_bucket: None,
            cache_index: Some(index),
        },
        BucketEntry::Cache {
            alternate: true, ..
        } => {
            let alt = alternate_bucket(flags, key);
            let cache_index = match BucketEntry::from_octet(buckets[usize::from(alt)]) {
                BucketEntry::Unassigned => None,
                BucketEntry::Cache { index, .. } => Some(index),
            };
            BucketLookup {
                primary_bucket: primary,
                alternate_bucket: Some(alt),
                cache_index,
            }
        }
    }
}

/// Bit order of the 256-bit bucket bitmap (§6.3; which one IOS uses is UNCONFIRMED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BitOrder {
    /// Wireshark and ATS: bucket N ↔ octet N/8, mask `1 << (N % 8)`.
    LsbFirst,
    /// Fits Cisco deployments (ProxySG output): bucket N ↔ octet N/8, mask `0x80 >> (N % 8)`.
    /// The reference recommends emitting this towards Cisco, hence the default.
    #[default]
    MsbFirst,
}

impl BitOrder {
    /// The other order.
    pub const fn other(self) -> Self {
        match self {
            Self::LsbFirst => Self::MsbFirst,
            Self::MsbFirst => Self::LsbFirst,
        }
    }

    /// Octet index and bit mask of `bucket`.
    const fn position(self, bucket: u8) -> (usize, u8) {
        let octet = (bucket / 8) as usize;
        let bit = bucket % 8;
        match self {
            Self::LsbFirst => (octet, 1 << bit),
            Self::MsbFirst => (octet, 0x80 >> bit),
        }
    }
}

/// The 32-octet bucket bitmap of a hash identity element, kept as raw octets; the bit order
/// is chosen when reading or writing buckets, so both orders are accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BucketBitmap(pub [u8; 32]);

impl BucketBitmap {
    /// No bucket set.
    pub const EMPTY: Self = Self([0; 32]);

    /// A bitmap holding `buckets`, written in `order`.
    pub fn from_buckets(buckets: impl IntoIterator<Item = u8>, order: BitOrder) -> Self {
        let mut map = Self::EMPTY;
        for b in buckets {
            map.insert(b, order);
        }
        map
    }

    /// The buckets of cache `index` in a bucket table (A flag ignored), written in `order`.
    pub fn for_cache(table: &[u8; BUCKETS], index: u8, order: BitOrder) -> Self {
        let owned = (0..=255u8).filter(|b| {
            matches!(BucketEntry::from_octet(table[usize::from(*b)]),
                BucketEntry::Cache { index: i, .. } if i == index)
        });
        Self::from_buckets(owned, order)
    }

    /// True when `bucket` is set under `order`.
    pub fn contains(&self, bucket: u8, order: BitOrder) -> bool {
        let (octet, mask) = order.position(bucket);
        self.0.get(octet).is_some_and(|o| o & mask != 0)
    }

    /// Sets `bucket` under `order`.
    pub fn insert(&mut self, bucket: u8, order: BitOrder) {
        let (octet, mask) = order.position(bucket);
        if let Some(o) = self.0.get_mut(octet) {
            *o |= mask;
        }
    }

    /// The set buckets under `order`, ascending.
    pub fn buckets(&self, order: BitOrder) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(move |b| self.contains(*b, order))
    }

    /// Number of set buckets (the same in both orders).
    pub fn count(&self) -> u32 {
        self.0.iter().map(|o| o.count_ones()).sum()
    }

    /// Which order makes this bitmap equal to the expected bucket set: `preferred` if it
    /// matches, else the other order if that matches, else `None`. Use it to accept a
    /// router's report in either order (§6.3).
    pub fn matching_order(
        &self,
        expected: &Self,
        expected_order: BitOrder,
        preferred: BitOrder,
    ) -> Option<BitOrder> {
        [preferred, preferred.other()].into_iter().find(|order| {
            (0..=255u8).all(|b| self.contains(b, *order) == expected.contains(b, expected_order))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> FlowKey {
        FlowKey::new(Ipv4Addr::from(src), Ipv4Addr::from(dst), sport, dport)
    }

    /// Reference §6.1 test vectors: (flags, key, expected key, expected bucket).
    #[test]
    fn reference_vectors() {
        let cases = [
            (
                0x0002,
                key([10, 1, 1, 1], [192, 0, 2, 10], 40000, 80),
                0xc000_020a,
                200,
            ),
            (
                0x0001,
                key([192, 168, 100, 5], [203, 0, 113, 7], 51515, 443),
                0xc0a8_6405,
                9,
            ),
            (
                0x0003,
                key([192, 168, 100, 5], [203, 0, 113, 7], 51515, 443),
                0x0ba8_1502,
                180,
            ),
            (
                0x000a,
                key([10, 0, 0, 1], [198, 51, 100, 20], 1025, 8080),
                0xc633_7b84,
                10,
            ),
            (
                0x000f,
                key([172, 16, 5, 4], [93, 184, 216, 34], 33000, 80),
                0xf1a8_5d9e,
                154,
            ),
        ];
        for (flags, k, expected_key, bucket) in cases {
            let flags = ServiceFlags(flags);
            assert_eq!(primary_key(flags, &k), expected_key, "flags {flags:?}");
            assert_eq!(primary_bucket(flags, &k), bucket, "flags {flags:?}");
        }
        // 0x0102: primary dst → 200, alternate src 0xC0A8014D → 36.
        let flags = ServiceFlags(0x0102);
        let k = key([192, 168, 1, 77], [192, 0, 2, 10], 0, 0);
        assert_eq!(primary_bucket(flags, &k), 200);
        assert_eq!(alternate_key(flags, &k), 0xc0a8_014d);
        assert_eq!(alternate_bucket(flags, &k), 36);
    }

    #[test]
    fn fold_is_the_xor_of_all_octets() {
        for k in [0u32, 1, 0xdead_beef, 0xffff_ffff, 0x0102_0304] {
            let o = k.to_be_bytes();
            assert_eq!(fold(k), o[0] ^ o[1] ^ o[2] ^ o[3]);
        }
    }

    /// Every primary × alternate flag combination (16 × 16) follows the XOR rule.
    #[test]
    fn all_flag_combinations() {
        let k = key([172, 16, 5, 4], [93, 184, 216, 34], 33000, 80);
        let fields = [
            u32::from(k.src_ip),
            u32::from(k.dst_ip),
            u32::from(k.src_port),
            u32::from(k.dst_port),
        ];
        let expect = |bits: u32| {
            fields
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .fold(0, |a, (_, f)| a ^ f)
        };
        for primary in 0..16u32 {
            for alt in 0..16u32 {
                let flags = ServiceFlags(primary | alt << 8);
                assert_eq!(primary_key(flags, &k), expect(primary));
                assert_eq!(alternate_key(flags, &k), expect(alt));
            }
        }
    }

    #[test]
    fn lookup_follows_the_alternate_flag_once() {
        let flags = ServiceFlags(0x0102);
        let k = key([192, 168, 1, 77], [192, 0, 2, 10], 0, 0);
        let mut table = [0xffu8; BUCKETS];
        assert_eq!(lookup(&table, flags, &k).cache_index, None);
        table[200] = 0x01;
        assert_eq!(
            lookup(&table, flags, &k),
            BucketLookup {
                primary_bucket: 200,
                alternate_bucket: None,
                cache_index: Some(1)
            }
        );
        table[200] = 0x81; // A flag: go to bucket 36.
        assert_eq!(lookup(&table, flags, &k).cache_index, None);
        table[36] = 0x82; // the secondary A flag is ignored.
        let l = lookup(&table, flags, &k);
        assert_eq!(
            l,
            BucketLookup {
                primary_bucket: 200,
                alternate_bucket: Some(36),
                cache_index: Some(2)
            }
        );
        assert!(l.used_alternate());
    }

    /// Reference §6.3: buckets {0, 1, 9, 255} in both orders, and the ProxySG check.
    #[test]
    fn bitmap_orders() {
        let lsb = BucketBitmap::from_buckets([0, 1, 9, 255], BitOrder::LsbFirst);
        let mut expected = [0u8; 32];
        expected[0] = 0x03;
        expected[1] = 0x02;
        expected[31] = 0x80;
        assert_eq!(lsb.0, expected);
        let msb = BucketBitmap::from_buckets([0, 1, 9, 255], BitOrder::MsbFirst);
        let mut expected = [0u8; 32];
        expected[0] = 0xc0;
        expected[1] = 0x40;
        expected[31] = 0x01;
        assert_eq!(msb.0, expected);
        assert_eq!(
            msb.buckets(BitOrder::MsbFirst).collect::<Vec<_>>(),
            vec![0, 1, 9, 255]
        );
        let proxysg = BucketBitmap::from_buckets(85..=169, BitOrder::MsbFirst);
        assert_eq!(proxysg.0[10], 0x07);
        assert_eq!(proxysg.0[21], 0xc0);
        assert_eq!(proxysg.count(), 85);
        // Both orders accepted: a report in LSB order still matches what we expect.
        assert_eq!(
            lsb.matching_order(&msb, BitOrder::MsbFirst, BitOrder::MsbFirst),
            Some(BitOrder::LsbFirst)
        );
        assert_eq!(
            msb.matching_order(&msb, BitOrder::MsbFirst, BitOrder::MsbFirst),
            Some(BitOrder::MsbFirst)
        );
        assert_eq!(
            BucketBitmap::EMPTY.matching_order(&msb, BitOrder::MsbFirst, BitOrder::LsbFirst),
            None
        );
    }

    #[test]
    fn bitmap_for_cache_ignores_the_alternate_flag() {
        let mut table = [0xffu8; BUCKETS];
        table[3] = 0x01;
        table[4] = 0x81;
        table[5] = 0x02;
        let map = BucketBitmap::for_cache(&table, 1, BitOrder::LsbFirst);
        assert_eq!(
            map.buckets(BitOrder::LsbFirst).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }
}
