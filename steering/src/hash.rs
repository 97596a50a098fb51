//! Hashing: a fast hasher for the tables' integer keys, the flow hash, and rendezvous scores.
//!
//! The seed's "search keys … to quickly access entries in internal hash tables" (Figure 18)
//! are here integer keys packed by `tables`; std's SipHash is built for untrusted string keys
//! and costs more than the rest of a lookup, so the tables use [`FastHasher`], a folded
//! multiply per 64-bit word. Keys are chosen by the operator's config, not by the network, so
//! hash flooding is not a concern for the maps; the packet fields only pick *which* entry is
//! read.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// An odd 64-bit multiplier with well spread bits (digits of π, nothing magic about them).
const K1: u64 = 0x243f_6a88_85a3_08d3;
/// A second multiplier for the final mix.
const K2: u64 = 0x1319_8a2e_0370_7345;

/// Multiplies into 128 bits and folds the halves: every input bit reaches every output bit.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a).wrapping_mul(u128::from(b));
    (full as u64) ^ ((full >> 64) as u64)
}

/// Hasher for small integer keys: one folded multiply per word written.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastHasher {
    state: u64,
}

impl FastHasher {
    #[inline(always)]
    fn add(&mut self, w: u64) {
        self.state = fold_mul(self.state ^ w, K1);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    #[inline]
    fn write_u128(&mut self, v: u128) {
        self.add(v as u64);
        self.add((v >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }
}

/// A std `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A strong 64 → 64 bit mix (two folded multiplies).
#[inline(always)]
pub(crate) fn mix(x: u64) -> u64 {
    fold_mul(fold_mul(x, K1) ^ K2, K2)
}

/// The flow hash pool selection uses.
///
/// It is computed from the *client* end and the *canonical service* end (the service address
/// and port before NAT or port translation), never from the packet's raw source and
/// destination: both directions of a flow, and both sides of a NAT rewrite, therefore hash
/// alike and pick the same device without keeping any state (seed: "TCP and IP stateless").
#[inline]
pub(crate) fn flow_hash(
    client: u32,
    client_port: u16,
    service: u32,
    service_port: u16,
    proto: u8,
) -> u64 {
    let a = (u64::from(client) << 32) | u64::from(service);
    let b = (u64::from(client_port) << 32) | (u64::from(service_port) << 16) | u64::from(proto);
    fold_mul(fold_mul(a ^ K2, K1) ^ b, K2)
}

/// The hash of the client address alone (the `ClientHash` policy: a client keeps its device
/// across connections, which dynamic ports negotiated on a control connection need).
#[inline]
pub(crate) fn client_hash(client: u32) -> u64 {
    mix(u64::from(client) ^ K2)
}

/// A device's rendezvous seed, from its name so that a reload which keeps a device keeps its
/// flows (indices may shift between configs, names do not).
pub(crate) fn name_seed(name: &str) -> u64 {
    let mut h = FastHasher::default();
    h.write(name.as_bytes());
    h.write_u64(name.len() as u64);
    mix(h.finish())
}

/// The hash a home-table bucket stands for in the rendezvous (see `tables::HOME_BUCKETS_LOG2`).
#[inline]
pub(crate) fn bucket_hash(bucket: u64) -> u64 {
    mix(bucket ^ 0x5bd1_e995_5bd1_e995)
}

/// Rendezvous (highest random weight) score of a member for a flow: one folded multiply, as
/// the flow hash and the seed are already well mixed (the balance and "only a removed member's
/// flows move" properties are measured in `tests/chains.rs`).
#[inline(always)]
pub(crate) fn hrw_score(flow: u64, seed: u64) -> u64 {
    fold_mul(flow ^ seed, K1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn hasher_spreads_sequential_keys() {
        // Packed keys differ in a few bits; the low bits (bucket index) must still differ.
        let b = BuildHasherDefault::<FastHasher>::default();
        let mut buckets = [0u32; 256];
        for i in 0u64..65_536 {
            let h = b.hash_one(i << 32 | 80);
            buckets[(h & 0xff) as usize] += 1;
        }
        let (min, max) = (
            buckets.iter().min().copied().unwrap(),
            buckets.iter().max().copied().unwrap(),
        );
        assert!(min > 160 && max < 360, "min {min} max {max}");
    }

    #[test]
    fn flow_hash_differs_per_field() {
        let base = flow_hash(1, 2, 3, 4, 6);
        assert_ne!(base, flow_hash(1, 2, 3, 4, 17));
        assert_ne!(base, flow_hash(1, 3, 3, 4, 6));
        assert_ne!(base, flow_hash(2, 2, 3, 4, 6));
        assert_ne!(name_seed("fw1"), name_seed("fw2"));
    }

    #[test]
    fn write_bytes_matches_length_sensitivity() {
        let mut a = FastHasher::default();
        a.write(b"abc");
        let mut b = FastHasher::default();
        b.write(b"abd");
        assert_ne!(a.finish(), b.finish());
    }
}
