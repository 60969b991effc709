//! Maintenance and operator reads and writes: rescue, retention, counts, lookups, retry and
//! cancellation, and the decoding of a whole job row.

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

pub(super) async fn prune(
    db: &SqliteDb,
    retention: &RetentionSettings,
    batch: u32,
) -> Result<u64, JobError> {
    let pool = &db.pool;
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

pub(super) async fn retry(
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

pub(super) async fn cancel(db: &SqliteDb, id: JobId, from: &[JobState]) -> Result<bool, JobError> {
    let pool = &db.pool;
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
