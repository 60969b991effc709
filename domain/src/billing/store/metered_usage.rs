//! Metered usage: every company's analysed seconds summed in windows, and `usage_reports`,
//! what was (or will be) sent to Stripe's billing meter for each window and whether it was.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::{Columns, now_us};
use crate::db::Scope;
use crate::{Db, DbError};

/// A company's analysed seconds in one usage window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageWindow {
    pub company_id: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub seconds: f64,
}

/// Every company's usage in `[from, to)`, in windows of `window_secs` aligned to the epoch.
pub async fn usage_windows(
    db: &Db,
    window_secs: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<UsageWindow>, DbError> {
    let width = i64::try_from(window_secs.max(1)).unwrap_or(3600);
    let rows: Vec<(String, i64, f64)> = match db {
        Db::Postgres(pg) => {
            // Platform: the usage report sums every company's usage.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            sqlx::query_as(
                "SELECT company_id, floor(extract(epoch FROM recorded_at)::float8 / $1::float8)::int8 AS w,
                        sum(seconds)::float8
                 FROM usage_records WHERE recorded_at >= $2 AND recorded_at < $3
                 GROUP BY company_id, w ORDER BY company_id, w",
            )
            .bind(width as f64)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_as(
                "SELECT company_id, recorded_at / ?1 AS w, CAST(sum(seconds) AS REAL)
                 FROM usage_records WHERE recorded_at >= ?2 AND recorded_at < ?3
                 GROUP BY company_id, w ORDER BY company_id, w",
            )
            .bind(width * 1_000_000)
            .bind(from.timestamp_micros())
            .bind(to.timestamp_micros())
            .fetch_all(&lite.pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(company_id, w, seconds)| {
            let start = DateTime::from_timestamp(w * width, 0).unwrap_or_default();
            UsageWindow {
                company_id,
                window_start: start,
                window_end: start + Duration::seconds(width),
                seconds,
            }
        })
        .collect())
}

pub const USAGE_PENDING: &str = "pending";
pub const USAGE_REPORTED: &str = "reported";
pub const USAGE_FAILED: &str = "failed";

/// One window's report to Stripe: what was (or will be) sent, and whether it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    pub company_id: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub customer_id: String,
    /// Whole seconds (Stripe's meter values are integers).
    pub value: i64,
    pub identifier: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

const REPORT_COLUMNS: &str = "company_id, window_start, window_end, customer_id, value, identifier, status, attempts, last_error";

/// One row of [`REPORT_COLUMNS`], from either database.
fn usage_report(r: &impl Columns) -> Result<UsageReport, sqlx::Error> {
    Ok(UsageReport {
        company_id: r.get("company_id")?,
        window_start: r.time("window_start")?,
        window_end: r.time("window_end")?,
        customer_id: r.get("customer_id")?,
        value: r.get("value")?,
        identifier: r.get("identifier")?,
        status: r.get("status")?,
        attempts: r.get("attempts")?,
        last_error: r.get("last_error")?,
    })
}

/// Reports of windows starting at or after `from`, oldest first.
pub async fn usage_reports(db: &Db, from: DateTime<Utc>) -> Result<Vec<UsageReport>, DbError> {
    let sql = format!(
        "SELECT {REPORT_COLUMNS} FROM usage_reports WHERE window_start >= $1 ORDER BY window_start, company_id"
    );
    Ok(match db {
        Db::Postgres(pg) => {
            // Platform: the usage report compares every company's windows with these.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(from)
                .fetch_all(&mut *tx)
                .await?;
            rows.iter().map(usage_report).collect::<Result<_, _>>()?
        }
        Db::Sqlite(lite) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(from.timestamp_micros())
                .fetch_all(&lite.pool)
                .await?;
            rows.iter().map(usage_report).collect::<Result<_, _>>()?
        }
    })
}

/// Creates the window's report as `pending` unless one exists, and returns the stored one: a
/// retried report sends exactly what the first attempt sent (value and identifier).
pub async fn claim_usage_report(db: &Db, report: &UsageReport) -> Result<UsageReport, DbError> {
    let (company, start) = (&report.company_id, report.window_start);
    let stored = format!(
        "SELECT {REPORT_COLUMNS} FROM usage_reports WHERE company_id = $1 AND window_start = $2"
    );
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query(
                "INSERT INTO usage_reports (company_id, window_start, window_end, customer_id, value, identifier, status)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT (company_id, window_start) DO NOTHING",
            )
            .bind(company)
            .bind(start)
            .bind(report.window_end)
            .bind(&report.customer_id)
            .bind(report.value)
            .bind(&report.identifier)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(stored))
                .bind(company)
                .bind(start)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            usage_report(&row)?
        }
        Db::Sqlite(lite) => {
            sqlx::query(
                "INSERT INTO usage_reports (company_id, window_start, window_end, customer_id, value, identifier, status, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (company_id, window_start) DO NOTHING",
            )
            .bind(company)
            .bind(start.timestamp_micros())
            .bind(report.window_end.timestamp_micros())
            .bind(&report.customer_id)
            .bind(report.value)
            .bind(&report.identifier)
            .bind(now_us())
            .execute(&lite.pool)
            .await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(stored))
                .bind(company)
                .bind(start.timestamp_micros())
                .fetch_one(&lite.pool)
                .await?;
            usage_report(&row)?
        }
    })
}

/// Records one attempt at sending a window: `Ok` marks it reported (never sent again), an
/// error keeps it for the next run with the reason.
pub async fn finish_usage_report(
    db: &Db,
    company: &str,
    window_start: DateTime<Utc>,
    outcome: Result<(), &str>,
) -> Result<(), DbError> {
    let (status, error) = match outcome {
        Ok(()) => (USAGE_REPORTED, None),
        Err(e) => (USAGE_FAILED, Some(e)),
    };
    match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query(
                "UPDATE usage_reports SET status = $3, last_error = $4, attempts = attempts + 1,
                     reported_at = CASE WHEN $3 = 'reported' THEN now() ELSE reported_at END
                 WHERE company_id = $1 AND window_start = $2 AND status <> 'reported'",
            )
            .bind(company)
            .bind(window_start)
            .bind(status)
            .bind(error)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Db::Sqlite(lite) => {
            sqlx::query(
                "UPDATE usage_reports SET status = ?3, last_error = ?4, attempts = attempts + 1,
                     reported_at = CASE WHEN ?3 = 'reported' THEN ?5 ELSE reported_at END
                 WHERE company_id = ?1 AND window_start = ?2 AND status <> 'reported'",
            )
            .bind(company)
            .bind(window_start.timestamp_micros())
            .bind(status)
            .bind(error)
            .bind(now_us())
            .execute(&lite.pool)
            .await?;
        }
    }
    Ok(())
}
