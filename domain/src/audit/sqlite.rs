//! The audit log on SQLite: times as microseconds, details as JSON text.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use super::{AuditEntry, AuditFilter, AuditRecord, AuditStore, AuditWrites, list_sql};
use crate::DbError;
use crate::db::SqliteDb;

async fn insert(conn: &mut SqliteConnection, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO audit_log (at, actor, actor_role, company_id, action, target, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(Utc::now().timestamp_micros())
    .bind(entry.actor)
    .bind(entry.actor_role)
    .bind(entry.company_id)
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.details.to_string())
    .fetch_one(conn)
    .await?)
}

#[async_trait]
impl AuditStore for SqliteDb {
    async fn append(&self, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, entry).await
    }

    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(list_sql("", "")))
            .bind(&filter.action)
            .bind(&filter.actor)
            .bind(&filter.company_id)
            .bind(filter.before)
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?;
        let records = rows
            .iter()
            .map(|r| {
                let at: i64 = r.try_get("at")?;
                let details: String = r.try_get("details")?;
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: crate::portable::time(at)?,
                    actor: r.try_get("actor")?,
                    actor_role: r.try_get("actor_role")?,
                    company_id: r.try_get("company_id")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    details: serde_json::from_str(&details)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(records)
    }
}

#[async_trait]
impl AuditWrites for Transaction<'_, Sqlite> {
    async fn append(&mut self, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
        insert(self, entry).await
    }
}
