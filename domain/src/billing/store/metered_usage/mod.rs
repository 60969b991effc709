//! Metered usage: every company's analysed seconds summed in windows, and `usage_reports`,
//! what was (or will be) sent to Stripe's billing meter for each window and whether it was.
//! [`MeteredUsageStore`] is implemented for Postgres (`postgres.rs`) and SQLite (`sqlite.rs`).

/// [`MeteredUsageStore`] for one database handle (`$handle`, of `$dialect`): the same
/// statements on both databases, each run by [`Own`](crate::portable::Own) in the scope it
/// names, but for the time of the write and the windows' sums, which `windows` reads
/// (`async fn(&mut connection, width, from, to)`: the rows of [`usage_windows_of`]).
macro_rules! metered_usage_store {
    ($handle:ty, $dialect:ty, windows = $windows:path) => {
        #[async_trait::async_trait]
        impl super::MeteredUsageStore for $handle {
            async fn usage_windows(
                &self,
                window_secs: u64,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<super::UsageWindow>, $crate::DbError> {
                let width = super::window_width(window_secs);
                // Platform: the usage report sums every company's usage.
                let mut conn = self.own($crate::db::Scope::Platform).await?;
                let rows = $windows(&mut *conn, width, from, to).await?;
                Ok(super::usage_windows_of(rows, width))
            }

            async fn usage_reports(
                &self,
                from: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<super::UsageReport>, $crate::DbError> {
                // Platform: the usage report compares every company's windows with these.
                let mut conn = self.own($crate::db::Scope::Platform).await?;
                let sql = sqlx::AssertSqlSafe(super::reports_from_sql());
                let rows = $crate::portable::rows(&mut *conn, sql, &[from.into()]).await?;
                Ok(rows
                    .iter()
                    .map(super::usage_report)
                    .collect::<Result<_, _>>()?)
            }

            async fn claim_usage_report(
                &self,
                report: &super::UsageReport,
            ) -> Result<super::UsageReport, $crate::DbError> {
                use $crate::portable::Dialect;
                let company = &report.company_id;
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let sql = sqlx::AssertSqlSafe(super::claim_sql(&<$dialect>::now(7)));
                let params = super::claim_params(report);
                $crate::portable::execute(&mut *conn, sql, &params).await?;
                let sql = sqlx::AssertSqlSafe(super::stored_report_sql());
                let params = [company.into(), report.window_start.into()];
                let row = $crate::portable::row(&mut *conn, sql, &params).await?;
                let row = row.ok_or(sqlx::Error::RowNotFound)?;
                conn.commit().await?;
                Ok(super::usage_report(&row)?)
            }

            async fn finish_usage_report(
                &self,
                company: &str,
                window_start: chrono::DateTime<chrono::Utc>,
                outcome: Result<(), &str>,
            ) -> Result<(), $crate::DbError> {
                use $crate::portable::Dialect;
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let sql = sqlx::AssertSqlSafe(super::finish_sql(&<$dialect>::now(5)));
                let params = super::finish_params(company, window_start, outcome);
                $crate::portable::execute(&mut *conn, sql, &params).await?;
                Ok(conn.commit().await?)
            }
        }
    };
}

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::Columns;
use crate::portable::Param;
use crate::{Db, DbError};

/// A company's analysed seconds in one usage window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageWindow {
    pub company_id: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub seconds: f64,
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

/// Usage windows and their reports to Stripe.
#[async_trait]
pub trait MeteredUsageStore: Send + Sync {
    /// See [`usage_windows`].
    async fn usage_windows(
        &self,
        window_secs: u64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageWindow>, DbError>;

    /// See [`usage_reports`].
    async fn usage_reports(&self, from: DateTime<Utc>) -> Result<Vec<UsageReport>, DbError>;

    /// See [`claim_usage_report`].
    async fn claim_usage_report(&self, report: &UsageReport) -> Result<UsageReport, DbError>;

    /// See [`finish_usage_report`].
    async fn finish_usage_report(
        &self,
        company: &str,
        window_start: DateTime<Utc>,
        outcome: Result<(), &str>,
    ) -> Result<(), DbError>;
}

/// Every company's usage in `[from, to)`, in windows of `window_secs` aligned to the epoch.
pub async fn usage_windows(
    db: &Db,
    window_secs: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<UsageWindow>, DbError> {
    db.billing().usage_windows(window_secs, from, to).await
}

/// Reports of windows starting at or after `from`, oldest first.
pub async fn usage_reports(db: &Db, from: DateTime<Utc>) -> Result<Vec<UsageReport>, DbError> {
    db.billing().usage_reports(from).await
}

/// Creates the window's report as `pending` unless one exists, and returns the stored one: a
/// retried report sends exactly what the first attempt sent (value and identifier).
pub async fn claim_usage_report(db: &Db, report: &UsageReport) -> Result<UsageReport, DbError> {
    db.billing().claim_usage_report(report).await
}

/// Records one attempt at sending a window: `Ok` marks it reported (never sent again), an
/// error keeps it for the next run with the reason.
pub async fn finish_usage_report(
    db: &Db,
    company: &str,
    window_start: DateTime<Utc>,
    outcome: Result<(), &str>,
) -> Result<(), DbError> {
    db.billing()
        .finish_usage_report(company, window_start, outcome)
        .await
}

/// A window's width in seconds (at least one).
fn window_width(window_secs: u64) -> i64 {
    i64::try_from(window_secs.max(1)).unwrap_or(3600)
}

/// Rows of `(company, window number, seconds)` as windows of `width` seconds.
fn usage_windows_of(rows: Vec<(String, i64, f64)>, width: i64) -> Vec<UsageWindow> {
    rows.into_iter()
        .map(|(company_id, w, seconds)| {
            let start = DateTime::from_timestamp(w * width, 0).unwrap_or_default();
            UsageWindow {
                company_id,
                window_start: start,
                window_end: start + Duration::seconds(width),
                seconds,
            }
        })
        .collect()
}

// `$n` parameters: SQLite reads them by position too, so these run on both databases (times
// bound as each stores them).
fn reports_from_sql() -> String {
    format!(
        "SELECT {REPORT_COLUMNS} FROM usage_reports WHERE window_start >= $1 ORDER BY window_start, company_id"
    )
}

fn stored_report_sql() -> String {
    format!(
        "SELECT {REPORT_COLUMNS} FROM usage_reports WHERE company_id = $1 AND window_start = $2"
    )
}

/// The window's report (see [`claim_params`]) as `pending`, made at `now` (`$7`), unless one
/// exists.
fn claim_sql(now: &str) -> String {
    format!(
        "INSERT INTO usage_reports (company_id, window_start, window_end, customer_id, value, identifier, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', {now}) ON CONFLICT (company_id, window_start) DO NOTHING"
    )
}

/// The parameters of [`claim_sql`].
fn claim_params(report: &UsageReport) -> [Param<'_>; 7] {
    [
        (&report.company_id).into(),
        report.window_start.into(),
        report.window_end.into(),
        (&report.customer_id).into(),
        report.value.into(),
        (&report.identifier).into(),
        Param::Now,
    ]
}

/// One attempt at sending window `$2` of company `$1` (see [`finish_params`]), at `now` (`$5`).
fn finish_sql(now: &str) -> String {
    format!(
        "UPDATE usage_reports SET status = $3, last_error = $4, attempts = attempts + 1,
             reported_at = CASE WHEN $3 = 'reported' THEN {now} ELSE reported_at END
         WHERE company_id = $1 AND window_start = $2 AND status <> 'reported'"
    )
}

/// The parameters of [`finish_sql`].
fn finish_params<'a>(
    company: &'a str,
    window_start: DateTime<Utc>,
    outcome: Result<(), &'a str>,
) -> [Param<'a>; 5] {
    let (status, error) = report_outcome(outcome);
    [
        company.into(),
        window_start.into(),
        status.into(),
        error.into(),
        Param::Now,
    ]
}

/// A sending attempt's outcome as its row stores it: status and error.
fn report_outcome(outcome: Result<(), &str>) -> (&'static str, Option<&str>) {
    match outcome {
        Ok(()) => (USAGE_REPORTED, None),
        Err(e) => (USAGE_FAILED, Some(e)),
    }
}
