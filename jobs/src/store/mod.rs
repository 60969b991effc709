//! One storage interface for the job engine, [`JobStore`], implemented for Postgres
//! ([`postgres::PostgresStore`]) and SQLite ([`sqlite::SqliteStore`]), each owning its SQL, as
//! River's drivers and Oban's engines do. The runtime, maintenance, cron and operator code hold
//! an `Arc<dyn JobStore>` and never see which database is behind it; the one place that looks
//! at the [`Db`] variant is [`for_db`].

mod console;
mod console_impl;
mod postgres;
mod postgres_console;
mod postgres_leader;
mod postgres_listen;
mod row;
mod sqlite;
mod sqlite_console;
mod store_impl;

pub use console::{BulkAction, Console, MinuteCounts, MinuteStats, QueuePause, minute_of};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use voxline_domain::config::RetentionSettings;
use voxline_domain::{Db, Tx};

use crate::error::JobError;
use crate::handler::DeadHooks;
use crate::model::{
    ClaimedJob, Completion, DeadJob, Enqueued, Job, JobId, Lease, NewJob, QueueStats,
};
use crate::progress::{JobProgress, Percent};
use crate::runtime::wakeup::Wakers;
use crate::state::JobState;

/// Which jobs to list (newest first, `before` an id for cursor pagination) or act on in bulk
/// (the cursor and limit ignored). Every field set narrows the match.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<String>,
    /// The tenant named by the job's payload.
    pub company_id: Option<String>,
    /// Created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this time.
    pub created_to: Option<DateTime<Utc>>,
    /// Text in the kind, the errors or the payload: every word of it, on Postgres (a
    /// full-text index); the text as it stands, case-insensitive, on SQLite (a scan).
    pub search: Option<String>,
    pub before: Option<JobId>,
    pub limit: u32,
}

/// What erased data the waiting jobs may not act on any more: the sessions by id, and the
/// profile (jobs whose payload names it, such as its emails).
#[derive(Debug, Clone, Copy)]
pub struct ErasedSubject<'a> {
    pub company_id: &'a str,
    pub profile_id: Option<&'a str>,
    pub session_ids: &'a [String],
}

/// A job found by its unique key: its state and the progress its attempt last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedProgress {
    pub id: JobId,
    pub state: JobState,
    pub progress: Option<JobProgress>,
}

/// Who runs this deployment's maintenance (rescue, pruning): one process at a time.
pub trait LeaderElection: Send {
    /// Whether this process leads now; tries to become leader when it does not.
    fn check(&mut self) -> BoxFuture<'_, bool>;
}

