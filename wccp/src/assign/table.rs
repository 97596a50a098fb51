//! The compiled assignment a router's data plane looks packets up in (reference §6.1–6.2 for
//! hash, §7.2 and §7.4 for mask): built from a REDIRECT_ASSIGN and the usable caches, it
//! guarantees that every bucket or mask value points at one usable cache or none.

use core::net::Ipv4Addr;

use super::BucketOwners;
use super::{value_vsn, FLAT_MASK_BITS, MAX_CACHES};
use crate::engine::{ForwardingMethod, ReturnMethod};
use crate::hash::{self, BitOrder, BucketBitmap, FlowKey};
use crate::mask::{self, MaskedKey};
use crate::wire::{
    AltMaskValueSet, AssignmentKey, BucketEntry, MaskElement, MaskValueSet, ServiceFlags,
    ServiceInfo, ServiceType, ValueElement, BUCKETS, BUCKET_UNASSIGNED,
};

/// Where a redirected packet goes: a cache and the methods negotiated with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheTarget {
    /// Cache address (GRE tunnel end point, or the next hop whose MAC L2 forwarding uses).
    pub address: Ipv4Addr,
    /// The router address this cache talks to: the outer source of GRE-redirected packets,
    /// which the cache's GRE tunnel expects (§8).
    pub router_id: Ipv4Addr,
    /// How to forward packets to it.
    pub forwarding: ForwardingMethod,
    /// How it returns packets it declines.
    pub packet_return: ReturnMethod,
}

/// A lookup result with what the GRE redirect header needs (§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// The cache.
    pub target: CacheTarget,
    /// The cache's index in [`Assignment::caches`] (for per-cache state such as counters).
    pub cache_index: u8,
    /// Primary bucket index (hash; 0 for mask).
    pub primary_bucket: u8,
    /// Alternate bucket index when the alternate hash decided (the A flag, §8).
    pub alternate_bucket: Option<u8>,
}

/// One mask/value set prepared for lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CompiledSet {
    /// The set's mask.
    mask: MaskElement,
    /// Set mask bits in VSN order (§7.4): (field 0..3 = dst port, src port, dst IP, src IP;
    /// bit position).
    positions: Vec<(u8, u8)>,
    /// Cache index per value.
    values: MaskValues,
}

/// How a set's values are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MaskValues {
    /// Indexed by VSN: cache index or [`BUCKET_UNASSIGNED`] (masks up to 12 bits).
    Flat(Vec<u8>),
    /// Wider masks: masked values and cache indexes in listing order.
    List(Vec<(MaskedKey, u8)>),
}

impl CompiledSet {
    /// Prepares a mask; values are added with [`Self::insert`].
    fn new(mask: MaskElement) -> Self {
        let fields = [
            u32::from(mask.dst_port),
            u32::from(mask.src_port),
            mask.dst_ip,
            mask.src_ip,
        ];
        let positions: Vec<(u8, u8)> = (0u8..)
            .zip(fields)
            .flat_map(|(f, m)| {
                (0u8..32)
                    .filter(move |b| m & (1 << b) != 0)
                    .map(move |b| (f, b))
            })
            .collect();
        let values = if mask.bit_count() <= FLAT_MASK_BITS {
            MaskValues::Flat(vec![BUCKET_UNASSIGNED; 1 << mask.bit_count()])
        } else {
            MaskValues::List(Vec::new())
        };
        Self {
            mask,
            positions,
            values,
        }
    }

    /// Adds a value (first listing wins, §7.2); returns false if it can never match.
    fn insert(&mut self, value: MaskedKey, cache: u8) -> bool {
        let v = ValueElement {
            src_ip: value.src_ip,
            dst_ip: value.dst_ip,
            src_port: value.src_port,
            dst_port: value.dst_port,
            cache_ip: Ipv4Addr::UNSPECIFIED,
        };
        let Some(vsn) = value_vsn(&self.mask, &v) else {
            return false;
        };
        match &mut self.values {
            MaskValues::Flat(t) => {
                if let Some(slot) = usize::try_from(vsn).ok().and_then(|i| t.get_mut(i)) {
                    if *slot == BUCKET_UNASSIGNED {
                        *slot = cache;
                    }
                }
            }
            MaskValues::List(l) => {
                if !l.iter().any(|(k, _)| *k == value) {
                    l.push((value, cache));
                }
            }
        }
        true
    }

