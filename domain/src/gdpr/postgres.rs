//! [`GdprStore`](super::GdprStore) and [`GdprTxStore`](super::GdprTxStore) on Postgres: a
//! profile's rows in its own scope ([`Scope::Profile`](crate::db::Scope::Profile): exports are
//! private to their profile), the retention sweep's in the platform's.

use sqlx::PgConnection;

use crate::db::PgDb;

gdpr_store!(PgDb, sqlx::Postgres);
gdpr_tx_store!(PgConnection, sqlx::Postgres);
