//! Practice sessions, their transcripts and feedback, and idempotency keys: the session
//! pipeline's rows. Every read takes the company, so one tenant never sees another's rows.
//!
//! Two repository interfaces, each implemented for Postgres (`postgres.rs`) and SQLite
//! (`sqlite.rs`): [`SessionStore`] on the database handle, for reads and writes that are their
//! own transaction, and [`SessionWrites`] on a caller's transaction, for rows that must commit
//! together with others (a session with its first job, a transcript with the analysis job).
//! The store's reads ([`SessionReads`]) are written once for both databases; its status
//! changes ([`SessionChanges`]) are each database's own, as their announcements are. The free
//! functions here are the entry points and delegate to them.

#[macro_use]
mod shared_stores;

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::events::SessionEvent;
use crate::portable::{Columns, Param};
use crate::{Db, DbError, Tx};

#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    pub id: String,
    pub company_id: String,
    pub profile_id: String,
    pub title: String,
    pub kind: String,
    pub status: String,
    pub source: String,
    /// The blob-store key of the uploaded audio, for audio sessions.
    pub audio_ref: Option<String>,
    /// The audio's sniffed type (`wav`, `mp3`, …).
    pub audio_type: Option<String>,
    /// Seconds of conversation, once known (from the transcript's timings).
    pub duration_seconds: Option<f64>,
    /// The provider's id for webhook sessions (the ElevenLabs conversation id).
    pub external_id: Option<String>,
    /// Why the session failed, when it did.
    pub error: Option<String>,
    /// An audio upload's speaker per channel, in channel order (`user,partner`).
    pub channels: Option<String>,
    /// Which voice of a mono two-person recording is the user's: `first` or `second` to speak.
    pub user_speaker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub company_id: &'a str,
    pub profile_id: &'a str,
    pub title: &'a str,
    pub kind: &'a str,
    /// `transcript`, `audio` or a provider (`elevenlabs`).
    pub source: &'a str,
    pub audio_ref: Option<&'a str>,
    pub audio_type: Option<&'a str>,
    pub external_id: Option<&'a str>,
    /// See [`SessionRow::channels`].
    pub channels: Option<&'a str>,
    /// See [`SessionRow::user_speaker`].
    pub user_speaker: Option<&'a str>,
}

/// A stored transcript: its segments and how their speakers were attributed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTranscript {
    pub segments: Value,
    /// `{"method", "status", "count", "reason"}` as the transcription worker wrote it; `None`
    /// for transcripts stored before speakers were recorded.
    pub speakers: Option<Value>,
}

/// A stored answer to an idempotent request.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub request_hash: String,
    pub status: u16,
    pub response: Value,
}

/// The session rows that are their own transaction (on Postgres scoped to the company, or to
/// the platform for lookups by a provider's id): the reads and the announced changes.
pub trait SessionStore: SessionReads + SessionChanges {}

impl<T> SessionStore for T where T: SessionReads + SessionChanges + ?Sized {}

