//! Maintenance and operator writes in this database's own SQL: rescue, retention, counts per
//! queue, the cancellation of erased data's jobs and the benchmark's purge. (Retry and
//! cancellation by an operator are written once, in [`super::super::store_impl`].)

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

/// Deletes at most `batch` jobs in final `state` finished more than `hours` ago, oldest ids
/// first (done jobs have no index of their own: see the migration), with their words.
pub(super) async fn prune(
    db: &PgDb,
    state: JobState,
    hours: u64,
    batch: u32,
) -> Result<u64, JobError> {
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
    .bind(state.as_str())
    .bind(hours as i64)
    .bind(batch as i64)
    .fetch_one(&db.pool)
    .await?;
    Ok(count as u64)
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
