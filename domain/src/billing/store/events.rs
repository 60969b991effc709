//! `stripe_events`: every Stripe event voxline was told, stored once by its id, with what the
//! billing worker made of it. The table belongs to no company, so it has no tenancy policy.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{corrupt, now_us, time};
use crate::{Db, DbError, Tx};

/// The Stripe event types the billing worker applies; any other type is stored as `ignored`.
pub const HANDLED_EVENTS: [&str; 8] = [
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
];

pub fn is_handled(event_type: &str) -> bool {
    HANDLED_EVENTS.contains(&event_type)
}

pub const EVENT_PENDING: &str = "pending";
pub const EVENT_APPLIED: &str = "applied";
pub const EVENT_SKIPPED: &str = "skipped";
pub const EVENT_IGNORED: &str = "ignored";

#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub created: DateTime<Utc>,
    pub payload: &'a Value,
    /// `pending` (a job will apply it) or `ignored`.
    pub status: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: String,
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub payload: Value,
    pub status: String,
    pub detail: Option<String>,
}

/// Stores an event in the caller's transaction; false when its id is already stored (a
/// redelivery), in which case nothing changes.
pub async fn insert_event(tx: &mut Tx<'_>, e: &NewEvent<'_>) -> Result<bool, DbError> {
    let inserted = match tx {
        Tx::Postgres(tx) => sqlx::query(
            "INSERT INTO stripe_events (id, type, created, payload, status) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(e.id)
        .bind(e.event_type)
        .bind(e.created)
        .bind(e.payload)
        .bind(e.status)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        Tx::Sqlite { tx, .. } => sqlx::query(
            "INSERT INTO stripe_events (id, type, created, payload, status, received_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(e.id)
        .bind(e.event_type)
        .bind(e.created.timestamp_micros())
        .bind(e.payload.to_string())
        .bind(e.status)
        .bind(now_us())
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    Ok(inserted == 1)
}

pub async fn event(db: &Db, id: &str) -> Result<Option<StoredEvent>, DbError> {
    const SQL: &str =
        "SELECT id, type, created, payload, status, detail FROM stripe_events WHERE id = $1";
    Ok(match db {
        Db::Postgres(pg) => match sqlx::query(SQL).bind(id).fetch_optional(&pg.pool).await? {
            None => None,
            Some(r) => Some(StoredEvent {
                id: r.try_get("id")?,
                event_type: r.try_get("type")?,
                created: r.try_get("created")?,
                payload: r.try_get("payload")?,
                status: r.try_get("status")?,
                detail: r.try_get("detail")?,
            }),
        },
        Db::Sqlite(lite) => {
            match sqlx::query(SQL).bind(id).fetch_optional(&lite.pool).await? {
                None => None,
                Some(r) => {
                    // SQLite keeps the payload as JSON text.
                    let payload: String = r.try_get("payload")?;
                    Some(StoredEvent {
                        id: r.try_get("id")?,
                        event_type: r.try_get("type")?,
                        created: time(r.try_get("created")?),
                        payload: serde_json::from_str(&payload).map_err(corrupt)?,
                        status: r.try_get("status")?,
                        detail: r.try_get("detail")?,
                    })
                }
            }
        }
    })
}

/// The event's status, its row locked until the caller's transaction ends (Postgres; an
/// SQLite write transaction holds the whole database), so one event is applied once even when
/// two workers hold jobs for it.
pub async fn lock_event_status(tx: &mut Tx<'_>, id: &str) -> Result<Option<String>, DbError> {
    Ok(match tx {
        Tx::Postgres(tx) => {
            sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
        }
    })
}

pub async fn finish_event(
    tx: &mut Tx<'_>,
    id: &str,
    status: &str,
    detail: Option<&str>,
) -> Result<(), DbError> {
    match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "UPDATE stripe_events SET status = $2, detail = $3, processed_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(status)
            .bind(detail)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query(
                "UPDATE stripe_events SET status = ?2, detail = ?3, processed_at = ?4 WHERE id = ?1",
            )
            .bind(id)
            .bind(status)
            .bind(detail)
            .bind(now_us())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// How many stored events have each status (for tests and operators).
pub async fn event_counts(db: &Db) -> Result<BTreeMap<String, i64>, DbError> {
    const SQL: &str = "SELECT status, count(*) FROM stripe_events GROUP BY status";
    let rows: Vec<(String, i64)> = match db {
        Db::Postgres(pg) => sqlx::query_as(SQL).fetch_all(&pg.pool).await?,
        Db::Sqlite(lite) => sqlx::query_as(SQL).fetch_all(&lite.pool).await?,
    };
    Ok(rows.into_iter().collect())
}
