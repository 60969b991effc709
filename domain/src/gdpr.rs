//! A profile's personal data as a whole: the export bundle (right of access), erasure (right to
//! erasure) and the audio retention sweep. Every query names the company, and on Postgres runs
//! in that company's row-level-security scope; only the retention sweep is platform work.
//!
//! What erasure keeps, because billing law requires it: `usage_records` (seconds analysed per
//! session: the basis of metered invoices, no content), the Stripe copy (`billing_customers`,
//! `subscriptions`, `usage_reports`, `stripe_events`) and the audit log, which records the
//! erasure itself. Everything else about the profile goes: sessions, transcripts, feedback,
//! audio, idempotency answers, email preferences, the log of emails sent to it, its exports and
//! the profile row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::db::Scope;
use crate::sessions::{self, COLUMNS, SessionRow, lite_session, pg_session};
use crate::{Db, DbError, Tx};

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn time(us: Option<i64>) -> Option<DateTime<Utc>> {
    us.and_then(DateTime::from_timestamp_micros)
}

/// One export request and where it stands.
#[derive(Debug, Clone, Serialize)]
pub struct DataExport {
    pub id: String,
    pub company_id: String,
    pub profile_id: String,
    /// `pending`, `ready` or `failed`.
    pub status: String,
    pub blob_ref: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub ready_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl DataExport {
    /// A ready bundle that has not expired yet can be served.
    pub fn servable(&self, now: DateTime<Utc>) -> bool {
        self.status == "ready"
            && self.blob_ref.is_some()
            && self.expires_at.is_some_and(|e| e > now)
    }
}

const EXPORT_COLUMNS: &str =
    "id, company_id, profile_id, status, blob_ref, error, created_at, ready_at, expires_at";

fn pg_export(r: &sqlx::postgres::PgRow) -> Result<DataExport, sqlx::Error> {
    Ok(DataExport {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        profile_id: r.try_get("profile_id")?,
        status: r.try_get("status")?,
        blob_ref: r.try_get("blob_ref")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        ready_at: r.try_get("ready_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

fn lite_export(r: &sqlx::sqlite::SqliteRow) -> Result<DataExport, sqlx::Error> {
    Ok(DataExport {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        profile_id: r.try_get("profile_id")?,
        status: r.try_get("status")?,
        blob_ref: r.try_get("blob_ref")?,
        error: r.try_get("error")?,
        created_at: time(r.try_get("created_at")?).unwrap_or_default(),
        ready_at: time(r.try_get("ready_at")?),
        expires_at: time(r.try_get("expires_at")?),
    })
}

/// The profile's newest export request.
pub async fn latest_export(
    db: &Db,
    company: &str,
    profile: &str,
) -> Result<Option<DataExport>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Profile { company, profile }).await?;
            let sql = format!(
                "SELECT {EXPORT_COLUMNS} FROM data_exports WHERE company_id = $1 AND profile_id = $2
                 ORDER BY created_at DESC, id DESC LIMIT 1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(profile)
                .fetch_optional(&mut *tx)
                .await?;
            row.as_ref().map(pg_export).transpose()?
        }
        Db::Sqlite(lite) => {
            let sql = format!(
                "SELECT {EXPORT_COLUMNS} FROM data_exports WHERE company_id = ? AND profile_id = ?
                 ORDER BY created_at DESC, id DESC LIMIT 1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(profile)
                .fetch_optional(&lite.pool)
                .await?;
            row.as_ref().map(lite_export).transpose()?
        }
    })
}

/// Records a new pending export in the caller's transaction (which also enqueues its job).
pub async fn create_export(
    tx: &mut Tx<'_>,
    id: &str,
    company: &str,
    profile: &str,
) -> Result<(), DbError> {
    match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "INSERT INTO data_exports (id, company_id, profile_id, status) VALUES ($1, $2, $3, 'pending')",
            )
            .bind(id)
            .bind(company)
            .bind(profile)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query(
                "INSERT INTO data_exports (id, company_id, profile_id, status, created_at)
                 VALUES (?, ?, ?, 'pending', ?)",
            )
            .bind(id)
            .bind(company)
            .bind(profile)
            .bind(now_us())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Marks an export ready (its bundle stored under `blob_ref`) or failed. False when the row is
/// gone (the profile was erased meanwhile): the caller then deletes the bundle it wrote.
pub async fn finish_export(
    db: &Db,
    company: &str,
    id: &str,
    outcome: Result<(&str, DateTime<Utc>), &str>,
) -> Result<bool, DbError> {
    let (status, blob_ref, expires_at, error) = match outcome {
        Ok((blob, expires)) => ("ready", Some(blob), Some(expires), None),
        Err(error) => ("failed", None, None, Some(error)),
    };
    let changed = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            let changed = sqlx::query(
                "UPDATE data_exports SET status = $3, blob_ref = $4, expires_at = $5, error = $6,
                        ready_at = now()
                 WHERE company_id = $1 AND id = $2",
            )
            .bind(company)
            .bind(id)
            .bind(status)
            .bind(blob_ref)
            .bind(expires_at)
            .bind(error)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            changed
        }
        Db::Sqlite(lite) => sqlx::query(
            "UPDATE data_exports SET status = ?3, blob_ref = ?4, expires_at = ?5, error = ?6,
                    ready_at = ?7
             WHERE company_id = ?1 AND id = ?2",
        )
        .bind(company)
        .bind(id)
        .bind(status)
        .bind(blob_ref)
        .bind(expires_at.map(|e| e.timestamp_micros()))
        .bind(error)
        .bind(now_us())
        .execute(&lite.pool)
        .await?
        .rows_affected(),
    };
    Ok(changed == 1)
}

