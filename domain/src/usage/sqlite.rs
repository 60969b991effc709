//! Usage rows on SQLite (times as microseconds).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::{IN_WINDOW, UsageStore, UsageTotal, UsageWrites, usage_total};
use crate::DbError;
use crate::db::SqliteDb;
use crate::sessions::SessionRow;

async fn in_window(
    conn: &mut SqliteConnection,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<UsageTotal, DbError> {
    let row = sqlx::query_as(IN_WINDOW)
        .bind(company)
        .bind(from.timestamp_micros())
        .bind(to.timestamp_micros())
        .fetch_one(conn)
        .await?;
    Ok(usage_total(row))
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
        sqlx::query(
            "INSERT INTO usage_records (session_id, company_id, profile_id, seconds, recorded_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(&session.id)
        .bind(&session.company_id)
        .bind(&session.profile_id)
        .bind(seconds)
        .bind(Utc::now().timestamp_micros())
        .execute(&mut **self)
        .await?;
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
