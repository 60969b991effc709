//! [`CustomerStore`] on SQLite (times as microseconds since the epoch).

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::{
    BY_CUSTOMER, BillingCustomer, CustomerColumns, CustomerStore, Linked, NEWEST_ADMIN_EMAIL,
    NEWEST_OF_COMPANY, STORED_COMPANY, billing_customer, find_customer_sql, given_email, link_sql,
    linked, set_email_sql,
};
use crate::DbError;
use crate::db::{Scope, SqliteDb};
use crate::portable::{self, Param};

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
        let sql = AssertSqlSafe(link_sql("$4"));
        let params = [
            customer_id.into(),
            company_id.into(),
            email.into(),
            Param::Now,
        ];
        let inserted = portable::execute(&self.pool, sql, &params).await?;
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
        let sql = AssertSqlSafe(set_email_sql("$3"));
        let params = [customer_id.into(), email.into(), Param::Now];
        portable::execute(&self.pool, sql, &params).await?;
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
