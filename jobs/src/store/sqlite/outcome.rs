//! Attempt outcomes and the running attempt's writes: completions, failures with their dead
//! hooks, heartbeats, progress and release at shutdown.

use super::*;

pub(super) async fn complete(
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

/// Runs `job`'s on-dead hook in a savepoint of `tx`.
pub(super) async fn run_dead_hook(
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
    crate::store::run_dead_hook(savepoint, hooks, job).await
}

pub(super) async fn heartbeat(db: &SqliteDb, leases: &[Lease]) -> Result<Vec<Lease>, JobError> {
    let pool = &db.pool;
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
    rows.iter().map(crate::store::row::lease).collect()
}

pub(super) async fn release(
    db: &SqliteDb,
    leases: &[Lease],
    started: bool,
) -> Result<u64, JobError> {
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
