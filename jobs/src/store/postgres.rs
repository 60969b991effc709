//! The job store on Postgres: claims with `FOR UPDATE SKIP LOCKED`, batched acknowledgements
//! through `UNNEST`, NOTIFY on enqueue (delivered by the server at commit), database time
//! (`now()`) for every timestamp so several hosts agree on it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use voxline_domain::config::RetentionSettings;
use voxline_domain::db::PgDb;

use std::sync::Arc;

use async_trait::async_trait;
use voxline_domain::Tx;
use voxline_domain::db::Scope;

use super::console::{Console, OutcomeTally, minute_of};
use super::postgres_console as console;
use super::{ErasedSubject, JobFilter, JobStore, KeyedProgress};
use crate::error::JobError;
use crate::handler::DeadHooks;
use crate::model::{
    AttemptError, ClaimedJob, Completion, DeadJob, Enqueued, Job, JobId, Lease, NewJob, Outcome,
    QueueStats,
};
use crate::progress::JobProgress;
use crate::state::JobState;

/// The job store of a Postgres deployment (one schema).
pub struct PostgresStore {
    pub(super) db: Arc<PgDb>,
}

impl PostgresStore {
    pub fn new(db: Arc<PgDb>) -> Self {
        PostgresStore { db }
    }
}

fn postgres_tx<'a, 'c>(tx: &'a mut Tx<'c>) -> Result<&'a mut PgConnection, JobError> {
    match tx {
        Tx::Postgres(tx) => Ok(&mut **tx),
        Tx::Sqlite { .. } => Err(JobError::WrongDatabase {
            given: "SQLite",
            store: "Postgres",
        }),
    }
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn insert_in(
        &self,
        tx: &mut Tx<'_>,
        job: &NewJob,
        max_attempts: u32,
    ) -> Result<Enqueued, JobError> {
        insert(postgres_tx(tx)?, &self.db.notify_channel, job, max_attempts).await
    }

    async fn insert(&self, job: &NewJob, max_attempts: u32) -> Result<Enqueued, JobError> {
        let mut conn = self.db.pool.acquire().await?;
        insert(&mut conn, &self.db.notify_channel, job, max_attempts).await
    }

    async fn insert_many(&self, jobs: &[(NewJob, u32)]) -> Result<u64, JobError> {
        insert_many(&self.db, jobs).await
    }

    fn leader_election(&self) -> Box<dyn super::LeaderElection> {
        Box::new(super::postgres_leader::PgLeadership::new(
            self.db.options.clone(),
            &self.db.schema,
        ))
    }

    async fn forward_wakeups(
        &self,
        listen_notify: bool,
        wakers: crate::runtime::wakeup::Wakers,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if listen_notify {
            super::postgres_listen::listen(
                &self.db.options,
                &self.db.notify_channel,
                &wakers,
                &stop,
            )
            .await
        } else {
            stop.cancelled().await
        }
    }

    async fn enqueue_tick(
        &self,
        entry: &str,
        tick: i64,
        job: &NewJob,
        max_attempts: u32,
    ) -> Result<Enqueued, JobError> {
        let mut tx = self.db.pool.begin().await?;
        let enqueued = insert(&mut tx, &self.db.notify_channel, job, max_attempts).await?;
        sqlx::query(
            "INSERT INTO cron_ticks (name, last_tick) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET last_tick = GREATEST(cron_ticks.last_tick, $2)",
        )
        .bind(entry)
        .bind(tick)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(enqueued)
    }

    async fn last_tick(&self, entry: &str) -> Result<Option<i64>, JobError> {
        Ok(
            sqlx::query_scalar("SELECT last_tick FROM cron_ticks WHERE name = $1")
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
        claim(&self.db.engine_pool, queue, worker, limit).await
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
        claim_fair(&self.db, queue, worker, limit, per_company).await
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
        heartbeat(&self.db.engine_pool, leases).await
    }

    async fn release(&self, leases: &[Lease], started: bool) -> Result<u64, JobError> {
        if leases.is_empty() {
            return Ok(0);
        }
        release(&self.db.engine_pool, leases, started).await
    }

    async fn set_progress(&self, lease: Lease, progress: &JobProgress) -> Result<bool, JobError> {
        set_progress(&self.db.engine_pool, lease, progress).await
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
        next_due(&self.db.engine_pool, queue).await
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
        cancel_for_erased(postgres_tx(tx)?, subject).await
    }

    fn console(&self) -> &dyn Console {
        self
    }
}

