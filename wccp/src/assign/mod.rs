//! Assignments: how the designated cache splits the traffic (reference §6.4, §7.3), and the
//! compiled [`Assignment`] a router's data plane looks packets up in.
//!
//! # Splitting with minimal movement
//!
//! Both methods share one rule ([`assign_hash`] over 256 buckets, [`assign_mask`] over the
//! 2^bits values of a mask): every usable cache gets a quota proportional to its weight
//! (largest remainder, ties to the lower address; all weights 0 = equal shares, as Squid
//! does), then
//! 1. every bucket stays with its previous owner while that owner is still present and under
//!    quota (an owner over quota keeps its lowest-numbered buckets);
//! 2. the freed buckets go, in ascending order, to the cache with the largest unfilled share
//!    of its quota, which interleaves a fresh assignment (0,1,2,0,1,2… for equal weights).
//!
//! A joining cache therefore takes exactly its quota and nothing else moves; a leaving cache's
//! buckets are the only ones that move (± rounding of the quotas). Squid and ATS recompute
//! from scratch instead (reference §6.4), which moves most buckets on every change.
//!
//! # Data plane
//!
//! [`Assignment`] (module `table`) is what the router installs (`Arc<Assignment>`): a
//! 256-octet bucket table or, for mask, one flat table per mask/value set indexed by the Value
//! Sequence Number (§7.4) of the masked packet fields, plus each cache's negotiated forwarding
//! and return method.

use core::net::Ipv4Addr;
use std::collections::BTreeMap;

use crate::hash::{BitOrder, BucketBitmap, FlowKey};
use crate::mask;
use crate::wire::{
    BucketEntry, HashBucketsAssignment, MaskElement, MaskValueSet, ServiceFlags, ServiceInfo,
    ValueElement, BUCKETS, BUCKET_UNASSIGNED,
};

mod table;

pub use table::{Assignment, CacheTarget, Redirect};

/// Most caches in one service group (reference §1: Cisco and ATS limit; bucket index 0–31).
pub const MAX_CACHES: usize = 32;

/// Cisco platform limit on the total mask bits of a set (reference §7.3), the default limit.
pub const DEFAULT_MASK_BITS: u32 = 7;

/// Hard limit on mask bits: 2^12 value elements (16 octets each) already fill most of a
/// WCCP message (Length is a u16), so wider masks cannot be sent anyway.
pub const MAX_MASK_BITS: u32 = 12;

/// Squid's and older WAAS's mask (reference §7.3): 6 bits, 64 values.
pub const SQUID_MASK_BITS: u32 = 0x1741;

/// Largest mask whose values a router indexes by VSN in a flat table (2^12 octets).
pub(crate) const FLAT_MASK_BITS: u32 = 12;

/// A usable cache and its assignment weight (opaque to routers, §3.12; Squid's default 10000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightedCache {
    /// Cache address.
    pub address: Ipv4Addr,
    /// Assignment Weight.
    pub weight: u16,
}

/// Why an assignment could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssignError {
    /// More than [`MAX_CACHES`] distinct caches.
    #[error("{0} caches cannot share one assignment (at most 32)")]
    TooManyCaches(usize),
    /// The mask has more bits than the configured (or hard) limit.
    #[error("the mask has {bits} bits, more than the limit of {limit}")]
    MaskTooWide {
        /// Bits set in the mask.
        bits: u32,
        /// The limit it exceeds.
        limit: u32,
    },
}

