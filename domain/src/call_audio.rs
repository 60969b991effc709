//! A role-play call's audio, which ElevenLabs delivers apart from its transcript
//! (`post_call_audio` and `post_call_transcription`, in either order). Whichever arrives second
//! completes the first, keyed by the conversation id:
//!
//! - audio first: [`hold`] finds no session for the conversation and keeps the blob's key in
//!   `pending_call_audio`; the transcript's transaction then [`claim`]s it onto the session it
//!   creates;
//! - transcript first: [`hold`] attaches the audio to the session at once, and the caller
//!   queues the re-scoring analysis in the same transaction.
//!
//! Both take a per-conversation lock first (Postgres: a transaction-scoped advisory lock;
//! SQLite's IMMEDIATE transactions are one writer at a time already), so a transcript and its
//! audio committing at the same moment cannot both miss each other.

use chrono::Utc;
use sqlx::Row;

use crate::db::{DbError, Tx};
use crate::sessions::{COLUMNS, SessionRow, lite_session, pg_session};

/// What [`hold`] did with a delivered recording.
#[derive(Debug, Clone)]
pub enum Held {
    /// Attached to the conversation's session, which had none: its analysis should run again.
    Attached(SessionRow),
    /// The session already has this conversation's audio (a redelivery): nothing changed.
    AlreadyAttached(SessionRow),
    /// No session yet: kept until the transcript arrives.
    Pending,
    /// Already held from an earlier delivery: nothing changed.
    AlreadyPending,
}

