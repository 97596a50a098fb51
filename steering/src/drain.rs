//! Flows opened during a reset pool's drain window.
//!
//! While a dead device drains, its established flows are answered with a RST; the decision
//! tells an established flow from a new one by memory alone, since both hash to the dead
//! home. A client's SYN steered to a live member during the window is remembered here, so the
//! rest of that connection follows its SYN instead of being reset. The memory is small,
//! bounded and caller-owned (one per worker: the router's fanout keeps a flow on one worker),
//! allocated once; a full set overwrites its oldest entry and counts an eviction (that flow's
//! next segment is reset and the client reconnects).

/// Entries per set: one cache line of 64-bit keys.
const WAYS: usize = 8;

/// Most changes the journal holds between two [`DrainedFlows::drain_journal`] calls.
pub const JOURNAL_MAX: usize = 4096;

/// A change of the memory, for the HA peer (journaling on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrainChange {
    /// A connection was remembered.
    Remembered(u64),
    /// A remembered connection was overwritten by a newer one.
    Forgotten(u64),
}

/// A bounded set-associative memory of flow keys (never allocates after [`DrainedFlows::new`]).
#[derive(Debug, Clone)]
pub struct DrainedFlows {
    /// `sets × WAYS` keys; 0 marks an empty way.
    keys: Box<[u64]>,
    /// Next way to overwrite, per set.
    victim: Box<[u8]>,
    /// `sets - 1` (sets is a power of two).
    set_mask: usize,
    /// Remembered flows overwritten by newer ones.
    evictions: u64,
    /// Changes since the last drain, while journaling (HA sync); allocated once when it is
    /// turned on.
    journal: Option<Vec<DrainChange>>,
    /// Changes the full journal could not hold.
    journal_lost: u64,
}

impl Default for DrainedFlows {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl DrainedFlows {
    /// Flows one worker remembers by default (64 KiB).
    pub const DEFAULT_CAPACITY: usize = 8192;

    /// A memory for at least `capacity` flows (rounded up to a power of two sets of 8).
    pub fn new(capacity: usize) -> Self {
        let sets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            keys: vec![0; sets * WAYS].into_boxed_slice(),
            victim: vec![0; sets].into_boxed_slice(),
            set_mask: sets - 1,
            evictions: 0,
            journal: None,
            journal_lost: 0,
        }
    }

    /// Records every change in a journal (the node is the active of an HA pair) or not.
    pub fn set_journaling(&mut self, on: bool) {
        match (on, self.journal.is_some()) {
            (true, false) => self.journal = Some(Vec::with_capacity(JOURNAL_MAX)),
            (false, true) => self.journal = None,
            _ => {}
        }
    }

    /// Hands the journal's changes to `f`, oldest first, and empties it.
    pub fn drain_journal(&mut self, mut f: impl FnMut(DrainChange)) {
        if let Some(j) = self.journal.as_mut() {
            j.drain(..).for_each(&mut f);
        }
    }