/// The profile's sessions, newest first.
async fn profile_sessions(
    db: &Db,
    company: &str,
    profile: &str,
) -> Result<Vec<SessionRow>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Profile { company, profile }).await?;
            let sql = format!(
                "SELECT {COLUMNS} FROM sessions WHERE company_id = $1 AND profile_id = $2
                 ORDER BY created_at DESC, id DESC"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(profile)
                .fetch_all(&mut *tx)
                .await?;
            rows.iter().map(pg_session).collect::<Result<_, _>>()?
        }
        Db::Sqlite(lite) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM sessions WHERE company_id = ? AND profile_id = ?
                 ORDER BY created_at DESC, id DESC"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(profile)
                .fetch_all(&lite.pool)
                .await?;
            rows.iter().map(lite_session).collect::<Result<_, _>>()?
        }
    })
}

/// recipient, template, subject id, status and when it was sent (a time type per database).
type EmailRow<T> = (String, String, String, String, Option<T>);

/// The usage rows and the emails sent, as JSON objects.
async fn profile_records(
    db: &Db,
    company: &str,
    profile: &str,
) -> Result<(Vec<Value>, Vec<Value>), DbError> {
    const USAGE: &str = "SELECT session_id, seconds, recorded_at FROM usage_records
                         WHERE company_id = $1 AND profile_id = $2 ORDER BY recorded_at";
    const EMAILS: &str = "SELECT recipient, template, subject_id, status, sent_at FROM email_log
                          WHERE company_id = $1 AND profile_id = $2 ORDER BY id";
    let usage_row = |session: String, seconds: f64, at: Option<DateTime<Utc>>| json!({"session_id": session, "seconds": seconds, "recorded_at": at});
    let email_row = |to: String, template: String, subject: String, status: String, at| json!({"recipient": to, "template": template, "subject_id": subject, "status": status, "sent_at": at});
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Profile { company, profile }).await?;
            let usage: Vec<(String, f64, DateTime<Utc>)> = sqlx::query_as(USAGE)
                .bind(company)
                .bind(profile)
                .fetch_all(&mut *tx)
                .await?;
            let emails: Vec<EmailRow<DateTime<Utc>>> = sqlx::query_as(EMAILS)
                .bind(company)
                .bind(profile)
                .fetch_all(&mut *tx)
                .await?;
            (
                usage
                    .into_iter()
                    .map(|(s, sec, at)| usage_row(s, sec, Some(at)))
                    .collect(),
                emails
                    .into_iter()
                    .map(|(to, t, s, st, at)| email_row(to, t, s, st, at))
                    .collect(),
            )
        }
        Db::Sqlite(lite) => {
            // SQLite reads `$1`-style parameters by position, like Postgres.
            let usage: Vec<(String, f64, i64)> = sqlx::query_as(USAGE)
                .bind(company)
                .bind(profile)
                .fetch_all(&lite.pool)
                .await?;
            let emails: Vec<EmailRow<i64>> = sqlx::query_as(EMAILS)
                .bind(company)
                .bind(profile)
                .fetch_all(&lite.pool)
                .await?;
            (
                usage
                    .into_iter()
                    .map(|(s, sec, at)| usage_row(s, sec, time(Some(at))))
                    .collect(),
                emails
                    .into_iter()
                    .map(|(to, t, s, st, at)| email_row(to, t, s, st, time(at)))
                    .collect(),
            )
        }
    })
}

