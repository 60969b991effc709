//! [`SessionStore`](super::SessionStore) and [`SessionWrites`](super::SessionWrites) on
//! SQLite: times as microseconds, JSON as text, and status changes announced to the process's
//! own subscribers once they are written.

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use sqlx::{AssertSqlSafe, Sqlite, SqliteConnection};

use super::{
    NewSession, SessionChanges, SessionRow, UPSERT_TRANSCRIPT, insert_sql, new_session_params,
    ready_sql, save_feedback_sql,
};
use crate::db::SqliteDb;
use crate::events::SessionEvent;
use crate::portable::{self, Param};
use crate::speakers::Attribution;
use crate::usage::{self, UsageWrites};
use crate::{DbError, Tx};

/// The status change; a `ready` session stays ready.
const CHANGE_STATUS: &str = "UPDATE sessions SET status = $3, error = $4, updated_at = $5
     WHERE company_id = $1 AND id = $2 AND status <> 'ready'";

async fn change_status(conn: &mut SqliteConnection, event: &SessionEvent) -> Result<bool, DbError> {
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

#[async_trait]
impl SessionChanges for SqliteDb {
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
}

/// A new session, then its transcript when it came with one.
async fn insert(
    conn: &mut SqliteConnection,
    s: &NewSession<'_>,
    segments: Option<&Value>,
) -> Result<(), DbError> {
    let sql = AssertSqlSafe(insert_sql("$12"));
    portable::execute(&mut *conn, sql, &new_session_params(s)).await?;
    if let Some(segments) = segments {
        // The submitted transcript names its own speakers.
        let speakers = serde_json::to_value(Attribution::from_transcript()).ok();
        let params = [
            s.id.into(),
            s.company_id.into(),
            segments.into(),
            speakers.as_ref().into(),
        ];
        portable::execute(conn, UPSERT_TRANSCRIPT, &params).await?;
    }
    Ok(())
}

/// Nothing to take: the write lock `BEGIN IMMEDIATE` took already serialises every writer.
async fn no_lock(_conn: &mut SqliteConnection, _company: &str) -> Result<(), DbError> {
    Ok(())
}

session_reads!(SqliteDb);

// `insert_many`: the trait's default, one insert each.
session_writes!(Sqlite, insert = insert, lock = no_lock);
