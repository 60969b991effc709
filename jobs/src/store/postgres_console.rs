//! The operators' console on Postgres: filtered lists and search (the filter's SQL is built in
//! [`super::console`]), bulk actions, queue pauses and the per-minute activity table.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Row};
use voxline_domain::db::PgDb;

use super::JobFilter;
use super::console::{
    self, ADD_MINUTE_STATS, Arg, BulkAction, Dialect, MINUTE_STATS_SINCE, MinuteStats, QueuePause,
};
use super::postgres::{JOB_COLUMNS, decode_job, notify_queues};
use crate::error::JobError;
use crate::model::Job;
use crate::state::JobState;

/// The words a job is searched by: the same expression as the `jobs_search` index, which the
/// planner uses only when the text matches exactly.
const SEARCH_DOCUMENT: &str =
    "to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text)";

const DIALECT: Dialect = Dialect {
    placeholder: |n| format!("${n}"),
    company: "(payload->>'company_id')",
    search: |p| format!("{SEARCH_DOCUMENT} @@ plainto_tsquery('simple', {p})"),
    micros: |p| format!("to_timestamp({p}::float8 / 1000000)"),
    search_arg: |text| text.to_string(),
};

fn bind_all<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    args: Vec<Arg>,
) -> Query<'q, Postgres, PgArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(n) => query.bind(n),
        };
    }
    query
}

pub(super) async fn list(pool: &PgPool, filter: &JobFilter) -> Result<Vec<Job>, JobError> {
    let c = console::conditions(&DIALECT, filter, None, true);
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE {} ORDER BY id DESC LIMIT {}",
        c.clause(),
        filter.limit
    );
    let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.args)
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode_job).collect()
}

pub(super) async fn count_matching(
    pool: &PgPool,
    filter: &JobFilter,
    states: &[JobState],
) -> Result<i64, JobError> {
    let c = console::conditions(&DIALECT, filter, Some(states), false);
    let sql = format!("SELECT count(*) FROM jobs WHERE {}", c.clause());
    let row = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.args)
        .fetch_one(pool)
        .await?;
    Ok(row.try_get(0)?)
}

pub(super) async fn act_on_matching(
    db: &PgDb,
    filter: &JobFilter,
    action: BulkAction,
) -> Result<u64, JobError> {
    let states = action.from_states();
    let c = console::conditions(&DIALECT, filter, Some(&states), false);
    let set = match action {
        BulkAction::Retry => {
            "state = 'available', attempt = 0, run_at = now(), finished_at = NULL,
             locked_by = NULL, heartbeat_at = NULL"
        }
        BulkAction::Discard => "state = 'cancelled', finished_at = now(), locked_by = NULL",
    };
    let sql = format!(
        "UPDATE jobs SET {set} WHERE id IN (SELECT id FROM jobs WHERE {} FOR UPDATE SKIP LOCKED)
         RETURNING queue",
        c.clause()
    );
    let mut tx = db.pool.begin().await?;
    let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.args)
        .fetch_all(&mut *tx)
        .await?;
    let changed = rows.len() as u64;
    if action == BulkAction::Retry {
        let queues = rows
            .iter()
            .map(|r| r.try_get::<String, _>("queue"))
            .collect::<Result<Vec<_>, _>>()?;
        notify_queues(&mut tx, &db.notify_channel, queues).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

pub(super) async fn pause_queue(pool: &PgPool, queue: &str, by: &str) -> Result<bool, JobError> {
    let result = sqlx::query(
        "INSERT INTO queue_pauses (queue, paused_by) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(queue)
    .bind(by)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub(super) async fn resume_queue(db: &PgDb, queue: &str) -> Result<bool, JobError> {
    let mut tx = db.pool.begin().await?;
    let result = sqlx::query("DELETE FROM queue_pauses WHERE queue = $1")
        .bind(queue)
        .execute(&mut *tx)
        .await?;
    // Idle fetchers of the queue wait for a wake-up: give them one at commit.
    notify_queues(&mut tx, &db.notify_channel, vec![queue.to_string()]).await?;
    tx.commit().await?;
    Ok(result.rows_affected() == 1)
}

pub(super) async fn paused_queues(pool: &PgPool) -> Result<Vec<QueuePause>, JobError> {
    let rows = sqlx::query("SELECT queue, paused_at, paused_by FROM queue_pauses ORDER BY queue")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(QueuePause {
                queue: row.try_get("queue")?,
                paused_at: row.try_get::<DateTime<Utc>, _>("paused_at")?,
                paused_by: row.try_get("paused_by")?,
            })
        })
        .collect()
}

/// Adds `rows` to the activity table in `conn`'s transaction (or on their own).
pub(super) async fn add_minute_stats(
    conn: &mut sqlx::PgConnection,
    rows: &[MinuteStats],
) -> Result<(), JobError> {
    for row in rows {
        sqlx::query(ADD_MINUTE_STATS)
            .bind(row.minute)
            .bind(&row.queue)
            .bind(row.counts.enqueued)
            .bind(row.counts.done)
            .bind(row.counts.failed)
            .bind(row.counts.dead)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub(super) async fn minute_stats(
    pool: &PgPool,
    since_minute: i64,
) -> Result<Vec<MinuteStats>, JobError> {
    let rows = sqlx::query(MINUTE_STATS_SINCE)
        .bind(since_minute)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(console::minute_row)
        .collect::<Result<_, _>>()?)
}

/// Deletes activity rows past their retention.
pub(super) async fn prune_minute_stats(pool: &PgPool, now_minute: i64) -> Result<u64, JobError> {
    let result = sqlx::query("DELETE FROM job_stats_minute WHERE minute < $1")
        .bind(now_minute - console::STATS_RETENTION_SECS)
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}

/// Per queue: attempts done and failed in the trailing `window`, from the activity table (a
/// few rows, however many jobs there are).
pub(super) async fn activity(
    pool: &PgPool,
    window: std::time::Duration,
) -> Result<Vec<(String, i64, i64)>, JobError> {
    let rows = sqlx::query(console::ACTIVITY_SINCE)
        .bind(console::window_start(window))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}
