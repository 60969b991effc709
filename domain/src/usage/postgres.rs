//! Usage rows on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};

use super::{IN_WINDOW, UsageStore, UsageTotal, UsageWrites, usage_total};
use crate::DbError;
use crate::db::{PgDb, Scope};
use crate::sessions::SessionRow;

async fn in_window(
    conn: &mut PgConnection,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<UsageTotal, DbError> {
    let row = sqlx::query_as(IN_WINDOW)
        .bind(company)
        .bind(from)
        .bind(to)
        .fetch_one(conn)
        .await?;
    Ok(usage_total(row))
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
        sqlx::query(
            "INSERT INTO usage_records (session_id, company_id, profile_id, seconds)
             VALUES ($1, $2, $3, $4) ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(&session.id)
        .bind(&session.company_id)
        .bind(&session.profile_id)
        .bind(seconds)
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
