//! [`CallAudioStore`](super::CallAudioStore) and [`CallAudioTxStore`](super::CallAudioTxStore)
//! on Postgres.

use sqlx::PgConnection;

use crate::db::{DbError, PgDb};

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

call_audio_store!(PgDb);
call_audio_tx_store!(PgConnection, sqlx::Postgres, lock = advisory_lock);
