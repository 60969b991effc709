//! Usage rows on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Transaction};

use super::{
    IN_WINDOW, UsageStore, UsageTotal, UsageWrites, record_params, record_sql, usage_total,
};
use crate::db::{PgDb, Scope};
use crate::sessions::SessionRow;
use crate::{DbError, portable};

async fn in_window(
    conn: &mut PgConnection,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<UsageTotal, DbError> {
    let params = [company.into(), from.into(), to.into()];
    let row = portable::optional(conn, IN_WINDOW, &params).await?;
    Ok(usage_total(row.ok_or(sqlx::Error::RowNotFound)?))
}

#[async_trait]
impl UsageStore for PgDb {
    async fn total(
        &self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageTotal, DbError> {
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        in_window(&mut tx, company, from, to).await
    }
}

#[async_trait]
impl UsageWrites for Transaction<'_, Postgres> {
    async fn record(&mut self, session: &SessionRow, seconds: f64) -> Result<(), DbError> {
        let sql = AssertSqlSafe(record_sql("now()"));
        portable::execute(&mut **self, sql, &record_params(session, seconds)).await?;
        Ok(())
    }

    async fn total(
        &mut self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageTotal, DbError> {
        in_window(self, company, from, to).await
    }
}