pub(super) const JOB_COLUMNS: &str = "id, queue, kind, payload, state, priority, attempt, max_attempts, \
    timeout_ms, unique_key, run_at, created_at, attempted_at, heartbeat_at, finished_at, \
    locked_by, last_error, errors, progress, progress_note";

/// Inserts on `conn`: inside the caller's transaction, or alone (autocommit, one round trip).
async fn insert(
    conn: &mut PgConnection,
    channel: &str,
    job: &NewJob,
    max_attempts: u32,
) -> Result<Enqueued, JobError> {
    // One round trip: insert, and NOTIFY the queue when the job is due now. A conflicting
    // unique key inserts nothing and the existing job is looked up below.
    let row = sqlx::query(
        "WITH ins AS (
            INSERT INTO jobs (queue, kind, payload, state, priority, max_attempts, timeout_ms,
                              unique_key, run_at, trace_context, company_id)
            VALUES ($1, $2, $3,
                    CASE WHEN $7::timestamptz IS NULL OR $7 <= now() THEN 'available' ELSE 'scheduled' END,
                    $4, $5, $6, $8, COALESCE($7, clock_timestamp()), $10,
                    COALESCE($3::jsonb->>'company_id', ''))
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id, state, kind, payload, errors, company_id),
         words AS (
            INSERT INTO job_search (job_id, company_id, words)
            SELECT id, company_id,
                   to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text)
            FROM ins)
         SELECT id, CASE WHEN state = 'available' THEN pg_notify($9, $1)::text END AS notified
         FROM ins",
    )
    .bind(&job.queue)
    .bind(&job.kind)
    .bind(&job.payload)
    .bind(job.priority)
    .bind(max_attempts as i32)
    .bind(job.timeout.map(|t| t.as_millis() as i64))
    .bind(job.run_at)
    .bind(&job.unique_key)
    .bind(channel)
    .bind(&job.trace_context)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(Enqueued {
            id: JobId(row.try_get("id")?),
            inserted: true,
        });
    }
    let key = job.unique_key.as_deref().unwrap_or_default();
    let id: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE unique_key = $1")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Enqueued {
        id: JobId(id),
        inserted: false,
    })
}

async fn insert_many(db: &PgDb, jobs: &[(NewJob, u32)]) -> Result<u64, JobError> {
    let mut tx = db.pool.begin().await?;
    let mut inserted = 0;
    for chunk in jobs.chunks(5_000) {
        let queues: Vec<&str> = chunk.iter().map(|(j, _)| j.queue.as_str()).collect();
        let kinds: Vec<&str> = chunk.iter().map(|(j, _)| j.kind.as_str()).collect();
        let payloads: Vec<&serde_json::Value> = chunk.iter().map(|(j, _)| &j.payload).collect();
        let priorities: Vec<i16> = chunk.iter().map(|(j, _)| j.priority).collect();
        let attempts: Vec<i32> = chunk.iter().map(|(_, a)| *a as i32).collect();
        let timeouts: Vec<Option<i64>> = chunk
            .iter()
            .map(|(j, _)| j.timeout.map(|t| t.as_millis() as i64))
            .collect();
        let keys: Vec<Option<&str>> = chunk.iter().map(|(j, _)| j.unique_key.as_deref()).collect();
        let run_ats: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|(j, _)| j.run_at).collect();
        let contexts: Vec<Option<&str>> = chunk
            .iter()
            .map(|(j, _)| j.trace_context.as_deref())
            .collect();
        let count: i64 = sqlx::query_scalar(
            "WITH ins AS (
                INSERT INTO jobs (queue, kind, payload, state, priority, max_attempts, timeout_ms,
                                  unique_key, run_at, trace_context, company_id)
                SELECT q, k, p,
                       CASE WHEN r IS NULL OR r <= now() THEN 'available' ELSE 'scheduled' END,
                       pr, ma, t, u, COALESCE(r, clock_timestamp()), tc,
                       COALESCE(p->>'company_id', '')
                FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::int2[], $5::int4[], $6::int8[],
                            $7::text[], $8::timestamptz[], $9::text[])
                     AS x(q, k, p, pr, ma, t, u, r, tc)
                ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
                RETURNING id, kind, payload, errors, company_id),
             words AS (
                INSERT INTO job_search (job_id, company_id, words)
                SELECT id, company_id,
                       to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text)
                FROM ins)
             SELECT count(*) FROM ins",
        )
        .bind(&queues)
        .bind(&kinds)
        .bind(&payloads)
        .bind(&priorities)
        .bind(&attempts)
        .bind(&timeouts)
        .bind(&keys)
        .bind(&run_ats)
        .bind(&contexts)
        .fetch_one(&mut *tx)
        .await?;
        inserted += count as u64;
    }
    let mut queues: Vec<&str> = jobs.iter().map(|(j, _)| j.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    for queue in queues {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&db.notify_channel)
            .bind(queue)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

async fn claim(
    pool: &PgPool,
    queue: &str,
    worker: &str,
    limit: usize,
) -> Result<Vec<ClaimedJob>, JobError> {
    let rows = sqlx::query(
        "WITH picked AS (
            SELECT id FROM jobs
            WHERE queue = $1 AND state IN ('available', 'scheduled', 'retrying') AND run_at <= now()
              AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = $1)
            ORDER BY priority DESC, run_at, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED)
         UPDATE jobs j
         SET state = 'running', attempt = j.attempt + 1, lease = j.lease + 1,
             attempted_at = clock_timestamp(), heartbeat_at = clock_timestamp(), locked_by = $3,
             progress = NULL, progress_note = NULL
         FROM picked WHERE j.id = picked.id
         RETURNING j.id, j.lease, j.kind, j.payload, j.attempt, j.max_attempts, j.timeout_ms,
                   j.priority, j.trace_context",
    )
    .bind(queue)
    .bind(limit as i64)
    .bind(worker)
    .fetch_all(pool)
    .await?;
    decode_claims(pool, queue, rows, ClaimOrder::Priority).await
}

