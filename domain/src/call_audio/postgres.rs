//! [`CallAudioStore`] and [`CallAudioTxStore`] on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    CallAudioStore, CallAudioTxStore, FORGET_UNCLAIMED, SELECT_UNCLAIMED, TAKE_PENDING,
    conversation_session_sql, unclaimed_blobs,
};
use crate::db::{DbError, PgDb, Scope};
use crate::gdpr::ExpiredBlob;
use crate::portable;
use crate::sessions::{SessionRow, pg_session};

#[async_trait]
impl CallAudioStore for PgDb {
    async fn unclaimed(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        let rows = sqlx::query_as(SELECT_UNCLAIMED)
            .bind(before)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        Ok(unclaimed_blobs(rows))
    }

    async fn forget_unclaimed(&self, expired: &ExpiredBlob) -> Result<(), DbError> {
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        portable::execute(&mut *tx, FORGET_UNCLAIMED, &[&expired.blob_ref]).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl CallAudioTxStore for PgConnection {
    async fn lock(&mut self, source: &str, conversation: &str) -> Result<(), DbError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(format!("{source}:{conversation}"))
            .execute(&mut *self)
            .await?;
        Ok(())
    }

    async fn conversation_session(
        &mut self,
        source: &str,
        conversation: &str,
    ) -> Result<Option<SessionRow>, DbError> {
        let sql = sqlx::AssertSqlSafe(conversation_session_sql());
        let row = portable::row(self, sql, &[source, conversation]).await?;
        Ok(row.as_ref().map(pg_session).transpose()?)
    }

    async fn keep_pending(
        &mut self,
        source: &str,
        conversation: &str,
        audio_ref: &str,
        audio_type: &str,
    ) -> Result<bool, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO pending_call_audio (source, conversation_id, audio_ref, audio_type)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(source)
        .bind(conversation)
        .bind(audio_ref)
        .bind(audio_type)
        .execute(&mut *self)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn take_pending(
        &mut self,
        source: &str,
        conversation: &str,
    ) -> Result<Option<(String, String)>, DbError> {
        Ok(portable::optional(self, TAKE_PENDING, &[source, conversation]).await?)
    }

    async fn attach(
        &mut self,
        company: &str,
        id: &str,
        audio_ref: &str,
        audio_type: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE sessions SET audio_ref = $3, audio_type = $4, updated_at = now()
             WHERE company_id = $1 AND id = $2 AND audio_ref IS NULL",
        )
        .bind(company)
        .bind(id)
        .bind(audio_ref)
        .bind(audio_type)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}
