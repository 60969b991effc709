//! [`MeteredUsageStore`](super::MeteredUsageStore) on SQLite (times as microseconds since the
//! epoch).

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use crate::db::SqliteDb;

/// Every company's usage in `[from, to)`, summed per window of `width` seconds.
async fn window_sums(
    conn: &mut SqliteConnection,
    width: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i64, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT company_id, recorded_at / $1 AS w, CAST(sum(seconds) AS REAL)
         FROM usage_records WHERE recorded_at >= $2 AND recorded_at < $3
         GROUP BY company_id, w ORDER BY company_id, w",
    )
    .bind(width * 1_000_000)
    .bind(from.timestamp_micros())
    .bind(to.timestamp_micros())
    .fetch_all(conn)
    .await
}

metered_usage_store!(SqliteDb, sqlx::Sqlite, windows = window_sums);
