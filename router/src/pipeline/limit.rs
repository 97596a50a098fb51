//! Rate limits of the ICMP messages a worker originates: errors (RFC 1812 §4.3.2.8) and echo
//! replies.
//!
//! Each kind has its own [`IcmpLimiter`]: a token bucket per destination (the host the message
//! goes to) in a bounded table, and a worker-wide bucket above them. The per-destination bucket
//! keeps one busy or hostile host from using up the budget every other host's traceroute or
//! ping needs; the worker-wide one bounds the total when many sources (spoofed or not) ask at
//! once. Destinations are whole addresses, not /24s: the message goes back to the host that
//! caused it, and a /24 bucket would let one host on a shared network starve its neighbours.
//!
//! The table has [`DST_SLOTS`] slots in 4-way sets chosen by a keyed SipHash (std
//! `RandomState`), allocated with the pipeline: the per-packet path never allocates. A
//! destination not in its set takes the least recently used slot and starts with a full bucket;
//! that is why the worker-wide bucket is needed.

use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;
use std::time::Instant;

/// ICMP errors per second per worker, all destinations together, and the burst allowed above
/// it (Linux allows 1000/s with a burst of 50 per host: `icmp_msgs_per_sec`, `icmp_msgs_burst`).
pub const ICMP_RATE_PER_SEC: u32 = 100;
/// Burst size of the worker-wide ICMP error bucket.
pub const ICMP_BURST: u32 = 50;
/// ICMP errors per second to one destination (Linux: one per `icmp_ratelimit`, 1 s, burst 6;
/// more here so a traceroute's three probes per hop are all answered).
pub const ICMP_PER_DST_RATE_PER_SEC: u32 = 10;
/// Burst of ICMP errors to one destination.
pub const ICMP_PER_DST_BURST: u32 = 10;
/// Echo replies per second per worker, all destinations together.
pub const ECHO_RATE_PER_SEC: u32 = 1000;
/// Burst of the worker-wide echo reply bucket.
pub const ECHO_BURST: u32 = 200;
/// Echo replies per second to one destination (a `ping -i 0.02` is still answered in full).
pub const ECHO_PER_DST_RATE_PER_SEC: u32 = 50;
/// Burst of echo replies to one destination.
pub const ECHO_PER_DST_BURST: u32 = 50;
/// Destinations tracked per limiter (per worker).
pub const DST_SLOTS: usize = 512;

/// Slots per set of the destination table.
const WAYS: usize = 4;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` saved.
    pub fn new(rate: u32, burst: u32) -> Self {
        TokenBucket {
            tokens: burst as f64,
            rate: rate as f64,
            burst: burst as f64,
            last: None,
        }
    }

    /// Adds the tokens earned since the last call.
    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.tokens = (self.tokens
                + now.saturating_duration_since(last).as_secs_f64() * self.rate)
                .min(self.burst);
        }
        self.last = Some(now);
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket::new(ICMP_RATE_PER_SEC, ICMP_BURST)
    }
}

/// One destination's bucket.
#[derive(Debug, Clone, Copy)]
struct DstSlot {
    dst: u32,
    /// `last` is `None` while the slot is unused.
    bucket: TokenBucket,
}

/// Rates of one [`IcmpLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConf {
    /// Messages per second to one destination.
    pub per_dst_rate: u32,
    /// Burst to one destination.
    pub per_dst_burst: u32,
    /// Messages per second, all destinations together.
    pub total_rate: u32,
    /// Burst, all destinations together.
    pub total_burst: u32,
}

/// The limits of ICMP errors.
pub const ERROR_LIMITS: LimitConf = LimitConf {
    per_dst_rate: ICMP_PER_DST_RATE_PER_SEC,
    per_dst_burst: ICMP_PER_DST_BURST,
    total_rate: ICMP_RATE_PER_SEC,
    total_burst: ICMP_BURST,
};

/// The limits of echo replies.
pub const ECHO_LIMITS: LimitConf = LimitConf {
    per_dst_rate: ECHO_PER_DST_RATE_PER_SEC,
    per_dst_burst: ECHO_PER_DST_BURST,
    total_rate: ECHO_RATE_PER_SEC,
    total_burst: ECHO_BURST,
};

/// Per-destination buckets under a worker-wide one (module docs).
#[derive(Debug)]
pub struct IcmpLimiter {
    total: TokenBucket,
    slots: Box<[DstSlot]>,
    set_mask: usize,
    conf: LimitConf,
    key: RandomState,
}

