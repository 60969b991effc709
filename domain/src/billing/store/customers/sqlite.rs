//! [`CustomerStore`] on SQLite (times as microseconds since the epoch).

use async_trait::async_trait;

use super::{
    BY_CUSTOMER, BillingCustomer, CustomerColumns, CustomerStore, Linked, NEWEST_ADMIN_EMAIL,
    NEWEST_OF_COMPANY, STORED_COMPANY, billing_customer, find_customer_sql, given_email, linked,
};
use crate::billing::store::now_us;
use crate::db::{Scope, SqliteDb};
use crate::{DbError, portable};

/// Refreshes a customer's address unless it is the same one (Postgres' `IS DISTINCT FROM` is
/// SQLite's `IS NOT`), so an unchanged address leaves `updated_at` alone.
const SET_EMAIL: &str = "UPDATE billing_customers SET email = $2, updated_at = $3
     WHERE customer_id = $1 AND email IS NOT $2";

#[async_trait]
impl CustomerStore for SqliteDb {
    async fn customer_in(
        &self,
        _scope: Scope<'_>,
        customer_id: &str,
    ) -> Result<Option<BillingCustomer>, DbError> {
        self.find_customer(BY_CUSTOMER, customer_id).await
    }

    async fn customer_for_company(
        &self,
        company: &str,
    ) -> Result<Option<BillingCustomer>, DbError> {
        self.find_customer(NEWEST_OF_COMPANY, company).await
    }

    async fn link_customer(
        &self,
        customer_id: &str,
        company_id: &str,
        email: Option<&str>,
    ) -> Result<Linked, DbError> {
        let email = given_email(email);
        let inserted = sqlx::query(
            "INSERT INTO billing_customers (customer_id, company_id, email, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(customer_id)
        .bind(company_id)
        .bind(email)
        .bind(now_us())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0
            && let Some(email) = email
        {
            self.set_customer_email(company_id, customer_id, email)
                .await?;
        }
        let stored = portable::scalar(&self.pool, STORED_COMPANY, &[customer_id.into()]).await?;
        Ok(linked(inserted, stored, company_id))
    }

    async fn set_customer_email(
        &self,
        _company: &str,
        customer_id: &str,
        email: &str,
    ) -> Result<(), DbError> {
        sqlx::query(SET_EMAIL)
            .bind(customer_id)
            .bind(email)
            .bind(now_us())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn newest_admin_email(&self, company: &str) -> Result<Option<String>, DbError> {
        Ok(portable::scalar(&self.pool, NEWEST_ADMIN_EMAIL, &[company.into()]).await?)
    }
}

impl SqliteDb {
    /// The first customer where `condition` holds of `key` (bound as `$1`).
    async fn find_customer(
        &self,
        condition: &str,
        key: &str,
    ) -> Result<Option<BillingCustomer>, DbError> {
        let sql = sqlx::AssertSqlSafe(find_customer_sql(condition));
        let row: Option<CustomerColumns> =
            portable::optional(&self.pool, sql, &[key.into()]).await?;
        Ok(row.map(billing_customer))
    }
}
