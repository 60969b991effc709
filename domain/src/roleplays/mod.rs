//! Role-play conversations voxline issued a ticket for (`POST /api/roleplays`), and their
//! single use: the first post-call webhook that carries the ticket binds it to its
//! conversation; a second conversation with the same ticket is refused.
//!
//! [`RoleplayStore`] stores issued role-plays; [`RoleplayTxStore`] is the work done inside a
//! transaction (a caller's, or the one [`mark_failed`] opens). Both are implemented for
//! Postgres (`postgres.rs`) and SQLite (`sqlite.rs`); the free functions here are the stable
//! entry points and delegate to them.

/// [`RoleplayTxStore`] for one driver's connection (`$connection`, of `$dialect`), invoked in
/// `postgres.rs` and `sqlite.rs`: the same statements on both databases, but for the time of
/// the write (see [`Dialect`](crate::portable::Dialect)).
macro_rules! roleplay_tx_store {
    ($connection:ty, $dialect:ty) => {
        #[async_trait::async_trait]
        impl $crate::roleplays::RoleplayTxStore for $connection {
            async fn use_ticket(
                &mut self,
                company: &str,
                id: &str,
                conversation: &str,
            ) -> Result<$crate::roleplays::TicketUse, $crate::DbError> {
                let sql = sqlx::AssertSqlSafe($crate::roleplays::use_ticket_sql(
                    &<$dialect as $crate::portable::Dialect>::now(4),
                ));
                let params = [
                    company.into(),
                    id.into(),
                    conversation.into(),
                    $crate::portable::Param::Now,
                ];
                let bound = $crate::portable::execute(&mut *self, sql, &params).await?;
                let sql = $crate::roleplays::SELECT_CONVERSATION;
                let current = $crate::portable::scalar(&mut *self, sql, &params[..2]).await?;
                Ok($crate::roleplays::ticket_use(bound, current, conversation))
            }

            async fn fail(
                &mut self,
                company: &str,
                id: &str,
                reason: &str,
            ) -> Result<(), $crate::DbError> {
                let sql = sqlx::AssertSqlSafe($crate::roleplays::fail_sql(
                    &<$dialect as $crate::portable::Dialect>::now(4),
                ));
                let params = [
                    company.into(),
                    id.into(),
                    reason.into(),
                    $crate::portable::Param::Now,
                ];
                $crate::portable::execute(self, sql, &params).await?;
                Ok(())
            }

            async fn status(
                &mut self,
                company: &str,
                id: &str,
            ) -> Result<Option<$crate::roleplays::RoleplayStatus>, $crate::DbError> {
                let sql = $crate::roleplays::SELECT_STATUS;
                let row =
                    $crate::portable::optional(self, sql, &[company.into(), id.into()]).await?;
                Ok(row.map($crate::roleplays::roleplay_status))
            }
        }
    };
}

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::db::Scope;
use crate::portable::Param;
use crate::{Db, DbError, Tx};

/// A role-play about to be issued.
#[derive(Debug, Clone)]
pub struct NewRoleplay<'a> {
    pub id: &'a str,
    pub company_id: &'a str,
    pub profile_id: &'a str,
    pub kind: &'a str,
    pub title: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// What using a ticket for a conversation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketUse {
    /// The ticket is now bound to this conversation.
    Bound,
    /// It was already bound to this same conversation (a redelivery).
    SameConversation,
    /// It was used by another conversation.
    UsedBy(String),
    /// No such role-play in this company.
    Unknown,
}

/// The `roleplays` table, on its own (each call is durable when it returns).
#[async_trait]
pub trait RoleplayStore: Send + Sync {
    /// Stores an issued role-play.
    async fn insert(&self, roleplay: &NewRoleplay<'_>) -> Result<(), DbError>;
}

/// The `roleplays` table inside a transaction (reached with [`Tx::roleplays`]).
#[async_trait]
pub trait RoleplayTxStore: Send {
    /// See [`use_ticket`].
    async fn use_ticket(
        &mut self,
        company: &str,
        id: &str,
        conversation: &str,
    ) -> Result<TicketUse, DbError>;

    /// Marks the role-play failed with `reason` unless its call took place or it is marked
    /// already; whether it was is for [`RoleplayTxStore::status`] to tell.
    async fn fail(&mut self, company: &str, id: &str, reason: &str) -> Result<(), DbError>;

