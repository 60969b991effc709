//! The job store on SQLite (the embedded default). SQLite has one writer at a time, so a claim
//! is a single `UPDATE … RETURNING` and acknowledgements are written in one transaction per
//! batch. Times are integer microseconds from this process's clock (one machine, one file).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use voxline_domain::Tx;
use voxline_domain::db::SqliteDb;

use super::ErasedSubject;
use super::console::{OutcomeTally, minute_of};
use super::sqlite_console as console;
use crate::error::JobError;
use crate::handler::DeadHooks;
use crate::model::{
    AttemptError, ClaimedJob, Completion, DeadJob, Enqueued, JobId, Lease, NewJob, Outcome,
};
use crate::state::JobState;

mod claim;
mod maintenance;
mod outcome;

use super::row::{Column, JobRow, dead_job, parse_state};
use super::store_impl::impl_job_store;
use claim::*;
use maintenance::*;
use outcome::*;

const SHUTDOWN_ERROR: &str = "worker shut down before the job finished";

/// The job store of the embedded default (one SQLite file, one process).
pub struct SqliteStore {
    pub(super) db: SqliteDb,
}

impl SqliteStore {
    pub fn new(db: SqliteDb) -> Self {
        SqliteStore { db }
    }
}

impl_job_store!(SqliteStore, engine = pool, {
    async fn insert_in(
        &self,
        tx: &mut Tx<'_>,
        job: &NewJob,
        max_attempts: u32,
    ) -> Result<Enqueued, JobError> {
        let (conn, woken) = sqlite_tx(tx)?;
        let (enqueued, available) = insert(conn, job, max_attempts).await?;
        // Announced to this process's fetchers once the caller commits.
        if available {
            wake_at_commit(woken, &job.queue);
        }
        Ok(enqueued)
    }

    async fn insert(&self, job: &NewJob, max_attempts: u32) -> Result<Enqueued, JobError> {
        let mut conn = self.db.pool.acquire().await?;
        let (enqueued, available) = insert(&mut conn, job, max_attempts).await?;
        if available {
            let _ = self.db.commits.send(job.queue.as_str().into());
        }
        Ok(enqueued)
    }

    async fn insert_many(&self, jobs: &[(NewJob, u32)]) -> Result<u64, JobError> {
        insert_many(&self.db, jobs).await
    }

    fn leader_election(&self) -> Box<dyn super::LeaderElection> {
        Box::new(SoleProcess)
    }

    async fn forward_wakeups(
        &self,
        _listen_notify: bool,
        wakers: crate::runtime::wakeup::Wakers,
        stop: tokio_util::sync::CancellationToken,
    ) {
        // Commits of this process are the only ones: the in-process channel is complete.
        crate::runtime::wakeup::forward_commits(self.db.commits.subscribe(), &wakers, &stop).await
    }
});

/// The SQLite transaction in `tx`, and the queues to wake once it commits.
fn sqlite_tx<'a>(
    tx: &'a mut Tx<'_>,
) -> Result<(&'a mut SqliteConnection, &'a mut Vec<Arc<str>>), JobError> {
    match tx {
        Tx::Sqlite { tx, woken, .. } => Ok((&mut **tx, woken)),
        Tx::Postgres(_) => Err(JobError::WrongDatabase {
            given: "Postgres",
            store: "SQLite",
        }),
    }
}

/// The SQLite transaction in `tx` (the caller's, or one of [`begin_tx`]).
fn tx_connection<'a>(tx: &'a mut Tx<'_>) -> Result<&'a mut SqliteConnection, JobError> {
    Ok(sqlite_tx(tx)?.0)
}

/// A transaction of the store's own, for the methods written once over [`Tx`]: `IMMEDIATE`
/// takes the write lock up front; the queues it wakes are announced once it commits.
async fn begin_tx(db: &SqliteDb) -> Result<Tx<'static>, JobError> {
    Ok(Tx::Sqlite {
        tx: db.pool.begin_with("BEGIN IMMEDIATE").await?,
        commits: db.commits.clone(),
        woken: Vec::new(),
    })
}

/// Adds `queue` to the queues `woken` announces once its transaction commits.
fn wake_at_commit(woken: &mut Vec<Arc<str>>, queue: &str) {
    if !woken.iter().any(|q| **q == *queue) {
        woken.push(queue.into());
    }
}

