//! [`SubscriptionStore`](super::SubscriptionStore) and
//! [`SubscriptionTxStore`](super::SubscriptionTxStore) on Postgres.

use sqlx::PgConnection;

use crate::db::PgDb;

subscription_store!(PgDb);
subscription_tx_store!(PgConnection, sqlx::Postgres);
