//! What every session pipeline step (transcription, analysis) shares: when a step fails for
//! the last time, the session is marked `failed` with the reason, so `GET /api/sessions/{id}`
//! and its event stream say why instead of waiting forever.

use voxline_domain::{Db, sessions};
use voxline_jobs::payloads::SessionJob;
use voxline_jobs::{ClaimedJob, HandlerError};

/// Whether this failure ends the job: a permanent error, or a retryable one on the last
/// attempt. A snooze spends no attempt, so it never ends the job.
pub fn is_final_failure(job: &ClaimedJob, error: &HandlerError) -> bool {
    match error {
        HandlerError::Permanent(_) => true,
        HandlerError::Retryable { .. } => job.attempt >= job.max_attempts,
        HandlerError::Snooze { .. } => false,
    }
}

/// Passes a step's result through, marking the session `failed` first when the result ends
/// the job. (A job the engine kills for running past its time-out does not come back here; its
/// session stays at its last status — the dead job in the operators' queue says why.)
pub async fn finish_step(
    db: &Db,
    job: &ClaimedJob,
    task: &SessionJob,
    result: Result<(), HandlerError>,
) -> Result<(), HandlerError> {
    if let Err(error) = &result
        && is_final_failure(job, error)
    {
        let reason = match error {
            HandlerError::Permanent(m) | HandlerError::Retryable { message: m, .. } => m.clone(),
            HandlerError::Snooze { reason, .. } => reason.clone(),
        };
        if let Err(e) = sessions::set_status(
            db,
            &task.company_id,
            &task.session_id,
            "failed",
            Some(&reason),
        )
        .await
        {
            tracing::warn!(session = %task.session_id, error = %e, "could not mark the session failed");
        }
    }
    result
}

/// Reads a pipeline job's payload; an unreadable one can never succeed.
pub fn session_job(job: &ClaimedJob) -> Result<SessionJob, HandlerError> {
    serde_json::from_value(job.payload.clone())
        .map_err(|e| HandlerError::permanent(format!("bad {} payload: {e}", job.kind)))
}
