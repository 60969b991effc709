//! The job store on SQLite (the embedded default). SQLite has one writer at a time, so a claim
//! is a single `UPDATE … RETURNING` and acknowledgements are written in one transaction per
//! batch. Times are integer microseconds from this process's clock (one machine, one file).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use voxline_domain::Tx;
use voxline_domain::config::RetentionSettings;
use voxline_domain::db::SqliteDb;

use super::console::{Console, OutcomeTally, minute_of};
use super::sqlite_console as console;
use super::{ErasedSubject, JobFilter, JobStore, KeyedProgress};
use crate::error::JobError;
use crate::handler::DeadHooks;
use crate::model::{
    AttemptError, ClaimedJob, Completion, DeadJob, Enqueued, Job, JobId, Lease, NewJob, Outcome,
    QueueStats,
};
use crate::progress::JobProgress;
use crate::state::JobState;

pub(super) const JOB_COLUMNS: &str = "id, queue, kind, payload, state, priority, attempt, max_attempts, \
    timeout_ms, unique_key, run_at, created_at, attempted_at, heartbeat_at, finished_at, \
    locked_by, last_error, errors, progress, progress_note";

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

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert_in(
        &self,
        tx: &mut Tx<'_>,
        job: &NewJob,
        max_attempts: u32,
    ) -> Result<Enqueued, JobError> {
        let Tx::Sqlite { tx, woken, .. } = tx else {
            return Err(JobError::WrongDatabase {
                given: "Postgres",
                store: "SQLite",
            });
        };
        let (enqueued, available) = insert(tx, job, max_attempts).await?;
        // Announced to this process's fetchers once the caller commits.
        if available && !woken.iter().any(|q| **q == *job.queue) {
            woken.push(job.queue.as_str().into());
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

    async fn enqueue_tick(
        &self,
        entry: &str,
        tick: i64,
        job: &NewJob,
        max_attempts: u32,
    ) -> Result<Enqueued, JobError> {
        let mut tx = self.db.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (enqueued, available) = insert(&mut tx, job, max_attempts).await?;
        sqlx::query(
            "INSERT INTO cron_ticks (name, last_tick) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET last_tick = max(cron_ticks.last_tick, ?2)",
        )
        .bind(entry)
        .bind(tick)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if available {
            let _ = self.db.commits.send(job.queue.as_str().into());
        }
        Ok(enqueued)
    }

    async fn last_tick(&self, entry: &str) -> Result<Option<i64>, JobError> {
        Ok(
            sqlx::query_scalar("SELECT last_tick FROM cron_ticks WHERE name = ?")
                .bind(entry)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
    ) -> Result<Vec<ClaimedJob>, JobError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        claim(&self.db.pool, queue, worker, limit).await
    }

    async fn claim_fair(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        per_company: Option<usize>,
    ) -> Result<Vec<ClaimedJob>, JobError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        claim_fair(&self.db.pool, queue, worker, limit, per_company).await
    }

    async fn complete(
        &self,
        completions: &[Completion],
        hooks: &DeadHooks,
    ) -> Result<Vec<(JobId, JobState)>, JobError> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        complete(&self.db, completions, hooks).await
    }

    async fn heartbeat(&self, leases: &[Lease]) -> Result<Vec<Lease>, JobError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        heartbeat(&self.db.pool, leases).await
    }

    async fn release(&self, leases: &[Lease], started: bool) -> Result<u64, JobError> {
        if leases.is_empty() {
            return Ok(0);
        }
        release(&self.db, leases, started).await
    }

    async fn set_progress(&self, lease: Lease, progress: &JobProgress) -> Result<bool, JobError> {
        set_progress(&self.db.pool, lease, progress).await
    }

    async fn progress_by_key(&self, unique_key: &str) -> Result<Option<KeyedProgress>, JobError> {
        progress_by_key(&self.db.pool, unique_key).await
    }

    async fn rescue(
        &self,
        stale_after: Duration,
        hooks: &DeadHooks,
    ) -> Result<Vec<(JobId, JobState)>, JobError> {
        rescue(&self.db, stale_after, hooks).await
    }

    async fn prune(&self, retention: &RetentionSettings, batch: u32) -> Result<u64, JobError> {
        let pruned = prune(&self.db.pool, retention, batch).await?;
        self.prune_minute_stats().await?;
        Ok(pruned)
    }

    async fn stats(&self) -> Result<Vec<QueueStats>, JobError> {
        stats(&self.db.pool).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, JobError> {
        Console::list(self, filter).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, JobError> {
        get(&self.db.pool, id).await
    }

    async fn next_due(&self, queue: &str) -> Result<Option<DateTime<Utc>>, JobError> {
        next_due(&self.db.pool, queue).await
    }

    async fn unfinished(&self, queue: &str) -> Result<i64, JobError> {
        unfinished(&self.db.pool, queue).await
    }

    async fn has_unfinished(&self, queue: &str) -> Result<bool, JobError> {
        has_unfinished(&self.db.pool, queue).await
    }

    async fn activity(&self, window: Duration) -> Result<Vec<(String, i64, i64)>, JobError> {
        Console::activity(self, window).await
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64, JobError> {
        purge_queue(&self.db.pool, queue).await
    }

    async fn make_available(
        &self,
        id: Option<JobId>,
        queue: Option<&str>,
        from: &[JobState],
    ) -> Result<Vec<JobId>, JobError> {
        retry(&self.db, id, queue, from).await
    }

    async fn cancel(&self, id: JobId, from: &[JobState]) -> Result<bool, JobError> {
        cancel(&self.db.pool, id, from).await
    }

    async fn cancel_for_erased(
        &self,
        tx: &mut Tx<'_>,
        subject: &ErasedSubject<'_>,
    ) -> Result<u64, JobError> {
        let Tx::Sqlite { tx, .. } = tx else {
            return Err(JobError::WrongDatabase {
                given: "Postgres",
                store: "SQLite",
            });
        };
        cancel_for_erased(tx, subject).await
    }

    fn console(&self) -> &dyn Console {
        self
    }
}

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
                           unique_key, run_at, created_at, trace_context, company_id)
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

async fn claim(
    pool: &SqlitePool,
    queue: &str,
    worker: &str,
    limit: usize,
) -> Result<Vec<ClaimedJob>, JobError> {
    let now = now_us();
    let rows = sqlx::query(
        "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease = lease + 1,
                         attempted_at = ?1, heartbeat_at = ?1, locked_by = ?2,
                         progress = NULL, progress_note = NULL
         WHERE id IN (
            SELECT id FROM jobs
            WHERE queue = ?3 AND state IN ('available', 'scheduled', 'retrying') AND run_at <= ?1
              AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = ?3)
            ORDER BY priority DESC, run_at, id LIMIT ?4)
         RETURNING id, lease, kind, payload, attempt, max_attempts, timeout_ms, priority,
                   trace_context",
    )
    .bind(now)
    .bind(worker)
    .bind(queue)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    let mut claimed = decode_claims(pool, queue, rows).await?;
    claimed.sort_by_key(|c| (-c.priority, c.job.id));
    Ok(claimed.into_iter().map(|c| c.job).collect())
}