/// The job table of one deployment. Every method that changes a claimed job takes its
/// [`Lease`] and changes nothing when the lease is not the job's current one.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Inserts `job` inside the caller's transaction; `max_attempts` is already resolved.
    async fn insert_in(
        &self,
        tx: &mut Tx<'_>,
        job: &NewJob,
        max_attempts: u32,
    ) -> Result<Enqueued, JobError>;

    /// Inserts `job` on its own (autocommit): one round trip on Postgres.
    async fn insert(&self, job: &NewJob, max_attempts: u32) -> Result<Enqueued, JobError>;

    /// Inserts many jobs in one transaction; returns how many were new.
    async fn insert_many(&self, jobs: &[(NewJob, u32)]) -> Result<u64, JobError>;

    /// Inserts many jobs inside the caller's transaction; returns how many were new. One
    /// statement on Postgres; one insert each elsewhere.
    async fn insert_many_in(
        &self,
        tx: &mut Tx<'_>,
        jobs: &[(NewJob, u32)],
    ) -> Result<u64, JobError> {
        let mut inserted = 0;
        for (job, max_attempts) in jobs {
            inserted += u64::from(self.insert_in(tx, job, *max_attempts).await?.inserted);
        }
        Ok(inserted)
    }

    /// This deployment's leader election (a process-local one on SQLite: one process).
    fn leader_election(&self) -> Box<dyn LeaderElection>;

    /// Wakes the fetchers in `wakers` when jobs of their queue become available (enqueued,
    /// rescued, released), until `stop` is cancelled. Without `listen_notify` (Postgres) it
    /// only waits: the fetchers poll.
    async fn forward_wakeups(&self, listen_notify: bool, wakers: Wakers, stop: CancellationToken);

    /// Enqueues the job of cron entry `entry`'s tick at `tick` (Unix seconds) and records the
    /// tick as the entry's latest, in one transaction.
    async fn enqueue_tick(
        &self,
        entry: &str,
        tick: i64,
        job: &NewJob,
        max_attempts: u32,
    ) -> Result<Enqueued, JobError>;

    /// The latest tick enqueued for cron entry `entry`, if any ever was.
    async fn last_tick(&self, entry: &str) -> Result<Option<i64>, JobError>;

    /// Claims up to `limit` due jobs of `queue` for `worker`, each under a new lease. A claimed
    /// row that cannot be decoded is moved to `dead` with the reason, never left `running`.
    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
    ) -> Result<Vec<ClaimedJob>, JobError>;

    /// Claims like [`JobStore::claim`], company by company: the company with the fewest jobs
    /// running goes first, and every company's next job comes before any company's one after
    /// (round-robin); with `per_company` set no company holds more than that many `running`
    /// jobs of `queue` across all processes.
    /// Fair claims of one queue take turns, so the limit holds however many processes claim.
    async fn claim_fair(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        per_company: Option<usize>,
    ) -> Result<Vec<ClaimedJob>, JobError>;

    /// Writes a batch of attempt outcomes; returns each job's new state. Outcomes whose lease
    /// is stale are skipped. A job that ends `dead` runs its kind's hook from `hooks` in the
    /// same transaction.
    async fn complete(
        &self,
        completions: &[Completion],
        hooks: &DeadHooks,
    ) -> Result<Vec<(JobId, JobState)>, JobError>;

    /// Refreshes the heartbeat of these leases; returns those still held (a lease missing
    /// from the answer is gone: its job was rescued, finished or taken back).
    async fn heartbeat(&self, leases: &[Lease]) -> Result<Vec<Lease>, JobError>;

    /// Records the progress reported by the attempt holding `lease`. Returns false, writing
    /// nothing, when the lease is not the job's current one or the job is not running.
    async fn set_progress(&self, lease: Lease, progress: &JobProgress) -> Result<bool, JobError>;

    /// The state and progress of the job with `unique_key` (one indexed row), if it exists.
    async fn progress_by_key(&self, unique_key: &str) -> Result<Option<KeyedProgress>, JobError>;

    /// Returns held jobs to `available` (graceful shutdown). `started` says whether they began
    /// running: a job that never started gives its attempt back.
    async fn release(&self, leases: &[Lease], started: bool) -> Result<u64, JobError>;

    /// Running jobs whose heartbeat is older than `stale_after` go back to `available`, or to
    /// `dead` (with their kind's hook from `hooks`, in the same transaction) when that was
    /// their last attempt.
    async fn rescue(
        &self,
        stale_after: Duration,
        hooks: &DeadHooks,
    ) -> Result<Vec<(JobId, JobState)>, JobError>;

    /// Deletes at most `batch` jobs of each final state past its retention; returns how many.
    async fn prune(&self, retention: &RetentionSettings, batch: u32) -> Result<u64, JobError>;

    async fn stats(&self) -> Result<Vec<QueueStats>, JobError>;

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, JobError>;

    async fn get(&self, id: JobId) -> Result<Option<Job>, JobError>;

    /// The earliest `run_at` of a waiting job in `queue`, so an idle fetcher can sleep until then.
    async fn next_due(&self, queue: &str) -> Result<Option<DateTime<Utc>>, JobError>;

    /// Jobs of `queue` that have not reached a final state.
    async fn unfinished(&self, queue: &str) -> Result<i64, JobError>;

    /// Whether `queue` has any job not in a final state.
    async fn has_unfinished(&self, queue: &str) -> Result<bool, JobError>;

    /// Per queue: attempts done, and attempts failed (to be retried or dead), within the last
    /// `window` (whole minutes, the current one included), from the activity table.
    async fn activity(&self, window: Duration) -> Result<Vec<(String, i64, i64)>, JobError>;

    /// Deletes every job of `queue` (the benchmark's own queue; never an operator action).
    async fn purge_queue(&self, queue: &str) -> Result<u64, JobError>;

    /// Moves the matching jobs in one of the states `from` to `available` now, attempts reset.
    async fn make_available(
        &self,
        id: Option<JobId>,
        queue: Option<&str>,
        from: &[JobState],
    ) -> Result<Vec<JobId>, JobError>;

    /// Moves job `id` to `cancelled` when it is in one of the states `from`.
    async fn cancel(&self, id: JobId, from: &[JobState]) -> Result<bool, JobError>;

    /// The operators' console: filtered lists, bulk actions, pauses, per-minute activity.
    fn console(&self) -> &dyn Console;

    /// Cancels, in the caller's transaction, every waiting job (scheduled, available,
    /// retrying) whose payload names one of the erased sessions or the erased profile of that
    /// company. A job already running finishes on its own: the workers re-check that their
    /// rows exist.
    async fn cancel_for_erased(
        &self,
        tx: &mut Tx<'_>,
        subject: &ErasedSubject<'_>,
    ) -> Result<u64, JobError>;
}

