//! The `analysis` worker: turns a session's transcript into coaching metrics and stores them
//! as its feedback. (LLM feedback through OpenAI joins when it is configured; without it the
//! feedback is metrics-only and says so.)

pub mod metrics;
pub mod scoring;

use serde_json::Value;
use voxline_domain::sessions;
use voxline_jobs::payloads::{ANALYSIS_RUN, EmailJob, EmailMessage, FeedbackReady, SessionJob};
use voxline_jobs::{ClaimedJob, HandlerError, Handlers, JobClient};


pub fn register(handlers: Handlers, jobs: JobClient) -> Handlers {
    handlers.register(ANALYSIS_RUN, move |job: ClaimedJob| {
        let jobs = jobs.clone();
        async move { analyse(&jobs, job).await }
    })
}

async fn analyse(jobs: &JobClient, job: ClaimedJob) -> Result<(), HandlerError> {
    let db = jobs.db();
    let task: SessionJob = serde_json::from_value(job.payload)
        .map_err(|e| HandlerError::permanent(format!("bad analysis.run payload: {e}")))?;
    let retry = |e: voxline_domain::DbError| HandlerError::retry(e.to_string());
    // Re-checked on every attempt: an erased session leaves nothing to analyse.
    let (Some(session), Some(value)) = (
        sessions::get(db, &task.company_id, &task.session_id)
            .await
            .map_err(retry)?,
        sessions::segments(db, &task.company_id, &task.session_id)
            .await
            .map_err(retry)?,
    ) else {
        tracing::info!(session = %task.session_id, "session no longer exists; nothing to analyse");
        return Ok(());
    };
    sessions::set_status(db, &task.company_id, &task.session_id, "analyzing", None)
        .await
        .map_err(retry)?;
    let segments: Vec<metrics::Segment> = serde_json::from_value(value)
        .map_err(|e| HandlerError::permanent(format!("stored transcript is unreadable: {e}")))?;
    let computed = metrics::compute(&segments);
    let mut feedback = serde_json::to_value(&computed)
        .map_err(|e| HandlerError::permanent(format!("metrics could not be serialised: {e}")))?;
    if let Value::Object(map) = &mut feedback {
        map.insert("kind".into(), "metrics_only".into());
        map.insert(
            "notes".into(),
            serde_json::json!([
                "No language model is configured: this feedback is the measured metrics only.",
                "Filler words are counted as transcribed; speech-to-text often drops \"um\" and \"uh\"."
            ]),
        );
    }
    let seconds = session.duration_seconds.unwrap_or_default();
    sessions::save_feedback(db, &session, &feedback, seconds)
        .await
        .map_err(retry)?;
    notify_ready(jobs, &task).await
}

/// Enqueues the "feedback ready" email. A retry of this job enqueues it again, and the email
/// worker's dedupe key (recipient, template, session) sends it once.
async fn notify_ready(jobs: &JobClient, task: &SessionJob) -> Result<(), HandlerError> {
    let Some(to) = task.notify_email.clone() else {
        return Ok(());
    };
    let title = sessions::get(jobs.db(), &task.company_id, &task.session_id)
        .await
        .map_err(|e| HandlerError::retry(e.to_string()))?
        .map(|s| s.title)
        .unwrap_or_default();
    let email = EmailJob {
        company_id: Some(task.company_id.clone()),
        profile_id: task.profile_id.clone(),
        to,
        subject_id: format!("session:{}", task.session_id),
        message: EmailMessage::FeedbackReady(FeedbackReady {
            session_id: task.session_id.clone(),
            session_title: title,
            overall_score: None,
        }),
    };
    let job = email
        .into_job()
        .map_err(|e| HandlerError::permanent(e.to_string()))?;
    jobs.enqueue_now(&job)
        .await
        .map(drop)
        .map_err(|e| HandlerError::retry(e.to_string()))
}
