//! [`GdprStore`] and [`GdprTxStore`] on SQLite (times as microseconds since the epoch; every
//! query names its company itself).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, SqliteConnection};

use super::{
    CLEAR_AUDIO, DataExport, EMAILS_SENT, EXPIRED_AUDIO, EXPIRED_EXPORTS, ExpiredBlob,
    FORGET_EXPORT, GdprStore, USAGE_RECORDS, expired_blobs, export_row, finish_export_params,
    finish_export_sql, latest_export_sql, profile_records, profile_sessions_sql,
};
use crate::db::SqliteDb;
use crate::sessions::{SessionRow, session_row};
use crate::{DbError, portable};

#[async_trait]
impl GdprStore for SqliteDb {
    async fn latest_export(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<Option<DataExport>, DbError> {
        let sql = AssertSqlSafe(latest_export_sql());
        let row = portable::row(&self.pool, sql, &[company.into(), profile.into()]).await?;
        Ok(row.as_ref().map(export_row).transpose()?)
    }

    async fn finish_export(
        &self,
        company: &str,
        id: &str,
        outcome: Result<(&str, DateTime<Utc>), &str>,
    ) -> Result<bool, DbError> {
        let sql = AssertSqlSafe(finish_export_sql("$7"));
        let params = finish_export_params(company, id, outcome);
        Ok(portable::execute(&self.pool, sql, &params).await? == 1)
    }

    async fn profile_sessions(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<Vec<SessionRow>, DbError> {
        let sql = AssertSqlSafe(profile_sessions_sql());
        let rows = portable::rows(&self.pool, sql, &[company.into(), profile.into()]).await?;
        Ok(rows.iter().map(session_row).collect::<Result<_, _>>()?)
    }

    async fn profile_records(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<(Vec<Value>, Vec<Value>), DbError> {
        let params = [company.into(), profile.into()];
        let usage = portable::rows(&self.pool, USAGE_RECORDS, &params).await?;
        let emails = portable::rows(&self.pool, EMAILS_SENT, &params).await?;
        Ok(profile_records(usage, emails)?)
    }

    async fn expired_audio(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        self.expired(EXPIRED_AUDIO, before, limit).await
    }

    async fn clear_audio(&self, expired: &ExpiredBlob) -> Result<(), DbError> {
        let params = [
            (&expired.company_id).into(),
            (&expired.owner_id).into(),
            (&expired.blob_ref).into(),
        ];
        portable::execute(&self.pool, CLEAR_AUDIO, &params).await?;
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
        let params = [(&expired.company_id).into(), (&expired.owner_id).into()];
        portable::execute(&self.pool, FORGET_EXPORT, &params).await?;
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
        let rows = portable::all(&self.pool, sql, &[at.into(), limit.into()]).await?;
        Ok(expired_blobs(rows))
    }
}

gdpr_tx_store!(SqliteConnection, sqlx::Sqlite);