/// The fair claim (see [`super::JobStore::claim_fair`]): every due job of the queue ranked
/// within its company, and the batch taken in turns, a job's turn being its rank plus its
/// company's running jobs (the Postgres claim explains why). SQLite has one
/// writer, so the counts cannot go stale before the update.
async fn claim_fair(
    pool: &SqlitePool,
    queue: &str,
    worker: &str,
    limit: usize,
    cap: Option<usize>,
) -> Result<Vec<ClaimedJob>, JobError> {
    let now = now_us();
    let rows = sqlx::query(
        "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease = lease + 1,
                         attempted_at = ?1, heartbeat_at = ?1, locked_by = ?2,
                         progress = NULL, progress_note = NULL
         WHERE id IN (
            SELECT id FROM (
                SELECT w.id, w.priority, w.run_at,
                       row_number() OVER (PARTITION BY w.company_id
                                          ORDER BY w.priority DESC, w.run_at, w.id) AS rank,
                       (SELECT count(*) FROM jobs r
                        WHERE r.state = 'running' AND r.queue = ?3
                          AND r.company_id = w.company_id) AS held
                FROM jobs w
                WHERE w.queue = ?3 AND w.state IN ('available', 'scheduled', 'retrying')
                  AND w.run_at <= ?1
                  AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = ?3))
            WHERE rank + held <= ?5
            ORDER BY rank + held, priority DESC, run_at, id LIMIT ?4)
         RETURNING id, lease, kind, payload, attempt, max_attempts, timeout_ms, priority,
                   trace_context, company_id, run_at",
    )
    .bind(now)
    .bind(worker)
    .bind(queue)
    .bind(limit as i64)
    .bind(cap.map_or(i64::MAX, |c| c as i64))
    .fetch_all(pool)
    .await?;
    let companies: std::collections::HashMap<i64, (String, i64)> = rows
        .iter()
        .filter_map(|r| {
            let id = r.try_get::<i64, _>("id").ok()?;
            let company = r.try_get::<String, _>("company_id").ok()?;
            let run_at = r.try_get::<i64, _>("run_at").ok()?;
            Some((id, (company, run_at)))
        })
        .collect();
    let claimed = decode_claims(pool, queue, rows).await?;
    Ok(super::round_robin(claimed, |c| {
        let (company, run_at) = companies.get(&c.job.id.0).cloned().unwrap_or_default();
        (company, (-c.priority, run_at, c.job.id.0))
    })
    .into_iter()
    .map(|c| c.job)
    .collect())
}

