//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Accumulators are plain `u64` one's-complement sums: add with [`sum`] and [`pseudo_header`],
//! then [`fold`] to 16 bits. A checksum field holds the complement of the folded sum, and a
//! message verifies when its folded sum (checksum included) is `0xffff`.

/// Adds `data` as big-endian 16-bit words to a one's-complement accumulator, padding an odd final
/// octet with zero (RFC 1071 §4.1).
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    // 8 bytes at a time into a 64-bit accumulator; carries go end-around, so any length and any
    // incoming accumulator fit without overflow.
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc = add(acc, w);
    }
    let rest = chunks.remainder();
    // At most four words: their sum cannot overflow, only adding it to `acc` can.
    let mut tail = 0u64;
    let mut i = 0;
    while i + 1 < rest.len() {
        tail += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        tail += u64::from(rest[i]) << 8;
    }
    add(acc, tail)
}

/// One's-complement addition: the carry out of bit 63 comes back in at bit 0.
#[inline(always)]
fn add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    // On overflow s <= u64::MAX - 1, so adding the carry cannot overflow again.
    s + u64::from(carry)
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
    acc + u64::from(protocol) + u64::from(l4_len)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit field changed from `old` to `new`.
///
/// Equal to a full recomputation except when every other covered word is zero: then this gives
/// `0x0000` where the full sum gives `0xffff`; both verify.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!check) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

/// The new checksum after a 32-bit field (an IPv4 address) changed from `old` to `new`.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    update_bytes(check, &old.to_be_bytes(), &new.to_be_bytes())
}

/// The new checksum after the octets `old` were replaced by `new`.
///
/// Both must have the same length and start on a 16-bit boundary of the checksummed data (an odd
/// length is then padded with zero, like the data itself); other inputs give a wrong checksum,
/// never a panic.
#[inline]
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    // ~m over several words is the sum of each word's complement, so fold(old) stands in for m.
    let acc = u64::from(!check) + u64::from(!fold(sum(0, old))) + u64::from(fold(sum(0, new)));
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn all_ones_does_not_overflow() {
        // A full 8-byte chunk of ones leaves the accumulator at u64::MAX; the tail must carry.
        let data = [0xff; 14];
        assert_eq!(fold(sum(0, &data)), 0xffff);
        assert_eq!(fold(sum(u64::MAX, &[0xff, 0xff])), 0xffff);
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

    #[test]
    fn update32_changes_an_address() {
        let mut h = [
            0x45, 0x00, 0x00, 0x54, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 0xac, 0x10,
            0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c,
        ];
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let inc = update32(c, 0xac10_0a63, 0x0a00_0001);
        h[12..16].copy_from_slice(&[10, 0, 0, 1]);
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc, checksum(&h));
    }

    /// Random data of even length with a word that is never zero, so the one case where
    /// incremental and full results differ (+0 against −0) cannot come up.
    fn data_and_change() -> impl Strategy<Value = (Vec<u8>, usize, Vec<u8>)> {
        (1usize..100).prop_flat_map(|words| {
            (
                proptest::collection::vec(any::<u8>(), words * 2),
                0..words,
                proptest::collection::vec(any::<u8>(), 2..=6),
            )
        })
    }

    proptest! {
        #[test]
        fn chunked_sum_equals_wordwise(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut acc = 0u64;
            for pair in data.chunks(2) {
                let w = if pair.len() == 2 { u16::from_be_bytes([pair[0], pair[1]]) } else { u16::from(pair[0]) << 8 };
                acc += u64::from(w);
            }
            prop_assert_eq!(fold(sum(0, &data)), fold(acc));
        }

        #[test]
        fn sum_is_split_invariant(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..150, seed in any::<u64>()) {
            // Splitting at an even offset must not matter, whatever the incoming accumulator.
            let cut = (cut * 2).min(data.len() & !1);
            let whole = fold(sum(seed, &data));
            let split = fold(sum(sum(seed, &data[..cut]), &data[cut..]));
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn update_bytes_equals_full_recompute((mut data, word, new) in data_and_change(), marker in 1u16..) {
            // Layout: [marker word][checksum word][data]; the field starts at an even offset.
            let mut msg = marker.to_be_bytes().to_vec();
            msg.extend_from_slice(&[0, 0]);
            msg.append(&mut data);
            let at = 4 + word * 2;
            let end = (at + new.len()).min(msg.len());
            let new = &new[..end - at];
            let c = checksum(&msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
            let old = msg[at..end].to_vec();
            let inc = update_bytes(c, &old, new);
            msg[at..end].copy_from_slice(new);
            msg[2..4].copy_from_slice(&[0, 0]);
            prop_assert_eq!(inc, checksum(&msg));
        }

        #[test]
        fn update16_and_update32_equal_full_recompute(mut data in proptest::array::uniform20(any::<u8>()), a in any::<u16>(), b in any::<u32>()) {
            data[0] = 0x45;
            data[10..12].copy_from_slice(&[0, 0]);
            let c = checksum(&data);
            let c16 = update16(c, u16::from_be_bytes([data[4], data[5]]), a);
            data[4..6].copy_from_slice(&a.to_be_bytes());
            prop_assert_eq!(c16, checksum(&data));
            let old = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
            let c32 = update32(c16, old, b);
            data[12..16].copy_from_slice(&b.to_be_bytes());
            prop_assert_eq!(c32, checksum(&data));
        }
    }
}
