//! One circuit breaker per provider (SMTP, and later OpenAI, Stripe): after `threshold`
//! consecutive failures it opens for `cooldown`, during which calls are not made at all (the
//! jobs snooze without spending attempts); then one trial call decides whether it closes
//! again (success) or re-opens (failure). Its state is the metric
//! `voxline_provider_circuit_state{provider}`: 0 closed, 1 open, 2 half-open.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    provider: &'static str,
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(provider: &'static str, threshold: u32, cooldown: Duration) -> Self {
        let breaker = CircuitBreaker {
            provider,
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                failures: 0,
                opened_at: None,
                trial_in_flight: false,
            }),
        };
        breaker.publish(CircuitState::Closed);
        breaker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, state: CircuitState) {
        let value = match state {
            CircuitState::Closed => 0.0,
            CircuitState::Open => 1.0,
            CircuitState::HalfOpen => 2.0,
        };
        metrics::gauge!("voxline_provider_circuit_state", "provider" => self.provider).set(value);
    }

    pub fn state_at(&self, now: Instant) -> CircuitState {
        let inner = self.lock();
        match inner.opened_at {
            None => CircuitState::Closed,
            Some(at) if now.duration_since(at) < self.cooldown => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }

    /// May a call go out now? `Err(wait)` while open (or while the half-open trial runs).
    pub fn permit_at(&self, now: Instant) -> Result<(), Duration> {
        let mut inner = self.lock();
        let Some(opened) = inner.opened_at else {
            return Ok(());
        };
        let elapsed = now.duration_since(opened);
        if elapsed < self.cooldown {
            return Err(self.cooldown - elapsed);
        }
        if inner.trial_in_flight {
            return Err(self.cooldown.min(Duration::from_secs(1)));
        }
        inner.trial_in_flight = true;
        drop(inner);
        self.publish(CircuitState::HalfOpen);
        Ok(())
    }

    pub fn permit(&self) -> Result<(), Duration> {
        self.permit_at(Instant::now())
    }

    /// The provider answered (even with a permanent refusal: it is up).
    pub fn record_success(&self) {
        let mut inner = self.lock();
        let was_open = inner.opened_at.is_some();
        *inner = Inner {
            failures: 0,
            opened_at: None,
            trial_in_flight: false,
        };
        drop(inner);
        if was_open {
            tracing::info!(provider = self.provider, "circuit closed");
        }
        self.publish(CircuitState::Closed);
    }

    pub fn record_failure_at(&self, now: Instant) {
        let mut inner = self.lock();
        inner.failures += 1;
        let reopen = inner.trial_in_flight || inner.failures >= self.threshold;
        inner.trial_in_flight = false;
        if reopen {
            inner.opened_at = Some(now);
            drop(inner);
            tracing::warn!(provider = self.provider, cooldown = ?self.cooldown, "circuit open");
            self.publish(CircuitState::Open);
        }
    }

    pub fn record_failure(&self) {
        self.record_failure_at(Instant::now())
    }

    /// A call permitted by [`CircuitBreaker::permit`], whose outcome is yet to be recorded.
    pub fn call(&self) -> Unsettled<'_> {
        Unsettled(Some(self))
    }
}

/// Records a call's outcome on the breaker exactly once. A call that never finishes (the job
/// timed out and its future was dropped) counts as a failure, so a half-open trial cannot
/// leave the breaker waiting for an answer forever.
pub struct Unsettled<'a>(Option<&'a CircuitBreaker>);

impl Unsettled<'_> {
    /// Records the outcome: an outage is a failure; anything else, a refusal (4xx) included,
    /// is an answer, so the provider is up.
    pub fn settle(&mut self, outage: bool) {
        if let Some(circuit) = self.0.take() {
            if outage {
                circuit.record_failure();
            } else {
                circuit.record_success();
            }
        }
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        self.settle(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_the_threshold_and_lets_one_trial_through_after_the_cooldown() {
        let b = CircuitBreaker::new("test", 3, Duration::from_secs(10));
        let t0 = Instant::now();
        b.record_failure_at(t0);
        b.record_failure_at(t0);
        assert_eq!(b.state_at(t0), CircuitState::Closed);
        assert!(b.permit_at(t0).is_ok());
        b.record_failure_at(t0);
        assert_eq!(b.state_at(t0), CircuitState::Open);
        assert_eq!(
            b.permit_at(t0 + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );

        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.state_at(later), CircuitState::HalfOpen);
        assert!(b.permit_at(later).is_ok(), "one trial call");
        assert!(b.permit_at(later).is_err(), "only one at a time");
        b.record_failure_at(later);
        assert_eq!(
            b.state_at(later),
            CircuitState::Open,
            "a failed trial re-opens"
        );

        let again = later + Duration::from_secs(10);
        assert!(b.permit_at(again).is_ok());
        b.record_success();
        assert_eq!(b.state_at(again), CircuitState::Closed);
        assert!(b.permit_at(again).is_ok());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = CircuitBreaker::new("test", 2, Duration::from_secs(10));
        let t0 = Instant::now();
        b.record_failure_at(t0);
        b.record_success();
        b.record_failure_at(t0);
        assert_eq!(b.state_at(t0), CircuitState::Closed);
    }
}