/// Everything voxline holds about the profile, as one JSON document: the profile, its sessions
/// with their transcripts and feedback, its usage, the emails sent to it and its email
/// preferences. Audio files are listed (type, whether still stored), not embedded.
pub async fn bundle(db: &Db, company: &str, profile: &str) -> Result<Value, DbError> {
    let me = crate::profiles::get_in(db, company, profile).await?;
    let mut out = Vec::new();
    for s in profile_sessions(db, company, profile).await? {
        let transcript = sessions::segments(db, company, &s.id).await?;
        let feedback = sessions::feedback(db, company, &s.id).await?;
        out.push(json!({
            "id": s.id, "title": s.title, "kind": s.kind, "status": s.status, "source": s.source,
            "external_id": s.external_id, "created_at": s.created_at, "updated_at": s.updated_at,
            "duration_seconds": s.duration_seconds, "error": s.error,
            "audio": s.audio_type.as_ref().map(|t| json!({"type": t, "stored": s.audio_ref.is_some()})),
            "transcript": transcript, "feedback": feedback,
        }));
    }
    let (usage, emails) = profile_records(db, company, profile).await?;
    let preferences = crate::notifications::preferences(db, company, profile).await?;
    let preferences: serde_json::Map<String, Value> = preferences
        .into_iter()
        .map(|(kind, on)| (kind.as_str().to_string(), Value::Bool(on)))
        .collect();
    Ok(json!({
        "format": "voxline-export/1",
        "generated_at": Utc::now(),
        "profile": me.map(|p| json!({"id": p.id, "company_id": p.company_id, "email": p.email, "role": p.role}))
            .unwrap_or_else(|| json!({"id": profile, "company_id": company})),
        "sessions": out,
        "usage": usage,
        "emails": emails,
        "notification_preferences": preferences,
    }))
}

/// What erasing a profile removed; `blobs` are the stored files to delete once it commits.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Erasure {
    pub sessions: u64,
    pub session_ids: Vec<String>,
    pub exports: u64,
    pub preferences: u64,
    pub emails: u64,
    /// Role-plays issued to the profile (their titles are the profile's words).
    pub roleplays: u64,
    pub profile: bool,
    #[serde(skip)]
    pub blobs: Vec<String>,
}

/// Erases the profile's data in the caller's transaction (see the module's notes for what is
/// kept). Transcripts and feedback go with their sessions (foreign keys cascade).
pub async fn erase_profile(
    tx: &mut Tx<'_>,
    company: &str,
    profile: &str,
) -> Result<Erasure, DbError> {
    let mut erased = Erasure::default();
    // The rows that name files, before they go.
    let refs: Vec<(String, Option<String>)> = fetch_pairs(
        tx,
        "SELECT id, audio_ref FROM sessions WHERE company_id = $1 AND profile_id = $2",
        company,
        profile,
    )
    .await?;
    let exports: Vec<(String, Option<String>)> = fetch_pairs(
        tx,
        "SELECT id, blob_ref FROM data_exports WHERE company_id = $1 AND profile_id = $2",
        company,
        profile,
    )
    .await?;
    for (id, blob) in refs {
        erased.session_ids.push(id);
        erased.blobs.extend(blob);
    }
    erased
        .blobs
        .extend(exports.into_iter().filter_map(|(_, b)| b));
    erased.sessions = delete_where(tx, "sessions", company, profile).await?;
    erased.exports = delete_where(tx, "data_exports", company, profile).await?;
    erased.preferences = delete_where(tx, "notification_preferences", company, profile).await?;
    erased.emails = delete_where(tx, "email_log", company, profile).await?;
    erased.roleplays = delete_where(tx, "roleplays", company, profile).await?;
    delete_where(tx, "idempotency_keys", company, profile).await?;
    erased.profile = match tx {
        Tx::Postgres(tx) => sqlx::query("DELETE FROM profiles WHERE company_id = $1 AND id = $2")
            .bind(company)
            .bind(profile)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        Tx::Sqlite { tx, .. } => {
            sqlx::query("DELETE FROM profiles WHERE company_id = ? AND id = ?")
                .bind(company)
                .bind(profile)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        }
    } == 1;
    Ok(erased)
}

/// `(text, optional text)` rows of a query bound to company and profile (`$1`, `$2`: SQLite
/// reads them by position too).
async fn fetch_pairs(
    tx: &mut Tx<'_>,
    sql: &'static str,
    company: &str,
    profile: &str,
) -> Result<Vec<(String, Option<String>)>, DbError> {
    Ok(match tx {
        Tx::Postgres(tx) => {
            sqlx::query_as(sql)
                .bind(company)
                .bind(profile)
                .fetch_all(&mut **tx)
                .await?
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query_as(sql)
                .bind(company)
                .bind(profile)
                .fetch_all(&mut **tx)
                .await?
        }
    })
}

