//! The attempts this process holds, by lease, and how far each has got: what the heartbeat
//! refreshes, what a lost lease aborts and what graceful shutdown returns to the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;

use crate::model::Lease;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Claimed, waiting for a free worker slot (prefetched).
    Waiting,
    Running,
    /// The handler has finished; its outcome waits for the acknowledger. Still heart-beaten,
    /// so a database outage that delays the write does not get the job rescued and run again.
    Acking,
}

#[derive(Default)]
pub struct InflightState {
    pub shutting_down: bool,
    pub jobs: HashMap<Lease, (Phase, AbortHandle)>,
}

#[derive(Clone, Default)]
pub struct Inflight(Arc<Mutex<InflightState>>);

impl Inflight {
    pub fn lock(&self) -> MutexGuard<'_, InflightState> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts
        // and removes), so a poisoned lock is still safe to use.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves an attempt from waiting to running; false when shutdown already took it back or
    /// its lease was lost.
    pub fn start(&self, lease: Lease) -> bool {
        self.advance(lease, Phase::Waiting, Phase::Running)
    }

    /// Marks a running attempt's outcome as waiting for the acknowledger; false when shutdown
    /// already returned the job to the queue or its lease was lost (the outcome is dropped:
    /// the job belongs to someone else now).
    pub fn finish(&self, lease: Lease) -> bool {
        self.advance(lease, Phase::Running, Phase::Acking)
    }

    fn advance(&self, lease: Lease, from: Phase, to: Phase) -> bool {
        let mut state = self.lock();
        if state.shutting_down && from == Phase::Waiting {
            return false;
        }
        match state.jobs.get_mut(&lease) {
            Some(entry) if entry.0 == from => {
                entry.0 = to;
                true
            }
            _ => false,
        }
    }

    /// Forgets attempts whose outcome has been written (or refused as stale).
    pub fn acked(&self, leases: impl IntoIterator<Item = Lease>) {
        let mut state = self.lock();
        for lease in leases {
            state.jobs.remove(&lease);
        }
    }

    /// Every lease held now, for the heartbeat.
    pub fn leases(&self) -> Vec<Lease> {
        self.lock().jobs.keys().copied().collect()
    }

    /// Forgets `lease` because the database no longer has it (rescued and perhaps claimed
    /// again elsewhere) and aborts its handler; false when it had already finished.
    pub fn lose(&self, lease: Lease) -> bool {
        match self.lock().jobs.remove(&lease) {
            Some((phase, handle)) => {
                handle.abort();
                phase != Phase::Acking
            }
            None => false,
        }
    }

    /// Marks shutdown and takes every attempt in `phase` out of the map.
    pub fn drain(&self, phase: Phase) -> Vec<(Lease, AbortHandle)> {
        let mut state = self.lock();
        state.shutting_down = true;
        let leases: Vec<Lease> = state
            .jobs
            .iter()
            .filter(|(_, (p, _))| *p == phase)
            .map(|(lease, _)| *lease)
            .collect();
        leases
            .into_iter()
            .filter_map(|lease| state.jobs.remove(&lease).map(|(_, h)| (lease, h)))
            .collect()
    }

    /// Attempts held, outcomes waiting for the acknowledger included.
    pub fn count(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Attempts whose handler has not finished yet.
    pub fn working(&self) -> usize {
        self.lock()
            .jobs
            .values()
            .filter(|(phase, _)| *phase != Phase::Acking)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobId;

    fn lease(job: i64, token: i64) -> Lease {
        Lease {
            job: JobId(job),
            token,
        }
    }

    async fn held(inflight: &Inflight, lease: Lease) {
        let task = tokio::spawn(std::future::pending::<()>());
        inflight
            .lock()
            .jobs
            .insert(lease, (Phase::Waiting, task.abort_handle()));
    }

    #[tokio::test]
    async fn a_second_claim_of_the_same_job_is_a_different_attempt() {
        let inflight = Inflight::default();
        held(&inflight, lease(7, 1)).await;
        held(&inflight, lease(7, 2)).await;
        assert!(inflight.start(lease(7, 2)));
        assert!(inflight.lose(lease(7, 1)), "the old attempt is lost");
        assert!(inflight.finish(lease(7, 2)), "the new attempt is untouched");
        assert!(!inflight.finish(lease(7, 1)));
    }

    #[tokio::test]
    async fn an_outcome_waiting_for_the_acker_is_still_held_until_acked() {
        let inflight = Inflight::default();
        held(&inflight, lease(1, 1)).await;
        assert!(inflight.start(lease(1, 1)));
        assert!(inflight.finish(lease(1, 1)));
        assert_eq!(inflight.leases(), vec![lease(1, 1)]);
        assert_eq!(inflight.working(), 0);
        inflight.acked([lease(1, 1)]);
        assert_eq!(inflight.count(), 0);
    }

    #[tokio::test]
    async fn shutdown_keeps_waiting_jobs_from_starting() {
        let inflight = Inflight::default();
        held(&inflight, lease(1, 1)).await;
        held(&inflight, lease(2, 1)).await;
        assert!(inflight.start(lease(2, 1)));
        assert_eq!(inflight.drain(Phase::Waiting).len(), 1);
        assert!(!inflight.start(lease(1, 1)));
        assert!(
            inflight.finish(lease(2, 1)),
            "a running job may still finish"
        );
    }
}
