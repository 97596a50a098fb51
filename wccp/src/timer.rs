//! Protocol timers: the values of reference §1 derived from TRANSMIT_T and the two scales
//! (\[R1\]), and a small enum-indexed deadline table (quinn `connection/timer.rs` style) that the
//! engines keep per service, per cache or per router. Only the driver sleeps; the engines
//! report their earliest deadline through `poll_timeout` and act in `handle_timeout(now)`.

use core::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::wire::{CapabilitiesInfo, Capability};

/// TRANSMIT_T and the timer scales (\[R1\]); every protocol timer derives from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerConfig {
    /// TRANSMIT_T: HERE_I_AM period (default 10 s).
    pub transmit_t: Duration,
    /// TIMEOUT_SCALE: TIMEOUT_BASE_T = scale × TRANSMIT_T (default 1, never 0).
    pub timeout_scale: u32,
    /// RA_TIMER_SCALE: RA_TIMER_BASE_T = scale × TRANSMIT_T (default 1, never 0).
    pub ra_timer_scale: u32,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            transmit_t: Duration::from_secs(10),
            timeout_scale: 1,
            ra_timer_scale: 1,
        }
    }
}

impl TimerConfig {
    /// Checks the values: TRANSMIT_T within 10 ms..=600 s and scales within 1..=10 (\[R1\]
    /// suggests 500 ms..=60 s and 1..=5; the wider range leaves room for fast simulations),
    /// so that every deadline stays far from `Instant` overflow.
    pub fn validate(&self) -> Result<(), crate::engine::ConfigError> {
        let t_ok =
            (Duration::from_millis(10)..=Duration::from_secs(600)).contains(&self.transmit_t);
        let scales_ok =
            (1..=10).contains(&self.timeout_scale) && (1..=10).contains(&self.ra_timer_scale);
        if t_ok && scales_ok {
            Ok(())
        } else {
            Err(crate::engine::ConfigError::Invalid(
                "TRANSMIT_T must be 10 ms..=600 s and the timer scales 1..=10",
            ))
        }
    }

    /// TIMEOUT_BASE_T (a scale of 0 is treated as 1: "0 never allowed").
    fn timeout_base(&self) -> Duration {
        self.transmit_t.saturating_mul(self.timeout_scale.max(1))
    }

    /// RA_TIMER_BASE_T.
    fn ra_base(&self) -> Duration {
        self.transmit_t.saturating_mul(self.ra_timer_scale.max(1))
    }

    /// Period of a cache's HERE_I_AMs (TRANSMIT_T, 10 s).
    pub fn here_i_am_interval(&self) -> Duration {
        self.transmit_t
    }

    /// Designated cache's wait after a membership change before REDIRECT_ASSIGN (1.5 ×
    /// RA_TIMER_BASE_T = 15 s; Squid and ATS use 15 s).
    pub fn assignment_wait(&self) -> Duration {
        self.ra_base().saturating_mul(3) / 2
    }

    /// Resend period of a REDIRECT_ASSIGN while a router echoes a stale key (TRANSMIT_T).
    pub fn assignment_resend(&self) -> Duration {
        self.transmit_t
    }

    /// Router discards its assignment if no valid REDIRECT_ASSIGN followed a membership
    /// change within this time (5 × RA_TIMER_BASE_T = 50 s).
    pub fn assignment_flush(&self) -> Duration {
        self.ra_base().saturating_mul(5)
    }

    /// Silence after which a router sends REMOVAL_QUERY (2.5 × TIMEOUT_BASE_T = 25 s).
    pub fn removal_query(&self) -> Duration {
        self.timeout_base().saturating_mul(5) / 2
    }

    /// Silence after which a member is dropped (3 × TIMEOUT_BASE_T = 30 s); a cache drops a
    /// router after the same time without I_SEE_YOU (ATS).
    pub fn member_dead(&self) -> Duration {
        self.timeout_base().saturating_mul(3)
    }

    /// Spacing of the HERE_I_AMs answering a REMOVAL_QUERY (0.1 × TRANSMIT_T = 1 s).
    pub fn query_reply_spacing(&self) -> Duration {
        self.transmit_t / 10
    }

    /// Number of HERE_I_AMs answering a REMOVAL_QUERY (3).
    pub const QUERY_REPLIES: u8 = 3;
}

