//! `subscriptions`: the local copy of each Stripe subscription, written under the order rule
//! (see the module documentation of `billing`), and the newest invoice event of each.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Columns, micros, now_us};
use crate::billing::Stamp;
use crate::db::Scope;
use crate::{Db, DbError, Tx};

/// A subscription as Stripe describes it, in voxline's terms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionState {
    pub id: String,
    pub customer_id: String,
    /// Stripe's status: active, trialing, past_due, canceled, unpaid, incomplete, …
    pub status: String,
    /// The voxline plan its prices name, if any (see [`plan_for_prices`](crate::billing::plan_for_prices)).
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

/// One row of [`SUB_COLUMNS`], from either database.
fn subscription_row(r: &impl Columns) -> Result<SubscriptionRow, sqlx::Error> {
    Ok(SubscriptionRow {
        company_id: r.get("company_id")?,
        state: SubscriptionState {
            id: r.get("id")?,
            customer_id: r.get("customer_id")?,
            status: r.get("status")?,
            plan: r.get("plan")?,
            price_id: r.get("price_id")?,
            current_period_end: r.opt_time("current_period_end")?,
            trial_end: r.opt_time("trial_end")?,
            cancel_at_period_end: r.get("cancel_at_period_end")?,
            canceled_at: r.opt_time("canceled_at")?,
        },
        stamp: Stamp {
            at: r.time("last_event_at")?,
            rank: r.get("last_event_rank")?,
        },
        last_event_id: r.get("last_event_id")?,
        latest_invoice_id: r.get("latest_invoice_id")?,
        latest_invoice_status: r.get("latest_invoice_status")?,
        invoice_event_at: r.opt_time("invoice_event_at")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

/// A subscription by its Stripe id, whichever company it belongs to.
pub async fn subscription(db: &Db, id: &str) -> Result<Option<SubscriptionRow>, DbError> {
    // Platform: looked up by Stripe's id, before (or instead of) knowing its company.
    let found = select(db, Scope::Platform, "WHERE id = $1", Some(id)).await?;
    Ok(found.into_iter().next())
}

/// The stored subscription, locked until the caller's transaction ends (see
/// [`lock_event_status`](crate::billing::lock_event_status)).
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
            row.as_ref().map(subscription_row).transpose()?
        }
        Tx::Sqlite { tx, .. } => {
            let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            row.as_ref().map(subscription_row).transpose()?
        }
    })
}

/// Every subscription of one company (a company may have an old canceled one and a new one).
pub async fn company_subscriptions(
    db: &Db,
    company: &str,
) -> Result<Vec<SubscriptionRow>, DbError> {
    let newest_first = "WHERE company_id = $1 ORDER BY last_event_at DESC, id";
    select(db, Scope::Company(company), newest_first, Some(company)).await
}

/// [`company_subscriptions`] in the caller's transaction (on Postgres scoped to the company):
/// what the quota check reads inside the transaction that writes a new session.
pub async fn company_subscriptions_in(
    tx: &mut Tx<'_>,
    company: &str,
) -> Result<Vec<SubscriptionRow>, DbError> {
    let sql = format!(
        "SELECT {SUB_COLUMNS} FROM subscriptions WHERE company_id = $1 ORDER BY last_event_at DESC, id"
    );
    let rows: Result<Vec<SubscriptionRow>, sqlx::Error> = match tx {
        Tx::Postgres(tx) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .fetch_all(&mut **tx)
                .await?;
            rows.iter().map(subscription_row).collect()
        }
        Tx::Sqlite { tx, .. } => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(company)
                .fetch_all(&mut **tx)
                .await?;
            rows.iter().map(subscription_row).collect()
        }
    };
    Ok(rows?)
}

/// Every stored subscription, by id (what a reconciliation compares Stripe's list with).
pub async fn all_subscriptions(db: &Db) -> Result<Vec<SubscriptionRow>, DbError> {
    // Platform: a reconciliation compares every company's subscriptions with Stripe's.
    select(db, Scope::Platform, "ORDER BY id", None).await
}

/// The subscriptions `scope` may see, filtered and ordered by `clauses` (whose `$1`, if any,
/// is `key`).
async fn select(
    db: &Db,
    scope: Scope<'_>,
    clauses: &str,
    key: Option<&str>,
) -> Result<Vec<SubscriptionRow>, DbError> {
    let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions {clauses}");
    let rows: Result<Vec<SubscriptionRow>, sqlx::Error> = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(scope).await?;
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            if let Some(key) = key {
                query = query.bind(key);
            }
            let rows = query.fetch_all(&mut *tx).await?;
            rows.iter().map(subscription_row).collect()
        }
        Db::Sqlite(lite) => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            if let Some(key) = key {
                query = query.bind(key);
            }
            let rows = query.fetch_all(&lite.pool).await?;
            rows.iter().map(subscription_row).collect()
        }
    };
    Ok(rows?)
}

/// The upsert of [`save_subscription`], for both databases: `now` is the time of the write,
/// Postgres' `now()` or the microseconds SQLite is given as `$15`. Its `WHERE` is the order
/// rule (`$14`: the state is a reconciliation snapshot, which may reopen a canceled one).
fn upsert_sql(now: &str) -> String {
    format!(
        "INSERT INTO subscriptions (id, company_id, customer_id, status, plan, price_id,
             current_period_end, trial_end, cancel_at_period_end, canceled_at,
             last_event_at, last_event_rank, last_event_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, {now}, {now})
         ON CONFLICT (id) DO UPDATE SET company_id = excluded.company_id,
             customer_id = excluded.customer_id, status = excluded.status,
             plan = excluded.plan, price_id = excluded.price_id,
             current_period_end = excluded.current_period_end,
             trial_end = excluded.trial_end,
             cancel_at_period_end = excluded.cancel_at_period_end,
             canceled_at = excluded.canceled_at, last_event_at = excluded.last_event_at,
             last_event_rank = excluded.last_event_rank,
             last_event_id = excluded.last_event_id, updated_at = excluded.updated_at
         WHERE ($14 OR subscriptions.status <> 'canceled' OR excluded.status = 'canceled')
           AND (excluded.last_event_at > subscriptions.last_event_at
                OR (excluded.last_event_at = subscriptions.last_event_at
                    AND excluded.last_event_rank >= subscriptions.last_event_rank))"
    )
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
        Tx::Postgres(tx) => sqlx::query(sqlx::AssertSqlSafe(upsert_sql("now()")))
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
        Tx::Sqlite { tx, .. } => sqlx::query(sqlx::AssertSqlSafe(upsert_sql("$15")))
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
