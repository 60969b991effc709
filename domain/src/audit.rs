//! The audit log: append-only (the database refuses UPDATE and DELETE on it).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::db::Scope;
use crate::{Db, DbError};

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

/// Appends the entry on its own (see [`append_in`] to append within a caller's transaction).
pub async fn append(db: &Db, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
    match db {
        Db::Postgres(pg) => {
            let scope = match entry.company_id {
                Some(company) => Scope::Company(company),
                // Platform: an entry that names no company (an operator's job action, a
                // reconciliation run) belongs to no tenant, so no company scope may write it.
                None => Scope::Platform,
            };
            let mut tx = crate::Tx::Postgres(pg.begin_scoped(scope).await?);
            let id = append_in(&mut tx, entry).await?;
            tx.commit().await?;
            Ok(id)
        }
        Db::Sqlite(lite) => Ok(sqlx::query_scalar(
            "INSERT INTO audit_log (at, actor, actor_role, company_id, action, target, details)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(Utc::now().timestamp_micros())
        .bind(entry.actor)
        .bind(entry.actor_role)
        .bind(entry.company_id)
        .bind(entry.action)
        .bind(entry.target)
        .bind(entry.details.to_string())
        .fetch_one(&lite.pool)
        .await?),
    }
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

pub async fn list(db: &Db, filter: &AuditFilter) -> Result<Vec<AuditRecord>, DbError> {
    let records = match db {
        Db::Postgres(pg) => {
            // Listing the log is an operator's read across companies (GET /api/admin/audit),
            // so Platform scope; a filter naming one company reads within that company's scope.
            let scope = match filter.company_id.as_deref() {
                Some(company) => Scope::Company(company),
                None => Scope::Platform,
            };
            // A read: the transaction is dropped (rolled back) when done.
            let mut tx = pg.begin_scoped(scope).await?;
            let rows = sqlx::query(
                "SELECT id, at, actor, actor_role, company_id, action, target, details FROM audit_log
                 WHERE ($1::text IS NULL OR action = $1) AND ($2::text IS NULL OR actor = $2)
                   AND ($3::text IS NULL OR company_id = $3) AND ($4::int8 IS NULL OR id < $4)
                 ORDER BY id DESC LIMIT $5",
            )
            .bind(&filter.action)
            .bind(&filter.actor)
            .bind(&filter.company_id)
            .bind(filter.before)
            .bind(filter.limit)
            .fetch_all(&mut *tx)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(AuditRecord {
                        id: r.try_get("id")?,
                        at: r.try_get("at")?,
                        actor: r.try_get("actor")?,
                        actor_role: r.try_get("actor_role")?,
                        company_id: r.try_get("company_id")?,
                        action: r.try_get("action")?,
                        target: r.try_get("target")?,
                        details: r.try_get("details")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        }
        Db::Sqlite(lite) => {
            let rows = sqlx::query(
                "SELECT id, at, actor, actor_role, company_id, action, target, details FROM audit_log
                 WHERE (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR actor = ?2)
                   AND (?3 IS NULL OR company_id = ?3) AND (?4 IS NULL OR id < ?4)
                 ORDER BY id DESC LIMIT ?5",
            )
            .bind(&filter.action)
            .bind(&filter.actor)
            .bind(&filter.company_id)
            .bind(filter.before)
            .bind(filter.limit)
            .fetch_all(&lite.pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let at: i64 = r.try_get("at")?;
                    let details: String = r.try_get("details")?;
                    Ok(AuditRecord {
                        id: r.try_get("id")?,
                        at: DateTime::from_timestamp_micros(at).unwrap_or_default(),
                        actor: r.try_get("actor")?,
                        actor_role: r.try_get("actor_role")?,
                        company_id: r.try_get("company_id")?,
                        action: r.try_get("action")?,
                        target: r.try_get("target")?,
                        details: serde_json::from_str(&details)
                            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        }
    };
    Ok(records)
}

/// Appends the entry in the caller's transaction, so the record commits (or not) with the
/// change it describes (session create/delete, GDPR export and erasure).
pub async fn append_in(tx: &mut crate::Tx<'_>, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
    Ok(match tx {
        crate::Tx::Postgres(tx) => {
            sqlx::query_scalar(
                "INSERT INTO audit_log (actor, actor_role, company_id, action, target, details)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(entry.actor)
            .bind(entry.actor_role)
            .bind(entry.company_id)
            .bind(entry.action)
            .bind(entry.target)
            .bind(&entry.details)
            .fetch_one(&mut **tx)
            .await?
        }
        crate::Tx::Sqlite { tx, .. } => {
            sqlx::query_scalar(
                "INSERT INTO audit_log (at, actor, actor_role, company_id, action, target, details)
                 VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(Utc::now().timestamp_micros())
            .bind(entry.actor)
            .bind(entry.actor_role)
            .bind(entry.company_id)
            .bind(entry.action)
            .bind(entry.target)
            .bind(entry.details.to_string())
            .fetch_one(&mut **tx)
            .await?
        }
    })
}
