//! [`MeteredUsageStore`](super::MeteredUsageStore) on Postgres.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::db::PgDb;

/// Every company's usage in `[from, to)`, summed per window of `width` seconds.
async fn window_sums(
    conn: &mut PgConnection,
    width: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i64, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT company_id, floor(extract(epoch FROM recorded_at)::float8 / $1::float8)::int8 AS w,
                sum(seconds)::float8
         FROM usage_records WHERE recorded_at >= $2 AND recorded_at < $3
         GROUP BY company_id, w ORDER BY company_id, w",
    )
    .bind(width as f64)
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await
}

metered_usage_store!(PgDb, sqlx::Postgres, windows = window_sums);
