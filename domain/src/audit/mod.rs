//! The audit log: append-only (the database refuses UPDATE and DELETE on it).
//!
//! [`AuditStore`] (appending on its own, listing) and [`AuditWrites`] (appending in a caller's
//! transaction) are the repository, implemented for Postgres (`postgres.rs`) and SQLite
//! (`sqlite.rs`); the free functions here delegate to it.

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Db, DbError, Tx};

/// One action to record. `details` must not carry transcript text or secrets.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub actor_role: &'a str,
    pub company_id: Option<&'a str>,
    pub action: &'a str,
    pub target: &'a str,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub actor_role: String,
    pub company_id: Option<String>,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// See [`append`].
    async fn append(&self, entry: &AuditEntry<'_>) -> Result<i64, DbError>;
    /// See [`list`].
    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, DbError>;
}

#[async_trait]
pub trait AuditWrites: Send {
    /// See [`append_in`].
    async fn append(&mut self, entry: &AuditEntry<'_>) -> Result<i64, DbError>;
    /// See [`append_many_in`]. One statement on Postgres; one insert each elsewhere.
    async fn append_many(&mut self, entries: &[AuditEntry<'_>]) -> Result<(), DbError> {
        for entry in entries {
            self.append(entry).await?;
        }
        Ok(())
    }
}

/// Appends the entry on its own (see [`append_in`] to append within a caller's transaction).
pub async fn append(db: &Db, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
    db.audit().append(entry).await
}

/// Which entries to list: newest first, each filter optional, `before` an id for the next page.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub company_id: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// The newest entries first, optionally only one action.
pub async fn recent(
    db: &Db,
    action: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditRecord>, DbError> {
    let filter = AuditFilter {
        action: action.map(str::to_string),
        limit,
        ..Default::default()
    };
    list(db, &filter).await
}

/// The entries `filter` matches, newest first.
pub async fn list(db: &Db, filter: &AuditFilter) -> Result<Vec<AuditRecord>, DbError> {
    db.audit().list(filter).await
}

/// Appends the entry in the caller's transaction, so the record commits (or not) with the
/// change it describes (session create/delete, GDPR export and erasure).
pub async fn append_in(tx: &mut Tx<'_>, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
    tx.audit().append(entry).await
}

/// Appends several entries in the caller's transaction, in order (intake's group commit).
pub async fn append_many_in(tx: &mut Tx<'_>, entries: &[AuditEntry<'_>]) -> Result<(), DbError> {
    tx.audit().append_many(entries).await
}

/// The listing's filters, the same text on both databases (SQLite reads `$N` as the N-th bound
/// value); `{cast_*}` are Postgres's parameter types, empty on SQLite.
fn list_sql(cast_text: &str, cast_int: &str) -> String {
    format!(
        "SELECT id, at, actor, actor_role, company_id, action, target, details FROM audit_log
         WHERE ($1{cast_text} IS NULL OR action = $1) AND ($2{cast_text} IS NULL OR actor = $2)
           AND ($3{cast_text} IS NULL OR company_id = $3) AND ($4{cast_int} IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5"
    )
}
