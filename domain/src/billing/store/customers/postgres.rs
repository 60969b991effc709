//! [`CustomerStore`](super::CustomerStore) on Postgres.

use crate::db::PgDb;

customer_store!(PgDb, sqlx::Postgres);
