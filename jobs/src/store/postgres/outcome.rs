//! Attempt outcomes and the running attempt's writes: batched completions, failures with
//! their dead hooks, heartbeats, progress and release at shutdown.

use super::*;

pub(super) async fn complete(
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
pub(super) async fn record_failures(
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

/// Runs `job`'s on-dead hook in a savepoint of `tx`.
pub(super) async fn run_dead_hook(
    tx: &mut Transaction<'static, Postgres>,
    hooks: &DeadHooks,
    job: &DeadJob,
) -> Result<(), JobError> {
    if hooks.get(&job.kind).is_none() {
        return Ok(());
    }
    let savepoint = sqlx::Acquire::begin(&mut *tx).await?;
    crate::store::run_dead_hook(Tx::Postgres(savepoint), hooks, job).await
}

pub(super) async fn heartbeat(db: &PgDb, leases: &[Lease]) -> Result<Vec<Lease>, JobError> {
    let pool = &db.engine_pool;
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
    rows.iter().map(crate::store::row::lease).collect()
}

pub(super) async fn release(db: &PgDb, leases: &[Lease], started: bool) -> Result<u64, JobError> {
    let pool = &db.engine_pool;
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
