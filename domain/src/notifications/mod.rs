//! Email notifications' data: the kinds voxline sends, per-profile preferences, the
//! suppression list and the send log that makes each email go out at most once.
//!
//! [`NotificationStore`] is the repository, implemented for Postgres (`postgres.rs`) and
//! SQLite (`sqlite.rs`); the free functions here are the stable entry points and delegate to it.

/// [`NotificationStore`] for one database handle (`$handle`, of `$dialect`), invoked in
/// `postgres.rs` and `sqlite.rs`: the same statements on both databases, each run by
/// [`Own`](crate::portable::Own) in the scope it names, but for the time of the write (see
/// [`Dialect`](crate::portable::Dialect)) and `$ten_minutes_ago`, that time less ten minutes
/// as the database says it (the time of a claim is `$10`).
macro_rules! notification_store {
    ($handle:ty, $dialect:ty, ten_minutes_ago = $ten_minutes_ago:expr) => {
        #[async_trait::async_trait]
        impl super::NotificationStore for $handle {
            async fn preferences(
                &self,
                company: &str,
                profile: &str,
            ) -> Result<std::collections::BTreeMap<super::EmailKind, bool>, $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let params = [company.into(), profile.into()];
                let sql = super::SELECT_PREFERENCES;
                let rows = $crate::portable::all(&mut *conn, sql, &params).await?;
                Ok(super::with_defaults(rows))
            }

            async fn set_preferences(
                &self,
                company: &str,
                profile: &str,
                changes: &std::collections::BTreeMap<super::EmailKind, bool>,
            ) -> Result<(), $crate::DbError> {
                use $crate::portable::Dialect;
                let mut conn = self.own_atomic($crate::db::Scope::Company(company)).await?;
                for (kind, enabled) in changes {
                    let params = [
                        company.into(),
                        profile.into(),
                        kind.as_str().into(),
                        (*enabled).into(),
                        $crate::portable::Param::Now,
                    ];
                    let sql = sqlx::AssertSqlSafe(super::set_preference_sql(&<$dialect>::now(5)));
                    $crate::portable::execute(&mut *conn, sql, &params).await?;
                }
                Ok(conn.commit().await?)
            }

            // Here and in `suppress`, on the pool: the suppression list is no tenant's (no
            // row-level security), so there is no scope to set.
            async fn is_suppressed(
                &self,
                address: &str,
            ) -> Result<Option<String>, $crate::DbError> {
                let address = super::normalized(address);
                let sql = super::SELECT_SUPPRESSION;
                Ok($crate::portable::scalar(&self.pool, sql, &[(&address).into()]).await?)
            }

            async fn suppress(&self, address: &str, reason: &str) -> Result<(), $crate::DbError> {
                use $crate::portable::Dialect;
                let address = super::normalized(address);
                let sql = sqlx::AssertSqlSafe(super::suppress_sql(&<$dialect>::now(3)));
                let params = [
                    (&address).into(),
                    reason.into(),
                    $crate::portable::Param::Now,
                ];
                $crate::portable::execute(&self.pool, sql, &params).await?;
                Ok(())
            }

            async fn claim_send(
                &self,
                email: &super::EmailRecord<'_>,
                holder: super::SendHolder,
            ) -> Result<Result<(), super::LoggedEmail>, $crate::DbError> {
                use $crate::portable::Dialect;
                let mut conn = self.own(email.scope()).await?;
                let sql = super::claim_send_sql(&<$dialect>::now(10), $ten_minutes_ago);
                let params = super::claim_send_params(email, holder);
                let claimed: Option<i64> =
                    $crate::portable::scalar(&mut *conn, sqlx::AssertSqlSafe(sql), &params).await?;
                conn.commit().await?;
                if claimed.is_some() {
                    return Ok(Ok(()));
                }
                let logged = self.logged(email.scope(), email.dedupe_key).await?;
                Ok(Err(super::not_claimed(logged)))
            }

            async fn logged(
                &self,
                scope: $crate::db::Scope<'_>,
                dedupe_key: &str,
            ) -> Result<Option<super::LoggedEmail>, $crate::DbError> {
                let mut conn = self.own(scope).await?;
                let params = [dedupe_key.into()];
                let sql = super::SELECT_LOGGED;
                let row = $crate::portable::optional(&mut *conn, sql, &params).await?;
                Ok(row.map(super::logged_email))
            }

            async fn finish(
                &self,
                email: &super::EmailRecord<'_>,
                status: &str,
                detail: Option<&str>,
            ) -> Result<(), $crate::DbError> {
                use $crate::portable::Dialect;
                let mut conn = self.own(email.scope()).await?;
                let sql = sqlx::AssertSqlSafe(super::finish_sql(&<$dialect>::now(4)));
                let params = [
                    email.dedupe_key.into(),
                    status.into(),
                    detail.into(),
                    $crate::portable::Param::Now,
                ];
                $crate::portable::execute(&mut *conn, sql, &params).await?;
                Ok(conn.commit().await?)
            }
        }
    };
}

mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::db::Scope;
use crate::portable::Param;
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

/// Email preferences, the suppression list and the send log.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Every kind with whether this profile receives it (absent = yes).
    async fn preferences(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<BTreeMap<EmailKind, bool>, DbError>;

    /// Stores the given opt-ins/outs in one transaction.
    async fn set_preferences(
        &self,
        company: &str,
        profile: &str,
        changes: &BTreeMap<EmailKind, bool>,
    ) -> Result<(), DbError>;

    /// Why the address is suppressed, if it is (addresses compare case-insensitively).
    async fn is_suppressed(&self, address: &str) -> Result<Option<String>, DbError>;

    /// Adds the address to the suppression list (the first reason stays).
    async fn suppress(&self, address: &str, reason: &str) -> Result<(), DbError>;

    /// See [`claim_send`].
    async fn claim_send(
        &self,
        email: &EmailRecord<'_>,
        holder: SendHolder,
    ) -> Result<Result<(), LoggedEmail>, DbError>;

    /// The log's entry for a dedupe key, as `scope` may see it.
    async fn logged(
        &self,
        scope: Scope<'_>,
        dedupe_key: &str,
    ) -> Result<Option<LoggedEmail>, DbError>;

    /// See [`finish`].
    async fn finish(
        &self,
        email: &EmailRecord<'_>,
        status: &str,
        detail: Option<&str>,
    ) -> Result<(), DbError>;
}

/// Every kind with whether this profile receives it (absent = yes).
pub async fn preferences(
    db: &Db,
    company: &str,
    profile: &str,
) -> Result<BTreeMap<EmailKind, bool>, DbError> {
    db.notifications().preferences(company, profile).await
}

/// Stores the given opt-ins/outs (callers have refused mandatory kinds already).
pub async fn set_preferences(
    db: &Db,
    company: &str,
    profile: &str,
    changes: &BTreeMap<EmailKind, bool>,
) -> Result<(), DbError> {
    db.notifications()
        .set_preferences(company, profile, changes)
        .await
}

pub async fn is_suppressed(db: &Db, address: &str) -> Result<Option<String>, DbError> {
    db.notifications().is_suppressed(address).await
}

pub async fn suppress(db: &Db, address: &str, reason: &str) -> Result<(), DbError> {
    db.notifications().suppress(address, reason).await
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
    db.notifications().claim_send(email, holder).await
}

/// The log's entry for a dedupe key, whichever company it belongs to. Platform scope: the key
/// alone names no company, and this lookup serves operators and checks, not a tenant's request
/// (the worker reads its own email's entry within that email's scope).
pub async fn logged(db: &Db, dedupe_key: &str) -> Result<Option<LoggedEmail>, DbError> {
    db.notifications().logged(Scope::Platform, dedupe_key).await
}

/// Records the outcome of a claimed send: `sent`, `failed` (may be claimed again) or a
/// `suppressed_*` status (no send was attempted).
pub async fn finish(
    db: &Db,
    email: &EmailRecord<'_>,
    status: &str,
    detail: Option<&str>,
) -> Result<(), DbError> {
    db.notifications().finish(email, status, detail).await
}

