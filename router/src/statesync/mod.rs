//! What the router's state owners share with the HA state-sync driver (issue 15, seed 004).
//!
//! State owners (NAT workers, the WCCP driver, the neighbour table, …) publish their changes as
//! [`hasync::Record`]s into a [`SyncFeed`]; the control plane's sync driver drains it into the
//! `hasync` endpoint(s) and keeps the local copy a bulk resync is cut from. A feed made with
//! [`SyncFeed::disabled`] (no `[ha] sync` configured) costs one branch per publish.
//!
//! On the receiving node the driver hands each record of the peer to the owner of its table
//! (`TableId`): the owner applies it to its standby copy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use hasync::Record;
use tokio::sync::Notify;

/// Records a feed holds before publishers start dropping (and the driver falls back to a full
/// re-export): a few seconds of NAT set-ups at full rate.
pub const FEED_CAPACITY: usize = 1 << 18;

/// The publishing side of the sync driver's queue. Cheap to clone; every thread may publish.
#[derive(Clone, Default)]
pub struct SyncFeed {
    inner: Option<Arc<FeedInner>>,
}

struct FeedInner {
    queue: ArrayQueue<Record>,
    /// A wake-up is on its way: later publishers skip the notify (one wake per drain).
    wake_pending: AtomicBool,
    notify: Notify,
    published: AtomicU64,
    dropped: AtomicU64,
    /// Set when a record was dropped; the driver clears it and asks owners to re-export.
    overflowed: AtomicBool,
}

impl std::fmt::Debug for SyncFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncFeed")
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
    }
}

/// Counters of a feed, for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCounters {
    /// Records accepted into the queue.
    pub published: u64,
    /// Records dropped because the queue was full (each triggers a re-export).
    pub dropped: u64,
}

impl SyncFeed {
    /// A feed that drops everything at no cost: HA sync is not configured.
    pub fn disabled() -> SyncFeed {
        SyncFeed { inner: None }
    }

    /// A live feed holding up to `capacity` records (at least 1).
    pub fn new(capacity: usize) -> SyncFeed {
        SyncFeed {
            inner: Some(Arc::new(FeedInner {
                queue: ArrayQueue::new(capacity.max(1)),
                wake_pending: AtomicBool::new(false),
                notify: Notify::new(),
                published: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                overflowed: AtomicBool::new(false),
            })),
        }
    }

    /// True when records go somewhere (HA sync is configured).
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `rec` for the peer; never blocks. A full queue drops it, counts it and marks the
    /// feed overflowed (the driver then asks every owner for a full re-export).
    pub fn publish(&self, rec: Record) {
        let Some(inner) = &self.inner else { return };
        if inner.queue.push(rec).is_err() {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            inner.overflowed.store(true, Ordering::Release);
        } else {
            inner.published.fetch_add(1, Ordering::Relaxed);
        }
        // Ordering: the push above happens before the swap, and the driver clears the flag
        // before it drains, so a record pushed while a wake is pending is seen by that drain.
        if !inner.wake_pending.swap(true, Ordering::AcqRel) {
            inner.notify.notify_one();
        }
    }

    /// Waits until something was published (the driver's side). Returns at once when a
    /// publish happened since the last [`drain`](Self::drain). Never returns on a disabled feed.
    pub async fn ready(&self) {
        match &self.inner {
            Some(inner) => inner.notify.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Takes every queued record, oldest first, into `out` (the driver's side).
    pub fn drain(&self, out: &mut Vec<Record>) {
        let Some(inner) = &self.inner else { return };
        inner.wake_pending.store(false, Ordering::Release);
        while let Some(rec) = inner.queue.pop() {
            out.push(rec);
        }
    }

    /// True (once) after records were dropped: the driver must ask owners to re-export.
    pub fn take_overflow(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.overflowed.swap(false, Ordering::AcqRel))
    }

    /// The feed's counters.
    pub fn counters(&self) -> FeedCounters {
        match &self.inner {
            Some(i) => FeedCounters {
                published: i.published.load(Ordering::Relaxed),
                dropped: i.dropped.load(Ordering::Relaxed),
            },
            None => FeedCounters::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasync::TableId;

    #[test]
    fn disabled_feed_takes_nothing() {
        let feed = SyncFeed::disabled();
        feed.publish(Record::upsert(TableId::NAT_SESSION, vec![1], vec![2]));
        let mut out = Vec::new();
        feed.drain(&mut out);
        assert!(out.is_empty());
        assert_eq!(feed.counters(), FeedCounters::default());
    }

    #[test]
    fn records_come_out_in_order_and_overflow_is_flagged_once() {
        let feed = SyncFeed::new(2);
        for i in 0..3u8 {
            feed.publish(Record::upsert(TableId::NAT_SESSION, vec![i], vec![]));
        }
        let mut out = Vec::new();
        feed.drain(&mut out);
        let keys: Vec<u8> = out.iter().map(|r| r.key[0]).collect();
        assert_eq!(keys, [0, 1]);
        assert_eq!(
            feed.counters(),
            FeedCounters {
                published: 2,
                dropped: 1
            }
        );
        assert!(feed.take_overflow());
        assert!(!feed.take_overflow());
    }

    #[test]
    fn a_publish_from_another_thread_wakes_the_driver() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let feed = SyncFeed::new(16);
        let publisher = feed.clone();
        rt.block_on(async move {
            let t = std::thread::spawn(move || {
                publisher.publish(Record::delete(TableId::NEIGHBOUR, vec![9]));
            });
            tokio::time::timeout(std::time::Duration::from_secs(5), feed.ready())
                .await
                .expect("woken");
            t.join().unwrap();
            let mut out = Vec::new();
            feed.drain(&mut out);
            assert_eq!(out.len(), 1);
        });
    }
}
