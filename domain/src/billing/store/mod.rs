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

use crate::portable::Columns;
