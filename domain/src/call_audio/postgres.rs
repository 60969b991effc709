//! [`CallAudioStore`] and [`CallAudioTxStore`] on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{CallAudioStore, FORGET_UNCLAIMED, SELECT_UNCLAIMED, unclaimed_blobs};
use crate::db::{DbError, PgDb, Scope};
use crate::gdpr::ExpiredBlob;
use crate::portable;

#[async_trait]
impl CallAudioStore for PgDb {
    async fn unclaimed(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        let params = [before.into(), limit.into()];
        let rows = portable::all(&mut *tx, SELECT_UNCLAIMED, &params).await?;
        Ok(unclaimed_blobs(rows))
    }

    async fn forget_unclaimed(&self, expired: &ExpiredBlob) -> Result<(), DbError> {
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        portable::execute(&mut *tx, FORGET_UNCLAIMED, &[(&expired.blob_ref).into()]).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The conversation's transaction-scoped advisory lock.
async fn advisory_lock(
    conn: &mut PgConnection,
    source: &str,
    conversation: &str,
) -> Result<(), DbError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(format!("{source}:{conversation}"))
        .execute(conn)
        .await?;
    Ok(())
}

call_audio_tx_store!(PgConnection, sqlx::Postgres, lock = advisory_lock);
