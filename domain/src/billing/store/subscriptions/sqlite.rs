//! [`SubscriptionStore`](super::SubscriptionStore) and
//! [`SubscriptionTxStore`](super::SubscriptionTxStore) on SQLite (times as microseconds since the
//! epoch; a write transaction holds the whole database, so a lock is a plain read).

use sqlx::SqliteConnection;

use crate::db::SqliteDb;

subscription_store!(SqliteDb);
subscription_tx_store!(SqliteConnection, sqlx::Sqlite);
