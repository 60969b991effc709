//! [`MeteredUsageStore`] on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{
    MeteredUsageStore, UsageReport, UsageWindow, claim_params, claim_sql, finish_params,
    finish_sql, reports_from_sql, stored_report_sql, usage_report, usage_windows_of, window_width,
};
use crate::db::{PgDb, Scope};
use crate::{DbError, portable};

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
        let sql = AssertSqlSafe(reports_from_sql());
        let rows = portable::rows(&mut *tx, sql, &[from.into()]).await?;
        Ok(rows.iter().map(usage_report).collect::<Result<_, _>>()?)
    }

    async fn claim_usage_report(&self, report: &UsageReport) -> Result<UsageReport, DbError> {
        let company = &report.company_id;
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        let sql = AssertSqlSafe(claim_sql("now()"));
        portable::execute(&mut *tx, sql, &claim_params(report)).await?;
        let sql = AssertSqlSafe(stored_report_sql());
        let params = [company.into(), report.window_start.into()];
        let row = portable::row(&mut *tx, sql, &params).await?;
        let row = row.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(usage_report(&row)?)
    }

    async fn finish_usage_report(
        &self,
        company: &str,
        window_start: DateTime<Utc>,
        outcome: Result<(), &str>,
    ) -> Result<(), DbError> {
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        let sql = AssertSqlSafe(finish_sql("now()"));
        let params = finish_params(company, window_start, outcome);
        portable::execute(&mut *tx, sql, &params).await?;
        tx.commit().await?;
        Ok(())
    }
}
