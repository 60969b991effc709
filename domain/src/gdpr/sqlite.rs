//! [`GdprStore`] and [`GdprTxStore`] on SQLite (times as microseconds since the epoch; every
//! query names its company itself).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{
    CLEAR_AUDIO, DELETE_PROFILE, DataExport, EMAILS_SENT, EXPIRED_AUDIO, EXPIRED_EXPORTS,
    ExpiredBlob, FORGET_EXPORT, GdprStore, GdprTxStore, USAGE_RECORDS, delete_profile_rows_sql,
    delete_session_sql, email_json, expired_blobs, export_outcome, latest_export_sql,
    profile_sessions_sql, usage_json,
};
use crate::db::SqliteDb;
use crate::sessions::{SessionRow, lite_session};
use crate::{DbError, portable};

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn time(us: Option<i64>) -> Option<DateTime<Utc>> {
    us.and_then(DateTime::from_timestamp_micros)
}

fn lite_export(r: &SqliteRow) -> Result<DataExport, sqlx::Error> {
    Ok(DataExport {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        profile_id: r.try_get("profile_id")?,
        status: r.try_get("status")?,
        blob_ref: r.try_get("blob_ref")?,
        error: r.try_get("error")?,
        created_at: time(r.try_get("created_at")?).unwrap_or_default(),
        ready_at: time(r.try_get("ready_at")?),
        expires_at: time(r.try_get("expires_at")?),
    })
}

/// recipient, template, subject id, status and when it was sent.
type EmailRow = (String, String, String, String, Option<i64>);

#[async_trait]
impl GdprStore for SqliteDb {
    async fn latest_export(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<Option<DataExport>, DbError> {
        let sql = sqlx::AssertSqlSafe(latest_export_sql());
        let row = portable::row(&self.pool, sql, &[company, profile]).await?;
        Ok(row.as_ref().map(lite_export).transpose()?)
    }

    async fn finish_export(
        &self,
        company: &str,
        id: &str,
        outcome: Result<(&str, DateTime<Utc>), &str>,
    ) -> Result<bool, DbError> {
        let (status, blob_ref, expires_at, error) = export_outcome(outcome);
        let changed = sqlx::query(
            "UPDATE data_exports SET status = $3, blob_ref = $4, expires_at = $5, error = $6,
                    ready_at = $7
             WHERE company_id = $1 AND id = $2",
        )
        .bind(company)
        .bind(id)
        .bind(status)
        .bind(blob_ref)
        .bind(expires_at.map(|e| e.timestamp_micros()))
        .bind(error)
        .bind(now_us())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn profile_sessions(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<Vec<SessionRow>, DbError> {
        let sql = sqlx::AssertSqlSafe(profile_sessions_sql());
        let rows = portable::rows(&self.pool, sql, &[company, profile]).await?;
        Ok(rows.iter().map(lite_session).collect::<Result<_, _>>()?)
    }

    async fn profile_records(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<(Vec<Value>, Vec<Value>), DbError> {
        let usage: Vec<(String, f64, i64)> = sqlx::query_as(USAGE_RECORDS)
            .bind(company)
            .bind(profile)
            .fetch_all(&self.pool)
            .await?;
        let emails: Vec<EmailRow> = sqlx::query_as(EMAILS_SENT)
            .bind(company)
            .bind(profile)
            .fetch_all(&self.pool)
            .await?;
        Ok((
            usage
                .into_iter()
                .map(|(s, sec, at)| usage_json(s, sec, time(Some(at))))
                .collect(),
            emails
                .into_iter()
                .map(|(to, t, s, st, at)| email_json((to, t, s, st, time(at))))
                .collect(),
        ))
    }

    async fn expired_audio(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        self.expired(EXPIRED_AUDIO, before, limit).await
    }

    async fn clear_audio(&self, expired: &ExpiredBlob) -> Result<(), DbError> {
        let binds = [&*expired.company_id, &expired.owner_id, &expired.blob_ref];
        portable::execute(&self.pool, CLEAR_AUDIO, &binds).await?;
        Ok(())
    }

    async fn expired_exports(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        self.expired(EXPIRED_EXPORTS, now, limit).await
    }

    async fn forget_export(&self, expired: &ExpiredBlob) -> Result<(), DbError> {
        let binds = [&*expired.company_id, &expired.owner_id];
        portable::execute(&self.pool, FORGET_EXPORT, &binds).await?;
        Ok(())
    }
}

impl SqliteDb {
    /// The rows of an `EXPIRED_*` query (bound: the time, the limit).
    async fn expired(
        &self,
        sql: &'static str,
        at: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        let rows = sqlx::query_as(sql)
            .bind(at.timestamp_micros())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(expired_blobs(rows))
    }
}

#[async_trait]
impl GdprTxStore for SqliteConnection {
    async fn create_export(
        &mut self,
        id: &str,
        company: &str,
        profile: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO data_exports (id, company_id, profile_id, status, created_at)
             VALUES ($1, $2, $3, 'pending', $4)",
        )
        .bind(id)
        .bind(company)
        .bind(profile)
        .bind(now_us())
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
        Ok(row.as_ref().map(lite_session).transpose()?)
    }
}
