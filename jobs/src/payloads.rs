//! Job payloads that several crates produce: typed, so a producer cannot enqueue a job its
//! worker cannot read.

use serde::{Deserialize, Serialize};

use voxline_domain::billing::{self, StripeEventJob};

use crate::args::JobArgs;
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

/// A session's transcription job (unique per session); its payload is the [`SessionJob`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Transcription(pub SessionJob);

impl JobArgs for Transcription {
    const KIND: &'static str = TRANSCRIPTION_RUN;
    const QUEUE: &'static str = queues::TRANSCRIPTION;
    fn unique_key(&self) -> Option<String> {
        Some(format!("transcription:{}", self.0.session_id))
    }
}

/// A session's analysis job (unique per session); its payload is the [`SessionJob`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Analysis(pub SessionJob);

impl JobArgs for Analysis {
    const KIND: &'static str = ANALYSIS_RUN;
    const QUEUE: &'static str = queues::ANALYSIS;
    fn unique_key(&self) -> Option<String> {
        Some(format!("analysis:{}", self.0.session_id))
    }
}

/// The session's analysis once more, when a role-play's audio arrives after its transcript
/// was analysed: the same kind and payload as [`Analysis`], unique per session on its own key
/// (the audio attaches once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AnalysisWithAudio(pub SessionJob);

impl JobArgs for AnalysisWithAudio {
    const KIND: &'static str = ANALYSIS_RUN;
    const QUEUE: &'static str = queues::ANALYSIS;
    fn unique_key(&self) -> Option<String> {
        Some(format!("analysis:{}:audio", self.0.session_id))
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

impl JobArgs for EmailJob {
    const KIND: &'static str = EMAIL_SEND;
    const QUEUE: &'static str = queues::EMAIL;
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

impl JobArgs for ExportJob {
    const KIND: &'static str = GDPR_EXPORT;
    const QUEUE: &'static str = queues::MAINTENANCE;
    fn unique_key(&self) -> Option<String> {
        Some(format!("gdpr.export:{}", self.export_id))
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

impl JobArgs for BlobsDelete {
    const KIND: &'static str = BLOBS_DELETE;
    const QUEUE: &'static str = queues::MAINTENANCE;
}

/// The billing worker's job for one stored Stripe event (the type lives in `domain`, beside
/// the events it names).
impl JobArgs for StripeEventJob {
    const KIND: &'static str = billing::STRIPE_EVENT_JOB;
    const QUEUE: &'static str = queues::BILLING;
    fn unique_key(&self) -> Option<String> {
        Some(format!("stripe:{}", self.event_id))
    }
}
