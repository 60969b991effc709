//! What both databases share: statements whose text runs on either (`$1`… in order: SQLite
//! reads `$N` as the N-th bound value), their bound values ([`Param`], encoded as each
//! database stores them), rows read the same way ([`Columns`]) and where a repository's
//! statements of their own run ([`Own`]: on Postgres a transaction in the right [`Scope`], on
//! SQLite a pooled connection). A repository's Postgres and SQLite implementations share these
//! instead of writing the same binding, mapping and scoping twice; the few words of SQL that
//! differ (Postgres' `now()`, `FOR UPDATE`) are [`Dialect`]'s, so a repository's methods can be
//! written once, in a macro over the connection or handle type invoked in `postgres.rs` and
//! `sqlite.rs`, and only what really differs stays in each.
//!
//! The statements return boxed futures rather than being `async fn`s: that proves them `Send`
//! here, once, for any executor (an `async fn` generic over the executor trips the compiler's
//! higher-ranked lifetime check inside the repositories' `async_trait` methods).

use std::ops::{Deref, DerefMut};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{
    Arguments, Database, Decode, Executor, FromRow, IntoArguments, Postgres, Row, SqlSafeStr,
    Sqlite, Transaction, Type,
};

use crate::db::{PgDb, Scope, SqliteDb};

/// Now, as SQLite stores a time: microseconds since the epoch.
pub(crate) fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// A time SQLite stored (microseconds since the epoch). One outside chrono's range is a
/// corrupt row, and an error, as in the job store: not silently the epoch.
pub(crate) fn time(us: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| sqlx::Error::Decode(format!("stored time {us} is out of range").into()))
}

/// A value bound to a statement, encoded as each database stores it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    /// A 16-bit integer (Postgres `SMALLINT`).
    Int2(i16),
    /// A 32-bit integer (Postgres `INTEGER`).
    Int4(i32),
    Float(Option<f64>),
    Bool(bool),
    /// `timestamptz` on Postgres, microseconds since the epoch on SQLite.
    Time(Option<DateTime<Utc>>),
    /// `jsonb` on Postgres, its text on SQLite.
    Json(Option<&'a Value>),
    /// The time of the write. Postgres' SQL says `now()` there and binds nothing; SQLite's
    /// says `$n` and binds the process's clock, in microseconds. Put it last: the parameters
    /// after it would be numbered one lower on Postgres.
    Now,
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(text: &'a str) -> Self {
        Param::Text(Some(text))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(text: &'a String) -> Self {
        Param::Text(Some(text))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Param::Text(text)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(text: &'a Option<String>) -> Self {
        Param::Text(text.as_deref())
    }
}

impl From<i64> for Param<'_> {
    fn from(n: i64) -> Self {
        Param::Int(Some(n))
    }
}

impl From<i16> for Param<'_> {
    fn from(n: i16) -> Self {
        Param::Int2(n)
    }
}

impl From<i32> for Param<'_> {
    fn from(n: i32) -> Self {
        Param::Int4(n)
    }
}

impl From<f64> for Param<'_> {
    fn from(x: f64) -> Self {
        Param::Float(Some(x))
    }
}

impl From<Option<f64>> for Param<'_> {
    fn from(x: Option<f64>) -> Self {
        Param::Float(x)
    }
}

impl From<bool> for Param<'_> {
    fn from(b: bool) -> Self {
        Param::Bool(b)
    }
}

impl From<DateTime<Utc>> for Param<'_> {
    fn from(t: DateTime<Utc>) -> Self {
        Param::Time(Some(t))
    }
}

impl From<Option<DateTime<Utc>>> for Param<'_> {
    fn from(t: Option<DateTime<Utc>>) -> Self {
        Param::Time(t)
    }
}

impl<'a> From<&'a Value> for Param<'a> {
    fn from(json: &'a Value) -> Self {
        Param::Json(Some(json))
    }
}

