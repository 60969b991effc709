//! Billing's rows: Stripe is the source of truth for money, and voxline keeps a local copy of
//! what it needs (which customer pays for which company, each subscription's state, the events
//! it was told, the usage it reported) and derives each company's plan and quotas from it.
//!
//! **Order rule.** Stripe delivers events late, twice and out of order, so a subscription row
//! remembers the [`Stamp`] of the write that made it: the event's `created` (Stripe's clock,
//! whole seconds) or, for a reconciliation, the moment its listing started. A new state is
//! written only when [`decide`] says so:
//! - a newer stamp wins and an older one is skipped;
//! - on a tie (same second), the rank decides: `created` (0) < `updated`, `trial_will_end` and
//!   reconciliation snapshots (1) < `deleted` (2), and an equal rank applies (the later
//!   delivery of two snapshots from the same second wins; the hourly reconciliation repairs
//!   the rare wrong guess);
//! - an event never moves a `canceled` subscription to another status (Stripe never reopens
//!   one), while a reconciliation snapshot may (it is read from Stripe, so it is the truth).
//!
//! The same rule guards the upsert's `WHERE`, so two workers racing on one subscription cannot
//! both win.
//!
//! **Tenancy.** On Postgres every query of a tenant table runs in a transaction scoped to the
//! company it is for ([`Scope::Company`]); [`Scope::Platform`] is kept for mapping Stripe's ids
//! to companies and for the work that spans every company (reconciliation, usage reports).
//! `stripe_events` belongs to no company (an event arrives before voxline knows whose it is)
//! and has no policy.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::audit::AuditEntry;
use crate::config::Plan;
use crate::db::Scope;
use crate::{Db, DbError, Settings, Tx, usage};

/// The billing worker's job for one stored Stripe event; its payload is a [`StripeEventJob`].
pub const STRIPE_EVENT_JOB: &str = "billing.stripe_event";
/// Cron kind: compare Stripe's subscriptions with the local copy and repair drift.
pub const RECONCILE_JOB: &str = "billing.reconcile";
/// Cron kind: report closed usage windows to Stripe's billing meter.
pub const USAGE_REPORT_JOB: &str = "usage.report";

/// The Stripe event types the billing worker applies; any other type is stored as `ignored`.
pub const HANDLED_EVENTS: [&str; 8] = [
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
];

pub fn is_handled(event_type: &str) -> bool {
    HANDLED_EVENTS.contains(&event_type)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripeEventJob {
    pub event_id: String,
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn opt_time(us: Option<i64>) -> Option<DateTime<Utc>> {
    us.map(time)
}

fn micros(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_micros())
}

fn corrupt(e: serde_json::Error) -> DbError {
    DbError::Sqlx(sqlx::Error::Decode(Box::new(e)))
}

// ---------------------------------------------------------------------------------------------
// Order rule

/// Where a subscription state comes from, which ranks it against a state of the same second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Created,
    Updated,
    Deleted,
    /// Read from Stripe's API by a reconciliation.
    Snapshot,
}

impl Source {
    pub fn rank(self) -> i16 {
        match self {
            Source::Created => 0,
            Source::Updated | Source::Snapshot => 1,
            Source::Deleted => 2,
        }
    }
}

/// When a state was true, and how it ranks among states of the same second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    pub rank: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Apply,
    /// Older than what is stored (or the same second with a lower rank).
    Stale,
    /// An event would reopen a canceled subscription.
    AfterCancel,
}

/// Whether a state from `source` at `at` with `status` replaces the stored one (see the
/// module documentation for the rule).
pub fn decide(
    stored: Option<(&Stamp, &str)>,
    at: DateTime<Utc>,
    source: Source,
    status: &str,
) -> Decision {
    let Some((stamp, stored_status)) = stored else {
        return Decision::Apply;
    };
    if source != Source::Snapshot && stored_status == "canceled" && status != "canceled" {
        return Decision::AfterCancel;
    }
    if at > stamp.at || (at == stamp.at && source.rank() >= stamp.rank) {
        Decision::Apply
    } else {
        Decision::Stale
    }
}

// ---------------------------------------------------------------------------------------------
// Stripe events

pub const EVENT_PENDING: &str = "pending";
pub const EVENT_APPLIED: &str = "applied";
pub const EVENT_SKIPPED: &str = "skipped";
pub const EVENT_IGNORED: &str = "ignored";

#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub created: DateTime<Utc>,
    pub payload: &'a Value,
    /// `pending` (a job will apply it) or `ignored`.
    pub status: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: String,
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub payload: Value,
    pub status: String,
    pub detail: Option<String>,
}

