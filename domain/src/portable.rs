//! Statements whose text and bound values are the same on both databases (text parameters
//! only, `$1`… in order), run on either database's executor: a pool, or a transaction's
//! connection. A repository's Postgres and SQLite implementations share these instead of
//! writing the same binding twice; only where they run (Postgres: in the right scope) differs.
//!
//! They return boxed futures rather than being `async fn`s: that proves them `Send` here,
//! once, for any executor (an `async fn` generic over the executor trips the compiler's
//! higher-ranked lifetime check inside the repositories' `async_trait` methods).

use futures::future::BoxFuture;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, SqlSafeStr, Type};

/// Every row of `sql` with `binds`, decoded as `O`.
pub(crate) fn all<'e, 'c: 'e, E, O>(
    executor: E,
    sql: impl SqlSafeStr,
    binds: &'e [&'e str],
) -> BoxFuture<'e, Result<Vec<O>, sqlx::Error>>
where
    E: 'e + Executor<'c>,
    O: 'e + Send + Unpin + for<'r> FromRow<'r, <E::Database as Database>::Row>,
    &'e str: Encode<'e, E::Database> + Type<E::Database>,
    <E::Database as Database>::Arguments: IntoArguments<E::Database>,
{
    let mut query = sqlx::query_as::<E::Database, O>(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    Box::pin(query.fetch_all(executor))
}

/// The first row of `sql` with `binds`, if any, decoded as `O`.
pub(crate) fn optional<'e, 'c: 'e, E, O>(
    executor: E,
    sql: impl SqlSafeStr,
    binds: &'e [&'e str],
) -> BoxFuture<'e, Result<Option<O>, sqlx::Error>>
where
    E: 'e + Executor<'c>,
    O: 'e + Send + Unpin + for<'r> FromRow<'r, <E::Database as Database>::Row>,
    &'e str: Encode<'e, E::Database> + Type<E::Database>,
    <E::Database as Database>::Arguments: IntoArguments<E::Database>,
{
    let mut query = sqlx::query_as::<E::Database, O>(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    Box::pin(query.fetch_optional(executor))
}

/// Every row of `sql` with `binds`, as the database returns it (for a mapper of its own).
pub(crate) fn rows<'e, 'c: 'e, E>(
    executor: E,
    sql: impl SqlSafeStr,
    binds: &'e [&'e str],
) -> BoxFuture<'e, Result<Vec<<E::Database as Database>::Row>, sqlx::Error>>
where
    E: 'e + Executor<'c>,
    &'e str: Encode<'e, E::Database> + Type<E::Database>,
    <E::Database as Database>::Arguments: IntoArguments<E::Database>,
{
    let mut query = sqlx::query::<E::Database>(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    Box::pin(query.fetch_all(executor))
}

/// The first row of `sql` with `binds`, if any, as the database returns it.
pub(crate) fn row<'e, 'c: 'e, E>(
    executor: E,
    sql: impl SqlSafeStr,
    binds: &'e [&'e str],
) -> BoxFuture<'e, Result<Option<<E::Database as Database>::Row>, sqlx::Error>>
where
    E: 'e + Executor<'c>,
    &'e str: Encode<'e, E::Database> + Type<E::Database>,
    <E::Database as Database>::Arguments: IntoArguments<E::Database>,
{
    let mut query = sqlx::query::<E::Database>(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    Box::pin(query.fetch_optional(executor))
}

/// The first column of the first row of `sql` with `binds`, if there is a row.
pub(crate) fn scalar<'e, 'c: 'e, E, O>(
    executor: E,
    sql: impl SqlSafeStr,
    binds: &'e [&'e str],
) -> BoxFuture<'e, Result<Option<O>, sqlx::Error>>
where
    E: 'e + Executor<'c>,
    O: 'e + Send + Unpin,
    (O,): for<'r> FromRow<'r, <E::Database as Database>::Row>,
    &'e str: Encode<'e, E::Database> + Type<E::Database>,
    <E::Database as Database>::Arguments: IntoArguments<E::Database>,
{
    let mut query = sqlx::query_scalar::<E::Database, O>(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    Box::pin(query.fetch_optional(executor))
}

/// Runs `sql` with `binds`; how many rows it changed.
pub(crate) fn execute<'e, 'c: 'e, E>(
    executor: E,
    sql: impl SqlSafeStr,
    binds: &'e [&'e str],
) -> BoxFuture<'e, Result<u64, sqlx::Error>>
where
    E: 'e + Executor<'c>,
    &'e str: Encode<'e, E::Database> + Type<E::Database>,
    <E::Database as Database>::Arguments: IntoArguments<E::Database>,
    <E::Database as Database>::QueryResult: RowsAffected,
{
    let mut query = sqlx::query::<E::Database>(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let done = query.execute(executor);
    Box::pin(async move { Ok(done.await?.rows_affected()) })
}

/// A statement's outcome on either database: how many rows it changed.
pub(crate) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
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
