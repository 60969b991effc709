//! The `analysis` worker: turns a session's transcript into coaching feedback and stores it,
//! then queues the "feedback ready" email.
//!
//! The stored feedback is one JSON document:
//! `{"kind": "llm" | "metrics_only", "metrics": {…}, "scores": {…}, "llm": {…} | null, "notes": […]}`.
//! The metrics and scores are deterministic and always there. LLM feedback is added when
//! `openai.api_key` is set; when the model cannot give usable feedback, the metrics are stored
//! anyway and a note says why:
//! - a retryable failure (rate limit, outage) retries the job; on its last attempt the feedback
//!   is stored metrics-only;
//! - a permanent refusal is stored metrics-only at once;
//! - an answer that fails validation (see [`llm::validate`]) retries (a model's next answer may
//!   be fine) and is stored metrics-only on the last attempt;
//! - while OpenAI's circuit is open the job snoozes (no attempt spent).

pub mod llm;
pub mod metrics;
mod recording;
pub mod scoring;
pub mod voice;

use std::sync::Arc;

use serde_json::{Value, json};
use voxline_domain::blobs::{BlobStore, LocalBlobs};
use voxline_domain::sessions::{self, SessionRow};
use voxline_domain::speakers::{Attribution, AttributionStatus};
use voxline_jobs::payloads::{Analysis, EmailJob, EmailMessage, FeedbackReady, SessionJob};
use voxline_jobs::{ClaimedJob, HandlerError, Handlers, JobClient};

use crate::openai::OpenAi;
use llm::{Grounding, LlmError, LlmFeedback};

const FILLERS_NOTE: &str =
    "Filler words are counted as transcribed; speech-to-text often drops \"um\" and \"uh\".";
const NO_MODEL_NOTE: &str =
    "No language model is configured: this feedback is the measured metrics only.";

/// `openai` is the shared OpenAI adapter, used for LLM feedback when it has a key.
pub fn register(handlers: Handlers, jobs: JobClient, openai: Arc<OpenAi>) -> Handlers {
    let blobs: Arc<dyn BlobStore> = Arc::new(LocalBlobs::new(jobs.settings().blob_dir()));
    handlers.add_worker(move |job: ClaimedJob, Analysis(task)| {
        let (jobs, openai, blobs) = (jobs.clone(), openai.clone(), blobs.clone());
        async move { analyse(&jobs, &openai, blobs.as_ref(), &job, &task).await }
    })
}