/// A claimed job with the priority it was claimed by.
struct Claimed {
    priority: i64,
    job: ClaimedJob,
}

/// Decodes claimed rows; rows that cannot be read are buried.
async fn decode_claims(
    pool: &SqlitePool,
    queue: &str,
    rows: Vec<SqliteRow>,
) -> Result<Vec<Claimed>, JobError> {
    let mut claimed = Vec::with_capacity(rows.len());
    let mut undecodable = Vec::new();
    for row in rows {
        match decode_claimed(&row, queue) {
            Ok((priority, job)) => claimed.push(Claimed { priority, job }),
            Err(e) => match (row.try_get("id"), row.try_get("lease")) {
                (Ok(job), Ok(token)) => undecodable.push((
                    Lease {
                        job: JobId(job),
                        token,
                    },
                    e.to_string(),
                )),
                // Without its id and lease the row cannot be named; it stays `running`
                // without a heartbeat and is rescued.
                _ => tracing::error!(queue, error = %e, "claimed a job row without an id"),
            },
        }
    }
    bury_undecodable(pool, &undecodable).await?;
    Ok(claimed)
}

fn decode_claimed(row: &SqliteRow, queue: &str) -> Result<(i64, ClaimedJob), JobError> {
    let payload: String = row.try_get("payload")?;
    Ok((
        row.try_get::<i64, _>("priority")?,
        ClaimedJob {
            id: JobId(row.try_get("id")?),
            lease: row.try_get("lease")?,
            queue: queue.to_string(),
            kind: row.try_get("kind")?,
            payload: serde_json::from_str(&payload)?,
            attempt: row.try_get::<i64, _>("attempt")? as u32,
            max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
            timeout_ms: row
                .try_get::<Option<i64>, _>("timeout_ms")?
                .map(|t| t as u64),
            progress: crate::progress::Progress::detached(),
            trace_context: super::trace_context(row),
        },
    ))
}