    /// Role-play `id` of `company`, if there is one.
    async fn status(&mut self, company: &str, id: &str) -> Result<Option<RoleplayStatus>, DbError>;
}

/// Stores an issued role-play (durable when this returns).
pub async fn insert(db: &Db, roleplay: &NewRoleplay<'_>) -> Result<(), DbError> {
    db.roleplays().insert(roleplay).await
}

/// Binds role-play `id` of `company` to `conversation`, inside the caller's transaction (the
/// one that stores the conversation's session), unless another conversation already used it.
pub async fn use_ticket(
    tx: &mut Tx<'_>,
    company: &str,
    id: &str,
    conversation: &str,
) -> Result<TicketUse, DbError> {
    tx.roleplays().use_ticket(company, id, conversation).await
}

/// The role-play's stored conversation: `None` when there is no such role-play (in this
/// company), `Some(None)` while it is unused.
const SELECT_CONVERSATION: &str =
    "SELECT conversation_id FROM roleplays WHERE company_id = $1 AND id = $2";
const SELECT_STATUS: &str =
    "SELECT conversation_id, failure_reason FROM roleplays WHERE company_id = $1 AND id = $2";

/// A new role-play ticket (see [`insert_params`]), made at `now` (`$7`).
fn insert_sql(now: &str) -> String {
    format!(
        "INSERT INTO roleplays (id, company_id, profile_id, kind, title, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, {now})"
    )
}

/// The parameters of [`insert_sql`].
fn insert_params<'a>(roleplay: &NewRoleplay<'a>) -> [Param<'a>; 7] {
    [
        roleplay.id.into(),
        roleplay.company_id.into(),
        roleplay.profile_id.into(),
        roleplay.kind.into(),
        roleplay.title.into(),
        roleplay.expires_at.into(),
        Param::Now,
    ]
}

/// The ticket bound to conversation `$3`, at `now` (`$4`), unless it is bound already.
fn use_ticket_sql(now: &str) -> String {
    format!(
        "UPDATE roleplays SET conversation_id = $3, used_at = {now}
         WHERE company_id = $1 AND id = $2 AND conversation_id IS NULL"
    )
}

/// The unused ticket failed for reason `$3`, at `now` (`$4`).
fn fail_sql(now: &str) -> String {
    format!(
        "UPDATE roleplays SET failed_at = {now}, failure_reason = $3
         WHERE company_id = $1 AND id = $2 AND conversation_id IS NULL AND failed_at IS NULL"
    )
}

/// What [`use_ticket`] found: whether its update bound the ticket (`bound` rows), and the
/// role-play's conversation after it (see [`SELECT_CONVERSATION`]).
fn ticket_use(bound: u64, current: Option<Option<String>>, conversation: &str) -> TicketUse {
    match current {
        None => TicketUse::Unknown,
        Some(_) if bound == 1 => TicketUse::Bound,
        Some(Some(used)) if used == conversation => TicketUse::SameConversation,
        Some(Some(used)) => TicketUse::UsedBy(used),
        // Not bound and still unused cannot happen in one transaction; treat it as unknown.
        Some(None) => TicketUse::Unknown,
    }
}

fn roleplay_status(
    (conversation_id, failure_reason): (Option<String>, Option<String>),
) -> RoleplayStatus {
    RoleplayStatus {
        conversation_id,
        failure_reason,
    }
}

/// A role-play's state as far as its call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleplayStatus {
    pub conversation_id: Option<String>,
    pub failure_reason: Option<String>,
}

/// What marking a role-play failed found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkedFailed {
    /// Marked now, or already marked by an earlier delivery.
    Failed,
    /// Its call took place (a session was made from it): a late failure notice changes nothing.
    CallHappened,
    /// No such role-play in this company.
    Unknown,
}

/// Marks role-play `id` of `company` failed with the provider's `reason` (ElevenLabs'
/// `call_initiation_failure`), unless its call took place. Idempotent: a redelivery keeps the
/// first reason.
pub async fn mark_failed(
    db: &Db,
    company: &str,
    id: &str,
    reason: &str,
) -> Result<MarkedFailed, DbError> {
    let mut tx = db.begin(Scope::Company(company)).await?;
    tx.roleplays().fail(company, id, reason).await?;
    let status = tx.roleplays().status(company, id).await?;
    tx.commit().await?;
    Ok(match status {
        None => MarkedFailed::Unknown,
        Some(s) if s.failure_reason.is_some() => MarkedFailed::Failed,
        Some(_) => MarkedFailed::CallHappened,
    })
}

/// Role-play `id` of `company`, if there is one.
pub async fn status(db: &Db, company: &str, id: &str) -> Result<Option<RoleplayStatus>, DbError> {
    let mut tx = db.begin(Scope::Company(company)).await?;
    let status = tx.roleplays().status(company, id).await?;
    tx.commit().await?;
    Ok(status)
}
