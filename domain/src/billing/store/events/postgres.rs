//! [`StripeEventStore`](super::StripeEventStore) and
//! [`StripeEventTxStore`](super::StripeEventTxStore) on Postgres (the payload as `jsonb`; a
//! status read to decide on an event locks its row).

use crate::db::PgDb;

stripe_event_stores!(PgDb, sqlx::PgConnection, sqlx::Postgres);
