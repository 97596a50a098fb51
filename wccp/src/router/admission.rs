//! Admission of caches that have not yet echoed a Receive ID (issue 13 item 10): how many a
//! group keeps per source network and in all, which one makes room for a newcomer, and the
//! token buckets that bound I_SEE_YOUs to such sources (a spoofed HERE_I_AM must not turn
//! the router into a reflector).

use core::net::Ipv4Addr;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Prefix length of a "source network": caches of one site share a /24, and a flood from one
/// /24 then only competes with itself.
pub const SOURCE_NET_BITS: u32 = 24;

/// Joining (not yet echoed) caches kept per source network: a whole group's worth (32), so a
/// cluster on one /24 that starts at once all fits; a newcomer beyond it replaces that
/// network's oldest.
pub const JOINING_PER_NET: usize = crate::assign::MAX_CACHES;

/// Joining caches kept per group in all (the rest of [`super::group::MAX_TRACKED`] is for
/// echoed ones); a newcomer beyond it replaces the oldest one of the most crowded network,
/// never an echoed cache.
pub const MAX_JOINING: usize = super::group::MAX_TRACKED - crate::assign::MAX_CACHES;

/// I_SEE_YOUs a group sends to sources that have not echoed, at most, in a burst…
pub const UNECHOED_BURST: u32 = 64;
/// …and then one per this interval (16 per second), whatever the sources.
pub const UNECHOED_EVERY: Duration = Duration::from_millis(62);

/// The same per source network: a burst of 16, then one every 2 s. Every first contact
/// costs its network a token whether or not the group's budget lets it be answered, so a
/// flood from a few networks soon runs into its own limit and leaves the group's budget to
/// the others. (A flood that keeps moving to fresh networks can still use the group's budget
/// up and delay a real cache's first answer: the bound on reflection comes first.)
pub const NET_BURST: u32 = 16;
/// Refill interval of a network's bucket.
pub const NET_EVERY: Duration = Duration::from_secs(2);

/// Networks whose buckets are remembered; beyond it the one idle longest is forgotten.
pub const MAX_NETS: usize = 256;

/// The source network of `a` (its /24).
pub fn source_net(a: Ipv4Addr) -> u32 {
    u32::from(a) >> (32 - SOURCE_NET_BITS)
}

/// A token bucket on the engine's clock (time is passed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    tokens: u32,
    burst: u32,
    every: Duration,
    /// When the last token was added (or the bucket was last full).
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(now: Instant, burst: u32, every: Duration) -> Self {
        Self {
            tokens: burst,
            burst,
            every,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens >= self.burst {
            self.last = now;
            return;
        }
        let every = self.every.as_nanos().max(1);
        let n = now.saturating_duration_since(self.last).as_nanos() / every;
        if n > 0 {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(n).min(self.burst);
            self.last = if self.tokens >= self.burst {
                now
            } else {
                self.last + self.every * n
            };
        }
    }

    /// True when a token was left (and takes it).
    fn has(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0
    }

    fn take(&mut self) {
        self.tokens = self.tokens.saturating_sub(1);
    }
}

/// The group's budget for I_SEE_YOUs to sources that have not echoed.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplyLimiter {
    group: Option<TokenBucket>,
    nets: BTreeMap<u32, TokenBucket>,
}

impl ReplyLimiter {
    /// True when an I_SEE_YOU to the unechoed source `src` may be sent now: its network's
    /// bucket (charged for every request) and the group's (charged for answers) had a token.
    pub(crate) fn allow(&mut self, now: Instant, src: Ipv4Addr) -> bool {
        let group = self
            .group
            .get_or_insert_with(|| TokenBucket::new(now, UNECHOED_BURST, UNECHOED_EVERY));
        let net = source_net(src);
        if !self.nets.contains_key(&net) && self.nets.len() >= MAX_NETS {
            let idle = self
                .nets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(n, _)| *n);
            if let Some(idle) = idle {
                self.nets.remove(&idle);
            }
        }
        let bucket = self
            .nets
            .entry(net)
            .or_insert_with(|| TokenBucket::new(now, NET_BURST, NET_EVERY));
        if !bucket.has(now) {
            return false;
        }
        bucket.take();
        if !group.has(now) {
            return false;
        }
        group.take();
        true
    }

    /// Networks remembered (bounded by [`MAX_NETS`]).
    #[cfg(test)]
    pub(crate) fn nets(&self) -> usize {
        self.nets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn buckets_refill_and_cap() {
        let base = t0();
        let mut b = TokenBucket::new(base, 2, Duration::from_secs(1));
        assert!(b.has(base));
        b.take();
        b.take();
        assert!(!b.has(base + Duration::from_millis(999)));
        assert!(b.has(base + Duration::from_secs(1)));
        b.take();
        assert!(!b.has(base + Duration::from_millis(1500)));
        assert!(b.has(base + Duration::from_secs(100)));
        assert_eq!(b.tokens, 2, "capped at the burst");
        // A clock that goes backwards takes nothing away.
        assert!(b.has(base));
    }

    #[test]
    fn one_network_cannot_use_up_the_group() {
        let base = t0();
        let mut l = ReplyLimiter::default();
        let flood = (0..200u8).filter(|i| l.allow(base, Ipv4Addr::new(10, 9, 9, *i)));
        assert_eq!(flood.count(), NET_BURST as usize);
        assert!(l.allow(base, Ipv4Addr::new(10, 0, 0, 2)), "another network");
        // Many networks: the group's budget bounds them all.
        let n = (0..1000u32)
            .filter(|i| l.allow(base, Ipv4Addr::from(0x0b00_0000 + (i << 8))))
            .count();
        assert_eq!(n, UNECHOED_BURST as usize - NET_BURST as usize - 1);
        // A refused answer still cost its network a token.
        let later = base + UNECHOED_EVERY * 20;
        let net = |i: u8| Ipv4Addr::new(10, 8, 8, i);
        assert!(!(0..NET_BURST as u8).any(|i| l.allow(base, net(i))));
        assert!(!l.allow(later, net(99)), "its burst went on refusals");
        assert!(l.nets() <= MAX_NETS);
    }
}