/// Deletes a table's rows of one profile. `table` is one of this module's constants.
async fn delete_where(
    tx: &mut Tx<'_>,
    table: &'static str,
    company: &str,
    profile: &str,
) -> Result<u64, DbError> {
    let sql = format!("DELETE FROM {table} WHERE company_id = $1 AND profile_id = $2");
    Ok(match tx {
        Tx::Postgres(tx) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(company)
            .bind(profile)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        Tx::Sqlite { tx, .. } => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(company)
            .bind(profile)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
    })
}

/// Deletes one session (its transcript and feedback cascade) in the caller's transaction and
/// returns it, or None when the company has no such session.
pub async fn delete_session(
    tx: &mut Tx<'_>,
    company: &str,
    id: &str,
) -> Result<Option<SessionRow>, DbError> {
    let sql = format!("DELETE FROM sessions WHERE company_id = $1 AND id = $2 RETURNING {COLUMNS}");
    Ok(match tx {
        Tx::Postgres(tx) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(company)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .as_ref()
            .map(pg_session)
            .transpose()?,
        Tx::Sqlite { tx, .. } => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(company)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .as_ref()
            .map(lite_session)
            .transpose()?,
    })
}

/// A stored file past its retention, with the row that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredBlob {
    pub company_id: String,
    /// The session (audio) or export (bundle) id.
    pub owner_id: String,
    pub blob_ref: String,
}

/// Audio of sessions created before `before`, oldest first, at most `limit` (platform work:
/// the sweep runs for every company).
pub async fn expired_audio(
    db: &Db,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ExpiredBlob>, DbError> {
    let rows: Vec<(String, String, String)> = match db {
        Db::Postgres(pg) => {
            // Platform: retention sweeps every company's audio.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            sqlx::query_as(
                "SELECT company_id, id, audio_ref FROM sessions
                 WHERE audio_ref IS NOT NULL AND created_at < $1 ORDER BY created_at LIMIT $2",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_as(
                "SELECT company_id, id, audio_ref FROM sessions
                 WHERE audio_ref IS NOT NULL AND created_at < ? ORDER BY created_at LIMIT ?",
            )
            .bind(before.timestamp_micros())
            .bind(limit)
            .fetch_all(&lite.pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(company_id, owner_id, blob_ref)| ExpiredBlob {
            company_id,
            owner_id,
            blob_ref,
        })
        .collect())
}

/// Forgets a session's audio once its file is deleted (the session, transcript and feedback
/// stay). Only clears the reference it was given, so a concurrent change is not undone.
pub async fn clear_audio(db: &Db, expired: &ExpiredBlob) -> Result<(), DbError> {
    const SQL: &str = "UPDATE sessions SET audio_ref = NULL
                       WHERE company_id = $1 AND id = $2 AND audio_ref = $3";
    match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(&expired.company_id)).await?;
            sqlx::query(SQL)
                .bind(&expired.company_id)
                .bind(&expired.owner_id)
                .bind(&expired.blob_ref)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Db::Sqlite(lite) => {
            sqlx::query(SQL)
                .bind(&expired.company_id)
                .bind(&expired.owner_id)
                .bind(&expired.blob_ref)
                .execute(&lite.pool)
                .await?;
        }
    }
    Ok(())
}

/// Export bundles past their expiry, at most `limit` (platform work, like the audio sweep).
pub async fn expired_exports(
    db: &Db,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ExpiredBlob>, DbError> {
    let rows: Vec<(String, String, String)> = match db {
        Db::Postgres(pg) => {
            // Platform: retention sweeps every company's exports.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            sqlx::query_as(
                "SELECT company_id, id, blob_ref FROM data_exports
                 WHERE blob_ref IS NOT NULL AND expires_at < $1 ORDER BY expires_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_as(
                "SELECT company_id, id, blob_ref FROM data_exports
                 WHERE blob_ref IS NOT NULL AND expires_at < ? ORDER BY expires_at LIMIT ?",
            )
            .bind(now.timestamp_micros())
            .bind(limit)
            .fetch_all(&lite.pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(company_id, owner_id, blob_ref)| ExpiredBlob {
            company_id,
            owner_id,
            blob_ref,
        })
        .collect())
}

/// Deletes an expired export's row once its file is gone.
pub async fn forget_export(db: &Db, expired: &ExpiredBlob) -> Result<(), DbError> {
    const SQL: &str = "DELETE FROM data_exports WHERE company_id = $1 AND id = $2";
    match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(&expired.company_id)).await?;
            sqlx::query(SQL)
                .bind(&expired.company_id)
                .bind(&expired.owner_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Db::Sqlite(lite) => {
            sqlx::query(SQL)
                .bind(&expired.company_id)
                .bind(&expired.owner_id)
                .execute(&lite.pool)
                .await?;
        }
    }
    Ok(())
}
