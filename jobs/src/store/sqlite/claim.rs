//! Claiming: the plain claim in priority order, the fair claim company by company, and
//! what happens to a claimed row that cannot be read.

use super::*;
use crate::store::row::split_claims;

/// The claim's `UPDATE` of the jobs the `$picked` query selects (`?1` is now, `?2` the
/// worker), returning what a claimed job is decoded from and the columns `$more` names.
macro_rules! claim_update {
    ($picked:literal, $more:literal) => {
        concat!(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease = lease + 1,
                             attempted_at = ?1, heartbeat_at = ?1, locked_by = ?2,
                             progress = NULL, progress_note = NULL
             WHERE id IN (",
            $picked,
            ")
             RETURNING id, lease, kind, payload, attempt, max_attempts, timeout_ms, priority,
                       trace_context",
            $more
        )
    };
}

pub(super) async fn claim(
    db: &SqliteDb,
    queue: &str,
    worker: &str,
    limit: usize,
) -> Result<Vec<ClaimedJob>, JobError> {
    let pool = &db.pool;
    let now = now_us();
    let rows = sqlx::query(claim_update!(
        "SELECT id FROM jobs
         WHERE queue = ?3 AND state IN ('available', 'scheduled', 'retrying') AND run_at <= ?1
           AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = ?3)
         ORDER BY priority DESC, run_at, id LIMIT ?4",
        ""
    ))
    .bind(now)
    .bind(worker)
    .bind(queue)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    let mut claimed = decode_claims(pool, queue, rows).await?;
    claimed.sort_by_key(|(priority, job)| (-priority, job.id));
    Ok(claimed.into_iter().map(|(_, job)| job).collect())
}

/// The fair claim (see [`crate::store::JobStore::claim_fair`]): every due job of the queue ranked
/// within its company, and the batch taken in turns, a job's turn being its rank plus its
/// company's running jobs (the Postgres claim explains why). SQLite has one
/// writer, so the counts cannot go stale before the update.
pub(super) async fn claim_fair(
    db: &SqliteDb,
    queue: &str,
    worker: &str,
    limit: usize,
    cap: Option<usize>,
) -> Result<Vec<ClaimedJob>, JobError> {
    let pool = &db.pool;
    let now = now_us();
    let rows = sqlx::query(claim_update!(
        "SELECT id FROM (
             SELECT w.id, w.priority, w.run_at,
                    row_number() OVER (PARTITION BY w.tenant_key
                                       ORDER BY w.priority DESC, w.run_at, w.id) AS rank,
                    (SELECT count(*) FROM jobs r
                     WHERE r.state = 'running' AND r.queue = ?3
                       AND r.tenant_key = w.tenant_key) AS held
             FROM jobs w
             WHERE w.queue = ?3 AND w.state IN ('available', 'scheduled', 'retrying')
               AND w.run_at <= ?1
               AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = ?3))
         WHERE rank + held <= ?5
         ORDER BY rank + held, priority DESC, run_at, id LIMIT ?4",
        ", tenant_key, run_at"
    ))
    .bind(now)
    .bind(worker)
    .bind(queue)
    .bind(limit as i64)
    .bind(cap.map_or(i64::MAX, |c| c as i64))
    .fetch_all(pool)
    .await?;
    let companies: std::collections::HashMap<i64, (String, i64)> = rows
        .iter()
        .filter_map(|r| {
            let id = r.try_get::<i64, _>("id").ok()?;
            let company = r.try_get::<String, _>("tenant_key").ok()?;
            let run_at = r.try_get::<i64, _>("run_at").ok()?;
            Some((id, (company, run_at)))
        })
        .collect();
    let claimed = decode_claims(pool, queue, rows).await?;
    Ok(crate::store::round_robin(claimed, |(priority, job)| {
        let (company, run_at) = companies.get(&job.id.0).cloned().unwrap_or_default();
        (company, (-priority, run_at, job.id.0))
    })
    .into_iter()
    .map(|(_, job)| job)
    .collect())
}

/// Decodes claimed rows, each with the priority it was claimed by; rows that cannot be read
/// are buried.
async fn decode_claims(
    pool: &SqlitePool,
    queue: &str,
    rows: Vec<SqliteRow>,
) -> Result<Vec<(i64, ClaimedJob)>, JobError> {
    let (claimed, undecodable) = split_claims(rows, queue, |row| row.read("priority"));
    bury_undecodable(pool, &undecodable).await?;
    Ok(claimed)
}

/// Claimed rows that could not be read go to `dead` with the reason: no attempt would read
/// them better, and an operator can inspect them there. No on-dead hook runs for them: a hook
/// needs the payload it could not read.
pub(super) async fn bury_undecodable(
    pool: &SqlitePool,
    rows: &[(Lease, String)],
) -> Result<(), JobError> {
    if rows.is_empty() {
        return Ok(());
    }
    tracing::error!(jobs = ?rows, "claimed job rows could not be decoded; moved to dead");
    let now = now_us();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for (lease, reason) in rows {
        let error = format!("claimed row could not be decoded: {reason}");
        sqlx::query(
            // The unreadable payload is kept as a JSON string, so the dead row itself can be
            // listed and inspected.
            "UPDATE jobs SET state = 'dead', finished_at = ?1, locked_by = NULL,
                heartbeat_at = NULL, last_error = ?2,
                payload = CASE WHEN json_valid(payload) THEN payload ELSE json_quote(payload) END,
                errors = json_insert(errors, '$[#]', json_object('attempt', attempt,
                    'at', strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000000.0, 'unixepoch'), 'error', ?2))
             WHERE id = ?3 AND lease = ?4 AND state = 'running'",
        )
        .bind(now)
        .bind(&error)
        .bind(lease.job.0)
        .bind(lease.token)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
