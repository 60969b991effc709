//! What the operators' console asks of a store beyond the engine's own needs: which jobs match
//! a filter (lists, search, bulk actions), paused queues, and per-minute activity. The filter's
//! SQL is built here once for both databases; a [`Dialect`] supplies the few expressions that
//! differ (placeholders, the company in the payload, search, time).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::JobFilter;
use crate::error::JobError;
use crate::model::Job;
use crate::state::JobState;

/// The console's part of a job store (`store.console()`), implemented once for both databases
/// by [`super::console_impl::impl_console`].
#[async_trait]
pub trait Console: Send + Sync {
    /// Jobs matching `filter`, newest first, from its cursor on, at most its limit.
    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, JobError>;

    /// How many jobs match `filter` (cursor ignored) in one of `states`.
    async fn count_matching(
        &self,
        filter: &JobFilter,
        states: &[JobState],
    ) -> Result<i64, JobError>;

    /// Applies `action` to every job `filter` matches (cursor ignored) in a state the action
    /// applies to; returns how many changed.
    async fn act_on_matching(
        &self,
        filter: &JobFilter,
        action: BulkAction,
    ) -> Result<u64, JobError>;

    /// Pauses `queue` for every process (claims skip it; running jobs finish). False when it
    /// was paused already.
    async fn pause_queue(&self, queue: &str, by: &str) -> Result<bool, JobError>;

    /// Resumes `queue` and wakes its fetchers. False when it was not paused.
    async fn resume_queue(&self, queue: &str) -> Result<bool, JobError>;

    async fn paused_queues(&self) -> Result<Vec<QueuePause>, JobError>;

    /// Adds these counts to the per-minute activity table.
    async fn add_minute_stats(&self, rows: &[MinuteStats]) -> Result<(), JobError>;

    /// The per-minute activity rows from `since_minute` (Unix seconds) on, oldest first.
    async fn minute_stats(&self, since_minute: i64) -> Result<Vec<MinuteStats>, JobError>;

    /// Per queue: attempts done, and attempts failed (to be retried or dead), within the last
    /// `window` (whole minutes, the current one included), from the activity table.
    async fn activity(
        &self,
        window: std::time::Duration,
    ) -> Result<Vec<(String, i64, i64)>, JobError>;

    /// Deletes activity rows past their retention.
    async fn prune_minute_stats(&self) -> Result<u64, JobError>;
}

/// An action an operator takes on every job a filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Dead or retrying jobs → `available` now, attempts reset.
    Retry,
    /// Waiting or dead jobs → `cancelled`.
    Discard,
}

impl BulkAction {
    /// The states a job must be in for the action to apply to it.
    pub fn from_states(self) -> Vec<JobState> {
        JobState::ALL
            .iter()
            .copied()
            .filter(|s| match self {
                BulkAction::Retry => s.is_retryable_by_operator(),
                BulkAction::Discard => s.is_discardable_by_operator(),
            })
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Discard => "discard",
        }
    }
}

/// A paused queue: nothing claims from it until it is resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuePause {
    pub queue: String,
    pub paused_at: DateTime<Utc>,
    pub paused_by: String,
}

/// One queue's activity in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MinuteCounts {
    pub enqueued: i64,
    pub done: i64,
    pub failed: i64,
    pub dead: i64,
}

/// A row of the per-minute activity table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteStats {
    /// Unix seconds of the minute's start.
    pub minute: i64,
    pub queue: String,
    pub counts: MinuteCounts,
}

/// Unix seconds of the start of the minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60) * 60
}

/// Outcomes of a batch of attempts, counted per queue, for the per-minute table.
#[derive(Debug, Default)]
pub(super) struct OutcomeTally {
    per_queue: std::collections::BTreeMap<String, MinuteCounts>,
}

impl OutcomeTally {
    /// Counts a job that reached `state` from a running attempt.
    pub(super) fn count(&mut self, queue: &str, state: JobState) {
        let counts = self.per_queue.entry(queue.to_string()).or_default();
        match state {
            JobState::Done => counts.done += 1,
            JobState::Retrying | JobState::Available => counts.failed += 1,
            JobState::Dead => counts.dead += 1,
            _ => {}
        }
    }

    pub(super) fn rows(&self, minute: i64) -> Vec<MinuteStats> {
        self.per_queue
            .iter()
            .map(|(queue, counts)| MinuteStats {
                minute,
                queue: queue.clone(),
                counts: *counts,
            })
            .collect()
    }
}

/// Adds a row's counts to the table: the same text runs on both databases.
pub(super) const ADD_MINUTE_STATS: &str = "INSERT INTO job_stats_minute
        (minute, queue, enqueued, done, failed, dead) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (minute, queue) DO UPDATE SET
        enqueued = job_stats_minute.enqueued + excluded.enqueued,
        done = job_stats_minute.done + excluded.done,
        failed = job_stats_minute.failed + excluded.failed,
        dead = job_stats_minute.dead + excluded.dead";

