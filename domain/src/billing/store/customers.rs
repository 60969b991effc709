//! `billing_customers`: which Stripe customer pays for which company, and the address Stripe
//! has for it (where billing mail goes).

use serde::Serialize;

use super::now_us;
use crate::db::Scope;
use crate::{Db, DbError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BillingCustomer {
    pub customer_id: String,
    pub company_id: String,
    pub email: Option<String>,
}

type CustomerColumns = (String, String, Option<String>);

fn billing_customer((customer_id, company_id, email): CustomerColumns) -> BillingCustomer {
    BillingCustomer {
        customer_id,
        company_id,
        email,
    }
}

/// The Stripe customer and the company it pays for, whichever company that is.
pub async fn customer(db: &Db, customer_id: &str) -> Result<Option<BillingCustomer>, DbError> {
    // Platform: this is how a Stripe customer is mapped to its company.
    customer_in(db, Scope::Platform, customer_id).await
}

/// The customer if `scope` may see it.
async fn customer_in(
    db: &Db,
    scope: Scope<'_>,
    customer_id: &str,
) -> Result<Option<BillingCustomer>, DbError> {
    find_customer(db, scope, "customer_id = $1", customer_id).await
}

/// The first customer `scope` may see where `condition` holds of `key` (bound as `$1`).
async fn find_customer(
    db: &Db,
    scope: Scope<'_>,
    condition: &str,
    key: &str,
) -> Result<Option<BillingCustomer>, DbError> {
    let sql =
        format!("SELECT customer_id, company_id, email FROM billing_customers WHERE {condition}");
    let row: Option<CustomerColumns> = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(scope).await?;
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(key)
                .fetch_optional(&lite.pool)
                .await?
        }
    };
    Ok(row.map(billing_customer))
}

/// What [`link_customer`] found or made.
#[derive(Debug, Clone, PartialEq)]
pub struct Linked {
    /// The customer's company: the stored one when it was linked before (a link never moves).
    pub company_id: String,
    /// This call made the link.
    pub created: bool,
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
    let email = email.map(str::trim).filter(|e| !e.is_empty());
    let (inserted, stored) = match db {
        Db::Postgres(pg) => {
            // Platform: the customer may be linked to another company already, and that link
            // (which is kept) must be seen to be returned.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            let inserted = sqlx::query(
                "INSERT INTO billing_customers (customer_id, company_id, email) VALUES ($1, $2, $3)
                 ON CONFLICT (customer_id) DO NOTHING",
            )
            .bind(customer_id)
            .bind(company_id)
            .bind(email)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0
                && let Some(email) = email
            {
                sqlx::query(SET_EMAIL_PG)
                    .bind(customer_id)
                    .bind(email)
                    .execute(&mut *tx)
                    .await?;
            }
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT company_id FROM billing_customers WHERE customer_id = $1",
            )
            .bind(customer_id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            (inserted, stored)
        }
        Db::Sqlite(lite) => {
            let inserted = sqlx::query(
                "INSERT INTO billing_customers (customer_id, company_id, email, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (customer_id) DO NOTHING",
            )
            .bind(customer_id)
            .bind(company_id)
            .bind(email)
            .bind(now_us())
            .execute(&lite.pool)
            .await?
            .rows_affected();
            if inserted == 0
                && let Some(email) = email
            {
                sqlx::query(SET_EMAIL_LITE)
                    .bind(customer_id)
                    .bind(email)
                    .bind(now_us())
                    .execute(&lite.pool)
                    .await?;
            }
            let stored = customer(db, customer_id).await?.map(|c| c.company_id);
            (inserted, stored)
        }
    };
    Ok(Linked {
        company_id: stored.unwrap_or_else(|| company_id.to_string()),
        created: inserted == 1,
    })
}

/// Refreshes a customer's address unless it is the same one (Postgres' `IS DISTINCT FROM` is
/// SQLite's `IS NOT`), so an unchanged address leaves `updated_at` alone.
const SET_EMAIL_PG: &str = "UPDATE billing_customers SET email = $2, updated_at = now()
     WHERE customer_id = $1 AND email IS DISTINCT FROM $2";
const SET_EMAIL_LITE: &str = "UPDATE billing_customers SET email = ?2, updated_at = ?3
     WHERE customer_id = ?1 AND email IS NOT ?2";

/// Remembers the address Stripe has for a customer of `company` (where billing mail goes).
pub async fn set_customer_email(
    db: &Db,
    company: &str,
    customer_id: &str,
    email: &str,
) -> Result<(), DbError> {
    match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query(SET_EMAIL_PG)
                .bind(customer_id)
                .bind(email)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Db::Sqlite(lite) => {
            sqlx::query(SET_EMAIL_LITE)
                .bind(customer_id)
                .bind(email)
                .bind(now_us())
                .execute(&lite.pool)
                .await?;
        }
    }
    Ok(())
}

/// The company's Stripe customer (the most recently linked or updated, if several).
pub async fn customer_for_company(
    db: &Db,
    company: &str,
) -> Result<Option<BillingCustomer>, DbError> {
    let newest = "company_id = $1 ORDER BY updated_at DESC, customer_id LIMIT 1";
    find_customer(db, Scope::Company(company), newest, company).await
}

/// Where the company's billing mail goes: the address Stripe has for its customer, else the
/// newest address of one of its admins voxline has seen in a token.
pub async fn billing_address(
    db: &Db,
    company: &str,
    customer_id: Option<&str>,
) -> Result<Option<String>, DbError> {
    const NEWEST_ADMIN_EMAIL: &str = "SELECT email FROM profiles WHERE company_id = $1
         AND role = 'admin' AND email IS NOT NULL AND email <> '' ORDER BY updated_at DESC LIMIT 1";
    let linked = match customer_id {
        // The company's own customer: one linked to another company is not its address.
        Some(id) => customer_in(db, Scope::Company(company), id).await?,
        None => customer_for_company(db, company).await?,
    };
    if let Some(email) = linked.and_then(|c| c.email) {
        return Ok(Some(email));
    }
    let admin: Option<String> = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query_scalar(NEWEST_ADMIN_EMAIL)
                .bind(company)
                .fetch_optional(&mut *tx)
                .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_scalar(NEWEST_ADMIN_EMAIL)
                .bind(company)
                .fetch_optional(&lite.pool)
                .await?
        }
    };
    Ok(admin)
}
