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
//!
//! With HA sync, the table tells its caller which flows it forgot (evicted, expired, removed,
//! cleared) so that the peer's mirror of it stays bounded (`tables::affinity`).

pub use crate::tables::affinity::{FlowId, FlowTarget};
use crate::tables::wccp::AffinityStats;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Slots per set.
const WAYS: usize = 4;

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
        Some(target_of(slot.target))
    }

    /// Remembers that `flow` goes to `target`. Returns what changed for the HA peer: whether
    /// `flow`'s entry is new or changed, and the other flow whose slot it took (evicted, or
    /// expired and not yet swept), if any.
    pub fn insert(
        &mut self,
        flow: FlowId,
        target: FlowTarget,
        now: Instant,
        stats: &AffinityStats,
    ) -> Inserted {
        let tick = self.tick(now);
        let target = match target {
            FlowTarget::Cache(a) => u32::from(a),
            FlowTarget::Normal => 0,
        };
        let range = self.set(&flow);
        let Some(set) = self.slots.get(range.clone()) else {
            return Inserted::default();
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
        let result = Inserted {
            changed: !(was_same && was_live && set.get(pick).is_some_and(|s| s.target == target)),
            displaced: set
                .get(pick)
                .filter(|s| s.seen != 0 && !was_same)
                .map(|s| s.flow),
        };
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
        result
    }

    /// Forgets `flow` (it ended with a RST); true when it was remembered.
    pub fn remove(&mut self, flow: &FlowId, stats: &AffinityStats) -> bool {
        let range = self.set(flow);
        if let Some(slot) = self
            .slots
            .get_mut(range)
            .and_then(|set| set.iter_mut().find(|s| s.flow == *flow && s.seen != 0))
        {
            slot.seen = 0;
            self.live = self.live.saturating_sub(1);
            stats.entries.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Drops expired flows from the live count (housekeeping, about once a second); `gone`
    /// hears of each.
    pub fn sweep(&mut self, now: Instant, stats: &AffinityStats, mut gone: impl FnMut(&FlowId)) {
        let tick = self.tick(now);
        let idle = self.idle_secs;
        let mut freed = 0u64;
        for s in &mut self.slots {
            if s.seen != 0 && tick.saturating_sub(s.seen) >= idle {
                s.seen = 0;
                freed += 1;
                gone(&s.flow);
            }
        }
        self.live = self.live.saturating_sub(freed);
        stats.entries.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Forgets everything (the table is being replaced), keeping the statistics right; `gone`
    /// hears of every flow that was held.
    pub fn clear(&mut self, stats: &AffinityStats, mut gone: impl FnMut(&FlowId)) {
        stats.entries.fetch_sub(self.live, Ordering::Relaxed);
        self.live = 0;
        for s in self.slots.iter_mut().filter(|s| s.seen != 0) {
            s.seen = 0;
            gone(&s.flow);
        }
    }

    /// Every flow remembered and not expired at `now` (a full re-export for the HA peer).
    pub fn for_each_live(&self, now: Instant, mut f: impl FnMut(&FlowId, FlowTarget)) {
        let tick = self.tick(now);
        for s in self.slots.iter().filter(|s| self.live_at(s, tick)) {
            f(&s.flow, target_of(s.target));
        }
    }
}

/// What [`AffinityTable::insert`] changed, for the HA peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// The flow's entry is new or its target changed (a SYN retransmission changes nothing).
    pub changed: bool,
    /// Another flow whose slot was taken.
    pub displaced: Option<FlowId>,
}

fn target_of(raw: u32) -> FlowTarget {
    if raw == 0 {
        FlowTarget::Normal
    } else {
        FlowTarget::Cache(raw.into())
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
        // A SYN retransmission changes nothing the peer needs to hear.
        assert!(!t.insert(flow(2), FlowTarget::Normal, t0, &stats).changed);
        // Refreshed at 9 s: still there at 18 s, gone at 30 s.
        assert_eq!(
            t.lookup(&flow(1), t0 + Duration::from_secs(18)),
            Some(cache)
        );
        assert_eq!(t.lookup(&flow(1), t0 + Duration::from_secs(30)), None);
        let mut gone = Vec::new();
        t.sweep(t0 + Duration::from_secs(30), &stats, |f| gone.push(*f));
        assert_eq!(gone.len(), 2, "the peer hears of both expiries");
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
        let ins = t.insert(
            flow(9),
            FlowTarget::Normal,
            t0 + Duration::from_secs(5),
            &stats,
        );
        // The HA peer hears that flow 0 is gone with it.
        assert_eq!(
            ins,
            Inserted {
                changed: true,
                displaced: Some(flow(0))
            }
        );
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(stats.entries.load(Ordering::Relaxed), 4);
        assert_eq!(
            t.lookup(&flow(0), t0 + Duration::from_secs(5)),
            None,
            "oldest evicted"
        );
        assert!(t.lookup(&flow(9), t0 + Duration::from_secs(5)).is_some());
        assert!(t.remove(&flow(9), &stats));
        assert!(!t.remove(&flow(9), &stats));
        assert_eq!(t.lookup(&flow(9), t0 + Duration::from_secs(5)), None);
        assert_eq!(stats.entries.load(Ordering::Relaxed), 3);
        let mut live = Vec::new();
        t.for_each_live(t0 + Duration::from_secs(5), |f, _| live.push(f.sport));
        live.sort();
        assert_eq!(live, [40001, 40002, 40003]);
        let mut gone = 0;
        t.clear(&stats, |_| gone += 1);
        assert_eq!(gone, 3, "the peer hears of every flow cleared");
        assert_eq!(stats.entries.load(Ordering::Relaxed), 0);
    }
}