/// The rows from minute `$1` on, oldest first.
pub(super) const MINUTE_STATS_SINCE: &str = "SELECT minute, queue, enqueued, done, failed, dead
    FROM job_stats_minute WHERE minute >= $1 ORDER BY minute, queue";

/// Per queue, attempts done and attempts failed (retried or dead) from minute `$1` on.
pub(super) const ACTIVITY_SINCE: &str = "SELECT queue, CAST(sum(done) AS BIGINT),
        CAST(sum(failed + dead) AS BIGINT)
    FROM job_stats_minute WHERE minute >= $1 GROUP BY queue";

/// The first minute of a trailing `window` (whole minutes, the current one included).
pub(super) fn window_start(window: std::time::Duration) -> i64 {
    minute_of(Utc::now()) - (window.as_secs() as i64).div_euclid(60) * 60
}

/// Deletes the activity rows before minute `$1`.
pub(super) const PRUNE_MINUTE_STATS: &str = "DELETE FROM job_stats_minute WHERE minute < $1";

/// Pauses queue `$1` at `$2` (Unix microseconds) for `$3`, unless it is paused already.
pub(super) const PAUSE_QUEUE: &str = "INSERT INTO queue_pauses (queue, paused_at, paused_by)
    VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

pub(super) const RESUME_QUEUE: &str = "DELETE FROM queue_pauses WHERE queue = $1";

pub(super) const PAUSED_QUEUES: &str =
    "SELECT queue, paused_at, paused_by FROM queue_pauses ORDER BY queue";

/// A row of [`PAUSED_QUEUES`], on either database.
pub(super) fn pause_row<'r, R>(row: &'r R) -> Result<QueuePause, JobError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let micros: i64 = row.try_get(1)?;
    Ok(QueuePause {
        queue: row.try_get(0)?,
        paused_at: DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| JobError::Corrupt(format!("queue_pauses.paused_at {micros}")))?,
        paused_by: row.try_get(2)?,
    })
}

/// The `UPDATE` of a bulk action on the jobs `c` matches; `c`'s last argument is the time.
pub(super) fn bulk_update(dialect: &Dialect, action: BulkAction, c: &Conditions) -> String {
    let now = (dialect.micros)(&(dialect.placeholder)(c.args.len()));
    let set = match action {
        BulkAction::Retry => format!(
            "state = 'available', attempt = 0, run_at = {now}, finished_at = NULL,
             locked_by = NULL, heartbeat_at = NULL"
        ),
        BulkAction::Discard => {
            format!("state = 'cancelled', finished_at = {now}, locked_by = NULL")
        }
    };
    format!(
        "UPDATE jobs SET {set} WHERE id IN (SELECT id FROM jobs WHERE {}{}) RETURNING queue",
        c.clause(),
        dialect.lock
    )
}

/// How long the per-minute table keeps a row.
pub(super) const STATS_RETENTION_SECS: i64 = 14 * 24 * 3600;

/// A row of [`MINUTE_STATS_SINCE`], on either database.
pub(super) fn minute_row<'r, R>(row: &'r R) -> Result<MinuteStats, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(MinuteStats {
        minute: row.try_get(0)?,
        queue: row.try_get(1)?,
        counts: MinuteCounts {
            enqueued: row.try_get(2)?,
            done: row.try_get(3)?,
            failed: row.try_get(4)?,
            dead: row.try_get(5)?,
        },
    })
}

/// A value bound to a filter's placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// The expressions the two databases spell differently.
pub(super) struct Dialect {
    /// The `n`th placeholder (1-based).
    pub placeholder: fn(usize) -> String,
    /// A condition that the job belongs to the company at placeholder `p`.
    pub company: fn(&str) -> String,
    /// A condition that the job's words match the search text at placeholder `p`.
    pub search: fn(&str) -> String,
    /// A timestamp from the microseconds at placeholder `p`, comparable with `created_at`.
    pub micros: fn(&str) -> String,
    /// The search text as bound (an escaped pattern where the match is a `LIKE`).
    pub search_arg: fn(&str) -> String,
    /// What a subquery picking rows to update adds to lock them (Postgres: skip rows a
    /// worker holds; SQLite has one writer).
    pub lock: &'static str,
}

/// `state IN (…)` for these states (`FALSE` for none), inline: the names are a closed set,
/// never user text, and the same text runs on both databases.
pub(super) fn state_in(states: &[JobState]) -> String {
    if states.is_empty() {
        return "FALSE".to_string();
    }
    let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("state IN ({})", names.join(", "))
}

/// A `WHERE` clause (without the keyword) and its arguments in placeholder order.
#[derive(Debug, Default)]
pub(super) struct Conditions {
    pub sql: String,
    pub args: Vec<Arg>,
}

impl Conditions {
    fn push(&mut self, dialect: &Dialect, arg: Arg, condition: impl FnOnce(&str) -> String) {
        self.args.push(arg);
        let p = (dialect.placeholder)(self.args.len());
        if !self.sql.is_empty() {
            self.sql.push_str(" AND ");
        }
        self.sql.push_str(&condition(&p));
    }

