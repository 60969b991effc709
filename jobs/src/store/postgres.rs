//! The job store on Postgres: claims with `FOR UPDATE SKIP LOCKED`, batched acknowledgements
//! through `UNNEST`, NOTIFY on enqueue (delivered by the server at commit), database time
//! (`now()`) for every timestamp so several hosts agree on it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use voxline_domain::db::PgDb;

use std::sync::Arc;

use voxline_domain::Tx;
use voxline_domain::db::Scope;

use super::ErasedSubject;
use super::console::{OutcomeTally, minute_of};
use super::postgres_console as console;
use crate::error::JobError;
use crate::handler::DeadHooks;
use crate::model::{ClaimedJob, Completion, DeadJob, Enqueued, JobId, Lease, NewJob, Outcome};
use crate::state::JobState;

mod claim;
mod maintenance;
mod outcome;

use super::row::{Column, JobRow, dead_job, parse_state};
use super::store_impl::impl_job_store;
use claim::*;
use maintenance::*;
use outcome::*;

/// The job store of a Postgres deployment (one schema).
pub struct PostgresStore {
    pub(super) db: Arc<PgDb>,
}

impl PostgresStore {
    pub fn new(db: Arc<PgDb>) -> Self {
        PostgresStore { db }
    }
}

impl JobRow for PgRow {
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Result<T, serde_json::Error>, JobError> {
        Ok(serde_json::from_value(self.try_get(name)?))
    }

    fn time(&self, name: &str) -> Result<DateTime<Utc>, JobError> {
        Ok(self.try_get(name)?)
    }

    fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, JobError> {
        Ok(self.try_get(name)?)
    }

    fn count(&self, name: &str) -> Result<u32, JobError> {
        Ok(self.try_get::<i32, _>(name)? as u32)
    }

    fn priority(&self) -> Result<i16, JobError> {
        Ok(self.try_get("priority")?)
    }

    fn percent(&self) -> Result<Option<i64>, JobError> {
        Ok(self.try_get::<Option<i16>, _>("progress")?.map(i64::from))
    }
}

/// The Postgres transaction in `tx` (the caller's, or one of [`begin_tx`]).
fn tx_connection<'a>(tx: &'a mut Tx<'_>) -> Result<&'a mut PgConnection, JobError> {
    match tx {
        Tx::Postgres(tx) => Ok(&mut **tx),
        Tx::Sqlite { .. } => Err(JobError::WrongDatabase {
            given: "SQLite",
            store: "Postgres",
        }),
    }
}

/// A transaction of the store's own, for the methods written once over [`Tx`].
async fn begin_tx(db: &PgDb) -> Result<Tx<'static>, JobError> {
    Ok(Tx::Postgres(db.pool.begin().await?))
}

/// NOTIFYs each of `queues` once on `conn`: in a transaction, the server delivers it to every
/// process when it commits.
pub(super) async fn notify_queues(
    conn: &mut PgConnection,
    channel: &str,
    mut queues: Vec<String>,
) -> Result<(), JobError> {
    queues.sort_unstable();
    queues.dedup();
    for queue in queues {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(queue)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Wakes the fetchers of `queues` in every process once `tx` commits.
async fn wake_on_commit(db: &PgDb, tx: &mut Tx<'_>, queues: Vec<String>) -> Result<(), JobError> {
    notify_queues(tx_connection(tx)?, &db.notify_channel, queues).await
}

/// The time of a write in the shared statements: the database's (several hosts agree on it).
fn now_sql(_n: usize) -> String {
    "now()".to_string()
}

/// `now_sql` binds nothing on Postgres.
fn bind_now(query: PgQuery<'_>) -> PgQuery<'_> {
    query
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

impl_job_store!(PostgresStore, engine = engine_pool, {
    async fn insert_in(
        &self,
        tx: &mut Tx<'_>,
        job: &NewJob,
        max_attempts: u32,
    ) -> Result<Enqueued, JobError> {
        insert(
            tx_connection(tx)?,
            &self.db.notify_channel,
            job,
            max_attempts,
        )
        .await
    }

    async fn insert(&self, job: &NewJob, max_attempts: u32) -> Result<Enqueued, JobError> {
        let mut conn = self.db.pool.acquire().await?;
        insert(&mut conn, &self.db.notify_channel, job, max_attempts).await
    }

    async fn insert_many(&self, jobs: &[(NewJob, u32)]) -> Result<u64, JobError> {
        let mut tx = self.db.pool.begin().await?;
        let inserted = insert_many(&mut tx, &self.db.notify_channel, jobs).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn insert_many_in(
        &self,
        tx: &mut Tx<'_>,
        jobs: &[(NewJob, u32)],
    ) -> Result<u64, JobError> {
        insert_many(tx_connection(tx)?, &self.db.notify_channel, jobs).await
    }

    fn leader_election(&self) -> Box<dyn super::LeaderElection> {
        Box::new(super::postgres_leader::PgLeadership::new(
            self.db.options.clone(),
            &self.db.schema,
        ))
    }

    async fn forward_wakeups(
        &self,
        listen_notify: bool,
        wakers: crate::runtime::wakeup::Wakers,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if listen_notify {
            super::postgres_listen::listen(
                &self.db.options,
                &self.db.notify_channel,
                &wakers,
                &stop,
            )
            .await
        } else {
            stop.cancelled().await
        }
    }
});

/// Inserts on `conn`: inside the caller's transaction, or alone (autocommit, one round trip).
async fn insert(
    conn: &mut PgConnection,
    channel: &str,
    job: &NewJob,
    max_attempts: u32,
) -> Result<Enqueued, JobError> {
    // One round trip: insert, and NOTIFY the queue when the job is due now. A conflicting
    // unique key inserts nothing and the existing job is looked up below.
    let row = sqlx::query(
        "WITH ins AS (
            INSERT INTO jobs (queue, kind, payload, state, priority, max_attempts, timeout_ms,
                              unique_key, run_at, trace_context, tenant_key)
            VALUES ($1, $2, $3,
                    CASE WHEN $7::timestamptz IS NULL OR $7 <= now() THEN 'available' ELSE 'scheduled' END,
                    $4, $5, $6, $8, COALESCE($7, clock_timestamp()), $10,
                    COALESCE($3::jsonb->>'company_id', ''))
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id, state, kind, payload, errors, tenant_key),
         words AS (
            INSERT INTO job_search (job_id, tenant_key, words)
            SELECT id, tenant_key,
                   to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text)
            FROM ins)
         SELECT id, CASE WHEN state = 'available' THEN pg_notify($9, $1)::text END AS notified
         FROM ins",
    )
    .bind(&job.queue)
    .bind(&job.kind)
    .bind(&job.payload)
    .bind(job.priority)
    .bind(max_attempts as i32)
    .bind(job.timeout.map(|t| t.as_millis() as i64))
    .bind(job.run_at)
    .bind(&job.unique_key)
    .bind(channel)
    .bind(&job.trace_context)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(Enqueued {
            id: JobId(row.try_get("id")?),
            inserted: true,
        });
    }
    let key = job.unique_key.as_deref().unwrap_or_default();
    let id: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE unique_key = $1")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Enqueued {
        id: JobId(id),
        inserted: false,
    })
}

