//! Property tests of the assignment algorithms (ARCHITECTURE §7): every bucket or mask value
//! lands on exactly one of the given caches, shares follow the weights to within one slot,
//! and movement from any previous assignment is the minimum the new quotas allow.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use wccp::assign::{
    assign_hash, assign_mask, default_mask, Assignment, BucketOwners, CacheTarget, ValueOwners,
    WeightedCache,
};
use wccp::engine::{ForwardingMethod, ReturnMethod};
use wccp::hash::FlowKey;
use wccp::wire::{AssignmentKey, ServiceInfo, BUCKETS};

/// Up to 32 caches from a small address pool (so that sets overlap), weights 0..=u16::MAX.
fn caches() -> impl Strategy<Value = Vec<WeightedCache>> {
    btree_map(0u8..48, any::<u16>(), 1..=32).prop_map(|m| {
        m.into_iter()
            .map(|(i, weight)| WeightedCache {
                address: Ipv4Addr::new(10, 0, 0, i),
                weight,
            })
            .collect()
    })
}

/// Arbitrary previous owners from the same pool (some gone, some new, some unassigned).
fn previous() -> impl Strategy<Value = BucketOwners> {
    vec(proptest::option::of(0u8..48), BUCKETS).prop_map(|v| {
        let mut owners = BucketOwners::NONE;
        for (slot, o) in owners.0.iter_mut().zip(v) {
            *slot = o.map(|i| Ipv4Addr::new(10, 0, 0, i));
        }
        owners
    })
}

/// The ideal share of each cache (all weights 0 = equal).
fn ideal(caches: &[WeightedCache], slots: usize) -> BTreeMap<Ipv4Addr, f64> {
    let all_zero = caches.iter().all(|c| c.weight == 0);
    let w = |c: &WeightedCache| if all_zero { 1.0 } else { f64::from(c.weight) };
    let total: f64 = caches.iter().map(w).sum();
    caches
        .iter()
        .map(|c| (c.address, slots as f64 * w(c) / total))
        .collect()
}

proptest! {
    #[test]
    fn hash_shares_follow_weights_and_cover_every_bucket(cs in caches(), prev in previous()) {
        let table = assign_hash(&cs, &prev).unwrap();
        let owners = BucketOwners::from_table(&table);
        prop_assert_eq!(owners.unassigned(), 0);
        let counts = owners.counts();
        for (addr, want) in ideal(&cs, BUCKETS) {
            let got = counts.get(&addr).copied().unwrap_or(0) as f64;
            prop_assert!((got - want).abs() < 1.0, "{} has {} buckets, ideal {}", addr, got, want);
        }
        // Minimal movement: a bucket moves only if its owner is gone or over its new quota.
        let mut kept: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        let mut must_move = 0;
        for o in prev.0.iter() {
            match o.filter(|a| counts.contains_key(a)) {
                Some(a) if kept.get(&a).copied().unwrap_or(0) < counts[&a] => {
                    *kept.entry(a).or_insert(0) += 1;
                }
                _ => must_move += 1,
            }
        }
        prop_assert_eq!(owners.moved_from(&prev), must_move);
    }

    #[test]
    fn mask_values_follow_weights_and_move_minimally(cs in caches(), seed in any::<u64>()) {
        let mask = default_mask(&ServiceInfo::standard(0));
        let prev_sets = assign_mask(&cs[..cs.len() / 2], &mask, 7, &ValueOwners::default()).unwrap();
        let prev = ValueOwners::from_sets(&prev_sets, &mask);
        let sets = assign_mask(&cs, &mask, 7, &prev).unwrap();
        let owners = ValueOwners::from_sets(&sets, &mask);
        prop_assert_eq!(owners.0.len(), 64);
        prop_assert!(owners.0.iter().all(Option::is_some));
        let counts = owners.counts();
        for (addr, want) in ideal(&cs, 64) {
            let got = counts.get(&addr).copied().unwrap_or(0) as f64;
            prop_assert!((got - want).abs() < 1.0);
        }
        // The compiled table agrees with linear matching (§7.2) on arbitrary packets.
        let target = |address| Some(CacheTarget {
            address,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            forwarding: ForwardingMethod::Gre,
            packet_return: ReturnMethod::Gre,
        });
        let (a, dropped) = Assignment::mask(ServiceInfo::standard(0), AssignmentKey::NONE, &sets, target);
        prop_assert_eq!(dropped, 0);
        a.check_invariants().unwrap();
        let mut x = seed;
        for _ in 0..64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let flow = FlowKey::new(
                Ipv4Addr::from((x >> 32) as u32),
                Ipv4Addr::from(x as u32),
                (x >> 16) as u16,
                (x >> 48) as u16,
            );
            let linear = wccp::mask::lookup(&sets, &flow).map(|m| m.cache_ip);
            prop_assert_eq!(a.lookup(&flow).map(|t| t.address), linear);
        }
    }
}