/// The session rows read on their own.
#[async_trait]
pub trait SessionReads: Send + Sync {
    async fn find_external(
        &self,
        source: &str,
        external_id: &str,
    ) -> Result<Option<SessionRow>, DbError>;
    async fn get(&self, company: &str, id: &str) -> Result<Option<SessionRow>, DbError>;
    async fn segments(&self, company: &str, id: &str) -> Result<Option<Value>, DbError>;
    async fn transcript(
        &self,
        company: &str,
        id: &str,
    ) -> Result<Option<StoredTranscript>, DbError>;
    async fn feedback(&self, company: &str, id: &str) -> Result<Option<Value>, DbError>;
    async fn stored_response(
        &self,
        company: &str,
        profile: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, DbError>;
    async fn list_of(
        &self,
        company: &str,
        profile: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SessionRow>, DbError>;
    /// Sessions the company submitted in `[from, to)`.
    async fn count_created(
        &self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64, DbError>;
}

/// The changes of a session's status, each announced to the session's followers (see
/// [`crate::events`]) as its database announces them.
#[async_trait]
pub trait SessionChanges: Send + Sync {
    /// Moves the session to the event's status; true when a row changed (then the change was
    /// announced).
    async fn set_status(&self, event: &SessionEvent) -> Result<bool, DbError>;
    /// Fails the session in the caller's transaction; see [`fail_in`].
    async fn fail_in(&self, tx: &mut Tx<'_>, event: &SessionEvent) -> Result<bool, DbError>;
    /// See [`save_feedback`].
    async fn save_feedback(
        &self,
        session: &SessionRow,
        feedback: &Value,
        usage_seconds: f64,
    ) -> Result<(), DbError>;
}

/// The session rows written in a caller's transaction.
#[async_trait]
pub trait SessionWrites: Send {
    async fn insert(&mut self, s: &NewSession<'_>, segments: Option<&Value>)
    -> Result<(), DbError>;
    /// Several new sessions (each with its transcript when it came with one), all of the
    /// transaction's current scope. One statement on Postgres; one insert each elsewhere.
    async fn insert_many(
        &mut self,
        rows: &[(NewSession<'_>, Option<&Value>)],
    ) -> Result<(), DbError> {
        for (session, segments) in rows {
            self.insert(session, *segments).await?;
        }
        Ok(())
    }
    async fn save_transcript(
        &mut self,
        company: &str,
        id: &str,
        segments: &Value,
        speakers: Option<&Value>,
        duration_seconds: Option<f64>,
    ) -> Result<(), DbError>;
    /// False when the key was taken meanwhile.
    async fn store_response(
        &mut self,
        company: &str,
        profile: &str,
        key: &str,
        stored: &StoredResponse,
    ) -> Result<bool, DbError>;
    /// Serialises the company's new sessions until this transaction ends, then counts those
    /// created in `[from, to)`: with the lock held the count is exact (see
    /// [`crate::billing::admit_many_in`]).
    async fn count_created_exclusively(
        &mut self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64, DbError>;
}

/// A new session (status `queued`) with its transcript when it came with one, in the caller's
/// transaction.
pub async fn insert(
    tx: &mut Tx<'_>,
    s: &NewSession<'_>,
    segments: Option<&Value>,
) -> Result<(), DbError> {
    tx.sessions().insert(s, segments).await
}

/// New sessions in the caller's transaction, as [`insert`] writes one (see
/// [`SessionWrites::insert_many`]).
pub async fn insert_many(
    tx: &mut Tx<'_>,
    rows: &[(NewSession<'_>, Option<&Value>)],
) -> Result<(), DbError> {
    tx.sessions().insert_many(rows).await
}

/// Stores the transcription worker's segments and how their speakers were told apart
/// (replacing any from an earlier attempt) and the conversation's length, in the caller's
/// transaction (with the analysis job it enqueues).
pub async fn save_transcript(
    tx: &mut Tx<'_>,
    company: &str,
    id: &str,
    segments: &Value,
    speakers: Option<&Value>,
    duration_seconds: Option<f64>,
) -> Result<(), DbError> {
    tx.sessions()
        .save_transcript(company, id, segments, speakers, duration_seconds)
        .await
}

/// The session a provider's id made, in any company (webhooks are not tenant-scoped callers;
/// the row's `company_id` says whose it is).
pub async fn find_external(
    db: &Db,
    source: &str,
    external_id: &str,
) -> Result<Option<SessionRow>, DbError> {
    db.sessions().find_external(source, external_id).await
}

pub async fn get(db: &Db, company: &str, id: &str) -> Result<Option<SessionRow>, DbError> {
    db.sessions().get(company, id).await
}

/// Moves a session to `status` (with the reason when it is `failed`) and publishes the change.
/// A `ready` session stays ready: a late or duplicate job cannot move it back.
pub async fn set_status(
    db: &Db,
    company: &str,
    id: &str,
    status: &str,
    error: Option<&str>,
) -> Result<(), DbError> {
    db.sessions()
        .set_status(&event(company, id, status, error))
        .await
        .map(|_changed| ())
}

/// Marks a session `failed` with `reason` inside the caller's transaction (the job engine's,
/// when a pipeline job dies), so the session fails exactly when its job does. A `ready`
/// session stays ready. On Postgres the change is announced by NOTIFY at commit (and on Redis
/// when configured); on SQLite the in-process event goes out now (the engine commits right
/// after its hooks).
pub async fn fail_in(
    db: &Db,
    tx: &mut Tx<'_>,
    company: &str,
    id: &str,
    reason: &str,
) -> Result<bool, DbError> {
    db.sessions()
        .fail_in(tx, &event(company, id, "failed", Some(reason)))
        .await
}

pub async fn segments(db: &Db, company: &str, id: &str) -> Result<Option<Value>, DbError> {
    db.sessions().segments(company, id).await
}

/// The session's transcript with its speaker attribution, once there is one.
pub async fn transcript(
    db: &Db,
    company: &str,
    id: &str,
) -> Result<Option<StoredTranscript>, DbError> {
    db.sessions().transcript(company, id).await
}

/// Stores the feedback, marks the session `ready` and records its usage (once per session, so a
/// retried job does not count twice), together; then publishes the change.
pub async fn save_feedback(
    db: &Db,
    session: &SessionRow,
    feedback: &Value,
    usage_seconds: f64,
) -> Result<(), DbError> {
    db.sessions()
        .save_feedback(session, feedback, usage_seconds)
        .await
}

pub async fn feedback(db: &Db, company: &str, id: &str) -> Result<Option<Value>, DbError> {
    db.sessions().feedback(company, id).await
}

pub async fn stored_response(
    db: &Db,
    company: &str,
    profile: &str,
    key: &str,
) -> Result<Option<StoredResponse>, DbError> {
    db.sessions().stored_response(company, profile, key).await
}

/// Records the answer in the caller's transaction; false when the key was taken meanwhile
/// (a concurrent retry): the caller rolls back and answers with the stored response.
pub async fn store_response(
    tx: &mut Tx<'_>,
    company: &str,
    profile: &str,
    key: &str,
    stored: &StoredResponse,
) -> Result<bool, DbError> {
    tx.sessions()
        .store_response(company, profile, key, stored)
        .await
}

/// The company's sessions, newest first; `before` is the id of the last one of the previous page.
pub async fn list(
    db: &Db,
    company: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<SessionRow>, DbError> {
    list_of(db, company, None, before, limit).await
}

/// [`list`], only `profile`'s own sessions when it is given (a person's history).
pub async fn list_of(
    db: &Db,
    company: &str,
    profile: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<SessionRow>, DbError> {
    db.sessions().list_of(company, profile, before, limit).await
}

fn event(company: &str, id: &str, status: &str, error: Option<&str>) -> SessionEvent {
    SessionEvent {
        company_id: company.to_string(),
        session_id: id.to_string(),
        status: status.to_string(),
        error: error.map(str::to_string),
    }
}

pub(crate) const COLUMNS: &str = "id, company_id, profile_id, title, kind, status, source, audio_ref, audio_type, \
     duration_seconds, external_id, error, channels, user_speaker, created_at, updated_at";

// The statements both databases run as they stand (SQLite reads `$N` as the N-th bound
// value); each binds times and JSON in its own encoding.

/// A session by its provider's id (`$1` the source, `$2` the id).
fn by_external_id_sql() -> String {
    format!("SELECT {COLUMNS} FROM sessions WHERE source = $1 AND external_id = $2")
}
/// A company's session (`$1`) by its id (`$2`).
fn by_id_sql() -> String {
    format!("SELECT {COLUMNS} FROM sessions WHERE company_id = $1 AND id = $2")
}
const SEGMENTS: &str = "SELECT segments FROM transcripts WHERE company_id = $1 AND session_id = $2";
const TRANSCRIPT: &str =
    "SELECT segments, speakers FROM transcripts WHERE company_id = $1 AND session_id = $2";
const FEEDBACK: &str = "SELECT metrics FROM feedback WHERE company_id = $1 AND session_id = $2";
const STORED_RESPONSE: &str = "SELECT request_hash, status, response FROM idempotency_keys
     WHERE company_id = $1 AND profile_id = $2 AND key = $3";
const SET_DURATION: &str =
    "UPDATE sessions SET duration_seconds = $3 WHERE company_id = $1 AND id = $2";
const UPSERT_TRANSCRIPT: &str = "INSERT INTO transcripts (session_id, company_id, segments, speakers) VALUES ($1, $2, $3, $4)
     ON CONFLICT (session_id) DO UPDATE SET segments = excluded.segments, speakers = excluded.speakers";
/// Sessions a company submitted in a window.
const COUNT_CREATED: &str =
    "SELECT count(*) FROM sessions WHERE company_id = $1 AND created_at >= $2 AND created_at < $3";

/// A page of a company's sessions (or one profile's, `$4`), newest first, after the session
/// `$2`. The casts say the parameters' type where Postgres first meets them (in `IS NULL`).
fn list_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM sessions WHERE company_id = $1
           AND (CAST($4 AS TEXT) IS NULL OR profile_id = $4)
           AND (CAST($2 AS TEXT) IS NULL OR (created_at, id) < (
                SELECT created_at, id FROM sessions WHERE company_id = $1 AND id = $2))
         ORDER BY created_at DESC, id DESC LIMIT $3"
    )
}

/// A new session, queued, written at `now` (the SQL for the time of the write, `$12`: see
/// [`new_session_params`]).
fn insert_sql(now: &str) -> String {
    format!(
        "INSERT INTO sessions (id, company_id, profile_id, title, kind, status, source, audio_ref, audio_type, external_id, channels, user_speaker, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10, $11, {now}, {now})"
    )
}

/// The parameters of [`insert_sql`].
fn new_session_params<'a>(s: &NewSession<'a>) -> [Param<'a>; 12] {
    [
        s.id.into(),
        s.company_id.into(),
        s.profile_id.into(),
        s.title.into(),
        s.kind.into(),
        s.source.into(),
        s.audio_ref.into(),
        s.audio_type.into(),
        s.external_id.into(),
        s.channels.into(),
        s.user_speaker.into(),
        Param::Now,
    ]
}

/// The session's feedback (`$3`), replacing an earlier attempt's, written at `now` (`$4`).
fn save_feedback_sql(now: &str) -> String {
    format!(
        "INSERT INTO feedback (session_id, company_id, metrics, created_at) VALUES ($1, $2, $3, {now})
         ON CONFLICT (session_id) DO UPDATE SET metrics = excluded.metrics"
    )
}

/// The session is ready, at `now` (`$3`).
fn ready_sql(now: &str) -> String {
    format!(
        "UPDATE sessions SET status = 'ready', error = NULL, updated_at = {now} WHERE company_id = $1 AND id = $2"
    )
}

/// An idempotent request's answer unless its key is taken, written at `now` (`$7`).
fn store_response_sql(now: &str) -> String {
    format!(
        "INSERT INTO idempotency_keys (company_id, profile_id, key, request_hash, status, response, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, {now}) ON CONFLICT DO NOTHING"
    )
}

/// The parameters of [`store_response_sql`].
fn store_response_params<'a>(
    company: &'a str,
    profile: &'a str,
    key: &'a str,
    stored: &'a StoredResponse,
) -> [Param<'a>; 7] {
    [
        company.into(),
        profile.into(),
        key.into(),
        (&stored.request_hash).into(),
        (stored.status as i32).into(),
        (&stored.response).into(),
        Param::Now,
    ]
}

/// A session read from either database.
pub(crate) fn session_row(r: &impl Columns) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: r.get("id")?,
        company_id: r.get("company_id")?,
        profile_id: r.get("profile_id")?,
        title: r.get("title")?,
        kind: r.get("kind")?,
        status: r.get("status")?,
        source: r.get("source")?,
        audio_ref: r.get("audio_ref")?,
        audio_type: r.get("audio_type")?,
        duration_seconds: r.get("duration_seconds")?,
        external_id: r.get("external_id")?,
        error: r.get("error")?,
        channels: r.get("channels")?,
        user_speaker: r.get("user_speaker")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

/// A row of [`STORED_RESPONSE`], from either database.
fn stored_response_row(r: &impl Columns) -> Result<StoredResponse, sqlx::Error> {
    Ok(StoredResponse {
        request_hash: r.get("request_hash")?,
        status: r.get::<i32>("status")? as u16,
        response: r.json("response")?,
    })
}