// `$n` parameters: SQLite reads them by position too, so these run on both databases.
const SELECT_PREFERENCES: &str =
    "SELECT kind, enabled FROM notification_preferences WHERE company_id = $1 AND profile_id = $2";
const SELECT_SUPPRESSION: &str = "SELECT reason FROM email_suppressions WHERE address = $1";
const SELECT_LOGGED: &str = "SELECT status, detail FROM email_log WHERE dedupe_key = $1";

/// One preference (`$3` the kind, `$4` whether it is on) of a profile, changed at `now` (`$5`).
fn set_preference_sql(now: &str) -> String {
    format!(
        "INSERT INTO notification_preferences (company_id, profile_id, kind, enabled, updated_at)
         VALUES ($1, $2, $3, $4, {now})
         ON CONFLICT (company_id, profile_id, kind)
         DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at"
    )
}

/// An address no email goes to any more, unless it is on the list already, from `now` (`$3`).
fn suppress_sql(now: &str) -> String {
    format!(
        "INSERT INTO email_suppressions (address, reason, created_at) VALUES ($1, $2, {now})
         ON CONFLICT DO NOTHING"
    )
}

/// The claim of [`claim_send`] (see [`claim_send_params`]); `now` is the time of the claim
/// (`$10`) and `ten_minutes_ago` that time less ten minutes, each as the database says it.
fn claim_send_sql(now: &str, ten_minutes_ago: &str) -> String {
    format!(
        "INSERT INTO email_log (dedupe_key, company_id, profile_id, recipient, template,
                                subject_id, message_id, status, updated_at,
                                claim_job, claim_lease)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'sending', {now}, $8, $9)
         ON CONFLICT (dedupe_key) DO UPDATE SET status = 'sending', updated_at = {now},
             claim_job = excluded.claim_job, claim_lease = excluded.claim_lease
         WHERE email_log.status = 'failed'
            OR (email_log.status = 'sending' AND (
                (email_log.claim_job IS NULL AND email_log.updated_at < {ten_minutes_ago})
                OR (email_log.claim_job IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM jobs WHERE jobs.id = email_log.claim_job
                      AND jobs.lease = email_log.claim_lease AND jobs.state = 'running'))))
         RETURNING id"
    )
}

/// The parameters of [`claim_send_sql`].
fn claim_send_params<'a>(email: &EmailRecord<'a>, holder: SendHolder) -> [Param<'a>; 10] {
    [
        email.dedupe_key.into(),
        email.company_id.into(),
        email.profile_id.into(),
        email.recipient.into(),
        email.template.as_str().into(),
        email.subject_id.into(),
        email.message_id.into(),
        holder.job.into(),
        holder.lease.into(),
        Param::Now,
    ]
}

/// How a send ended (`$2` the status, `$3` the detail), at `now` (`$4`).
fn finish_sql(now: &str) -> String {
    format!(
        "UPDATE email_log SET status = $2, detail = $3, updated_at = {now},
                sent_at = CASE WHEN $2 = 'sent' THEN {now} END
         WHERE dedupe_key = $1"
    )
}

/// The suppression list's form of an address.
fn normalized(address: &str) -> String {
    address.to_ascii_lowercase()
}

/// Every kind with its stored choice applied (absent = yes); mandatory kinds stay on, and a
/// stored kind this build does not know is passed over.
fn with_defaults(rows: Vec<(String, bool)>) -> BTreeMap<EmailKind, bool> {
    let mut all: BTreeMap<EmailKind, bool> = EmailKind::ALL.iter().map(|k| (*k, true)).collect();
    for (kind, enabled) in rows {
        if let Ok(kind) = kind.parse::<EmailKind>() {
            all.insert(kind, enabled || kind.is_mandatory());
        }
    }
    all
}

/// What [`claim_send`] answers when its statement claimed nothing: the row that holds the
/// claim, or (gone meanwhile) a `sending` one.
fn not_claimed(logged: Option<LoggedEmail>) -> LoggedEmail {
    logged.unwrap_or(LoggedEmail {
        status: "sending".into(),
        detail: None,
    })
}

fn logged_email((status, detail): (String, Option<String>)) -> LoggedEmail {
    LoggedEmail { status, detail }
}
