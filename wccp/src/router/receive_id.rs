//! Receive IDs (reference §5): what a router puts in each I_SEE_YOU and expects echoed.
//!
//! With a seed they are unpredictable, so that a host that cannot see a cache's traffic
//! cannot forge its echo; without one they count 1, 2, 3… per group like the routers in the
//! Squid captures, which tests and capture replays rely on.

use core::net::Ipv4Addr;

use crate::engine::next_nonzero;

/// The driver's secret seed; its `Debug` does not show it, so that logging an engine does
/// not make its Receive IDs predictable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seed(pub(crate) u64);

impl core::fmt::Debug for Seed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Seed(..)")
    }
}

/// Source of one group's Receive IDs.
#[derive(Debug, Clone)]
pub(crate) struct ReceiveIds {
    /// Secret seed (`None`: sequential).
    seed: Option<Seed>,
    /// Service ID, so that groups sharing a seed draw different values.
    service: u8,
    /// I_SEE_YOUs drawn for so far.
    counter: u64,
    /// The last value drawn (0 = none yet).
    last: u32,
}

impl ReceiveIds {
    /// Values for service `service`, keyed with `seed` or sequential.
    pub(crate) fn new(seed: Option<Seed>, service: u8) -> Self {
        Self {
            seed,
            service,
            counter: 0,
            last: 0,
        }
    }

    /// The last value drawn (0 = none yet).
    pub(crate) fn last(&self) -> u32 {
        self.last
    }

    /// The sequence's state for HA sync: values drawn so far and the last one.
    pub(crate) fn state(&self) -> (u64, u32) {
        (self.counter, self.last)
    }

    /// Continues the sequence a peer exported (its seed stays its own: values stay
    /// unpredictable, and sequential ones go on from `last`).
    pub(crate) fn set_state(&mut self, counter: u64, last: u32) {
        self.counter = counter;
        self.last = last;
    }

    /// A fresh value for an I_SEE_YOU to `cache`, never 0 (§5).
    pub(crate) fn next(&mut self, cache: Ipv4Addr) -> u32 {
        self.counter = self.counter.wrapping_add(1);
        self.last = match self.seed {
            None => next_nonzero(self.last),
            Some(Seed(seed)) => {
                // MD5 (already used for security) as a keyed mix: knowing some values
                // tells nothing about the next one or another cache's without the seed.
                let mut ctx = md5::Context::new();
                ctx.consume(seed.to_le_bytes());
                ctx.consume([self.service]);
                ctx.consume(cache.octets());
                ctx.consume(self.counter.to_le_bytes());
                let d = ctx.compute().0;
                match u32::from_le_bytes([d[0], d[1], d[2], d[3]]) {
                    0 => 1,
                    v => v,
                }
            }
        };
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn sequential_without_a_seed() {
        let mut r = ReceiveIds::new(None, 0);
        assert_eq!(r.last(), 0);
        assert_eq!((r.next(C), r.next(C), r.last()), (1, 2, 2));
    }

    #[test]
    fn keyed_values_are_spread_and_reproducible() {
        let draw = |seed, service| {
            let mut r = ReceiveIds::new(Some(Seed(seed)), service);
            (0..256).map(|_| r.next(C)).collect::<Vec<u32>>()
        };
        let a = draw(7, 0);
        assert_eq!(a, draw(7, 0), "same seed, same values");
        assert_ne!(a, draw(8, 0));
        assert_ne!(a, draw(7, 1));
        assert!(a.iter().all(|v| *v != 0));
        assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), a.len());
        assert!(a.windows(2).all(|w| w[1] != w[0].wrapping_add(1)));
        assert_eq!(format!("{:?}", Seed(7)), "Seed(..)");
    }
}
