//! [`CustomerStore`] on Postgres.

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::{
    BY_CUSTOMER, BillingCustomer, CustomerColumns, CustomerStore, Linked, NEWEST_ADMIN_EMAIL,
    NEWEST_OF_COMPANY, STORED_COMPANY, billing_customer, find_customer_sql, given_email, link_sql,
    linked, set_email_sql,
};
use crate::DbError;
use crate::db::{PgDb, Scope};
use crate::portable::{self, Param};

#[async_trait]
impl CustomerStore for PgDb {
    async fn customer_in(
        &self,
        scope: Scope<'_>,
        customer_id: &str,
    ) -> Result<Option<BillingCustomer>, DbError> {
        self.find_customer(scope, BY_CUSTOMER, customer_id).await
    }

    async fn customer_for_company(
        &self,
        company: &str,
    ) -> Result<Option<BillingCustomer>, DbError> {
        self.find_customer(Scope::Company(company), NEWEST_OF_COMPANY, company)
            .await
    }

    async fn link_customer(
        &self,
        customer_id: &str,
        company_id: &str,
        email: Option<&str>,
    ) -> Result<Linked, DbError> {
        let email = given_email(email);
        // Platform: the customer may be linked to another company already, and that link
        // (which is kept) must be seen to be returned.
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        let sql = AssertSqlSafe(link_sql("now()"));
        let params = [
            customer_id.into(),
            company_id.into(),
            email.into(),
            Param::Now,
        ];
        let inserted = portable::execute(&mut *tx, sql, &params).await?;
        if inserted == 0
            && let Some(email) = email
        {
            let sql = AssertSqlSafe(set_email_sql("now()"));
            let params = [customer_id.into(), email.into(), Param::Now];
            portable::execute(&mut *tx, sql, &params).await?;
        }
        let stored = portable::scalar(&mut *tx, STORED_COMPANY, &[customer_id.into()]).await?;
        tx.commit().await?;
        Ok(linked(inserted, stored, company_id))
    }

    async fn set_customer_email(
        &self,
        company: &str,
        customer_id: &str,
        email: &str,
    ) -> Result<(), DbError> {
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        let sql = AssertSqlSafe(set_email_sql("now()"));
        let params = [customer_id.into(), email.into(), Param::Now];
        portable::execute(&mut *tx, sql, &params).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn newest_admin_email(&self, company: &str) -> Result<Option<String>, DbError> {
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        Ok(portable::scalar(&mut *tx, NEWEST_ADMIN_EMAIL, &[company.into()]).await?)
    }
}

impl PgDb {
    /// The first customer `scope` may see where `condition` holds of `key` (bound as `$1`).
    async fn find_customer(
        &self,
        scope: Scope<'_>,
        condition: &str,
        key: &str,
    ) -> Result<Option<BillingCustomer>, DbError> {
        let mut tx = self.begin_scoped(scope).await?;
        let sql = sqlx::AssertSqlSafe(find_customer_sql(condition));
        let row: Option<CustomerColumns> = portable::optional(&mut *tx, sql, &[key.into()]).await?;
        Ok(row.map(billing_customer))
    }
}