impl IcmpLimiter {
    /// A limiter with `conf`'s rates and [`DST_SLOTS`] destination slots.
    pub fn new(conf: LimitConf) -> Self {
        let sets = DST_SLOTS / WAYS;
        let empty = DstSlot {
            dst: 0,
            bucket: TokenBucket::new(conf.per_dst_rate, conf.per_dst_burst),
        };
        IcmpLimiter {
            total: TokenBucket::new(conf.total_rate, conf.total_burst),
            slots: vec![empty; sets * WAYS].into_boxed_slice(),
            set_mask: sets - 1,
            conf,
            key: RandomState::new(),
        }
    }

    /// Takes a token for a message to `dst` when both its bucket and the worker-wide one have
    /// one; takes nothing otherwise.
    pub fn allow(&mut self, dst: Ipv4Addr, now: Instant) -> bool {
        let dst = u32::from(dst);
        let start = (self.key.hash_one(dst) as usize & self.set_mask) * WAYS;
        let Some(set) = self.slots.get_mut(start..start + WAYS) else {
            return false;
        };
        // Its own slot, else an unused one, else the least recently used.
        let pick = set
            .iter()
            .position(|s| s.dst == dst && s.bucket.last.is_some())
            .or_else(|| set.iter().position(|s| s.bucket.last.is_none()))
            .or_else(|| (0..set.len()).min_by_key(|i| set.get(*i).and_then(|s| s.bucket.last)));
        let Some(slot) = pick.and_then(|i| set.get_mut(i)) else {
            return false;
        };
        if slot.dst != dst || slot.bucket.last.is_none() {
            *slot = DstSlot {
                dst,
                bucket: TokenBucket::new(self.conf.per_dst_rate, self.conf.per_dst_burst),
            };
        }
        slot.bucket.refill(now);
        self.total.refill(now);
        if slot.bucket.tokens < 1.0 || self.total.tokens < 1.0 {
            return false;
        }
        slot.bucket.tokens -= 1.0;
        self.total.tokens -= 1.0;
        true
    }
}

/// A worker's ICMP limiters.
#[derive(Debug)]
pub struct IcmpLimits {
    /// ICMP errors (time exceeded, unreachables, fragmentation needed).
    pub errors: IcmpLimiter,
    /// Echo replies.
    pub echo: IcmpLimiter,
}

impl Default for IcmpLimits {
    fn default() -> Self {
        IcmpLimits {
            errors: IcmpLimiter::new(ERROR_LIMITS),
            echo: IcmpLimiter::new(ECHO_LIMITS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_limits_and_refills() {
        let mut b = TokenBucket::new(10, 3);
        let t = Instant::now();
        assert!(b.allow(t) && b.allow(t) && b.allow(t));
        assert!(!b.allow(t));
        assert!(b.allow(t + Duration::from_millis(100)));
        assert!(!b.allow(t + Duration::from_millis(100)));
    }

    fn host(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a00_0000 + i)
    }

    const CONF: LimitConf = LimitConf {
        per_dst_rate: 10,
        per_dst_burst: 5,
        total_rate: 100,
        total_burst: 20,
    };

    #[test]
    fn one_destination_cannot_use_up_the_others_budget() {
        let mut l = IcmpLimiter::new(CONF);
        let t = Instant::now();
        let to_one = (0..50).filter(|_| l.allow(host(1), t)).count();
        assert_eq!(to_one, 5, "the destination's burst");
        assert!(
            l.allow(host(2), t),
            "another destination still gets its own"
        );
        // 100 ms later the first has earned one more.
        let t1 = t + Duration::from_millis(100);
        assert!(l.allow(host(1), t1));
        assert!(!l.allow(host(1), t1));
    }

    #[test]
    fn the_worker_wide_bucket_caps_many_destinations() {
        let mut l = IcmpLimiter::new(CONF);
        let t = Instant::now();
        let sent = (0..200).filter(|i| l.allow(host(*i), t)).count();
        assert_eq!(sent, 20, "the worker-wide burst");
        // A refused message takes no token from its destination: after the total refills it
        // has its whole burst.
        let t1 = t + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| l.allow(host(199), t1)).count(), 5);
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_the_least_recently_used() {
        let mut l = IcmpLimiter::new(LimitConf {
            total_rate: 1_000_000,
            total_burst: 1_000_000,
            ..CONF
        });
        let t = Instant::now();
        for _ in 0..5 {
            assert!(l.allow(host(1), t));
        }
        assert!(!l.allow(host(1), t));
        // Many other destinations, later: host 1's slot is reused and it starts afresh.
        for i in 2..(DST_SLOTS as u32 * 8) {
            l.allow(host(i), t + Duration::from_millis(1));
        }
        assert_eq!(l.slots.len(), DST_SLOTS);
        assert!(l.allow(host(1), t + Duration::from_millis(2)));
    }
}