    /// True when the journal holds changes.
    #[inline]
    pub fn has_journal(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| !j.is_empty())
    }

    /// Changes lost to a full journal since creation.
    pub fn journal_lost(&self) -> u64 {
        self.journal_lost
    }

    /// Every remembered key (an HA re-export).
    pub fn for_each_key(&self, mut f: impl FnMut(u64)) {
        self.keys.iter().filter(|k| **k != 0).for_each(|k| f(*k));
    }

    /// Remembers a key the HA peer remembered: like [`Self::remember`], not journaled.
    pub fn adopt(&mut self, key: u64) {
        self.insert(key, false);
    }

    fn note(&mut self, c: DrainChange) {
        if let Some(j) = self.journal.as_mut() {
            if j.len() < JOURNAL_MAX {
                j.push(c);
            } else {
                self.journal_lost += 1;
            }
        }
    }

    /// How many flows fit.
    pub fn capacity(&self) -> usize {
        self.keys.len()
    }

    /// Remembered flows overwritten by newer ones since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Forgets every flow.
    pub fn clear(&mut self) {
        self.keys.fill(0);
    }

    /// Remembers `key` (idempotent).
    pub fn remember(&mut self, key: u64) {
        self.insert(key, true);
    }

    fn insert(&mut self, key: u64, journal: bool) {
        let key = key | 1;
        let set = self.set_of(key);
        let Some(ways) = self.keys.get_mut(set * WAYS..set * WAYS + WAYS) else {
            return;
        };
        if ways.contains(&key) {
            return;
        }
        if let Some(free) = ways.iter_mut().find(|k| **k == 0) {
            *free = key;
            if journal {
                self.note(DrainChange::Remembered(key));
            }
            return;
        }
        let Some(v) = self.victim.get_mut(set) else {
            return;
        };
        let way = usize::from(*v) % WAYS;
        *v = ((way + 1) % WAYS) as u8;
        if let Some(slot) = ways.get_mut(way) {
            let old = std::mem::replace(slot, key);
            self.evictions += 1;
            if journal {
                self.note(DrainChange::Forgotten(old));
                self.note(DrainChange::Remembered(key));
            }
        }
    }

    /// True when `key` was remembered (and not evicted since).
    pub fn contains(&self, key: u64) -> bool {
        let key = key | 1;
        let set = self.set_of(key);
        self.keys
            .get(set * WAYS..set * WAYS + WAYS)
            .is_some_and(|ways| ways.contains(&key))
    }

    /// The set a key lives in: high bits, since the low bit is forced on.
    fn set_of(&self, key: u64) -> usize {
        ((key >> 17) as usize) & self.set_mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_forgets() {
        let mut m = DrainedFlows::new(64);
        assert_eq!(m.capacity(), 64);
        assert!(!m.contains(42));
        m.remember(42);
        m.remember(42);
        assert!(m.contains(42));
        assert!(!m.contains(43 << 20));
        m.clear();
        assert!(!m.contains(42));
        assert_eq!(m.evictions(), 0);
    }

    #[test]
    fn a_full_set_evicts_its_oldest_entry_and_counts_it() {
        let mut m = DrainedFlows::new(8); // one set
        let keys: Vec<u64> = (1..=9u64).map(|i| i << 32).collect();
        for &k in &keys {
            m.remember(k);
        }
        assert_eq!(m.evictions(), 1);
        assert!(!m.contains(keys[0]), "the first key was overwritten");
        for &k in &keys[1..] {
            assert!(m.contains(k));
        }
    }

    #[test]
    fn the_journal_tells_the_ha_peer_what_was_remembered_and_overwritten() {
        let mut m = DrainedFlows::new(8); // one set
        m.remember(1 << 32);
        assert!(!m.has_journal(), "off by default");
        m.set_journaling(true);
        let keys: Vec<u64> = (2..=9u64).map(|i| i << 32).collect();
        for &k in &keys {
            m.remember(k);
        }
        m.remember(keys[0]); // already there: no change
        m.adopt(10 << 32); // the peer's: not journaled, but it overwrites
        let mut got = Vec::new();
        m.drain_journal(|c| got.push(c));
        // Seven free ways, then the eighth key overwrites the oldest (remembered unjournaled).
        assert_eq!(got.len(), 9, "{got:?}");
        assert_eq!(got[0], DrainChange::Remembered(keys[0] | 1));
        assert_eq!(got[7], DrainChange::Forgotten((1 << 32) | 1));
        assert_eq!(got[8], DrainChange::Remembered(keys[7] | 1));
        assert!(m.contains(10 << 32));
        assert!(!m.has_journal());
        let mut all = 0;
        m.for_each_key(|_| all += 1);
        assert_eq!(all, 8);
    }

    #[test]
    fn capacity_rounds_up() {
        assert_eq!(DrainedFlows::new(0).capacity(), 8);
        assert_eq!(DrainedFlows::new(100).capacity(), 128);
        assert_eq!(DrainedFlows::default().capacity(), 8192);
    }
}