/// The fair claim: companies with due jobs found by a loose index scan of `jobs_fair` (one
/// probe per company, however long one company's backlog is), up to `limit` jobs taken in
/// turns: a job's turn is its company's running jobs plus its rank within the company, so
/// the company with the fewest running goes first and every company's next job comes before
/// any company's one after (round-robin that also holds across claims of one job). Each
/// company is capped at `cap` running. Claims of one queue take turns on an advisory lock so that the
/// running counts they read are not stale: each one reads after the previous committed.
async fn claim_fair(
    db: &PgDb,
    queue: &str,
    worker: &str,
    limit: usize,
    cap: Option<usize>,
) -> Result<Vec<ClaimedJob>, JobError> {
    let mut tx = db.engine_pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("voxline.claim_fair:{}:{queue}", db.schema))
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "WITH RECURSIVE companies AS (
            (SELECT company_id FROM jobs
             WHERE queue = $1 AND state IN ('available', 'scheduled', 'retrying')
             ORDER BY company_id LIMIT 1)
            UNION ALL
            SELECT (SELECT j.company_id FROM jobs j
                    WHERE j.queue = $1 AND j.state IN ('available', 'scheduled', 'retrying')
                      AND j.company_id > c.company_id
                    ORDER BY j.company_id LIMIT 1)
            FROM companies c WHERE c.company_id IS NOT NULL),
         held AS (
            SELECT company_id, count(*) AS n FROM jobs
            WHERE queue = $1 AND state = 'running' GROUP BY company_id),
         picked AS (
            SELECT w.id,
                   row_number() OVER (ORDER BY COALESCE(h.n, 0) + w.rank, w.priority DESC,
                                               w.run_at, w.id) AS turn
            FROM companies c
            LEFT JOIN held h ON h.company_id = c.company_id
            CROSS JOIN LATERAL (
                SELECT id, priority, run_at,
                       row_number() OVER (ORDER BY priority DESC, run_at, id) AS rank
                FROM (SELECT id, priority, run_at FROM jobs
                      WHERE queue = $1 AND company_id = c.company_id
                        AND state IN ('available', 'scheduled', 'retrying') AND run_at <= now()
                      ORDER BY priority DESC, run_at, id
                      LIMIT GREATEST(0, LEAST($2, $4 - COALESCE(h.n, 0)))) due) w
            WHERE c.company_id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = $1)
            ORDER BY turn
            LIMIT $2)
         UPDATE jobs j
         SET state = 'running', attempt = j.attempt + 1, lease = j.lease + 1,
             attempted_at = clock_timestamp(), heartbeat_at = clock_timestamp(), locked_by = $3,
             progress = NULL, progress_note = NULL
         FROM picked WHERE j.id = picked.id AND j.state IN ('available', 'scheduled', 'retrying')
         RETURNING j.id, j.lease, j.kind, j.payload, j.attempt, j.max_attempts, j.timeout_ms,
                   j.priority, j.trace_context, picked.turn",
    )
    .bind(queue)
    .bind(limit as i64)
    .bind(worker)
    .bind(cap.map_or(i64::MAX, |c| c as i64))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    decode_claims(&db.engine_pool, queue, rows, ClaimOrder::Turn).await
}

