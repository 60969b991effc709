//! Enqueues counted per queue and minute in memory and added to the per-minute activity table
//! every second. Counting in the enqueue statement itself would make every submission of a
//! minute update one row, serialising concurrent intake on its lock; outcomes are counted in
//! their (batched) acknowledging statements instead, see the stores.
//!
//! A process that stops loses at most the last second of enqueue counts: the table is a trend
//! for operators, not a ledger (the jobs themselves are durable).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::Utc;

use crate::store::{JobStore, MinuteCounts, MinuteStats, minute_of};

const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Counts waiting to be written, keyed by (minute, queue).
type Pending = BTreeMap<(i64, String), i64>;

#[derive(Debug, Default)]
struct Counts {
    pending: Mutex<Pending>,
}

/// The counter of one [`crate::JobClient`] (shared by its clones). When the last handle is
/// dropped, its flusher writes what is left and stops.
#[derive(Debug)]
pub struct EnqueueCounts {
    counts: Arc<Counts>,
}

impl EnqueueCounts {
    /// Counts, flushed into `store` by a task of the current Tokio runtime while the returned
    /// handle lives. Outside a runtime nothing is counted.
    pub fn start(store: Arc<dyn JobStore>) -> Option<Arc<EnqueueCounts>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let counts = Arc::new(Counts::default());
        let handle = Arc::new(EnqueueCounts {
            counts: counts.clone(),
        });
        runtime.spawn(flush_until_dropped(counts, Arc::downgrade(&handle), store));
        Some(handle)
    }

    pub fn add(&self, queue: &str, n: i64) {
        if n == 0 {
            return;
        }
        let minute = minute_of(Utc::now());
        let mut pending = self
            .counts
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *pending.entry((minute, queue.to_string())).or_default() += n;
    }
}

impl Counts {
    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back counts a flush could not write, to go with the next one.
    fn restore(&self, rows: Pending) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (key, n) in rows {
            *pending.entry(key).or_default() += n;
        }
    }

    /// Writes what is pending; keeps it for the next flush when the write fails.
    async fn flush(&self, store: &dyn JobStore) {
        let pending = self.take();
        if pending.is_empty() {
            return;
        }
        let rows: Vec<MinuteStats> = pending
            .iter()
            .map(|((minute, queue), n)| MinuteStats {
                minute: *minute,
                queue: queue.clone(),
                counts: MinuteCounts {
                    enqueued: *n,
                    ..Default::default()
                },
            })
            .collect();
        if let Err(e) = store.console().add_minute_stats(&rows).await {
            tracing::warn!(error = %e, "writing enqueue counts failed; keeping them for the next flush");
            self.restore(pending);
        }
    }
}

async fn flush_until_dropped(
    counts: Arc<Counts>,
    handle: Weak<EnqueueCounts>,
    store: Arc<dyn JobStore>,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = handle.strong_count() == 0;
        counts.flush(store.as_ref()).await;
        if last {
            return;
        }
    }
}
