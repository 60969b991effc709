//! [`SubscriptionStore`] and [`SubscriptionTxStore`] on SQLite (times as microseconds since the
//! epoch; a write transaction holds the whole database, so a lock is a plain read).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{
    ALL_BY_ID, BY_ID, OF_COMPANY_NEWEST_FIRST, SubscriptionRow, SubscriptionState,
    SubscriptionStore, SubscriptionTxStore, select_sql, subscription_row, upsert_sql,
};
use crate::billing::Stamp;
use crate::billing::store::{micros, now_us};
use crate::db::SqliteDb;
use crate::{DbError, portable};

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
        let rows = portable::rows(&self.pool, sql, key.as_slice()).await?;
        Ok(rows
            .iter()
            .map(subscription_row)
            .collect::<Result<_, _>>()?)
    }
}

#[async_trait]
impl SubscriptionTxStore for SqliteConnection {
    async fn lock_subscription(&mut self, id: &str) -> Result<Option<SubscriptionRow>, DbError> {
        let row = portable::row(self, sqlx::AssertSqlSafe(select_sql(BY_ID)), &[id]).await?;
        Ok(row.as_ref().map(subscription_row).transpose()?)
    }

    async fn company_subscriptions(
        &mut self,
        company: &str,
    ) -> Result<Vec<SubscriptionRow>, DbError> {
        let sql = sqlx::AssertSqlSafe(select_sql(OF_COMPANY_NEWEST_FIRST));
        let rows = portable::rows(self, sql, &[company]).await?;
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
        let written = sqlx::query(sqlx::AssertSqlSafe(upsert_sql("$15")))
            .bind(&state.id)
            .bind(company)
            .bind(&state.customer_id)
            .bind(&state.status)
            .bind(&state.plan)
            .bind(&state.price_id)
            .bind(micros(state.current_period_end))
            .bind(micros(state.trial_end))
            .bind(state.cancel_at_period_end)
            .bind(micros(state.canceled_at))
            .bind(stamp.at.timestamp_micros())
            .bind(stamp.rank)
            .bind(event_id)
            .bind(snapshot)
            .bind(now_us())
            .execute(&mut *self)
            .await?
            .rows_affected();
        Ok(written == 1)
    }

    async fn record_invoice(
        &mut self,
        subscription_id: &str,
        invoice_id: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let changed = sqlx::query(
            "UPDATE subscriptions SET latest_invoice_id = $2, latest_invoice_status = $3,
                 invoice_event_at = $4, updated_at = $5
             WHERE id = $1 AND (invoice_event_at IS NULL OR invoice_event_at <= $4)",
        )
        .bind(subscription_id)
        .bind(invoice_id)
        .bind(status)
        .bind(at.timestamp_micros())
        .bind(now_us())
        .execute(&mut *self)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }
}
