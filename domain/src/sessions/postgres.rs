//! [`SessionStore`](super::SessionStore) and [`SessionWrites`](super::SessionWrites) on
//! Postgres: every transaction scoped to the company (row-level security), status changes
//! announced by NOTIFY in the statement that makes them (and on Redis when configured).

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Transaction};

use super::{
    NewSession, SessionChanges, SessionRow, insert_sql, new_session_params, ready_sql,
    save_feedback_sql,
};
use crate::db::{PgDb, Scope};
use crate::events::SessionEvent;
use crate::portable::{self, Param, text_column};
use crate::speakers::Attribution;
use crate::usage::{self, UsageWrites};
use crate::{DbError, Tx};

/// The session and its submitted transcript (`$12`, `$13`) in one statement: a round trip
/// less per submission. The transcript's foreign key is checked at the end of the statement,
/// when the session row exists.
fn insert_with_transcript_sql() -> String {
    format!(
        "WITH session AS ({} RETURNING id, company_id)
         INSERT INTO transcripts (session_id, company_id, segments, speakers)
         SELECT id, company_id, $12, $13 FROM session",
        insert_sql("now()")
    )
}

/// Many sessions and the transcripts of those that came with one, in one statement (intake's
/// group commit): the columns as arrays, one element per session.
const INSERT_MANY: &str = "WITH session AS (
         INSERT INTO sessions (id, company_id, profile_id, title, kind, status, source, audio_ref, audio_type, external_id, channels, user_speaker)
         SELECT id, company_id, profile_id, title, kind, 'queued', source, audio_ref, audio_type, external_id, channels, user_speaker
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
              AS s(id, company_id, profile_id, title, kind, source, audio_ref, audio_type, external_id, channels, user_speaker)
         RETURNING id, company_id)
     INSERT INTO transcripts (session_id, company_id, segments, speakers)
     SELECT session.id, session.company_id, t.segments, $14::jsonb
     FROM UNNEST($12::text[], $13::jsonb[]) AS t(id, segments) JOIN session ON session.id = t.id";

/// The status change and its NOTIFY in one statement, so the announcement goes out exactly
/// when the change commits, and only when a row changed.
const CHANGE_STATUS: &str = "WITH changed AS (
        UPDATE sessions SET status = $3, error = $4, updated_at = now()
        WHERE company_id = $1 AND id = $2 AND status <> 'ready' RETURNING 1)
     SELECT pg_notify($5, $6) FROM changed";

impl PgDb {
    /// Runs [`CHANGE_STATUS`] for `event`; true when the session changed.
    async fn change_status(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &SessionEvent,
    ) -> Result<bool, DbError> {
        let changed = sqlx::query(CHANGE_STATUS)
            .bind(&event.company_id)
            .bind(&event.session_id)
            .bind(&event.status)
            .bind(&event.error)
            .bind(&self.events_channel)
            .bind(event.payload())
            .fetch_optional(&mut **tx)
            .await?;
        Ok(changed.is_some())
    }

    async fn publish(&self, event: &SessionEvent) {
        if let Some(fanout) = &self.fanout {
            fanout.publish(event).await;
        }
    }
}

#[async_trait]
impl SessionChanges for PgDb {
    async fn set_status(&self, event: &SessionEvent) -> Result<bool, DbError> {
        let mut tx = self.begin_scoped(Scope::Company(&event.company_id)).await?;
        let changed = self.change_status(&mut tx, event).await?;
        tx.commit().await?;
        if changed {
            self.publish(event).await;
        }
        Ok(changed)
    }

    async fn fail_in(&self, tx: &mut Tx<'_>, event: &SessionEvent) -> Result<bool, DbError> {
        let Tx::Postgres(tx) = tx else {
            return Err(DbError::WrongDatabase("sessions::fail_in"));
        };
        let changed = self.change_status(tx, event).await?;
        // Processes that follow session events through Redis hear it from there. It goes
        // out just before the engine commits; should that commit fail, the job stays
        // running, is rescued, and fails the session again.
        if changed {
            self.publish(event).await;
        }
        Ok(changed)
    }

