//! [`GdprStore`] and [`GdprTxStore`] on Postgres: a profile's rows in its own scope
//! ([`Scope::Profile`]: exports are private to their profile), the retention sweep's in the
//! platform's.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{
    CLEAR_AUDIO, DELETE_PROFILE, DataExport, EMAILS_SENT, EXPIRED_AUDIO, EXPIRED_EXPORTS,
    ExpiredBlob, FORGET_EXPORT, GdprStore, GdprTxStore, USAGE_RECORDS, delete_profile_rows_sql,
    delete_session_sql, email_json, expired_blobs, export_outcome, latest_export_sql,
    profile_sessions_sql, usage_json,
};
use crate::db::{PgDb, Scope};
use crate::sessions::{SessionRow, pg_session};
use crate::{DbError, portable};

fn pg_export(r: &PgRow) -> Result<DataExport, sqlx::Error> {
    Ok(DataExport {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        profile_id: r.try_get("profile_id")?,
        status: r.try_get("status")?,
        blob_ref: r.try_get("blob_ref")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        ready_at: r.try_get("ready_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

#[async_trait]
impl GdprStore for PgDb {
    async fn latest_export(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<Option<DataExport>, DbError> {
        let mut tx = self
            .begin_scoped(Scope::Profile { company, profile })
            .await?;
        let sql = sqlx::AssertSqlSafe(latest_export_sql());
        let row = portable::row(&mut *tx, sql, &[company, profile]).await?;
        Ok(row.as_ref().map(pg_export).transpose()?)
    }

    async fn finish_export(
        &self,
        company: &str,
        id: &str,
        outcome: Result<(&str, DateTime<Utc>), &str>,
    ) -> Result<bool, DbError> {
        let (status, blob_ref, expires_at, error) = export_outcome(outcome);
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        let changed = sqlx::query(
            "UPDATE data_exports SET status = $3, blob_ref = $4, expires_at = $5, error = $6,
                    ready_at = now()
             WHERE company_id = $1 AND id = $2",
        )
        .bind(company)
        .bind(id)
        .bind(status)
        .bind(blob_ref)
        .bind(expires_at)
        .bind(error)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn profile_sessions(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<Vec<SessionRow>, DbError> {
        let mut tx = self
            .begin_scoped(Scope::Profile { company, profile })
            .await?;
        let sql = sqlx::AssertSqlSafe(profile_sessions_sql());
        let rows = portable::rows(&mut *tx, sql, &[company, profile]).await?;
        Ok(rows.iter().map(pg_session).collect::<Result<_, _>>()?)
    }

    async fn profile_records(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<(Vec<Value>, Vec<Value>), DbError> {
        let mut tx = self
            .begin_scoped(Scope::Profile { company, profile })
            .await?;
        let usage: Vec<(String, f64, DateTime<Utc>)> = sqlx::query_as(USAGE_RECORDS)
            .bind(company)
            .bind(profile)
            .fetch_all(&mut *tx)
            .await?;
        let emails = sqlx::query_as(EMAILS_SENT)
            .bind(company)
            .bind(profile)
            .fetch_all(&mut *tx)
            .await?;
        Ok((
            usage
                .into_iter()
                .map(|(s, sec, at)| usage_json(s, sec, Some(at)))
                .collect(),
            emails.into_iter().map(email_json).collect(),
        ))
    }

    async fn expired_audio(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        // Platform: retention sweeps every company's audio.
        self.expired(EXPIRED_AUDIO, before, limit).await
    }

    async fn clear_audio(&self, expired: &ExpiredBlob) -> Result<(), DbError> {
        let mut tx = self
            .begin_scoped(Scope::Company(&expired.company_id))
            .await?;
        let binds = [&*expired.company_id, &expired.owner_id, &expired.blob_ref];
        portable::execute(&mut *tx, CLEAR_AUDIO, &binds).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn expired_exports(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        // Platform: retention sweeps every company's exports.
        self.expired(EXPIRED_EXPORTS, now, limit).await
    }

    async fn forget_export(&self, expired: &ExpiredBlob) -> Result<(), DbError> {
        let mut tx = self
            .begin_scoped(Scope::Company(&expired.company_id))
            .await?;
        let binds = [&*expired.company_id, &expired.owner_id];
        portable::execute(&mut *tx, FORGET_EXPORT, &binds).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl PgDb {
    /// The rows of an `EXPIRED_*` query (bound: the time, the limit), in platform scope.
    async fn expired(
        &self,
        sql: &'static str,
        at: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        let rows = sqlx::query_as(sql)
            .bind(at)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        Ok(expired_blobs(rows))
    }
}

#[async_trait]
impl GdprTxStore for PgConnection {
    async fn create_export(
        &mut self,
        id: &str,
        company: &str,
        profile: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO data_exports (id, company_id, profile_id, status) VALUES ($1, $2, $3, 'pending')",
        )
        .bind(id)
        .bind(company)
        .bind(profile)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn profile_files(
        &mut self,
        sql: &'static str,
        company: &str,
        profile: &str,
    ) -> Result<Vec<(String, Option<String>)>, DbError> {
        Ok(portable::all(self, sql, &[company, profile]).await?)
    }

    async fn delete_profile_rows(
        &mut self,
        table: &'static str,
        company: &str,
        profile: &str,
    ) -> Result<u64, DbError> {
        let sql = sqlx::AssertSqlSafe(delete_profile_rows_sql(table));
        Ok(portable::execute(self, sql, &[company, profile]).await?)
    }

    async fn delete_profile(&mut self, company: &str, profile: &str) -> Result<bool, DbError> {
        Ok(portable::execute(self, DELETE_PROFILE, &[company, profile]).await? == 1)
    }

    async fn delete_session(
        &mut self,
        company: &str,
        id: &str,
    ) -> Result<Option<SessionRow>, DbError> {
        let sql = sqlx::AssertSqlSafe(delete_session_sql());
        let row = portable::row(self, sql, &[company, id]).await?;
        Ok(row.as_ref().map(pg_session).transpose()?)
    }
}
