//! Usage rows on Postgres.

use sqlx::Postgres;

use crate::db::PgDb;

usage_store!(PgDb);
usage_writes!(Postgres);