/// The order a claimed batch runs in (RETURNING has none of its own).
#[derive(Clone, Copy)]
enum ClaimOrder {
    /// Priority, then id: the order of the plain claim.
    Priority,
    /// The fair claim's `turn` column: round-robin across companies.
    Turn,
}

/// Decodes claimed rows in claim order; rows that cannot be read are buried.
async fn decode_claims(
    pool: &PgPool,
    queue: &str,
    rows: Vec<PgRow>,
    order: ClaimOrder,
) -> Result<Vec<ClaimedJob>, JobError> {
    let mut claimed = Vec::with_capacity(rows.len());
    let mut undecodable = Vec::new();
    for row in rows {
        let key = match order {
            ClaimOrder::Priority => row.try_get::<i16, _>("priority").map(|p| -i64::from(p)),
            ClaimOrder::Turn => row.try_get::<i64, _>("turn"),
        };
        match key
            .map_err(JobError::from)
            .and_then(|k| Ok((k, decode_claimed(&row, queue)?)))
        {
            Ok(job) => claimed.push(job),
            Err(e) => {
                let lease = (row.try_get("id"), row.try_get("lease"));
                match lease {
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
                }
            }
        }
    }
    bury_undecodable(pool, &undecodable).await?;
    claimed.sort_by_key(|(key, job)| (*key, job.id));
    Ok(claimed.into_iter().map(|(_, job)| job).collect())
}

fn decode_claimed(row: &PgRow, queue: &str) -> Result<ClaimedJob, JobError> {
    Ok(ClaimedJob {
        id: JobId(row.try_get("id")?),
        lease: row.try_get("lease")?,
        queue: queue.to_string(),
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        attempt: row.try_get::<i32, _>("attempt")? as u32,
        max_attempts: row.try_get::<i32, _>("max_attempts")? as u32,
        timeout_ms: row
            .try_get::<Option<i64>, _>("timeout_ms")?
            .map(|t| t as u64),
        progress: crate::progress::Progress::detached(),
        trace_context: super::trace_context(row),
    })
}

/// Claimed rows that could not be read go to `dead` with the reason: no attempt would read
/// them better, and an operator can inspect them there.
async fn bury_undecodable(pool: &PgPool, rows: &[(Lease, String)]) -> Result<(), JobError> {
    if rows.is_empty() {
        return Ok(());
    }
    let (ids, leases) = lease_columns(rows.iter().map(|(l, _)| l));
    let errors: Vec<String> = rows
        .iter()
        .map(|(_, e)| format!("claimed row could not be decoded: {e}"))
        .collect();
    tracing::error!(jobs = ?rows, "claimed job rows could not be decoded; moved to dead");
    sqlx::query(
        "UPDATE jobs j SET state = 'dead', finished_at = now(), locked_by = NULL,
            heartbeat_at = NULL, last_error = f.error,
            errors = j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'at', now(), 'error', f.error))
         FROM UNNEST($1::int8[], $2::int8[], $3::text[]) AS f(id, lease, error)
         WHERE j.id = f.id AND j.lease = f.lease AND j.state = 'running'",
    )
    .bind(&ids)
    .bind(&leases)
    .bind(&errors)
    .execute(pool)
    .await?;
    Ok(())
}

fn lease_columns<'a>(leases: impl Iterator<Item = &'a Lease>) -> (Vec<i64>, Vec<i64>) {
    leases.map(|l| (l.job.0, l.token)).unzip()
}

