//! The redirect decisions of first IP fragments, so the later fragments of a datagram (which
//! carry no ports, so cannot be classified themselves) follow the first one to the same cache by
//! the same method, or are forwarded normally with it (issue 13).
//!
//! One table per worker, no lock: PACKET_FANOUT_HASH hashes a fragment on its addresses and
//! protocol only (the kernel's symmetric flow hash does not parse ports of fragments), so every
//! fragment of a datagram reaches the same worker with either I/O backend.
//!
//! A datagram is known by (source, destination, protocol, IP identification), as in reassembly
//! (RFC 791). An entry lives [`FRAG_LIFETIME_SECS`] from its first fragment, as long as Linux
//! keeps a reassembly queue (`ipfrag_time`): a later fragment after that would not be
//! reassembled by the receiver either. A new first fragment with the same key (the sender's IP
//! identification wrapped) replaces the entry. The table is a fixed array of 4-way sets
//! allocated on first use: a new datagram takes an empty or expired slot of its set, else the
//! set's oldest entry. The set is chosen by a keyed SipHash (std `RandomState`) so crafted first
//! fragments cannot be aimed at a chosen datagram's set.
//!
//! A later fragment that arrives before its first fragment (reordering) or after its entry was
//! evicted has no decision: it is forwarded normally and counted as `fragments-unmatched`.
//! Holding it back until the first fragment comes would need per-datagram buffering, which a
//! router should not do on behalf of a cache.

use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;
use std::time::Instant;
use wccp::assign::Redirect;

/// Seconds a first fragment's decision is kept (Linux's default `ipfrag_time`).
pub const FRAG_LIFETIME_SECS: u32 = 30;

/// Datagrams remembered per worker (a power of two, a multiple of the set size).
pub const FRAG_TABLE_SLOTS: usize = 1024;

/// Slots per set.
const WAYS: usize = 4;

/// One datagram: what all its fragments share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragKey {
    src: u32,
    dst: u32,
    ident: u16,
    protocol: u8,
}

impl FragKey {
    /// The datagram a fragment belongs to.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ident: u16) -> FragKey {
        FragKey {
            src: src.into(),
            dst: dst.into(),
            ident,
            protocol,
        }
    }

    /// The key packed in two words (what the keyed hash reads).
    fn words(&self) -> (u64, u64) {
        (
            (u64::from(self.src) << 32) | u64::from(self.dst),
            (u64::from(self.ident) << 8) | u64::from(self.protocol),
        )
    }
}

/// What was done with a datagram's first fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragDecision {
    /// Redirected by service `service` as `redirect` says (cache, method, buckets).
    Redirect {
        /// Service id.
        service: u8,
        /// The cache and how it was reached.
        redirect: Redirect,
    },
    /// Forwarded normally.
    Normal,
    /// Dropped by a closed `fail-policy` (its later fragments are dropped too).
    Dropped {
        /// Service id.
        service: u8,
    },
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: FragKey,
    decision: FragDecision,
    /// Seconds since the table's epoch when the first fragment came, plus one; 0 = empty.
    born: u32,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            key: FragKey::default(),
            decision: FragDecision::Normal,
            born: 0,
        }
    }
}

/// One worker's table of first-fragment decisions.
pub struct FragTable {
    slots: Vec<Slot>,
    set_mask: usize,
    epoch: Instant,
    /// The secret key of the set hash.
    key: RandomState,
}

impl FragTable {
    /// An empty table of [`FRAG_TABLE_SLOTS`] slots.
    pub fn new(now: Instant) -> FragTable {
        let sets = FRAG_TABLE_SLOTS / WAYS;
        FragTable {
            slots: vec![Slot::default(); sets * WAYS],
            set_mask: sets - 1,
            epoch: now,
            key: RandomState::new(),
        }
    }

    fn tick(&self, now: Instant) -> u32 {
        let s = now.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(s).unwrap_or(u32::MAX - 1) + 1
    }

    fn live(slot: &Slot, tick: u32) -> bool {
        slot.born != 0 && tick.saturating_sub(slot.born) < FRAG_LIFETIME_SECS
    }

    fn set(&self, key: &FragKey) -> std::ops::Range<usize> {
        let start = (self.key.hash_one(key.words()) as usize & self.set_mask) * WAYS;
        start..start + WAYS
    }

