//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// Adds `data` as big-endian 16-bit words to a 32-bit one's-complement accumulator.
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    // 8 bytes at a time into a 64-bit accumulator; carries are folded at the end.
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = acc.overflowing_add(w);
        acc = s + carry as u64;
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u16::from_be_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if i < rest.len() {
        acc += (rest[i] as u64) << 8;
    }
    acc
}

/// Folds an accumulator to 16 bits (not complemented).
#[inline]
pub fn fold(acc: u64) -> u16 {
    // 64 → 33 → 17 → 16 bits: each step's carry fits in the next, without a data-dependent loop.
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    ((acc & 0xffff) + (acc >> 16)) as u16
}

/// The checksum field value for `data` (complement of the folded sum).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// One's-complement sum of the IPv4 pseudo header used by TCP and UDP.
#[inline]
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u64 {
    let mut acc = sum(0, &src);
    acc = sum(acc, &dst);
    acc + protocol as u64 + l4_len as u64
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit field changed from `old` to `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let acc = (!check) as u64 + (!old) as u64 + new as u64;
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        // An IPv4 header; decrement TTL and compare incremental vs full.
        let mut h = [
            0x45, 0x00, 0x00, 0x54, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 0xac, 0x10,
            0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c,
        ];
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        for _ in 0..64 {
            let old = u16::from_be_bytes([h[8], h[9]]);
            h[8] -= 1;
            let new = u16::from_be_bytes([h[8], h[9]]);
            let inc = update16(u16::from_be_bytes([h[10], h[11]]), old, new);
            h[10..12].copy_from_slice(&[0, 0]);
            let full = checksum(&h);
            assert_eq!(inc, full);
            h[10..12].copy_from_slice(&inc.to_be_bytes());
            assert_eq!(checksum(&h), 0);
        }
    }

    proptest::proptest! {
        #[test]
        fn chunked_sum_equals_wordwise(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut acc = 0u64;
            for pair in data.chunks(2) {
                let w = if pair.len() == 2 { u16::from_be_bytes([pair[0], pair[1]]) } else { (pair[0] as u16) << 8 };
                acc += w as u64;
            }
            proptest::prop_assert_eq!(fold(sum(0, &data)), fold(acc));
        }
    }
}