/// The store for `db`: the one place that looks at which database it is.
pub fn for_db(db: &Db) -> Arc<dyn JobStore> {
    match db {
        Db::Postgres(pg) => Arc::new(postgres::PostgresStore::new(pg.clone())),
        Db::Sqlite(lite) => Arc::new(sqlite::SqliteStore::new(lite.clone())),
    }
}

/// `db.jobs()`: the job store of a database handle.
pub trait DbJobs {
    fn jobs(&self) -> Arc<dyn JobStore>;
}

impl DbJobs for Db {
    fn jobs(&self) -> Arc<dyn JobStore> {
        for_db(self)
    }
}

/// The final states retention deletes, each with how many hours it keeps a finished job; a
/// state kept forever (0 hours) is left out.
fn expiring_states(retention: &RetentionSettings) -> impl Iterator<Item = (JobState, u64)> {
    [
        (JobState::Done, retention.done_hours),
        (JobState::Cancelled, retention.cancelled_hours),
        (JobState::Dead, retention.dead_hours),
    ]
    .into_iter()
    .filter(|(_, hours)| *hours != 0)
}

const RETRYABLE: [JobState; 2] = [JobState::Dead, JobState::Retrying];
const DISCARDABLE: [JobState; 4] = [
    JobState::Scheduled,
    JobState::Available,
    JobState::Retrying,
    JobState::Dead,
];

/// Operator retry of one job: `dead` or `retrying` → `available` now, attempts reset.
pub async fn retry(store: &dyn JobStore, id: JobId) -> Result<Job, JobError> {
    let moved = store.make_available(Some(id), None, &RETRYABLE).await?;
    let job = store.get(id).await?.ok_or(JobError::NotFound(id))?;
    if moved.is_empty() {
        return Err(JobError::WrongState {
            id,
            state: job.state,
            allowed: "dead or retrying",
            action: "retried",
        });
    }
    Ok(job)
}

/// Operator bulk retry: every job of `queue` in `state` (dead or retrying) → `available`.
pub async fn retry_all(
    store: &dyn JobStore,
    queue: &str,
    state: JobState,
) -> Result<Vec<JobId>, JobError> {
    if !state.is_retryable_by_operator() {
        return Err(JobError::WrongState {
            id: JobId(0),
            state,
            allowed: "dead or retrying",
            action: "retried",
        });
    }
    store.make_available(None, Some(queue), &[state]).await
}

/// Operator discard: a waiting or dead job → `cancelled` (kept for the cancelled retention).
pub async fn discard(store: &dyn JobStore, id: JobId) -> Result<Job, JobError> {
    let cancelled = store.cancel(id, &DISCARDABLE).await?;
    let job = store.get(id).await?.ok_or(JobError::NotFound(id))?;
    if !cancelled {
        return Err(JobError::WrongState {
            id,
            state: job.state,
            allowed: "scheduled, available, retrying or dead",
            action: "discarded",
        });
    }
    Ok(job)
}