impl<'a> From<Option<&'a Value>> for Param<'a> {
    fn from(json: Option<&'a Value>) -> Self {
        Param::Json(json)
    }
}

/// What tells the two databases apart where a statement is written once: how a [`Param`] is
/// bound, how the time of the write and a row lock are said, and what a statement's outcome
/// reports.
pub(crate) trait Dialect: Database<Arguments: IntoArguments<Self>> {
    /// What a `SELECT` ends with to lock its rows until the transaction ends: Postgres'
    /// `FOR UPDATE`; nothing on SQLite, whose write transaction holds the whole database.
    const ROW_LOCK: &'static str;

    /// The SQL for the time of the write when [`Param::Now`] is the `n`-th parameter:
    /// Postgres' `now()`, SQLite's `$n`.
    fn now(n: usize) -> String;

    /// Adds `param` to `arguments`, encoded as this database stores it.
    fn add(arguments: &mut Self::Arguments, param: Param<'_>) -> Result<(), BoxDynError>;

    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

impl Dialect for Postgres {
    const ROW_LOCK: &'static str = " FOR UPDATE";

    fn now(_n: usize) -> String {
        "now()".to_string()
    }

    fn add(arguments: &mut PgArguments, param: Param<'_>) -> Result<(), BoxDynError> {
        match param {
            Param::Text(text) => arguments.add(text),
            Param::Int(n) => arguments.add(n),
            Param::Int2(n) => arguments.add(n),
            Param::Int4(n) => arguments.add(n),
            Param::Float(x) => arguments.add(x),
            Param::Bool(b) => arguments.add(b),
            Param::Time(t) => arguments.add(t),
            Param::Json(json) => arguments.add(json),
            Param::Now => Ok(()),
        }
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl Dialect for Sqlite {
    const ROW_LOCK: &'static str = "";

    fn now(n: usize) -> String {
        format!("${n}")
    }

    fn add(arguments: &mut SqliteArguments, param: Param<'_>) -> Result<(), BoxDynError> {
        match param {
            Param::Text(text) => arguments.add(text),
            Param::Int(n) => arguments.add(n),
            Param::Int2(n) => arguments.add(n),
            Param::Int4(n) => arguments.add(n),
            Param::Float(x) => arguments.add(x),
            Param::Bool(b) => arguments.add(b),
            Param::Time(t) => arguments.add(t.map(|t| t.timestamp_micros())),
            Param::Json(json) => arguments.add(json.map(Value::to_string)),
            Param::Now => arguments.add(now_us()),
        }
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// Runs `run` on `params` as one statement's arguments; a value that does not encode fails
/// the statement without running it.
fn bound<'e, D: Dialect, T: 'e + Send>(
    params: &[Param<'_>],
    run: impl FnOnce(D::Arguments) -> BoxFuture<'e, Result<T, sqlx::Error>>,
) -> BoxFuture<'e, Result<T, sqlx::Error>> {
    let mut arguments = D::Arguments::default();
    for param in params {
        if let Err(error) = D::add(&mut arguments, *param) {
            return Box::pin(futures::future::ready(Err(sqlx::Error::Encode(error))));
        }
    }
    run(arguments)
}

/// Every row of `sql` with `params`, decoded as `O`.
pub(crate) fn all<'e, 'c: 'e, E, O>(
    executor: E,
    sql: impl SqlSafeStr,
    params: &[Param<'_>],
) -> BoxFuture<'e, Result<Vec<O>, sqlx::Error>>
where
    E: 'e + Executor<'c, Database: Dialect>,
    O: 'e + Send + Unpin + for<'r> FromRow<'r, <E::Database as Database>::Row>,
{
    bound::<E::Database, _>(params, |arguments| {
        Box::pin(sqlx::query_as_with(sql, arguments).fetch_all(executor))
    })
}

/// The first row of `sql` with `params`, if any, decoded as `O`.
pub(crate) fn optional<'e, 'c: 'e, E, O>(
    executor: E,
    sql: impl SqlSafeStr,
    params: &[Param<'_>],
) -> BoxFuture<'e, Result<Option<O>, sqlx::Error>>
where
    E: 'e + Executor<'c, Database: Dialect>,
    O: 'e + Send + Unpin + for<'r> FromRow<'r, <E::Database as Database>::Row>,
{
    bound::<E::Database, _>(params, |arguments| {
        Box::pin(sqlx::query_as_with(sql, arguments).fetch_optional(executor))
    })
}

/// Every row of `sql` with `params`, as the database returns it (for a mapper of its own).
pub(crate) fn rows<'e, 'c: 'e, E>(
    executor: E,
    sql: impl SqlSafeStr,
    params: &[Param<'_>],
) -> BoxFuture<'e, Result<Vec<<E::Database as Database>::Row>, sqlx::Error>>
where
    E: 'e + Executor<'c, Database: Dialect>,
{
    bound::<E::Database, _>(params, |arguments| {
        Box::pin(sqlx::query_with(sql, arguments).fetch_all(executor))
    })
}

/// The first row of `sql` with `params`, if any, as the database returns it.
pub(crate) fn row<'e, 'c: 'e, E>(
    executor: E,
    sql: impl SqlSafeStr,
    params: &[Param<'_>],
) -> BoxFuture<'e, Result<Option<<E::Database as Database>::Row>, sqlx::Error>>
where
    E: 'e + Executor<'c, Database: Dialect>,
{
    bound::<E::Database, _>(params, |arguments| {
        Box::pin(sqlx::query_with(sql, arguments).fetch_optional(executor))
    })
}

/// The first column of the first row of `sql` with `params`, if there is a row.
pub(crate) fn scalar<'e, 'c: 'e, E, O>(
    executor: E,
    sql: impl SqlSafeStr,
    params: &[Param<'_>],
) -> BoxFuture<'e, Result<Option<O>, sqlx::Error>>
where
    E: 'e + Executor<'c, Database: Dialect>,
    O: 'e + Send + Unpin,
    (O,): for<'r> FromRow<'r, <E::Database as Database>::Row>,
{
    bound::<E::Database, _>(params, |arguments| {
        Box::pin(sqlx::query_scalar_with(sql, arguments).fetch_optional(executor))
    })
}

/// Runs `sql` with `params`; how many rows it changed.
pub(crate) fn execute<'e, 'c: 'e, E>(
    executor: E,
    sql: impl SqlSafeStr,
    params: &[Param<'_>],
) -> BoxFuture<'e, Result<u64, sqlx::Error>>
where
    E: 'e + Executor<'c, Database: Dialect>,
{
    bound::<E::Database, _>(params, |arguments| {
        let done = sqlx::query_with(sql, arguments).execute(executor);
        Box::pin(async move { Ok(<E::Database as Dialect>::rows_affected(&done.await?)) })
    })
}

/// A value both databases decode alike (text, flags, numbers and options of them).
pub(crate) trait Portable:
    for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

impl<T> Portable for T where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

/// A row of either database, read by column name with its times decoded as that database
/// stores them, so each row type is mapped from a row once for both.
pub(crate) trait Columns {
    fn get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error>;
    fn time(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error>;
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error>;
    /// A JSON column (`jsonb` on Postgres, its text on SQLite); unreadable text fails to decode.
    fn json(&self, column: &str) -> Result<Value, sqlx::Error>;
    /// A JSON column that may be NULL; on SQLite, text that does not parse reads as NULL too
    /// (for the columns whose readers would rather show nothing than fail).
    fn json_or_none(&self, column: &str) -> Result<Option<Value>, sqlx::Error>;
}

impl Columns for PgRow {
    fn get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }
    fn time(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
        self.try_get(column)
    }
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.try_get(column)
    }
    fn json(&self, column: &str) -> Result<Value, sqlx::Error> {
        self.try_get(column)
    }
    fn json_or_none(&self, column: &str) -> Result<Option<Value>, sqlx::Error> {
        self.try_get(column)
    }
}

impl Columns for SqliteRow {
    fn get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }
    fn time(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
        time(self.try_get(column)?)
    }
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.try_get::<Option<i64>, _>(column)?
            .map(time)
            .transpose()
    }
    fn json(&self, column: &str) -> Result<Value, sqlx::Error> {
        let text: String = self.try_get(column)?;
        serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }
    fn json_or_none(&self, column: &str) -> Result<Option<Value>, sqlx::Error> {
        let text: Option<String> = self.try_get(column)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}

/// Where a repository runs statements of its own, outside any caller's transaction (from
/// [`PgDb::own`] or [`SqliteDb::own`]): what tells the two databases apart there, so the rest
/// of such a method is written once. A read simply drops it; a write ends with
/// [`Own::commit`].
pub(crate) enum Own<DB: Database> {
    /// A pooled connection (SQLite): each statement commits as it runs.
    Connection(PoolConnection<DB>),
    /// A transaction: on Postgres limited to a scope's rows.
    Transaction(Transaction<'static, DB>),
}

impl<DB: Database> Own<DB> {
    /// Commits the transaction; on a connection its statements committed as they ran.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Own::Connection(_) => Ok(()),
            Own::Transaction(tx) => tx.commit().await,
        }
    }
}

impl<DB: Database> Deref for Own<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        match self {
            Own::Connection(conn) => conn,
            Own::Transaction(tx) => tx,
        }
    }
}

impl<DB: Database> DerefMut for Own<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            Own::Connection(conn) => conn,
            Own::Transaction(tx) => tx,
        }
    }
}

