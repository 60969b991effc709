//! Cron from configuration on apalis-cron's schedule stream. Every process runs every entry,
//! and each tick is enqueued with the unique key `cron:<entry>:<tick>`, so the tick becomes
//! exactly one job however many processes saw it, and none is lost while any process is up:
//! an enqueue that fails (the database is down) is retried until it succeeds. Each enqueue
//! also records the entry's latest tick, so at start the ticks that fell while no process ran
//! are caught up as the entry's `catch_up` says (none, the last, or all).

use std::str::FromStr;
use std::time::Duration;

use apalis_cron::CronScheduler;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use voxline_domain::config::{CatchUp, CronEntry};

use crate::client::JobClient;
use crate::error::JobError;
use crate::model::NewJob;

/// The job a cron entry enqueues for the tick at `tick` (Unix seconds).
pub fn tick_job(name: &str, entry: &CronEntry, tick: u64) -> NewJob {
    let mut payload = entry
        .payload
        .clone()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(map) = payload.as_object_mut() {
        map.insert("cron".into(), name.into());
        map.insert("tick".into(), tick.into());
    }
    NewJob::new(&entry.queue, &entry.kind, payload).unique_key(format!("cron:{name}:{tick}"))
}

/// The ticks of `schedule` after `last` and up to `now` (both Unix seconds) that `catch_up`
/// says to enqueue, oldest first.
pub fn missed_ticks(schedule: &cron::Schedule, catch_up: CatchUp, last: i64, now: i64) -> Vec<i64> {
    let (Some(after), Some(now)) = (
        DateTime::<Utc>::from_timestamp(last, 0),
        DateTime::<Utc>::from_timestamp(now, 0),
    ) else {
        return Vec::new();
    };
    let missed = schedule
        .after(&after)
        .take_while(|t| *t <= now)
        .map(|t| t.timestamp());
    match catch_up {
        CatchUp::None => Vec::new(),
        CatchUp::Last => missed.last().into_iter().collect(),
        CatchUp::All => {
            let all: Vec<i64> = missed.collect();
            // The newest ones when there are too many: they matter more than the oldest.
            all[all.len().saturating_sub(CatchUp::MAX_TICKS)..].to_vec()
        }
    }
}

pub fn spawn(client: JobClient, stop: CancellationToken) -> Vec<JoinHandle<()>> {
    let entries: Vec<(String, CronEntry)> = client
        .settings()
        .cron
        .iter()
        .map(|(name, entry)| (name.clone(), entry.clone()))
        .collect();
    entries
        .into_iter()
        .filter_map(|(name, entry)| {
            // Validated at configuration load; a failure here is logged, not fatal.
            let schedule = match cron::Schedule::from_str(&entry.schedule) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(cron = %name, error = %e, "invalid cron schedule");
                    return None;
                }
            };
            let client = client.clone();
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                let entry_ref = Entry {
                    client: &client,
                    name: &name,
                    entry: &entry,
                    stop: &stop,
                };
                entry_ref.catch_up(&schedule).await;
                let ticks = CronScheduler::new(schedule).into_stream();
                futures::pin_mut!(ticks);
                loop {
                    let tick = tokio::select! {
                        _ = stop.cancelled() => return,
                        tick = ticks.next() => tick,
                    };
                    match tick {
                        Some(Ok(tick)) => entry_ref.enqueue(tick.get_timestamp() as i64).await,
                        Some(Err(e)) => {
                            tracing::warn!(cron = %name, error = %e, "cron schedule error");
                        }
                        None => return,
                    }
                }
            }))
        })
        .collect()
}

/// One cron entry of one process.
struct Entry<'a> {
    client: &'a JobClient,
    name: &'a str,
    entry: &'a CronEntry,
    stop: &'a CancellationToken,
}

impl Entry<'_> {
    /// Enqueues the ticks missed since the entry's latest recorded one. An entry that never
    /// ticked has nothing to catch up.
    async fn catch_up(&self, schedule: &cron::Schedule) {
        let mut failures = 0;
        let last = loop {
            match self.client.store().last_tick(self.name).await {
                Ok(last) => break last,
                Err(e) => {
                    if !self.wait_after_failure(&e, &mut failures).await {
                        return;
                    }
                }
            }
        };
        let Some(last) = last else { return };
        let ticks = missed_ticks(schedule, self.entry.catch_up, last, Utc::now().timestamp());
        if !ticks.is_empty() {
            tracing::info!(cron = %self.name, ticks = ticks.len(), catch_up = ?self.entry.catch_up, "catching up cron ticks missed while no process ran");
        }
        for tick in ticks {
            self.enqueue(tick).await;
        }
    }

    /// Enqueues the job of `tick`, retrying until it is stored or the process stops.
    async fn enqueue(&self, tick: i64) {
        let job = tick_job(self.name, self.entry, tick.max(0) as u64);
        let mut failures = 0;
        loop {
            match self.client.enqueue_tick(self.name, tick, &job).await {
                Ok(e) if e.inserted => {
                    tracing::info!(cron = %self.name, tick, job = %e.id, failures, "cron tick enqueued");
                    return;
                }
                Ok(_) => {
                    tracing::debug!(cron = %self.name, tick, "cron tick already enqueued by another process");
                    return;
                }
                Err(e) => {
                    if !self.wait_after_failure(&e, &mut failures).await {
                        tracing::error!(cron = %self.name, tick, "stopping with a cron tick not enqueued; the next start catches it up");
                        return;
                    }
                }
            }
        }
    }

    /// Waits before the next try (growing to five seconds); false when the process stops.
    async fn wait_after_failure(&self, error: &JobError, failures: &mut u32) -> bool {
        *failures += 1;
        let wait = retry_wait(*failures);
        tracing::warn!(cron = %self.name, error = %error, failures = *failures, ?wait, "cron: database call failed; retrying");
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

/// The wait before try `failures + 1`: 100 ms doubling, at most five seconds.
fn retry_wait(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(6);
    (Duration::from_millis(100) * 2u32.pow(doublings)).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hourly() -> cron::Schedule {
        cron::Schedule::from_str("0 0 * * * *").expect("valid")
    }

    const H: i64 = 3_600;

    #[test]
    fn retries_wait_longer_each_time_up_to_five_seconds() {
        let waits: Vec<u64> = (1..=8).map(|n| retry_wait(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn missed_ticks_follow_the_catch_up_setting() {
        let last = 1_700_000_000 / H * H; // on the hour
        let now = last + 3 * H + 10;
        assert_eq!(
            missed_ticks(&hourly(), CatchUp::None, last, now),
            Vec::<i64>::new()
        );
        assert_eq!(
            missed_ticks(&hourly(), CatchUp::Last, last, now),
            vec![last + 3 * H]
        );
        assert_eq!(
            missed_ticks(&hourly(), CatchUp::All, last, now),
            vec![last + H, last + 2 * H, last + 3 * H]
        );
    }

    #[test]
    fn nothing_is_missed_before_the_next_tick_and_all_is_bounded() {
        let last = 1_700_000_000 / H * H;
        assert!(missed_ticks(&hourly(), CatchUp::All, last, last + H - 1).is_empty());
        let every_second = cron::Schedule::from_str("* * * * * *").expect("valid");
        let all = missed_ticks(&every_second, CatchUp::All, last, last + 86_400);
        assert_eq!(all.len(), CatchUp::MAX_TICKS);
        assert_eq!(all.last(), Some(&(last + 86_400)), "the newest are kept");
    }
}
