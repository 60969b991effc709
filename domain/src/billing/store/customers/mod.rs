//! `billing_customers`: which Stripe customer pays for which company, and the address Stripe
//! has for it (where billing mail goes). [`CustomerStore`] is implemented for Postgres
//! (`postgres.rs`) and SQLite (`sqlite.rs`).

/// [`CustomerStore`] for one database handle (`$handle`, of `$dialect`): the same statements
/// on both databases, each run by [`Own`](crate::portable::Own) in the scope it names, but for
/// the time of the write.
macro_rules! customer_store {
    ($handle:ty, $dialect:ty) => {
        #[async_trait::async_trait]
        impl super::CustomerStore for $handle {
            async fn customer_in(
                &self,
                scope: $crate::db::Scope<'_>,
                customer_id: &str,
            ) -> Result<Option<super::BillingCustomer>, $crate::DbError> {
                self.find_customer(scope, super::BY_CUSTOMER, customer_id)
                    .await
            }

            async fn customer_for_company(
                &self,
                company: &str,
            ) -> Result<Option<super::BillingCustomer>, $crate::DbError> {
                let scope = $crate::db::Scope::Company(company);
                self.find_customer(scope, super::NEWEST_OF_COMPANY, company)
                    .await
            }

            async fn link_customer(
                &self,
                customer_id: &str,
                company_id: &str,
                email: Option<&str>,
            ) -> Result<super::Linked, $crate::DbError> {
                use $crate::portable::{Dialect, Param};
                let email = super::given_email(email);
                // Platform: the customer may be linked to another company already, and that
                // link (which is kept) must be seen to be returned.
                let mut conn = self.own($crate::db::Scope::Platform).await?;
                let sql = sqlx::AssertSqlSafe(super::link_sql(&<$dialect>::now(4)));
                let params = [
                    customer_id.into(),
                    company_id.into(),
                    email.into(),
                    Param::Now,
                ];
                let inserted = $crate::portable::execute(&mut *conn, sql, &params).await?;
                if inserted == 0
                    && let Some(email) = email
                {
                    let sql = sqlx::AssertSqlSafe(super::set_email_sql(&<$dialect>::now(3)));
                    let params = [customer_id.into(), email.into(), Param::Now];
                    $crate::portable::execute(&mut *conn, sql, &params).await?;
                }
                let params = [customer_id.into()];
                let sql = super::STORED_COMPANY;
                let stored = $crate::portable::scalar(&mut *conn, sql, &params).await?;
                conn.commit().await?;
                Ok(super::linked(inserted, stored, company_id))
            }

            async fn set_customer_email(
                &self,
                company: &str,
                customer_id: &str,
                email: &str,
            ) -> Result<(), $crate::DbError> {
                use $crate::portable::{Dialect, Param};
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let sql = sqlx::AssertSqlSafe(super::set_email_sql(&<$dialect>::now(3)));
                let params = [customer_id.into(), email.into(), Param::Now];
                $crate::portable::execute(&mut *conn, sql, &params).await?;
                Ok(conn.commit().await?)
            }

            async fn newest_admin_email(
                &self,
                company: &str,
            ) -> Result<Option<String>, $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let sql = super::NEWEST_ADMIN_EMAIL;
                Ok($crate::portable::scalar(&mut *conn, sql, &[company.into()]).await?)
            }
        }

        impl $handle {
            /// The first customer `scope` may see where `condition` holds of `key` (bound as
            /// `$1`).
            async fn find_customer(
                &self,
                scope: $crate::db::Scope<'_>,
                condition: &str,
                key: &str,
            ) -> Result<Option<super::BillingCustomer>, $crate::DbError> {
                let mut conn = self.own(scope).await?;
                let sql = sqlx::AssertSqlSafe(super::find_customer_sql(condition));
                let row: Option<super::CustomerColumns> =
                    $crate::portable::optional(&mut *conn, sql, &[key.into()]).await?;
                Ok(row.map(super::billing_customer))
            }
        }
    };
}

mod postgres;
mod sqlite;

use async_trait::async_trait;
use serde::Serialize;

