//! [`MeteredUsageStore`] on SQLite (times as microseconds since the epoch).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    MeteredUsageStore, UsageReport, UsageWindow, report_outcome, reports_from_sql,
    stored_report_sql, usage_report, usage_windows_of, window_width,
};
use crate::DbError;
use crate::billing::store::now_us;
use crate::db::SqliteDb;

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
        let rows = sqlx::query(sqlx::AssertSqlSafe(reports_from_sql()))
            .bind(from.timestamp_micros())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(usage_report).collect::<Result<_, _>>()?)
    }

    async fn claim_usage_report(&self, report: &UsageReport) -> Result<UsageReport, DbError> {
        let (company, start) = (&report.company_id, report.window_start.timestamp_micros());
        sqlx::query(
            "INSERT INTO usage_reports (company_id, window_start, window_end, customer_id, value, identifier, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) ON CONFLICT (company_id, window_start) DO NOTHING",
        )
        .bind(company)
        .bind(start)
        .bind(report.window_end.timestamp_micros())
        .bind(&report.customer_id)
        .bind(report.value)
        .bind(&report.identifier)
        .bind(now_us())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(stored_report_sql()))
            .bind(company)
            .bind(start)
            .fetch_one(&self.pool)
            .await?;
        Ok(usage_report(&row)?)
    }

    async fn finish_usage_report(
        &self,
        company: &str,
        window_start: DateTime<Utc>,
        outcome: Result<(), &str>,
    ) -> Result<(), DbError> {
        let (status, error) = report_outcome(outcome);
        sqlx::query(
            "UPDATE usage_reports SET status = $3, last_error = $4, attempts = attempts + 1,
                 reported_at = CASE WHEN $3 = 'reported' THEN $5 ELSE reported_at END
             WHERE company_id = $1 AND window_start = $2 AND status <> 'reported'",
        )
        .bind(company)
        .bind(window_start.timestamp_micros())
        .bind(status)
        .bind(error)
        .bind(now_us())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