async fn complete(
    db: &PgDb,
    completions: &[Completion],
    hooks: &DeadHooks,
) -> Result<Vec<(JobId, JobState)>, JobError> {
    let (mut done, mut snoozed, mut failed) = (vec![], vec![], vec![]);
    for c in completions {
        match &c.outcome {
            Outcome::Done => done.push(c.lease),
            Outcome::Snooze { delay } => snoozed.push((c.lease, delay.as_millis() as i64)),
            Outcome::Retry { error, delay } => {
                failed.push((c.lease, error.as_str(), delay.as_millis() as i64, false))
            }
            Outcome::Dead { error } => failed.push((c.lease, error.as_str(), 0, true)),
        }
    }
    let pool = &db.engine_pool;
    let mut finished = Vec::with_capacity(completions.len());
    if !done.is_empty() {
        // Only the attempt that holds the current lease may finish a job: one rescued and
        // claimed again belongs to its new attempt, in whichever process it runs.
        let (ids, leases) = lease_columns(done.iter());
        // The minute's done count is added by the same statement: exact, and one row lock
        // per queue and batch rather than per job.
        let rows = sqlx::query(
            "WITH finished AS (
                UPDATE jobs j SET state = 'done', finished_at = now(), locked_by = NULL,
                                  heartbeat_at = NULL
                FROM UNNEST($1::int8[], $2::int8[]) AS f(id, lease)
                WHERE j.id = f.id AND j.lease = f.lease AND j.state = 'running'
                RETURNING j.id, j.queue),
             counted AS (
                INSERT INTO job_stats_minute (minute, queue, done)
                SELECT $3, queue, count(*) FROM finished GROUP BY queue
                ON CONFLICT (minute, queue) DO UPDATE
                SET done = job_stats_minute.done + excluded.done)
             SELECT id FROM finished",
        )
        .bind(&ids)
        .bind(&leases)
        .bind(minute_of(Utc::now()))
        .fetch_all(pool)
        .await?;
        for row in rows {
            finished.push((JobId(row.try_get("id")?), JobState::Done));
        }
    }
    if !snoozed.is_empty() {
        let (ids, leases) = lease_columns(snoozed.iter().map(|(l, _)| l));
        let delays: Vec<i64> = snoozed.iter().map(|(_, d)| *d).collect();
        let rows = sqlx::query(
            "UPDATE jobs j SET state = 'scheduled', attempt = j.attempt - 1,
                run_at = now() + f.delay_ms * interval '1 millisecond',
                locked_by = NULL, heartbeat_at = NULL
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[]) AS f(id, lease, delay_ms)
             WHERE j.id = f.id AND j.lease = f.lease AND j.state = 'running'
             RETURNING j.id",
        )
        .bind(&ids)
        .bind(&leases)
        .bind(&delays)
        .fetch_all(pool)
        .await?;
        for row in rows {
            finished.push((JobId(row.try_get("id")?), JobState::Scheduled));
        }
    }
    if !failed.is_empty() {
        finished.extend(record_failures(db, &failed, hooks).await?);
    }
    Ok(finished)
}

/// Failed attempts: `retrying`, or `dead` when permanent or the last attempt, with the dead
/// jobs' hooks run in the same transaction (each in a savepoint, so one failing hook is
/// logged and rolled back alone).
async fn record_failures(
    db: &PgDb,
    failed: &[(Lease, &str, i64, bool)],
    hooks: &DeadHooks,
) -> Result<Vec<(JobId, JobState)>, JobError> {
    let (ids, leases) = lease_columns(failed.iter().map(|(l, ..)| l));
    let errors: Vec<&str> = failed.iter().map(|(_, e, ..)| *e).collect();
    let delays: Vec<i64> = failed.iter().map(|(_, _, d, _)| *d).collect();
    let permanent: Vec<bool> = failed.iter().map(|(.., p)| *p).collect();
    let mut tx = db.begin_engine_scoped(Scope::Platform).await?;
    let rows = sqlx::query(
        "UPDATE jobs j SET
            state = CASE WHEN f.permanent OR j.attempt >= j.max_attempts
                         THEN 'dead' ELSE 'retrying' END,
            run_at = CASE WHEN f.permanent OR j.attempt >= j.max_attempts
                          THEN j.run_at ELSE now() + f.delay_ms * interval '1 millisecond' END,
            finished_at = CASE WHEN f.permanent OR j.attempt >= j.max_attempts
                               THEN now() END,
            last_error = f.error,
            errors = j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'at', now(), 'error', f.error)),
            locked_by = NULL, heartbeat_at = NULL
         FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::bool[])
              AS f(id, lease, error, delay_ms, permanent)
         WHERE j.id = f.id AND j.lease = f.lease AND j.state = 'running'
         RETURNING j.id, j.state, j.queue, j.kind, j.payload, j.last_error",
    )
    .bind(&ids)
    .bind(&leases)
    .bind(&errors)
    .bind(&delays)
    .bind(&permanent)
    .fetch_all(&mut *tx)
    .await?;
    let mut states = Vec::with_capacity(rows.len());
    let mut tally = OutcomeTally::default();
    for row in &rows {
        let state = parse_state(row.try_get("state")?)?;
        if state == JobState::Dead {
            run_dead_hook(&mut tx, hooks, &dead_job(row)?).await?;
        }
        tally.count(row.try_get("queue")?, state);
        states.push((JobId(row.try_get("id")?), state));
    }
    console::add_minute_stats(&mut tx, &tally.rows(minute_of(Utc::now()))).await?;
    tx.commit().await?;
    Ok(states)
}