/// Each slot's cache quota: proportional to the weights by largest remainder, ties to the
/// lower index; all weights 0 count as equal.
fn quotas(slots: usize, weights: &[u32]) -> Vec<usize> {
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let all_zero = weights.iter().all(|w| *w == 0);
    let w: Vec<u64> = weights
        .iter()
        .map(|w| if all_zero { 1 } else { u64::from(*w) })
        .collect();
    let total: u64 = w.iter().sum::<u64>().max(1);
    let slots64 = u64::try_from(slots).unwrap_or(u64::MAX);
    let mut q: Vec<usize> = w
        .iter()
        .map(|wi| usize::try_from(slots64.saturating_mul(*wi) / total).unwrap_or(0))
        .collect();
    let mut rest = slots.saturating_sub(q.iter().sum());
    let mut order: Vec<usize> = (0..n).collect();
    let remainder = |i: usize| slots64.saturating_mul(w.get(i).copied().unwrap_or(0)) % total;
    order.sort_by(|a, b| remainder(*b).cmp(&remainder(*a)).then(a.cmp(b)));
    for i in order.into_iter().cycle().take(n.saturating_mul(2)) {
        if rest == 0 {
            break;
        }
        // Only caches with a non-zero weight (or all, when all are zero) take remainders.
        if w.get(i).copied().unwrap_or(0) > 0 {
            if let Some(slot) = q.get_mut(i) {
                *slot += 1;
                rest -= 1;
            }
        }
    }
    q
}