    /// Remembers the decision for the datagram whose first fragment was just handled.
    pub fn insert(&mut self, key: FragKey, decision: FragDecision, now: Instant) {
        let tick = self.tick(now);
        let range = self.set(&key);
        let Some(set) = self.slots.get_mut(range) else {
            return;
        };
        // The datagram's own slot, else a free or expired one, else the oldest.
        let pick = set
            .iter()
            .position(|s| s.born != 0 && s.key == key)
            .or_else(|| set.iter().position(|s| !Self::live(s, tick)))
            .or_else(|| (0..set.len()).min_by_key(|i| set.get(*i).map_or(0, |s| s.born)));
        if let Some(slot) = pick.and_then(|i| set.get_mut(i)) {
            *slot = Slot {
                key,
                decision,
                born: tick,
            };
        }
    }

    /// The decision taken for the datagram's first fragment, if it is known and not expired.
    pub fn lookup(&self, key: &FragKey, now: Instant) -> Option<FragDecision> {
        let tick = self.tick(now);
        self.slots
            .get(self.set(key))?
            .iter()
            .find(|s| s.key == *key && Self::live(s, tick))
            .map(|s| s.decision)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;
    use wccp::assign::CacheTarget;
    use wccp::engine::{ForwardingMethod, ReturnMethod};

    fn key(ident: u16) -> FragKey {
        FragKey::new([10, 0, 1, 2].into(), [10, 0, 2, 80].into(), 17, ident)
    }

    fn to_cache(last: u8) -> FragDecision {
        FragDecision::Redirect {
            service: 90,
            redirect: Redirect {
                target: CacheTarget {
                    address: [10, 0, 2, last].into(),
                    router_id: [10, 0, 2, 1].into(),
                    forwarding: ForwardingMethod::Gre,
                    packet_return: ReturnMethod::Gre,
                },
                cache_index: 0,
                primary_bucket: 7,
                alternate_bucket: None,
            },
        }
    }

    #[test]
    fn decisions_are_found_until_they_expire() {
        let t0 = Instant::now();
        let mut t = FragTable::new(t0);
        assert_eq!(t.lookup(&key(1), t0), None);
        t.insert(key(1), to_cache(9), t0);
        t.insert(key(2), FragDecision::Normal, t0);
        assert_eq!(t.lookup(&key(1), t0), Some(to_cache(9)));
        assert_eq!(t.lookup(&key(2), t0), Some(FragDecision::Normal));
        assert_eq!(t.lookup(&key(3), t0), None);
        // Another protocol is another datagram.
        let tcp = FragKey::new([10, 0, 1, 2].into(), [10, 0, 2, 80].into(), 6, 1);
        assert_eq!(t.lookup(&tcp, t0), None);
        let later = t0 + Duration::from_secs(u64::from(FRAG_LIFETIME_SECS) - 1);
        assert_eq!(t.lookup(&key(1), later), Some(to_cache(9)));
        let gone = t0 + Duration::from_secs(u64::from(FRAG_LIFETIME_SECS));
        assert_eq!(t.lookup(&key(1), gone), None);
        // The identification wrapped: a new first fragment replaces the old decision.
        t.insert(key(1), to_cache(10), gone);
        assert_eq!(t.lookup(&key(1), gone), Some(to_cache(10)));
    }

    #[test]
    fn a_full_table_forgets_the_oldest_and_stays_bounded() {
        let t0 = Instant::now();
        let mut t = FragTable::new(t0);
        // Far more datagrams than slots, one second apart in groups.
        for i in 0..(FRAG_TABLE_SLOTS as u16 * 4) {
            let now = t0 + Duration::from_secs(u64::from(i) / 1000);
            t.insert(key(i), FragDecision::Normal, now);
        }
        assert_eq!(t.slots.len(), FRAG_TABLE_SLOTS);
        let now = t0 + Duration::from_secs(4);
        let newest = (FRAG_TABLE_SLOTS as u16 * 4) - 1;
        assert_eq!(t.lookup(&key(newest), now), Some(FragDecision::Normal));
        let known = (0..FRAG_TABLE_SLOTS as u16 * 4)
            .filter(|i| t.lookup(&key(*i), now).is_some())
            .count();
        assert!(known <= FRAG_TABLE_SLOTS);
        // The oldest group lost most of its entries to the newer ones.
        let oldest_known = (0..1000u16)
            .filter(|i| t.lookup(&key(*i), now).is_some())
            .count();
        assert!(oldest_known < 100, "{oldest_known} of the oldest kept");
    }
}