/// Stores an event in the caller's transaction; false when its id is already stored (a
/// redelivery), in which case nothing changes.
pub async fn insert_event(tx: &mut Tx<'_>, e: &NewEvent<'_>) -> Result<bool, DbError> {
    let inserted = match tx {
        Tx::Postgres(tx) => sqlx::query(
            "INSERT INTO stripe_events (id, type, created, payload, status) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(e.id)
        .bind(e.event_type)
        .bind(e.created)
        .bind(e.payload)
        .bind(e.status)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        Tx::Sqlite { tx, .. } => sqlx::query(
            "INSERT INTO stripe_events (id, type, created, payload, status, received_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(e.id)
        .bind(e.event_type)
        .bind(e.created.timestamp_micros())
        .bind(e.payload.to_string())
        .bind(e.status)
        .bind(now_us())
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    Ok(inserted == 1)
}

pub async fn event(db: &Db, id: &str) -> Result<Option<StoredEvent>, DbError> {
    const SQL_PG: &str =
        "SELECT id, type, created, payload, status, detail FROM stripe_events WHERE id = $1";
    const SQL_LITE: &str =
        "SELECT id, type, created, payload, status, detail FROM stripe_events WHERE id = ?";
    Ok(match db {
        Db::Postgres(pg) => {
            match sqlx::query(SQL_PG)
                .bind(id)
                .fetch_optional(&pg.pool)
                .await?
            {
                None => None,
                Some(r) => Some(StoredEvent {
                    id: r.try_get("id")?,
                    event_type: r.try_get("type")?,
                    created: r.try_get("created")?,
                    payload: r.try_get("payload")?,
                    status: r.try_get("status")?,
                    detail: r.try_get("detail")?,
                }),
            }
        }
        Db::Sqlite(lite) => {
            match sqlx::query(SQL_LITE)
                .bind(id)
                .fetch_optional(&lite.pool)
                .await?
            {
                None => None,
                Some(r) => {
                    let payload: String = r.try_get("payload")?;
                    Some(StoredEvent {
                        id: r.try_get("id")?,
                        event_type: r.try_get("type")?,
                        created: time(r.try_get("created")?),
                        payload: serde_json::from_str(&payload).map_err(corrupt)?,
                        status: r.try_get("status")?,
                        detail: r.try_get("detail")?,
                    })
                }
            }
        }
    })
}

/// The event's status, its row locked until the caller's transaction ends (Postgres; an
/// SQLite write transaction holds the whole database), so one event is applied once even when
/// two workers hold jobs for it.
pub async fn lock_event_status(tx: &mut Tx<'_>, id: &str) -> Result<Option<String>, DbError> {
    Ok(match tx {
        Tx::Postgres(tx) => {
            sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
        }
    })
}

pub async fn finish_event(
    tx: &mut Tx<'_>,
    id: &str,
    status: &str,
    detail: Option<&str>,
) -> Result<(), DbError> {
    match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "UPDATE stripe_events SET status = $2, detail = $3, processed_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(status)
            .bind(detail)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query(
                "UPDATE stripe_events SET status = ?2, detail = ?3, processed_at = ?4 WHERE id = ?1",
            )
            .bind(id)
            .bind(status)
            .bind(detail)
            .bind(now_us())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// How many stored events have each status (for tests and operators).
pub async fn event_counts(db: &Db) -> Result<BTreeMap<String, i64>, DbError> {
    const SQL: &str = "SELECT status, count(*) FROM stripe_events GROUP BY status";
    let rows: Vec<(String, i64)> = match db {
        Db::Postgres(pg) => sqlx::query_as(SQL).fetch_all(&pg.pool).await?,
        Db::Sqlite(lite) => sqlx::query_as(SQL).fetch_all(&lite.pool).await?,
    };
    Ok(rows.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------
// Customers

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BillingCustomer {
    pub customer_id: String,
    pub company_id: String,
    pub email: Option<String>,
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
    let row: Option<(String, String, Option<String>)> = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(scope).await?;
            sqlx::query_as(
                "SELECT customer_id, company_id, email FROM billing_customers WHERE customer_id = $1",
            )
            .bind(customer_id)
            .fetch_optional(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => sqlx::query_as(
            "SELECT customer_id, company_id, email FROM billing_customers WHERE customer_id = ?",
        )
        .bind(customer_id)
        .fetch_optional(&lite.pool)
        .await?,
    };
    Ok(row.map(|(customer_id, company_id, email)| BillingCustomer {
        customer_id,
        company_id,
        email,
    }))
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
    let row: Option<(String, String, Option<String>)> =
        match db {
            Db::Postgres(pg) => {
                let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
                sqlx::query_as(
                "SELECT customer_id, company_id, email FROM billing_customers WHERE company_id = $1
                 ORDER BY updated_at DESC, customer_id LIMIT 1",
            )
            .bind(company)
            .fetch_optional(&mut *tx)
            .await?
            }
            Db::Sqlite(lite) => sqlx::query_as(
                "SELECT customer_id, company_id, email FROM billing_customers WHERE company_id = ?
                 ORDER BY updated_at DESC, customer_id LIMIT 1",
            )
            .bind(company)
            .fetch_optional(&lite.pool)
            .await?,
        };
    Ok(row.map(|(customer_id, company_id, email)| BillingCustomer {
        customer_id,
        company_id,
        email,
    }))
}

/// Where the company's billing mail goes: the address Stripe has for its customer, else the
/// newest address of one of its admins voxline has seen in a token.
pub async fn billing_address(
    db: &Db,
    company: &str,
    customer_id: Option<&str>,
) -> Result<Option<String>, DbError> {
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
            sqlx::query_scalar(
                "SELECT email FROM profiles WHERE company_id = $1 AND role = 'admin'
                   AND email IS NOT NULL AND email <> '' ORDER BY updated_at DESC LIMIT 1",
            )
            .bind(company)
            .fetch_optional(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_scalar(
                "SELECT email FROM profiles WHERE company_id = ? AND role = 'admin'
                   AND email IS NOT NULL AND email <> '' ORDER BY updated_at DESC LIMIT 1",
            )
            .bind(company)
            .fetch_optional(&lite.pool)
            .await?
        }
    };
    Ok(admin)
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/// A subscription as Stripe describes it, in voxline's terms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionState {
    pub id: String,
    pub customer_id: String,
    /// Stripe's status: active, trialing, past_due, canceled, unpaid, incomplete, …
    pub status: String,
    /// The voxline plan its prices name, if any (see [`plan_for_prices`]).
    pub plan: Option<String>,
    pub price_id: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
}

/// The local copy of one subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionRow {
    pub company_id: String,
    #[serde(flatten)]
    pub state: SubscriptionState,
    /// The stamp of the write that made this state (see the order rule).
    pub stamp: Stamp,
    pub last_event_id: Option<String>,
    pub latest_invoice_id: Option<String>,
    pub latest_invoice_status: Option<String>,
    pub invoice_event_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SUB_COLUMNS: &str = "id, company_id, customer_id, status, plan, price_id, current_period_end, \
     trial_end, cancel_at_period_end, canceled_at, last_event_at, last_event_rank, last_event_id, \
     latest_invoice_id, latest_invoice_status, invoice_event_at, created_at, updated_at";

fn pg_sub(r: &sqlx::postgres::PgRow) -> Result<SubscriptionRow, sqlx::Error> {
    Ok(SubscriptionRow {
        company_id: r.try_get("company_id")?,
        state: SubscriptionState {
            id: r.try_get("id")?,
            customer_id: r.try_get("customer_id")?,
            status: r.try_get("status")?,
            plan: r.try_get("plan")?,
            price_id: r.try_get("price_id")?,
            current_period_end: r.try_get("current_period_end")?,
            trial_end: r.try_get("trial_end")?,
            cancel_at_period_end: r.try_get("cancel_at_period_end")?,
            canceled_at: r.try_get("canceled_at")?,
        },
        stamp: Stamp {
            at: r.try_get("last_event_at")?,
            rank: r.try_get("last_event_rank")?,
        },
        last_event_id: r.try_get("last_event_id")?,
        latest_invoice_id: r.try_get("latest_invoice_id")?,
        latest_invoice_status: r.try_get("latest_invoice_status")?,
        invoice_event_at: r.try_get("invoice_event_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn lite_sub(r: &sqlx::sqlite::SqliteRow) -> Result<SubscriptionRow, sqlx::Error> {
    Ok(SubscriptionRow {
        company_id: r.try_get("company_id")?,
        state: SubscriptionState {
            id: r.try_get("id")?,
            customer_id: r.try_get("customer_id")?,
            status: r.try_get("status")?,
            plan: r.try_get("plan")?,
            price_id: r.try_get("price_id")?,
            current_period_end: opt_time(r.try_get("current_period_end")?),
            trial_end: opt_time(r.try_get("trial_end")?),
            cancel_at_period_end: r.try_get("cancel_at_period_end")?,
            canceled_at: opt_time(r.try_get("canceled_at")?),
        },
        stamp: Stamp {
            at: time(r.try_get("last_event_at")?),
            rank: r.try_get("last_event_rank")?,
        },
        last_event_id: r.try_get("last_event_id")?,
        latest_invoice_id: r.try_get("latest_invoice_id")?,
        latest_invoice_status: r.try_get("latest_invoice_status")?,
        invoice_event_at: opt_time(r.try_get("invoice_event_at")?),
        created_at: time(r.try_get("created_at")?),
        updated_at: time(r.try_get("updated_at")?),
    })
}

/// A subscription by its Stripe id, whichever company it belongs to.
pub async fn subscription(db: &Db, id: &str) -> Result<Option<SubscriptionRow>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            // Platform: looked up by Stripe's id, before (or instead of) knowing its company.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            row.as_ref().map(pg_sub).transpose()?
        }
        Db::Sqlite(lite) => {
            let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&lite.pool)
                .await?;
            row.as_ref().map(lite_sub).transpose()?
        }
    })
}

/// The stored subscription, locked until the caller's transaction ends (see
/// [`lock_event_status`]).
pub async fn lock_subscription(
    tx: &mut Tx<'_>,
    id: &str,
) -> Result<Option<SubscriptionRow>, DbError> {
    Ok(match tx {
        Tx::Postgres(tx) => {
            let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = $1 FOR UPDATE");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            row.as_ref().map(pg_sub).transpose()?
        }
        Tx::Sqlite { tx, .. } => {
            let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            row.as_ref().map(lite_sub).transpose()?
        }
    })
}

/// Every subscription of one company (a company may have an old canceled one and a new one).
pub async fn company_subscriptions(
    db: &Db,
    company: &str,
) -> Result<Vec<SubscriptionRow>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            let sql = format!(
                "SELECT {SUB_COLUMNS} FROM subscriptions WHERE company_id = $1 ORDER BY last_event_at DESC, id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .fetch_all(&mut *tx)
                .await?;
            rows.iter().map(pg_sub).collect::<Result<_, _>>()?
        }
        Db::Sqlite(lite) => {
            let sql = format!(
                "SELECT {SUB_COLUMNS} FROM subscriptions WHERE company_id = ? ORDER BY last_event_at DESC, id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .fetch_all(&lite.pool)
                .await?;
            rows.iter().map(lite_sub).collect::<Result<_, _>>()?
        }
    })
}

/// Every stored subscription, by id (what a reconciliation compares Stripe's list with).
pub async fn all_subscriptions(db: &Db) -> Result<Vec<SubscriptionRow>, DbError> {
    let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions ORDER BY id");
    Ok(match db {
        Db::Postgres(pg) => {
            // Platform: a reconciliation compares every company's subscriptions with Stripe's.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *tx)
                .await?;
            rows.iter().map(pg_sub).collect::<Result<_, _>>()?
        }
        Db::Sqlite(lite) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&lite.pool)
                .await?;
            rows.iter().map(lite_sub).collect::<Result<_, _>>()?
        }
    })
}

