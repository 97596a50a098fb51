//! A keyed, fast hasher for the session and flow tables' integer keys.
//!
//! std's SipHash costs about as much as the whole NAT fast path; the tables' keys are packed
//! integers, so one multiply-xorshift mix per word (the murmur3 finaliser) is enough. The key
//! comes from the caller (the router seeds it at random at start), so remote peers cannot
//! precompute colliding tuples; it is not a cryptographic PRF, so a determined attacker
//! observing timing could still degrade a bucket (documented limit).

use std::hash::{BuildHasher, Hasher};

/// Builds [`MixHasher`]s with a fixed key.
#[derive(Debug, Clone, Copy)]
pub struct MixState {
    key: u64,
}

impl MixState {
    /// A state keyed with `key`.
    pub fn new(key: u64) -> MixState {
        MixState { key }
    }
}

impl BuildHasher for MixState {
    type Hasher = MixHasher;
    #[inline]
    fn build_hasher(&self) -> MixHasher {
        MixHasher(self.key)
    }
}

/// The hasher: folds each written word into the state with a full-avalanche mix.
#[derive(Debug, Clone, Copy)]
pub struct MixHasher(u64);

/// The murmur3 finaliser: full avalanche of one word.
#[inline(always)]
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl Hasher for MixHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not used by the tables' integer keys; correct for any other use.
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = mix(self.0 ^ x);
    }
    #[inline]
    fn write_u128(&mut self, x: u128) {
        // One mix for both halves: the high half is spread by a multiply first, so keys that
        // differ in either half differ before the mix.
        let (lo, hi) = (x as u64, (x >> 64) as u64);
        self.write_u64(lo ^ hi.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31));
    }
}

/// splitmix64: the table's port-probe start and the simulation's RNG.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`; slight modulo bias is fine for these uses).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn keyed_and_spreading() {
        let a = MixState::new(1);
        let b = MixState::new(2);
        assert_ne!(a.hash_one(7u64), b.hash_one(7u64));
        assert_ne!(a.hash_one(7u64), a.hash_one(8u64));
        // Neighbouring keys (consecutive ports) land far apart in the low bits.
        let h: Vec<u64> = (0..64u64).map(|k| a.hash_one(k) & 63).collect();
        let mut d = h.clone();
        d.sort_unstable();
        d.dedup();
        assert!(d.len() > 30);
    }

    #[test]
    fn splitmix_reference() {
        // Reference values for seed 1234567 from the algorithm's published C version.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }
}
