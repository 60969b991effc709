//! A value read from somewhere slow, kept for concurrent readers and refreshed at most once per
//! interval: the queue gauges, so that scrapes (from any number of Prometheus servers, at any
//! rate) cost the database at most one `GROUP BY` a second.
//!
//! The rule, in [`Cached::get`]:
//! - a refresh is due when none was attempted within `every` (a failed attempt counts, so a
//!   database that is down is not asked more often either);
//! - one refresh runs at a time: a reader that finds one under way takes the cached value, and
//!   waits for that refresh only when there is no value yet;
//! - a failed refresh keeps the last good value and logs why.
//!
//! The clock is the caller's (`now`), so the rule is tested without sleeping.

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub struct Cached<T> {
    every: Duration,
    /// Held by the one reader that refreshes.
    refreshing: tokio::sync::Mutex<()>,
    slot: Mutex<Slot<T>>,
}

struct Slot<T> {
    value: Option<Arc<T>>,
    attempted_at: Option<Instant>,
}

/// Whether a refresh is due at `now`, the last one having been attempted at `attempted_at`.
fn is_due(attempted_at: Option<Instant>, now: Instant, every: Duration) -> bool {
    attempted_at.is_none_or(|at| now.saturating_duration_since(at) >= every)
}

impl<T> Cached<T> {
    pub fn new(every: Duration) -> Self {
        Cached {
            every,
            refreshing: tokio::sync::Mutex::new(()),
            slot: Mutex::new(Slot {
                value: None,
                attempted_at: None,
            }),
        }
    }

    /// The value as of at most `every` before `now` when `fetch` succeeds; otherwise the last
    /// good one, or `None` when no read has succeeded yet. `what` names it in the log.
    pub async fn get<F, Fut, E>(&self, now: Instant, what: &str, fetch: F) -> Option<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Display,
    {
        if !self.due(now) {
            return self.value();
        }
        let _refreshing = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if let Some(value) = self.value() {
                    return Some(value);
                }
                let guard = self.refreshing.lock().await;
                // The refresh we waited for may have been all this reader needed.
                if !self.due(now) {
                    return self.value();
                }
                guard
            }
        };
        let read = fetch().await;
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.attempted_at = Some(now);
        match read {
            Ok(value) => slot.value = Some(Arc::new(value)),
            Err(error) => match slot.value {
                Some(_) => tracing::warn!(%error, "reading {what} failed; keeping the last value"),
                None => tracing::warn!(%error, "reading {what} failed"),
            },
        }
        slot.value.clone()
    }

    fn due(&self, now: Instant) -> bool {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        is_due(slot.attempted_at, now, self.every)
    }

    fn value(&self) -> Option<Arc<T>> {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const EVERY: Duration = Duration::from_secs(1);

    /// A fetch that counts its calls and answers `answer`.
    fn counted(
        calls: &AtomicU32,
        answer: Result<u32, &'static str>,
    ) -> impl FnOnce() -> std::future::Ready<Result<u32, &'static str>> {
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(answer)
        }
    }

    #[test]
    fn a_refresh_is_due_once_the_interval_has_passed() {
        let t0 = Instant::now();
        assert!(is_due(None, t0, EVERY));
        assert!(!is_due(Some(t0), t0, EVERY));
        assert!(!is_due(Some(t0), t0 + Duration::from_millis(999), EVERY));
        assert!(is_due(Some(t0), t0 + EVERY, EVERY));
        // A clock that reads earlier than the attempt (another reader's `now`) is not due.
        assert!(!is_due(Some(t0 + EVERY), t0, EVERY));
    }

    #[tokio::test]
    async fn reads_at_most_once_per_interval_and_keeps_the_last_good_value() {
        let cache = Cached::new(EVERY);
        let calls = AtomicU32::new(0);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);

        assert_eq!(
            cache.get(t0, "n", counted(&calls, Ok(1))).await.as_deref(),
            Some(&1)
        );
        let not_called = || async { Err::<u32, _>("must not be called") };
        assert_eq!(
            cache.get(at(500), "n", not_called).await.as_deref(),
            Some(&1)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Due again: a failed read keeps the value, and counts as the attempt.
        assert_eq!(
            cache
                .get(at(1000), "n", counted(&calls, Err("down")))
                .await
                .as_deref(),
            Some(&1)
        );
        assert_eq!(
            cache.get(at(1500), "n", not_called).await.as_deref(),
            Some(&1)
        );
        assert_eq!(
            cache
                .get(at(2000), "n", counted(&calls, Ok(2)))
                .await
                .as_deref(),
            Some(&2)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_first_read_leaves_no_value() {
        let cache = Cached::<u32>::new(EVERY);
        let calls = AtomicU32::new(0);
        let t0 = Instant::now();
        assert_eq!(cache.get(t0, "n", counted(&calls, Err("down"))).await, None);
        assert_eq!(
            cache
                .get(t0 + EVERY, "n", counted(&calls, Ok(7)))
                .await
                .as_deref(),
            Some(&7)
        );
    }

    #[tokio::test]
    async fn one_refresh_at_a_time_others_take_the_cached_value() {
        let cache = Arc::new(Cached::new(EVERY));
        let t0 = Instant::now();
        cache.get(t0, "n", || async { Ok::<_, &str>(1) }).await;

        // A slow refresh, held open until `release` fires.
        let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get(t0 + EVERY, "n", || async move {
                        let _ = entered_tx.send(());
                        let _ = released.await;
                        Ok::<_, &str>(2)
                    })
                    .await
            }
        });
        entered.await.expect("the slow refresh started");
        // Due as well, but a refresh is under way: the cached value, no second read.
        let other = cache
            .get(t0 + EVERY, "n", || async {
                Err::<u32, _>("must not be called")
            })
            .await;
        assert_eq!(other.as_deref(), Some(&1));

        release.send(()).expect("the slow refresh waits");
        let refreshed = slow.await.expect("the slow refresh ends");
        assert_eq!(refreshed.as_deref(), Some(&2));
    }

    #[tokio::test]
    async fn with_no_value_yet_a_reader_waits_for_the_refresh_under_way() {
        let cache = Arc::new(Cached::new(EVERY));
        let t0 = Instant::now();
        let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get(t0, "n", || async move {
                        let _ = entered_tx.send(());
                        let _ = released.await;
                        Ok::<_, &str>(5)
                    })
                    .await
            }
        });
        entered.await.expect("the first refresh started");
        let second = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get(t0, "n", || async { Err::<u32, _>("must not be called") })
                    .await
            }
        });
        // On this single-threaded runtime, the second reader now runs until it waits.
        tokio::task::yield_now().await;
        release.send(()).expect("the first refresh waits");
        assert_eq!(first.await.expect("first").as_deref(), Some(&5));
        assert_eq!(second.await.expect("second").as_deref(), Some(&5));
    }
}