    /// The VSN of a packet: the i-th set mask bit becomes VSN bit i (§7.4).
    fn vsn(&self, flow: &FlowKey) -> usize {
        let fields = [
            u32::from(flow.dst_port),
            u32::from(flow.src_port),
            u32::from(flow.dst_ip),
            u32::from(flow.src_ip),
        ];
        let mut vsn = 0usize;
        for (i, (f, b)) in self.positions.iter().enumerate() {
            let field = fields.get(usize::from(*f)).copied().unwrap_or(0);
            vsn |= usize::try_from((field >> b) & 1).unwrap_or(0) << i;
        }
        vsn
    }

    /// Cache index for a packet, if some value matches.
    fn lookup(&self, flow: &FlowKey) -> Option<u8> {
        match &self.values {
            MaskValues::Flat(t) => t
                .get(self.vsn(flow))
                .copied()
                .filter(|c| *c != BUCKET_UNASSIGNED),
            MaskValues::List(l) => {
                let m = mask::apply(&self.mask, flow);
                l.iter().find(|(k, _)| *k == m).map(|(_, c)| *c)
            }
        }
    }

    /// The set back in wire form, with cache addresses.
    fn to_wire(&self, caches: &[CacheTarget]) -> MaskValueSet {
        let element = |m: MaskedKey, c: u8| {
            caches.get(usize::from(c)).map(|t| ValueElement {
                src_ip: m.src_ip,
                dst_ip: m.dst_ip,
                src_port: m.src_port,
                dst_port: m.dst_port,
                cache_ip: t.address,
            })
        };
        let values = match &self.values {
            MaskValues::Flat(t) => (0u32..)
                .zip(t.iter())
                .filter_map(|(vsn, c)| element(mask::value_for_vsn(&self.mask, vsn), *c))
                .collect(),
            MaskValues::List(l) => l.iter().filter_map(|(m, c)| element(*m, *c)).collect(),
        };
        MaskValueSet {
            mask: self.mask,
            values,
        }
    }
}

/// The assignment table proper.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Table {
    /// No assignment: forward everything normally.
    Empty,
    /// 256 bucket octets (§6.2), indexes into `caches`.
    Hash(Box<[u8; BUCKETS]>),
    /// Mask/value sets in order (§7.2).
    Mask(Vec<CompiledSet>),
}

/// A service group's installed assignment, as the router's data plane consumes it
/// (`Arc<Assignment>`): every bucket or mask value points at one usable cache or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The service definition in force (protocol, ports, hash flags).
    service: ServiceInfo,
    /// Hash flags used for bucket indexes (standard services hash on dst IP, §6.1).
    flags: ServiceFlags,
    /// Key of the REDIRECT_ASSIGN this came from (zero when empty).
    key: AssignmentKey,
    /// Targets; buckets and values hold indexes into this list.
    caches: Vec<CacheTarget>,
    /// Every usable cache of the group: packets from them are never redirected (§5).
    members: Vec<Ipv4Addr>,
    /// The table.
    table: Table,
}

impl Assignment {
    /// No assignment: nothing is redirected.
    pub fn empty(service: ServiceInfo) -> Self {
        Self {
            flags: service.effective_flags(),
            service,
            key: AssignmentKey::NONE,
            caches: Vec::new(),
            members: Vec::new(),
            table: Table::Empty,
        }
    }