/// Writes `state` for `company` stamped `stamp`, in the caller's transaction, unless the stored
/// state is newer by the order rule (checked again in the statement itself, so a concurrent
/// writer cannot slip in between). Returns whether the row was written.
pub async fn save_subscription(
    tx: &mut Tx<'_>,
    company: &str,
    state: &SubscriptionState,
    stamp: Stamp,
    event_id: Option<&str>,
    snapshot: bool,
) -> Result<bool, DbError> {
    let written = match tx {
        Tx::Postgres(tx) => sqlx::query(
            "INSERT INTO subscriptions (id, company_id, customer_id, status, plan, price_id,
                 current_period_end, trial_end, cancel_at_period_end, canceled_at,
                 last_event_at, last_event_rank, last_event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (id) DO UPDATE SET company_id = EXCLUDED.company_id,
                 customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
                 plan = EXCLUDED.plan, price_id = EXCLUDED.price_id,
                 current_period_end = EXCLUDED.current_period_end,
                 trial_end = EXCLUDED.trial_end,
                 cancel_at_period_end = EXCLUDED.cancel_at_period_end,
                 canceled_at = EXCLUDED.canceled_at, last_event_at = EXCLUDED.last_event_at,
                 last_event_rank = EXCLUDED.last_event_rank,
                 last_event_id = EXCLUDED.last_event_id, updated_at = now()
             WHERE ($14 OR subscriptions.status <> 'canceled' OR EXCLUDED.status = 'canceled')
               AND (EXCLUDED.last_event_at > subscriptions.last_event_at
                    OR (EXCLUDED.last_event_at = subscriptions.last_event_at
                        AND EXCLUDED.last_event_rank >= subscriptions.last_event_rank))",
        )
        .bind(&state.id)
        .bind(company)
        .bind(&state.customer_id)
        .bind(&state.status)
        .bind(&state.plan)
        .bind(&state.price_id)
        .bind(state.current_period_end)
        .bind(state.trial_end)
        .bind(state.cancel_at_period_end)
        .bind(state.canceled_at)
        .bind(stamp.at)
        .bind(stamp.rank)
        .bind(event_id)
        .bind(snapshot)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        Tx::Sqlite { tx, .. } => sqlx::query(
            "INSERT INTO subscriptions (id, company_id, customer_id, status, plan, price_id,
                 current_period_end, trial_end, cancel_at_period_end, canceled_at,
                 last_event_at, last_event_rank, last_event_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?15, ?15)
             ON CONFLICT (id) DO UPDATE SET company_id = excluded.company_id,
                 customer_id = excluded.customer_id, status = excluded.status,
                 plan = excluded.plan, price_id = excluded.price_id,
                 current_period_end = excluded.current_period_end,
                 trial_end = excluded.trial_end,
                 cancel_at_period_end = excluded.cancel_at_period_end,
                 canceled_at = excluded.canceled_at, last_event_at = excluded.last_event_at,
                 last_event_rank = excluded.last_event_rank,
                 last_event_id = excluded.last_event_id, updated_at = excluded.updated_at
             WHERE (?14 OR subscriptions.status <> 'canceled' OR excluded.status = 'canceled')
               AND (excluded.last_event_at > subscriptions.last_event_at
                    OR (excluded.last_event_at = subscriptions.last_event_at
                        AND excluded.last_event_rank >= subscriptions.last_event_rank))",
        )
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
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    Ok(written == 1)
}

