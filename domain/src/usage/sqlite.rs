//! Usage rows on SQLite (times as microseconds).

use sqlx::Sqlite;

use crate::db::SqliteDb;

usage_store!(SqliteDb);
usage_writes!(Sqlite);