    /// A hash assignment: `buckets` index into `targets` (the REDIRECT_ASSIGN's cache list);
    /// a `None` target (a cache that is not usable) and an index past the list make the bucket
    /// unassigned. Returns the assignment and how many buckets were unassigned that way.
    pub fn hash(
        service: ServiceInfo,
        key: AssignmentKey,
        targets: &[Option<CacheTarget>],
        buckets: &[u8; BUCKETS],
    ) -> (Self, usize) {
        let mut caches: Vec<CacheTarget> = Vec::new();
        // Compact the list: new index per usable target (duplicates share one).
        let remap: Vec<Option<u8>> = targets
            .iter()
            .map(|t| {
                let t = (*t)?;
                let i = match caches.iter().position(|c| c.address == t.address) {
                    Some(i) => i,
                    None => {
                        caches.push(t);
                        caches.len() - 1
                    }
                };
                u8::try_from(i)
                    .ok()
                    .filter(|i| usize::from(*i) < MAX_CACHES)
            })
            .collect();
        let mut table = Box::new([BUCKET_UNASSIGNED; BUCKETS]);
        let mut dropped = 0;
        for (out, octet) in table.iter_mut().zip(buckets.iter()) {
            *out = match BucketEntry::from_octet(*octet) {
                BucketEntry::Unassigned => BUCKET_UNASSIGNED,
                BucketEntry::Cache { index, alternate } => {
                    match remap.get(usize::from(index)).copied().flatten() {
                        Some(index) => BucketEntry::Cache { index, alternate }.to_octet(),
                        None => {
                            dropped += 1;
                            BUCKET_UNASSIGNED
                        }
                    }
                }
            };
        }
        caches.truncate(MAX_CACHES);
        let a = Self {
            flags: service.effective_flags(),
            service,
            key,
            caches,
            members: Vec::new(),
            table: Table::Hash(table),
        };
        (a, dropped)
    }

    /// A mask assignment from Mask/Value sets (§7.1); values whose cache `resolve` does not
    /// know (not usable) or that can never match are skipped. Returns the assignment and the
    /// number of values skipped.
    pub fn mask(
        service: ServiceInfo,
        key: AssignmentKey,
        sets: &[MaskValueSet],
        resolve: impl Fn(Ipv4Addr) -> Option<CacheTarget>,
    ) -> (Self, usize) {
        let mut caches: Vec<CacheTarget> = Vec::new();
        let mut dropped = 0;
        let mut compiled = Vec::new();
        for set in sets {
            let mut c = CompiledSet::new(set.mask);
            for v in &set.values {
                let index = target_index(&mut caches, v.cache_ip, &resolve);
                let value = MaskedKey {
                    src_ip: v.src_ip,
                    dst_ip: v.dst_ip,
                    src_port: v.src_port,
                    dst_port: v.dst_port,
                };
                if !index.is_some_and(|i| c.insert(value, i)) {
                    dropped += 1;
                }
            }
            compiled.push(c);
        }
        (Self::with_sets(service, key, caches, compiled), dropped)
    }

    /// A mask assignment from Alternate Mask/Value sets (\[R1\] §7.4: VSNs per cache).
    pub fn alt_mask(
        service: ServiceInfo,
        key: AssignmentKey,
        sets: &[AltMaskValueSet],
        resolve: impl Fn(Ipv4Addr) -> Option<CacheTarget>,
    ) -> (Self, usize) {
        let mut caches: Vec<CacheTarget> = Vec::new();
        let mut dropped = 0;
        let mut compiled = Vec::new();
        for set in sets {
            let mut c = CompiledSet::new(set.mask);
            let bits = set.mask.bit_count();
            for wc in &set.caches {
                let index = target_index(&mut caches, wc.cache_ip, &resolve);
                for vsn in &wc.vsns {
                    let fits = bits >= 32 || *vsn < (1u32 << bits);
                    let value = mask::value_for_vsn(&set.mask, *vsn);
                    if !(fits && index.is_some_and(|i| c.insert(value, i))) {
                        dropped += 1;
                    }
                }
            }
            compiled.push(c);
        }
        (Self::with_sets(service, key, caches, compiled), dropped)
    }

    /// Common tail of the mask constructors.
    fn with_sets(
        service: ServiceInfo,
        key: AssignmentKey,
        caches: Vec<CacheTarget>,
        sets: Vec<CompiledSet>,
    ) -> Self {
        Self {
            flags: service.effective_flags(),
            service,
            key,
            caches,
            members: Vec::new(),
            table: Table::Mask(sets),
        }
    }

    /// Sets the group's usable caches (sources never redirected, §5).
    pub fn with_members(mut self, members: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        self.members = members.into_iter().collect();
        self.members.sort();
        self.members.dedup();
        self
    }

    /// The same with `draining` caches appended to the targets, holding no bucket or value:
    /// caches that left with a SHUTDOWN, kept so that flows already on them can stay there
    /// (the data plane's flow affinity finds them by address) while new flows go elsewhere.
    pub fn with_draining(mut self, draining: impl IntoIterator<Item = CacheTarget>) -> Self {
        for t in draining {
            if !self.caches.iter().any(|c| c.address == t.address) {
                self.caches.push(t);
            }
        }
        self
    }