/// Records the newest invoice event of a stored subscription (older ones change nothing).
/// Returns whether the row changed.
pub async fn record_invoice(
    tx: &mut Tx<'_>,
    subscription_id: &str,
    invoice_id: &str,
    status: &str,
    at: DateTime<Utc>,
) -> Result<bool, DbError> {
    let changed = match tx {
        Tx::Postgres(tx) => sqlx::query(
            "UPDATE subscriptions SET latest_invoice_id = $2, latest_invoice_status = $3,
                 invoice_event_at = $4, updated_at = now()
             WHERE id = $1 AND (invoice_event_at IS NULL OR invoice_event_at <= $4)",
        )
        .bind(subscription_id)
        .bind(invoice_id)
        .bind(status)
        .bind(at)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        Tx::Sqlite { tx, .. } => sqlx::query(
            "UPDATE subscriptions SET latest_invoice_id = ?2, latest_invoice_status = ?3,
                 invoice_event_at = ?4, updated_at = ?5
             WHERE id = ?1 AND (invoice_event_at IS NULL OR invoice_event_at <= ?4)",
        )
        .bind(subscription_id)
        .bind(invoice_id)
        .bind(status)
        .bind(at.timestamp_micros())
        .bind(now_us())
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    Ok(changed == 1)
}

/// Appends to the audit log in the caller's transaction, so a billing change and its record
/// commit together (the same row [`crate::audit::append`] writes).
pub async fn audit(tx: &mut Tx<'_>, entry: &AuditEntry<'_>) -> Result<(), DbError> {
    crate::audit::append_in(tx, entry).await.map(drop)
}

// ---------------------------------------------------------------------------------------------
// Plans and quotas

/// The plan a subscription's prices put it on: the first plan (by name) listing one of them
/// (a price id or lookup key). Validation makes sure no price is on two plans.
pub fn plan_for_prices(settings: &Settings, prices: &[&str]) -> Option<String> {
    settings
        .plans
        .iter()
        .find(|(_, plan)| {
            plan.stripe_prices
                .iter()
                .any(|p| prices.contains(&p.as_str()))
        })
        .map(|(name, _)| name.clone())
}

/// A company's plan as intake sees it.
#[derive(Debug, Clone)]
pub struct PlanChoice<'a> {
    pub name: &'a str,
    pub plan: &'a Plan,
    /// The subscription that decided it: the usable one, else the newest.
    pub subscription: Option<&'a SubscriptionRow>,
    /// Whether that subscription lets the company use its plan.
    pub usable: bool,
}

