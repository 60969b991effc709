//! Billing's rows on both databases, one file per group of tables. A query whose text runs on
//! both is written once (SQLite reads `$N` as the N-th bound value, as Postgres does); the two
//! differ where Postgres has `now()`, `FOR UPDATE` or a time type, and in how times are bound:
//! Postgres stores `timestamptz`, SQLite microseconds since the epoch.
//!
//! Each group is a repository with a Postgres and an SQLite implementation; [`BillingStore`]
//! is all of them (`db.billing()`), and [`BillingTxStore`] all their work inside a caller's
//! transaction (`tx.billing()`).

pub(super) mod customers;
pub(super) mod events;
pub(super) mod metered_usage;
pub(super) mod subscriptions;

pub use customers::CustomerStore;
pub use events::{StripeEventStore, StripeEventTxStore};
pub use metered_usage::MeteredUsageStore;
pub use subscriptions::{SubscriptionStore, SubscriptionTxStore};

/// Billing's rows, each call on its own.
pub trait BillingStore:
    CustomerStore + SubscriptionStore + MeteredUsageStore + StripeEventStore
{
}

impl<T> BillingStore for T where
    T: CustomerStore + SubscriptionStore + MeteredUsageStore + StripeEventStore + ?Sized
{
}

/// Billing's rows inside a caller's transaction.
pub trait BillingTxStore: SubscriptionTxStore + StripeEventTxStore {}

impl<T> BillingTxStore for T where T: SubscriptionTxStore + StripeEventTxStore + ?Sized {}

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Postgres, Row, Sqlite, Type};

use crate::DbError;

/// Now, as SQLite stores it.
fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn micros(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_micros())
}

fn corrupt(e: serde_json::Error) -> DbError {
    DbError::Sqlx(sqlx::Error::Decode(Box::new(e)))
}

/// A value both databases decode alike (text, flags, integers and options of them).
trait Portable:
    for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

impl<T> Portable for T where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

/// A row of either database, read by column name with its times decoded as that database
/// stores them, so each billing row type is mapped from a row once for both.
trait Columns {
    fn get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error>;
    fn time(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error>;
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error>;
}

impl Columns for PgRow {
    fn get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }
    fn time(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
        self.try_get(column)
    }
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.try_get(column)
    }
}

impl Columns for SqliteRow {
    fn get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }
    fn time(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
        self.try_get(column).map(time)
    }
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(self.try_get::<Option<i64>, _>(column)?.map(time))
    }
}
