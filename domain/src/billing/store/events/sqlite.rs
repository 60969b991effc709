//! [`StripeEventStore`] and [`StripeEventTxStore`] on SQLite (the payload as JSON text, times
//! as microseconds since the epoch).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::{Row, SqliteConnection};

use super::{
    COUNT_BY_STATUS, NewEvent, SELECT_EVENT, SELECT_STATUS, StoredEvent, StripeEventStore,
    StripeEventTxStore,
};
use crate::billing::store::{corrupt, now_us, time};
use crate::db::SqliteDb;
use crate::{DbError, portable};

#[async_trait]
impl StripeEventStore for SqliteDb {
    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, DbError> {
        let Some(r) = sqlx::query(SELECT_EVENT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let payload: String = r.try_get("payload")?;
        Ok(Some(StoredEvent {
            id: r.try_get("id")?,
            event_type: r.try_get("type")?,
            created: time(r.try_get("created")?),
            payload: serde_json::from_str(&payload).map_err(corrupt)?,
            status: r.try_get("status")?,
            detail: r.try_get("detail")?,
        }))
    }

    async fn event_counts(&self) -> Result<BTreeMap<String, i64>, DbError> {
        let rows: Vec<(String, i64)> = portable::all(&self.pool, COUNT_BY_STATUS, &[]).await?;
        Ok(rows.into_iter().collect())
    }
}

#[async_trait]
impl StripeEventTxStore for SqliteConnection {
    async fn insert_event(&mut self, e: &NewEvent<'_>) -> Result<bool, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO stripe_events (id, type, created, payload, status, received_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(e.id)
        .bind(e.event_type)
        .bind(e.created.timestamp_micros())
        .bind(e.payload.to_string())
        .bind(e.status)
        .bind(now_us())
        .execute(&mut *self)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// A plain read: the write transaction holds the whole database.
    async fn lock_event_status(&mut self, id: &str) -> Result<Option<String>, DbError> {
        Ok(portable::scalar(self, SELECT_STATUS, &[id.into()]).await?)
    }

    async fn finish_event(
        &mut self,
        id: &str,
        status: &str,
        detail: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE stripe_events SET status = $2, detail = $3, processed_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(detail)
        .bind(now_us())
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}
