//! Job payloads that several crates produce: typed, so a producer cannot enqueue a job its
//! worker cannot read.

use serde::{Deserialize, Serialize};

use crate::model::NewJob;
use crate::queues;

/// The analysis worker's job; its payload is a [`SessionJob`].
pub const ANALYSIS_RUN: &str = "analysis.run";

/// The transcription worker's job; its payload is a [`SessionJob`].
pub const TRANSCRIPTION_RUN: &str = "transcription.run";

/// A pipeline step for one session: which session, whose, and where the "feedback ready"
/// email goes (none without an address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionJob {
    pub session_id: String,
    pub company_id: String,
    #[serde(default)]
    pub profile_id: Option<String>,
    #[serde(default)]
    pub notify_email: Option<String>,
}

impl SessionJob {
    /// The session's transcription job (unique per session).
    pub fn transcription(&self) -> Result<NewJob, serde_json::Error> {
        Ok(NewJob::new(
            queues::TRANSCRIPTION,
            TRANSCRIPTION_RUN,
            serde_json::to_value(self)?,
        )
        .unique_key(format!("transcription:{}", self.session_id)))
    }

    /// The session's analysis job (unique per session).
    pub fn analysis(&self) -> Result<NewJob, serde_json::Error> {
        Ok(
            NewJob::new(queues::ANALYSIS, ANALYSIS_RUN, serde_json::to_value(self)?)
                .unique_key(format!("analysis:{}", self.session_id)),
        )
    }

    /// The session's analysis once more, when a role-play's audio arrives after its
    /// transcript was analysed (unique per session: the audio attaches once).
    pub fn analysis_with_audio(&self) -> Result<NewJob, serde_json::Error> {
        Ok(
            NewJob::new(queues::ANALYSIS, ANALYSIS_RUN, serde_json::to_value(self)?)
                .unique_key(format!("analysis:{}:audio", self.session_id)),
        )
    }
}

/// The kind of the email worker's job.
pub const EMAIL_SEND: &str = "email.send";

/// An email to send: who to, which template with its data, and what it is about (the
/// `subject_id`, e.g. `session:42` or `invoice:in_123`, which with the recipient and template
/// makes the dedupe key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailJob {
    pub company_id: Option<String>,
    pub profile_id: Option<String>,
    pub to: String,
    pub subject_id: String,
    #[serde(flatten)]
    pub message: EmailMessage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "template", content = "data", rename_all = "snake_case")]
pub enum EmailMessage {
    FeedbackReady(FeedbackReady),
    PaymentFailed(PaymentFailed),
    PaymentActionRequired(PaymentActionRequired),
    TrialEnding(TrialEnding),
    SubscriptionCancelled(SubscriptionCancelled),
    DataExportReady(DataExportReady),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackReady {
    pub session_id: String,
    pub session_title: String,
    pub overall_score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub invoice_id: String,
    /// Formatted for people, e.g. "$49.00".
    pub amount_due: String,
    pub hosted_invoice_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentActionRequired {
    pub invoice_id: String,
    pub hosted_invoice_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialEnding {
    pub plan: String,
    /// A date for people, e.g. "2026-12-01".
    pub trial_end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionCancelled {
    pub plan: String,
    pub ends_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataExportReady {
    pub export_id: String,
    pub expires_at: String,
}

impl EmailJob {
    /// The job on the `email` queue.
    pub fn into_job(self) -> Result<NewJob, serde_json::Error> {
        Ok(NewJob::new(
            queues::EMAIL,
            EMAIL_SEND,
            serde_json::to_value(self)?,
        ))
    }
}

/// The GDPR export worker's job; its payload is an [`ExportJob`].
pub const GDPR_EXPORT: &str = "gdpr.export";

/// Builds one profile's export bundle (`GET /api/me/export` made the `data_exports` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportJob {
    pub export_id: String,
    pub company_id: String,
    pub profile_id: String,
}

impl ExportJob {
    /// The job on the `maintenance` queue (unique per export).
    pub fn into_job(self) -> Result<NewJob, serde_json::Error> {
        let key = format!("gdpr.export:{}", self.export_id);
        Ok(NewJob::new(
            queues::MAINTENANCE,
            GDPR_EXPORT,
            serde_json::to_value(self)?,
        )
        .unique_key(key))
    }
}

/// Deletes stored files whose rows are gone; its payload is a [`BlobsDelete`].
pub const BLOBS_DELETE: &str = "blobs.delete";

/// Files to delete after the rows that named them were erased: enqueued in the erasing
/// transaction, so the deletion is as durable as the erasure and retried until it is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobsDelete {
    pub company_id: String,
    pub refs: Vec<String>,
}

impl BlobsDelete {
    pub fn into_job(self) -> Result<NewJob, serde_json::Error> {
        Ok(NewJob::new(
            queues::MAINTENANCE,
            BLOBS_DELETE,
            serde_json::to_value(self)?,
        ))
    }
}