/// Runs `job`'s on-dead hook in `savepoint` (a savepoint of the transaction that moves the job
/// to `dead`): released when the hook succeeds; rolled back, logged and counted when it fails,
/// so one broken hook cannot keep its job, or the others in the batch, from dying.
async fn run_dead_hook(
    mut savepoint: Tx<'_>,
    hooks: &DeadHooks,
    job: &DeadJob,
) -> Result<(), JobError> {
    let Some(hook) = hooks.get(&job.kind) else {
        return Ok(());
    };
    match hook.on_dead(&mut savepoint, job).await {
        Ok(()) => Ok(savepoint.commit().await?),
        Err(e) => {
            tracing::error!(job = %job.id, kind = %job.kind, error = %e, "on-dead hook failed; its changes were rolled back");
            metrics::counter!("voxline_dead_hook_failures_total", "kind" => job.kind.clone())
                .increment(1);
            Ok(savepoint.rollback().await?)
        }
    }
}

/// Counts per queue and state, with the paused queues marked (listed even without jobs).
fn group_stats(rows: Vec<row::QueueCount>, paused: Vec<QueuePause>) -> Vec<QueueStats> {
    let mut by_queue: BTreeMap<String, QueueStats> = BTreeMap::new();
    for (queue, state, count, oldest) in rows {
        let stats = by_queue.entry(queue.clone()).or_insert_with(|| QueueStats {
            queue,
            ..Default::default()
        });
        stats.counts.insert(state, count);
        if let Some(age) = oldest {
            let age = age.max(0);
            stats.oldest_available_age_ms =
                Some(stats.oldest_available_age_ms.map_or(age, |a| a.max(age)));
        }
    }
    for pause in paused {
        let stats = by_queue
            .entry(pause.queue.clone())
            .or_insert_with(|| QueueStats {
                queue: pause.queue.clone(),
                ..Default::default()
            });
        stats.pause = Some(pause);
    }
    by_queue.into_values().collect()
}

/// The columns of a whole job row, as [`row::decode_job`] reads them.
pub(super) const JOB_COLUMNS: &str = "id, queue, kind, payload, state, priority, attempt, max_attempts, \
    timeout_ms, unique_key, run_at, created_at, attempted_at, heartbeat_at, finished_at, \
    locked_by, last_error, errors, progress, progress_note";

/// The progress columns of a row; a percentage out of range is a corrupt row.
pub(super) fn stored_progress(
    percent: Option<i64>,
    note: Option<String>,
) -> Result<Option<JobProgress>, JobError> {
    let Some(percent) = percent else {
        return Ok(None);
    };
    let percent = u8::try_from(percent)
        .ok()
        .and_then(Percent::new)
        .ok_or_else(|| JobError::Corrupt(format!("progress column: {percent}")))?;
    Ok(Some(JobProgress { percent, note }))
}

/// `jobs` in round-robin order across their groups: each group's first (by `key`'s order
/// within the group), then each group's second, and so on, ties between groups by that order.
pub(crate) fn round_robin<T, G: Ord + Clone, K: Ord + Clone>(
    jobs: Vec<T>,
    key: impl Fn(&T) -> (G, K),
) -> Vec<T> {
    let mut keyed: Vec<(G, K, T)> = jobs
        .into_iter()
        .map(|job| {
            let (group, order) = key(&job);
            (group, order, job)
        })
        .collect();
    keyed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut ranked = Vec::with_capacity(keyed.len());
    let mut previous: Option<G> = None;
    let mut rank = 0usize;
    for (group, order, job) in keyed {
        rank = if previous.as_ref() == Some(&group) {
            rank + 1
        } else {
            0
        };
        previous = Some(group);
        ranked.push((rank, order, job));
    }
    ranked.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    ranked.into_iter().map(|(_, _, job)| job).collect()
}

#[cfg(test)]
mod round_robin_tests {
    use super::round_robin;

    #[test]
    fn every_group_gets_its_first_before_any_gets_its_second() {
        // (company, claim order): A has four waiting, B two, C one.
        let jobs = vec![
            ("A", 1),
            ("A", 2),
            ("A", 3),
            ("A", 4),
            ("B", 5),
            ("B", 6),
            ("C", 7),
        ];
        let order: Vec<_> = round_robin(jobs, |j| (j.0, j.1))
            .into_iter()
            .map(|j| j.1)
            .collect();
        assert_eq!(order, vec![1, 5, 7, 2, 6, 3, 4]);
    }
}
