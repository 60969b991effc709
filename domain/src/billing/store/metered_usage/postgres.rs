//! [`MeteredUsageStore`] on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    MeteredUsageStore, UsageReport, UsageWindow, report_outcome, reports_from_sql,
    stored_report_sql, usage_report, usage_windows_of, window_width,
};
use crate::DbError;
use crate::db::{PgDb, Scope};

#[async_trait]
impl MeteredUsageStore for PgDb {
    async fn usage_windows(
        &self,
        window_secs: u64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageWindow>, DbError> {
        let width = window_width(window_secs);
        // Platform: the usage report sums every company's usage.
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        let rows = sqlx::query_as(
            "SELECT company_id, floor(extract(epoch FROM recorded_at)::float8 / $1::float8)::int8 AS w,
                    sum(seconds)::float8
             FROM usage_records WHERE recorded_at >= $2 AND recorded_at < $3
             GROUP BY company_id, w ORDER BY company_id, w",
        )
        .bind(width as f64)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await?;
        Ok(usage_windows_of(rows, width))
    }

    async fn usage_reports(&self, from: DateTime<Utc>) -> Result<Vec<UsageReport>, DbError> {
        // Platform: the usage report compares every company's windows with these.
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(reports_from_sql()))
            .bind(from)
            .fetch_all(&mut *tx)
            .await?;
        Ok(rows.iter().map(usage_report).collect::<Result<_, _>>()?)
    }

    async fn claim_usage_report(&self, report: &UsageReport) -> Result<UsageReport, DbError> {
        let (company, start) = (&report.company_id, report.window_start);
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
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
        let row = sqlx::query(sqlx::AssertSqlSafe(stored_report_sql()))
            .bind(company)
            .bind(start)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(usage_report(&row)?)
    }

    async fn finish_usage_report(
        &self,
        company: &str,
        window_start: DateTime<Utc>,
        outcome: Result<(), &str>,
    ) -> Result<(), DbError> {
        let (status, error) = report_outcome(outcome);
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
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
        Ok(())
    }
}
