//! What every session pipeline step (transcription, analysis) shares: when a step's job dies
//! (attempts exhausted, a permanent error, a time-out on the last attempt, a rescue after the
//! last attempt), its on-dead hook marks the session `failed` with the reason, in the engine's
//! transaction, so `GET /api/sessions/{id}` and its event stream say why instead of waiting
//! forever.

use voxline_domain::{Db, Tx, sessions};
use voxline_jobs::payloads::{Analysis, SessionJob, Transcription};
use voxline_jobs::{DeadHooks, DeadJob, JobArgs, OnDead, async_trait};

/// Marks the session of a dead pipeline job `failed`.
struct FailSession {
    db: Db,
}

#[async_trait]
impl OnDead for FailSession {
    async fn on_dead(&self, tx: &mut Tx<'_>, job: &DeadJob) -> Result<(), String> {
        // A payload that never named a session has no session to fail.
        let Ok(task) = serde_json::from_value::<SessionJob>(job.payload.clone()) else {
            return Ok(());
        };
        sessions::fail_in(&self.db, tx, &task.company_id, &task.session_id, &job.error)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The on-dead hooks of the session pipeline, for every process that can see a job die.
pub fn dead_hooks(db: &Db) -> DeadHooks {
    DeadHooks::new()
        .register(Transcription::KIND, FailSession { db: db.clone() })
        .register(Analysis::KIND, FailSession { db: db.clone() })
}