fn dead_job(row: &PgRow) -> Result<DeadJob, JobError> {
    Ok(DeadJob {
        id: JobId(row.try_get("id")?),
        queue: row.try_get("queue")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        error: row
            .try_get::<Option<String>, _>("last_error")?
            .unwrap_or_default(),
    })
}

/// Runs `job`'s on-dead hook in a savepoint of `tx`.
async fn run_dead_hook(
    tx: &mut Transaction<'static, Postgres>,
    hooks: &DeadHooks,
    job: &DeadJob,
) -> Result<(), JobError> {
    if hooks.get(&job.kind).is_none() {
        return Ok(());
    }
    let savepoint = sqlx::Acquire::begin(&mut *tx).await?;
    super::run_dead_hook(Tx::Postgres(savepoint), hooks, job).await
}

async fn heartbeat(pool: &PgPool, leases: &[Lease]) -> Result<Vec<Lease>, JobError> {
    let (ids, tokens) = lease_columns(leases.iter());
    let rows = sqlx::query(
        "UPDATE jobs j SET heartbeat_at = now()
         FROM UNNEST($1::int8[], $2::int8[]) AS f(id, lease)
         WHERE j.id = f.id AND j.lease = f.lease AND j.state = 'running'
         RETURNING j.id, j.lease",
    )
    .bind(&ids)
    .bind(&tokens)
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
    pool: &PgPool,
    lease: Lease,
    progress: &JobProgress,
) -> Result<bool, JobError> {
    let result = sqlx::query(
        "UPDATE jobs SET progress = $3, progress_note = $4
         WHERE id = $1 AND lease = $2 AND state = 'running'",
    )
    .bind(lease.job.0)
    .bind(lease.token)
    .bind(i16::from(progress.percent.get()))
    .bind(progress.note.as_deref())
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

async fn progress_by_key(
    pool: &PgPool,
    unique_key: &str,
) -> Result<Option<KeyedProgress>, JobError> {
    let row =
        sqlx::query("SELECT id, state, progress, progress_note FROM jobs WHERE unique_key = $1")
            .bind(unique_key)
            .fetch_optional(pool)
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let percent = row.try_get::<Option<i16>, _>("progress")?;
    Ok(Some(KeyedProgress {
        id: JobId(row.try_get("id")?),
        state: parse_state(row.try_get("state")?)?,
        progress: super::stored_progress(percent.map(i64::from), row.try_get("progress_note")?)?,
    }))
}

async fn release(pool: &PgPool, leases: &[Lease], started: bool) -> Result<u64, JobError> {
    let (ids, tokens) = lease_columns(leases.iter());
    // A job that never started gives its attempt back; one interrupted mid-run keeps it and
    // says why, like a rescued job.
    let result = sqlx::query(
        "UPDATE jobs j SET state = 'available', locked_by = NULL, heartbeat_at = NULL,
            attempt = CASE WHEN $3 THEN j.attempt ELSE j.attempt - 1 END,
            last_error = CASE WHEN $3 THEN 'worker shut down before the job finished' ELSE j.last_error END,
            errors = CASE WHEN $3 THEN j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'at', now(), 'error', 'worker shut down before the job finished'))
                ELSE j.errors END
         FROM UNNEST($1::int8[], $2::int8[]) AS f(id, lease)
         WHERE j.id = f.id AND j.lease = f.lease AND j.state = 'running'",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(started)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

async fn rescue(
    db: &PgDb,
    stale_after: Duration,
    hooks: &DeadHooks,
) -> Result<Vec<(JobId, JobState)>, JobError> {
    let mut tx = db.begin_scoped(Scope::Platform).await?;
    let rows = sqlx::query(
        "WITH stale AS (
            SELECT id FROM jobs
            WHERE state = 'running' AND heartbeat_at < now() - $1 * interval '1 millisecond'
            FOR UPDATE SKIP LOCKED)
         UPDATE jobs j SET
            state = CASE WHEN j.attempt >= j.max_attempts THEN 'dead' ELSE 'available' END,
            finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
            run_at = now(),
            last_error = 'worker stopped heart-beating (' || COALESCE(j.locked_by, '?') || ')',
            errors = j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt,
                'at', now(), 'error', 'worker stopped heart-beating (' || COALESCE(j.locked_by, '?') || ')')),
            locked_by = NULL, heartbeat_at = NULL
         FROM stale WHERE j.id = stale.id
         RETURNING j.id, j.state, j.queue, j.kind, j.payload, j.last_error",
    )
    .bind(stale_after.as_millis() as i64)
    .fetch_all(&mut *tx)
    .await?;
    let mut rescued = Vec::with_capacity(rows.len());
    let mut queues = Vec::new();
    let mut tally = OutcomeTally::default();
    for row in &rows {
        let state = parse_state(row.try_get("state")?)?;
        tally.count(row.try_get("queue")?, state);
        match state {
            JobState::Available => queues.push(row.try_get::<String, _>("queue")?),
            JobState::Dead => run_dead_hook(&mut tx, hooks, &dead_job(row)?).await?,
            _ => {}
        }
        rescued.push((JobId(row.try_get("id")?), state));
    }
    notify_queues(&mut tx, &db.notify_channel, queues).await?;
    console::add_minute_stats(&mut tx, &tally.rows(minute_of(Utc::now()))).await?;
    tx.commit().await?;
    Ok(rescued)
}

