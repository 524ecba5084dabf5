//! Exponential backoff with jitter, a floor and a cap.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: the n-th consecutive failure waits a random time in
/// `[base, min(cap, base * 2^n)]` ("full jitter" above a floor).
///
/// The floor of `base` is what rules out a hot loop: however unlucky the draws, there
/// are at most `window / base` attempts in any window. [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        Self { base, cap: cap.max(base), failures: 0 }
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let (lo, hi) = (self.base.as_secs_f64(), ceiling.as_secs_f64());
        if hi <= lo {
            return self.base;
        }
        Duration::from_secs_f64(rng.random_range(lo..=hi))
    }

    /// The largest delay the next call to [`Backoff::next_delay`] may return.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Forget past failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings: Vec<_> = (0..10)
            .map(|_| {
                let c = b.ceiling();
                b.next_delay(&mut StdRng::seed_from_u64(1));
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
    }

    #[test]
    fn delays_stay_between_floor_and_ceiling() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for _ in 0..1000 {
            let ceiling = b.ceiling();
            let d = b.next_delay(&mut rng);
            assert!(d >= Duration::from_millis(200) && d <= ceiling, "{d:?} outside [200ms, {ceiling:?}]");
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..5 {
            b.next_delay(&mut rand::rng());
        }
        assert_eq!(b.ceiling(), Duration::from_secs(32));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }
}
