//! Maintenance and operator writes in this database's own SQL: rescue, retention, counts per
//! queue, the cancellation of erased data's jobs and the benchmark's purge. (Retry and
//! cancellation by an operator are written once, in [`super::super::store_impl`].)

use super::*;
use crate::store::row::{QueueCount, stats_row};

pub(super) async fn rescue(
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

/// Deletes at most `batch` jobs in final `state` finished more than `hours` ago, oldest ids
/// first.
pub(super) async fn prune(
    db: &SqliteDb,
    state: JobState,
    hours: u64,
    batch: u32,
) -> Result<u64, JobError> {
    let cutoff = now_us() - (hours as i64) * 3_600_000_000;
    let result = sqlx::query(
        "DELETE FROM jobs WHERE id IN (
            SELECT id FROM jobs WHERE state = ? AND finished_at < ? ORDER BY id LIMIT ?)",
    )
    .bind(state.as_str())
    .bind(cutoff)
    .bind(batch as i64)
    .execute(&db.pool)
    .await?;
    Ok(result.rows_affected())
}

/// Jobs per queue and state, with the age of the oldest due one (see [`stats_row`]).
pub(super) async fn queue_counts(db: &SqliteDb) -> Result<Vec<QueueCount>, JobError> {
    let pool = &db.pool;
    let rows = sqlx::query(
        "SELECT queue, state, count(*) AS n,
                (?1 - min(CASE WHEN state IN ('available', 'scheduled', 'retrying') AND run_at <= ?1
                               THEN run_at END)) / 1000 AS oldest_ms
         FROM jobs GROUP BY queue, state ORDER BY queue",
    )
    .bind(now_us())
    .fetch_all(pool)
    .await?;
    rows.iter().map(stats_row).collect()
}

pub(super) async fn cancel_for_erased(
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

pub(super) async fn purge_queue(db: &SqliteDb, queue: &str) -> Result<u64, JobError> {
    let pool = &db.pool;
    let result = sqlx::query("DELETE FROM jobs WHERE queue = ?")
        .bind(queue)
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}
