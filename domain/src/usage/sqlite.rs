//! Usage rows on SQLite (times as microseconds).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Sqlite, SqliteConnection, Transaction};

use super::{
    IN_WINDOW, UsageStore, UsageTotal, UsageWrites, record_params, record_sql, usage_total,
};
use crate::db::SqliteDb;
use crate::sessions::SessionRow;
use crate::{DbError, portable};

async fn in_window(
    conn: &mut SqliteConnection,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<UsageTotal, DbError> {
    let params = [company.into(), from.into(), to.into()];
    let row = portable::optional(conn, IN_WINDOW, &params).await?;
    Ok(usage_total(row.ok_or(sqlx::Error::RowNotFound)?))
}

#[async_trait]
impl UsageStore for SqliteDb {
    async fn total(
        &self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageTotal, DbError> {
        let mut conn = self.pool.acquire().await?;
        in_window(&mut conn, company, from, to).await
    }
}

#[async_trait]
impl UsageWrites for Transaction<'_, Sqlite> {
    async fn record(&mut self, session: &SessionRow, seconds: f64) -> Result<(), DbError> {
        let sql = AssertSqlSafe(record_sql("$5"));
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
