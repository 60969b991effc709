//! [`NotificationStore`](super::NotificationStore) on SQLite (times as microseconds since the
//! epoch; one database file, so no tenancy scope: every query names its company itself).

use crate::db::SqliteDb;

notification_store!(SqliteDb, sqlx::Sqlite, ten_minutes_ago = "$10 - 600000000");