    /// The cache for a packet (primary/alternate hash or mask); `None` = forward normally.
    pub fn lookup(&self, flow: &FlowKey) -> Option<CacheTarget> {
        self.redirect(flow).map(|r| r.target)
    }

    /// Like [`Self::lookup`], with the bucket indexes the GRE redirect header carries (§8).
    pub fn redirect(&self, flow: &FlowKey) -> Option<Redirect> {
        match &self.table {
            Table::Empty => None,
            Table::Hash(buckets) => {
                let l = hash::lookup(buckets, self.flags, flow);
                let cache_index = l.cache_index?;
                let target = *self.caches.get(usize::from(cache_index))?;
                Some(Redirect {
                    target,
                    cache_index,
                    primary_bucket: l.primary_bucket,
                    alternate_bucket: l.alternate_bucket,
                })
            }
            Table::Mask(sets) => sets.iter().find_map(|s| {
                let cache_index = s.lookup(flow)?;
                let target = *self.caches.get(usize::from(cache_index))?;
                Some(Redirect {
                    target,
                    cache_index,
                    primary_bucket: 0,
                    alternate_bucket: None,
                })
            }),
        }
    }

    /// True when `src` is a cache of the group: its packets are never redirected (§5, §8).
    pub fn is_member(&self, src: Ipv4Addr) -> bool {
        self.members.binary_search(&src).is_ok()
    }

    /// True when a packet of this protocol and ports belongs to the service (§3.2): standard
    /// service 0 is TCP to port 80; other standard IDs are not defined and match nothing; a
    /// dynamic service matches its protocol (0 = all, \[R1\]) and, with ports defined, a
    /// destination (or, with the source flag, source) port in its list.
    pub fn intercepts(&self, protocol: u8, src_port: u16, dst_port: u16) -> bool {
        let s = &self.service;
        match s.service_type {
            ServiceType::Standard => s.service_id == 0 && protocol == 6 && dst_port == 80,
            ServiceType::Dynamic | ServiceType::Unknown(_) => {
                if s.protocol != 0 && s.protocol != protocol {
                    return false;
                }
                let ports = s.port_list();
                if ports.is_empty() {
                    return true;
                }
                let port = if s.flags.contains(ServiceFlags::PORTS_SOURCE) {
                    src_port
                } else {
                    dst_port
                };
                ports.contains(&port)
            }
        }
    }

    /// True when the service may intercept packets of `protocol`, whatever their ports: what
    /// can be said of a non-first IP fragment, which carries no ports.
    pub fn intercepts_protocol(&self, protocol: u8) -> bool {
        let s = &self.service;
        match s.service_type {
            ServiceType::Standard => s.service_id == 0 && protocol == 6,
            ServiceType::Dynamic | ServiceType::Unknown(_) => {
                s.protocol == 0 || s.protocol == protocol
            }
        }
    }

    /// True when nothing is assigned (no table, or a table without any target).
    pub fn is_empty(&self) -> bool {
        match &self.table {
            Table::Empty => true,
            Table::Hash(_) | Table::Mask(_) => self.caches.is_empty(),
        }
    }

    /// The service definition in force.
    pub fn service(&self) -> &ServiceInfo {
        &self.service
    }

    /// The key of the REDIRECT_ASSIGN this came from.
    pub fn key(&self) -> AssignmentKey {
        self.key
    }

    /// Targets (bucket octets and mask values index into this list).
    pub fn caches(&self) -> &[CacheTarget] {
        &self.caches
    }

    /// The group's usable caches when this was installed.
    pub fn members(&self) -> &[Ipv4Addr] {
        &self.members
    }

    /// True for a mask assignment.
    pub fn is_mask(&self) -> bool {
        matches!(self.table, Table::Mask(_))
    }

    /// The 256 bucket octets of a hash assignment.
    pub fn bucket_table(&self) -> Option<&[u8; BUCKETS]> {
        match &self.table {
            Table::Hash(b) => Some(b),
            Table::Empty | Table::Mask(_) => None,
        }
    }

