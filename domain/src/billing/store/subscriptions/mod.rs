//! `subscriptions`: the local copy of each Stripe subscription, written under the order rule
//! (see the module documentation of `billing`), and the newest invoice event of each.
//! [`SubscriptionStore`] and [`SubscriptionTxStore`] are implemented for Postgres
//! (`postgres.rs`) and SQLite (`sqlite.rs`).

/// [`SubscriptionStore`] for one database handle (`$handle`): the same statements on both
/// databases, each run by [`Own`](crate::portable::Own) in the scope it names.
macro_rules! subscription_store {
    ($handle:ty) => {
        #[async_trait::async_trait]
        impl super::SubscriptionStore for $handle {
            async fn subscription(
                &self,
                id: &str,
            ) -> Result<Option<super::SubscriptionRow>, $crate::DbError> {
                // Platform: looked up by Stripe's id, before (or instead of) knowing its company.
                let scope = $crate::db::Scope::Platform;
                let found = self.select_subscriptions(scope, super::BY_ID, Some(id));
                Ok(found.await?.into_iter().next())
            }

            async fn company_subscriptions(
                &self,
                company: &str,
            ) -> Result<Vec<super::SubscriptionRow>, $crate::DbError> {
                let scope = $crate::db::Scope::Company(company);
                self.select_subscriptions(scope, super::OF_COMPANY_NEWEST_FIRST, Some(company))
                    .await
            }

            async fn all_subscriptions(
                &self,
            ) -> Result<Vec<super::SubscriptionRow>, $crate::DbError> {
                // Platform: a reconciliation compares every company's subscriptions with Stripe's.
                let scope = $crate::db::Scope::Platform;
                self.select_subscriptions(scope, super::ALL_BY_ID, None)
                    .await
            }
        }

        impl $handle {
            /// The subscriptions `scope` may see, filtered and ordered by `clauses` (whose `$1`,
            /// if any, is `key`).
            async fn select_subscriptions(
                &self,
                scope: $crate::db::Scope<'_>,
                clauses: &str,
                key: Option<&str>,
            ) -> Result<Vec<super::SubscriptionRow>, $crate::DbError> {
                let mut conn = self.own(scope).await?;
                let sql = sqlx::AssertSqlSafe(super::select_sql(clauses));
                let params = key.map($crate::portable::Param::from);
                let rows = $crate::portable::rows(&mut *conn, sql, params.as_slice()).await?;
                Ok(rows
                    .iter()
                    .map(super::subscription_row)
                    .collect::<Result<_, _>>()?)
            }
        }
    };
}

/// [`SubscriptionTxStore`] for one driver's connection (`$connection`, of `$dialect`): the
/// same statements on both databases, but for the row lock and the time of the write.
macro_rules! subscription_tx_store {
    ($connection:ty, $dialect:ty) => {
        #[async_trait::async_trait]
        impl super::SubscriptionTxStore for $connection {
            async fn lock_subscription(
                &mut self,
                id: &str,
            ) -> Result<Option<super::SubscriptionRow>, $crate::DbError> {
                use $crate::portable::Dialect;
                let sql = super::select_sql(&format!("{}{}", super::BY_ID, <$dialect>::ROW_LOCK));
                let row =
                    $crate::portable::row(self, sqlx::AssertSqlSafe(sql), &[id.into()]).await?;
                Ok(row.as_ref().map(super::subscription_row).transpose()?)
            }

            async fn quota_reads(
                &mut self,
                company: &str,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
            ) -> Result<super::QuotaReads, $crate::DbError> {
                let sql = sqlx::AssertSqlSafe(super::QUOTA_READS.as_str());
                let params = [company.into(), from.into(), to.into()];
                let rows = $crate::portable::rows(self, sql, &params).await?;
                super::quota_reads(&rows)
            }

            async fn save_subscription(
                &mut self,
                company: &str,
                state: &super::SubscriptionState,
                stamp: $crate::billing::Stamp,
                event_id: Option<&str>,
                snapshot: bool,
            ) -> Result<bool, $crate::DbError> {
                use $crate::portable::Dialect;
                let sql = sqlx::AssertSqlSafe(super::upsert_sql(&<$dialect>::now(15)));
                let params = super::upsert_params(company, state, stamp, event_id, snapshot);
                Ok($crate::portable::execute(self, sql, &params).await? == 1)
            }

            async fn record_invoice(
                &mut self,
                subscription_id: &str,
                invoice_id: &str,
                status: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::DbError> {
                use $crate::portable::Dialect;
                let sql = sqlx::AssertSqlSafe(super::record_invoice_sql(&<$dialect>::now(5)));
                let params = [
                    subscription_id.into(),
                    invoice_id.into(),
                    status.into(),
                    at.into(),
                    $crate::portable::Param::Now,
                ];
                Ok($crate::portable::execute(self, sql, &params).await? == 1)
            }
        }
    };
}

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Columns;
use crate::billing::Stamp;
use crate::portable::Param;
use crate::usage::UsageTotal;
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

/// The subscriptions, each read on its own.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// See [`subscription`].
    async fn subscription(&self, id: &str) -> Result<Option<SubscriptionRow>, DbError>;

    /// See [`company_subscriptions`].
    async fn company_subscriptions(&self, company: &str) -> Result<Vec<SubscriptionRow>, DbError>;

    /// See [`all_subscriptions`].
    async fn all_subscriptions(&self) -> Result<Vec<SubscriptionRow>, DbError>;
}

/// The subscriptions inside a caller's transaction (reached with [`Tx::billing`]).
#[async_trait]
pub trait SubscriptionTxStore: Send {
    /// See [`lock_subscription`].
    async fn lock_subscription(&mut self, id: &str) -> Result<Option<SubscriptionRow>, DbError>;

