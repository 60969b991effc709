//! Retry policy: a pure function from the attempt number to the delay before the next try.
//!
//! `delay = min(cap, base · 2^(attempt-1)) · (1 ± jitter)`, so with base 1 s the waits are
//! about 1, 2, 4, 8 … seconds up to the cap. Jitter spreads retries of jobs that failed together
//! (a provider outage) so they do not return as one burst.

use std::time::Duration;

use rand::Rng;
use voxline_domain::QueueSettings;

/// The backoff parameters of one queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Fraction in 0..=1: the delay is scaled by a factor drawn from `1 - jitter ..= 1 + jitter`.
    pub jitter: f64,
}

impl BackoffPolicy {
    pub fn from_queue(settings: &QueueSettings) -> Self {
        BackoffPolicy {
            base: Duration::from_millis(settings.backoff_base_ms),
            cap: Duration::from_millis(settings.backoff_cap_ms),
            jitter: settings.backoff_jitter,
        }
    }

    /// The delay before retrying after failed attempt number `attempt` (1-based), without
    /// jitter: `min(cap, base · 2^(attempt-1))`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(62);
        let factor = 1u64 << exponent;
        let base_ms = self.base.as_millis().min(u64::MAX as u128) as u64;
        let ms = base_ms.saturating_mul(factor);
        Duration::from_millis(ms).min(self.cap)
    }

    /// The delay with jitter drawn from `rng`; never more than `cap · (1 + jitter)`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let nominal = self.nominal(attempt).as_secs_f64();
        let factor = if self.jitter > 0.0 {
            rng.random_range((1.0 - self.jitter)..=(1.0 + self.jitter))
        } else {
            1.0
        };
        Duration::from_secs_f64((nominal * factor).max(0.0))
    }

    /// A delay the job itself asked for (e.g. a provider's `Retry-After`), bounded by the cap.
    pub fn requested(&self, wanted: Duration) -> Duration {
        wanted.min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy(jitter: f64) -> BackoffPolicy {
        BackoffPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            jitter,
        }
    }

    #[test]
    fn the_nominal_delay_doubles_per_attempt_up_to_the_cap() {
        let p = policy(0.0);
        let secs: Vec<u64> = (1..=8).map(|a| p.nominal(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(policy(0.0).nominal(u32::MAX), Duration::from_secs(60));
        assert_eq!(policy(0.0).nominal(0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_actually_varies() {
        let p = policy(0.1);
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<f64> = (0..200)
            .map(|_| p.delay(4, &mut rng).as_secs_f64())
            .collect();
        assert!(delays.iter().all(|d| (7.2..=8.8).contains(d)), "{delays:?}");
        let distinct = delays
            .iter()
            .map(|d| (d * 1000.0) as u64)
            .collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() > 50, "jitter should spread delays");
    }

    #[test]
    fn a_requested_delay_is_bounded_by_the_cap() {
        let p = policy(0.0);
        assert_eq!(p.requested(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(
            p.requested(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }
}
