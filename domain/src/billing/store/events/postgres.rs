//! [`StripeEventStore`] and [`StripeEventTxStore`] on Postgres (the payload as `jsonb`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, PgConnection};

use super::{
    COUNT_BY_STATUS, NewEvent, SELECT_EVENT, SELECT_STATUS, StoredEvent, StripeEventStore,
    StripeEventTxStore, finish_event_sql, insert_event_params, insert_event_sql, stored_event,
};
use crate::DbError;
use crate::db::PgDb;
use crate::portable::{self, Param};

#[async_trait]
impl StripeEventStore for PgDb {
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
impl StripeEventTxStore for PgConnection {
    async fn insert_event(&mut self, e: &NewEvent<'_>) -> Result<bool, DbError> {
        let sql = AssertSqlSafe(insert_event_sql("now()"));
        Ok(portable::execute(self, sql, &insert_event_params(e)).await? == 1)
    }

    async fn lock_event_status(&mut self, id: &str) -> Result<Option<String>, DbError> {
        let sql = AssertSqlSafe(format!("{SELECT_STATUS} FOR UPDATE"));
        Ok(portable::scalar(self, sql, &[id.into()]).await?)
    }

    async fn finish_event(
        &mut self,
        id: &str,
        status: &str,
        detail: Option<&str>,
    ) -> Result<(), DbError> {
        let sql = AssertSqlSafe(finish_event_sql("now()"));
        let params = [id.into(), status.into(), detail.into(), Param::Now];
        portable::execute(self, sql, &params).await?;
        Ok(())
    }
}
