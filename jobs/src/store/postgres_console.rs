//! The operators' console on Postgres ([`super::console_impl`] writes it once for both
//! databases): Postgres's expressions, and wake-ups by NOTIFY.

use voxline_domain::db::PgDb;

use super::console::Dialect;
use super::console_impl::impl_console;
use super::postgres::PostgresStore;
use crate::error::JobError;

const DIALECT: Dialect = Dialect {
    placeholder: |n| format!("${n}"),
    // A job's company and words are in `job_search`, written once at enqueue, so that the
    // claim and the completion do not write their indexes (migration 0018).
    company: |p| format!("id IN (SELECT job_id FROM job_search WHERE tenant_key = {p})"),
    search: |p| {
        format!(
            "id IN (SELECT job_id FROM job_search WHERE words @@ plainto_tsquery('simple', {p}))"
        )
    },
    micros: |p| format!("to_timestamp({p}::float8 / 1000000)"),
    search_arg: |text| text.to_string(),
    lock: " FOR UPDATE SKIP LOCKED",
};

/// Wakes the fetchers of `queues` in every process.
async fn wake(db: &PgDb, queues: Vec<String>) -> Result<(), JobError> {
    // Nothing to wake takes no connection.
    if queues.is_empty() {
        return Ok(());
    }
    let mut conn = db.pool.acquire().await?;
    super::postgres::notify_queues(&mut conn, &db.notify_channel, queues).await
}

impl_console!(PostgresStore, sqlx::Postgres, DIALECT, wake);