use crate::db::Scope;
use crate::{Db, DbError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BillingCustomer {
    pub customer_id: String,
    pub company_id: String,
    pub email: Option<String>,
}

/// What [`link_customer`] found or made.
#[derive(Debug, Clone, PartialEq)]
pub struct Linked {
    /// The customer's company: the stored one when it was linked before (a link never moves).
    pub company_id: String,
    /// This call made the link.
    pub created: bool,
}

/// `billing_customers`, and the admin addresses billing mail falls back on.
#[async_trait]
pub trait CustomerStore: Send + Sync {
    /// The customer if `scope` may see it.
    async fn customer_in(
        &self,
        scope: Scope<'_>,
        customer_id: &str,
    ) -> Result<Option<BillingCustomer>, DbError>;

    /// See [`customer_for_company`].
    async fn customer_for_company(&self, company: &str)
    -> Result<Option<BillingCustomer>, DbError>;

    /// See [`link_customer`].
    async fn link_customer(
        &self,
        customer_id: &str,
        company_id: &str,
        email: Option<&str>,
    ) -> Result<Linked, DbError>;

    /// See [`set_customer_email`].
    async fn set_customer_email(
        &self,
        company: &str,
        customer_id: &str,
        email: &str,
    ) -> Result<(), DbError>;

    /// The newest address of one of the company's admins voxline has seen in a token.
    async fn newest_admin_email(&self, company: &str) -> Result<Option<String>, DbError>;
}

/// The Stripe customer and the company it pays for, whichever company that is.
pub async fn customer(db: &Db, customer_id: &str) -> Result<Option<BillingCustomer>, DbError> {
    // Platform: this is how a Stripe customer is mapped to its company.
    db.billing().customer_in(Scope::Platform, customer_id).await
}

/// Links a Stripe customer to a company (or refreshes its email when it is linked already).
/// A customer never moves to another company: the first link stays and is returned, so the
/// caller can tell a conflicting hint apart.
pub async fn link_customer(
    db: &Db,
    customer_id: &str,
    company_id: &str,
    email: Option<&str>,
) -> Result<Linked, DbError> {
    db.billing()
        .link_customer(customer_id, company_id, email)
        .await
}

/// Remembers the address Stripe has for a customer of `company` (where billing mail goes).
pub async fn set_customer_email(
    db: &Db,
    company: &str,
    customer_id: &str,
    email: &str,
) -> Result<(), DbError> {
    db.billing()
        .set_customer_email(company, customer_id, email)
        .await
}

/// The company's Stripe customer (the most recently linked or updated, if several).
pub async fn customer_for_company(
    db: &Db,
    company: &str,
) -> Result<Option<BillingCustomer>, DbError> {
    db.billing().customer_for_company(company).await
}

/// Where the company's billing mail goes: the address Stripe has for its customer, else the
/// newest address of one of its admins voxline has seen in a token.
pub async fn billing_address(
    db: &Db,
    company: &str,
    customer_id: Option<&str>,
) -> Result<Option<String>, DbError> {
    let store = db.billing();
    let linked = match customer_id {
        // The company's own customer: one linked to another company is not its address.
        Some(id) => store.customer_in(Scope::Company(company), id).await?,
        None => store.customer_for_company(company).await?,
    };
    if let Some(email) = linked.and_then(|c| c.email) {
        return Ok(Some(email));
    }
    store.newest_admin_email(company).await
}

// `$n` parameters: SQLite reads them by position too, so these run on both databases.

/// The first customer where `condition` holds of `$1`.
fn find_customer_sql(condition: &str) -> String {
    format!("SELECT customer_id, company_id, email FROM billing_customers WHERE {condition}")
}
const BY_CUSTOMER: &str = "customer_id = $1";
const NEWEST_OF_COMPANY: &str = "company_id = $1 ORDER BY updated_at DESC, customer_id LIMIT 1";
const STORED_COMPANY: &str = "SELECT company_id FROM billing_customers WHERE customer_id = $1";
const NEWEST_ADMIN_EMAIL: &str = "SELECT email FROM profiles WHERE company_id = $1
     AND role = 'admin' AND email IS NOT NULL AND email <> '' ORDER BY updated_at DESC LIMIT 1";

type CustomerColumns = (String, String, Option<String>);

/// The customer linked to company `$2` with address `$3`, at `now`, unless it is linked already.
fn link_sql(now: &str) -> String {
    format!(
        "INSERT INTO billing_customers (customer_id, company_id, email, created_at, updated_at)
         VALUES ($1, $2, $3, {now}, {now}) ON CONFLICT (customer_id) DO NOTHING"
    )
}

/// Refreshes a customer's address (`$2`) at `now` unless it is the same one, so an unchanged
/// address leaves `updated_at` alone.
fn set_email_sql(now: &str) -> String {
    format!(
        "UPDATE billing_customers SET email = $2, updated_at = {now}
         WHERE customer_id = $1 AND email IS DISTINCT FROM $2"
    )
}

fn billing_customer((customer_id, company_id, email): CustomerColumns) -> BillingCustomer {
    BillingCustomer {
        customer_id,
        company_id,
        email,
    }
}

/// The address a link stores: none for a blank one.
fn given_email(email: Option<&str>) -> Option<&str> {
    email.map(str::trim).filter(|e| !e.is_empty())
}

/// What a link found: `inserted` rows, and the customer's company as stored after it.
fn linked(inserted: u64, stored: Option<String>, company_id: &str) -> Linked {
    Linked {
        company_id: stored.unwrap_or_else(|| company_id.to_string()),
        created: inserted == 1,
    }
}
