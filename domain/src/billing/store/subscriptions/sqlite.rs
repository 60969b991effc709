//! [`SubscriptionStore`] and [`SubscriptionTxStore`] on SQLite (times as microseconds since the
//! epoch; a write transaction holds the whole database, so a lock is a plain read).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{
    ALL_BY_ID, BY_ID, OF_COMPANY_NEWEST_FIRST, SubscriptionRow, SubscriptionState,
    SubscriptionStore, SubscriptionTxStore, record_invoice_sql, select_sql, subscription_row,
    upsert_params, upsert_sql,
};
use crate::DbError;
use crate::billing::Stamp;
use crate::db::SqliteDb;
use crate::portable::{self, Param};

#[async_trait]
impl SubscriptionStore for SqliteDb {
    async fn subscription(&self, id: &str) -> Result<Option<SubscriptionRow>, DbError> {
        let found = self.select_subscriptions(BY_ID, Some(id)).await?;
        Ok(found.into_iter().next())
    }

    async fn company_subscriptions(&self, company: &str) -> Result<Vec<SubscriptionRow>, DbError> {
        self.select_subscriptions(OF_COMPANY_NEWEST_FIRST, Some(company))
            .await
    }

    async fn all_subscriptions(&self) -> Result<Vec<SubscriptionRow>, DbError> {
        self.select_subscriptions(ALL_BY_ID, None).await
    }
}

impl SqliteDb {
    /// The subscriptions filtered and ordered by `clauses` (whose `$1`, if any, is `key`).
    async fn select_subscriptions(
        &self,
        clauses: &str,
        key: Option<&str>,
    ) -> Result<Vec<SubscriptionRow>, DbError> {
        let sql = sqlx::AssertSqlSafe(select_sql(clauses));
        let rows = portable::rows(&self.pool, sql, key.map(Param::from).as_slice()).await?;
        Ok(rows
            .iter()
            .map(subscription_row)
            .collect::<Result<_, _>>()?)
    }
}

#[async_trait]
impl SubscriptionTxStore for SqliteConnection {
    async fn lock_subscription(&mut self, id: &str) -> Result<Option<SubscriptionRow>, DbError> {
        let row = portable::row(self, sqlx::AssertSqlSafe(select_sql(BY_ID)), &[id.into()]).await?;
        Ok(row.as_ref().map(subscription_row).transpose()?)
    }

    async fn company_subscriptions(
        &mut self,
        company: &str,
    ) -> Result<Vec<SubscriptionRow>, DbError> {
        let sql = sqlx::AssertSqlSafe(select_sql(OF_COMPANY_NEWEST_FIRST));
        let rows = portable::rows(self, sql, &[company.into()]).await?;
        Ok(rows
            .iter()
            .map(subscription_row)
            .collect::<Result<_, _>>()?)
    }

    async fn save_subscription(
        &mut self,
        company: &str,
        state: &SubscriptionState,
        stamp: Stamp,
        event_id: Option<&str>,
        snapshot: bool,
    ) -> Result<bool, DbError> {
        let sql = sqlx::AssertSqlSafe(upsert_sql("$15"));
        let params = upsert_params(company, state, stamp, event_id, snapshot);
        Ok(portable::execute(self, sql, &params).await? == 1)
    }

    async fn record_invoice(
        &mut self,
        subscription_id: &str,
        invoice_id: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let sql = sqlx::AssertSqlSafe(record_invoice_sql("$5"));
        let params = [
            subscription_id.into(),
            invoice_id.into(),
            status.into(),
            at.into(),
            Param::Now,
        ];
        Ok(portable::execute(self, sql, &params).await? == 1)
    }
}