pub fn is_usable(settings: &Settings, status: &str) -> bool {
    settings.billing.usable_statuses.iter().any(|s| s == status)
}

/// The company's plan: a usable subscription's plan (or the default plan when its prices name
/// none), else the default plan.
pub fn choose_plan<'a>(settings: &'a Settings, subs: &'a [SubscriptionRow]) -> PlanChoice<'a> {
    let usable = subs
        .iter()
        .filter(|s| is_usable(settings, &s.state.status))
        .max_by_key(|s| s.stamp.at);
    let subscription = usable.or_else(|| subs.iter().max_by_key(|s| s.stamp.at));
    let named = usable
        .and_then(|s| s.state.plan.as_deref())
        .and_then(|name| settings.plans.get_key_value(name));
    let (name, plan) = match named {
        Some((name, plan)) => (name.as_str(), plan),
        None => {
            let name = settings.billing.default_plan.as_str();
            match settings.plans.get_key_value(name) {
                Some((name, plan)) => (name.as_str(), plan),
                // Validation guarantees the default plan exists; this is only a fallback.
                None => (name, &NO_LIMITS),
            }
        }
    };
    PlanChoice {
        name,
        plan,
        subscription,
        usable: usable.is_some(),
    }
}

static NO_LIMITS: Plan = Plan {
    requires_subscription: false,
    minutes_per_month: 0,
    sessions_per_day: 0,
    stripe_prices: Vec::new(),
};

/// The calendar month (UTC) around `now`: `[start, next start)`.
pub fn month_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let first = |y: i32, m: u32| {
        NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| Utc.from_utc_datetime(&t))
            .unwrap_or(now)
    };
    let start = first(now.year(), now.month());
    let end = if now.month() == 12 {
        first(now.year() + 1, 1)
    } else {
        first(now.year(), now.month() + 1)
    };
    (start, end)
}

/// The day (UTC) around `now`: `[midnight, next midnight)`.
pub fn day_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| Utc.from_utc_datetime(&t))
        .unwrap_or(now);
    (start, start + Duration::days(1))
}

/// Sessions the company submitted in `[from, to)`.
pub async fn sessions_created(
    db: &Db,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query_scalar(
                "SELECT count(*) FROM sessions WHERE company_id = $1 AND created_at >= $2 AND created_at < $3",
            )
            .bind(company)
            .bind(from)
            .bind(to)
            .fetch_one(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_scalar(
                "SELECT count(*) FROM sessions WHERE company_id = ? AND created_at >= ? AND created_at < ?",
            )
            .bind(company)
            .bind(from.timestamp_micros())
            .bind(to.timestamp_micros())
            .fetch_one(&lite.pool)
            .await?
        }
    })
}

/// Why intake refuses a company's new session.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Denial {
    #[error("the {plan} plan needs an active subscription; this company has none")]
    SubscriptionRequired { plan: String },
    #[error(
        "the {plan} plan includes {limit} minutes of analysed conversation per month and {used:.1} are used; it resets at {resets_at}"
    )]
    MinutesPerMonth {
        plan: String,
        limit: u64,
        used: f64,
        resets_at: DateTime<Utc>,
    },
    #[error(
        "the {plan} plan allows {limit} sessions per day and {used} were submitted today; it resets at {resets_at}"
    )]
    SessionsPerDay {
        plan: String,
        limit: u64,
        used: i64,
        resets_at: DateTime<Utc>,
    },
}

impl Denial {
    /// The limit's name, as configured under `[plans.NAME]` (or `subscription`).
    pub fn limit(&self) -> &'static str {
        match self {
            Denial::SubscriptionRequired { .. } => "subscription",
            Denial::MinutesPerMonth { .. } => "minutes_per_month",
            Denial::SessionsPerDay { .. } => "sessions_per_day",
        }
    }

    /// When asking again can succeed (none for a missing subscription).
    pub fn resets_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Denial::SubscriptionRequired { .. } => None,
            Denial::MinutesPerMonth { resets_at, .. }
            | Denial::SessionsPerDay { resets_at, .. } => Some(*resets_at),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(transparent)]
    Denied(Denial),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A plan's daily session limit, which a submission re-checks inside the transaction that
