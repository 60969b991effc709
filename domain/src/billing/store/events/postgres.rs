//! [`StripeEventStore`] and [`StripeEventTxStore`] on Postgres (the payload as `jsonb`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::{PgConnection, Row};

use super::{
    COUNT_BY_STATUS, NewEvent, SELECT_EVENT, SELECT_STATUS, StoredEvent, StripeEventStore,
    StripeEventTxStore,
};
use crate::db::PgDb;
use crate::{DbError, portable};

#[async_trait]
impl StripeEventStore for PgDb {
    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, DbError> {
        let Some(r) = sqlx::query(SELECT_EVENT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(StoredEvent {
            id: r.try_get("id")?,
            event_type: r.try_get("type")?,
            created: r.try_get("created")?,
            payload: r.try_get("payload")?,
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
impl StripeEventTxStore for PgConnection {
    async fn insert_event(&mut self, e: &NewEvent<'_>) -> Result<bool, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO stripe_events (id, type, created, payload, status) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(e.id)
        .bind(e.event_type)
        .bind(e.created)
        .bind(e.payload)
        .bind(e.status)
        .execute(&mut *self)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn lock_event_status(&mut self, id: &str) -> Result<Option<String>, DbError> {
        let sql = sqlx::AssertSqlSafe(format!("{SELECT_STATUS} FOR UPDATE"));
        Ok(portable::scalar(self, sql, &[id.into()]).await?)
    }

    async fn finish_event(
        &mut self,
        id: &str,
        status: &str,
        detail: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE stripe_events SET status = $2, detail = $3, processed_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(detail)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}