    /// See [`quota_reads_in`].
    async fn quota_reads(
        &mut self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<QuotaReads, DbError>;

    /// See [`save_subscription`].
    async fn save_subscription(
        &mut self,
        company: &str,
        state: &SubscriptionState,
        stamp: Stamp,
        event_id: Option<&str>,
        snapshot: bool,
    ) -> Result<bool, DbError>;

    /// See [`record_invoice`].
    async fn record_invoice(
        &mut self,
        subscription_id: &str,
        invoice_id: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, DbError>;
}

/// A subscription by its Stripe id, whichever company it belongs to.
pub async fn subscription(db: &Db, id: &str) -> Result<Option<SubscriptionRow>, DbError> {
    db.billing().subscription(id).await
}

/// The stored subscription, locked until the caller's transaction ends (see
/// [`lock_event_status`](crate::billing::lock_event_status)).
pub async fn lock_subscription(
    tx: &mut Tx<'_>,
    id: &str,
) -> Result<Option<SubscriptionRow>, DbError> {
    tx.billing().lock_subscription(id).await
}

/// Every subscription of one company (a company may have an old canceled one and a new one).
pub async fn company_subscriptions(
    db: &Db,
    company: &str,
) -> Result<Vec<SubscriptionRow>, DbError> {
    db.billing().company_subscriptions(company).await
}

/// What a quota check reads inside the transaction that writes new sessions (on Postgres
/// scoped to the company), in one round trip: the company's subscriptions, newest first (as
/// [`company_subscriptions`]), and its usage in `[from, to)` (as
/// [`usage::total`](crate::usage::total) sums it).
pub async fn quota_reads_in(
    tx: &mut Tx<'_>,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<QuotaReads, DbError> {
    tx.billing().quota_reads(company, from, to).await
}

/// Every stored subscription, by id (what a reconciliation compares Stripe's list with).
pub async fn all_subscriptions(db: &Db) -> Result<Vec<SubscriptionRow>, DbError> {
    db.billing().all_subscriptions().await
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
    tx.billing()
        .save_subscription(company, state, stamp, event_id, snapshot)
        .await
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
    tx.billing()
        .record_invoice(subscription_id, invoice_id, status, at)
        .await
}

// `$n` parameters: SQLite reads them by position too, so these run on both databases.

/// The subscriptions filtered and ordered by `clauses` (whose `$1`, if any, is the key).
/// A company's subscriptions and usage in a window: the usage's one row, joined with each
/// subscription (or with none: one row whose subscription columns are NULL). `$1` is the
/// company, `$2` and `$3` the window, as in the usage store's `IN_WINDOW`.
static QUOTA_READS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns: Vec<String> = SUB_COLUMNS.split(", ").map(|c| format!("s.{c}")).collect();
    format!(
        "SELECT {}, u.usage_sessions, u.usage_seconds
         FROM (SELECT count(*) AS usage_sessions, sum(seconds) AS usage_seconds
               FROM usage_records
               WHERE company_id = $1 AND recorded_at >= $2 AND recorded_at < $3) u
         LEFT JOIN subscriptions s ON s.company_id = $1
         ORDER BY s.last_event_at DESC, s.id",
        columns.join(", ")
    )
});

/// What [`quota_reads_in`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaReads {
    pub subscriptions: Vec<SubscriptionRow>,
    pub usage: UsageTotal,
}

/// The rows of [`QUOTA_READS`]: the usage from the first, a subscription from each that has one.
fn quota_reads(rows: &[impl Columns]) -> Result<QuotaReads, DbError> {
    let first = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let usage = UsageTotal {
        sessions: first.get("usage_sessions")?,
        seconds: first.get::<Option<f64>>("usage_seconds")?.unwrap_or(0.0),
    };
    let mut subscriptions = Vec::with_capacity(rows.len());
    for row in rows {
        if row.get::<Option<String>>("id")?.is_some() {
            subscriptions.push(subscription_row(row)?);
        }
    }
    Ok(QuotaReads {
        subscriptions,
        usage,
    })
}

fn select_sql(clauses: &str) -> String {
    format!("SELECT {SUB_COLUMNS} FROM subscriptions {clauses}")
}
const BY_ID: &str = "WHERE id = $1";
const OF_COMPANY_NEWEST_FIRST: &str = "WHERE company_id = $1 ORDER BY last_event_at DESC, id";
const ALL_BY_ID: &str = "ORDER BY id";

/// The parameters of [`upsert_sql`].
fn upsert_params<'a>(
    company: &'a str,
    state: &'a SubscriptionState,
    stamp: Stamp,
    event_id: Option<&'a str>,
    snapshot: bool,
) -> [Param<'a>; 15] {
    [
        (&state.id).into(),
        company.into(),
        (&state.customer_id).into(),
        (&state.status).into(),
        (&state.plan).into(),
        (&state.price_id).into(),
        state.current_period_end.into(),
        state.trial_end.into(),
        state.cancel_at_period_end.into(),
        state.canceled_at.into(),
        stamp.at.into(),
        stamp.rank.into(),
        event_id.into(),
        snapshot.into(),
        Param::Now,
    ]
}

/// The newest invoice event (`$2`–`$4`) of subscription `$1`, written at `now` (`$5`).
fn record_invoice_sql(now: &str) -> String {
    format!(
        "UPDATE subscriptions SET latest_invoice_id = $2, latest_invoice_status = $3,
             invoice_event_at = $4, updated_at = {now}
         WHERE id = $1 AND (invoice_event_at IS NULL OR invoice_event_at <= $4)"
    )
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