/// writes it ([`hold_daily_slot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DailySessions {
    pub plan: String,
    pub limit: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// May the company submit one more session now? Limits of 0 are not checked (nor queried).
/// Returns the daily session limit to hold in the submission's transaction, if the plan has one:
/// the check here is a cheap early answer, [`hold_daily_slot`] is the exact one. The monthly
/// minutes stay a soft limit: a session's minutes are known only once it is analysed.
pub async fn check_quota(
    db: &Db,
    settings: &Settings,
    company: &str,
    now: DateTime<Utc>,
) -> Result<Option<DailySessions>, QuotaError> {
    let subs = company_subscriptions(db, company).await?;
    let choice = choose_plan(settings, &subs);
    let plan = choice.plan;
    if plan.requires_subscription && !choice.usable {
        return Err(QuotaError::Denied(Denial::SubscriptionRequired {
            plan: choice.name.to_string(),
        }));
    }
    let mut daily = None;
    if plan.sessions_per_day > 0 {
        let (from, to) = day_bounds(now);
        let limit = DailySessions {
            plan: choice.name.to_string(),
            limit: plan.sessions_per_day,
            from,
            to,
        };
        limit.admit(sessions_created(db, company, from, to).await?)?;
        daily = Some(limit);
    }
    if plan.minutes_per_month > 0 {
        let (from, to) = month_bounds(now);
        let used = usage::total(db, company, from, to).await?.seconds / 60.0;
        if used >= plan.minutes_per_month as f64 {
            return Err(QuotaError::Denied(Denial::MinutesPerMonth {
                plan: choice.name.to_string(),
                limit: plan.minutes_per_month,
                used,
                resets_at: to,
            }));
        }
    }
    Ok(daily)
}

impl DailySessions {
    fn admit(&self, used: i64) -> Result<(), QuotaError> {
        if used >= i64::try_from(self.limit).unwrap_or(i64::MAX) {
            return Err(QuotaError::Denied(Denial::SessionsPerDay {
                plan: self.plan.clone(),
                limit: self.limit,
                used,
                resets_at: self.to,
            }));
        }
        Ok(())
    }
}

/// Makes the daily session limit exact: called in the transaction that writes a new session,
/// before the write. It serialises the company's submissions until the commit — on Postgres
/// with a transaction-scoped advisory lock per company, on SQLite by the write lock that
/// `BEGIN IMMEDIATE` already holds — and counts again, so submissions racing at the limit
/// cannot all pass. Only plans with a daily limit pay for the lock.
pub async fn hold_daily_slot(
    tx: &mut Tx<'_>,
    company: &str,
    daily: &DailySessions,
) -> Result<(), QuotaError> {
    let used: i64 = match tx {
        Tx::Postgres(tx) => {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('voxline-daily-sessions:' || $1, 0))")
                .bind(company)
                .execute(&mut **tx)
                .await
                .map_err(DbError::from)?;
            // A new statement, so a new snapshot: it sees what a racer committed before
            // releasing the lock.
            sqlx::query_scalar(
                "SELECT count(*) FROM sessions WHERE company_id = $1 AND created_at >= $2 AND created_at < $3",
            )
            .bind(company)
            .bind(daily.from)
            .bind(daily.to)
            .fetch_one(&mut **tx)
            .await
            .map_err(DbError::from)?
        }
        Tx::Sqlite { tx, .. } => sqlx::query_scalar(
            "SELECT count(*) FROM sessions WHERE company_id = ? AND created_at >= ? AND created_at < ?",
        )
        .bind(company)
        .bind(daily.from.timestamp_micros())
        .bind(daily.to.timestamp_micros())
        .fetch_one(&mut **tx)
        .await
        .map_err(DbError::from)?,
    };
    daily.admit(used)
}

// ---------------------------------------------------------------------------------------------
// Metered usage

/// A company's analysed seconds in one usage window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageWindow {
    pub company_id: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub seconds: f64,
}

