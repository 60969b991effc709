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
//!
//! [`CallAudioTxStore`] is that work inside a transaction and [`CallAudioStore`] the retention
//! sweep's, each implemented for Postgres (`postgres.rs`) and SQLite (`sqlite.rs`); the free
//! functions here are the stable entry points and hold the logic.

/// [`CallAudioStore`] for one database handle (`$handle`), invoked in `postgres.rs` and
/// `sqlite.rs`: the same statements on both databases, run by [`Own`](crate::portable::Own)
/// in platform scope (a held recording is no company's yet).
macro_rules! call_audio_store {
    ($handle:ty) => {
        #[async_trait::async_trait]
        impl $crate::call_audio::CallAudioStore for $handle {
            async fn unclaimed(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> Result<Vec<$crate::gdpr::ExpiredBlob>, $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Platform).await?;
                let params = [before.into(), limit.into()];
                let sql = $crate::call_audio::SELECT_UNCLAIMED;
                let rows = $crate::portable::all(&mut *conn, sql, &params).await?;
                Ok($crate::call_audio::unclaimed_blobs(rows))
            }

            async fn forget_unclaimed(
                &self,
                expired: &$crate::gdpr::ExpiredBlob,
            ) -> Result<(), $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Platform).await?;
                let params = [(&expired.blob_ref).into()];
                let sql = $crate::call_audio::FORGET_UNCLAIMED;
                $crate::portable::execute(&mut *conn, sql, &params).await?;
                Ok(conn.commit().await?)
            }
        }
    };
}

/// [`CallAudioTxStore`] for one driver's connection (`$connection`, of `$dialect`), invoked in
/// `postgres.rs` and `sqlite.rs`: the same statements on both databases, but for the time of
/// the write (see [`Dialect`](crate::portable::Dialect)) and the conversation's lock, which
/// `lock` takes (`async fn(&mut $connection, source, conversation)`).
macro_rules! call_audio_tx_store {
    ($connection:ty, $dialect:ty, lock = $lock:path) => {
        #[async_trait::async_trait]
        impl $crate::call_audio::CallAudioTxStore for $connection {
            async fn lock(
                &mut self,
                source: &str,
                conversation: &str,
            ) -> Result<(), $crate::DbError> {
                $lock(self, source, conversation).await
            }

            async fn conversation_session(
                &mut self,
                source: &str,
                conversation: &str,
            ) -> Result<Option<$crate::sessions::SessionRow>, $crate::DbError> {
                let sql = sqlx::AssertSqlSafe($crate::call_audio::conversation_session_sql());
                let params = [source.into(), conversation.into()];
                let row = $crate::portable::row(self, sql, &params).await?;
                Ok(row
                    .as_ref()
                    .map($crate::sessions::session_row)
                    .transpose()?)
            }

            async fn keep_pending(
                &mut self,
                source: &str,
                conversation: &str,
                audio_ref: &str,
                audio_type: &str,
            ) -> Result<bool, $crate::DbError> {
                let sql = sqlx::AssertSqlSafe($crate::call_audio::keep_pending_sql(
                    &<$dialect as $crate::portable::Dialect>::now(5),
                ));
                let key = (source, conversation);
                let params = $crate::call_audio::recording_params(key, audio_ref, audio_type);
                Ok($crate::portable::execute(self, sql, &params).await? == 1)
            }

            async fn take_pending(
                &mut self,
                source: &str,
                conversation: &str,
            ) -> Result<Option<(String, String)>, $crate::DbError> {
                let params = [source.into(), conversation.into()];
                let sql = $crate::call_audio::TAKE_PENDING;
                Ok($crate::portable::optional(self, sql, &params).await?)
            }

            async fn attach(
                &mut self,
                company: &str,
                id: &str,
                audio_ref: &str,
                audio_type: &str,
            ) -> Result<(), $crate::DbError> {
                let sql = sqlx::AssertSqlSafe($crate::call_audio::attach_sql(
                    &<$dialect as $crate::portable::Dialect>::now(5),
                ));
                let key = (company, id);
                let params = $crate::call_audio::recording_params(key, audio_ref, audio_type);
                $crate::portable::execute(self, sql, &params).await?;
                Ok(())
            }
        }
    };
}

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::db::{DbError, Tx};
use crate::gdpr::ExpiredBlob;
use crate::portable::Param;
use crate::sessions::SessionRow;
use crate::{Db, sessions};

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

/// The held recordings on their own, for the retention sweep.
#[async_trait]
pub trait CallAudioStore: Send + Sync {
    /// See [`unclaimed`].
    async fn unclaimed(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError>;

    /// See [`forget_unclaimed`].
    async fn forget_unclaimed(&self, expired: &ExpiredBlob) -> Result<(), DbError>;
}

/// The steps of [`hold`] and [`claim`], inside their transaction (reached with
/// [`Tx::call_audio`]).
#[async_trait]
pub trait CallAudioTxStore: Send {
    /// Serialises the work on one conversation until the transaction ends (Postgres: an
    /// advisory lock; SQLite's write transaction holds the whole database already).
    async fn lock(&mut self, source: &str, conversation: &str) -> Result<(), DbError>;

