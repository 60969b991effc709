//! Practice sessions, their transcripts and feedback, and idempotency keys: the session
//! pipeline's rows. Every read takes the company, so one tenant never sees another's rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub company_id: &'a str,
    pub profile_id: &'a str,
    pub title: &'a str,
    pub kind: &'a str,
    pub source: &'a str,
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A new session (status `queued`) with its transcript, in the caller's transaction.
pub async fn insert(tx: &mut Tx<'_>, s: &NewSession<'_>, segments: &Value) -> Result<(), DbError> {
    match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "INSERT INTO sessions (id, company_id, profile_id, title, kind, status, source)
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6)",
            )
            .bind(s.id)
            .bind(s.company_id)
            .bind(s.profile_id)
            .bind(s.title)
            .bind(s.kind)
            .bind(s.source)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO transcripts (session_id, company_id, segments) VALUES ($1, $2, $3)",
            )
            .bind(s.id)
            .bind(s.company_id)
            .bind(segments)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            let now = now_us();
            sqlx::query(
                "INSERT INTO sessions (id, company_id, profile_id, title, kind, status, source, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?7)",
            )
            .bind(s.id)
            .bind(s.company_id)
            .bind(s.profile_id)
            .bind(s.title)
            .bind(s.kind)
            .bind(s.source)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO transcripts (session_id, company_id, segments) VALUES (?, ?, ?)",
            )
            .bind(s.id)
            .bind(s.company_id)
            .bind(segments.to_string())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

const COLUMNS: &str =
    "id, company_id, profile_id, title, kind, status, source, created_at, updated_at";

fn pg_session(r: &sqlx::postgres::PgRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        profile_id: r.try_get("profile_id")?,
        title: r.try_get("title")?,
        kind: r.try_get("kind")?,
        status: r.try_get("status")?,
        source: r.try_get("source")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn lite_session(r: &sqlx::sqlite::SqliteRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        profile_id: r.try_get("profile_id")?,
        title: r.try_get("title")?,
        kind: r.try_get("kind")?,
        status: r.try_get("status")?,
        source: r.try_get("source")?,
        created_at: time(r.try_get("created_at")?),
        updated_at: time(r.try_get("updated_at")?),
    })
}

pub async fn get(db: &Db, company: &str, id: &str) -> Result<Option<SessionRow>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let sql = format!("SELECT {COLUMNS} FROM sessions WHERE company_id = $1 AND id = $2");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(id)
                .fetch_optional(&pg.pool)
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

pub async fn set_status(db: &Db, company: &str, id: &str, status: &str) -> Result<(), DbError> {
    match db {
        Db::Postgres(pg) => {
            sqlx::query("UPDATE sessions SET status = $3, updated_at = now() WHERE company_id = $1 AND id = $2")
                .bind(company)
                .bind(id)
                .bind(status)
                .execute(&pg.pool)
                .await?;
        }
        Db::Sqlite(lite) => {
            sqlx::query("UPDATE sessions SET status = ?3, updated_at = ?4 WHERE company_id = ?1 AND id = ?2")
                .bind(company)
                .bind(id)
                .bind(status)
                .bind(now_us())
                .execute(&lite.pool)
                .await?;
        }
    }
    Ok(())
}

pub async fn segments(db: &Db, company: &str, id: &str) -> Result<Option<Value>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            sqlx::query_scalar(
                "SELECT segments FROM transcripts WHERE company_id = $1 AND session_id = $2",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&pg.pool)
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

/// Stores the feedback and marks the session `ready`, together (a retried job overwrites).
pub async fn save_feedback(
    db: &Db,
    company: &str,
    id: &str,
    metrics: &Value,
) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    match &mut tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "INSERT INTO feedback (session_id, company_id, metrics) VALUES ($1, $2, $3)
                 ON CONFLICT (session_id) DO UPDATE SET metrics = EXCLUDED.metrics",
            )
            .bind(id)
            .bind(company)
            .bind(metrics)
            .execute(&mut **tx)
            .await?;
            sqlx::query("UPDATE sessions SET status = 'ready', updated_at = now() WHERE company_id = $1 AND id = $2")
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
            .bind(metrics.to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?;
            sqlx::query("UPDATE sessions SET status = 'ready', updated_at = ?3 WHERE company_id = ?1 AND id = ?2")
                .bind(company)
                .bind(id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
    }
    tx.commit().await
}

pub async fn feedback(db: &Db, company: &str, id: &str) -> Result<Option<Value>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            sqlx::query_scalar(
                "SELECT metrics FROM feedback WHERE company_id = $1 AND session_id = $2",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&pg.pool)
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
        Db::Postgres(pg) => sqlx::query(
            "SELECT request_hash, status, response FROM idempotency_keys
             WHERE company_id = $1 AND profile_id = $2 AND key = $3",
        )
        .bind(company)
        .bind(profile)
        .bind(key)
        .fetch_optional(&pg.pool)
        .await?
        .map(|r| -> Result<_, sqlx::Error> {
            Ok((
                r.try_get::<String, _>("request_hash")?,
                r.try_get::<i32, _>("status")?,
                r.try_get::<Value, _>("response")?,
            ))
        }),
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
    Ok(match db {
        Db::Postgres(pg) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM sessions WHERE company_id = $1
                   AND ($2::text IS NULL OR (created_at, id) < (
                        SELECT created_at, id FROM sessions WHERE company_id = $1 AND id = $2))
                 ORDER BY created_at DESC, id DESC LIMIT $3"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(before)
                .bind(limit)
                .fetch_all(&pg.pool)
                .await?;
            rows.iter().map(pg_session).collect::<Result<_, _>>()?
        }
        Db::Sqlite(lite) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM sessions WHERE company_id = ?1
                   AND (?2 IS NULL OR (created_at, id) < (
                        SELECT created_at, id FROM sessions WHERE company_id = ?1 AND id = ?2))
                 ORDER BY created_at DESC, id DESC LIMIT ?3"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(before)
                .bind(limit)
                .fetch_all(&lite.pool)
                .await?;
            rows.iter().map(lite_session).collect::<Result<_, _>>()?
        }
    })
}
