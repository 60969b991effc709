//! The database handle: Postgres (production) or an SQLite file (the embedded default).
//!
//! Callers that need a transaction take a [`Tx`], which wraps either driver's transaction so a
//! business row and the jobs it enqueues commit or roll back together on both databases.

use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Postgres, Sqlite, Transaction};
use tokio::sync::broadcast;

use crate::Settings;

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database.url: {0}")]
    Url(String),
    /// A transaction of one database handed to code holding the other (a wiring bug).
    #[error("a transaction of the other database was passed to {0}")]
    WrongDatabase(&'static str),
    #[error("redis.url: {0}")]
    RedisUrl(String),
    /// A stored value that does not parse (a JSON column written by something else).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("creating the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

impl DbError {
    /// Whether this says the database cannot be reached right now (see [`is_unavailable`]),
    /// rather than that the statement or the migration is wrong.
    pub fn is_unavailable(&self) -> bool {
        error_chain(self)
            .find_map(|e| e.downcast_ref::<sqlx::Error>())
            .is_some_and(is_unavailable)
    }
}

/// Whether `error` says the database is unreachable rather than that the statement is wrong:
/// the connection broke or could not be made (I/O, TLS, a garbled stream), no pooled
/// connection came free in time, the pool is closed, or Postgres said so itself (SQLSTATE
/// class 08 connection exceptions; 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot
/// connect now; 53300 too many connections). Anything else whose cause is an I/O error counts
/// as well.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|pg| sqlstate_is_unavailable(pg.code())),
        other => caused_by_io(other),
    }
}

/// Postgres SQLSTATEs that mean the server cannot serve this connection now.
fn sqlstate_is_unavailable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

fn caused_by_io(error: &(dyn StdError + 'static)) -> bool {
    error_chain(error).any(|e| e.is::<std::io::Error>())
}

/// `error` and every source below it.
pub fn error_chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// The Postgres role the service runs as (created by migration 0007): it owns nothing, is no
/// superuser and has no BYPASSRLS, so every tenant table's policy applies to it.
pub const APP_ROLE: &str = "voxline_app";

/// Whose rows a transaction may see on Postgres. Row-level security compares each tenant row's
/// `company_id` with the transaction's `app.company_id`; with no scope set it sees nothing.
/// On SQLite the repositories filter by company themselves and the scope is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One company's rows: everything done for a tenant's request or a tenant's job.
    Company(&'a str),
    /// One company's rows, acting for one of its profiles: `app.profile_id` is set as well, so
    /// rows private to a profile (data exports, migration 0009) show only that profile's own.
    Profile { company: &'a str, profile: &'a str },
    /// Every company's rows, for work that is the platform's own: mapping Stripe events to
    /// companies, reconciliation, usage reports, retention, operator reads, identity lookups.
    Platform,
}

impl PgDb {
    /// Begins a transaction whose rows are limited to `scope`. The setting is transaction-local
    /// (`set_config(…, true)`): it ends with the transaction, so the pooled connection carries
    /// nothing into the next one. A read-only transaction may simply be dropped: it rolls
    /// back, which is all a read needs.
    pub async fn begin_scoped(
        &self,
        scope: Scope<'_>,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        begin_in(&self.pool, scope).await
    }

    /// Like [`PgDb::begin_scoped`], on the worker runtime's own connections (`engine_pool`):
    /// for the job engine's writes that change other rows too (a dead job's on-dead hook).
    pub async fn begin_engine_scoped(
        &self,
        scope: Scope<'_>,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        begin_in(&self.engine_pool, scope).await
    }
}

/// One round trip: `BEGIN` and the scope's settings in one simple query (see
/// [`crate::scoped_begin`]).
async fn begin_in(
    pool: &PgPool,
    scope: Scope<'_>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let statement = crate::scoped_begin::begin_statement(scope)?;
    pool.begin_with(sqlx::AssertSqlSafe(statement)).await
}

/// Connections idle longer than this are pinged before they are handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Pings a pooled connection that sat idle for a while and drops it when the ping fails, so
/// after a PostgreSQL restart the pool replaces its dead connections instead of failing one
/// request per connection. A busy pool's connections are never idle that long and pay nothing.
fn ping_if_idle(
    conn: &mut sqlx::PgConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for < PING_AFTER_IDLE {
            return Ok(true);
        }
        Ok(conn.ping().await.is_ok())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    Sqlite,
}

/// Postgres pool plus what makes one deployment's traffic its own on a shared server: the
/// schema (tests run one per case) and the NOTIFY channel derived from it.
#[derive(Debug, Clone)]
pub struct PgDb {
    pub pool: PgPool,
    /// The worker runtime's own connections for claims, acknowledgements and heartbeats. With
    /// `engine.async_commit` they commit without waiting for the WAL flush: a database crash
    /// can then forget the last moments of claims and outcomes, which only makes those jobs
    /// run again (the engine is at-least-once anyway). Enqueues and operator actions always
    /// use `pool`, whose commits are durable before they return.
    pub engine_pool: PgPool,
    /// How the service connects: as [`APP_ROLE`], which row-level security applies to.
    pub options: PgConnectOptions,
    /// How migrations connect: as the role of `database.url`, which owns the tables.
    pub owner_options: PgConnectOptions,
    pub schema: String,
    pub notify_channel: String,
    /// The NOTIFY channel of session status changes (one per schema, like `notify_channel`).
    pub events_channel: String,
    /// Session status changes through Redis as well, when `redis.url` is set.
    pub fanout: Option<Arc<crate::events::RedisFanout>>,
}

/// SQLite pool plus an in-process wake-up channel: SQLite has no LISTEN/NOTIFY, and the
/// embedded default runs the API and the workers in one process, so a commit that made jobs
/// available announces their queue here.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    pub pool: SqlitePool,
    pub commits: broadcast::Sender<Arc<str>>,
    /// Session status changes, for the SSE streams of the same process.
    pub session_events: broadcast::Sender<crate::events::SessionEvent>,
}

