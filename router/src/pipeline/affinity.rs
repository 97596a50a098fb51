//! Flow affinity (SPEC.md §4): a worker's memory of where each redirected TCP flow went, so a
//! flow keeps its cache (or keeps being forwarded normally) when its bucket moves, until it ends
//! or falls silent.
//!
//! One table per worker: PACKET_FANOUT_HASH sends every packet of a flow direction to the same
//! worker, so no lock is needed. The table is a fixed array of 4-way sets allocated once, so the
//! per-packet path never allocates: a new flow takes an empty or expired slot of its set, else
//! evicts the set's least recently seen flow (counted).
//!
//! A flow's set is chosen by a hash keyed with a secret drawn per table at start (std's
//! SipHash `RandomState`): someone who can send crafted segments cannot compute which flows
//! share a set, so cannot aim a flood at a chosen flow's set to evict it (issue 13).

use crate::tables::wccp::AffinityStats;
use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Slots per set.
const WAYS: usize = 4;

/// A flow: service, addresses and ports of the client-to-server direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowId {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Service group.
    pub service: u8,
}

impl FlowId {
    /// The flow of a packet.
    pub fn new(service: u8, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> FlowId {
        FlowId {
            src: src.into(),
            dst: dst.into(),
            sport,
            dport,
            service,
        }
    }

    /// The flow packed in two words (what the keyed hash reads).
    fn words(&self) -> (u64, u64) {
        let a = (u64::from(self.src) << 32) | u64::from(self.dst);
        let b =
            (u64::from(self.sport) << 24) | (u64::from(self.dport) << 8) | u64::from(self.service);
        (a, b)
    }
}

/// Where a remembered flow goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowTarget {
    /// To the cache at this address.
    Cache(Ipv4Addr),
    /// Forwarded normally (its bucket had no cache when it started).
    Normal,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    flow: FlowId,
    /// 0 = normal forwarding, else the cache address.
    target: u32,
    /// Seconds since the table's epoch, plus one; 0 = empty.
    seen: u32,
}

/// One worker's flow-affinity table.
pub struct AffinityTable {
    slots: Vec<Slot>,
    set_mask: usize,
    epoch: Instant,
    idle_secs: u32,
    /// Flows counted into the shared statistics (kept to publish differences).
    live: u64,
    /// The secret key of the set hash.
    key: RandomState,
}

