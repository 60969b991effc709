//! Usage: the seconds of conversation voxline analysed, per company. One row per session
//! (keyed by its id), so a retried analysis never counts twice; billing periods and quota
//! checks sum the rows in a time window.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::Scope;
use crate::sessions::SessionRow;
use crate::{Db, DbError, Tx};

/// Records a ready session's seconds in the caller's transaction; a second call for the same
/// session changes nothing.
pub async fn record(tx: &mut Tx<'_>, session: &SessionRow, seconds: f64) -> Result<(), DbError> {
    let seconds = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    match tx {
        Tx::Postgres(tx) => {
            sqlx::query(
                "INSERT INTO usage_records (session_id, company_id, profile_id, seconds)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (session_id) DO NOTHING",
            )
            .bind(&session.id)
            .bind(&session.company_id)
            .bind(&session.profile_id)
            .bind(seconds)
            .execute(&mut **tx)
            .await?;
        }
        Tx::Sqlite { tx, .. } => {
            sqlx::query(
                "INSERT INTO usage_records (session_id, company_id, profile_id, seconds, recorded_at)
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
            )
            .bind(&session.id)
            .bind(&session.company_id)
            .bind(&session.profile_id)
            .bind(seconds)
            .bind(Utc::now().timestamp_micros())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// A company's usage in `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UsageTotal {
    pub sessions: i64,
    pub seconds: f64,
}

pub async fn total(
    db: &Db,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<UsageTotal, DbError> {
    let (sessions, seconds): (i64, Option<f64>) = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query_as(
                "SELECT count(*), sum(seconds) FROM usage_records
                 WHERE company_id = $1 AND recorded_at >= $2 AND recorded_at < $3",
            )
            .bind(company)
            .bind(from)
            .bind(to)
            .fetch_one(&mut *tx)
            .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_as(
                "SELECT count(*), sum(seconds) FROM usage_records
                 WHERE company_id = ? AND recorded_at >= ? AND recorded_at < ?",
            )
            .bind(company)
            .bind(from.timestamp_micros())
            .bind(to.timestamp_micros())
            .fetch_one(&lite.pool)
            .await?
        }
    };
    Ok(UsageTotal {
        sessions,
        seconds: seconds.unwrap_or(0.0),
    })
}
