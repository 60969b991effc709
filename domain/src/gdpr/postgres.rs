//! [`GdprStore`] and [`GdprTxStore`] on Postgres: a profile's rows in its own scope
//! ([`Scope::Profile`]: exports are private to their profile), the retention sweep's in the
//! platform's.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection};

use super::{
    CLEAR_AUDIO, DataExport, EMAILS_SENT, EXPIRED_AUDIO, EXPIRED_EXPORTS, ExpiredBlob,
    FORGET_EXPORT, GdprStore, USAGE_RECORDS, expired_blobs, export_row, finish_export_params,
    finish_export_sql, latest_export_sql, profile_records, profile_sessions_sql,
};
use crate::db::{PgDb, Scope};
use crate::sessions::{SessionRow, session_row};
use crate::{DbError, portable};

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
        let sql = AssertSqlSafe(latest_export_sql());
        let row = portable::row(&mut *tx, sql, &[company.into(), profile.into()]).await?;
        Ok(row.as_ref().map(export_row).transpose()?)
    }

    async fn finish_export(
        &self,
        company: &str,
        id: &str,
        outcome: Result<(&str, DateTime<Utc>), &str>,
    ) -> Result<bool, DbError> {
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        let sql = AssertSqlSafe(finish_export_sql("now()"));
        let params = finish_export_params(company, id, outcome);
        let changed = portable::execute(&mut *tx, sql, &params).await?;
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
        let sql = AssertSqlSafe(profile_sessions_sql());
        let rows = portable::rows(&mut *tx, sql, &[company.into(), profile.into()]).await?;
        Ok(rows.iter().map(session_row).collect::<Result<_, _>>()?)
    }

    async fn profile_records(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<(Vec<Value>, Vec<Value>), DbError> {
        let mut tx = self
            .begin_scoped(Scope::Profile { company, profile })
            .await?;
        let params = [company.into(), profile.into()];
        let usage = portable::rows(&mut *tx, USAGE_RECORDS, &params).await?;
        let emails = portable::rows(&mut *tx, EMAILS_SENT, &params).await?;
        Ok(profile_records(usage, emails)?)
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
        let params = [
            (&expired.company_id).into(),
            (&expired.owner_id).into(),
            (&expired.blob_ref).into(),
        ];
        portable::execute(&mut *tx, CLEAR_AUDIO, &params).await?;
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
        let params = [(&expired.company_id).into(), (&expired.owner_id).into()];
        portable::execute(&mut *tx, FORGET_EXPORT, &params).await?;
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
        let rows = portable::all(&mut *tx, sql, &[at.into(), limit.into()]).await?;
        Ok(expired_blobs(rows))
    }
}

gdpr_tx_store!(PgConnection, sqlx::Postgres);