/// Claimed rows that could not be read go to `dead` with the reason: no attempt would read
/// them better, and an operator can inspect them there. No on-dead hook runs for them: a hook
/// needs the payload it could not read.
async fn bury_undecodable(pool: &SqlitePool, rows: &[(Lease, String)]) -> Result<(), JobError> {
    if rows.is_empty() {
        return Ok(());
    }
    tracing::error!(jobs = ?rows, "claimed job rows could not be decoded; moved to dead");
    let now = now_us();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for (lease, reason) in rows {
        let error = format!("claimed row could not be decoded: {reason}");
        sqlx::query(
            // The unreadable payload is kept as a JSON string, so the dead row itself can be
            // listed and inspected.
            "UPDATE jobs SET state = 'dead', finished_at = ?1, locked_by = NULL,
                heartbeat_at = NULL, last_error = ?2,
                payload = CASE WHEN json_valid(payload) THEN payload ELSE json_quote(payload) END,
                errors = json_insert(errors, '$[#]', json_object('attempt', attempt,
                    'at', strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000000.0, 'unixepoch'), 'error', ?2))
             WHERE id = ?3 AND lease = ?4 AND state = 'running'",
        )
        .bind(now)
        .bind(&error)
        .bind(lease.job.0)
        .bind(lease.token)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn complete(
    db: &SqliteDb,
    completions: &[Completion],
    hooks: &DeadHooks,
) -> Result<Vec<(JobId, JobState)>, JobError> {
    let now = now_us();
    let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut finished = Vec::with_capacity(completions.len());
    let mut tally = OutcomeTally::default();
    for c in completions {
        // Only the attempt that holds the current lease may finish a job: one rescued and
        // claimed again belongs to its new attempt.
        let (id, lease) = (c.lease.job.0, c.lease.token);
        let row = match &c.outcome {
            Outcome::Done => {
                sqlx::query(
                    "UPDATE jobs SET state = 'done', finished_at = ?1, locked_by = NULL,
                                     heartbeat_at = NULL
                     WHERE id = ?2 AND lease = ?3 AND state = 'running'
                     RETURNING state, queue",
                )
                .bind(now)
                .bind(id)
                .bind(lease)
                .fetch_optional(&mut *tx)
                .await?
            }
            Outcome::Snooze { delay } => {
                sqlx::query(
                    "UPDATE jobs SET state = 'scheduled', attempt = attempt - 1, run_at = ?1 + ?2,
                                     locked_by = NULL, heartbeat_at = NULL
                     WHERE id = ?3 AND lease = ?4 AND state = 'running'
                     RETURNING state, queue",
                )
                .bind(now)
                .bind(delay.as_micros() as i64)
                .bind(id)
                .bind(lease)
                .fetch_optional(&mut *tx)
                .await?
            }
            Outcome::Retry { error, .. } | Outcome::Dead { error } => {
                let (delay, permanent) = match &c.outcome {
                    Outcome::Retry { delay, .. } => (delay.as_micros() as i64, false),
                    _ => (0, true),
                };
                let attempt: Option<i64> = sqlx::query_scalar(
                    "SELECT attempt FROM jobs WHERE id = ? AND lease = ? AND state = 'running'",
                )
                .bind(id)
                .bind(lease)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(attempt) = attempt else { continue };
                let entry = error_entry(attempt, now, error)?;
                let row = sqlx::query(
                    "UPDATE jobs SET
                        state = CASE WHEN ?1 OR attempt >= max_attempts THEN 'dead' ELSE 'retrying' END,
                        run_at = CASE WHEN ?1 OR attempt >= max_attempts THEN run_at ELSE ?2 + ?3 END,
                        finished_at = CASE WHEN ?1 OR attempt >= max_attempts THEN ?2 END,
                        last_error = ?4,
                        errors = json_insert(errors, '$[#]', json(?5)),
                        locked_by = NULL, heartbeat_at = NULL
                     WHERE id = ?6
                     RETURNING id, state, queue, kind, payload, last_error",
                )
                .bind(permanent)
                .bind(now)
                .bind(delay)
                .bind(error)
                .bind(entry)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                if row.try_get::<String, _>("state")? == "dead" {
                    run_dead_hook(db, &mut tx, hooks, &dead_job(&row)?).await?;
                }
                Some(row)
            }
        };
        if let Some(row) = row {
            let state = parse_state(row.try_get("state")?)?;
            tally.count(row.try_get("queue")?, state);
            finished.push((c.lease.job, state));
        }
    }
    console::add_minute_stats(&mut tx, &tally.rows(minute_of(Utc::now()))).await?;
    tx.commit().await?;
    Ok(finished)
}

fn dead_job(row: &SqliteRow) -> Result<DeadJob, JobError> {
    let payload: String = row.try_get("payload")?;
    Ok(DeadJob {
        id: JobId(row.try_get("id")?),
        queue: row.try_get("queue")?,
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload)?,
        error: row
            .try_get::<Option<String>, _>("last_error")?
            .unwrap_or_default(),
    })
}

