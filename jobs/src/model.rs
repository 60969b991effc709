//! What a job is: the row an operator sees ([`Job`]), what a caller enqueues ([`NewJob`]), what
//! a worker claims ([`ClaimedJob`]) and how an attempt ended ([`Outcome`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::progress::{JobProgress, Progress};
use crate::state::JobState;

/// A job's id: the primary key of the `jobs` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A job to enqueue. Unset fields come from the queue's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// Higher runs first within a queue.
    pub priority: i16,
    /// Not before this time; `None` = now.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: Option<u32>,
    /// Per-job time-out overriding the queue's.
    pub timeout: Option<Duration>,
    /// A second enqueue with the same key returns the first job instead of adding one.
    pub unique_key: Option<String>,
    /// The enqueuing span's W3C `traceparent`; [`crate::JobClient`] fills it from the current
    /// span when it is unset (it stays `None` when telemetry is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<String>,
}

impl NewJob {
    pub fn new(
        queue: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        NewJob {
            queue: queue.into(),
            kind: kind.into(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: None,
            timeout: None,
            unique_key: None,
            trace_context: None,
        }
    }

    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
}

/// The answer to an enqueue: the job's id, and whether this call created it (false when a job
/// with the same unique key already existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: JobId,
    pub inserted: bool,
}

/// One failed attempt, kept on the job for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: String,
}

/// A job row as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub state: JobState,
    pub priority: i16,
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_ms: Option<u64>,
    pub unique_key: Option<String>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    pub last_error: Option<String>,
    pub errors: Vec<AttemptError>,
    /// How far the running (or last) attempt said it got, if it said.
    pub progress: Option<JobProgress>,
}

/// One claim of one job: the fencing token an attempt carries. Every claim increments the
/// job's `lease`, and the store refuses an acknowledgement, heartbeat, release or side-effect
/// claim whose token is not the job's current one, so an attempt whose job was rescued and
/// claimed again (by any process, the same one included) can change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Lease {
    pub job: JobId,
    pub token: i64,
}

impl std::fmt::Display for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.job, self.token)
    }
}

/// A job a worker process has claimed (state `running`, `attempt` already counted).
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: JobId,
    /// This claim's fencing token (see [`Lease`]).
    pub lease: i64,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_ms: Option<u64>,
    /// Where this attempt reports how far it got (see [`Progress`]); the runtime attaches it
    /// to the attempt's lease before the handler runs.
    pub progress: Progress,
    /// The W3C `traceparent` stored at enqueue: the parent of this attempt's span.
    pub trace_context: Option<String>,
}

impl ClaimedJob {
    pub fn lease(&self) -> Lease {
        Lease {
            job: self.id,
            token: self.lease,
        }
    }
}

/// How one attempt ended, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    /// Failed; run again after `delay` unless the attempts are used up (then `dead`).
    Retry {
        error: String,
        delay: Duration,
    },
    /// Failed for good: straight to `dead`.
    Dead {
        error: String,
    },
    /// Not attempted after all (e.g. its provider's circuit is open): back to `scheduled`
    /// for `delay`, the attempt given back and no error recorded.
    Snooze {
        delay: Duration,
    },
}

/// An attempt's outcome for a claimed job, waiting to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub lease: Lease,
    pub outcome: Outcome,
}

/// A job that has just ended `dead`, as its kind's on-dead hook sees it.
#[derive(Debug, Clone)]
pub struct DeadJob {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// Why it died (the last attempt's error).
    pub error: String,
}

/// Counts per state for one queue.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub counts: std::collections::BTreeMap<JobState, i64>,
    /// Age of the oldest job that is due (available, or scheduled/retrying past its run_at).
    pub oldest_available_age_ms: Option<i64>,
    /// Set while claims from the queue are paused: since when and by whom.
    pub pause: Option<crate::store::QueuePause>,
}
