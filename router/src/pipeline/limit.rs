//! The rate limit of the ICMP errors a worker originates (RFC 1812 §4.3.2.8).

use std::time::Instant;

/// ICMP errors per second per worker, and the burst allowed above it (RFC 1812 §4.3.2.8 asks
/// routers to limit the rate; Linux allows about 1000/s with a burst of 50 per destination).
pub const ICMP_RATE_PER_SEC: u32 = 100;
/// Burst size of the ICMP limiter.
pub const ICMP_BURST: u32 = 50;
/// A token bucket.
#[derive(Debug)]
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

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            self.tokens = (self.tokens
                + now.saturating_duration_since(last).as_secs_f64() * self.rate)
                .min(self.burst);
        }
        self.last = Some(now);
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
}
