//! [`StripeEventStore`] and [`StripeEventTxStore`] on SQLite (the payload as JSON text, times
//! as microseconds since the epoch).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, SqliteConnection};

use super::{
    COUNT_BY_STATUS, NewEvent, SELECT_EVENT, SELECT_STATUS, StoredEvent, StripeEventStore,
    StripeEventTxStore, finish_event_sql, insert_event_params, insert_event_sql, stored_event,
};
use crate::DbError;
use crate::db::SqliteDb;
use crate::portable::{self, Param};

#[async_trait]
impl StripeEventStore for SqliteDb {
    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, DbError> {
        let row = portable::row(&self.pool, SELECT_EVENT, &[id.into()]).await?;
        Ok(row.as_ref().map(stored_event).transpose()?)
    }

    async fn event_counts(&self) -> Result<BTreeMap<String, i64>, DbError> {
        let rows: Vec<(String, i64)> = portable::all(&self.pool, COUNT_BY_STATUS, &[]).await?;
        Ok(rows.into_iter().collect())
    }
}

#[async_trait]
impl StripeEventTxStore for SqliteConnection {
    async fn insert_event(&mut self, e: &NewEvent<'_>) -> Result<bool, DbError> {
        let sql = AssertSqlSafe(insert_event_sql("$6"));
        Ok(portable::execute(self, sql, &insert_event_params(e)).await? == 1)
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
        let sql = AssertSqlSafe(finish_event_sql("$4"));
        let params = [id.into(), status.into(), detail.into(), Param::Now];
        portable::execute(self, sql, &params).await?;
        Ok(())
    }
}