async fn analyse(
    jobs: &JobClient,
    openai: &OpenAi,
    blobs: &dyn BlobStore,
    job: &ClaimedJob,
    task: &SessionJob,
) -> Result<(), HandlerError> {
    let db = jobs.db();
    let retry = |e: voxline_domain::DbError| HandlerError::retry(e.to_string());
    // Re-checked on every attempt: an erased session leaves nothing to analyse.
    let (Some(session), Some(transcript)) = (
        sessions::get(db, &task.company_id, &task.session_id)
            .await
            .map_err(retry)?,
        sessions::transcript(db, &task.company_id, &task.session_id)
            .await
            .map_err(retry)?,
    ) else {
        tracing::info!(session = %task.session_id, "session no longer exists; nothing to analyse");
        return Ok(());
    };
    sessions::set_status(db, &task.company_id, &task.session_id, "analyzing", None)
        .await
        .map_err(retry)?;
    let segments: Vec<metrics::Segment> = serde_json::from_value(transcript.segments)
        .map_err(|e| HandlerError::permanent(format!("stored transcript is unreadable: {e}")))?;
    // Written by our own transcription worker or intake; one that does not parse is treated
    // as unknown attribution (the segments' own labels still stand).
    let attribution: Option<Attribution> = transcript
        .speakers
        .and_then(|v| serde_json::from_value(v).ok());
    let mut computed = metrics::compute(&segments);
    computed.speakers_note = attribution
        .as_ref()
        .filter(|a| a.status != AttributionStatus::Separated)
        .and_then(|a| a.reason.clone());
    match recording::voice_metrics(blobs, &session, attribution.as_ref(), &segments).await? {
        Ok(voice) => computed.voice = Some(voice),
        Err(reason) => computed.voice_note = Some(reason),
    }
    let scores = scoring::score(
        &computed,
        jobs.settings().analysis.targets.get(&session.kind),
    );

    let mut notes = vec![FILLERS_NOTE.to_string()];
    if let Some(note) = &computed.speakers_note {
        notes.push(format!("Speakers: {note}."));
    }
    if let Some(note) = &computed.voice_note {
        notes.push(format!("No voice metrics: {note}."));
    }
    let llm = if openai.has_key {
        let grounding = Grounding {
            kind: &session.kind,
            title: &session.title,
            metrics: &computed,
            scores: &scores,
            segments: &segments,
        };
        let outcome = llm::coach(openai, &grounding).await;
        llm_or_note(outcome, job, &mut notes)?
    } else {
        notes.insert(0, NO_MODEL_NOTE.to_string());
        None
    };
    // One feedback document per session, versioned: a role-play's audio arriving after its
    // transcript was scored re-scores it with the voice metrics.
    let previous = sessions::feedback(db, &task.company_id, &task.session_id)
        .await
        .map_err(retry)?;
    let version = previous.as_ref().map_or(1, |p| {
        p.get("version").and_then(Value::as_u64).unwrap_or(1) + 1
    });
    let had_recording = previous
        .as_ref()
        .and_then(|p| p.get("recording").and_then(Value::as_bool));
    if had_recording == Some(false) && session.audio_ref.is_some() {
        notes.push(format!(
            "Re-scored (version {version}): the call's audio arrived after its transcript, so the voice metrics are now measured."
        ));
    }
    let feedback = json!({
        "version": version,
        "recording": session.audio_ref.is_some(),
        "kind": if llm.is_some() { "llm" } else { "metrics_only" },
        "metrics": computed,
        "scores": scores,
        "llm": llm,
        "notes": notes,
    });
    sessions::save_feedback(db, &session, &feedback, usage_seconds(&session, &segments))
        .await
        .map_err(retry)?;
    notify_ready(jobs, task, &session, scores.overall).await
}

/// The LLM's feedback, or — when this attempt should not be retried — `None` with a note
/// saying why the feedback is metrics-only. `Err` retries (or snoozes) the job.
fn llm_or_note(
    outcome: Result<LlmFeedback, LlmError>,
    job: &ClaimedJob,
    notes: &mut Vec<String>,
) -> Result<Option<LlmFeedback>, HandlerError> {
    let last_attempt = job.attempt >= job.max_attempts;
    let reason = match outcome {
        Ok(feedback) => return Ok(Some(feedback)),
        Err(LlmError::Provider(e @ HandlerError::Snooze { .. })) => return Err(e),
        Err(LlmError::Provider(e @ HandlerError::Retryable { .. })) if !last_attempt => {
            return Err(e);
        }
        Err(LlmError::Invalid(reason)) if !last_attempt => {
            return Err(HandlerError::retry(format!(
                "the model's feedback was not usable: {reason}"
            )));
        }
        Err(LlmError::Provider(HandlerError::Retryable { message, .. })) => format!(
            "the language model could not be reached after {} attempts ({message})",
            job.attempt
        ),
        Err(LlmError::Provider(HandlerError::Permanent(message))) => {
            format!("the language model refused the request ({message})")
        }
        Err(LlmError::Invalid(reason)) => format!(
            "the language model's feedback was not usable after {} attempts ({reason})",
            job.attempt
        ),
    };
    tracing::warn!(job = %job.id, %reason, "storing metrics-only feedback");
    notes.insert(
        0,
        format!("No LLM feedback: {reason}. This feedback is the measured metrics only."),
    );
    Ok(None)
}

/// Seconds of conversation billed: the recording's length when known, else the transcript's
/// span, else 0.
fn usage_seconds(session: &SessionRow, segments: &[metrics::Segment]) -> f64 {
    session
        .duration_seconds
        .or_else(|| {
            let start = segments.first()?.start?;
            let end = segments.last()?.end?;
            Some(end - start)
        })
        .filter(|s| s.is_finite())
        .unwrap_or(0.0)
        .max(0.0)
}