/// Every company's usage in `[from, to)`, in windows of `window_secs` aligned to the epoch.
pub async fn usage_windows(
    db: &Db,
    window_secs: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<UsageWindow>, DbError> {
    let width = i64::try_from(window_secs.max(1)).unwrap_or(3600);
    let rows: Vec<(String, i64, f64)> = match db {
        Db::Postgres(pg) => {
            // Platform: the usage report sums every company's usage.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            sqlx::query_as(
                "SELECT company_id, floor(extract(epoch FROM recorded_at)::float8 / $1::float8)::int8 AS w,
                        sum(seconds)::float8
                 FROM usage_records WHERE recorded_at >= $2 AND recorded_at < $3
                 GROUP BY company_id, w ORDER BY company_id, w",
            )
            .bind(width as f64)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_as(
                "SELECT company_id, recorded_at / ?1 AS w, CAST(sum(seconds) AS REAL)
                 FROM usage_records WHERE recorded_at >= ?2 AND recorded_at < ?3
                 GROUP BY company_id, w ORDER BY company_id, w",
            )
            .bind(width * 1_000_000)
            .bind(from.timestamp_micros())
            .bind(to.timestamp_micros())
            .fetch_all(&lite.pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(company_id, w, seconds)| {
            let start = DateTime::from_timestamp(w * width, 0).unwrap_or_default();
            UsageWindow {
                company_id,
                window_start: start,
                window_end: start + Duration::seconds(width),
                seconds,
            }
        })
        .collect())
}

pub const USAGE_PENDING: &str = "pending";
pub const USAGE_REPORTED: &str = "reported";
pub const USAGE_FAILED: &str = "failed";

/// One window's report to Stripe: what was (or will be) sent, and whether it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    pub company_id: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub customer_id: String,
    /// Whole seconds (Stripe's meter values are integers).
    pub value: i64,
    pub identifier: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

fn pg_report(r: &sqlx::postgres::PgRow) -> Result<UsageReport, sqlx::Error> {
    Ok(UsageReport {
        company_id: r.try_get("company_id")?,
        window_start: r.try_get("window_start")?,
        window_end: r.try_get("window_end")?,
        customer_id: r.try_get("customer_id")?,
        value: r.try_get("value")?,
        identifier: r.try_get("identifier")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
    })
}

fn lite_report(r: &sqlx::sqlite::SqliteRow) -> Result<UsageReport, sqlx::Error> {
    Ok(UsageReport {
        company_id: r.try_get("company_id")?,
        window_start: time(r.try_get("window_start")?),
        window_end: time(r.try_get("window_end")?),
        customer_id: r.try_get("customer_id")?,
        value: r.try_get("value")?,
        identifier: r.try_get("identifier")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
    })
}

const REPORT_COLUMNS: &str = "company_id, window_start, window_end, customer_id, value, identifier, status, attempts, last_error";

/// Reports of windows starting at or after `from`, oldest first.
pub async fn usage_reports(db: &Db, from: DateTime<Utc>) -> Result<Vec<UsageReport>, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            // Platform: the usage report compares every company's windows with these.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            let sql = format!(
                "SELECT {REPORT_COLUMNS} FROM usage_reports WHERE window_start >= $1 ORDER BY window_start, company_id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(from)
                .fetch_all(&mut *tx)
                .await?;
            rows.iter().map(pg_report).collect::<Result<_, _>>()?
        }
        Db::Sqlite(lite) => {
            let sql = format!(
                "SELECT {REPORT_COLUMNS} FROM usage_reports WHERE window_start >= ? ORDER BY window_start, company_id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(from.timestamp_micros())
                .fetch_all(&lite.pool)
                .await?;
            rows.iter().map(lite_report).collect::<Result<_, _>>()?
        }
    })
}

/// Creates the window's report as `pending` unless one exists, and returns the stored one: a
/// retried report sends exactly what the first attempt sent (value and identifier).
pub async fn claim_usage_report(db: &Db, report: &UsageReport) -> Result<UsageReport, DbError> {
    let (company, start) = (&report.company_id, report.window_start);
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query(
                "INSERT INTO usage_reports (company_id, window_start, window_end, customer_id, value, identifier, status)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT (company_id, window_start) DO NOTHING",
            )
            .bind(company)
            .bind(start)
            .bind(report.window_end)
            .bind(&report.customer_id)
            .bind(report.value)
            .bind(&report.identifier)
            .execute(&mut *tx)
            .await?;
            let sql = format!(
                "SELECT {REPORT_COLUMNS} FROM usage_reports WHERE company_id = $1 AND window_start = $2"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(start)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            pg_report(&row)?
        }
        Db::Sqlite(lite) => {
            sqlx::query(
                "INSERT INTO usage_reports (company_id, window_start, window_end, customer_id, value, identifier, status, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (company_id, window_start) DO NOTHING",
            )
            .bind(company)
            .bind(start.timestamp_micros())
            .bind(report.window_end.timestamp_micros())
            .bind(&report.customer_id)
            .bind(report.value)
            .bind(&report.identifier)
            .bind(now_us())
            .execute(&lite.pool)
            .await?;
            let sql = format!(
                "SELECT {REPORT_COLUMNS} FROM usage_reports WHERE company_id = ? AND window_start = ?"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .bind(start.timestamp_micros())
                .fetch_one(&lite.pool)
                .await?;
            lite_report(&row)?
        }
    })
}

