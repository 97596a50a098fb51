//! The ARP neighbour table.
//!
//! Workers read an immutable [`NeighSnapshot`] (one `arc-swap` load per burst). Learning happens
//! only when an ARP packet arrives, which is rare next to forwarded traffic, so writers take a
//! mutex on the master copy and publish a new snapshot only when a binding appears, changes or
//! goes away; a plain refresh of an existing binding does not republish.

use super::IfId;
use crate::wire::ethernet::MacAddr;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a binding is trusted after the last ARP packet from its owner.
pub const REACHABLE_TIME: Duration = Duration::from_secs(60);
/// Unanswered unicast probes before a stale binding is removed.
pub const MAX_PROBES: u8 = 3;
/// Interval between probes of a stale binding.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Most bindings kept; beyond it new neighbours are not learnt (and counted).
pub const MAX_ENTRIES: usize = 16_384;

/// What the forwarding path sees: (interface, address) → MAC, plus a generation number that
/// changes on every publish so workers know when to retry their pending packets.
#[derive(Debug, Default)]
pub struct NeighSnapshot {
    /// Bindings, keyed by [`neigh_key`].
    pub map: HashMap<u64, MacAddr, BuildHasherDefault<KeyHasher>>,
    /// Incremented on every publish.
    pub generation: u64,
}

impl NeighSnapshot {
    /// The MAC for `addr` on interface `ifid`.
    #[inline]
    pub fn lookup(&self, ifid: IfId, addr: Ipv4Addr) -> Option<MacAddr> {
        self.map.get(&neigh_key(ifid, addr)).copied()
    }
}

/// The forwarding-path key of a binding: interface and address packed in one word.
#[inline]
pub fn neigh_key(ifid: IfId, addr: Ipv4Addr) -> u64 {
    (ifid as u64) << 32 | u32::from(addr) as u64
}

/// A hasher for [`neigh_key`] words: one multiply and a fold. SipHash (std's default) resists
/// hash flooding but costs ~20 ns a lookup; neighbour keys are addresses on our own connected
/// networks, bounded by MAX_ENTRIES and created only for ARP that was for us, so flooding the
/// table is already limited where it is filled.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, k: u64) {
        let x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ b as u64);
        }
    }
}

/// One binding with its ageing state.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Hardware address.
    pub mac: MacAddr,
    /// Last time an ARP packet from this neighbour confirmed the binding.
    pub confirmed: Instant,
    /// Probes sent since the binding went stale.
    pub probes: u8,
    /// When the last probe went out.
    pub last_probe: Option<Instant>,
}

/// A neighbour the caller must probe now (unicast ARP request to `mac`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Interface.
    pub ifid: IfId,
    /// Neighbour address.
    pub addr: Ipv4Addr,
    /// Its last known MAC.
    pub mac: MacAddr,
}

/// Learnt/expired totals.
#[derive(Debug, Default, Clone, Copy)]
pub struct NeighStats {
    /// Bindings created.
    pub learned: u64,
    /// Bindings whose MAC changed.
    pub changed: u64,
    /// Bindings removed after unanswered probes.
    pub expired: u64,
    /// Bindings not created because the table was full.
    pub table_full: u64,
}

#[derive(Debug, Default)]
struct Master {
    entries: HashMap<(IfId, Ipv4Addr), Entry>,
    generation: u64,
    stats: NeighStats,
}

/// The shared table.
#[derive(Debug, Default)]
pub struct Neighbours {
    master: Mutex<Master>,
    snapshot: ArcSwap<NeighSnapshot>,
}

impl Neighbours {
    /// The current snapshot.
    pub fn load(&self) -> Arc<NeighSnapshot> {
        self.snapshot.load_full()
    }