    fn push_states(&mut self, states: &[JobState]) {
        if !self.sql.is_empty() {
            self.sql.push_str(" AND ");
        }
        self.sql.push_str(&state_in(states));
    }

    /// The clause, `TRUE` when nothing restricts it.
    pub fn clause(&self) -> &str {
        if self.sql.is_empty() {
            "TRUE"
        } else {
            &self.sql
        }
    }
}

/// The conditions of `filter`. With `only` set, the jobs must also be in one of those states
/// (a bulk action's: the filter's own state, if any, must be among them). With `paged`, the
/// cursor applies too.
pub(super) fn conditions(
    dialect: &Dialect,
    filter: &JobFilter,
    only: Option<&[JobState]>,
    paged: bool,
) -> Conditions {
    let mut c = Conditions::default();
    if let Some(queue) = &filter.queue {
        c.push(dialect, Arg::Text(queue.clone()), |p| {
            format!("queue = {p}")
        });
    }
    match (filter.state, only) {
        (Some(state), Some(allowed)) => {
            let states: Vec<JobState> = allowed.iter().copied().filter(|s| *s == state).collect();
            c.push_states(&states);
        }
        (Some(state), None) => c.push_states(&[state]),
        (None, Some(allowed)) => c.push_states(allowed),
        (None, None) => {}
    }
    if let Some(kind) = &filter.kind {
        c.push(dialect, Arg::Text(kind.clone()), |p| format!("kind = {p}"));
    }
    if let Some(company) = &filter.company_id {
        c.push(dialect, Arg::Text(company.clone()), dialect.company);
    }
    if let Some(from) = filter.created_from {
        let micros = dialect.micros;
        c.push(dialect, Arg::Int(from.timestamp_micros()), |p| {
            format!("created_at >= {}", micros(p))
        });
    }
    if let Some(to) = filter.created_to {
        let micros = dialect.micros;
        c.push(dialect, Arg::Int(to.timestamp_micros()), |p| {
            format!("created_at < {}", micros(p))
        });
    }
    if let Some(text) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let search = dialect.search;
        c.push(dialect, Arg::Text((dialect.search_arg)(text)), search);
    }
    if paged && let Some(before) = filter.before {
        c.push(dialect, Arg::Int(before.0), |p| format!("id < {p}"));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobId;

    const NUMBERED: Dialect = Dialect {
        placeholder: |n| format!("${n}"),
        company: |p| format!("company = {p}"),
        search: |p| format!("words @@ {p}"),
        micros: |p| format!("t({p})"),
        search_arg: |t| t.to_string(),
        lock: "",
    };

    #[test]
    fn every_set_field_is_a_condition_with_its_own_placeholder() {
        let filter = JobFilter {
            queue: Some("email".into()),
            state: Some(JobState::Dead),
            kind: Some("email.send".into()),
            company_id: Some("c1".into()),
            search: Some(" boom ".into()),
            before: Some(JobId(9)),
            ..Default::default()
        };
        let c = conditions(&NUMBERED, &filter, None, true);
        assert_eq!(
            c.clause(),
            "queue = $1 AND state IN ('dead') AND kind = $2 AND company = $3 \
             AND words @@ $4 AND id < $5"
        );
        assert_eq!(
            c.args,
            vec![
                Arg::Text("email".into()),
                Arg::Text("email.send".into()),
                Arg::Text("c1".into()),
                Arg::Text("boom".into()),
                Arg::Int(9)
            ]
        );
    }

    #[test]
    fn a_bulk_action_keeps_to_its_states_and_ignores_the_cursor() {
        let filter = JobFilter {
            before: Some(JobId(9)),
            ..Default::default()
        };
        let states = BulkAction::Retry.from_states();
        let c = conditions(&NUMBERED, &filter, Some(&states), false);
        assert_eq!(c.clause(), "state IN ('retrying', 'dead')");
        let dead_only = JobFilter {
            state: Some(JobState::Done),
            ..Default::default()
        };
        let c = conditions(&NUMBERED, &dead_only, Some(&states), false);
        assert_eq!(c.clause(), "FALSE", "done jobs cannot be retried");
    }

    #[test]
    fn no_filter_matches_everything() {
        let c = conditions(&NUMBERED, &JobFilter::default(), None, true);
        assert_eq!(c.clause(), "TRUE");
        assert!(c.args.is_empty());
    }

    #[test]
    fn outcomes_are_tallied_per_queue() {
        let mut tally = OutcomeTally::default();
        tally.count("a", JobState::Done);
        tally.count("a", JobState::Done);
        tally.count("a", JobState::Retrying);
        tally.count("b", JobState::Dead);
        tally.count("b", JobState::Scheduled);
        let rows = tally.rows(60);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].counts,
            MinuteCounts {
                done: 2,
                failed: 1,
                ..Default::default()
            }
        );
        assert_eq!(rows[1].counts.dead, 1);
    }

    #[test]
    fn minutes_start_on_the_minute() {
        let at = DateTime::from_timestamp(125, 0).unwrap();
        assert_eq!(minute_of(at), 120);
    }
}
