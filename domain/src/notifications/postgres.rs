//! [`NotificationStore`](super::NotificationStore) on Postgres: every tenant row in its
//! company's scope, an email that names no company in the platform's (see
//! [`EmailRecord::scope`](super::EmailRecord::scope)).

use crate::db::PgDb;

notification_store!(
    PgDb,
    sqlx::Postgres,
    ten_minutes_ago = "now() - interval '10 minutes'"
);
