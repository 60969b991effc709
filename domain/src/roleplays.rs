//! Role-play conversations voxline issued a ticket for (`POST /api/roleplays`), and their
//! single use: the first post-call webhook that carries the ticket binds it to its
//! conversation; a second conversation with the same ticket is refused.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::db::Scope;
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

/// Stores an issued role-play (durable when this returns).
pub async fn insert(db: &Db, roleplay: &NewRoleplay<'_>) -> Result<(), DbError> {
    match db {
        Db::Postgres(pg) => {
            let mut tx = pg
                .begin_scoped(Scope::Profile {
                    company: roleplay.company_id,
                    profile: roleplay.profile_id,
                })
                .await?;
            sqlx::query(
                "INSERT INTO roleplays (id, company_id, profile_id, kind, title, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(roleplay.id)
            .bind(roleplay.company_id)
            .bind(roleplay.profile_id)
            .bind(roleplay.kind)
            .bind(roleplay.title)
            .bind(roleplay.expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Db::Sqlite(lite) => {
            sqlx::query(
                "INSERT INTO roleplays (id, company_id, profile_id, kind, title, created_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(roleplay.id)
            .bind(roleplay.company_id)
            .bind(roleplay.profile_id)
            .bind(roleplay.kind)
            .bind(roleplay.title)
            .bind(Utc::now().timestamp_micros())
            .bind(roleplay.expires_at.timestamp_micros())
            .execute(&lite.pool)
            .await?;
        }
    }
    Ok(())
}

/// Binds role-play `id` of `company` to `conversation`, inside the caller's transaction (the
/// one that stores the conversation's session), unless another conversation already used it.
pub async fn use_ticket(
    tx: &mut Tx<'_>,
    company: &str,
    id: &str,
    conversation: &str,
) -> Result<TicketUse, DbError> {
    let (bound, current): (u64, Option<Option<String>>) = match tx {
        Tx::Postgres(tx) => {
            let bound = sqlx::query(
                "UPDATE roleplays SET conversation_id = $3, used_at = now()
                 WHERE company_id = $1 AND id = $2 AND conversation_id IS NULL",
            )
            .bind(company)
            .bind(id)
            .bind(conversation)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            let current = sqlx::query(
                "SELECT conversation_id FROM roleplays WHERE company_id = $1 AND id = $2",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get::<Option<String>, _>("conversation_id"))
            .transpose()?;
            (bound, current)
        }
        Tx::Sqlite { tx, .. } => {
            let bound = sqlx::query(
                "UPDATE roleplays SET conversation_id = ?3, used_at = ?4
                 WHERE company_id = ?1 AND id = ?2 AND conversation_id IS NULL",
            )
            .bind(company)
            .bind(id)
            .bind(conversation)
            .bind(Utc::now().timestamp_micros())
            .execute(&mut **tx)
            .await?
            .rows_affected();
            let current = sqlx::query(
                "SELECT conversation_id FROM roleplays WHERE company_id = ?1 AND id = ?2",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get::<Option<String>, _>("conversation_id"))
            .transpose()?;
            (bound, current)
        }
    };
    Ok(match current {
        None => TicketUse::Unknown,
        Some(_) if bound == 1 => TicketUse::Bound,
        Some(Some(used)) if used == conversation => TicketUse::SameConversation,
        Some(Some(used)) => TicketUse::UsedBy(used),
        // Not bound and still unused cannot happen in one transaction; treat it as unknown.
        Some(None) => TicketUse::Unknown,
    })
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
    match &mut tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "UPDATE roleplays SET failed_at = now(), failure_reason = $3
                 WHERE company_id = $1 AND id = $2 AND conversation_id IS NULL AND failed_at IS NULL",
            )
            .bind(company)
            .bind(id)
            .bind(reason)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query(
                "UPDATE roleplays SET failed_at = ?4, failure_reason = ?3
                 WHERE company_id = ?1 AND id = ?2 AND conversation_id IS NULL AND failed_at IS NULL",
            )
            .bind(company)
            .bind(id)
            .bind(reason)
            .bind(Utc::now().timestamp_micros())
            .execute(&mut **tx)
            .await?;
        }
    }
    let status = status_in(&mut tx, company, id).await?;
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
    let status = status_in(&mut tx, company, id).await?;
    tx.commit().await?;
    Ok(status)
}

async fn status_in(
    tx: &mut Tx<'_>,
    company: &str,
    id: &str,
) -> Result<Option<RoleplayStatus>, DbError> {
    let row = match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "SELECT conversation_id, failure_reason FROM roleplays WHERE company_id = $1 AND id = $2",
            )
            .bind(company)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?
        }
        Tx::Sqlite { tx, .. } => sqlx::query(
            "SELECT conversation_id, failure_reason FROM roleplays WHERE company_id = ?1 AND id = ?2",
        )
        .bind(company)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?,
    };
    Ok(row.map(|(conversation_id, failure_reason)| RoleplayStatus {
        conversation_id,
        failure_reason,
    }))
}