#[derive(Debug, Clone)]
pub enum Db {
    Postgres(Arc<PgDb>),
    Sqlite(SqliteDb),
}

impl Db {
    /// Connects to the configured database (creating the SQLite file and the Postgres schema
    /// when missing). Does not migrate: call [`Db::migrate`].
    pub async fn connect(settings: &Settings) -> Result<Self, DbError> {
        let url = settings.database_url();
        let max = settings.database.max_connections;
        if settings.is_postgres() {
            let schema = settings.database.schema.clone();
            let mut owner_options = PgConnectOptions::from_str(&url)
                .map_err(|e| DbError::Url(e.to_string()))?
                .application_name("voxline");
            if !schema.is_empty() {
                let mut admin = owner_options.connect().await?;
                // The schema name is validated to [A-Za-z0-9_] in config, so quoting is enough.
                let sql = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                owner_options = owner_options.options([("search_path", schema.as_str())]);
            }
            let mut options = owner_options.clone().username(APP_ROLE);
            if !settings.database.app_password.is_empty() {
                options = options.password(&settings.database.app_password);
            }
            // Lazy: on a new database the role exists only once `migrate` (run as the owner)
            // made it. A connection is pinged before use only after it sat idle (see
            // `ping_if_idle`): a ping per acquire would double the round trips of a busy pool.
            let pool = PgPoolOptions::new()
                .max_connections(max)
                .test_before_acquire(false)
                .before_acquire(ping_if_idle)
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(options.clone());
            let mut engine_options = options.clone();
            if settings.engine.async_commit {
                engine_options = engine_options.options([("synchronous_commit", "off")]);
            }
            let engine_pool = PgPoolOptions::new()
                .max_connections(settings.engine.max_connections)
                .test_before_acquire(false)
                .before_acquire(ping_if_idle)
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(engine_options);
            let notify_channel = if schema.is_empty() {
                "voxline_jobs".to_string()
            } else {
                format!("voxline_jobs_{schema}")
            };
            let events_channel = notify_channel.replacen("voxline_jobs", "voxline_sessions", 1);
            let fanout = match settings.redis.url.as_str() {
                "" => None,
                url => Some(Arc::new(
                    crate::events::RedisFanout::new(url, events_channel.clone())
                        .map_err(|e| DbError::RedisUrl(e.to_string()))?,
                )),
            };
            Ok(Db::Postgres(Arc::new(PgDb {
                pool,
                engine_pool,
                options,
                owner_options,
                schema,
                notify_channel,
                events_channel,
                fanout,
            })))
        } else {
            let options = SqliteConnectOptions::from_str(&url)
                .map_err(|e| DbError::Url(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|source| DbError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            let (commits, _) = broadcast::channel(1024);
            let (session_events, _) = broadcast::channel(1024);
            Ok(Db::Sqlite(SqliteDb {
                pool,
                commits,
                session_events,
            }))
        }
    }

    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Postgres(pg) => {
                // As the owner: the service's own role may not create or alter tables.
                let mut owner = pg.owner_options.connect().await?;
                PG_MIGRATIONS.run(&mut owner).await?;
                owner.close().await?;
            }
            Db::Sqlite(lite) => SQLITE_MIGRATIONS.run(&lite.pool).await?,
        }
        Ok(())
    }

