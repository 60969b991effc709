//! Practice sessions, their transcripts and feedback, and idempotency keys: the session
//! pipeline's rows. Every read takes the company, so one tenant never sees another's rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::db::Scope;
use crate::events::SessionEvent;
use crate::speakers::Attribution;
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

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A new session (status `queued`) with its transcript when it came with one, in the caller's
/// transaction.
pub async fn insert(
    tx: &mut Tx<'_>,
    s: &NewSession<'_>,
    segments: Option<&Value>,
) -> Result<(), DbError> {
    match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "INSERT INTO sessions (id, company_id, profile_id, title, kind, status, source, audio_ref, audio_type, external_id, channels, user_speaker)
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10, $11)",
            )
            .bind(s.id)
            .bind(s.company_id)
            .bind(s.profile_id)
            .bind(s.title)
            .bind(s.kind)
            .bind(s.source)
            .bind(s.audio_ref)
            .bind(s.audio_type)
            .bind(s.external_id)
            .bind(s.channels)
            .bind(s.user_speaker)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query(
                "INSERT INTO sessions (id, company_id, profile_id, title, kind, status, source, audio_ref, audio_type, external_id, created_at, updated_at, channels, user_speaker)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)",
            )
            .bind(s.id)
            .bind(s.company_id)
            .bind(s.profile_id)
            .bind(s.title)
            .bind(s.kind)
            .bind(s.source)
            .bind(s.audio_ref)
            .bind(s.audio_type)
            .bind(s.external_id)
            .bind(now_us())
            .bind(s.channels)
            .bind(s.user_speaker)
            .execute(&mut **tx)
            .await?;
        }
    }
    if let Some(segments) = segments {
        // The submitted transcript names its own speakers.
        let speakers = serde_json::to_value(Attribution::from_transcript()).ok();
        insert_transcript(tx, s.company_id, s.id, segments, speakers.as_ref()).await?;
    }
    Ok(())
}

async fn insert_transcript(
    tx: &mut Tx<'_>,
    company: &str,
    id: &str,
    segments: &Value,
    speakers: Option<&Value>,
) -> Result<(), DbError> {
    match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "INSERT INTO transcripts (session_id, company_id, segments, speakers) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (session_id) DO UPDATE SET segments = EXCLUDED.segments, speakers = EXCLUDED.speakers",
            )
            .bind(id)
            .bind(company)
            .bind(segments)
            .bind(speakers)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query(
                "INSERT INTO transcripts (session_id, company_id, segments, speakers) VALUES (?, ?, ?, ?)
                 ON CONFLICT (session_id) DO UPDATE SET segments = excluded.segments, speakers = excluded.speakers",
            )
            .bind(id)
            .bind(company)
            .bind(segments.to_string())
            .bind(speakers.map(Value::to_string))
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
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
    insert_transcript(tx, company, id, segments, speakers).await?;
    match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "UPDATE sessions SET duration_seconds = $3 WHERE company_id = $1 AND id = $2",
            )
            .bind(company)
            .bind(id)
            .bind(duration_seconds)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query(
                "UPDATE sessions SET duration_seconds = ?3 WHERE company_id = ?1 AND id = ?2",
            )
            .bind(company)
            .bind(id)
            .bind(duration_seconds)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

pub(crate) const COLUMNS: &str = "id, company_id, profile_id, title, kind, status, source, audio_ref, audio_type, \
     duration_seconds, external_id, error, channels, user_speaker, created_at, updated_at";

pub(crate) fn pg_session(r: &sqlx::postgres::PgRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        profile_id: r.try_get("profile_id")?,
        title: r.try_get("title")?,
        kind: r.try_get("kind")?,
        status: r.try_get("status")?,
        source: r.try_get("source")?,
        audio_ref: r.try_get("audio_ref")?,
        audio_type: r.try_get("audio_type")?,
        duration_seconds: r.try_get("duration_seconds")?,
        external_id: r.try_get("external_id")?,
        error: r.try_get("error")?,
        channels: r.try_get("channels")?,
        user_speaker: r.try_get("user_speaker")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(crate) fn lite_session(r: &sqlx::sqlite::SqliteRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        profile_id: r.try_get("profile_id")?,
        title: r.try_get("title")?,
        kind: r.try_get("kind")?,
        status: r.try_get("status")?,
        source: r.try_get("source")?,
        audio_ref: r.try_get("audio_ref")?,
        audio_type: r.try_get("audio_type")?,
        duration_seconds: r.try_get("duration_seconds")?,
        external_id: r.try_get("external_id")?,
        error: r.try_get("error")?,
        channels: r.try_get("channels")?,
        user_speaker: r.try_get("user_speaker")?,
        created_at: time(r.try_get("created_at")?),
        updated_at: time(r.try_get("updated_at")?),
    })
}

