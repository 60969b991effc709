//! [`SubscriptionStore`] and [`SubscriptionTxStore`] on Postgres.

use async_trait::async_trait;
use sqlx::PgConnection;

use super::{
    ALL_BY_ID, BY_ID, OF_COMPANY_NEWEST_FIRST, SubscriptionRow, SubscriptionStore, select_sql,
    subscription_row,
};
use crate::DbError;
use crate::db::{PgDb, Scope};
use crate::portable::{self, Param};

#[async_trait]
impl SubscriptionStore for PgDb {
    async fn subscription(&self, id: &str) -> Result<Option<SubscriptionRow>, DbError> {
        // Platform: looked up by Stripe's id, before (or instead of) knowing its company.
        let found = self
            .select_subscriptions(Scope::Platform, BY_ID, Some(id))
            .await?;
        Ok(found.into_iter().next())
    }

    async fn company_subscriptions(&self, company: &str) -> Result<Vec<SubscriptionRow>, DbError> {
        let scope = Scope::Company(company);
        self.select_subscriptions(scope, OF_COMPANY_NEWEST_FIRST, Some(company))
            .await
    }

    async fn all_subscriptions(&self) -> Result<Vec<SubscriptionRow>, DbError> {
        // Platform: a reconciliation compares every company's subscriptions with Stripe's.
        self.select_subscriptions(Scope::Platform, ALL_BY_ID, None)
            .await
    }
}

impl PgDb {
    /// The subscriptions `scope` may see, filtered and ordered by `clauses` (whose `$1`, if
    /// any, is `key`).
    async fn select_subscriptions(
        &self,
        scope: Scope<'_>,
        clauses: &str,
        key: Option<&str>,
    ) -> Result<Vec<SubscriptionRow>, DbError> {
        let mut tx = self.begin_scoped(scope).await?;
        let sql = sqlx::AssertSqlSafe(select_sql(clauses));
        let rows = portable::rows(&mut *tx, sql, key.map(Param::from).as_slice()).await?;
        Ok(rows
            .iter()
            .map(subscription_row)
            .collect::<Result<_, _>>()?)
    }
}

subscription_tx_store!(PgConnection, sqlx::Postgres);