    pub fn kind(&self) -> DbKind {
        match self {
            Db::Postgres(_) => DbKind::Postgres,
            Db::Sqlite(_) => DbKind::Sqlite,
        }
    }

    /// Begins a transaction limited to `scope`'s rows (see [`Scope`]).
    pub async fn begin(&self, scope: Scope<'_>) -> Result<Tx<'static>, DbError> {
        Ok(match self {
            Db::Postgres(pg) => Tx::Postgres(pg.begin_scoped(scope).await?),
            Db::Sqlite(lite) => Tx::Sqlite {
                // IMMEDIATE takes the write lock up front: a deferred transaction that reads first
                // and writes later can fail with SQLITE_BUSY instead of waiting its turn.
                tx: lite.pool.begin_with("BEGIN IMMEDIATE").await?,
                commits: lite.commits.clone(),
                woken: Vec::new(),
            },
        })
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        match self {
            Db::Postgres(pg) => {
                sqlx::query("SELECT 1").execute(&pg.pool).await?;
            }
            Db::Sqlite(lite) => {
                sqlx::query("SELECT 1").execute(&lite.pool).await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Db::Postgres(pg) => {
                pg.engine_pool.close().await;
                pg.pool.close().await;
            }
            Db::Sqlite(lite) => lite.pool.close().await,
        }
    }
}

/// The repositories: one interface per aggregate, implemented for each database. These
/// accessors are the one place that looks at which database a handle is.
impl Db {
    pub fn profiles(&self) -> &dyn crate::profiles::ProfileStore {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }

    pub fn notifications(&self) -> &dyn crate::notifications::NotificationStore {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }

    pub fn roleplays(&self) -> &dyn crate::roleplays::RoleplayStore {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }

    pub fn call_audio(&self) -> &dyn crate::call_audio::CallAudioStore {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }

    pub fn gdpr(&self) -> &dyn crate::gdpr::GdprStore {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }

    pub fn billing(&self) -> &dyn crate::billing::BillingStore {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }

    pub fn session_events(&self) -> &dyn crate::events::SessionEventSource {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }

    pub fn sessions(&self) -> &dyn crate::sessions::SessionStore {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }

    pub fn audit(&self) -> &dyn crate::audit::AuditStore {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }

    pub fn usage(&self) -> &dyn crate::usage::UsageStore {
        match self {
            Db::Postgres(pg) => pg.as_ref(),
            Db::Sqlite(lite) => lite,
        }
    }
}

/// The repositories' work inside a transaction, implemented for each driver's connection or
/// transaction, so a transaction of one database can never reach the other's SQL. Like
/// [`Db`]'s accessors, these are the one place that looks at which database a transaction is on.
impl<'c> Tx<'c> {
    /// The role-play tickets this transaction uses.
    pub fn roleplays(&mut self) -> &mut dyn crate::roleplays::RoleplayTxStore {
        match self {
            Tx::Postgres(tx) => &mut **tx,
            Tx::Sqlite { tx, .. } => &mut **tx,
        }
    }

    /// The call-audio steps this transaction takes.
    pub fn call_audio(&mut self) -> &mut dyn crate::call_audio::CallAudioTxStore {
        match self {
            Tx::Postgres(tx) => &mut **tx,
            Tx::Sqlite { tx, .. } => &mut **tx,
        }
    }

    /// The exports and erasures this transaction writes.
    pub fn gdpr(&mut self) -> &mut dyn crate::gdpr::GdprTxStore {
        match self {
            Tx::Postgres(tx) => &mut **tx,
            Tx::Sqlite { tx, .. } => &mut **tx,
        }
    }

    /// The billing rows this transaction writes.
    pub fn billing(&mut self) -> &mut dyn crate::billing::BillingTxStore {
        match self {
            Tx::Postgres(tx) => &mut **tx,
            Tx::Sqlite { tx, .. } => &mut **tx,
        }
    }

    /// The session rows this transaction writes.
    pub fn sessions(&mut self) -> &mut (dyn crate::sessions::SessionWrites + 'c) {
        match self {
            Tx::Postgres(tx) => tx,
            Tx::Sqlite { tx, .. } => tx,
        }
    }

    /// The audit entries this transaction appends.
    pub fn audit(&mut self) -> &mut (dyn crate::audit::AuditWrites + 'c) {
        match self {
            Tx::Postgres(tx) => tx,
            Tx::Sqlite { tx, .. } => tx,
        }
    }

    /// The usage this transaction records or reads.
    pub fn usage(&mut self) -> &mut (dyn crate::usage::UsageWrites + 'c) {
        match self {
            Tx::Postgres(tx) => tx,
            Tx::Sqlite { tx, .. } => tx,
        }
    }
}

/// A transaction on either database. Commit with [`Tx::commit`]; dropping it rolls back.
pub enum Tx<'c> {
    Postgres(Transaction<'c, Postgres>),
    Sqlite {
        tx: Transaction<'c, Sqlite>,
        commits: broadcast::Sender<Arc<str>>,
        /// Queues that gained available jobs in this transaction, announced after commit.
        woken: Vec<Arc<str>>,
    },
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite { tx, commits, woken } => {
                tx.commit().await?;
                for queue in woken {
                    // No receiver only means no worker runs in this process; that is fine.
                    let _ = commits.send(queue);
                }
            }
        }
        Ok(())
    }

    /// Moves the rest of this transaction to `scope`: later statements see (and may write)
    /// only `scope`'s rows, as if the transaction had begun with it. For one transaction that
    /// writes for several tenants in turn (intake's group commit). SQLite has no row-level
    /// security: nothing to change there.
    pub async fn rescope(&mut self, scope: Scope<'_>) -> Result<(), DbError> {
        if let Tx::Postgres(tx) = self {
            let statement = crate::scoped_begin::rescope_statement(scope)?;
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), DbError> {
        match self {
            Tx::Postgres(tx) => tx.rollback().await?,
            Tx::Sqlite { tx, .. } => tx.rollback().await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::sqlstate_is_unavailable;

    #[test]
    fn sqlstates() {
        for code in [
            "08000", "08006", "08001", "57P01", "57P02", "57P03", "53300",
        ] {
            assert!(sqlstate_is_unavailable(code), "{code}");
        }
        for code in ["23505", "40001", "42P01", "57014", "53100", "25006"] {
            assert!(!sqlstate_is_unavailable(code), "{code}");
        }
    }
}