impl PgDb {
    /// A transaction limited to `scope`'s rows (row-level security), for a repository's
    /// statements of their own.
    pub(crate) async fn own(&self, scope: Scope<'_>) -> Result<Own<Postgres>, sqlx::Error> {
        Ok(Own::Transaction(self.begin_scoped(scope).await?))
    }

    /// [`PgDb::own`], for writes that must commit together: it is one transaction already.
    pub(crate) async fn own_atomic(&self, scope: Scope<'_>) -> Result<Own<Postgres>, sqlx::Error> {
        self.own(scope).await
    }
}

impl SqliteDb {
    /// A pooled connection, for a repository's statements of their own. There is no scope to
    /// set: SQLite has no row-level security, and every statement names its company itself.
    pub(crate) async fn own(&self, _scope: Scope<'_>) -> Result<Own<Sqlite>, sqlx::Error> {
        Ok(Own::Connection(self.pool.acquire().await?))
    }

    /// A transaction, for writes that must commit together. IMMEDIATE, as
    /// [`Db::begin`](crate::Db::begin)'s: it takes the write lock up front, where a deferred
    /// one that read first could fail with SQLITE_BUSY at its first write instead of waiting.
    pub(crate) async fn own_atomic(&self, _scope: Scope<'_>) -> Result<Own<Sqlite>, sqlx::Error> {
        Ok(Own::Transaction(
            self.pool.begin_with("BEGIN IMMEDIATE").await?,
        ))
    }
}

/// One text column of `rows` as an array parameter (Postgres's `UNNEST($1::text[], …)` for a
/// multi-row insert), one element per row.
pub(crate) fn text_column<'a, T>(
    rows: &'a [T],
    field: impl Fn(&'a T) -> Option<&'a str>,
) -> Vec<Option<&'a str>> {
    rows.iter().map(field).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_time_out_of_range_is_an_error_not_the_epoch() {
        assert!(time(i64::MAX).is_err());
        assert_eq!(
            time(1_500_000).ok(),
            DateTime::from_timestamp(1, 500_000_000)
        );
    }
}
