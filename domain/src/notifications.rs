//! Email notifications' data: the kinds voxline sends, per-profile preferences, the
//! suppression list and the send log that makes each email go out at most once.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::Scope;
use crate::{Db, DbError};

/// Every email voxline sends. Payment problems are transactional: they cannot be turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    FeedbackReady,
    PaymentFailed,
    PaymentActionRequired,
    TrialEnding,
    SubscriptionCancelled,
    DataExportReady,
}

impl EmailKind {
    pub const ALL: [EmailKind; 6] = [
        EmailKind::FeedbackReady,
        EmailKind::PaymentFailed,
        EmailKind::PaymentActionRequired,
        EmailKind::TrialEnding,
        EmailKind::SubscriptionCancelled,
        EmailKind::DataExportReady,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::FeedbackReady => "feedback_ready",
            EmailKind::PaymentFailed => "payment_failed",
            EmailKind::PaymentActionRequired => "payment_action_required",
            EmailKind::TrialEnding => "trial_ending",
            EmailKind::SubscriptionCancelled => "subscription_cancelled",
            EmailKind::DataExportReady => "data_export_ready",
        }
    }

    /// Mails about failed payments must reach the customer whatever their preferences.
    pub fn is_mandatory(self) -> bool {
        matches!(
            self,
            EmailKind::PaymentFailed | EmailKind::PaymentActionRequired
        )
    }
}

