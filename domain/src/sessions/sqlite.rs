//! [`SessionStore`] and [`SessionWrites`] on SQLite: times as microseconds, JSON as text, and
//! status changes announced to the process's own subscribers once they are written.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Sqlite, Transaction};

use super::{
    COUNT_CREATED, FEEDBACK, NewSession, SEGMENTS, SET_DURATION, STORED_RESPONSE, SessionRow,
    SessionStore, SessionWrites, StoredResponse, StoredTranscript, TRANSCRIPT, UPSERT_TRANSCRIPT,
    by_external_id_sql, by_id_sql, insert_sql, list_sql, new_session_params, ready_sql,
    save_feedback_sql, session_row, store_response_params, store_response_sql, stored_response_row,
};
use crate::db::SqliteDb;
use crate::events::SessionEvent;
use crate::portable::{self, Param};
use crate::speakers::Attribution;
use crate::usage::{self, UsageWrites};
use crate::{DbError, Tx};

/// A JSON column read back; an unreadable one is no value (as the column's readers expect).
fn json(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// The status change; a `ready` session stays ready.
const CHANGE_STATUS: &str = "UPDATE sessions SET status = $3, error = $4, updated_at = $5
     WHERE company_id = $1 AND id = $2 AND status <> 'ready'";

async fn change_status(
    conn: &mut sqlx::SqliteConnection,
    event: &SessionEvent,
) -> Result<bool, DbError> {
    let changed = sqlx::query(CHANGE_STATUS)
        .bind(&event.company_id)
        .bind(&event.session_id)
        .bind(&event.status)
        .bind(&event.error)
        .bind(portable::now_us())
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
    let params = [id.into(), company.into(), segments.into(), speakers.into()];
    portable::execute(conn, UPSERT_TRANSCRIPT, &params).await?;
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
        let params = [source.into(), external_id.into()];
        let row = portable::row(&self.pool, AssertSqlSafe(by_external_id_sql()), &params).await?;
        Ok(row.as_ref().map(session_row).transpose()?)
    }

    async fn get(&self, company: &str, id: &str) -> Result<Option<SessionRow>, DbError> {
        let params = [company.into(), id.into()];
        let row = portable::row(&self.pool, AssertSqlSafe(by_id_sql()), &params).await?;
        Ok(row.as_ref().map(session_row).transpose()?)
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
        // One time for both rows, as Postgres' `now()` is one per transaction.
        let now = Param::Time(Some(Utc::now()));
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let params = [id.into(), company.into(), feedback.into(), now];
        portable::execute(&mut *tx, AssertSqlSafe(save_feedback_sql("$4")), &params).await?;
        let params = [company.into(), id.into(), now];
        portable::execute(&mut *tx, AssertSqlSafe(ready_sql("$3")), &params).await?;
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
        let params = [company.into(), profile.into(), key.into()];
        let row = portable::row(&self.pool, STORED_RESPONSE, &params).await?;
        Ok(row.as_ref().map(stored_response_row).transpose()?)
    }

    async fn list_of(
        &self,
        company: &str,
        profile: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SessionRow>, DbError> {
        let params = [company.into(), before.into(), limit.into(), profile.into()];
        let rows = portable::rows(&self.pool, AssertSqlSafe(list_sql("")), &params).await?;
        Ok(rows.iter().map(session_row).collect::<Result<_, _>>()?)
    }

    async fn count_created(
        &self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64, DbError> {
        let params = [company.into(), from.into(), to.into()];
        Ok(portable::scalar(&self.pool, COUNT_CREATED, &params)
            .await?
            .unwrap_or_default())
    }
}

#[async_trait]
impl SessionWrites for Transaction<'_, Sqlite> {
    async fn insert(
        &mut self,
        s: &NewSession<'_>,
        segments: Option<&Value>,
    ) -> Result<(), DbError> {
        let sql = AssertSqlSafe(insert_sql("$12"));
        portable::execute(&mut **self, sql, &new_session_params(s)).await?;
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
        let params = [company.into(), id.into(), duration_seconds.into()];
        portable::execute(&mut **self, SET_DURATION, &params).await?;
        Ok(())
    }

    async fn store_response(
        &mut self,
        company: &str,
        profile: &str,
        key: &str,
        stored: &StoredResponse,
    ) -> Result<bool, DbError> {
        let sql = AssertSqlSafe(store_response_sql("$7"));
        let params = store_response_params(company, profile, key, stored);
        Ok(portable::execute(&mut **self, sql, &params).await? == 1)
    }

    async fn count_created_exclusively(
        &mut self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64, DbError> {
        // The write lock `BEGIN IMMEDIATE` took already serialises every writer.
        let params = [company.into(), from.into(), to.into()];
        Ok(portable::scalar(&mut **self, COUNT_CREATED, &params)
            .await?
            .unwrap_or_default())
    }
}
