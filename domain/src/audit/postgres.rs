//! The audit log on Postgres.

use async_trait::async_trait;
use sqlx::{Postgres, Row, Transaction};

use super::{AuditEntry, AuditFilter, AuditRecord, AuditStore, AuditWrites, list_sql};
use crate::DbError;
use crate::db::{PgDb, Scope};
use crate::portable::text_column;

#[async_trait]
impl AuditStore for PgDb {
    async fn append(&self, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
        let scope = match entry.company_id {
            Some(company) => Scope::Company(company),
            // Platform: an entry that names no company (an operator's job action, a
            // reconciliation run) belongs to no tenant, so no company scope may write it.
            None => Scope::Platform,
        };
        let mut tx = self.begin_scoped(scope).await?;
        let id = AuditWrites::append(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, DbError> {
        // Listing the log is an operator's read across companies (GET /api/admin/audit), so
        // Platform scope; a filter naming one company reads within that company's scope.
        let scope = match filter.company_id.as_deref() {
            Some(company) => Scope::Company(company),
            None => Scope::Platform,
        };
        // A read: the transaction is dropped (rolled back) when done.
        let mut tx = self.begin_scoped(scope).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(list_sql("::text", "::int8")))
            .bind(&filter.action)
            .bind(&filter.actor)
            .bind(&filter.company_id)
            .bind(filter.before)
            .bind(filter.limit)
            .fetch_all(&mut *tx)
            .await?;
        let records = rows
            .iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    actor_role: r.try_get("actor_role")?,
                    company_id: r.try_get("company_id")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    details: r.try_get("details")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(records)
    }
}

#[async_trait]
impl AuditWrites for Transaction<'_, Postgres> {
    async fn append(&mut self, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO audit_log (actor, actor_role, company_id, action, target, details)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(entry.actor)
        .bind(entry.actor_role)
        .bind(entry.company_id)
        .bind(entry.action)
        .bind(entry.target)
        .bind(&entry.details)
        .fetch_one(&mut **self)
        .await?)
    }

    async fn append_many(&mut self, entries: &[AuditEntry<'_>]) -> Result<(), DbError> {
        // WITH ORDINALITY keeps the ids in the order given.
        sqlx::query(
            "INSERT INTO audit_log (actor, actor_role, company_id, action, target, details)
             SELECT actor, actor_role, company_id, action, target, details
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
                  WITH ORDINALITY AS e(actor, actor_role, company_id, action, target, details, n)
             ORDER BY n",
        )
        .bind(text_column(entries, |e| Some(e.actor)))
        .bind(text_column(entries, |e| Some(e.actor_role)))
        .bind(text_column(entries, |e| e.company_id))
        .bind(text_column(entries, |e| Some(e.action)))
        .bind(text_column(entries, |e| Some(e.target)))
        .bind(entries.iter().map(|e| &e.details).collect::<Vec<_>>())
        .execute(&mut **self)
        .await?;
        Ok(())
    }
}