    fn publish(&self, m: &mut Master) {
        m.generation += 1;
        let map = m
            .entries
            .iter()
            .map(|(k, e)| (neigh_key(k.0, k.1), e.mac))
            .collect();
        self.snapshot.store(Arc::new(NeighSnapshot {
            map,
            generation: m.generation,
        }));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Master> {
        // A worker that panicked while holding the lock left the map consistent (every update is
        // a single insert/remove), so poisoning is not a reason to stop forwarding.
        self.master.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `addr` on `ifid` is at `mac`. With `create == false` only an existing binding
    /// is refreshed (RFC 826: update if present, add only if the packet was for us).
    pub fn learn(&self, ifid: IfId, addr: Ipv4Addr, mac: MacAddr, create: bool, now: Instant) {
        let mut m = self.lock();
        let key = (ifid, addr);
        match m.entries.get_mut(&key) {
            Some(e) => {
                let changed = e.mac != mac;
                e.mac = mac;
                e.confirmed = now;
                e.probes = 0;
                e.last_probe = None;
                if changed {
                    m.stats.changed += 1;
                    self.publish(&mut m);
                }
            }
            None if create => {
                if m.entries.len() >= MAX_ENTRIES {
                    m.stats.table_full += 1;
                    return;
                }
                m.entries.insert(
                    key,
                    Entry {
                        mac,
                        confirmed: now,
                        probes: 0,
                        last_probe: None,
                    },
                );
                m.stats.learned += 1;
                self.publish(&mut m);
            }
            None => {}
        }
    }

    /// Ages the table: returns the stale bindings to probe now and removes those whose probes
    /// went unanswered. Called about once a second by one worker.
    pub fn age(&self, now: Instant, probes: &mut Vec<Probe>) {
        let mut m = self.lock();
        let mut expired = Vec::new();
        for (k, e) in m.entries.iter_mut() {
            if now.saturating_duration_since(e.confirmed) < REACHABLE_TIME {
                continue;
            }
            let due = e
                .last_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_INTERVAL);
            if !due {
                continue;
            }
            if e.probes >= MAX_PROBES {
                expired.push(*k);
            } else {
                e.probes += 1;
                e.last_probe = Some(now);
                probes.push(Probe {
                    ifid: k.0,
                    addr: k.1,
                    mac: e.mac,
                });
            }
        }
        if !expired.is_empty() {
            for k in &expired {
                m.entries.remove(k);
            }
            m.stats.expired += expired.len() as u64;
            self.publish(&mut m);
        }
    }

    /// Removes every binding on the interfaces for which `keep` is false (used on reload).
    pub fn retain_ifaces(&self, keep: impl Fn(IfId) -> bool) {
        let mut m = self.lock();
        let before = m.entries.len();
        m.entries.retain(|k, _| keep(k.0));
        if m.entries.len() != before {
            self.publish(&mut m);
        }
    }

    /// A copy of all bindings with their state, for status.
    pub fn entries(&self) -> Vec<((IfId, Ipv4Addr), Entry)> {
        let m = self.lock();
        let mut v: Vec<_> = m.entries.iter().map(|(k, e)| (*k, e.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Totals.
    pub fn stats(&self) -> NeighStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const MAC1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const MAC2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn learn_publishes_only_on_change() {
        let n = Neighbours::default();
        let t0 = Instant::now();
        n.learn(0, A, MAC1, false, t0);
        assert_eq!(n.load().lookup(0, A), None, "refresh-only must not create");
        n.learn(0, A, MAC1, true, t0);
        let g1 = n.load().generation;
        assert_eq!(n.load().lookup(0, A), Some(MAC1));
        n.learn(0, A, MAC1, true, t0 + Duration::from_secs(1));
        assert_eq!(n.load().generation, g1, "a refresh does not republish");
        n.learn(0, A, MAC2, false, t0);
        assert_eq!(n.load().lookup(0, A), Some(MAC2));
        assert!(n.load().generation > g1);
    }

    #[test]
    fn stale_entries_are_probed_then_expire() {
        let n = Neighbours::default();
        let t0 = Instant::now();
        n.learn(1, A, MAC1, true, t0);
        let mut probes = Vec::new();
        n.age(t0 + Duration::from_secs(10), &mut probes);
        assert!(probes.is_empty());
        let mut t = t0 + REACHABLE_TIME;
        for i in 0..MAX_PROBES {
            probes.clear();
            n.age(t, &mut probes);
            assert_eq!(
                probes,
                vec![Probe {
                    ifid: 1,
                    addr: A,
                    mac: MAC1
                }],
                "probe {i}"
            );
            t += PROBE_INTERVAL;
        }
        probes.clear();
        n.age(t, &mut probes);
        assert!(probes.is_empty());
        assert_eq!(n.load().lookup(1, A), None);
        assert_eq!(n.stats().expired, 1);
    }

    #[test]
    fn an_answer_stops_probing() {
        let n = Neighbours::default();
        let t0 = Instant::now();
        n.learn(1, A, MAC1, true, t0);
        let mut probes = Vec::new();
        n.age(t0 + REACHABLE_TIME, &mut probes);
        assert_eq!(probes.len(), 1);
        n.learn(1, A, MAC1, false, t0 + REACHABLE_TIME);
        probes.clear();
        n.age(t0 + REACHABLE_TIME + PROBE_INTERVAL, &mut probes);
        assert!(probes.is_empty());
        assert_eq!(n.load().lookup(1, A), Some(MAC1));
    }
}
