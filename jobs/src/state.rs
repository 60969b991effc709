//! The closed set of job states, shared by the CLI, the HTTP API and metrics.
//!
//! ```text
//! scheduled (run_at in the future) → available → running → done
//! running → retrying (failed; run_at = now + backoff, stored) → available …
//! running → dead (attempts exhausted, or a permanent error): the dead-letter queue
//! any non-final → cancelled (operator, or the owner was erased)
//! dead → available (operator retry: attempts reset)
//! running, worker gone (no heartbeat for rescue_after) → available (rescue; the attempt counts)
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Scheduled,
    Available,
    Running,
    Retrying,
    Done,
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retrying,
        JobState::Done,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Done, dead and cancelled jobs never run again on their own.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Dead | JobState::Cancelled)
    }

    /// States an operator may retry from: the dead-letter queue, and a job waiting out its
    /// backoff (retrying it runs it now).
    pub fn is_retryable_by_operator(self) -> bool {
        matches!(self, JobState::Dead | JobState::Retrying)
    }

    /// States an operator may discard (cancel) from. A running job is left to finish or fail:
    /// its worker holds it, and cancelling under it would not stop the work.
    pub fn is_discardable_by_operator(self) -> bool {
        matches!(
            self,
            JobState::Scheduled | JobState::Available | JobState::Retrying | JobState::Dead
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown job state \"{0}\" (one of scheduled, available, running, retrying, done, dead, cancelled)"
)]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_name() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\"")
            );
        }
        assert!("failed".parse::<JobState>().is_err());
    }

    #[test]
    fn only_done_dead_and_cancelled_are_final() {
        let finals: Vec<_> = JobState::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [JobState::Done, JobState::Dead, JobState::Cancelled]
        );
    }

    #[test]
    fn operators_retry_dead_or_retrying_jobs_and_never_discard_running_ones() {
        assert!(JobState::Dead.is_retryable_by_operator());
        assert!(JobState::Retrying.is_retryable_by_operator());
        assert!(!JobState::Done.is_retryable_by_operator());
        assert!(!JobState::Running.is_discardable_by_operator());
        assert!(JobState::Dead.is_discardable_by_operator());
    }
}
