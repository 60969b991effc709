//! [`GdprStore`](super::GdprStore) and [`GdprTxStore`](super::GdprTxStore) on SQLite (times
//! as microseconds since the epoch; every query names its company itself).

use sqlx::SqliteConnection;

use crate::db::SqliteDb;

gdpr_store!(SqliteDb, sqlx::Sqlite);
gdpr_tx_store!(SqliteConnection, sqlx::Sqlite);
