//! [`MeteredUsageStore`] on SQLite (times as microseconds since the epoch).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{
    MeteredUsageStore, UsageReport, UsageWindow, claim_params, claim_sql, finish_params,
    finish_sql, reports_from_sql, stored_report_sql, usage_report, usage_windows_of, window_width,
};
use crate::db::SqliteDb;
use crate::{DbError, portable};

#[async_trait]
impl MeteredUsageStore for SqliteDb {
    async fn usage_windows(
        &self,
        window_secs: u64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageWindow>, DbError> {
        let width = window_width(window_secs);
        let rows = sqlx::query_as(
            "SELECT company_id, recorded_at / $1 AS w, CAST(sum(seconds) AS REAL)
             FROM usage_records WHERE recorded_at >= $2 AND recorded_at < $3
             GROUP BY company_id, w ORDER BY company_id, w",
        )
        .bind(width * 1_000_000)
        .bind(from.timestamp_micros())
        .bind(to.timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        Ok(usage_windows_of(rows, width))
    }

    async fn usage_reports(&self, from: DateTime<Utc>) -> Result<Vec<UsageReport>, DbError> {
        let sql = AssertSqlSafe(reports_from_sql());
        let rows = portable::rows(&self.pool, sql, &[from.into()]).await?;
        Ok(rows.iter().map(usage_report).collect::<Result<_, _>>()?)
    }

    async fn claim_usage_report(&self, report: &UsageReport) -> Result<UsageReport, DbError> {
        let company = &report.company_id;
        let sql = AssertSqlSafe(claim_sql("$7"));
        portable::execute(&self.pool, sql, &claim_params(report)).await?;
        let sql = AssertSqlSafe(stored_report_sql());
        let params = [company.into(), report.window_start.into()];
        let row = portable::row(&self.pool, sql, &params).await?;
        let row = row.ok_or(sqlx::Error::RowNotFound)?;
        Ok(usage_report(&row)?)
    }

    async fn finish_usage_report(
        &self,
        company: &str,
        window_start: DateTime<Utc>,
        outcome: Result<(), &str>,
    ) -> Result<(), DbError> {
        let sql = AssertSqlSafe(finish_sql("$5"));
        let params = finish_params(company, window_start, outcome);
        portable::execute(&self.pool, sql, &params).await?;
        Ok(())
    }
}
