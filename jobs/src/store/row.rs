//! A job row decoded once for both databases. The columns they store alike (text, 64-bit
//! integers) are read through [`Column`]; [`JobRow`] is what each stores its own way: times
//! (`timestamptz` on Postgres, Unix microseconds on SQLite), JSON (`jsonb` or text) and the
//! narrower integers Postgres declares.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::error::JobError;
use crate::model::{AttemptError, ClaimedJob, DeadJob, Job, JobId, Lease};
use crate::state::JobState;

use super::KeyedProgress;

/// A column of type `T`, read by name from a row of either database.
pub(super) trait Column<T> {
    fn read(&self, name: &str) -> Result<T, JobError>;
}

impl<R, T> Column<T> for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    T: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn read(&self, name: &str) -> Result<T, JobError> {
        Ok(self.try_get(name)?)
    }
}

/// A row of the `jobs` table: what the two databases store differently.
pub(super) trait JobRow:
    Column<String> + Column<Option<String>> + Column<i64> + Column<Option<i64>>
{
    /// A JSON column parsed as `T`: the outer error is the column's, the inner the parse's.
    fn json<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Result<T, serde_json::Error>, JobError>;

    fn time(&self, name: &str) -> Result<DateTime<Utc>, JobError>;

    fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, JobError>;

    /// An attempt count (`attempt`, `max_attempts`).
    fn count(&self, name: &str) -> Result<u32, JobError>;

    fn priority(&self) -> Result<i16, JobError>;

    /// The `progress` column, widened.
    fn percent(&self) -> Result<Option<i64>, JobError>;
}

pub(super) fn parse_state(s: String) -> Result<JobState, JobError> {
    s.parse()
        .map_err(|e: crate::state::UnknownState| JobError::Corrupt(e.to_string()))
}

pub(super) fn state<R: JobRow>(row: &R) -> Result<JobState, JobError> {
    parse_state(row.read("state")?)
}

pub(super) fn lease<R: JobRow>(row: &R) -> Result<Lease, JobError> {
    Ok(Lease {
        job: JobId(row.read("id")?),
        token: row.read("lease")?,
    })
}

fn timeout_ms<R: JobRow>(row: &R) -> Result<Option<u64>, JobError> {
    Ok(Column::<Option<i64>>::read(row, "timeout_ms")?.map(|t| t as u64))
}

fn payload<R: JobRow>(row: &R) -> Result<serde_json::Value, JobError> {
    Ok(row.json("payload")??)
}

/// A whole job row (the columns of `JOB_COLUMNS`).
pub(super) fn decode_job<R: JobRow>(row: &R) -> Result<Job, JobError> {
    let errors: Vec<AttemptError> = row
        .json("errors")?
        .map_err(|e| JobError::Corrupt(format!("errors column: {e}")))?;
    Ok(Job {
        id: JobId(row.read("id")?),
        queue: row.read("queue")?,
        kind: row.read("kind")?,
        payload: payload(row)?,
        state: state(row)?,
        priority: row.priority()?,
        attempt: row.count("attempt")?,
        max_attempts: row.count("max_attempts")?,
        timeout_ms: timeout_ms(row)?,
        unique_key: row.read("unique_key")?,
        run_at: row.time("run_at")?,
        created_at: row.time("created_at")?,
        attempted_at: row.opt_time("attempted_at")?,
        heartbeat_at: row.opt_time("heartbeat_at")?,
        finished_at: row.opt_time("finished_at")?,
        locked_by: row.read("locked_by")?,
        last_error: row.read("last_error")?,
        errors,
        progress: super::stored_progress(row.percent()?, row.read("progress_note")?)?,
    })
}

/// A row the claim returned, for `queue`.
pub(super) fn decode_claimed<R: JobRow>(row: &R, queue: &str) -> Result<ClaimedJob, JobError> {
    Ok(ClaimedJob {
        id: JobId(row.read("id")?),
        lease: row.read("lease")?,
        queue: queue.to_string(),
        kind: row.read("kind")?,
        payload: payload(row)?,
        attempt: row.count("attempt")?,
        max_attempts: row.count("max_attempts")?,
        timeout_ms: timeout_ms(row)?,
        progress: crate::progress::Progress::detached(),
        // Unreadable is the same as absent: a lost trace link is no reason to bury a job.
        trace_context: Column::<Option<String>>::read(row, "trace_context")
            .ok()
            .flatten(),
    })
}

/// Claimed rows decoded, each with its sort `key`, and those that could not be read, by lease
/// and reason, to be buried (see the stores' `bury_undecodable`).
pub(super) type SplitClaims<K> = (Vec<(K, ClaimedJob)>, Vec<(Lease, String)>);

pub(super) fn split_claims<R: JobRow, K>(
    rows: Vec<R>,
    queue: &str,
    key: impl Fn(&R) -> Result<K, JobError>,
) -> SplitClaims<K> {
    let mut claimed = Vec::with_capacity(rows.len());
    let mut undecodable = Vec::new();
    for row in rows {
        match key(&row).and_then(|k| Ok((k, decode_claimed(&row, queue)?))) {
            Ok(job) => claimed.push(job),
            Err(e) => match lease(&row) {
                Ok(lease) => undecodable.push((lease, e.to_string())),
                // Without its id and lease the row cannot be named; it stays `running`
                // without a heartbeat and is rescued.
                Err(_) => tracing::error!(queue, error = %e, "claimed a job row without an id"),
            },
        }
    }
    (claimed, undecodable)
}

/// A job going to `dead` (`id, queue, kind, payload, last_error`), for its kind's hook.
pub(super) fn dead_job<R: JobRow>(row: &R) -> Result<DeadJob, JobError> {
    Ok(DeadJob {
        id: JobId(row.read("id")?),
        queue: row.read("queue")?,
        kind: row.read("kind")?,
        payload: payload(row)?,
        error: Column::<Option<String>>::read(row, "last_error")?.unwrap_or_default(),
    })
}

/// A row of `id, state, progress, progress_note`.
pub(super) fn keyed_progress<R: JobRow>(row: &R) -> Result<KeyedProgress, JobError> {
    Ok(KeyedProgress {
        id: JobId(row.read("id")?),
        state: state(row)?,
        progress: super::stored_progress(row.percent()?, row.read("progress_note")?)?,
    })
}

/// Jobs of one queue in one state: how many, and the age of the oldest due one (ms).
pub(super) type QueueCount = (String, JobState, i64, Option<i64>);

/// A row of the stats query: `queue, state, n, oldest_ms`.
pub(super) fn stats_row<R: JobRow>(row: &R) -> Result<QueueCount, JobError> {
    Ok((
        row.read("queue")?,
        state(row)?,
        row.read("n")?,
        row.read("oldest_ms")?,
    ))
}
