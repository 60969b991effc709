//! Job progress: how far a running attempt says it got, a [`Percent`] and a short note, stored
//! on the job so operators and the session's event stream can show it.
//!
//! A handler reports through the [`Progress`] of its [`crate::ClaimedJob`]. Writes are cheap
//! by construction: an unchanged value is not written, and at most one write per
//! [`MIN_INTERVAL`] reaches the database (reaching 100 always does). Each write carries the
//! attempt's lease, so an attempt whose job was rescued and claimed again writes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::error::JobError;
use crate::model::Lease;
use crate::store::JobStore;

/// The longest note kept, in characters; a longer one is cut.
pub const NOTE_MAX_CHARS: usize = 200;

/// At most one progress write per job per this interval, except the one reaching 100.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// A percentage in `0..=100`: once you hold one, it is in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Percent(u8);

impl Percent {
    pub const ZERO: Percent = Percent(0);
    pub const DONE: Percent = Percent(100);

    /// `value` when it is at most 100.
    pub fn new(value: u8) -> Option<Self> {
        (value <= 100).then_some(Percent(value))
    }

    /// `value`, capped at 100.
    pub fn saturating(value: u8) -> Self {
        Percent(value.min(100))
    }

    /// `done` of `total`, rounded down (so 100 means all of it); 0 of nothing is 0.
    pub fn of(done: u64, total: u64) -> Self {
        if total == 0 {
            return Percent::ZERO;
        }
        let percent = (done.min(total) as u128 * 100) / total as u128;
        Percent(percent as u8)
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// A job's progress as stored: the percentage and the note (at most [`NOTE_MAX_CHARS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobProgress {
    pub percent: Percent,
    pub note: Option<String>,
}

impl JobProgress {
    /// The note is trimmed and cut to [`NOTE_MAX_CHARS`]; an empty one is none.
    pub fn new(percent: Percent, note: &str) -> Self {
        let note = note.trim();
        let note = match note.char_indices().nth(NOTE_MAX_CHARS) {
            Some((cut, _)) => note[..cut].trim_end(),
            None => note,
        };
        JobProgress {
            percent,
            note: (!note.is_empty()).then(|| note.to_string()),
        }
    }
}

/// What became of one [`Progress::report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressWrite {
    /// Stored on the job.
    Written,
    /// The same value as the last one written: nothing to do.
    Unchanged,
    /// Too soon after the last write (see [`MIN_INTERVAL`]); dropped.
    Throttled,
    /// The attempt no longer holds the job (rescued, finished, claimed again): refused.
    NotHeld,
    /// This handle belongs to no running attempt (a job built by hand, e.g. in a test).
    Detached,
}

/// Where a running attempt reports its progress. Cloning it shares the same throttle.
#[derive(Clone, Default)]
pub struct Progress {
    reporter: Option<Arc<Reporter>>,
}

struct Reporter {
    store: Arc<dyn JobStore>,
    lease: Lease,
    /// Held across the write, so writes of one attempt reach the database in order.
    last: Mutex<LastWrite>,
}

#[derive(Default)]
struct LastWrite {
    value: Option<JobProgress>,
    at: Option<Instant>,
    lost: bool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reporter {
            Some(r) => write!(f, "Progress({})", r.lease),
            None => f.write_str("Progress(detached)"),
        }
    }
}

impl Progress {
    /// A handle that writes nothing (see [`ProgressWrite::Detached`]).
    pub fn detached() -> Self {
        Progress::default()
    }

    /// The handle of the attempt holding `lease`, writing to `store`.
    pub fn for_lease(store: Arc<dyn JobStore>, lease: Lease) -> Self {
        Progress {
            reporter: Some(Arc::new(Reporter {
                store,
                lease,
                last: Mutex::new(LastWrite::default()),
            })),
        }
    }

    /// Records `percent` and `note` (cut to [`NOTE_MAX_CHARS`]) on the job, unless it is the
    /// value already written or the last write was less than [`MIN_INTERVAL`] ago (a value of
    /// 100 is always written). Once the lease is found lost, nothing more is written.
    pub async fn report(&self, percent: Percent, note: &str) -> Result<ProgressWrite, JobError> {
        self.report_at(JobProgress::new(percent, note), Instant::now())
            .await
    }

    async fn report_at(&self, value: JobProgress, now: Instant) -> Result<ProgressWrite, JobError> {
        let Some(reporter) = &self.reporter else {
            return Ok(ProgressWrite::Detached);
        };
        let mut last = reporter.last.lock().await;
        if last.lost {
            return Ok(ProgressWrite::NotHeld);
        }
        if last.value.as_ref() == Some(&value) {
            return Ok(ProgressWrite::Unchanged);
        }
        let recent = last
            .at
            .is_some_and(|at| now.saturating_duration_since(at) < MIN_INTERVAL);
        if recent && value.percent != Percent::DONE {
            return Ok(ProgressWrite::Throttled);
        }
        if !reporter.store.set_progress(reporter.lease, &value).await? {
            last.lost = true;
            return Ok(ProgressWrite::NotHeld);
        }
        last.value = Some(value);
        last.at = Some(now);
        Ok(ProgressWrite::Written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percent_is_in_range_and_a_fraction_rounds_down() {
        assert_eq!(Percent::new(101), None);
        assert_eq!(Percent::new(100), Some(Percent::DONE));
        assert_eq!(Percent::saturating(250), Percent::DONE);
        assert_eq!(Percent::of(2, 3).get(), 66);
        assert_eq!(Percent::of(3, 3), Percent::DONE);
        assert_eq!(Percent::of(5, 3), Percent::DONE);
        assert_eq!(Percent::of(1, 0), Percent::ZERO);
    }

    #[test]
    fn a_note_is_trimmed_and_cut_on_a_character_boundary() {
        let long = "é".repeat(NOTE_MAX_CHARS + 50);
        let progress = JobProgress::new(Percent::ZERO, &long);
        assert_eq!(
            progress.note.as_deref().map(|n| n.chars().count()),
            Some(NOTE_MAX_CHARS)
        );
        assert_eq!(JobProgress::new(Percent::ZERO, "  ").note, None);
        assert_eq!(
            JobProgress::new(Percent::ZERO, " window 1 ")
                .note
                .as_deref(),
            Some("window 1")
        );
    }

    #[tokio::test]
    async fn a_detached_handle_writes_nothing() {
        let written = Progress::detached()
            .report(Percent::DONE, "done")
            .await
            .expect("no store to fail");
        assert_eq!(written, ProgressWrite::Detached);
    }
}
