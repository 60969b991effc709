//! [`CallAudioStore`](super::CallAudioStore) and [`CallAudioTxStore`](super::CallAudioTxStore)
//! on SQLite (times as microseconds since the epoch).

use sqlx::SqliteConnection;

use crate::db::{DbError, SqliteDb};

/// Nothing to take: an SQLite write transaction (IMMEDIATE) is the only writer already.
async fn no_lock(
    _conn: &mut SqliteConnection,
    _source: &str,
    _conversation: &str,
) -> Result<(), DbError> {
    Ok(())
}

call_audio_store!(SqliteDb);
call_audio_tx_store!(SqliteConnection, sqlx::Sqlite, lock = no_lock);
