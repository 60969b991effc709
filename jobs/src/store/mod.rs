//! One storage interface for the job engine, implemented for Postgres and SQLite.
//!
//! Each function dispatches on the [`Db`] to the driver module with the same function name;
//! no SQL leaks above this module.

mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use voxline_domain::config::RetentionSettings;
use voxline_domain::{Db, Tx};

use crate::error::JobError;
use crate::model::{ClaimedJob, Completion, Enqueued, Job, JobId, NewJob, QueueStats};
use crate::state::JobState;

/// Which jobs to list: newest first, `before` an id for cursor pagination.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub before: Option<JobId>,
    pub limit: u32,
}

/// Inserts `job` inside the caller's transaction; `max_attempts` is already resolved.
pub async fn insert(
    tx: &mut Tx<'_>,
    job: &NewJob,
    max_attempts: u32,
    pg_channel: &str,
) -> Result<Enqueued, JobError> {
    match tx {
        Tx::Postgres(tx) => postgres::insert(tx, pg_channel, job, max_attempts).await,
        Tx::Sqlite { tx, woken, .. } => {
            let (enqueued, available) = sqlite::insert(tx, job, max_attempts).await?;
            // Announced to this process's fetchers once the caller commits.
            if available && !woken.iter().any(|q| **q == *job.queue) {
                woken.push(job.queue.as_str().into());
            }
            Ok(enqueued)
        }
    }
}

/// Inserts `job` on its own (autocommit): one round trip on Postgres.
pub async fn insert_now(db: &Db, job: &NewJob, max_attempts: u32) -> Result<Enqueued, JobError> {
    match db {
        Db::Postgres(pg) => {
            let mut conn = pg.pool.acquire().await?;
            postgres::insert(&mut conn, &pg.notify_channel, job, max_attempts).await
        }
        Db::Sqlite(lite) => {
            let mut conn = lite.pool.acquire().await?;
            let (enqueued, available) = sqlite::insert(&mut conn, job, max_attempts).await?;
            if available {
                let _ = lite.commits.send(job.queue.as_str().into());
            }
            Ok(enqueued)
        }
    }
}

pub async fn insert_many(db: &Db, jobs: &[(NewJob, u32)]) -> Result<u64, JobError> {
    match db {
        Db::Postgres(pg) => postgres::insert_many(pg, jobs).await,
        Db::Sqlite(lite) => sqlite::insert_many(lite, jobs).await,
    }
}

pub async fn claim(
    db: &Db,
    queue: &str,
    worker: &str,
    limit: usize,
) -> Result<Vec<ClaimedJob>, JobError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    match db {
        Db::Postgres(pg) => postgres::claim(&pg.engine_pool, queue, worker, limit).await,
        Db::Sqlite(lite) => sqlite::claim(&lite.pool, queue, worker, limit).await,
    }
}

/// Writes a batch of attempt outcomes; returns each job's new state (jobs this worker no
/// longer holds are skipped).
pub async fn complete(
    db: &Db,
    worker: &str,
    completions: &[Completion],
) -> Result<Vec<(JobId, JobState)>, JobError> {
    if completions.is_empty() {
        return Ok(Vec::new());
    }
    match db {
        Db::Postgres(pg) => postgres::complete(&pg.engine_pool, worker, completions).await,
        Db::Sqlite(lite) => sqlite::complete(&lite.pool, worker, completions).await,
    }
}

pub async fn heartbeat(db: &Db, worker: &str) -> Result<u64, JobError> {
    match db {
        Db::Postgres(pg) => postgres::heartbeat(&pg.engine_pool, worker).await,
        Db::Sqlite(lite) => sqlite::heartbeat(&lite.pool, worker).await,
    }
}

/// Returns jobs this worker holds to `available` (graceful shutdown). `started` says whether
/// they began running: a job that never started gives its attempt back.
pub async fn release(db: &Db, worker: &str, ids: &[JobId], started: bool) -> Result<u64, JobError> {
    if ids.is_empty() {
        return Ok(0);
    }
    match db {
        Db::Postgres(pg) => postgres::release(&pg.engine_pool, worker, ids, started).await,
        Db::Sqlite(lite) => sqlite::release(lite, worker, ids, started).await,
    }
}

/// Running jobs whose heartbeat is older than `stale_after` go back to `available` (or `dead`
/// when that was their last attempt).
pub async fn rescue(db: &Db, stale_after: Duration) -> Result<Vec<(JobId, JobState)>, JobError> {
    match db {
        Db::Postgres(pg) => postgres::rescue(pg, stale_after).await,
        Db::Sqlite(lite) => sqlite::rescue(lite, stale_after).await,
    }
}

/// Scheduled and retrying jobs whose time has come become `available`; returns their queues.
pub async fn promote(db: &Db) -> Result<Vec<String>, JobError> {
    match db {
        Db::Postgres(pg) => postgres::promote(pg).await,
        Db::Sqlite(lite) => sqlite::promote(lite).await,
    }
}

pub async fn prune(db: &Db, retention: &RetentionSettings) -> Result<u64, JobError> {
    match db {
        Db::Postgres(pg) => postgres::prune(&pg.pool, retention).await,
        Db::Sqlite(lite) => sqlite::prune(&lite.pool, retention).await,
    }
}

pub async fn stats(db: &Db) -> Result<Vec<QueueStats>, JobError> {
    match db {
        Db::Postgres(pg) => postgres::stats(&pg.pool).await,
        Db::Sqlite(lite) => sqlite::stats(&lite.pool).await,
    }
}

