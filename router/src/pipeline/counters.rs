//! Always-on counters: one writer (a worker thread), any number of readers (status).
//!
//! A counter is an `AtomicU64` updated with a relaxed load and store rather than `fetch_add`: the
//! owning worker is the only writer, so no read-modify-write (and no locked instruction) is
//! needed on the per-packet path, while the management thread can still read a consistent u64.

use super::drop::DropReason;
use std::sync::atomic::{AtomicU64, Ordering};

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (only the owning worker calls this).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one pipeline stage.
#[derive(Debug)]
pub struct StageCounters {
    /// Packets that entered the stage.
    pub packets_in: Counter,
    /// Packets passed on to the next stage (or handed to the egress for tx).
    pub packets_out: Counter,
    /// Packets consumed here on purpose (answered, delivered locally). A packet the neighbour
    /// stage holds for ARP is counted once, when it leaves the queue: out when released,
    /// dropped when given up; until then `packets_in` exceeds the other three by the held ones.
    pub consumed: Counter,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [Counter; DropReason::COUNT],
}

impl Default for StageCounters {
    fn default() -> Self {
        StageCounters {
            packets_in: Counter::default(),
            packets_out: Counter::default(),
            consumed: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
        }
    }
}

/// Counters of one interface as seen by one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: Counter,
    /// Bytes received (Ethernet header included).
    pub rx_bytes: Counter,
    /// Frames transmitted.
    pub tx_packets: Counter,
    /// Bytes transmitted.
    pub tx_bytes: Counter,
    /// Frames the socket refused.
    pub tx_errors: Counter,
    /// Receive errors other than "nothing to read".
    pub rx_errors: Counter,
    /// Frames the kernel dropped because our socket buffer or ring was full (`rx-ring-full`):
    /// the router was overloaded and shed load at the edge rather than stall.
    pub rx_ring_full: Counter,
    /// Frames the mmap ring handed over that could not be read whole (truncated in their slot
    /// with no whole copy on the receive queue, `rx-truncated`): lost.
    pub rx_truncated: Counter,
}

/// The cluster stage's frames to the cluster MAC by fate (issue 16; all zero without
/// `[cluster]`). Foreign and hold-full frames are also the stage's drops.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Of an id this node owns: passed on.
    pub owned: Counter,
    /// Of an id another node owns: dropped (`cluster-foreign`).
    pub foreign: Counter,
    /// Of a moving id: held.
    pub held: Counter,
    /// Held, then run here (the id stayed or came back).
    pub released: Counter,
    /// Held, then forwarded to the id's new owner.
    pub handed: Counter,
    /// Of a moving id with the hold queue full (`cluster-hold-full`).
    pub hold_full: Counter,
    /// Held, then dropped: the id went foreign without a hand-off (`cluster-hold-dropped`).
    pub hold_dropped: Counter,
    /// With no distribution id (the id function could not read it): handled here.
    pub not_distributed: Counter,
    /// Handed over by a just-gained id's old owner but already handled here
    /// (`cluster-duplicate`).
    pub duplicates: Counter,
}

/// Everything one worker counts; shared read-only with the management thread.
#[derive(Debug)]
pub struct WorkerCounters {
    /// Per stage, indexed by `StageId as usize`.
    pub stages: Vec<StageCounters>,
    /// Per interface, indexed by interface id.
    pub ports: Vec<PortCounters>,
    /// Bursts processed.
    pub bursts: Counter,
    /// ICMP errors suppressed by the rate limiter.
    pub icmp_rate_limited: Counter,
    /// The cluster stage's counters.
    pub cluster: ClusterCounters,
}

impl WorkerCounters {
    /// Counters for `stages` stages and `ports` interfaces, all zero.
    pub fn new(stages: usize, ports: usize) -> Self {
        WorkerCounters {
            stages: (0..stages).map(|_| StageCounters::default()).collect(),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            bursts: Counter::default(),
            icmp_rate_limited: Counter::default(),
            cluster: ClusterCounters::default(),
        }
    }
}