/// Runs `job`'s on-dead hook in a savepoint of `tx`.
async fn run_dead_hook(
    db: &SqliteDb,
    tx: &mut Transaction<'static, Sqlite>,
    hooks: &DeadHooks,
    job: &DeadJob,
) -> Result<(), JobError> {
    if hooks.get(&job.kind).is_none() {
        return Ok(());
    }
    let savepoint = Tx::Sqlite {
        tx: sqlx::Acquire::begin(&mut *tx).await?,
        commits: db.commits.clone(),
        woken: Vec::new(),
    };
    super::run_dead_hook(savepoint, hooks, job).await
}

async fn heartbeat(pool: &SqlitePool, leases: &[Lease]) -> Result<Vec<Lease>, JobError> {
    let pairs: Vec<[i64; 2]> = leases.iter().map(|l| [l.job.0, l.token]).collect();
    let rows = sqlx::query(
        "UPDATE jobs SET heartbeat_at = ?1
         WHERE state = 'running' AND (id, lease) IN (
            SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?2))
         RETURNING id, lease",
    )
    .bind(now_us())
    .bind(serde_json::to_string(&pairs)?)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Lease {
                job: JobId(r.try_get("id")?),
                token: r.try_get("lease")?,
            })
        })
        .collect()
}

async fn set_progress(
    pool: &SqlitePool,
    lease: Lease,
    progress: &JobProgress,
) -> Result<bool, JobError> {
    let result = sqlx::query(
        "UPDATE jobs SET progress = ?3, progress_note = ?4
         WHERE id = ?1 AND lease = ?2 AND state = 'running'",
    )
    .bind(lease.job.0)
    .bind(lease.token)
    .bind(i64::from(progress.percent.get()))
    .bind(progress.note.as_deref())
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

async fn progress_by_key(
    pool: &SqlitePool,
    unique_key: &str,
) -> Result<Option<KeyedProgress>, JobError> {
    let row =
        sqlx::query("SELECT id, state, progress, progress_note FROM jobs WHERE unique_key = ?")
            .bind(unique_key)
            .fetch_optional(pool)
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(KeyedProgress {
        id: JobId(row.try_get("id")?),
        state: parse_state(row.try_get("state")?)?,
        progress: super::stored_progress(row.try_get("progress")?, row.try_get("progress_note")?)?,
    }))
}

async fn release(db: &SqliteDb, leases: &[Lease], started: bool) -> Result<u64, JobError> {
    let now = now_us();
    let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut released = 0;
    let mut woken: Vec<String> = Vec::new();
    for lease in leases {
        let row = sqlx::query(
            "SELECT attempt, queue FROM jobs WHERE id = ? AND lease = ? AND state = 'running'",
        )
        .bind(lease.job.0)
        .bind(lease.token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { continue };
        let attempt: i64 = row.try_get("attempt")?;
        let queue: String = row.try_get("queue")?;
        if started {
            sqlx::query(
                "UPDATE jobs SET state = 'available', locked_by = NULL, heartbeat_at = NULL,
                    last_error = ?1, errors = json_insert(errors, '$[#]', json(?2))
                 WHERE id = ?3",
            )
            .bind(SHUTDOWN_ERROR)
            .bind(error_entry(attempt, now, SHUTDOWN_ERROR)?)
            .bind(lease.job.0)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE jobs SET state = 'available', locked_by = NULL, heartbeat_at = NULL,
                    attempt = attempt - 1
                 WHERE id = ?",
            )
            .bind(lease.job.0)
            .execute(&mut *tx)
            .await?;
        }
        released += 1;
        if !woken.contains(&queue) {
            woken.push(queue);
        }
    }
    tx.commit().await?;
    for queue in woken {
        let _ = db.commits.send(queue.into());
    }
    Ok(released)
}