impl AffinityTable {
    /// A table of at least `flows` slots (rounded up to whole power-of-two sets).
    pub fn new(flows: u32, idle_secs: u32, now: Instant) -> AffinityTable {
        let sets = (flows as usize).div_ceil(WAYS).max(1).next_power_of_two();
        AffinityTable {
            slots: vec![Slot::default(); sets * WAYS],
            set_mask: sets - 1,
            epoch: now,
            idle_secs: idle_secs.max(1),
            live: 0,
            key: RandomState::new(),
        }
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Seconds of silence after which a flow is forgotten.
    pub fn idle_secs(&self) -> u32 {
        self.idle_secs
    }

    fn tick(&self, now: Instant) -> u32 {
        let s = now.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(s).unwrap_or(u32::MAX - 1) + 1
    }

    fn live_at(&self, slot: &Slot, tick: u32) -> bool {
        slot.seen != 0 && tick.saturating_sub(slot.seen) < self.idle_secs
    }

    fn set(&self, flow: &FlowId) -> std::ops::Range<usize> {
        let start = (self.key.hash_one(flow.words()) as usize & self.set_mask) * WAYS;
        start..start + WAYS
    }

    /// Where `flow` went before, refreshing it; `None` when unknown or expired.
    pub fn lookup(&mut self, flow: &FlowId, now: Instant) -> Option<FlowTarget> {
        let tick = self.tick(now);
        let range = self.set(flow);
        let idle = self.idle_secs;
        let slot = self
            .slots
            .get_mut(range)?
            .iter_mut()
            .find(|s| s.flow == *flow && s.seen != 0)?;
        if tick.saturating_sub(slot.seen) >= idle {
            return None;
        }
        slot.seen = tick;
        Some(if slot.target == 0 {
            FlowTarget::Normal
        } else {
            FlowTarget::Cache(slot.target.into())
        })
    }

    /// Remembers that `flow` goes to `target`.
    pub fn insert(
        &mut self,
        flow: FlowId,
        target: FlowTarget,
        now: Instant,
        stats: &AffinityStats,
    ) {
        let tick = self.tick(now);
        let target = match target {
            FlowTarget::Cache(a) => u32::from(a),
            FlowTarget::Normal => 0,
        };
        let range = self.set(&flow);
        let Some(set) = self.slots.get(range.clone()) else {
            return;
        };
        // The flow's own slot, else a free or expired one, else the least recently seen.
        let pick = set
            .iter()
            .position(|s| s.flow == flow && s.seen != 0)
            .or_else(|| set.iter().position(|s| !self.live_at(s, tick)))
            .unwrap_or_else(|| {
                (0..WAYS)
                    .min_by_key(|i| set.get(*i).map(|s| s.seen).unwrap_or(0))
                    .unwrap_or(0)
            });
        let was_live = set.get(pick).is_some_and(|s| self.live_at(s, tick));
        let was_same = set.get(pick).is_some_and(|s| s.flow == flow && s.seen != 0);
        if let Some(slot) = self.slots.get_mut(range.start + pick) {
            *slot = Slot {
                flow,
                target,
                seen: tick,
            };
        }
        if was_live && !was_same {
            stats.evicted.fetch_add(1, Ordering::Relaxed);
        } else if !was_live {
            self.live += 1;
            stats.entries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets `flow` (it ended with a RST).
    pub fn remove(&mut self, flow: &FlowId, stats: &AffinityStats) {
        let range = self.set(flow);
        if let Some(slot) = self
            .slots
            .get_mut(range)
            .and_then(|set| set.iter_mut().find(|s| s.flow == *flow && s.seen != 0))
        {
            slot.seen = 0;
            self.live = self.live.saturating_sub(1);
            stats.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops expired flows from the live count (housekeeping, about once a second).
    pub fn sweep(&mut self, now: Instant, stats: &AffinityStats) {
        let tick = self.tick(now);
        let idle = self.idle_secs;
        let mut freed = 0u64;
        for s in &mut self.slots {
            if s.seen != 0 && tick.saturating_sub(s.seen) >= idle {
                s.seen = 0;
                freed += 1;
            }
        }
        self.live = self.live.saturating_sub(freed);
        stats.entries.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Forgets everything (the table is being replaced), keeping the statistics right.
    pub fn clear(&mut self, stats: &AffinityStats) {
        stats.entries.fetch_sub(self.live, Ordering::Relaxed);
        self.live = 0;
        self.slots.iter_mut().for_each(|s| s.seen = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn flow(n: u16) -> FlowId {
        FlowId::new(
            0,
            [10, 0, 1, 2].into(),
            [10, 0, 2, 80].into(),
            40000 + n,
            80,
        )
    }

    #[test]
    fn remembers_refreshes_and_expires() {
        let t0 = Instant::now();
        let stats = AffinityStats::default();
        let mut t = AffinityTable::new(64, 10, t0);
        let cache = FlowTarget::Cache([10, 0, 3, 2].into());
        assert_eq!(t.lookup(&flow(1), t0), None);
        t.insert(flow(1), cache, t0, &stats);
        t.insert(flow(2), FlowTarget::Normal, t0, &stats);
        assert_eq!(t.lookup(&flow(1), t0 + Duration::from_secs(9)), Some(cache));
        assert_eq!(t.lookup(&flow(2), t0), Some(FlowTarget::Normal));
        assert_eq!(stats.entries.load(Ordering::Relaxed), 2);
        // Refreshed at 9 s: still there at 18 s, gone at 30 s.
        assert_eq!(
            t.lookup(&flow(1), t0 + Duration::from_secs(18)),
            Some(cache)
        );
        assert_eq!(t.lookup(&flow(1), t0 + Duration::from_secs(30)), None);
        t.sweep(t0 + Duration::from_secs(30), &stats);
        assert_eq!(stats.entries.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_set_of_a_flow_depends_on_a_per_table_secret() {
        let t0 = Instant::now();
        let a = AffinityTable::new(4096, 10, t0);
        let b = AffinityTable::new(4096, 10, t0);
        // Two tables place some of the same flows in different sets: the layout cannot be
        // computed from the flow alone.
        let differ = (0..64)
            .filter(|n| a.set(&flow(*n)) != b.set(&flow(*n)))
            .count();
        assert!(
            differ > 32,
            "only {differ} of 64 flows moved between tables"
        );
    }

    #[test]
    fn full_sets_evict_the_oldest_and_count_it() {
        let t0 = Instant::now();
        let stats = AffinityStats::default();
        let mut t = AffinityTable::new(4, 100, t0); // one set of four
        assert_eq!(t.capacity(), 4);
        for n in 0..4 {
            t.insert(
                flow(n),
                FlowTarget::Normal,
                t0 + Duration::from_secs(n.into()),
                &stats,
            );
        }
        t.insert(
            flow(9),
            FlowTarget::Normal,
            t0 + Duration::from_secs(5),
            &stats,
        );
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(stats.entries.load(Ordering::Relaxed), 4);
        assert_eq!(
            t.lookup(&flow(0), t0 + Duration::from_secs(5)),
            None,
            "oldest evicted"
        );
        assert!(t.lookup(&flow(9), t0 + Duration::from_secs(5)).is_some());
        t.remove(&flow(9), &stats);
        assert_eq!(t.lookup(&flow(9), t0 + Duration::from_secs(5)), None);
        assert_eq!(stats.entries.load(Ordering::Relaxed), 3);
        t.clear(&stats);
        assert_eq!(stats.entries.load(Ordering::Relaxed), 0);
    }
}