async fn lock(tx: &mut Tx<'_>, source: &str, conversation: &str) -> Result<(), DbError> {
    if let Tx::Postgres(tx) = tx {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(format!("{source}:{conversation}"))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Attaches the recording stored under `audio_ref` to the session `source`/`conversation`
/// made, or holds it until there is one. Run in a platform-scoped transaction: whose
/// conversation it is is not known yet.
pub async fn hold(
    tx: &mut Tx<'_>,
    source: &str,
    conversation: &str,
    audio_ref: &str,
    audio_type: &str,
) -> Result<Held, DbError> {
    lock(tx, source, conversation).await?;
    let session = match &mut *tx {
        Tx::Postgres(tx) => {
            let sql =
                format!("SELECT {COLUMNS} FROM sessions WHERE source = $1 AND external_id = $2");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(source)
                .bind(conversation)
                .fetch_optional(&mut **tx)
                .await?
                .as_ref()
                .map(pg_session)
                .transpose()?
        }
        Tx::Sqlite { tx, .. } => {
            let sql =
                format!("SELECT {COLUMNS} FROM sessions WHERE source = ? AND external_id = ?");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(source)
                .bind(conversation)
                .fetch_optional(&mut **tx)
                .await?
                .as_ref()
                .map(lite_session)
                .transpose()?
        }
    };
    match session {
        Some(session) if session.audio_ref.is_some() => Ok(Held::AlreadyAttached(session)),
        Some(mut session) => {
            attach(tx, &session.company_id, &session.id, audio_ref, audio_type).await?;
            session.audio_ref = Some(audio_ref.to_string());
            session.audio_type = Some(audio_type.to_string());
            Ok(Held::Attached(session))
        }
        None => {
            let inserted = match tx {
                Tx::Postgres(tx) => sqlx::query(
                    "INSERT INTO pending_call_audio (source, conversation_id, audio_ref, audio_type)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(source)
                .bind(conversation)
                .bind(audio_ref)
                .bind(audio_type)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
                Tx::Sqlite { tx, .. } => sqlx::query(
                    "INSERT INTO pending_call_audio (source, conversation_id, audio_ref, audio_type, received_at)
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(source)
                .bind(conversation)
                .bind(audio_ref)
                .bind(audio_type)
                .bind(Utc::now().timestamp_micros())
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            };
            Ok(if inserted == 1 {
                Held::Pending
            } else {
                Held::AlreadyPending
            })
        }
    }
}

/// Inside the transaction that creates the conversation's session: takes the audio held for
/// `source`/`conversation`, if any, onto session `id` of `company`; returns its blob key.
pub async fn claim(
    tx: &mut Tx<'_>,
    source: &str,
    conversation: &str,
    company: &str,
    id: &str,
) -> Result<Option<String>, DbError> {
    lock(tx, source, conversation).await?;
    let held: Option<(String, String)> = match &mut *tx {
        Tx::Postgres(tx) => sqlx::query(
            "DELETE FROM pending_call_audio WHERE source = $1 AND conversation_id = $2
             RETURNING audio_ref, audio_type",
        )
        .bind(source)
        .bind(conversation)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?,
        Tx::Sqlite { tx, .. } => sqlx::query(
            "DELETE FROM pending_call_audio WHERE source = ? AND conversation_id = ?
             RETURNING audio_ref, audio_type",
        )
        .bind(source)
        .bind(conversation)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?,
    };
    let Some((audio_ref, audio_type)) = held else {
        return Ok(None);
    };
    attach(tx, company, id, &audio_ref, &audio_type).await?;
    Ok(Some(audio_ref))
}

async fn attach(
    tx: &mut Tx<'_>,
    company: &str,
    id: &str,
    audio_ref: &str,
    audio_type: &str,
) -> Result<(), DbError> {
    match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "UPDATE sessions SET audio_ref = $3, audio_type = $4, updated_at = now()
                 WHERE company_id = $1 AND id = $2 AND audio_ref IS NULL",
            )
            .bind(company)
            .bind(id)
            .bind(audio_ref)
            .bind(audio_type)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query(
                "UPDATE sessions SET audio_ref = ?3, audio_type = ?4, updated_at = ?5
                 WHERE company_id = ?1 AND id = ?2 AND audio_ref IS NULL",
            )
            .bind(company)
            .bind(id)
            .bind(audio_ref)
            .bind(audio_type)
            .bind(Utc::now().timestamp_micros())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Held recordings no transcript claimed, received before `before`, oldest first, at most
/// `limit`: a transcript comes within minutes of its call, so these are orphans for the
/// retention sweep. `company_id` is empty (no one's yet) and `owner_id` is the conversation.
pub async fn unclaimed(
    db: &crate::Db,
    before: chrono::DateTime<Utc>,
    limit: i64,
) -> Result<Vec<crate::gdpr::ExpiredBlob>, DbError> {
    let rows: Vec<(String, String)> = match db {
        crate::Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(crate::db::Scope::Platform).await?;
            sqlx::query_as(
                "SELECT conversation_id, audio_ref FROM pending_call_audio
                 WHERE received_at < $1 ORDER BY received_at LIMIT $2",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }
        crate::Db::Sqlite(lite) => {
            sqlx::query_as(
                "SELECT conversation_id, audio_ref FROM pending_call_audio
                 WHERE received_at < ? ORDER BY received_at LIMIT ?",
            )
            .bind(before.timestamp_micros())
            .bind(limit)
            .fetch_all(&lite.pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(owner_id, blob_ref)| crate::gdpr::ExpiredBlob {
            company_id: String::new(),
            owner_id,
            blob_ref,
        })
        .collect())
}

/// Forgets a held recording once its file is deleted.
pub async fn forget_unclaimed(
    db: &crate::Db,
    expired: &crate::gdpr::ExpiredBlob,
) -> Result<(), DbError> {
    const SQL: &str = "DELETE FROM pending_call_audio WHERE audio_ref = $1";
    match db {
        crate::Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(crate::db::Scope::Platform).await?;
            sqlx::query(SQL)
                .bind(&expired.blob_ref)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        crate::Db::Sqlite(lite) => {
            sqlx::query(SQL)
                .bind(&expired.blob_ref)
                .execute(&lite.pool)
                .await?;
        }
    }
    Ok(())
}
