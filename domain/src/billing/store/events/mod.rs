//! `stripe_events`: every Stripe event voxline was told, stored once by its id, with what the
//! billing worker made of it. The table belongs to no company, so it has no tenancy policy.
//! [`StripeEventStore`] and [`StripeEventTxStore`] are implemented for Postgres
//! (`postgres.rs`) and SQLite (`sqlite.rs`).

/// [`StripeEventStore`] for one database handle (`$db`) and [`StripeEventTxStore`] for its
/// driver's connection (`$connection`, of `$dialect`), invoked in `postgres.rs` and
/// `sqlite.rs`: the table belongs to no company, so both run the same statements on the pool,
/// but for the row lock and the time of the write (see [`Dialect`](crate::portable::Dialect)).
macro_rules! stripe_event_stores {
    ($db:ty, $connection:ty, $dialect:ty) => {
        #[async_trait::async_trait]
        impl super::StripeEventStore for $db {
            async fn event(&self, id: &str) -> Result<Option<super::StoredEvent>, $crate::DbError> {
                let row =
                    $crate::portable::row(&self.pool, super::SELECT_EVENT, &[id.into()]).await?;
                Ok(row.as_ref().map(super::stored_event).transpose()?)
            }

            async fn event_counts(
                &self,
            ) -> Result<std::collections::BTreeMap<String, i64>, $crate::DbError> {
                let sql = super::COUNT_BY_STATUS;
                let rows: Vec<(String, i64)> = $crate::portable::all(&self.pool, sql, &[]).await?;
                Ok(rows.into_iter().collect())
            }
        }

        #[async_trait::async_trait]
        impl super::StripeEventTxStore for $connection {
            async fn insert_event(
                &mut self,
                e: &super::NewEvent<'_>,
            ) -> Result<bool, $crate::DbError> {
                use $crate::portable::Dialect;
                let sql = sqlx::AssertSqlSafe(super::insert_event_sql(&<$dialect>::now(6)));
                let params = super::insert_event_params(e);
                Ok($crate::portable::execute(self, sql, &params).await? == 1)
            }

            async fn lock_event_status(
                &mut self,
                id: &str,
            ) -> Result<Option<String>, $crate::DbError> {
                use $crate::portable::Dialect;
                let sql = format!("{}{}", super::SELECT_STATUS, <$dialect>::ROW_LOCK);
                let sql = sqlx::AssertSqlSafe(sql);
                Ok($crate::portable::scalar(self, sql, &[id.into()]).await?)
            }

            async fn finish_event(
                &mut self,
                id: &str,
                status: &str,
                detail: Option<&str>,
            ) -> Result<(), $crate::DbError> {
                use $crate::portable::{Dialect, Param};
                let sql = sqlx::AssertSqlSafe(super::finish_event_sql(&<$dialect>::now(4)));
                let params = [id.into(), status.into(), detail.into(), Param::Now];
                $crate::portable::execute(self, sql, &params).await?;
                Ok(())
            }
        }
    };
}

mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::Columns;
use crate::portable::Param;
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

/// The stored events, each read on its own.
#[async_trait]
pub trait StripeEventStore: Send + Sync {
    /// The stored event, if its id is stored.
    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, DbError>;

    /// See [`event_counts`].
    async fn event_counts(&self) -> Result<BTreeMap<String, i64>, DbError>;
}

/// The stored events inside a caller's transaction (reached with [`Tx::billing`]).
#[async_trait]
pub trait StripeEventTxStore: Send {
    /// See [`insert_event`].
    async fn insert_event(&mut self, e: &NewEvent<'_>) -> Result<bool, DbError>;

    /// See [`lock_event_status`].
    async fn lock_event_status(&mut self, id: &str) -> Result<Option<String>, DbError>;

    /// See [`finish_event`].
    async fn finish_event(
        &mut self,
        id: &str,
        status: &str,
        detail: Option<&str>,
    ) -> Result<(), DbError>;
}

/// Stores an event in the caller's transaction; false when its id is already stored (a
/// redelivery), in which case nothing changes.
pub async fn insert_event(tx: &mut Tx<'_>, e: &NewEvent<'_>) -> Result<bool, DbError> {
    tx.billing().insert_event(e).await
}

pub async fn event(db: &Db, id: &str) -> Result<Option<StoredEvent>, DbError> {
    db.billing().event(id).await
}

/// The event's status, its row locked until the caller's transaction ends (Postgres; an
/// SQLite write transaction holds the whole database), so one event is applied once even when
/// two workers hold jobs for it.
pub async fn lock_event_status(tx: &mut Tx<'_>, id: &str) -> Result<Option<String>, DbError> {
    tx.billing().lock_event_status(id).await
}

pub async fn finish_event(
    tx: &mut Tx<'_>,
    id: &str,
    status: &str,
    detail: Option<&str>,
) -> Result<(), DbError> {
    tx.billing().finish_event(id, status, detail).await
}

/// How many stored events have each status (for tests and operators).
pub async fn event_counts(db: &Db) -> Result<BTreeMap<String, i64>, DbError> {
    db.billing().event_counts().await
}

// `$n` parameters: SQLite reads them by position too, so these run on both databases.
const SELECT_EVENT: &str =
    "SELECT id, type, created, payload, status, detail FROM stripe_events WHERE id = $1";
/// A new event (see [`insert_event_params`]) received at `now` (`$6`), unless it is stored.
fn insert_event_sql(now: &str) -> String {
    format!(
        "INSERT INTO stripe_events (id, type, created, payload, status, received_at)
         VALUES ($1, $2, $3, $4, $5, {now}) ON CONFLICT (id) DO NOTHING"
    )
}

/// The parameters of [`insert_event_sql`].
fn insert_event_params<'a>(e: &NewEvent<'a>) -> [Param<'a>; 6] {
    [
        e.id.into(),
        e.event_type.into(),
        e.created.into(),
        e.payload.into(),
        e.status.into(),
        Param::Now,
    ]
}

/// How applying the event ended (`$2` the status, `$3` the detail), at `now` (`$4`).
fn finish_event_sql(now: &str) -> String {
    format!("UPDATE stripe_events SET status = $2, detail = $3, processed_at = {now} WHERE id = $1")
}

/// A row of [`SELECT_EVENT`], from either database.
fn stored_event(r: &impl Columns) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        id: r.get("id")?,
        event_type: r.get("type")?,
        created: r.time("created")?,
        payload: r.json("payload")?,
        status: r.get("status")?,
        detail: r.get("detail")?,
    })
}

const SELECT_STATUS: &str = "SELECT status FROM stripe_events WHERE id = $1";
const COUNT_BY_STATUS: &str = "SELECT status, count(*) FROM stripe_events GROUP BY status";
