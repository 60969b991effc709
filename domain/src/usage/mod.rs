//! Usage: the seconds of conversation voxline analysed, per company. One row per session
//! (keyed by its id), so a retried analysis never counts twice; billing periods and quota
//! checks sum the rows in a time window.
//!
//! [`UsageStore`] (on the database) and [`UsageWrites`] (in a caller's transaction) are the
//! repository, implemented for Postgres (`postgres.rs`) and SQLite (`sqlite.rs`).

/// [`UsageWrites`] for one driver's transaction (of `$dialect`), invoked in `postgres.rs` and
/// `sqlite.rs`: the same statements on both databases, but for the time of the write (see
/// [`Dialect`](crate::portable::Dialect)).
macro_rules! usage_writes {
    ($dialect:ty) => {
        #[async_trait::async_trait]
        impl super::UsageWrites for sqlx::Transaction<'_, $dialect> {
            async fn record(
                &mut self,
                session: &$crate::sessions::SessionRow,
                seconds: f64,
            ) -> Result<(), $crate::DbError> {
                use $crate::portable::Dialect;
                let sql = sqlx::AssertSqlSafe(super::record_sql(&<$dialect>::now(5)));
                let params = super::record_params(session, seconds);
                $crate::portable::execute(&mut **self, sql, &params).await?;
                Ok(())
            }
        }
    };
}

/// [`UsageStore`] for one database handle (`$handle`): [`IN_WINDOW`] run by
/// [`Own`](crate::portable::Own), on Postgres in the company's scope.
macro_rules! usage_store {
    ($handle:ty) => {
        #[async_trait::async_trait]
        impl super::UsageStore for $handle {
            async fn total(
                &self,
                company: &str,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
            ) -> Result<super::UsageTotal, $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let params = [company.into(), from.into(), to.into()];
                let row = $crate::portable::optional(&mut *conn, super::IN_WINDOW, &params).await?;
                super::usage_total(row)
            }
        }
    };
}

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::portable::Param;
use crate::sessions::SessionRow;
use crate::{Db, DbError, Tx};

/// A company's usage in `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UsageTotal {
    pub sessions: i64,
    pub seconds: f64,
}

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// See [`total`].
    async fn total(
        &self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageTotal, DbError>;
}

#[async_trait]
pub trait UsageWrites: Send {
    /// See [`record`]; `seconds` is already finite and not negative.
    async fn record(&mut self, session: &SessionRow, seconds: f64) -> Result<(), DbError>;
}

/// Records a ready session's seconds in the caller's transaction; a second call for the same
/// session changes nothing.
pub async fn record(tx: &mut Tx<'_>, session: &SessionRow, seconds: f64) -> Result<(), DbError> {
    tx.usage().record(session, billable(seconds)).await
}

/// The seconds a usage row records: finite and not negative (a broken duration counts 0).
pub(crate) fn billable(seconds: f64) -> f64 {
    if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    }
}

/// A company's usage in `[from, to)`.
pub async fn total(
    db: &Db,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<UsageTotal, DbError> {
    db.usage().total(company, from, to).await
}

/// A company's usage rows in a window: the same text on both databases (SQLite reads `$N` as
/// the N-th bound value), each binding the window in its own time encoding.
const IN_WINDOW: &str = "SELECT count(*), sum(seconds) FROM usage_records
     WHERE company_id = $1 AND recorded_at >= $2 AND recorded_at < $3";

/// A session's usage (`$4` seconds), recorded at `now` (`$5`), once per session.
fn record_sql(now: &str) -> String {
    format!(
        "INSERT INTO usage_records (session_id, company_id, profile_id, seconds, recorded_at)
         VALUES ($1, $2, $3, $4, {now}) ON CONFLICT (session_id) DO NOTHING"
    )
}

/// The parameters of [`record_sql`].
fn record_params(session: &SessionRow, seconds: f64) -> [Param<'_>; 5] {
    [
        (&session.id).into(),
        (&session.company_id).into(),
        (&session.profile_id).into(),
        seconds.into(),
        Param::Now,
    ]
}

/// The row of [`IN_WINDOW`] (an aggregate: there always is one).
fn usage_total(row: Option<(i64, Option<f64>)>) -> Result<UsageTotal, DbError> {
    let (sessions, seconds) = row.ok_or(sqlx::Error::RowNotFound)?;
    Ok(UsageTotal {
        sessions,
        seconds: seconds.unwrap_or(0.0),
    })
}