/// Splits `slots` over caches with `weights`, keeping each slot with its `previous` owner
/// (an index into `weights`) where the quotas allow (module docs). Every slot gets a cache
/// unless there are no caches.
///
/// Public because the router cluster (crate `cluster`) splits its 256 distribution ids over
/// nodes with the same exact-quota, minimal-movement rule.
pub fn distribute(slots: usize, weights: &[u32], previous: &[Option<usize>]) -> Vec<Option<usize>> {
    let q = quotas(slots, weights);
    let mut out = vec![None; slots];
    if q.is_empty() {
        return out;
    }
    let mut held = vec![0usize; q.len()];
    // Pass 1: keep what can be kept.
    for (slot, owner) in out.iter_mut().zip(previous) {
        let Some(c) = *owner else { continue };
        if let (Some(h), Some(quota)) = (held.get_mut(c), q.get(c)) {
            if *h < *quota {
                *h += 1;
                *slot = Some(c);
            }
        }
    }
    // Pass 2: hand out the rest to the cache with the largest unfilled share of its quota;
    // (q_a - h_a) / q_a > (q_b - h_b) / q_b compared by cross-multiplying.
    for slot in out.iter_mut().filter(|s| s.is_none()) {
        let mut best: Option<usize> = None;
        for c in 0..q.len() {
            let (qc, hc) = (q[c], held[c]);
            if hc >= qc {
                continue;
            }
            best = match best {
                None => Some(c),
                Some(b) => {
                    let (qb, hb) = (q[b], held[b]);
                    if (qc - hc) * qb > (qb - hb) * qc {
                        Some(c)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        if let Some(c) = best {
            held[c] += 1;
            *slot = Some(c);
        }
    }
    out
}

/// Caches sorted by address without duplicates (first weight wins), at most [`MAX_CACHES`].
fn sorted_caches(caches: &[WeightedCache]) -> Result<Vec<WeightedCache>, AssignError> {
    let mut by_addr: BTreeMap<Ipv4Addr, u16> = BTreeMap::new();
    for c in caches {
        by_addr.entry(c.address).or_insert(c.weight);
    }
    if by_addr.len() > MAX_CACHES {
        return Err(AssignError::TooManyCaches(by_addr.len()));
    }
    Ok(by_addr
        .into_iter()
        .map(|(address, weight)| WeightedCache { address, weight })
        .collect())
}

/// The owning cache of each of the 256 buckets (primary lookup, A flag ignored): the form in
/// which assignments are compared and handed from one computation to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketOwners(pub [Option<Ipv4Addr>; BUCKETS]);

impl Default for BucketOwners {
    fn default() -> Self {
        Self::NONE
    }
}

impl BucketOwners {
    /// No bucket owned.
    pub const NONE: Self = Self([None; BUCKETS]);

    /// Owners of a Hash Buckets Assignment (indexes outside the cache list own nothing).
    pub fn from_table(table: &HashBucketsAssignment) -> Self {
        let mut out = Self::NONE;
        for (slot, octet) in out.0.iter_mut().zip(table.buckets.iter()) {
            if let BucketEntry::Cache { index, .. } = BucketEntry::from_octet(*octet) {
                *slot = table.caches.get(usize::from(index)).copied();
            }
        }
        out
    }

    /// Owners as routers report them: each cache's bucket bitmap in a Router View (§3.5,
    /// §6.3); a bucket claimed twice keeps its first claimant.
    pub fn from_bitmaps<'a>(
        bitmaps: impl IntoIterator<Item = (Ipv4Addr, &'a BucketBitmap)>,
        order: BitOrder,
    ) -> Self {
        let mut out = Self::NONE;
        for (cache, map) in bitmaps {
            for b in map.buckets(order) {
                if let Some(slot) = out.0.get_mut(usize::from(b)) {
                    slot.get_or_insert(cache);
                }
            }
        }
        out
    }

    /// Buckets whose owner differs between `before` and `self` (a bucket that gains or loses
    /// its owner counts too).
    pub fn moved_from(&self, before: &Self) -> usize {
        self.0
            .iter()
            .zip(before.0.iter())
            .filter(|(a, b)| a != b)
            .count()
    }

    /// Buckets per owner.
    pub fn counts(&self) -> BTreeMap<Ipv4Addr, usize> {
        let mut out = BTreeMap::new();
        for c in self.0.iter().flatten() {
            *out.entry(*c).or_insert(0) += 1;
        }
        out
    }

    /// Buckets without owner.
    pub fn unassigned(&self) -> usize {
        self.0.iter().filter(|o| o.is_none()).count()
    }
}

/// Hash assignment by the designated cache: the 256 buckets over `caches` in proportion to
/// their weights, moving as few buckets away from `previous` as the new quotas allow. The
/// cache list is sorted by address; buckets carry plain indexes (no A flag, never 0xFF unless
/// `caches` is empty), as Squid writes them (§6.2).
pub fn assign_hash(
    caches: &[WeightedCache],
    previous: &BucketOwners,
) -> Result<HashBucketsAssignment, AssignError> {
    let caches = sorted_caches(caches)?;
    let index: BTreeMap<Ipv4Addr, usize> = caches
        .iter()
        .enumerate()
        .map(|(i, c)| (c.address, i))
        .collect();
    let prev: Vec<Option<usize>> = previous
        .0
        .iter()
        .map(|o| o.and_then(|a| index.get(&a).copied()))
        .collect();
    let weights: Vec<u32> = caches.iter().map(|c| u32::from(c.weight)).collect();
    let mut table = HashBucketsAssignment::unassigned(caches.iter().map(|c| c.address).collect());
    for (octet, owner) in table
        .buckets
        .iter_mut()
        .zip(distribute(BUCKETS, &weights, &prev))
    {
        *octet = owner
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(BUCKET_UNASSIGNED);
    }
    Ok(table)
}

/// The mask a designated cache uses by default (reference §7.3, as Squid): 0x1741 on the
/// field the service hashes on (src IP, else dst IP, else src port, else dst port; standard
/// services and services without hash flags use the dst IP).
pub fn default_mask(service: &ServiceInfo) -> MaskElement {
    let flags = service.effective_flags();
    let mut mask = MaskElement::default();
    // Both port masks fit u16: 0x1741 < 0x10000.
    let port_mask = u16::try_from(SQUID_MASK_BITS).unwrap_or(u16::MAX);
    if flags.contains(ServiceFlags::SRC_IP_HASH) {
        mask.src_ip = SQUID_MASK_BITS;
    } else if flags.contains(ServiceFlags::DST_IP_HASH) {
        mask.dst_ip = SQUID_MASK_BITS;
    } else if flags.contains(ServiceFlags::SRC_PORT_HASH) {
        mask.src_port = port_mask;
    } else if flags.contains(ServiceFlags::DST_PORT_HASH) {
        mask.dst_port = port_mask;
    } else {
        mask.dst_ip = SQUID_MASK_BITS;
    }
    mask
}

/// The owning cache of each value of one mask, indexed by Value Sequence Number (§7.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ValueOwners(pub Vec<Option<Ipv4Addr>>);

impl ValueOwners {
    /// Owners of the values listed for `mask` in `sets` (sets with other masks, values with
    /// bits outside the mask, and VSNs of a mask wider than [`MAX_MASK_BITS`] are ignored;
    /// the first value listed wins, as in router matching §7.2).
    pub fn from_sets(sets: &[MaskValueSet], mask: &MaskElement) -> Self {
        let bits = mask.bit_count();
        if bits > MAX_MASK_BITS {
            return Self::default();
        }
        let mut out = vec![None; 1usize << bits];
        for set in sets.iter().filter(|s| s.mask == *mask) {
            for v in &set.values {
                if let Some(vsn) = value_vsn(mask, v) {
                    if let Some(slot) = usize::try_from(vsn).ok().and_then(|i| out.get_mut(i)) {
                        slot.get_or_insert(v.cache_ip);
                    }
                }
            }
        }
        Self(out)
    }

    /// Values whose owner differs (lengths compared up to the longer one).
    pub fn moved_from(&self, before: &Self) -> usize {
        let n = self.0.len().max(before.0.len());
        (0..n)
            .filter(|i| self.0.get(*i).copied().flatten() != before.0.get(*i).copied().flatten())
            .count()
    }

    /// Values per owner.
    pub fn counts(&self) -> BTreeMap<Ipv4Addr, usize> {
        let mut out = BTreeMap::new();
        for c in self.0.iter().flatten() {
            *out.entry(*c).or_insert(0) += 1;
        }
        out
    }
}

/// The VSN of a value element under `mask`, or `None` if it has bits outside the mask (such a
/// value can never match a masked packet, §7.2).
pub(crate) fn value_vsn(mask: &MaskElement, v: &ValueElement) -> Option<u32> {
    let inside = v.src_ip & !mask.src_ip == 0
        && v.dst_ip & !mask.dst_ip == 0
        && v.src_port & !mask.src_port == 0
        && v.dst_port & !mask.dst_port == 0;
    inside.then(|| {
        let as_flow = FlowKey::new(
            Ipv4Addr::from(v.src_ip),
            Ipv4Addr::from(v.dst_ip),
            v.src_port,
            v.dst_port,
        );
        mask::vsn(mask, &as_flow)
    })
}

/// Mask assignment by the designated cache: one mask/value set whose 2^bits values (listed in
/// VSN order = ascending numeric order, like Squid) are split over `caches` by weight with
/// minimal movement from `previous`. Fails if the mask has more than `max_bits` bits
/// (default [`DEFAULT_MASK_BITS`]) or more than [`MAX_MASK_BITS`].
pub fn assign_mask(
    caches: &[WeightedCache],
    mask: &MaskElement,
    max_bits: u32,
    previous: &ValueOwners,
) -> Result<Vec<MaskValueSet>, AssignError> {
    let bits = mask.bit_count();
    let limit = max_bits.min(MAX_MASK_BITS);
    if bits > limit {
        return Err(AssignError::MaskTooWide { bits, limit });
    }
    let caches = sorted_caches(caches)?;
    if caches.is_empty() {
        return Ok(Vec::new());
    }
    let index: BTreeMap<Ipv4Addr, usize> = caches
        .iter()
        .enumerate()
        .map(|(i, c)| (c.address, i))
        .collect();
    let slots = 1usize << bits;
    let prev: Vec<Option<usize>> = (0..slots)
        .map(|i| {
            previous
                .0
                .get(i)
                .copied()
                .flatten()
                .and_then(|a| index.get(&a).copied())
        })
        .collect();
    let weights: Vec<u32> = caches.iter().map(|c| u32::from(c.weight)).collect();
    let values = distribute(slots, &weights, &prev)
        .into_iter()
        .zip(0u32..)
        .filter_map(|(owner, vsn)| {
            let cache = caches.get(owner?)?;
            let m = mask::value_for_vsn(mask, vsn);
            Some(ValueElement {
                src_ip: m.src_ip,
                dst_ip: m.dst_ip,
                src_port: m.src_port,
                dst_port: m.dst_port,
                cache_ip: cache.address,
            })
        })
        .collect();
    Ok(vec![MaskValueSet {
        mask: *mask,
        values,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(last: u8, weight: u16) -> WeightedCache {
        WeightedCache {
            address: Ipv4Addr::new(10, 0, 0, last),
            weight,
        }
    }

    fn owners(t: &HashBucketsAssignment) -> BucketOwners {
        BucketOwners::from_table(t)
    }

    #[test]
    fn quotas_follow_weights() {
        assert_eq!(quotas(256, &[1, 1, 1]), vec![86, 85, 85]);
        assert_eq!(quotas(256, &[10000, 5000]), vec![171, 85]);
        assert_eq!(quotas(256, &[0, 0]), vec![128, 128]);
        assert_eq!(quotas(256, &[0, 7]), vec![0, 256]);
        assert_eq!(quotas(256, &[]), Vec::<usize>::new());
        assert_eq!(
            quotas(64, &[u32::from(u16::MAX); 32]).iter().sum::<usize>(),
            64
        );
        for n in 1..=32usize {
            let w: Vec<u32> = (0..n as u32).map(|i| i * 1000 + 1).collect();
            assert_eq!(quotas(256, &w).iter().sum::<usize>(), 256, "{n} caches");
        }
    }

    #[test]
    fn fresh_hash_assignment_interleaves() {
        let t = assign_hash(
            &[cache(4, 1), cache(2, 1), cache(3, 1)],
            &BucketOwners::NONE,
        )
        .unwrap();
        assert_eq!(
            t.caches,
            vec![
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(10, 0, 0, 3),
                Ipv4Addr::new(10, 0, 0, 4)
            ]
        );
        assert_eq!(t.bucket_counts(), vec![86, 85, 85]);
        assert_eq!(&t.buckets[..6], &[0, 1, 2, 0, 1, 2]);
        // Weights 10000/5000 (Squid's s76 capture gives 170/86; exact rounding gives 171/85).
        let t = assign_hash(&[cache(2, 10000), cache(5, 5000)], &BucketOwners::NONE).unwrap();
        assert_eq!(t.bucket_counts(), vec![171, 85]);
        assert_eq!(&t.buckets[..6], &[0, 1, 0, 0, 1, 0]);
        // One cache takes everything; none leaves everything unassigned.
        let t = assign_hash(&[cache(9, 0)], &BucketOwners::NONE).unwrap();
        assert_eq!(t.bucket_counts(), vec![256]);
        let t = assign_hash(&[], &BucketOwners::NONE).unwrap();
        assert_eq!(t.unassigned_count(), 256);
    }

    #[test]
    fn joining_moves_only_the_new_caches_share() {
        let three = [cache(2, 1), cache(3, 1), cache(4, 1)];
        let before = owners(&assign_hash(&three, &BucketOwners::NONE).unwrap());
        let four = [cache(2, 1), cache(3, 1), cache(4, 1), cache(1, 1)];
        let after = owners(&assign_hash(&four, &before).unwrap());
        assert_eq!(
            after.counts().values().copied().collect::<Vec<_>>(),
            vec![64; 4]
        );
        // Exactly the new cache's 64 buckets moved, all of them to the new cache.
        assert_eq!(after.moved_from(&before), 64);
        for (a, b) in after.0.iter().zip(before.0.iter()) {
            if a != b {
                assert_eq!(*a, Some(Ipv4Addr::new(10, 0, 0, 1)));
            }
        }
    }

    #[test]
    fn leaving_moves_only_the_lost_caches_buckets() {
        let four = [cache(1, 1), cache(2, 1), cache(3, 1), cache(4, 1)];
        let before = owners(&assign_hash(&four, &BucketOwners::NONE).unwrap());
        let after = owners(&assign_hash(&four[1..], &before).unwrap());
        assert_eq!(after.moved_from(&before), 64);
        for (a, b) in after.0.iter().zip(before.0.iter()) {
            if a != b {
                assert_eq!(*b, Some(Ipv4Addr::new(10, 0, 0, 1)));
            }
        }
        assert_eq!(after.unassigned(), 0);
    }

    /// Movement over many membership changes stays within one bucket of the ideal (the
    /// difference in the joining/leaving cache's quota, plus rounding of the others).
    #[test]
    fn movement_is_near_minimal_for_all_sizes() {
        for n in 1..MAX_CACHES {
            let caches: Vec<WeightedCache> = (0..n as u8).map(|i| cache(10 + i, 100)).collect();
            let before = owners(&assign_hash(&caches, &BucketOwners::NONE).unwrap());
            let mut grown = caches.clone();
            grown.push(cache(200, 100));
            let after = owners(&assign_hash(&grown, &before).unwrap());
            let taken = after.counts()[&Ipv4Addr::new(10, 0, 0, 200)];
            assert_eq!(after.moved_from(&before), taken, "join to {} caches", n + 1);
            // And back: the new cache leaves again.
            let back = owners(&assign_hash(&caches, &after).unwrap());
            assert_eq!(
                back.moved_from(&after),
                taken,
                "leave from {} caches",
                n + 1
            );
        }
    }

    #[test]
    fn too_many_caches() {
        let caches: Vec<WeightedCache> = (0..33u8).map(|i| cache(i, 1)).collect();
        assert_eq!(
            assign_hash(&caches, &BucketOwners::NONE),
            Err(AssignError::TooManyCaches(33))
        );
        // Duplicates count once.
        let dup = [cache(1, 1), cache(1, 5)];
        let t = assign_hash(&dup, &BucketOwners::NONE).unwrap();
        assert_eq!(t.caches.len(), 1);
    }

    #[test]
    fn mask_assignment_splits_values_and_moves_few() {
        let mask = default_mask(&ServiceInfo::standard(0));
        assert_eq!(mask.dst_ip, 0x1741);
        let sets = assign_mask(
            &[cache(2, 1), cache(3, 1)],
            &mask,
            DEFAULT_MASK_BITS,
            &ValueOwners::default(),
        )
        .unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].values.len(), 64);
        // Ascending values, alternating caches (Squid: value k → cache k mod n).
        assert_eq!(sets[0].values[17].cache_ip, Ipv4Addr::new(10, 0, 0, 3));
        for w in sets[0].values.windows(2) {
            assert!(w[0].dst_ip < w[1].dst_ip);
        }
        let before = ValueOwners::from_sets(&sets, &mask);
        assert_eq!(
            before.counts().values().copied().collect::<Vec<_>>(),
            vec![32, 32]
        );
        let sets = assign_mask(
            &[cache(2, 1), cache(3, 1), cache(4, 2)],
            &mask,
            DEFAULT_MASK_BITS,
            &before,
        )
        .unwrap();
        let after = ValueOwners::from_sets(&sets, &mask);
        assert_eq!(after.counts()[&Ipv4Addr::new(10, 0, 0, 4)], 32);
        assert_eq!(after.moved_from(&before), 32);
        // Limits.
        let wide = MaskElement {
            dst_ip: 0xff,
            ..MaskElement::default()
        };
        assert_eq!(
            assign_mask(
                &[cache(2, 1)],
                &wide,
                DEFAULT_MASK_BITS,
                &ValueOwners::default()
            ),
            Err(AssignError::MaskTooWide { bits: 8, limit: 7 })
        );
        assert!(assign_mask(&[cache(2, 1)], &wide, 8, &ValueOwners::default()).is_ok());
        assert_eq!(
            assign_mask(&[], &mask, 7, &ValueOwners::default()),
            Ok(Vec::new())
        );
    }

    #[test]
    fn default_mask_follows_the_hash_field() {
        let dynamic = |flags| ServiceInfo::dynamic(90, 6, 0, flags, &[]);
        assert_eq!(
            default_mask(&dynamic(ServiceFlags::SRC_IP_HASH)).src_ip,
            0x1741
        );
        assert_eq!(
            default_mask(&dynamic(ServiceFlags::DST_PORT_HASH)).dst_port,
            0x1741
        );
        assert_eq!(
            default_mask(&dynamic(ServiceFlags::SRC_PORT_HASH)).src_port,
            0x1741
        );
        assert_eq!(default_mask(&dynamic(ServiceFlags::empty())).dst_ip, 0x1741);
    }
}
