//! [`SubscriptionStore`] and [`SubscriptionTxStore`] on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    ALL_BY_ID, BY_ID, OF_COMPANY_NEWEST_FIRST, SubscriptionRow, SubscriptionState,
    SubscriptionStore, SubscriptionTxStore, record_invoice_sql, select_sql, subscription_row,
    upsert_params, upsert_sql,
};
use crate::DbError;
use crate::billing::Stamp;
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

#[async_trait]
impl SubscriptionTxStore for PgConnection {
    async fn lock_subscription(&mut self, id: &str) -> Result<Option<SubscriptionRow>, DbError> {
        let sql = select_sql(&format!("{BY_ID} FOR UPDATE"));
        let row = portable::row(self, sqlx::AssertSqlSafe(sql), &[id.into()]).await?;
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
        let sql = sqlx::AssertSqlSafe(upsert_sql("now()"));
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
        let sql = sqlx::AssertSqlSafe(record_invoice_sql("now()"));
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