/// TRANSMIT_T a router accepts from a cache that asks for non-default timers, in ms: the range
/// \[R1\] suggests.
pub const ACCEPTED_TRANSMIT_MS: (u16, u16) = (500, 60_000);

/// TIMEOUT_SCALE and RA_TIMER_SCALE a router accepts: the range \[R1\] suggests (0 is never
/// allowed).
pub const ACCEPTED_SCALES: (u8, u8) = (1, 5);

/// The default TRANSMIT_T in ms (absent element, reference §3.10).
const DEFAULT_TRANSMIT_MS: u16 = 10_000;

impl TimerConfig {
    /// True for the reference values (10 s, 1, 1): what an absent element means.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// TRANSMIT_T in whole ms (saturating at the u16 the wire carries).
    pub fn transmit_ms(&self) -> u16 {
        u16::try_from(self.transmit_t.as_millis()).unwrap_or(u16::MAX)
    }

    /// True when a router accepts these values from a cache: the defaults, or (when the
    /// router takes non-default timers) TRANSMIT_T and both scales within the ranges \[R1\]
    /// suggests.
    pub fn acceptable(&self, non_default: bool) -> bool {
        if self.is_default() {
            return true;
        }
        let (lo, hi) = ACCEPTED_TRANSMIT_MS;
        let (slo, shi) = (u32::from(ACCEPTED_SCALES.0), u32::from(ACCEPTED_SCALES.1));
        non_default
            && self.transmit_t.subsec_nanos() % 1_000_000 == 0
            && (Duration::from_millis(lo.into())..=Duration::from_millis(hi.into()))
                .contains(&self.transmit_t)
            && (slo..=shi).contains(&self.timeout_scale)
            && (slo..=shi).contains(&self.ra_timer_scale)
    }

    /// A cache's choice as carried in its HERE_I_AM (reference §3.10): single values only;
    /// an absent element is the default. `None` for a range, a zero or an unusable value.
    pub fn from_choice(caps: Option<&CapabilitiesInfo>) -> Option<Self> {
        let d = Self::default();
        let transmit_t = match caps.and_then(CapabilitiesInfo::transmit_t) {
            None => d.transmit_t,
            Some((0, ms)) if ms > 0 => Duration::from_millis(ms.into()),
            Some(_) => return None,
        };
        let (timeout_scale, ra_timer_scale) = match caps.and_then(CapabilitiesInfo::timer_scale) {
            None => (1, 1),
            Some([0, to, 0, ra]) if to > 0 && ra > 0 => (u32::from(to), u32::from(ra)),
            Some(_) => return None,
        };
        let t = Self {
            transmit_t,
            timeout_scale,
            ra_timer_scale,
        };
        t.validate().is_ok().then_some(t)
    }

    /// What a cache picks from a router's offer (reference §3.10: a single value or an
    /// `(upper, lower)` range each; absent = the defaults): `self`, each value clamped into
    /// what is offered. `None` when the offer holds a zero (never allowed) or the result is
    /// unusable.
    pub fn choose_from(&self, caps: Option<&CapabilitiesInfo>) -> Option<Self> {
        let (upper, lower) = caps
            .and_then(CapabilitiesInfo::transmit_t)
            .unwrap_or((0, DEFAULT_TRANSMIT_MS));
        let [to_upper, to_lower, ra_upper, ra_lower] = caps
            .and_then(CapabilitiesInfo::timer_scale)
            .unwrap_or([0, 1, 0, 1]);
        let span = |upper: u32, lower: u32| match upper {
            0 => (lower, lower),
            u => (lower.min(u), lower.max(u)),
        };
        let (t_lo, t_hi) = span(upper.into(), lower.into());
        let (to_lo, to_hi) = span(to_upper.into(), to_lower.into());
        let (ra_lo, ra_hi) = span(ra_upper.into(), ra_lower.into());
        if t_lo == 0 || to_lo == 0 || ra_lo == 0 {
            return None;
        }
        let want_ms = u32::try_from(self.transmit_t.as_millis()).unwrap_or(u32::MAX);
        let t = Self {
            transmit_t: Duration::from_millis(want_ms.clamp(t_lo, t_hi).into()),
            timeout_scale: self.timeout_scale.clamp(to_lo, to_hi),
            ra_timer_scale: self.ra_timer_scale.clamp(ra_lo, ra_hi),
        };
        t.validate().is_ok().then_some(t)
    }

