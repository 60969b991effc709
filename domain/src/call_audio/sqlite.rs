//! [`CallAudioStore`] and [`CallAudioTxStore`] on SQLite (times as microseconds since the
//! epoch).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{
    CallAudioStore, CallAudioTxStore, FORGET_UNCLAIMED, SELECT_UNCLAIMED, TAKE_PENDING,
    conversation_session_sql, unclaimed_blobs,
};
use crate::db::{DbError, SqliteDb};
use crate::gdpr::ExpiredBlob;
use crate::portable;
use crate::sessions::{SessionRow, lite_session};

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

#[async_trait]
impl CallAudioStore for SqliteDb {
    async fn unclaimed(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        let rows = sqlx::query_as(SELECT_UNCLAIMED)
            .bind(before.timestamp_micros())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(unclaimed_blobs(rows))
    }

    async fn forget_unclaimed(&self, expired: &ExpiredBlob) -> Result<(), DbError> {
        portable::execute(&self.pool, FORGET_UNCLAIMED, &[&expired.blob_ref]).await?;
        Ok(())
    }
}

#[async_trait]
impl CallAudioTxStore for SqliteConnection {
    /// Nothing to take: an SQLite write transaction (IMMEDIATE) is the only writer already.
    async fn lock(&mut self, _source: &str, _conversation: &str) -> Result<(), DbError> {
        Ok(())
    }

    async fn conversation_session(
        &mut self,
        source: &str,
        conversation: &str,
    ) -> Result<Option<SessionRow>, DbError> {
        let sql = sqlx::AssertSqlSafe(conversation_session_sql());
        let row = portable::row(self, sql, &[source, conversation]).await?;
        Ok(row.as_ref().map(lite_session).transpose()?)
    }

    async fn keep_pending(
        &mut self,
        source: &str,
        conversation: &str,
        audio_ref: &str,
        audio_type: &str,
    ) -> Result<bool, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO pending_call_audio (source, conversation_id, audio_ref, audio_type, received_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(source)
        .bind(conversation)
        .bind(audio_ref)
        .bind(audio_type)
        .bind(now_us())
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
            "UPDATE sessions SET audio_ref = $3, audio_type = $4, updated_at = $5
             WHERE company_id = $1 AND id = $2 AND audio_ref IS NULL",
        )
        .bind(company)
        .bind(id)
        .bind(audio_ref)
        .bind(audio_type)
        .bind(now_us())
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}