    /// The session made from `source`/`conversation`, if there is one.
    async fn conversation_session(
        &mut self,
        source: &str,
        conversation: &str,
    ) -> Result<Option<SessionRow>, DbError>;

    /// Keeps the recording for the conversation unless one is kept already; whether it did.
    async fn keep_pending(
        &mut self,
        source: &str,
        conversation: &str,
        audio_ref: &str,
        audio_type: &str,
    ) -> Result<bool, DbError>;

    /// Removes and returns the recording kept for the conversation: its blob key and type.
    async fn take_pending(
        &mut self,
        source: &str,
        conversation: &str,
    ) -> Result<Option<(String, String)>, DbError>;

    /// Sets session `id`'s audio unless it has some.
    async fn attach(
        &mut self,
        company: &str,
        id: &str,
        audio_ref: &str,
        audio_type: &str,
    ) -> Result<(), DbError>;
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
    let store = tx.call_audio();
    store.lock(source, conversation).await?;
    match store.conversation_session(source, conversation).await? {
        Some(session) if session.audio_ref.is_some() => Ok(Held::AlreadyAttached(session)),
        Some(mut session) => {
            store
                .attach(&session.company_id, &session.id, audio_ref, audio_type)
                .await?;
            session.audio_ref = Some(audio_ref.to_string());
            session.audio_type = Some(audio_type.to_string());
            Ok(Held::Attached(session))
        }
        None => {
            let kept = store
                .keep_pending(source, conversation, audio_ref, audio_type)
                .await?;
            Ok(if kept {
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
    let store = tx.call_audio();
    store.lock(source, conversation).await?;
    let Some((audio_ref, audio_type)) = store.take_pending(source, conversation).await? else {
        return Ok(None);
    };
    store.attach(company, id, &audio_ref, &audio_type).await?;
    Ok(Some(audio_ref))
}

/// Held recordings no transcript claimed, received before `before`, oldest first, at most
/// `limit`: a transcript comes within minutes of its call, so these are orphans for the
/// retention sweep. `company_id` is empty (no one's yet) and `owner_id` is the conversation.
pub async fn unclaimed(
    db: &Db,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ExpiredBlob>, DbError> {
    db.call_audio().unclaimed(before, limit).await
}

/// Forgets a held recording once its file is deleted.
pub async fn forget_unclaimed(db: &Db, expired: &ExpiredBlob) -> Result<(), DbError> {
    db.call_audio().forget_unclaimed(expired).await
}

// `$n` parameters: SQLite reads them by position too, so these run on both databases (times
// bound as each stores them).
fn conversation_session_sql() -> String {
    format!(
        "SELECT {} FROM sessions WHERE source = $1 AND external_id = $2",
        sessions::COLUMNS
    )
}
const TAKE_PENDING: &str =
    "DELETE FROM pending_call_audio WHERE source = $1 AND conversation_id = $2
     RETURNING audio_ref, audio_type";
const SELECT_UNCLAIMED: &str = "SELECT conversation_id, audio_ref FROM pending_call_audio
     WHERE received_at < $1 ORDER BY received_at LIMIT $2";
const FORGET_UNCLAIMED: &str = "DELETE FROM pending_call_audio WHERE audio_ref = $1";

/// The recording held for a conversation unless one is held already, received at `now` (`$5`).
fn keep_pending_sql(now: &str) -> String {
    format!(
        "INSERT INTO pending_call_audio (source, conversation_id, audio_ref, audio_type, received_at)
         VALUES ($1, $2, $3, $4, {now}) ON CONFLICT DO NOTHING"
    )
}

/// The session's audio unless it has some, changed at `now` (`$5`).
fn attach_sql(now: &str) -> String {
    format!(
        "UPDATE sessions SET audio_ref = $3, audio_type = $4, updated_at = {now}
         WHERE company_id = $1 AND id = $2 AND audio_ref IS NULL"
    )
}

/// The parameters of [`keep_pending_sql`] and [`attach_sql`]: the row's key (`$1`, `$2`: the
/// source and its conversation, or the company and its session), the recording (`$3`, `$4`)
/// and the time of the write.
fn recording_params<'a>(
    (first, second): (&'a str, &'a str),
    audio_ref: &'a str,
    audio_type: &'a str,
) -> [Param<'a>; 5] {
    [
        first.into(),
        second.into(),
        audio_ref.into(),
        audio_type.into(),
        Param::Now,
    ]
}

/// Rows of [`SELECT_UNCLAIMED`] as the sweep's blobs.
fn unclaimed_blobs(rows: Vec<(String, String)>) -> Vec<ExpiredBlob> {
    rows.into_iter()
        .map(|(owner_id, blob_ref)| ExpiredBlob {
            company_id: String::new(),
            owner_id,
            blob_ref,
        })
        .collect()
}