/// The session a provider's id made, in any company (webhooks are not tenant-scoped callers;
/// the row's `company_id` says whose it is).
pub async fn find_external(
    db: &Db,
    source: &str,
    external_id: &str,
) -> Result<Option<SessionRow>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            // Platform: the webhook asks which company's session a conversation made.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            let sql =
                format!("SELECT {COLUMNS} FROM sessions WHERE source = $1 AND external_id = $2");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(source)
                .bind(external_id)
                .fetch_optional(&mut *tx)
                .await?;
            row.as_ref().map(pg_session).transpose()?
        }
        Db::Sqlite(lite) => {
            let sql =
                format!("SELECT {COLUMNS} FROM sessions WHERE source = ? AND external_id = ?");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(source)
                .bind(external_id)
                .fetch_optional(&lite.pool)
                .await?;
            row.as_ref().map(lite_session).transpose()?
        }
    })
}

pub async fn get(db: &Db, company: &str, id: &str) -> Result<Option<SessionRow>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            let sql = format!("SELECT {COLUMNS} FROM sessions WHERE company_id = $1 AND id = $2");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            row.as_ref().map(pg_session).transpose()?
        }
        Db::Sqlite(lite) => {
            let sql = format!("SELECT {COLUMNS} FROM sessions WHERE company_id = ? AND id = ?");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(id)
                .fetch_optional(&lite.pool)
                .await?;
            row.as_ref().map(lite_session).transpose()?
        }
    })
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
    let event = SessionEvent {
        company_id: company.to_string(),
        session_id: id.to_string(),
        status: status.to_string(),
        error: error.map(str::to_string),
    };
    match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            // The NOTIFY rides on the same statement, so it goes out exactly when the change
            // commits, and only when a row changed.
            let changed = sqlx::query(
                "WITH changed AS (
                    UPDATE sessions SET status = $3, error = $4, updated_at = now()
                    WHERE company_id = $1 AND id = $2 AND status <> 'ready' RETURNING 1)
                 SELECT pg_notify($5, $6) FROM changed",
            )
            .bind(company)
            .bind(id)
            .bind(status)
            .bind(error)
            .bind(&pg.events_channel)
            .bind(event.payload())
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            if let (Some(_), Some(fanout)) = (changed, &pg.fanout) {
                fanout.publish(&event).await;
            }
        }
        Db::Sqlite(lite) => {
            let changed = sqlx::query(
                "UPDATE sessions SET status = ?3, error = ?4, updated_at = ?5
                 WHERE company_id = ?1 AND id = ?2 AND status <> 'ready'",
            )
            .bind(company)
            .bind(id)
            .bind(status)
            .bind(error)
            .bind(now_us())
            .execute(&lite.pool)
            .await?
            .rows_affected();
            if changed > 0 {
                let _ = lite.session_events.send(event);
            }
        }
    }
    Ok(())
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
    let event = SessionEvent {
        company_id: company.to_string(),
        session_id: id.to_string(),
        status: "failed".to_string(),
        error: Some(reason.to_string()),
    };
    match (db, tx) {
        (Db::Postgres(pg), Tx::Postgres(tx)) => {
            let changed = sqlx::query(
                "WITH changed AS (
                    UPDATE sessions SET status = 'failed', error = $3, updated_at = now()
                    WHERE company_id = $1 AND id = $2 AND status <> 'ready' RETURNING 1)
                 SELECT pg_notify($4, $5) FROM changed",
            )
            .bind(company)
            .bind(id)
            .bind(reason)
            .bind(&pg.events_channel)
            .bind(event.payload())
            .fetch_optional(&mut **tx)
            .await?;
            // Processes that follow session events through Redis hear it from there. It goes
            // out just before the engine commits; should that commit fail, the job stays
            // running, is rescued, and fails the session again.
            if let (Some(_), Some(fanout)) = (&changed, &pg.fanout) {
                fanout.publish(&event).await;
            }
            Ok(changed.is_some())
        }
        (Db::Sqlite(lite), Tx::Sqlite { tx, .. }) => {
            let changed = sqlx::query(
                "UPDATE sessions SET status = 'failed', error = ?3, updated_at = ?4
                 WHERE company_id = ?1 AND id = ?2 AND status <> 'ready'",
            )
            .bind(company)
            .bind(id)
            .bind(reason)
            .bind(now_us())
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if changed > 0 {
                let _ = lite.session_events.send(event);
            }
            Ok(changed > 0)
        }
        _ => Err(DbError::WrongDatabase("sessions::fail_in")),
    }
}

