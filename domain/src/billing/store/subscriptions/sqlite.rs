//! [`SubscriptionStore`] and [`SubscriptionTxStore`] on SQLite (times as microseconds since the
//! epoch; a write transaction holds the whole database, so a lock is a plain read).

use async_trait::async_trait;
use sqlx::SqliteConnection;

use super::{
    ALL_BY_ID, BY_ID, OF_COMPANY_NEWEST_FIRST, SubscriptionRow, SubscriptionStore, select_sql,
    subscription_row,
};
use crate::DbError;
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

subscription_tx_store!(SqliteConnection, sqlx::Sqlite);
