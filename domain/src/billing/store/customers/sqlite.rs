//! [`CustomerStore`](super::CustomerStore) on SQLite (times as microseconds since the epoch).

use crate::db::SqliteDb;

customer_store!(SqliteDb, sqlx::Sqlite);
