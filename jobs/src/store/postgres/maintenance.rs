//! Maintenance and operator reads and writes: rescue, retention, counts, lookups, retry and
//! cancellation, and the decoding of a whole job row.

use super::*;
use crate::store::row::{QueueCount, stats_row};

pub(super) async fn rescue(
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

pub(super) async fn prune(
    db: &PgDb,
    retention: &RetentionSettings,
    batch: u32,
) -> Result<u64, JobError> {
    let pool = &db.pool;
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

/// Jobs per queue and state, with the age of the oldest due one (see [`stats_row`]).
pub(super) async fn queue_counts(db: &PgDb) -> Result<Vec<QueueCount>, JobError> {
    let pool = &db.pool;
    let rows = sqlx::query(
        "SELECT queue, state, count(*) AS n,
                (EXTRACT(EPOCH FROM now() - min(run_at) FILTER (
                    WHERE state IN ('available', 'scheduled', 'retrying') AND run_at <= now()))
                 * 1000)::int8 AS oldest_ms
         FROM jobs GROUP BY queue, state ORDER BY queue",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(stats_row).collect()
}

/// Moves matching jobs to `available` now with attempts reset (operator retry).
pub(super) async fn retry(
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

pub(super) async fn cancel(db: &PgDb, id: JobId, from: &[JobState]) -> Result<bool, JobError> {
    let pool = &db.pool;
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

pub(super) async fn cancel_for_erased(
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

pub(super) async fn purge_queue(db: &PgDb, queue: &str) -> Result<u64, JobError> {
    let pool = &db.pool;
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