async fn rescue(
    db: &SqliteDb,
    stale_after: Duration,
    hooks: &DeadHooks,
) -> Result<Vec<(JobId, JobState)>, JobError> {
    let now = now_us();
    let cutoff = now - stale_after.as_micros() as i64;
    let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await?;
    let rows = sqlx::query(
        "SELECT id, attempt, queue, locked_by FROM jobs WHERE state = 'running' AND heartbeat_at < ?",
    )
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await?;
    let mut rescued = Vec::with_capacity(rows.len());
    let mut woken: Vec<String> = Vec::new();
    let mut tally = OutcomeTally::default();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let attempt: i64 = row.try_get("attempt")?;
        let holder: Option<String> = row.try_get("locked_by")?;
        let error = format!(
            "worker stopped heart-beating ({})",
            holder.as_deref().unwrap_or("?")
        );
        let updated = sqlx::query(
            "UPDATE jobs SET
                state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'available' END,
                finished_at = CASE WHEN attempt >= max_attempts THEN ?1 END,
                run_at = ?1, last_error = ?2, errors = json_insert(errors, '$[#]', json(?3)),
                locked_by = NULL, heartbeat_at = NULL
             WHERE id = ?4 RETURNING id, state, queue, kind, payload, last_error",
        )
        .bind(now)
        .bind(&error)
        .bind(error_entry(attempt, now, &error)?)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let state = parse_state(updated.try_get("state")?)?;
        tally.count(updated.try_get("queue")?, state);
        match state {
            JobState::Available => woken.push(row.try_get("queue")?),
            JobState::Dead => run_dead_hook(db, &mut tx, hooks, &dead_job(&updated)?).await?,
            _ => {}
        }
        rescued.push((JobId(id), state));
    }
    console::add_minute_stats(&mut tx, &tally.rows(minute_of(Utc::now()))).await?;
    tx.commit().await?;
    for queue in woken {
        let _ = db.commits.send(queue.into());
    }
    Ok(rescued)
}

async fn prune(
    pool: &SqlitePool,
    retention: &RetentionSettings,
    batch: u32,
) -> Result<u64, JobError> {
    let now = now_us();
    let mut deleted = 0;
    for (state, hours) in [
        ("done", retention.done_hours),
        ("cancelled", retention.cancelled_hours),
        ("dead", retention.dead_hours),
    ] {
        if hours == 0 {
            continue;
        }
        let cutoff = now - (hours as i64) * 3_600_000_000;
        let result = sqlx::query(
            "DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs WHERE state = ? AND finished_at < ? ORDER BY id LIMIT ?)",
        )
        .bind(state)
        .bind(cutoff)
        .bind(batch as i64)
        .execute(pool)
        .await?;
        deleted += result.rows_affected();
    }
    Ok(deleted)
}

async fn stats(pool: &SqlitePool) -> Result<Vec<QueueStats>, JobError> {
    let rows = sqlx::query(
        "SELECT queue, state, count(*) AS n,
                (?1 - min(CASE WHEN state IN ('available', 'scheduled', 'retrying') AND run_at <= ?1
                               THEN run_at END)) / 1000 AS oldest_ms
         FROM jobs GROUP BY queue, state ORDER BY queue",
    )
    .bind(now_us())
    .fetch_all(pool)
    .await?;
    let mut decoded = Vec::with_capacity(rows.len());
    for row in rows {
        decoded.push((
            row.try_get::<String, _>("queue")?,
            parse_state(row.try_get("state")?)?,
            row.try_get::<i64, _>("n")?,
            row.try_get::<Option<i64>, _>("oldest_ms")?,
        ));
    }
    let paused = sqlx::query(super::console::PAUSED_QUEUES)
        .fetch_all(pool)
        .await?
        .iter()
        .map(super::console::pause_row)
        .collect::<Result<_, _>>()?;
    Ok(super::group_stats(decoded, paused))
}

async fn get(pool: &SqlitePool, id: JobId) -> Result<Option<Job>, JobError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode_job).transpose()
}

async fn retry(
    db: &SqliteDb,
    id: Option<JobId>,
    queue: Option<&str>,
    from: &[JobState],
) -> Result<Vec<JobId>, JobError> {
    let from = serde_json::to_string(&from.iter().map(|s| s.as_str()).collect::<Vec<_>>())?;
    let rows = sqlx::query(
        "UPDATE jobs SET state = 'available', attempt = 0, run_at = ?1, finished_at = NULL,
                         locked_by = NULL, heartbeat_at = NULL
         WHERE (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR queue = ?3)
           AND state IN (SELECT value FROM json_each(?4))
         RETURNING id, queue",
    )
    .bind(now_us())
    .bind(id.map(|i| i.0))
    .bind(queue)
    .bind(from)
    .fetch_all(&db.pool)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut woken: Vec<String> = Vec::new();
    for row in rows {
        ids.push(JobId(row.try_get("id")?));
        let queue: String = row.try_get("queue")?;
        if !woken.contains(&queue) {
            woken.push(queue);
        }
    }
    for queue in woken {
        let _ = db.commits.send(queue.into());
    }
    Ok(ids)
}

