//! [`CallAudioStore`] and [`CallAudioTxStore`] on SQLite (times as microseconds since the
//! epoch).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{CallAudioStore, FORGET_UNCLAIMED, SELECT_UNCLAIMED, unclaimed_blobs};
use crate::db::{DbError, SqliteDb};
use crate::gdpr::ExpiredBlob;
use crate::portable;

#[async_trait]
impl CallAudioStore for SqliteDb {
    async fn unclaimed(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError> {
        let params = [before.into(), limit.into()];
        let rows = portable::all(&self.pool, SELECT_UNCLAIMED, &params).await?;
        Ok(unclaimed_blobs(rows))
    }

    async fn forget_unclaimed(&self, expired: &ExpiredBlob) -> Result<(), DbError> {
        portable::execute(&self.pool, FORGET_UNCLAIMED, &[(&expired.blob_ref).into()]).await?;
        Ok(())
    }
}

/// Nothing to take: an SQLite write transaction (IMMEDIATE) is the only writer already.
async fn no_lock(
    _conn: &mut SqliteConnection,
    _source: &str,
    _conversation: &str,
) -> Result<(), DbError> {
    Ok(())
}

call_audio_tx_store!(SqliteConnection, sqlx::Sqlite, lock = no_lock);