impl fmt::Display for EmailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EmailKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EmailKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown email kind \"{s}\""))
    }
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// Every kind with whether this profile receives it (absent = yes).
pub async fn preferences(
    db: &Db,
    company: &str,
    profile: &str,
) -> Result<BTreeMap<EmailKind, bool>, DbError> {
    let rows: Vec<(String, bool)> = match db {
        Db::Postgres(pg) => {
            // A read: the transaction is dropped (rolled back) when done.
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query_as(
                "SELECT kind, enabled FROM notification_preferences WHERE company_id = $1 AND profile_id = $2",
            )
            .bind(company)
            .bind(profile)
            .fetch_all(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_as(
                "SELECT kind, enabled FROM notification_preferences WHERE company_id = ? AND profile_id = ?",
            )
            .bind(company)
            .bind(profile)
            .fetch_all(&lite.pool)
            .await?
        }
    };
    let mut all: BTreeMap<EmailKind, bool> = EmailKind::ALL.iter().map(|k| (*k, true)).collect();
    for (kind, enabled) in rows {
        if let Ok(kind) = kind.parse::<EmailKind>() {
            all.insert(kind, enabled || kind.is_mandatory());
        }
    }
    Ok(all)
}

/// Stores the given opt-ins/outs (callers have refused mandatory kinds already).
pub async fn set_preferences(
    db: &Db,
    company: &str,
    profile: &str,
    changes: &BTreeMap<EmailKind, bool>,
) -> Result<(), DbError> {
    match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            for (kind, enabled) in changes {
                sqlx::query(
                    "INSERT INTO notification_preferences (company_id, profile_id, kind, enabled)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (company_id, profile_id, kind)
                     DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = now()",
                )
                .bind(company)
                .bind(profile)
                .bind(kind.as_str())
                .bind(enabled)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Db::Sqlite(lite) => {
            let mut tx = lite.pool.begin_with("BEGIN IMMEDIATE").await?;
            for (kind, enabled) in changes {
                sqlx::query(
                    "INSERT INTO notification_preferences (company_id, profile_id, kind, enabled, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (company_id, profile_id, kind)
                     DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
                )
                .bind(company)
                .bind(profile)
                .bind(kind.as_str())
                .bind(enabled)
                .bind(now_us())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

pub async fn is_suppressed(db: &Db, address: &str) -> Result<Option<String>, DbError> {
    let address = address.to_ascii_lowercase();
    Ok(match db {
        Db::Postgres(pg) => {
            sqlx::query_scalar("SELECT reason FROM email_suppressions WHERE address = $1")
                .bind(address)
                .fetch_optional(&pg.pool)
                .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_scalar("SELECT reason FROM email_suppressions WHERE address = ?")
                .bind(address)
                .fetch_optional(&lite.pool)
                .await?
        }
    })
}

pub async fn suppress(db: &Db, address: &str, reason: &str) -> Result<(), DbError> {
    let address = address.to_ascii_lowercase();
    match db {
        Db::Postgres(pg) => {
            sqlx::query("INSERT INTO email_suppressions (address, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(address)
                .bind(reason)
                .execute(&pg.pool)
                .await?;
        }
        Db::Sqlite(lite) => {
            sqlx::query(
                "INSERT INTO email_suppressions (address, reason, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(address)
            .bind(reason)
            .bind(now_us())
            .execute(&lite.pool)
            .await?;
        }
    }
    Ok(())
}

/// One email as the log knows it.
#[derive(Debug, Clone)]
pub struct EmailRecord<'a> {
    pub dedupe_key: &'a str,
    pub company_id: Option<&'a str>,
    pub profile_id: Option<&'a str>,
    pub recipient: &'a str,
    pub template: EmailKind,
    pub subject_id: &'a str,
    pub message_id: &'a str,
}

impl EmailRecord<'_> {
    /// Whose row the log entry is (Postgres row-level security): the email's company, or the
    /// platform's for an email that names no company, since such a row (company_id NULL)
    /// belongs to no tenant and only platform scope can write or read it.
    pub fn scope(&self) -> Scope<'_> {
        match self.company_id {
            Some(company) => Scope::Company(company),
            None => Scope::Platform,
        }
    }
}

/// The log's status for a dedupe key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEmail {
    pub status: String,
    pub detail: Option<String>,
}

/// The job attempt that claims an email: its job id and lease (fencing token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendHolder {
    pub job: i64,
    pub lease: i64,
}

/// Claims the right to send for `holder`: inserts a `sending` row, or takes over a `failed`
/// one, or a `sending` one whose holder's lease is gone (its job is no longer running under
/// that lease: the attempt crashed, timed out or was rescued), or one left behind more than ten
/// minutes ago by a holder that recorded no lease. `Err(row)` means another live attempt holds
/// it, or it is finished; the row's status shows which.
pub async fn claim_send(
    db: &Db,
    email: &EmailRecord<'_>,
    holder: SendHolder,
) -> Result<Result<(), LoggedEmail>, DbError> {
    let claimed: Option<i64> = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(email.scope()).await?;
            let id = sqlx::query_scalar(
                "INSERT INTO email_log (dedupe_key, company_id, profile_id, recipient, template,
                                        subject_id, message_id, status,
                                        claim_job, claim_lease)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'sending', $8, $9)
                 ON CONFLICT (dedupe_key) DO UPDATE SET status = 'sending', updated_at = now(),
                     claim_job = EXCLUDED.claim_job, claim_lease = EXCLUDED.claim_lease
                 WHERE email_log.status = 'failed'
                    OR (email_log.status = 'sending' AND (
                        (email_log.claim_job IS NULL
                         AND email_log.updated_at < now() - interval '10 minutes')
                        OR (email_log.claim_job IS NOT NULL AND NOT EXISTS (
                            SELECT 1 FROM jobs WHERE jobs.id = email_log.claim_job
                              AND jobs.lease = email_log.claim_lease AND jobs.state = 'running'))))
                 RETURNING id",
            )
            .bind(email.dedupe_key)
            .bind(email.company_id)
            .bind(email.profile_id)
            .bind(email.recipient)
            .bind(email.template.as_str())
            .bind(email.subject_id)
            .bind(email.message_id)
            .bind(holder.job)
            .bind(holder.lease)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            id
        }
        Db::Sqlite(lite) => {
            let now = now_us();
            sqlx::query_scalar(
                "INSERT INTO email_log (dedupe_key, company_id, profile_id, recipient, template,
                                        subject_id, message_id, status, updated_at,
                                        claim_job, claim_lease)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'sending', ?8, ?9, ?10)
                 ON CONFLICT (dedupe_key) DO UPDATE SET status = 'sending', updated_at = ?8,
                     claim_job = excluded.claim_job, claim_lease = excluded.claim_lease
                 WHERE email_log.status = 'failed'
                    OR (email_log.status = 'sending' AND (
                        (email_log.claim_job IS NULL AND email_log.updated_at < ?8 - 600000000)
                        OR (email_log.claim_job IS NOT NULL AND NOT EXISTS (
                            SELECT 1 FROM jobs WHERE jobs.id = email_log.claim_job
                              AND jobs.lease = email_log.claim_lease AND jobs.state = 'running'))))
                 RETURNING id",
            )
            .bind(email.dedupe_key)
            .bind(email.company_id)
            .bind(email.profile_id)
            .bind(email.recipient)
            .bind(email.template.as_str())
            .bind(email.subject_id)
            .bind(email.message_id)
            .bind(now)
            .bind(holder.job)
            .bind(holder.lease)
            .fetch_optional(&lite.pool)
            .await?
        }
    };
    if claimed.is_some() {
        return Ok(Ok(()));
    }
    Ok(Err(logged_in(db, email.scope(), email.dedupe_key)
        .await?
        .unwrap_or(LoggedEmail {
            status: "sending".into(),
            detail: None,
        })))
}