async fn cancel(pool: &SqlitePool, id: JobId, from: &[JobState]) -> Result<bool, JobError> {
    let from = serde_json::to_string(&from.iter().map(|s| s.as_str()).collect::<Vec<_>>())?;
    let result = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = ?1, locked_by = NULL
         WHERE id = ?2 AND state IN (SELECT value FROM json_each(?3))",
    )
    .bind(now_us())
    .bind(id.0)
    .bind(from)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

async fn cancel_for_erased(
    conn: &mut SqliteConnection,
    subject: &ErasedSubject<'_>,
) -> Result<u64, JobError> {
    let result = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = ?1, locked_by = NULL,
                last_error = 'cancelled: its data was erased'
         WHERE state IN ('scheduled', 'available', 'retrying')
           AND json_extract(payload, '$.company_id') = ?2
           AND (json_extract(payload, '$.session_id') IN (SELECT value FROM json_each(?3))
                OR (?4 IS NOT NULL AND json_extract(payload, '$.profile_id') = ?4))",
    )
    .bind(now_us())
    .bind(subject.company_id)
    .bind(serde_json::to_string(subject.session_ids)?)
    .bind(subject.profile_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

async fn next_due(pool: &SqlitePool, queue: &str) -> Result<Option<DateTime<Utc>>, JobError> {
    let us: Option<i64> = sqlx::query_scalar(
        "SELECT min(run_at) FROM jobs
         WHERE queue = ?1 AND state IN ('scheduled', 'retrying')
           AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = ?1)",
    )
    .bind(queue)
    .fetch_one(pool)
    .await?;
    us.map(to_time).transpose()
}

fn parse_state(s: String) -> Result<JobState, JobError> {
    s.parse()
        .map_err(|e: crate::state::UnknownState| JobError::Corrupt(e.to_string()))
}

pub(super) fn decode_job(row: &SqliteRow) -> Result<Job, JobError> {
    let payload: String = row.try_get("payload")?;
    let errors: String = row.try_get("errors")?;
    let errors: Vec<AttemptError> = serde_json::from_str(&errors)
        .map_err(|e| JobError::Corrupt(format!("errors column: {e}")))?;
    let opt_time = |col: &str| -> Result<Option<DateTime<Utc>>, JobError> {
        row.try_get::<Option<i64>, _>(col)?.map(to_time).transpose()
    };
    Ok(Job {
        id: JobId(row.try_get("id")?),
        queue: row.try_get("queue")?,
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload)?,
        state: parse_state(row.try_get("state")?)?,
        priority: row.try_get::<i64, _>("priority")? as i16,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        timeout_ms: row
            .try_get::<Option<i64>, _>("timeout_ms")?
            .map(|t| t as u64),
        unique_key: row.try_get("unique_key")?,
        run_at: to_time(row.try_get("run_at")?)?,
        created_at: to_time(row.try_get("created_at")?)?,
        attempted_at: opt_time("attempted_at")?,
        heartbeat_at: opt_time("heartbeat_at")?,
        finished_at: opt_time("finished_at")?,
        locked_by: row.try_get("locked_by")?,
        last_error: row.try_get("last_error")?,
        errors,
        progress: super::stored_progress(row.try_get("progress")?, row.try_get("progress_note")?)?,
    })
}

async fn unfinished(pool: &SqlitePool, queue: &str) -> Result<i64, JobError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM jobs
         WHERE queue = ? AND state IN ('scheduled', 'available', 'running', 'retrying')",
    )
    .bind(queue)
    .fetch_one(pool)
    .await?)
}

async fn purge_queue(pool: &SqlitePool, queue: &str) -> Result<u64, JobError> {
    let result = sqlx::query("DELETE FROM jobs WHERE queue = ?")
        .bind(queue)
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}

async fn has_unfinished(pool: &SqlitePool, queue: &str) -> Result<bool, JobError> {
    // EXISTS stops at the first row the partial indexes find: cheap to poll.
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs
         WHERE queue = ? AND state IN ('scheduled', 'available', 'running', 'retrying'))",
    )
    .bind(queue)
    .fetch_one(pool)
    .await?)
}
