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
//!
//! [`GdprStore`] is the repository and [`GdprTxStore`] its work inside a caller's transaction,
//! each implemented for Postgres (`postgres.rs`) and SQLite (`sqlite.rs`); the free functions
//! here are the stable entry points, and the bundle and the erasure are written once over them.

/// [`GdprStore`] for one database handle (`$handle`, of `$dialect`), invoked in `postgres.rs`
/// and `sqlite.rs`: the same statements on both databases, each run by
/// [`Own`](crate::portable::Own) in the scope it names (which only Postgres enforces).
macro_rules! gdpr_store {
    ($handle:ty, $dialect:ty) => {
        #[async_trait::async_trait]
        impl super::GdprStore for $handle {
            async fn latest_export(
                &self,
                company: &str,
                profile: &str,
            ) -> Result<Option<super::DataExport>, $crate::DbError> {
                let scope = $crate::db::Scope::Profile { company, profile };
                let mut conn = self.own(scope).await?;
                let sql = sqlx::AssertSqlSafe(super::latest_export_sql());
                let params = [company.into(), profile.into()];
                let row = $crate::portable::row(&mut *conn, sql, &params).await?;
                Ok(row.as_ref().map(super::export_row).transpose()?)
            }

            async fn finish_export(
                &self,
                company: &str,
                id: &str,
                outcome: Result<(&str, chrono::DateTime<chrono::Utc>), &str>,
            ) -> Result<bool, $crate::DbError> {
                use $crate::portable::Dialect;
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let sql = sqlx::AssertSqlSafe(super::finish_export_sql(&<$dialect>::now(7)));
                let params = super::finish_export_params(company, id, outcome);
                let changed = $crate::portable::execute(&mut *conn, sql, &params).await?;
                conn.commit().await?;
                Ok(changed == 1)
            }

            async fn profile_sessions(
                &self,
                company: &str,
                profile: &str,
            ) -> Result<Vec<$crate::sessions::SessionRow>, $crate::DbError> {
                let scope = $crate::db::Scope::Profile { company, profile };
                let mut conn = self.own(scope).await?;
                let sql = sqlx::AssertSqlSafe(super::profile_sessions_sql());
                let params = [company.into(), profile.into()];
                let rows = $crate::portable::rows(&mut *conn, sql, &params).await?;
                Ok(rows
                    .iter()
                    .map($crate::sessions::session_row)
                    .collect::<Result<_, _>>()?)
            }

            async fn profile_records(
                &self,
                company: &str,
                profile: &str,
            ) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>), $crate::DbError> {
                let scope = $crate::db::Scope::Profile { company, profile };
                let mut conn = self.own(scope).await?;
                let params = [company.into(), profile.into()];
                let usage =
                    $crate::portable::rows(&mut *conn, super::USAGE_RECORDS, &params).await?;
                let emails =
                    $crate::portable::rows(&mut *conn, super::EMAILS_SENT, &params).await?;
                Ok(super::profile_records(usage, emails)?)
            }

            async fn expired_audio(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> Result<Vec<super::ExpiredBlob>, $crate::DbError> {
                self.expired(super::EXPIRED_AUDIO, before, limit).await
            }

            async fn clear_audio(
                &self,
                expired: &super::ExpiredBlob,
            ) -> Result<(), $crate::DbError> {
                let params = [
                    (&expired.company_id).into(),
                    (&expired.owner_id).into(),
                    (&expired.blob_ref).into(),
                ];
                self.forget(expired, super::CLEAR_AUDIO, &params).await
            }

            async fn expired_exports(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> Result<Vec<super::ExpiredBlob>, $crate::DbError> {
                self.expired(super::EXPIRED_EXPORTS, now, limit).await
            }

            async fn forget_export(
                &self,
                expired: &super::ExpiredBlob,
            ) -> Result<(), $crate::DbError> {
                let params = [(&expired.company_id).into(), (&expired.owner_id).into()];
                self.forget(expired, super::FORGET_EXPORT, &params).await
            }
        }

        impl $handle {
            /// The rows of an `EXPIRED_*` query (bound: the time, the limit), in platform
            /// scope: retention sweeps every company's files.
            async fn expired(
                &self,
                sql: &'static str,
                at: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> Result<Vec<super::ExpiredBlob>, $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Platform).await?;
                let rows =
                    $crate::portable::all(&mut *conn, sql, &[at.into(), limit.into()]).await?;
                Ok(super::expired_blobs(rows))
            }

            /// Runs `sql` (bound: `params`), which forgets an expired file's row, in the
            /// company of that row.
            async fn forget(
                &self,
                expired: &super::ExpiredBlob,
                sql: &'static str,
                params: &[$crate::portable::Param<'_>],
            ) -> Result<(), $crate::DbError> {
                let mut conn = self
                    .own($crate::db::Scope::Company(&expired.company_id))
                    .await?;
                $crate::portable::execute(&mut *conn, sql, params).await?;
                Ok(conn.commit().await?)
            }
        }
    };
}

/// [`GdprTxStore`] for one driver's connection (`$connection`, of `$dialect`), invoked in
/// `postgres.rs` and `sqlite.rs`: the same statements on both databases, but for the time of
/// the write (see [`Dialect`](crate::portable::Dialect)).
macro_rules! gdpr_tx_store {
    ($connection:ty, $dialect:ty) => {
        #[async_trait::async_trait]
        impl $crate::gdpr::GdprTxStore for $connection {
            async fn create_export(
                &mut self,
                id: &str,
                company: &str,
                profile: &str,
            ) -> Result<(), $crate::DbError> {
                let sql = sqlx::AssertSqlSafe($crate::gdpr::create_export_sql(
                    &<$dialect as $crate::portable::Dialect>::now(4),
                ));
                let params = [
                    id.into(),
                    company.into(),
                    profile.into(),
                    $crate::portable::Param::Now,
                ];
                $crate::portable::execute(self, sql, &params).await?;
                Ok(())
            }

            async fn profile_files(
                &mut self,
                sql: &'static str,
                company: &str,
                profile: &str,
            ) -> Result<Vec<(String, Option<String>)>, $crate::DbError> {
                Ok($crate::portable::all(self, sql, &[company.into(), profile.into()]).await?)
            }

            async fn delete_profile_rows(
                &mut self,
                table: &'static str,
                company: &str,
                profile: &str,
            ) -> Result<u64, $crate::DbError> {
                let sql = sqlx::AssertSqlSafe($crate::gdpr::delete_profile_rows_sql(table));
                Ok($crate::portable::execute(self, sql, &[company.into(), profile.into()]).await?)
            }

            async fn delete_profile(
                &mut self,
                company: &str,
                profile: &str,
            ) -> Result<bool, $crate::DbError> {
                let params = [company.into(), profile.into()];
                let sql = $crate::gdpr::DELETE_PROFILE;
                Ok($crate::portable::execute(self, sql, &params).await? == 1)
            }

            async fn delete_session(
                &mut self,
                company: &str,
                id: &str,
            ) -> Result<Option<$crate::sessions::SessionRow>, $crate::DbError> {
                let sql = sqlx::AssertSqlSafe($crate::gdpr::delete_session_sql());
                let row = $crate::portable::row(self, sql, &[company.into(), id.into()]).await?;
                Ok(row
                    .as_ref()
                    .map($crate::sessions::session_row)
                    .transpose()?)
            }
        }
    };
}

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::portable::{Columns, Param};
use crate::sessions::{self, SessionRow};
use crate::{Db, DbError, Tx};

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

/// Exports, a profile's records and the retention sweep's rows, each call on its own.
#[async_trait]
pub trait GdprStore: Send + Sync {
    /// See [`latest_export`].
    async fn latest_export(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<Option<DataExport>, DbError>;

    /// See [`finish_export`].
    async fn finish_export(
        &self,
        company: &str,
        id: &str,
        outcome: Result<(&str, DateTime<Utc>), &str>,
    ) -> Result<bool, DbError>;

    /// The profile's sessions, newest first.
    async fn profile_sessions(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<Vec<SessionRow>, DbError>;

    /// The profile's usage rows and the emails sent to it, as the bundle's JSON objects.
    async fn profile_records(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<(Vec<Value>, Vec<Value>), DbError>;

    /// See [`expired_audio`].
    async fn expired_audio(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError>;

    /// See [`clear_audio`].
    async fn clear_audio(&self, expired: &ExpiredBlob) -> Result<(), DbError>;

    /// See [`expired_exports`].
    async fn expired_exports(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredBlob>, DbError>;

    /// See [`forget_export`].
    async fn forget_export(&self, expired: &ExpiredBlob) -> Result<(), DbError>;
}

/// A profile's data inside a caller's transaction (reached with [`Tx::gdpr`]).
#[async_trait]
pub trait GdprTxStore: Send {
    /// See [`create_export`].
    async fn create_export(
        &mut self,
        id: &str,
        company: &str,
        profile: &str,
    ) -> Result<(), DbError>;

    /// The `(id, file)` rows of one of this module's `*_FILES` queries for the profile.
    async fn profile_files(
        &mut self,
        sql: &'static str,
        company: &str,
        profile: &str,
    ) -> Result<Vec<(String, Option<String>)>, DbError>;

    /// Deletes the profile's rows of `table` (one of [`ERASED_TABLES`]); how many there were.
    async fn delete_profile_rows(
        &mut self,
        table: &'static str,
        company: &str,
        profile: &str,
    ) -> Result<u64, DbError>;

    /// Deletes the profile row itself; whether there was one.
    async fn delete_profile(&mut self, company: &str, profile: &str) -> Result<bool, DbError>;

    /// See [`delete_session`].
    async fn delete_session(
        &mut self,
        company: &str,
        id: &str,
    ) -> Result<Option<SessionRow>, DbError>;
}

/// The profile's newest export request.
pub async fn latest_export(
    db: &Db,
    company: &str,
    profile: &str,
) -> Result<Option<DataExport>, DbError> {
    db.gdpr().latest_export(company, profile).await
}

/// Records a new pending export in the caller's transaction (which also enqueues its job).
pub async fn create_export(
    tx: &mut Tx<'_>,
    id: &str,
    company: &str,
    profile: &str,
) -> Result<(), DbError> {
    tx.gdpr().create_export(id, company, profile).await
}

/// Marks an export ready (its bundle stored under `blob_ref`) or failed. False when the row is
/// gone (the profile was erased meanwhile): the caller then deletes the bundle it wrote.
pub async fn finish_export(
    db: &Db,
    company: &str,
    id: &str,
    outcome: Result<(&str, DateTime<Utc>), &str>,
) -> Result<bool, DbError> {
    db.gdpr().finish_export(company, id, outcome).await
}

/// Everything voxline holds about the profile, as one JSON document: the profile, its sessions
/// with their transcripts and feedback, its usage, the emails sent to it and its email
/// preferences. Audio files are listed (type, whether still stored), not embedded.
pub async fn bundle(db: &Db, company: &str, profile: &str) -> Result<Value, DbError> {
    let me = crate::profiles::get_in(db, company, profile).await?;
    let mut out = Vec::new();
    for s in db.gdpr().profile_sessions(company, profile).await? {
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
    let (usage, emails) = db.gdpr().profile_records(company, profile).await?;
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
    let store = tx.gdpr();
    let mut erased = Erasure::default();
    // The rows that name files, before they go.
    let refs = store.profile_files(SESSION_FILES, company, profile).await?;
    let exports = store.profile_files(EXPORT_FILES, company, profile).await?;
    for (id, blob) in refs {
        erased.session_ids.push(id);
        erased.blobs.extend(blob);
    }
    erased
        .blobs
        .extend(exports.into_iter().filter_map(|(_, b)| b));
    let [
        sessions,
        exports,
        preferences,
        emails,
        roleplays,
        idempotency_keys,
    ] = ERASED_TABLES;
    erased.sessions = store
        .delete_profile_rows(sessions, company, profile)
        .await?;
    erased.exports = store.delete_profile_rows(exports, company, profile).await?;
    erased.preferences = store
        .delete_profile_rows(preferences, company, profile)
        .await?;
    erased.emails = store.delete_profile_rows(emails, company, profile).await?;
    erased.roleplays = store
        .delete_profile_rows(roleplays, company, profile)
        .await?;
    store
        .delete_profile_rows(idempotency_keys, company, profile)
        .await?;
    erased.profile = store.delete_profile(company, profile).await?;
    Ok(erased)
}

/// Deletes one session (its transcript and feedback cascade) in the caller's transaction and
/// returns it, or None when the company has no such session.
pub async fn delete_session(
    tx: &mut Tx<'_>,
    company: &str,
    id: &str,
) -> Result<Option<SessionRow>, DbError> {
    tx.gdpr().delete_session(company, id).await
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
    db.gdpr().expired_audio(before, limit).await
}

/// Forgets a session's audio once its file is deleted (the session, transcript and feedback
/// stay). Only clears the reference it was given, so a concurrent change is not undone.
pub async fn clear_audio(db: &Db, expired: &ExpiredBlob) -> Result<(), DbError> {
    db.gdpr().clear_audio(expired).await
}

/// Export bundles past their expiry, at most `limit` (platform work, like the audio sweep).
pub async fn expired_exports(
    db: &Db,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ExpiredBlob>, DbError> {
    db.gdpr().expired_exports(now, limit).await
}

/// Deletes an expired export's row once its file is gone.
pub async fn forget_export(db: &Db, expired: &ExpiredBlob) -> Result<(), DbError> {
    db.gdpr().forget_export(expired).await
}

// `$n` parameters: SQLite reads them by position too, so these run on both databases (times
// bound as each stores them).
const EXPORT_COLUMNS: &str =
    "id, company_id, profile_id, status, blob_ref, error, created_at, ready_at, expires_at";

/// An export request of the profile, pending, made at `now` (`$4`).
fn create_export_sql(now: &str) -> String {
    format!(
        "INSERT INTO data_exports (id, company_id, profile_id, status, created_at)
         VALUES ($1, $2, $3, 'pending', {now})"
    )
}

/// The export's outcome (`$3`–`$6`: see [`finish_export_params`]), ready at `now` (`$7`).
fn finish_export_sql(now: &str) -> String {
    format!(
        "UPDATE data_exports SET status = $3, blob_ref = $4, expires_at = $5, error = $6,
                ready_at = {now}
         WHERE company_id = $1 AND id = $2"
    )
}

/// The parameters of [`finish_export_sql`].
fn finish_export_params<'a>(
    company: &'a str,
    id: &'a str,
    outcome: Result<(&'a str, DateTime<Utc>), &'a str>,
) -> [Param<'a>; 7] {
    let (status, blob_ref, expires_at, error) = match outcome {
        Ok((blob, expires)) => ("ready", Some(blob), Some(expires), None),
        Err(error) => ("failed", None, None, Some(error)),
    };
    [
        company.into(),
        id.into(),
        status.into(),
        blob_ref.into(),
        expires_at.into(),
        error.into(),
        Param::Now,
    ]
}

/// One export request, from either database.
fn export_row(r: &impl Columns) -> Result<DataExport, sqlx::Error> {
    Ok(DataExport {
        id: r.get("id")?,
        company_id: r.get("company_id")?,
        profile_id: r.get("profile_id")?,
        status: r.get("status")?,
        blob_ref: r.get("blob_ref")?,
        error: r.get("error")?,
        created_at: r.time("created_at")?,
        ready_at: r.opt_time("ready_at")?,
        expires_at: r.opt_time("expires_at")?,
    })
}

fn latest_export_sql() -> String {
    format!(
        "SELECT {EXPORT_COLUMNS} FROM data_exports WHERE company_id = $1 AND profile_id = $2
         ORDER BY created_at DESC, id DESC LIMIT 1"
    )
}

fn profile_sessions_sql() -> String {
    format!(
        "SELECT {} FROM sessions WHERE company_id = $1 AND profile_id = $2
         ORDER BY created_at DESC, id DESC",
        sessions::COLUMNS
    )
}

fn delete_session_sql() -> String {
    format!(
        "DELETE FROM sessions WHERE company_id = $1 AND id = $2 RETURNING {}",
        sessions::COLUMNS
    )
}

const USAGE_RECORDS: &str = "SELECT session_id, seconds, recorded_at FROM usage_records
     WHERE company_id = $1 AND profile_id = $2 ORDER BY recorded_at";
const EMAILS_SENT: &str = "SELECT recipient, template, subject_id, status, sent_at FROM email_log
     WHERE company_id = $1 AND profile_id = $2 ORDER BY id";

/// The files the profile's sessions (audio) and exports (bundles) name, by row id.
const SESSION_FILES: &str =
    "SELECT id, audio_ref FROM sessions WHERE company_id = $1 AND profile_id = $2";
const EXPORT_FILES: &str =
    "SELECT id, blob_ref FROM data_exports WHERE company_id = $1 AND profile_id = $2";

/// The tables erasure empties of the profile's rows, in this order (sessions first: their
/// transcripts and feedback cascade).
pub const ERASED_TABLES: [&str; 6] = [
    "sessions",
    "data_exports",
    "notification_preferences",
    "email_log",
    "roleplays",
    "idempotency_keys",
];

fn delete_profile_rows_sql(table: &'static str) -> String {
    format!("DELETE FROM {table} WHERE company_id = $1 AND profile_id = $2")
}

const DELETE_PROFILE: &str = "DELETE FROM profiles WHERE company_id = $1 AND id = $2";

const EXPIRED_AUDIO: &str = "SELECT company_id, id, audio_ref FROM sessions
     WHERE audio_ref IS NOT NULL AND created_at < $1 ORDER BY created_at LIMIT $2";
const CLEAR_AUDIO: &str = "UPDATE sessions SET audio_ref = NULL
     WHERE company_id = $1 AND id = $2 AND audio_ref = $3";
const EXPIRED_EXPORTS: &str = "SELECT company_id, id, blob_ref FROM data_exports
     WHERE blob_ref IS NOT NULL AND expires_at < $1 ORDER BY expires_at LIMIT $2";
const FORGET_EXPORT: &str = "DELETE FROM data_exports WHERE company_id = $1 AND id = $2";

/// One row of [`USAGE_RECORDS`] as the bundle shows it.
fn usage_json(r: &impl Columns) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "session_id": r.get::<String>("session_id")?,
        "seconds": r.get::<f64>("seconds")?,
        "recorded_at": r.time("recorded_at")?,
    }))
}

/// One row of [`EMAILS_SENT`] as the bundle shows it.
fn email_json(r: &impl Columns) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "recipient": r.get::<String>("recipient")?,
        "template": r.get::<String>("template")?,
        "subject_id": r.get::<String>("subject_id")?,
        "status": r.get::<String>("status")?,
        "sent_at": r.opt_time("sent_at")?,
    }))
}

/// The profile's usage rows and emails (see [`GdprStore::profile_records`]), from the rows of
/// [`USAGE_RECORDS`] and [`EMAILS_SENT`].
fn profile_records<R: Columns>(
    usage: Vec<R>,
    emails: Vec<R>,
) -> Result<(Vec<Value>, Vec<Value>), sqlx::Error> {
    Ok((
        usage.iter().map(usage_json).collect::<Result<_, _>>()?,
        emails.iter().map(email_json).collect::<Result<_, _>>()?,
    ))
}

/// Rows of [`EXPIRED_AUDIO`] or [`EXPIRED_EXPORTS`] as the sweep's blobs.
fn expired_blobs(rows: Vec<(String, String, String)>) -> Vec<ExpiredBlob> {
    rows.into_iter()
        .map(|(company_id, owner_id, blob_ref)| ExpiredBlob {
            company_id,
            owner_id,
            blob_ref,
        })
        .collect()
}
