//! [`SessionStore`] and [`SessionWrites`] on SQLite: times as microseconds, JSON as text, and
//! status changes announced to the process's own subscribers once they are written.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{
    BY_EXTERNAL_ID, BY_ID, COLUMNS, COUNT_CREATED, FEEDBACK, NewSession, SEGMENTS, SET_DURATION,
    STORED_RESPONSE, SessionRow, SessionStore, SessionWrites, StoredResponse, StoredTranscript,
    TRANSCRIPT, list_sql, stored,
};
use crate::db::SqliteDb;
use crate::events::SessionEvent;
use crate::speakers::Attribution;
use crate::usage::{self, UsageWrites};
use crate::{DbError, Tx};

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

pub(crate) fn lite_session(r: &SqliteRow) -> Result<SessionRow, sqlx::Error> {
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

/// A JSON column read back; an unreadable one is no value (as the column's readers expect).
fn json(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// The status change; a `ready` session stays ready.
const CHANGE_STATUS: &str = "UPDATE sessions SET status = $3, error = $4, updated_at = $5
     WHERE company_id = $1 AND id = $2 AND status <> 'ready'";

const UPSERT_TRANSCRIPT: &str = "INSERT INTO transcripts (session_id, company_id, segments, speakers) VALUES ($1, $2, $3, $4)
     ON CONFLICT (session_id) DO UPDATE SET segments = excluded.segments, speakers = excluded.speakers";

async fn change_status(
    conn: &mut sqlx::SqliteConnection,
    event: &SessionEvent,
) -> Result<bool, DbError> {
    let changed = sqlx::query(CHANGE_STATUS)
        .bind(&event.company_id)
        .bind(&event.session_id)
        .bind(&event.status)
        .bind(&event.error)
        .bind(now_us())
        .execute(conn)
        .await?
        .rows_affected();
    Ok(changed > 0)
}

async fn upsert_transcript(
    conn: &mut sqlx::SqliteConnection,
    company: &str,
    id: &str,
    segments: &Value,
    speakers: Option<&Value>,
) -> Result<(), DbError> {
    sqlx::query(UPSERT_TRANSCRIPT)
        .bind(id)
        .bind(company)
        .bind(segments.to_string())
        .bind(speakers.map(Value::to_string))
        .execute(conn)
        .await?;
    Ok(())
}

impl SqliteDb {
    /// One JSON column of a session's row (`sql` binds the company and the session id).
    async fn json_of_session(
        &self,
        sql: &'static str,
        company: &str,
        id: &str,
    ) -> Result<Option<Value>, DbError> {
        let text: Option<String> = sqlx::query_scalar(sql)
            .bind(company)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(json(text))
    }
}

#[async_trait]
impl SessionStore for SqliteDb {
    async fn find_external(
        &self,
        source: &str,
        external_id: &str,
    ) -> Result<Option<SessionRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM sessions {BY_EXTERNAL_ID}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(source)
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(lite_session).transpose()?)
    }

    async fn get(&self, company: &str, id: &str) -> Result<Option<SessionRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM sessions {BY_ID}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(company)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(lite_session).transpose()?)
    }

    async fn set_status(&self, event: &SessionEvent) -> Result<bool, DbError> {
        let mut conn = self.pool.acquire().await?;
        let changed = change_status(&mut conn, event).await?;
        if changed {
            // No receiver only means no one follows this session now.
            let _ = self.session_events.send(event.clone());
        }
        Ok(changed)
    }

    async fn fail_in(&self, tx: &mut Tx<'_>, event: &SessionEvent) -> Result<bool, DbError> {
        let Tx::Sqlite { tx, .. } = tx else {
            return Err(DbError::WrongDatabase("sessions::fail_in"));
        };
        let changed = change_status(tx, event).await?;
        if changed {
            let _ = self.session_events.send(event.clone());
        }
        Ok(changed)
    }

    async fn segments(&self, company: &str, id: &str) -> Result<Option<Value>, DbError> {
        self.json_of_session(SEGMENTS, company, id).await
    }

    async fn transcript(
        &self,
        company: &str,
        id: &str,
    ) -> Result<Option<StoredTranscript>, DbError> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(TRANSCRIPT)
            .bind(company)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some((segments, speakers)) = row else {
            return Ok(None);
        };
        Ok(Some(StoredTranscript {
            segments: serde_json::from_str(&segments)
                .map_err(|e| DbError::Corrupt(format!("transcript of session {id}: {e}")))?,
            speakers: json(speakers),
        }))
    }

    async fn save_feedback(
        &self,
        session: &SessionRow,
        feedback: &Value,
        usage_seconds: f64,
    ) -> Result<(), DbError> {
        let (company, id) = (session.company_id.as_str(), session.id.as_str());
        let now = now_us();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO feedback (session_id, company_id, metrics, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (session_id) DO UPDATE SET metrics = excluded.metrics",
        )
        .bind(id)
        .bind(company)
        .bind(feedback.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sessions SET status = 'ready', error = NULL, updated_at = $3 WHERE company_id = $1 AND id = $2")
            .bind(company)
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        UsageWrites::record(&mut tx, session, usage::billable(usage_seconds)).await?;
        tx.commit().await?;
        let _ = self
            .session_events
            .send(super::event(company, id, "ready", None));
        Ok(())
    }

    async fn feedback(&self, company: &str, id: &str) -> Result<Option<Value>, DbError> {
        self.json_of_session(FEEDBACK, company, id).await
    }

    async fn stored_response(
        &self,
        company: &str,
        profile: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, DbError> {
        let row: Option<(String, i32, String)> = sqlx::query_as(STORED_RESPONSE)
            .bind(company)
            .bind(profile)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let Some((hash, status, response)) = row else {
            return Ok(None);
        };
        let response = serde_json::from_str(&response)
            .map_err(|e| DbError::Sqlx(sqlx::Error::Decode(Box::new(e))))?;
        Ok(Some(stored(hash, status, response)))
    }

    async fn list_of(
        &self,
        company: &str,
        profile: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SessionRow>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(list_sql("")))
            .bind(company)
            .bind(before)
            .bind(limit)
            .bind(profile)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(lite_session).collect::<Result<_, _>>()?)
    }

    async fn count_created(
        &self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64, DbError> {
        Ok(sqlx::query_scalar(COUNT_CREATED)
            .bind(company)
            .bind(from.timestamp_micros())
            .bind(to.timestamp_micros())
            .fetch_one(&self.pool)
            .await?)
    }
}