pub async fn segments(db: &Db, company: &str, id: &str) -> Result<Option<Value>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query_scalar(
                "SELECT segments FROM transcripts WHERE company_id = $1 AND session_id = $2",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            let text: Option<String> = sqlx::query_scalar(
                "SELECT segments FROM transcripts WHERE company_id = ? AND session_id = ?",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&lite.pool)
            .await?;
            text.and_then(|t| serde_json::from_str(&t).ok())
        }
    })
}

/// The session's transcript with its speaker attribution, once there is one.
pub async fn transcript(
    db: &Db,
    company: &str,
    id: &str,
) -> Result<Option<StoredTranscript>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            let row: Option<(Value, Option<Value>)> = sqlx::query_as(
                "SELECT segments, speakers FROM transcripts WHERE company_id = $1 AND session_id = $2",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            row.map(|(segments, speakers)| StoredTranscript { segments, speakers })
        }
        Db::Sqlite(lite) => {
            let row: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT segments, speakers FROM transcripts WHERE company_id = ? AND session_id = ?",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&lite.pool)
            .await?;
            match row {
                None => None,
                Some((segments, speakers)) => Some(StoredTranscript {
                    segments: serde_json::from_str(&segments).map_err(|e| {
                        DbError::Corrupt(format!("transcript of session {id}: {e}"))
                    })?,
                    speakers: speakers.and_then(|s| serde_json::from_str(&s).ok()),
                }),
            }
        }
    })
}

/// Stores the feedback, marks the session `ready` and records its usage (once per session, so a
/// retried job does not count twice), together; then publishes the change.
pub async fn save_feedback(
    db: &Db,
    session: &SessionRow,
    feedback: &Value,
    usage_seconds: f64,
) -> Result<(), DbError> {
    let (company, id) = (session.company_id.as_str(), session.id.as_str());
    let mut tx = db.begin(Scope::Company(company)).await?;
    match &mut tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "INSERT INTO feedback (session_id, company_id, metrics) VALUES ($1, $2, $3)
                 ON CONFLICT (session_id) DO UPDATE SET metrics = EXCLUDED.metrics",
            )
            .bind(id)
            .bind(company)
            .bind(feedback)
            .execute(&mut **tx)
            .await?;
            sqlx::query("UPDATE sessions SET status = 'ready', error = NULL, updated_at = now() WHERE company_id = $1 AND id = $2")
                .bind(company)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        Tx::Sqlite { tx, .. } => {
            let now = now_us();
            sqlx::query(
                "INSERT INTO feedback (session_id, company_id, metrics, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (session_id) DO UPDATE SET metrics = excluded.metrics",
            )
            .bind(id)
            .bind(company)
            .bind(feedback.to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?;
            sqlx::query("UPDATE sessions SET status = 'ready', error = NULL, updated_at = ?3 WHERE company_id = ?1 AND id = ?2")
                .bind(company)
                .bind(id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
    }
    crate::usage::record(&mut tx, session, usage_seconds).await?;
    let event = SessionEvent {
        company_id: company.to_string(),
        session_id: id.to_string(),
        status: "ready".to_string(),
        error: None,
    };
    if let Tx::Postgres(tx) = &mut tx
        && let Db::Postgres(pg) = db
    {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&pg.events_channel)
            .bind(event.payload())
            .execute(&mut **tx)
            .await?;
    }
    tx.commit().await?;
    match db {
        Db::Sqlite(lite) => {
            let _ = lite.session_events.send(event);
        }
        Db::Postgres(pg) => {
            if let Some(fanout) = &pg.fanout {
                fanout.publish(&event).await;
            }
        }
    }
    Ok(())
}