    /// The two capability elements carrying these values as a single choice or offer.
    pub fn capabilities(&self) -> [Capability; 2] {
        let scale = |s: u32| u8::try_from(s).unwrap_or(u8::MAX);
        [
            Capability::TransmitT {
                upper: 0,
                lower: self.transmit_ms(),
            },
            Capability::TimerScale {
                timeout_upper: 0,
                timeout_lower: scale(self.timeout_scale),
                ra_upper: 0,
                ra_lower: scale(self.ra_timer_scale),
            },
        ]
    }

    /// The two elements a router offers when it takes non-default timers: the accepted ranges.
    pub fn accepted_ranges() -> [Capability; 2] {
        [
            Capability::TransmitT {
                upper: ACCEPTED_TRANSMIT_MS.1,
                lower: ACCEPTED_TRANSMIT_MS.0,
            },
            Capability::TimerScale {
                timeout_upper: ACCEPTED_SCALES.1,
                timeout_lower: ACCEPTED_SCALES.0,
                ra_upper: ACCEPTED_SCALES.1,
                ra_lower: ACCEPTED_SCALES.0,
            },
        ]
    }
}

/// An enum whose variants index a [`TimerTable`].
pub trait TimerKind: Copy + Eq + 'static {
    /// Every variant, in index order.
    const ALL: &'static [Self];
    /// The variant's slot (its position in `ALL`).
    fn index(self) -> usize;
}

/// One optional deadline per timer kind; `N` must be `K::ALL.len()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerTable<K: TimerKind, const N: usize> {
    deadlines: [Option<Instant>; N],
    kind: PhantomData<K>,
}

impl<K: TimerKind, const N: usize> Default for TimerTable<K, N> {
    fn default() -> Self {
        Self {
            deadlines: [None; N],
            kind: PhantomData,
        }
    }
}

impl<K: TimerKind, const N: usize> TimerTable<K, N> {
    /// Arms `timer` for `at` (replacing an earlier deadline).
    pub fn set(&mut self, timer: K, at: Instant) {
        debug_assert!(timer.index() < N, "a timer table too small for its kinds");
        if let Some(slot) = self.deadlines.get_mut(timer.index()) {
            *slot = Some(at);
        }
    }

    /// Arms `timer` for `at` unless it is already armed.
    pub fn set_if_idle(&mut self, timer: K, at: Instant) {
        if self.get(timer).is_none() {
            self.set(timer, at);
        }
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: K) {
        if let Some(slot) = self.deadlines.get_mut(timer.index()) {
            *slot = None;
        }
    }

    /// Deadline of `timer`, if armed.
    pub fn get(&self, timer: K) -> Option<Instant> {
        self.deadlines.get(timer.index()).copied().flatten()
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the earliest timer whose deadline is ≤ `now` (call in a loop).
    pub fn pop_expired(&mut self, now: Instant) -> Option<K> {
        let (timer, _) = K::ALL
            .iter()
            .filter_map(|k| self.get(*k).filter(|d| *d <= now).map(|d| (*k, d)))
            .min_by_key(|(_, d)| *d)?;
        self.stop(timer);
        Some(timer)
    }
}

/// Earliest of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        A,
        B,
    }

    impl TimerKind for T {
        const ALL: &'static [Self] = &[Self::A, Self::B];
        fn index(self) -> usize {
            self as usize
        }
    }

    #[test]
    fn reference_values() {
        let t = TimerConfig::default();
        assert_eq!(t.here_i_am_interval(), Duration::from_secs(10));
        assert_eq!(t.assignment_wait(), Duration::from_secs(15));
        assert_eq!(t.assignment_resend(), Duration::from_secs(10));
        assert_eq!(t.assignment_flush(), Duration::from_secs(50));
        assert_eq!(t.removal_query(), Duration::from_secs(25));
        assert_eq!(t.member_dead(), Duration::from_secs(30));
        assert_eq!(t.query_reply_spacing(), Duration::from_secs(1));
        let scaled = TimerConfig {
            timeout_scale: 2,
            ra_timer_scale: 0,
            ..t
        };
        assert_eq!(scaled.member_dead(), Duration::from_secs(60));
        assert_eq!(scaled.assignment_wait(), Duration::from_secs(15));
        assert!(t.validate().is_ok());
        assert!(scaled.validate().is_err(), "scale 0");
        let huge = TimerConfig {
            transmit_t: Duration::MAX,
            ..t
        };
        assert!(huge.validate().is_err());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin for the test
    fn table_pops_in_deadline_order() {
        let base = Instant::now();
        let mut table: TimerTable<T, 2> = TimerTable::default();
        assert_eq!(table.next_deadline(), None);
        table.set(T::A, base + Duration::from_secs(5));
        table.set(T::B, base + Duration::from_secs(3));
        table.set_if_idle(T::B, base + Duration::from_secs(9));
        assert_eq!(table.next_deadline(), Some(base + Duration::from_secs(3)));
        assert_eq!(table.pop_expired(base + Duration::from_secs(2)), None);
        let later = base + Duration::from_secs(6);
        assert_eq!(table.pop_expired(later), Some(T::B));
        assert_eq!(table.pop_expired(later), Some(T::A));
        assert_eq!(table.pop_expired(later), None);
        table.set(T::A, base);
        table.stop(T::A);
        assert_eq!(table.get(T::A), None);
        assert_eq!(earliest(Some(base), None), Some(base));
    }
}