/// Enqueues the "feedback ready" email. A retry of this job enqueues it again, and the email
/// worker's dedupe key (recipient, template, session) sends it once.
async fn notify_ready(
    jobs: &JobClient,
    task: &SessionJob,
    session: &SessionRow,
    overall_score: Option<f64>,
) -> Result<(), HandlerError> {
    let Some(to) = task.notify_email.clone() else {
        return Ok(());
    };
    let email = EmailJob {
        company_id: Some(task.company_id.clone()),
        profile_id: task.profile_id.clone(),
        to,
        subject_id: format!("session:{}", task.session_id),
        message: EmailMessage::FeedbackReady(FeedbackReady {
            session_id: task.session_id.clone(),
            session_title: session.title.clone(),
            overall_score,
        }),
    };
    jobs.enqueue_now(&email)
        .await
        .map(drop)
        .map_err(|e| HandlerError::retry(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Segment, Speaker};
    use serde_json::Value;
    use voxline_jobs::JobId;

    fn job(attempt: u32, max_attempts: u32) -> ClaimedJob {
        ClaimedJob {
            id: JobId(1),
            lease: 1,
            queue: "analysis".into(),
            kind: voxline_jobs::payloads::ANALYSIS_RUN.into(),
            payload: Value::Null,
            attempt,
            max_attempts,
            timeout_ms: None,
            progress: voxline_jobs::Progress::detached(),
            trace_context: None,
        }
    }

    #[test]
    fn a_retryable_llm_failure_retries_until_the_last_attempt_then_falls_back_with_a_note() {
        let failed = || {
            Err(LlmError::Provider(HandlerError::retry(
                "OpenAI answered 500",
            )))
        };
        let mut notes = vec![];
        assert!(matches!(
            llm_or_note(failed(), &job(1, 3), &mut notes),
            Err(HandlerError::Retryable { .. })
        ));
        assert!(notes.is_empty());
        assert_eq!(llm_or_note(failed(), &job(3, 3), &mut notes), Ok(None));
        assert!(
            notes[0].contains("could not be reached after 3 attempts (OpenAI answered 500)"),
            "{notes:?}"
        );
    }

    #[test]
    fn a_refusal_falls_back_at_once_and_invalid_output_only_on_the_last_attempt() {
        let mut notes = vec![];
        let refused = Err(LlmError::Provider(HandlerError::permanent("401 bad key")));
        assert_eq!(llm_or_note(refused, &job(1, 3), &mut notes), Ok(None));
        assert!(
            notes[0].contains("refused the request (401 bad key)"),
            "{notes:?}"
        );

        let invalid = || {
            Err(LlmError::Invalid(
                "rubric[0].evidence is not in the transcript".into(),
            ))
        };
        let mut notes = vec![];
        assert!(llm_or_note(invalid(), &job(2, 3), &mut notes).is_err());
        assert_eq!(llm_or_note(invalid(), &job(3, 3), &mut notes), Ok(None));
        assert!(
            notes[0].contains("not usable after 3 attempts"),
            "{notes:?}"
        );
    }

    #[test]
    fn an_open_circuit_snoozes_even_on_the_last_attempt() {
        let snoozed = Err(LlmError::Provider(HandlerError::snooze(
            "OpenAI circuit open",
            std::time::Duration::from_secs(5),
        )));
        assert!(matches!(
            llm_or_note(snoozed, &job(3, 3), &mut vec![]),
            Err(HandlerError::Snooze { .. })
        ));
    }

    #[test]
    fn usage_is_the_recordings_length_else_the_transcripts_span_else_zero() {
        let seg = |start, end| Segment {
            speaker: Speaker::User,
            start,
            end,
            text: "hi".into(),
        };
        let session = |duration_seconds| SessionRow {
            id: "s".into(),
            company_id: "c".into(),
            profile_id: "p".into(),
            title: "t".into(),
            kind: "sales".into(),
            status: "analyzing".into(),
            source: "audio".into(),
            audio_ref: None,
            audio_type: None,
            duration_seconds,
            external_id: None,
            error: None,
            channels: None,
            user_speaker: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let timed = [seg(Some(2.0), Some(5.0)), seg(Some(6.0), Some(12.5))];
        assert_eq!(usage_seconds(&session(Some(14.0)), &timed), 14.0);
        assert_eq!(usage_seconds(&session(None), &timed), 10.5);
        assert_eq!(usage_seconds(&session(None), &[seg(None, None)]), 0.0);
    }
}