pub async fn feedback(db: &Db, company: &str, id: &str) -> Result<Option<Value>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query_scalar(
                "SELECT metrics FROM feedback WHERE company_id = $1 AND session_id = $2",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            let text: Option<String> = sqlx::query_scalar(
                "SELECT metrics FROM feedback WHERE company_id = ? AND session_id = ?",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&lite.pool)
            .await?;
            text.and_then(|t| serde_json::from_str(&t).ok())
        }
    })
}

/// A stored answer to an idempotent request.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub request_hash: String,
    pub status: u16,
    pub response: Value,
}

pub async fn stored_response(
    db: &Db,
    company: &str,
    profile: &str,
    key: &str,
) -> Result<Option<StoredResponse>, DbError> {
    let row = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query(
                "SELECT request_hash, status, response FROM idempotency_keys
                 WHERE company_id = $1 AND profile_id = $2 AND key = $3",
            )
            .bind(company)
            .bind(profile)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| -> Result<_, sqlx::Error> {
                Ok((
                    r.try_get::<String, _>("request_hash")?,
                    r.try_get::<i32, _>("status")?,
                    r.try_get::<Value, _>("response")?,
                ))
            })
        }
        Db::Sqlite(lite) => sqlx::query(
            "SELECT request_hash, status, response FROM idempotency_keys
             WHERE company_id = ? AND profile_id = ? AND key = ?",
        )
        .bind(company)
        .bind(profile)
        .bind(key)
        .fetch_optional(&lite.pool)
        .await?
        .map(|r| -> Result<_, sqlx::Error> {
            let text: String = r.try_get("response")?;
            Ok((
                r.try_get::<String, _>("request_hash")?,
                r.try_get::<i32, _>("status")?,
                serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            ))
        }),
    };
    match row {
        None => Ok(None),
        Some(r) => {
            let (request_hash, status, response) = r?;
            Ok(Some(StoredResponse {
                request_hash,
                status: status as u16,
                response,
            }))
        }
    }
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
    let inserted = match tx {
        Tx::Postgres(tx) => sqlx::query(
            "INSERT INTO idempotency_keys (company_id, profile_id, key, request_hash, status, response)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(company)
        .bind(profile)
        .bind(key)
        .bind(&stored.request_hash)
        .bind(stored.status as i32)
        .bind(&stored.response)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        Tx::Sqlite { tx, .. } => sqlx::query(
            "INSERT INTO idempotency_keys (company_id, profile_id, key, request_hash, status, response, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(company)
        .bind(profile)
        .bind(key)
        .bind(&stored.request_hash)
        .bind(stored.status as i32)
        .bind(stored.response.to_string())
        .bind(now_us())
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    Ok(inserted == 1)
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
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            let sql = format!(
                "SELECT {COLUMNS} FROM sessions WHERE company_id = $1
                   AND ($4::text IS NULL OR profile_id = $4)
                   AND ($2::text IS NULL OR (created_at, id) < (
                        SELECT created_at, id FROM sessions WHERE company_id = $1 AND id = $2))
                 ORDER BY created_at DESC, id DESC LIMIT $3"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(before)
                .bind(limit)
                .bind(profile)
                .fetch_all(&mut *tx)
                .await?;
            rows.iter().map(pg_session).collect::<Result<_, _>>()?
        }
        Db::Sqlite(lite) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM sessions WHERE company_id = ?1
                   AND (?4 IS NULL OR profile_id = ?4)
                   AND (?2 IS NULL OR (created_at, id) < (
                        SELECT created_at, id FROM sessions WHERE company_id = ?1 AND id = ?2))
                 ORDER BY created_at DESC, id DESC LIMIT ?3"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(before)
                .bind(limit)
                .bind(profile)
                .fetch_all(&lite.pool)
                .await?;
            rows.iter().map(lite_session).collect::<Result<_, _>>()?
        }
    })
}