/// Records one attempt at sending a window: `Ok` marks it reported (never sent again), an
/// error keeps it for the next run with the reason.
pub async fn finish_usage_report(
    db: &Db,
    company: &str,
    window_start: DateTime<Utc>,
    outcome: Result<(), &str>,
) -> Result<(), DbError> {
    let (status, error) = match outcome {
        Ok(()) => (USAGE_REPORTED, None),
        Err(e) => (USAGE_FAILED, Some(e)),
    };
    match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query(
                "UPDATE usage_reports SET status = $3, last_error = $4, attempts = attempts + 1,
                     reported_at = CASE WHEN $3 = 'reported' THEN now() ELSE reported_at END
                 WHERE company_id = $1 AND window_start = $2 AND status <> 'reported'",
            )
            .bind(company)
            .bind(window_start)
            .bind(status)
            .bind(error)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Db::Sqlite(lite) => {
            sqlx::query(
                "UPDATE usage_reports SET status = ?3, last_error = ?4, attempts = attempts + 1,
                     reported_at = CASE WHEN ?3 = 'reported' THEN ?5 ELSE reported_at END
                 WHERE company_id = ?1 AND window_start = ?2 AND status <> 'reported'",
            )
            .bind(company)
            .bind(window_start.timestamp_micros())
            .bind(status)
            .bind(error)
            .bind(now_us())
            .execute(&lite.pool)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn stamp(secs: i64, source: Source) -> Stamp {
        Stamp {
            at: at(secs),
            rank: source.rank(),
        }
    }

    #[test]
    fn a_first_state_always_applies() {
        assert_eq!(
            decide(None, at(1), Source::Updated, "active"),
            Decision::Apply
        );
    }

    #[test]
    fn a_newer_event_applies_and_an_older_one_is_stale() {
        let stored = stamp(100, Source::Updated);
        let s = Some((&stored, "active"));
        assert_eq!(
            decide(s, at(101), Source::Created, "incomplete"),
            Decision::Apply
        );
        assert_eq!(
            decide(s, at(99), Source::Updated, "past_due"),
            Decision::Stale
        );
    }

    #[test]
    fn within_one_second_created_updated_deleted_is_the_order() {
        let created = stamp(100, Source::Created);
        let updated = stamp(100, Source::Updated);
        let deleted = stamp(100, Source::Deleted);
        // A late `created` of the same second does not undo the `updated`.
        assert_eq!(
            decide(
                Some((&updated, "active")),
                at(100),
                Source::Created,
                "incomplete"
            ),
            Decision::Stale
        );
        assert_eq!(
            decide(
                Some((&created, "incomplete")),
                at(100),
                Source::Updated,
                "active"
            ),
            Decision::Apply
        );
        // Two `updated` of the same second: the later delivery wins.
        assert_eq!(
            decide(
                Some((&updated, "active")),
                at(100),
                Source::Updated,
                "past_due"
            ),
            Decision::Apply
        );
        assert_eq!(
            decide(
                Some((&updated, "active")),
                at(100),
                Source::Deleted,
                "canceled"
            ),
            Decision::Apply
        );
        assert_eq!(
            decide(
                Some((&deleted, "canceled")),
                at(100),
                Source::Snapshot,
                "canceled"
            ),
            Decision::Stale
        );
    }

    #[test]
    fn an_event_never_reopens_a_canceled_subscription_but_a_snapshot_may() {
        let deleted = stamp(100, Source::Deleted);
        let s = Some((&deleted, "canceled"));
        assert_eq!(
            decide(s, at(500), Source::Updated, "active"),
            Decision::AfterCancel
        );
        assert_eq!(
            decide(s, at(500), Source::Snapshot, "active"),
            Decision::Apply
        );
        assert_eq!(
            decide(s, at(500), Source::Updated, "canceled"),
            Decision::Apply
        );
    }

    #[test]
    fn months_and_days_are_utc_calendar_ones() {
        let now = DateTime::parse_from_rfc3339("2026-12-31T23:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        let (from, to) = month_bounds(now);
        assert_eq!(from.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        let (from, to) = day_bounds(now);
        assert_eq!(from.to_rfc3339(), "2026-12-31T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }

    fn row(status: &str, plan: Option<&str>, secs: i64) -> SubscriptionRow {
        SubscriptionRow {
            company_id: "acme".into(),
            state: SubscriptionState {
                id: format!("sub_{secs}"),
                customer_id: "cus_1".into(),
                status: status.into(),
                plan: plan.map(str::to_string),
                price_id: None,
                current_period_end: None,
                trial_end: None,
                cancel_at_period_end: false,
                canceled_at: None,
            },
            stamp: stamp(secs, Source::Updated),
            last_event_id: None,
            latest_invoice_id: None,
            latest_invoice_status: None,
            invoice_event_at: None,
            created_at: at(secs),
            updated_at: at(secs),
        }
    }

    #[test]
    fn the_plan_is_the_usable_subscriptions_else_the_default() {
        let settings = Settings::from_toml_overrides(
            "[plans.pro]\nstripe_prices = [\"price_pro\", \"pro_monthly\"]",
        )
        .unwrap();
        assert_eq!(
            plan_for_prices(&settings, &["price_x", "pro_monthly"]).as_deref(),
            Some("pro")
        );
        assert_eq!(plan_for_prices(&settings, &["price_x"]), None);

        let none = choose_plan(&settings, &[]);
        assert_eq!((none.name, none.usable), ("free", false));

        let subs = [
            row("canceled", Some("pro"), 10),
            row("active", Some("pro"), 5),
        ];
        let chosen = choose_plan(&settings, &subs);
        assert_eq!((chosen.name, chosen.usable), ("pro", true));
        assert_eq!(chosen.subscription.unwrap().state.id, "sub_5");

        let lapsed = [row("canceled", Some("pro"), 10)];
        let chosen = choose_plan(&settings, &lapsed);
        assert_eq!((chosen.name, chosen.usable), ("free", false));
        assert_eq!(chosen.subscription.unwrap().state.id, "sub_10");

        let unnamed = [row("active", None, 10)];
        assert_eq!(choose_plan(&settings, &unnamed).name, "free");
    }
}
