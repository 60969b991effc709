//! The operators' console on SQLite (see [`super::postgres_console`]): the same filter SQL
//! with SQLite's expressions, search by a case-insensitive `LIKE` scan, times in microseconds.

use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};
use voxline_domain::db::SqliteDb;

use super::JobFilter;
use super::console::{
    self, ADD_MINUTE_STATS, Arg, BulkAction, Dialect, MINUTE_STATS_SINCE, MinuteStats, QueuePause,
};
use super::sqlite::{JOB_COLUMNS, decode_job, now_us, to_time};
use crate::error::JobError;
use crate::model::Job;
use crate::state::JobState;

const DIALECT: Dialect = Dialect {
    placeholder: |n| format!("?{n}"),
    company: "json_extract(payload, '$.company_id')",
    search: |p| format!("(kind || ' ' || errors || ' ' || payload) LIKE {p} ESCAPE '\\'"),
    micros: |p| p.to_string(),
    search_arg: |text| {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    },
};

fn bind_all<'q>(
    mut query: Query<'q, Sqlite, SqliteArguments>,
    args: Vec<Arg>,
) -> Query<'q, Sqlite, SqliteArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(n) => query.bind(n),
        };
    }
    query
}

pub(super) async fn list(pool: &SqlitePool, filter: &JobFilter) -> Result<Vec<Job>, JobError> {
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
    pool: &SqlitePool,
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
    db: &SqliteDb,
    filter: &JobFilter,
    action: BulkAction,
) -> Result<u64, JobError> {
    let states = action.from_states();
    let c = console::conditions(&DIALECT, filter, Some(&states), false);
    // The time is the argument after the filter's own.
    let now = format!("?{}", c.args.len() + 1);
    let set = match action {
        BulkAction::Retry => format!(
            "state = 'available', attempt = 0, run_at = {now}, finished_at = NULL,
             locked_by = NULL, heartbeat_at = NULL"
        ),
        BulkAction::Discard => {
            format!("state = 'cancelled', finished_at = {now}, locked_by = NULL")
        }
    };
    let sql = format!("UPDATE jobs SET {set} WHERE {} RETURNING queue", c.clause());
    let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.args)
        .bind(now_us())
        .fetch_all(&db.pool)
        .await?;
    if action == BulkAction::Retry {
        let mut woken: Vec<String> = Vec::new();
        for row in &rows {
            let queue: String = row.try_get("queue")?;
            if !woken.contains(&queue) {
                woken.push(queue);
            }
        }
        for queue in woken {
            let _ = db.commits.send(queue.into());
        }
    }
    Ok(rows.len() as u64)
}

pub(super) async fn pause_queue(
    pool: &SqlitePool,
    queue: &str,
    by: &str,
) -> Result<bool, JobError> {
    let result = sqlx::query(
        "INSERT INTO queue_pauses (queue, paused_at, paused_by) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )
    .bind(queue)
    .bind(now_us())
    .bind(by)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub(super) async fn resume_queue(db: &SqliteDb, queue: &str) -> Result<bool, JobError> {
    let result = sqlx::query("DELETE FROM queue_pauses WHERE queue = ?1")
        .bind(queue)
        .execute(&db.pool)
        .await?;
    let _ = db.commits.send(queue.into());
    Ok(result.rows_affected() == 1)
}

pub(super) async fn paused_queues(pool: &SqlitePool) -> Result<Vec<QueuePause>, JobError> {
    let rows = sqlx::query("SELECT queue, paused_at, paused_by FROM queue_pauses ORDER BY queue")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(QueuePause {
                queue: row.try_get("queue")?,
                paused_at: to_time(row.try_get("paused_at")?)?,
                paused_by: row.try_get("paused_by")?,
            })
        })
        .collect()
}

/// Adds `rows` to the activity table in `conn`'s transaction (or on their own).
pub(super) async fn add_minute_stats(
    conn: &mut SqliteConnection,
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
    pool: &SqlitePool,
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
pub(super) async fn prune_minute_stats(
    pool: &SqlitePool,
    now_minute: i64,
) -> Result<u64, JobError> {
    let result = sqlx::query("DELETE FROM job_stats_minute WHERE minute < ?1")
        .bind(now_minute - console::STATS_RETENTION_SECS)
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}

/// Per queue: attempts done and failed in the trailing `window`, from the activity table (a
/// few rows, however many jobs there are).
pub(super) async fn activity(
    pool: &SqlitePool,
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