pub async fn list(db: &Db, filter: &JobFilter) -> Result<Vec<Job>, JobError> {
    match db {
        Db::Postgres(pg) => postgres::list(&pg.pool, filter).await,
        Db::Sqlite(lite) => sqlite::list(&lite.pool, filter).await,
    }
}

pub async fn get(db: &Db, id: JobId) -> Result<Option<Job>, JobError> {
    match db {
        Db::Postgres(pg) => postgres::get(&pg.pool, id).await,
        Db::Sqlite(lite) => sqlite::get(&lite.pool, id).await,
    }
}

/// The earliest `run_at` of a waiting job in `queue`, so an idle fetcher can sleep until then.
pub async fn next_due(db: &Db, queue: &str) -> Result<Option<DateTime<Utc>>, JobError> {
    match db {
        Db::Postgres(pg) => postgres::next_due(&pg.engine_pool, queue).await,
        Db::Sqlite(lite) => sqlite::next_due(&lite.pool, queue).await,
    }
}

/// Jobs of `queue` that have not reached a final state.
pub async fn unfinished(db: &Db, queue: &str) -> Result<i64, JobError> {
    match db {
        Db::Postgres(pg) => postgres::unfinished(&pg.pool, queue).await,
        Db::Sqlite(lite) => sqlite::unfinished(&lite.pool, queue).await,
    }
}

/// Per queue: jobs done, and jobs whose latest attempt failed, within the last `window`.
pub async fn activity(db: &Db, window: Duration) -> Result<Vec<(String, i64, i64)>, JobError> {
    match db {
        Db::Postgres(pg) => postgres::activity(&pg.pool, window).await,
        Db::Sqlite(lite) => sqlite::activity(&lite.pool, window).await,
    }
}

/// Whether `queue` has any job not in a final state.
pub async fn has_unfinished(db: &Db, queue: &str) -> Result<bool, JobError> {
    match db {
        Db::Postgres(pg) => postgres::has_unfinished(&pg.pool, queue).await,
        Db::Sqlite(lite) => sqlite::has_unfinished(&lite.pool, queue).await,
    }
}

/// Deletes every job of `queue` (the benchmark's own queue; never an operator action).
pub async fn purge_queue(db: &Db, queue: &str) -> Result<u64, JobError> {
    match db {
        Db::Postgres(pg) => postgres::purge_queue(&pg.pool, queue).await,
        Db::Sqlite(lite) => sqlite::purge_queue(&lite.pool, queue).await,
    }
}

const RETRYABLE: [JobState; 2] = [JobState::Dead, JobState::Retrying];
const DISCARDABLE: [JobState; 4] = [
    JobState::Scheduled,
    JobState::Available,
    JobState::Retrying,
    JobState::Dead,
];

/// Operator retry of one job: `dead` or `retrying` → `available` now, attempts reset.
pub async fn retry(db: &Db, id: JobId) -> Result<Job, JobError> {
    let moved = match db {
        Db::Postgres(pg) => postgres::retry(pg, Some(id), None, &RETRYABLE).await?,
        Db::Sqlite(lite) => sqlite::retry(lite, Some(id), None, &RETRYABLE).await?,
    };
    let job = get(db, id).await?.ok_or(JobError::NotFound(id))?;
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
pub async fn retry_all(db: &Db, queue: &str, state: JobState) -> Result<Vec<JobId>, JobError> {
    if !state.is_retryable_by_operator() {
        return Err(JobError::WrongState {
            id: JobId(0),
            state,
            allowed: "dead or retrying",
            action: "retried",
        });
    }
    match db {
        Db::Postgres(pg) => postgres::retry(pg, None, Some(queue), &[state]).await,
        Db::Sqlite(lite) => sqlite::retry(lite, None, Some(queue), &[state]).await,
    }
}

/// Operator discard: a waiting or dead job → `cancelled` (kept for the cancelled retention).
/// What erased data the waiting jobs may not act on any more: the sessions by id, and the
/// profile (jobs whose payload names it, such as its emails).
#[derive(Debug, Clone, Copy)]
pub struct ErasedSubject<'a> {
    pub company_id: &'a str,
    pub profile_id: Option<&'a str>,
    pub session_ids: &'a [String],
}

/// Cancels, in the caller's transaction, every waiting job (scheduled, available, retrying)
/// whose payload names one of the erased sessions or the erased profile of that company. A job
/// already running finishes on its own: the workers re-check that their rows exist.
pub async fn cancel_for_erased(
    tx: &mut Tx<'_>,
    subject: &ErasedSubject<'_>,
) -> Result<u64, JobError> {
    match tx {
        Tx::Postgres(tx) => postgres::cancel_for_erased(tx, subject).await,
        Tx::Sqlite { tx, .. } => sqlite::cancel_for_erased(tx, subject).await,
    }
}

pub async fn discard(db: &Db, id: JobId) -> Result<Job, JobError> {
    let cancelled = match db {
        Db::Postgres(pg) => postgres::cancel(&pg.pool, id, &DISCARDABLE).await?,
        Db::Sqlite(lite) => sqlite::cancel(&lite.pool, id, &DISCARDABLE).await?,
    };
    let job = get(db, id).await?.ok_or(JobError::NotFound(id))?;
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

fn group_stats(rows: Vec<(String, JobState, i64, Option<i64>)>) -> Vec<QueueStats> {
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
    by_queue.into_values().collect()
}