/// Inserts `jobs` on `conn` (in a transaction: a batch larger than one statement takes several)
/// and NOTIFYs each queue that gained available jobs, in the same statement.
async fn insert_many(
    conn: &mut PgConnection,
    channel: &str,
    jobs: &[(NewJob, u32)],
) -> Result<u64, JobError> {
    let mut inserted = 0;
    for chunk in jobs.chunks(5_000) {
        let queues: Vec<&str> = chunk.iter().map(|(j, _)| j.queue.as_str()).collect();
        let kinds: Vec<&str> = chunk.iter().map(|(j, _)| j.kind.as_str()).collect();
        let payloads: Vec<&serde_json::Value> = chunk.iter().map(|(j, _)| &j.payload).collect();
        let priorities: Vec<i16> = chunk.iter().map(|(j, _)| j.priority).collect();
        let attempts: Vec<i32> = chunk.iter().map(|(_, a)| *a as i32).collect();
        let timeouts: Vec<Option<i64>> = chunk
            .iter()
            .map(|(j, _)| j.timeout.map(|t| t.as_millis() as i64))
            .collect();
        let keys: Vec<Option<&str>> = chunk.iter().map(|(j, _)| j.unique_key.as_deref()).collect();
        let run_ats: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|(j, _)| j.run_at).collect();
        let contexts: Vec<Option<&str>> = chunk
            .iter()
            .map(|(j, _)| j.trace_context.as_deref())
            .collect();
        let (count, _notified): (i64, i64) = sqlx::query_as(
            "WITH ins AS (
                INSERT INTO jobs (queue, kind, payload, state, priority, max_attempts, timeout_ms,
                                  unique_key, run_at, trace_context, tenant_key)
                SELECT q, k, p,
                       CASE WHEN r IS NULL OR r <= now() THEN 'available' ELSE 'scheduled' END,
                       pr, ma, t, u, COALESCE(r, clock_timestamp()), tc,
                       COALESCE(p->>'company_id', '')
                FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::int2[], $5::int4[], $6::int8[],
                            $7::text[], $8::timestamptz[], $9::text[])
                     AS x(q, k, p, pr, ma, t, u, r, tc)
                ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
                RETURNING id, queue, state, kind, payload, errors, tenant_key),
             words AS (
                INSERT INTO job_search (job_id, tenant_key, words)
                SELECT id, tenant_key,
                       to_tsvector('simple', kind || ' ' || errors::text || ' ' || payload::text)
                FROM ins)
             SELECT (SELECT count(*) FROM ins),
                    (SELECT count(pg_notify($10, queue))
                     FROM (SELECT DISTINCT queue FROM ins WHERE state = 'available') woken)",
        )
        .bind(&queues)
        .bind(&kinds)
        .bind(&payloads)
        .bind(&priorities)
        .bind(&attempts)
        .bind(&timeouts)
        .bind(&keys)
        .bind(&run_ats)
        .bind(&contexts)
        .bind(channel)
        .fetch_one(&mut *conn)
        .await?;
        inserted += count as u64;
    }
    Ok(inserted)
}
