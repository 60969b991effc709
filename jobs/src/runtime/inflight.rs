//! The jobs this process holds, and whether each has started: what graceful shutdown needs
//! to return to the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;

use crate::model::JobId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Claimed, waiting for a free worker slot (prefetched).
    Waiting,
    Running,
}

#[derive(Default)]
pub struct InflightState {
    pub shutting_down: bool,
    pub jobs: HashMap<JobId, (Phase, AbortHandle)>,
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

    /// Moves a job from waiting to running; false when shutdown already took it back.
    pub fn start(&self, id: JobId) -> bool {
        let mut state = self.lock();
        if state.shutting_down {
            return false;
        }
        match state.jobs.get_mut(&id) {
            Some(entry) => {
                entry.0 = Phase::Running;
                true
            }
            None => false,
        }
    }

    /// Forgets a finished job; false when shutdown already returned it to the queue.
    pub fn finish(&self, id: JobId) -> bool {
        self.lock().jobs.remove(&id).is_some()
    }

    /// Marks shutdown and takes every job in `phase` out of the map.
    pub fn drain(&self, phase: Phase) -> Vec<(JobId, AbortHandle)> {
        let mut state = self.lock();
        state.shutting_down = true;
        let ids: Vec<JobId> = state
            .jobs
            .iter()
            .filter(|(_, (p, _))| *p == phase)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| state.jobs.remove(&id).map(|(_, handle)| (id, handle)))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.lock().jobs.len()
    }
}