pub(super) async fn notify_queues(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    mut queues: Vec<String>,
) -> Result<(), JobError> {
    queues.sort_unstable();
    queues.dedup();
    for queue in queues {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(queue)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn prune(pool: &PgPool, retention: &RetentionSettings, batch: u32) -> Result<u64, JobError> {
    let mut deleted = 0;
    for (state, hours) in [
        ("done", retention.done_hours),
        ("cancelled", retention.cancelled_hours),
        ("dead", retention.dead_hours),
    ] {
        if hours == 0 {
            continue;
        }
        // Oldest ids first: done jobs have no index of their own (see the migration).
        let count: i64 = sqlx::query_scalar(
            "WITH gone AS (
                DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs
                    WHERE state = $1 AND finished_at < now() - $2 * interval '1 hour'
                    ORDER BY id LIMIT $3)
                RETURNING id),
             words AS (DELETE FROM job_search WHERE job_id IN (SELECT id FROM gone))
             SELECT count(*) FROM gone",
        )
        .bind(state)
        .bind(hours as i64)
        .bind(batch as i64)
        .fetch_one(pool)
        .await?;
        deleted += count as u64;
    }
    Ok(deleted)
}

async fn stats(pool: &PgPool) -> Result<Vec<QueueStats>, JobError> {
    let rows = sqlx::query(
        "SELECT queue, state, count(*) AS n,
                (EXTRACT(EPOCH FROM now() - min(run_at) FILTER (
                    WHERE state IN ('available', 'scheduled', 'retrying') AND run_at <= now()))
                 * 1000)::int8 AS oldest_ms
         FROM jobs GROUP BY queue, state ORDER BY queue",
    )
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

async fn get(pool: &PgPool, id: JobId) -> Result<Option<Job>, JobError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode_job).transpose()
}