    /// Owner of every bucket (all `None` unless hash).
    pub fn bucket_owners(&self) -> BucketOwners {
        let mut out = BucketOwners::NONE;
        if let Table::Hash(b) = &self.table {
            for (slot, octet) in out.0.iter_mut().zip(b.iter()) {
                if let BucketEntry::Cache { index, .. } = BucketEntry::from_octet(*octet) {
                    *slot = self.caches.get(usize::from(index)).map(|c| c.address);
                }
            }
        }
        out
    }

    /// The buckets of `cache` as an identity-element bitmap in `order` (§3.12, §6.3).
    pub fn bitmap_for(&self, cache: Ipv4Addr, order: BitOrder) -> BucketBitmap {
        match (
            &self.table,
            self.caches.iter().position(|c| c.address == cache),
        ) {
            (Table::Hash(b), Some(i)) => u8::try_from(i)
                .map(|i| BucketBitmap::for_cache(b, i, order))
                .unwrap_or(BucketBitmap::EMPTY),
            _ => BucketBitmap::EMPTY,
        }
    }

    /// The mask/value sets back in wire form (empty unless mask), e.g. for an Assignment Map.
    pub fn mask_value_sets(&self) -> Vec<MaskValueSet> {
        match &self.table {
            Table::Mask(sets) => sets.iter().map(|s| s.to_wire(&self.caches)).collect(),
            Table::Empty | Table::Hash(_) => Vec::new(),
        }
    }

    /// Buckets (hash) or mask values (mask) per cache, in `caches()` order.
    pub fn share_counts(&self) -> Vec<(Ipv4Addr, usize)> {
        let mut counts = vec![0usize; self.caches.len()];
        let mut bump = |i: u8| {
            if let Some(c) = counts.get_mut(usize::from(i)) {
                *c += 1;
            }
        };
        match &self.table {
            Table::Empty => {}
            Table::Hash(b) => b.iter().for_each(|o| {
                if let BucketEntry::Cache { index, .. } = BucketEntry::from_octet(*o) {
                    bump(index);
                }
            }),
            Table::Mask(sets) => sets.iter().for_each(|s| match &s.values {
                MaskValues::Flat(t) => t
                    .iter()
                    .filter(|c| **c != BUCKET_UNASSIGNED)
                    .for_each(|c| bump(*c)),
                MaskValues::List(l) => l.iter().for_each(|(_, c)| bump(*c)),
            }),
        }
        self.caches.iter().map(|c| c.address).zip(counts).collect()
    }

    /// Checks the data-plane invariant: every bucket or value points at a listed target, and
    /// every target is a member. Used by tests and the fuzz target.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        if self.caches.len() > MAX_CACHES {
            return Err("more than 32 targets");
        }
        if !self.members.is_empty() && !self.caches.iter().all(|c| self.is_member(c.address)) {
            return Err("a target is not a member");
        }
        let n = self.caches.len();
        let ok_index = |i: u8| i == BUCKET_UNASSIGNED || usize::from(i) < n;
        let ok = match &self.table {
            Table::Empty => true,
            Table::Hash(b) => b.iter().all(|o| match BucketEntry::from_octet(*o) {
                BucketEntry::Unassigned => true,
                BucketEntry::Cache { index, .. } => usize::from(index) < n,
            }),
            Table::Mask(sets) => sets.iter().all(|s| match &s.values {
                MaskValues::Flat(t) => t.iter().all(|c| ok_index(*c)),
                MaskValues::List(l) => l.iter().all(|(_, c)| usize::from(*c) < n),
            }),
        };
        if ok {
            Ok(())
        } else {
            Err("a bucket or value points past the target list")
        }
    }
}