/// The log's entry for a dedupe key, whichever company it belongs to. Platform scope: the key
/// alone names no company, and this lookup serves operators and checks, not a tenant's request
/// (the worker reads its own email's entry within that email's scope).
pub async fn logged(db: &Db, dedupe_key: &str) -> Result<Option<LoggedEmail>, DbError> {
    logged_in(db, Scope::Platform, dedupe_key).await
}

async fn logged_in(
    db: &Db,
    scope: Scope<'_>,
    dedupe_key: &str,
) -> Result<Option<LoggedEmail>, DbError> {
    let row = match db {
        Db::Postgres(pg) => {
            // A read: the transaction is dropped (rolled back) when done.
            let mut tx = pg.begin_scoped(scope).await?;
            sqlx::query("SELECT status, detail FROM email_log WHERE dedupe_key = $1")
                .bind(dedupe_key)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| {
                    (
                        r.try_get::<String, _>("status"),
                        r.try_get::<Option<String>, _>("detail"),
                    )
                })
        }
        Db::Sqlite(lite) => {
            sqlx::query("SELECT status, detail FROM email_log WHERE dedupe_key = ?")
                .bind(dedupe_key)
                .fetch_optional(&lite.pool)
                .await?
                .map(|r| {
                    (
                        r.try_get::<String, _>("status"),
                        r.try_get::<Option<String>, _>("detail"),
                    )
                })
        }
    };
    match row {
        None => Ok(None),
        Some((status, detail)) => Ok(Some(LoggedEmail {
            status: status?,
            detail: detail?,
        })),
    }
}

/// Records the outcome of a claimed send: `sent`, `failed` (may be claimed again) or a
/// `suppressed_*` status (no send was attempted).
pub async fn finish(
    db: &Db,
    email: &EmailRecord<'_>,
    status: &str,
    detail: Option<&str>,
) -> Result<(), DbError> {
    match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(email.scope()).await?;
            sqlx::query(
                "UPDATE email_log SET status = $2, detail = $3, updated_at = now(),
                        sent_at = CASE WHEN $2 = 'sent' THEN now() END
                 WHERE dedupe_key = $1",
            )
            .bind(email.dedupe_key)
            .bind(status)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Db::Sqlite(lite) => {
            let now = now_us();
            sqlx::query(
                "UPDATE email_log SET status = ?2, detail = ?3, updated_at = ?4,
                        sent_at = CASE WHEN ?2 = 'sent' THEN ?4 END
                 WHERE dedupe_key = ?1",
            )
            .bind(email.dedupe_key)
            .bind(status)
            .bind(detail)
            .bind(now)
            .execute(&lite.pool)
            .await?;
        }
    }
    Ok(())
}