    async fn save_feedback(
        &self,
        session: &SessionRow,
        feedback: &Value,
        usage_seconds: f64,
    ) -> Result<(), DbError> {
        let (company, id) = (session.company_id.as_str(), session.id.as_str());
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        let params = [id.into(), company.into(), feedback.into()];
        portable::execute(&mut *tx, AssertSqlSafe(save_feedback_sql("now()")), &params).await?;
        let params = [company.into(), id.into()];
        portable::execute(&mut *tx, AssertSqlSafe(ready_sql("now()")), &params).await?;
        let event = super::event(company, id, "ready", None);
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.events_channel)
            .bind(event.payload())
            .execute(&mut *tx)
            .await?;
        UsageWrites::record(&mut tx, session, usage::billable(usage_seconds)).await?;
        tx.commit().await?;
        self.publish(&event).await;
        Ok(())
    }
}

/// A new session, and its transcript when it came with one, in one statement.
async fn insert(
    conn: &mut PgConnection,
    s: &NewSession<'_>,
    segments: Option<&Value>,
) -> Result<(), DbError> {
    // `Param::Now` binds nothing here (the SQL says `now()`): the transcript's parameters
    // follow the session's eleven as `$12` and `$13`.
    let mut params = new_session_params(s).to_vec();
    let Some(segments) = segments else {
        portable::execute(conn, AssertSqlSafe(insert_sql("now()")), &params).await?;
        return Ok(());
    };
    // The submitted transcript names its own speakers.
    let speakers = serde_json::to_value(Attribution::from_transcript()).ok();
    params.extend([Param::from(segments), speakers.as_ref().into()]);
    let sql = AssertSqlSafe(insert_with_transcript_sql());
    portable::execute(conn, sql, &params).await?;
    Ok(())
}

/// New sessions and their transcripts in one statement ([`INSERT_MANY`]).
async fn insert_many(
    conn: &mut PgConnection,
    rows: &[(NewSession<'_>, Option<&Value>)],
) -> Result<(), DbError> {
    let with_transcript: Vec<(&str, &Value)> = rows
        .iter()
        .filter_map(|(s, segments)| segments.map(|segments| (s.id, segments)))
        .collect();
    let speakers = serde_json::to_value(Attribution::from_transcript()).ok();
    sqlx::query(INSERT_MANY)
        .bind(text_column(rows, |(s, _)| Some(s.id)))
        .bind(text_column(rows, |(s, _)| Some(s.company_id)))
        .bind(text_column(rows, |(s, _)| Some(s.profile_id)))
        .bind(text_column(rows, |(s, _)| Some(s.title)))
        .bind(text_column(rows, |(s, _)| Some(s.kind)))
        .bind(text_column(rows, |(s, _)| Some(s.source)))
        .bind(text_column(rows, |(s, _)| s.audio_ref))
        .bind(text_column(rows, |(s, _)| s.audio_type))
        .bind(text_column(rows, |(s, _)| s.external_id))
        .bind(text_column(rows, |(s, _)| s.channels))
        .bind(text_column(rows, |(s, _)| s.user_speaker))
        .bind(
            with_transcript
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
        )
        .bind(
            with_transcript
                .iter()
                .map(|(_, seg)| *seg)
                .collect::<Vec<_>>(),
        )
        .bind(speakers)
        .execute(conn)
        .await?;
    Ok(())
}

/// A transaction-scoped advisory lock per company, held until the commit.
async fn daily_sessions_lock(conn: &mut PgConnection, company: &str) -> Result<(), DbError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('voxline-daily-sessions:' || $1, 0))",
    )
    .bind(company)
    .execute(conn)
    .await?;
    Ok(())
}

session_reads!(PgDb);
session_writes!(
    Postgres,
    insert = insert,
    insert_many = insert_many,
    lock = daily_sessions_lock
);
