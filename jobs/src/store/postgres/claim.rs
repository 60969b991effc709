//! Claiming: the plain claim in priority order, the fair claim company by company, and
//! what happens to a claimed row that cannot be read.

use super::*;
use crate::store::row::split_claims;

pub(super) async fn claim(
    db: &PgDb,
    queue: &str,
    worker: &str,
    limit: usize,
) -> Result<Vec<ClaimedJob>, JobError> {
    let pool = &db.engine_pool;
    let rows = sqlx::query(
        "WITH picked AS (
            SELECT id FROM jobs
            WHERE queue = $1 AND state IN ('available', 'scheduled', 'retrying') AND run_at <= now()
              AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = $1)
            ORDER BY priority DESC, run_at, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED)
         UPDATE jobs j
         SET state = 'running', attempt = j.attempt + 1, lease = j.lease + 1,
             attempted_at = clock_timestamp(), heartbeat_at = clock_timestamp(), locked_by = $3,
             progress = NULL, progress_note = NULL
         FROM picked WHERE j.id = picked.id
         RETURNING j.id, j.lease, j.kind, j.payload, j.attempt, j.max_attempts, j.timeout_ms,
                   j.priority, j.trace_context",
    )
    .bind(queue)
    .bind(limit as i64)
    .bind(worker)
    .fetch_all(pool)
    .await?;
    decode_claims(pool, queue, rows, ClaimOrder::Priority).await
}

/// The fair claim: companies with due jobs found by a loose index scan of `jobs_fair` (one
/// probe per company, however long one company's backlog is), up to `limit` jobs taken in
/// turns: a job's turn is its company's running jobs plus its rank within the company, so
/// the company with the fewest running goes first and every company's next job comes before
/// any company's one after (round-robin that also holds across claims of one job). Each
/// company is capped at `cap` running. Claims of one queue take turns on an advisory lock so that the
/// running counts they read are not stale: each one reads after the previous committed.
pub(super) async fn claim_fair(
    db: &PgDb,
    queue: &str,
    worker: &str,
    limit: usize,
    cap: Option<usize>,
) -> Result<Vec<ClaimedJob>, JobError> {
    let mut tx = db.engine_pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("voxline.claim_fair:{}:{queue}", db.schema))
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "WITH RECURSIVE companies AS (
            (SELECT tenant_key FROM jobs
             WHERE queue = $1 AND state IN ('available', 'scheduled', 'retrying')
             ORDER BY tenant_key LIMIT 1)
            UNION ALL
            SELECT (SELECT j.tenant_key FROM jobs j
                    WHERE j.queue = $1 AND j.state IN ('available', 'scheduled', 'retrying')
                      AND j.tenant_key > c.tenant_key
                    ORDER BY j.tenant_key LIMIT 1)
            FROM companies c WHERE c.tenant_key IS NOT NULL),
         held AS (
            SELECT tenant_key, count(*) AS n FROM jobs
            WHERE queue = $1 AND state = 'running' GROUP BY tenant_key),
         picked AS (
            SELECT w.id,
                   row_number() OVER (ORDER BY COALESCE(h.n, 0) + w.rank, w.priority DESC,
                                               w.run_at, w.id) AS turn
            FROM companies c
            LEFT JOIN held h ON h.tenant_key = c.tenant_key
            CROSS JOIN LATERAL (
                SELECT id, priority, run_at,
                       row_number() OVER (ORDER BY priority DESC, run_at, id) AS rank
                FROM (SELECT id, priority, run_at FROM jobs
                      WHERE queue = $1 AND tenant_key = c.tenant_key
                        AND state IN ('available', 'scheduled', 'retrying') AND run_at <= now()
                      ORDER BY priority DESC, run_at, id
                      LIMIT GREATEST(0, LEAST($2, $4 - COALESCE(h.n, 0)))) due) w
            WHERE c.tenant_key IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = $1)
            ORDER BY turn
            LIMIT $2)
         UPDATE jobs j
         SET state = 'running', attempt = j.attempt + 1, lease = j.lease + 1,
             attempted_at = clock_timestamp(), heartbeat_at = clock_timestamp(), locked_by = $3,
             progress = NULL, progress_note = NULL
         FROM picked WHERE j.id = picked.id AND j.state IN ('available', 'scheduled', 'retrying')
         RETURNING j.id, j.lease, j.kind, j.payload, j.attempt, j.max_attempts, j.timeout_ms,
                   j.priority, j.trace_context, picked.turn",
    )
    .bind(queue)
    .bind(limit as i64)
    .bind(worker)
    .bind(cap.map_or(i64::MAX, |c| c as i64))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    decode_claims(&db.engine_pool, queue, rows, ClaimOrder::Turn).await
}

/// Decodes claimed rows in claim order; rows that cannot be read are buried.
async fn decode_claims(
    pool: &PgPool,
    queue: &str,
    rows: Vec<PgRow>,
    order: ClaimOrder,
) -> Result<Vec<ClaimedJob>, JobError> {
    let (mut claimed, undecodable) = split_claims(rows, queue, |row| match order {
        ClaimOrder::Priority => Ok(-i64::from(row.priority()?)),
        ClaimOrder::Turn => row.read("turn"),
    });
    bury_undecodable(pool, &undecodable).await?;
    claimed.sort_by_key(|(key, job)| (*key, job.id));
    Ok(claimed.into_iter().map(|(_, job)| job).collect())
}

/// The order a claimed batch runs in (RETURNING has none of its own).
#[derive(Clone, Copy)]
pub(super) enum ClaimOrder {
    /// Priority, then id: the order of the plain claim.
    Priority,
    /// The fair claim's `turn` column: round-robin across companies.
    Turn,
}

/// Claimed rows that could not be read go to `dead` with the reason: no attempt would read
/// them better, and an operator can inspect them there.
pub(super) async fn bury_undecodable(
    pool: &PgPool,
    rows: &[(Lease, String)],
) -> Result<(), JobError> {
    if rows.is_empty() {
        return Ok(());
    }
    let (ids, leases) = lease_columns(rows.iter().map(|(l, _)| l));
    let errors: Vec<String> = rows
        .iter()
        .map(|(_, e)| format!("claimed row could not be decoded: {e}"))
        .collect();
    tracing::error!(jobs = ?rows, "claimed job rows could not be decoded; moved to dead");
    sqlx::query(
        "UPDATE jobs j SET state = 'dead', finished_at = now(), locked_by = NULL,
            heartbeat_at = NULL, last_error = f.error,
            errors = j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'at', now(), 'error', f.error))
         FROM UNNEST($1::int8[], $2::int8[], $3::text[]) AS f(id, lease, error)
         WHERE j.id = f.id AND j.lease = f.lease AND j.state = 'running'",
    )
    .bind(&ids)
    .bind(&leases)
    .bind(&errors)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) fn lease_columns<'a>(leases: impl Iterator<Item = &'a Lease>) -> (Vec<i64>, Vec<i64>) {
    leases.map(|l| (l.job.0, l.token)).unzip()
}
