//! The Internet checksum (RFC 1071), which RFC 2784 §2.5 uses for the optional GRE checksum.

/// Adds `data` as big-endian 16-bit words into a 32-bit accumulator, padding an odd final octet
/// with a zero octet on the right (RFC 1071 §4.1).
///
/// The accumulator is folded as it goes, so any length fits without overflow.
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    // Fold any incoming carries first so a caller's large accumulator cannot overflow below.
    acc = (acc & 0xffff) + (acc >> 16);
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        acc += u32::from(u16::from_be_bytes([word[0], word[1]]));
        // Fold early: after one add the high half is at most 1, so this keeps acc below 2^17.
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Folds the carries of an accumulator from [`sum`] back into 16 bits (end-around carry).
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves acc <= 0xffff, so the cast loses nothing.
    acc as u16
}

/// The checksum to store: the one's complement of the one's-complement sum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 worked example: words 0001 f203 f4f5 f6f7 sum to 0xddf2 (with carry).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn odd_length_pads_right() {
        // A lone 0xab counts as the word 0xab00.
        assert_eq!(fold(sum(0, &[0xab])), 0xab00);
        assert_eq!(fold(sum(0, &[0x12, 0x34, 0xab])), 0x1234 + 0xab00);
    }

    #[test]
    fn empty_and_carry() {
        assert_eq!(checksum(&[]), 0xffff);
        // 0xffff + 0xffff = 0x1fffe → end-around carry → 0xffff.
        assert_eq!(fold(sum(0, &[0xff, 0xff, 0xff, 0xff])), 0xffff);
    }

    #[test]
    fn data_plus_checksum_sums_to_all_ones() {
        let mut data = vec![0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x00, 0x00, 0x40, 0x06];
        let c = checksum(&data);
        data.extend_from_slice(&c.to_be_bytes());
        assert_eq!(fold(sum(0, &data)), 0xffff);
    }
}