/// Wakes this process's fetchers of `queues` once `tx` commits (SQLite serves one process).
async fn wake_on_commit(
    _db: &SqliteDb,
    tx: &mut Tx<'_>,
    queues: Vec<String>,
) -> Result<(), JobError> {
    let (_, woken) = sqlite_tx(tx)?;
    for queue in &queues {
        wake_at_commit(woken, queue);
    }
    Ok(())
}

/// The time of a write in the shared statements: parameter `n`, bound by [`bind_now`].
fn now_sql(n: usize) -> String {
    format!("${n}")
}

/// Binds this process's clock (one machine, one file) as the last parameter.
fn bind_now(query: SqliteQuery<'_>) -> SqliteQuery<'_> {
    query.bind(now_us())
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

/// SQLite's deployment is one process, which always leads its maintenance.
struct SoleProcess;

impl super::LeaderElection for SoleProcess {
    fn check(&mut self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

pub(super) fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

pub(super) fn to_time(us: i64) -> Result<DateTime<Utc>, JobError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| JobError::Corrupt(format!("time {us}")))
}

impl JobRow for SqliteRow {
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Result<T, serde_json::Error>, JobError> {
        Ok(serde_json::from_str(&self.try_get::<String, _>(name)?))
    }

    fn time(&self, name: &str) -> Result<DateTime<Utc>, JobError> {
        to_time(self.try_get(name)?)
    }

    fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, JobError> {
        self.try_get::<Option<i64>, _>(name)?
            .map(to_time)
            .transpose()
    }

    fn count(&self, name: &str) -> Result<u32, JobError> {
        Ok(self.try_get::<i64, _>(name)? as u32)
    }

    fn priority(&self) -> Result<i16, JobError> {
        Ok(self.try_get::<i64, _>("priority")? as i16)
    }

    fn percent(&self) -> Result<Option<i64>, JobError> {
        Ok(self.try_get("progress")?)
    }
}

fn error_entry(attempt: i64, at: i64, error: &str) -> Result<String, JobError> {
    let entry = AttemptError {
        attempt: attempt.max(0) as u32,
        at: to_time(at)?,
        error: error.to_string(),
    };
    Ok(serde_json::to_string(&entry)?)
}

/// Inserts on `conn` (a transaction or a lone connection); also says whether the job is due
/// now, so the caller can wake this process's fetchers once it is committed.
async fn insert(
    conn: &mut SqliteConnection,
    job: &NewJob,
    max_attempts: u32,
) -> Result<(Enqueued, bool), JobError> {
    let now = now_us();
    let run_at = job.run_at.map(|t| t.timestamp_micros()).unwrap_or(now);
    let state = if run_at <= now {
        "available"
    } else {
        "scheduled"
    };
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO jobs (queue, kind, payload, state, priority, max_attempts, timeout_ms,
                           unique_key, run_at, created_at, trace_context, tenant_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                 COALESCE(json_extract(?3, '$.company_id'), ''))
         ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(&job.queue)
    .bind(&job.kind)
    .bind(serde_json::to_string(&job.payload)?)
    .bind(state)
    .bind(job.priority as i64)
    .bind(max_attempts as i64)
    .bind(job.timeout.map(|t| t.as_millis() as i64))
    .bind(&job.unique_key)
    .bind(run_at)
    .bind(now)
    .bind(&job.trace_context)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = id {
        return Ok((
            Enqueued {
                id: JobId(id),
                inserted: true,
            },
            state == "available",
        ));
    }
    let id: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE unique_key = ?")
        .bind(job.unique_key.as_deref().unwrap_or_default())
        .fetch_one(&mut *conn)
        .await?;
    Ok((
        Enqueued {
            id: JobId(id),
            inserted: false,
        },
        false,
    ))
}

async fn insert_many(db: &SqliteDb, jobs: &[(NewJob, u32)]) -> Result<u64, JobError> {
    let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut inserted = 0;
    let mut woken: Vec<&str> = Vec::new();
    for (job, attempts) in jobs {
        let (enqueued, available) = insert(&mut tx, job, *attempts).await?;
        if enqueued.inserted {
            inserted += 1;
        }
        if available && !woken.contains(&job.queue.as_str()) {
            woken.push(&job.queue);
        }
    }
    tx.commit().await?;
    for queue in woken {
        let _ = db.commits.send(queue.into());
    }
    Ok(inserted)
}