/// Index of `cache` in `caches`, adding it when `resolve` knows it (≤ [`MAX_CACHES`]).
fn target_index(
    caches: &mut Vec<CacheTarget>,
    cache: Ipv4Addr,
    resolve: &impl Fn(Ipv4Addr) -> Option<CacheTarget>,
) -> Option<u8> {
    let i = match caches.iter().position(|c| c.address == cache) {
        Some(i) => i,
        None => {
            if caches.len() >= MAX_CACHES {
                return None;
            }
            caches.push(resolve(cache)?);
            caches.len() - 1
        }
    };
    u8::try_from(i).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::{assign_mask, default_mask, ValueOwners, WeightedCache};

    fn cache(last: u8, weight: u16) -> WeightedCache {
        WeightedCache {
            address: Ipv4Addr::new(10, 0, 0, last),
            weight,
        }
    }

    fn target(address: Ipv4Addr) -> Option<CacheTarget> {
        Some(CacheTarget {
            address,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            forwarding: ForwardingMethod::Gre,
            packet_return: ReturnMethod::Gre,
        })
    }

    #[test]
    fn hash_assignment_lookup_and_sanitising() {
        let a2 = Ipv4Addr::new(10, 0, 0, 2);
        let a3 = Ipv4Addr::new(10, 0, 0, 3);
        let mut buckets = [0u8; BUCKETS];
        buckets[200] = 1;
        buckets[201] = 2; // past the list
        buckets[202] = BUCKET_UNASSIGNED;
        buckets[203] = 0x81; // alternate flag kept
        let key = AssignmentKey {
            cache_ip: a2,
            change_number: 1,
        };
        let (a, dropped) = Assignment::hash(
            ServiceInfo::standard(0),
            key,
            &[target(a2), target(a3)],
            &buckets,
        );
        assert_eq!(dropped, 1);
        a.check_invariants().unwrap();
        assert_eq!(a.share_counts(), vec![(a2, 252), (a3, 2)]);
        // §6.1 vector: dst 192.0.2.10 → bucket 200 → second cache.
        let flow = FlowKey::new(
            Ipv4Addr::new(10, 1, 1, 1),
            Ipv4Addr::new(192, 0, 2, 10),
            40000,
            80,
        );
        let r = a.redirect(&flow).unwrap();
        assert_eq!((r.target.address, r.primary_bucket), (a3, 200));
        assert!(a.intercepts(6, 40000, 80));
        assert!(!a.intercepts(17, 40000, 80));
        // A cache that is no longer usable: its buckets become unassigned.
        let (b, dropped) =
            Assignment::hash(ServiceInfo::standard(0), key, &[target(a2), None], &buckets);
        assert_eq!(dropped, 3);
        assert_eq!(b.lookup(&flow), None);
        assert_eq!(b.bitmap_for(a2, BitOrder::LsbFirst).count(), 252);
        let empty = Assignment::empty(ServiceInfo::standard(0));
        assert!(empty.is_empty());
        assert_eq!(empty.lookup(&flow), None);
    }

    #[test]
    fn learnt_dynamic_service_without_hash_flags_spreads_by_destination() {
        let a2 = Ipv4Addr::new(10, 0, 0, 2);
        let a3 = Ipv4Addr::new(10, 0, 0, 3);
        // Odd buckets on the second cache.
        let mut buckets = [0u8; BUCKETS];
        for (i, b) in buckets.iter_mut().enumerate() {
            *b = (i % 2) as u8;
        }
        let svc = ServiceInfo::dynamic(77, 17, 100, ServiceFlags::empty(), &[]);
        let (a, _) = Assignment::hash(
            svc,
            AssignmentKey::NONE,
            &[target(a2), target(a3)],
            &buckets,
        );
        let to = |dst: Ipv4Addr| {
            a.redirect(&FlowKey::new(Ipv4Addr::new(10, 1, 1, 1), dst, 5000, 53))
                .unwrap()
        };
        // §6.1 vector: dst 192.0.2.10 alone folds to bucket 200; 192.0.2.11 to 201.
        let even = to(Ipv4Addr::new(192, 0, 2, 10));
        let odd = to(Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!((even.primary_bucket, even.target.address), (200, a2));
        assert_eq!((odd.primary_bucket, odd.target.address), (201, a3));
    }

    #[test]
    fn protocol_interception_ignores_ports() {
        let (a, _) = Assignment::hash(
            ServiceInfo::dynamic(90, 17, 100, ServiceFlags::SRC_IP_HASH, &[53]),
            AssignmentKey::NONE,
            &[],
            &[BUCKET_UNASSIGNED; BUCKETS],
        );
        assert!(a.intercepts_protocol(17) && !a.intercepts_protocol(6));
        let any = Assignment::empty(ServiceInfo::dynamic(91, 0, 100, ServiceFlags::empty(), &[]));
        assert!(any.intercepts_protocol(6) && any.intercepts_protocol(47));
        let std0 = Assignment::empty(ServiceInfo::standard(0));
        assert!(std0.intercepts_protocol(6) && !std0.intercepts_protocol(17));
        assert!(!Assignment::empty(ServiceInfo::standard(1)).intercepts_protocol(6));
    }

    #[test]
    fn mask_assignment_lookup_matches_linear_matching() {
        let mask = default_mask(&ServiceInfo::standard(0));
        let caches = [cache(2, 1), cache(3, 1), cache(4, 1)];
        let sets = assign_mask(&caches, &mask, 7, &ValueOwners::default()).unwrap();
        let resolve = |a: Ipv4Addr| target(a);
        let (a, dropped) = Assignment::mask(
            ServiceInfo::standard(0),
            AssignmentKey::NONE,
            &sets,
            resolve,
        );
        assert_eq!(dropped, 0);
        a.check_invariants().unwrap();
        assert_eq!(
            a.mask_value_sets(),
            sets,
            "round trip through the compiled form"
        );
        for i in 0..2000u32 {
            let x = i.wrapping_mul(2_654_435_761);
            let flow = FlowKey::new(
                Ipv4Addr::from(x ^ 0x5555),
                Ipv4Addr::from(x),
                (x >> 3) as u16,
                80,
            );
            let linear = mask::lookup(&sets, &flow).map(|m| m.cache_ip);
            assert_eq!(a.lookup(&flow).map(|t| t.address), linear);
        }
        // Alternate mask/value sets give the same table.
        let alt: Vec<AltMaskValueSet> = vec![AltMaskValueSet {
            mask,
            caches: caches
                .iter()
                .enumerate()
                .map(|(i, c)| crate::wire::WebCacheValueElement {
                    cache_ip: c.address,
                    vsns: (0..64u32).filter(|v| *v as usize % 3 == i).collect(),
                })
                .collect(),
        }];
        let (b, dropped) =
            Assignment::alt_mask(ServiceInfo::standard(0), AssignmentKey::NONE, &alt, resolve);
        assert_eq!(dropped, 0);
        assert_eq!(b.mask_value_sets(), sets);
        // Values for unknown caches are skipped; a value outside the mask never matches.
        let mut odd = sets.clone();
        odd[0].values[0].dst_ip = 0x8000_0000;
        let (c, dropped) =
            Assignment::mask(ServiceInfo::standard(0), AssignmentKey::NONE, &odd, |a| {
                (a != Ipv4Addr::new(10, 0, 0, 4))
                    .then(|| target(a))
                    .flatten()
            });
        assert_eq!(dropped, 1 + 21);
        c.check_invariants().unwrap();
    }

    #[test]
    fn wide_masks_use_the_list() {
        let mask = MaskElement {
            src_ip: 0xffff_0000,
            dst_ip: 0xf,
            ..MaskElement::default()
        };
        let set = MaskValueSet {
            mask,
            values: vec![ValueElement {
                src_ip: 0x0a01_0000,
                dst_ip: 0x3,
                src_port: 0,
                dst_port: 0,
                cache_ip: Ipv4Addr::new(10, 0, 0, 2),
            }],
        };
        let (a, _) = Assignment::mask(
            ServiceInfo::standard(0),
            AssignmentKey::NONE,
            std::slice::from_ref(&set),
            target,
        );
        let hit = FlowKey::new(
            Ipv4Addr::new(10, 1, 9, 9),
            Ipv4Addr::new(1, 2, 3, 0x13),
            0,
            0,
        );
        assert_eq!(
            a.lookup(&hit).map(|t| t.address),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(a.mask_value_sets(), vec![set]);
    }

    #[test]
    fn intercept_rules() {
        let svc = ServiceInfo::dynamic(90, 6, 200, ServiceFlags::PORTS_SOURCE, &[80, 443]);
        let a = Assignment::empty(svc);
        assert!(a.intercepts(6, 443, 5555));
        assert!(!a.intercepts(6, 5555, 443));
        let any = Assignment::empty(ServiceInfo::dynamic(91, 0, 0, ServiceFlags::empty(), &[]));
        assert!(any.intercepts(17, 1, 2));
        assert!(!Assignment::empty(ServiceInfo::standard(5)).intercepts(6, 1, 80));
        let m =
            Assignment::empty(ServiceInfo::standard(0)).with_members([Ipv4Addr::new(10, 0, 0, 9)]);
        assert!(m.is_member(Ipv4Addr::new(10, 0, 0, 9)));
        assert!(!m.is_member(Ipv4Addr::new(10, 0, 0, 8)));
    }
}