#[cfg(test)]
mod negotiation_tests {
    use super::*;

    fn offer(t: Option<(u16, u16)>, s: Option<[u8; 4]>) -> CapabilitiesInfo {
        let mut c = CapabilitiesInfo::default();
        if let Some((upper, lower)) = t {
            c.elements.push(Capability::TransmitT { upper, lower });
        }
        if let Some([a, b, c2, d]) = s {
            c.elements.push(Capability::TimerScale {
                timeout_upper: a,
                timeout_lower: b,
                ra_upper: c2,
                ra_lower: d,
            });
        }
        c
    }

    fn t(ms: u64, to: u32, ra: u32) -> TimerConfig {
        TimerConfig {
            transmit_t: Duration::from_millis(ms),
            timeout_scale: to,
            ra_timer_scale: ra,
        }
    }

    #[test]
    fn a_cache_clamps_its_wish_into_the_offer() {
        let want = t(500, 2, 1);
        // Absent: the defaults.
        assert_eq!(want.choose_from(None), Some(TimerConfig::default()));
        assert_eq!(
            want.choose_from(Some(&offer(None, None))),
            Some(TimerConfig::default())
        );
        // A range holds the wish.
        let ranges = offer(Some((60_000, 500)), Some([5, 1, 5, 1]));
        assert_eq!(want.choose_from(Some(&ranges)), Some(want));
        // A range given lower first is read the same; a wish outside is clamped.
        let narrow = offer(Some((1000, 2000)), Some([3, 4, 0, 1]));
        assert_eq!(want.choose_from(Some(&narrow)), Some(t(1000, 3, 1)));
        // A single value is taken.
        let single = offer(Some((0, 750)), Some([0, 1, 0, 2]));
        assert_eq!(want.choose_from(Some(&single)), Some(t(750, 1, 2)));
        // A zero is never allowed.
        assert_eq!(want.choose_from(Some(&offer(Some((0, 0)), None))), None);
        assert_eq!(
            want.choose_from(Some(&offer(None, Some([0, 0, 0, 1])))),
            None
        );
    }

    #[test]
    fn choices_round_trip_and_ranges_are_not_choices() {
        let c = t(500, 3, 2);
        let caps = CapabilitiesInfo {
            elements: c.capabilities().to_vec(),
        };
        assert_eq!(TimerConfig::from_choice(Some(&caps)), Some(c));
        assert_eq!(TimerConfig::from_choice(None), Some(TimerConfig::default()));
        let ranges = CapabilitiesInfo {
            elements: TimerConfig::accepted_ranges().to_vec(),
        };
        assert_eq!(TimerConfig::from_choice(Some(&ranges)), None);
        assert!(c.acceptable(true));
        assert!(!c.acceptable(false));
        assert!(TimerConfig::default().acceptable(false));
        assert!(!t(400, 1, 1).acceptable(true));
        assert!(!t(500, 6, 1).acceptable(true));
        assert!(!TimerConfig {
            transmit_t: Duration::from_micros(500_500),
            ..c
        }
        .acceptable(true));
    }
}
