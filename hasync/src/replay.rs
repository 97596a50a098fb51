//! Anti-replay window over packet numbers (the IPsec scheme, RFC 4303 §3.4.3): the highest
//! packet number accepted plus a bitmap of the `size` numbers below it. Checked only after the
//! tag verified, so forged packets cannot move the window.

/// Why a packet number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Seen before within the window.
    Replayed,
    /// Below the window: too old to tell, so refused.
    TooOld,
}

/// The sliding window for one (sender, epoch).
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    top: u64,
    bits: Vec<u64>,
}

impl ReplayWindow {
    /// A window of `size` packet numbers (rounded up to a multiple of 64, at least 64).
    pub fn new(size: usize) -> ReplayWindow {
        ReplayWindow {
            top: 0,
            bits: vec![0; size.div_ceil(64).max(1)],
        }
    }

    fn size(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn slot(&self, n: u64) -> (usize, u64) {
        let i = n % self.size();
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Accepts `n` once: records it, or says why not. Packet number 0 is never valid.
    pub fn accept(&mut self, n: u64) -> Result<(), ReplayError> {
        if n == 0 {
            return Err(ReplayError::TooOld);
        }
        if n > self.top {
            let ahead = n - self.top;
            if ahead >= self.size() {
                self.bits.fill(0);
            } else {
                for m in self.top + 1..n {
                    let (w, b) = self.slot(m);
                    self.bits[w] &= !b;
                }
            }
            let (w, b) = self.slot(n);
            self.bits[w] |= b;
            self.top = n;
            return Ok(());
        }
        if self.top - n >= self.size() {
            return Err(ReplayError::TooOld);
        }
        let (w, b) = self.slot(n);
        if self.bits[w] & b != 0 {
            return Err(ReplayError::Replayed);
        }
        self.bits[w] |= b;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window() {
        let mut w = ReplayWindow::new(64);
        assert_eq!(w.accept(0), Err(ReplayError::TooOld));
        assert_eq!(w.accept(5), Ok(()));
        assert_eq!(w.accept(5), Err(ReplayError::Replayed));
        assert_eq!(w.accept(3), Ok(()));
        assert_eq!(w.accept(3), Err(ReplayError::Replayed));
        assert_eq!(w.accept(100), Ok(()));
        assert_eq!(w.accept(36), Err(ReplayError::TooOld));
        assert_eq!(w.accept(37), Ok(()));
        assert_eq!(w.accept(99), Ok(()));
        assert_eq!(w.accept(99), Err(ReplayError::Replayed));
        // A big jump clears everything below.
        assert_eq!(w.accept(1000), Ok(()));
        assert_eq!(w.accept(999), Ok(()));
        assert_eq!(w.accept(937), Ok(()));
        assert_eq!(w.accept(936), Err(ReplayError::TooOld));
    }

    #[test]
    fn matches_a_set_model() {
        let mut w = ReplayWindow::new(128);
        let mut seen = std::collections::HashSet::new();
        let mut top = 0u64;
        let mut x = 12345u64;
        for _ in 0..20000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (top + 40).saturating_sub((x >> 33) % 200).max(1);
            let expect = if n + 128 <= top {
                Err(ReplayError::TooOld)
            } else if seen.contains(&n) {
                Err(ReplayError::Replayed)
            } else {
                Ok(())
            };
            assert_eq!(w.accept(n), expect, "n={n} top={top}");
            if expect.is_ok() {
                seen.insert(n);
                top = top.max(n);
            }
        }
    }
}