#[async_trait]
impl SessionWrites for Transaction<'_, Sqlite> {
    async fn insert(
        &mut self,
        s: &NewSession<'_>,
        segments: Option<&Value>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO sessions (id, company_id, profile_id, title, kind, status, source, audio_ref, audio_type, external_id, created_at, updated_at, channels, user_speaker)
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10, $10, $11, $12)",
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
        .execute(&mut **self)
        .await?;
        if let Some(segments) = segments {
            // The submitted transcript names its own speakers.
            let speakers = serde_json::to_value(Attribution::from_transcript()).ok();
            upsert_transcript(self, s.company_id, s.id, segments, speakers.as_ref()).await?;
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
    ) -> Result<(), DbError> {
        upsert_transcript(self, company, id, segments, speakers).await?;
        sqlx::query(SET_DURATION)
            .bind(company)
            .bind(id)
            .bind(duration_seconds)
            .execute(&mut **self)
            .await?;
        Ok(())
    }

    async fn store_response(
        &mut self,
        company: &str,
        profile: &str,
        key: &str,
        stored: &StoredResponse,
    ) -> Result<bool, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (company_id, profile_id, key, request_hash, status, response, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(company)
        .bind(profile)
        .bind(key)
        .bind(&stored.request_hash)
        .bind(stored.status as i32)
        .bind(stored.response.to_string())
        .bind(now_us())
        .execute(&mut **self)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn count_created_exclusively(
        &mut self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64, DbError> {
        // The write lock `BEGIN IMMEDIATE` took already serialises every writer.
        Ok(sqlx::query_scalar(COUNT_CREATED)
            .bind(company)
            .bind(from.timestamp_micros())
            .bind(to.timestamp_micros())
            .fetch_one(&mut **self)
            .await?)
    }
}