/// Moves matching jobs to `available` now with attempts reset (operator retry).
async fn retry(
    db: &PgDb,
    id: Option<JobId>,
    queue: Option<&str>,
    from: &[JobState],
) -> Result<Vec<JobId>, JobError> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let mut tx = db.pool.begin().await?;
    let rows = sqlx::query(
        "UPDATE jobs SET state = 'available', attempt = 0, run_at = now(), finished_at = NULL,
                         locked_by = NULL, heartbeat_at = NULL
         WHERE ($1::int8 IS NULL OR id = $1) AND ($2::text IS NULL OR queue = $2)
           AND state = ANY($3)
         RETURNING id, queue",
    )
    .bind(id.map(|i| i.0))
    .bind(queue)
    .bind(&from)
    .fetch_all(&mut *tx)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut queues = Vec::new();
    for row in rows {
        ids.push(JobId(row.try_get("id")?));
        queues.push(row.try_get::<String, _>("queue")?);
    }
    notify_queues(&mut tx, &db.notify_channel, queues).await?;
    tx.commit().await?;
    Ok(ids)
}

async fn cancel(pool: &PgPool, id: JobId, from: &[JobState]) -> Result<bool, JobError> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let result = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), locked_by = NULL
         WHERE id = $1 AND state = ANY($2)",
    )
    .bind(id.0)
    .bind(&from)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

async fn cancel_for_erased(
    conn: &mut PgConnection,
    subject: &ErasedSubject<'_>,
) -> Result<u64, JobError> {
    let result = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), locked_by = NULL,
                last_error = 'cancelled: its data was erased'
         WHERE state IN ('scheduled', 'available', 'retrying')
           AND payload->>'company_id' = $1
           AND (payload->>'session_id' = ANY($2)
                OR ($3::text IS NOT NULL AND payload->>'profile_id' = $3))",
    )
    .bind(subject.company_id)
    .bind(subject.session_ids)
    .bind(subject.profile_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

async fn next_due(pool: &PgPool, queue: &str) -> Result<Option<DateTime<Utc>>, JobError> {
    Ok(sqlx::query_scalar(
        "SELECT min(run_at) FROM jobs
         WHERE queue = $1 AND state IN ('scheduled', 'retrying')
           AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = $1)",
    )
    .bind(queue)
    .fetch_one(pool)
    .await?)
}

fn parse_state(s: String) -> Result<JobState, JobError> {
    s.parse()
        .map_err(|e: crate::state::UnknownState| JobError::Corrupt(e.to_string()))
}

pub(super) fn decode_job(row: &PgRow) -> Result<Job, JobError> {
    let errors: serde_json::Value = row.try_get("errors")?;
    let errors: Vec<AttemptError> = serde_json::from_value(errors)
        .map_err(|e| JobError::Corrupt(format!("errors column: {e}")))?;
    Ok(Job {
        id: JobId(row.try_get("id")?),
        queue: row.try_get("queue")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        state: parse_state(row.try_get("state")?)?,
        priority: row.try_get("priority")?,
        attempt: row.try_get::<i32, _>("attempt")? as u32,
        max_attempts: row.try_get::<i32, _>("max_attempts")? as u32,
        timeout_ms: row
            .try_get::<Option<i64>, _>("timeout_ms")?
            .map(|t| t as u64),
        unique_key: row.try_get("unique_key")?,
        run_at: row.try_get("run_at")?,
        created_at: row.try_get("created_at")?,
        attempted_at: row.try_get("attempted_at")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        finished_at: row.try_get("finished_at")?,
        locked_by: row.try_get("locked_by")?,
        last_error: row.try_get("last_error")?,
        errors,
        progress: super::stored_progress(
            row.try_get::<Option<i16>, _>("progress")?.map(i64::from),
            row.try_get("progress_note")?,
        )?,
    })
}

async fn unfinished(pool: &PgPool, queue: &str) -> Result<i64, JobError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM jobs
         WHERE queue = $1 AND state IN ('scheduled', 'available', 'running', 'retrying')",
    )
    .bind(queue)
    .fetch_one(pool)
    .await?)
}

async fn purge_queue(pool: &PgPool, queue: &str) -> Result<u64, JobError> {
    let count: i64 = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM jobs WHERE queue = $1 RETURNING id),
              words AS (DELETE FROM job_search WHERE job_id IN (SELECT id FROM gone))
         SELECT count(*) FROM gone",
    )
    .bind(queue)
    .fetch_one(pool)
    .await?;
    Ok(count as u64)
}

async fn has_unfinished(pool: &PgPool, queue: &str) -> Result<bool, JobError> {
    // EXISTS stops at the first row the partial indexes find: cheap to poll.
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs
         WHERE queue = $1 AND state IN ('scheduled', 'available', 'running', 'retrying'))",
    )
    .bind(queue)
    .fetch_one(pool)
    .await?)
}
