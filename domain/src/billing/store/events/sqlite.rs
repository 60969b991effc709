//! [`StripeEventStore`](super::StripeEventStore) and
//! [`StripeEventTxStore`](super::StripeEventTxStore) on SQLite (the payload as JSON text, times
//! as microseconds since the epoch; a status read is a plain read: the write transaction holds
//! the whole database).

use crate::db::SqliteDb;

stripe_event_stores!(SqliteDb, sqlx::SqliteConnection, sqlx::Sqlite);
