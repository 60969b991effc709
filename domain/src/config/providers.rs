//! The external providers voxline calls for its analysis and role-plays: OpenAI (speech to text
//! and coaching feedback) and ElevenLabs (role-play calls and their post-call webhook). Stripe
//! is billing's (`billing.rs`), SMTP the email's (`email.rs`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenAiSettings {
    pub api_key: String,
    /// Empty = OpenAI's own API; set it to use a compatible server (or a test's).
    pub base_url: String,
    /// Audio transcription model; segment timestamps are asked for (`verbose_json`).
    pub transcription_model: String,
    /// Chat model for LLM coaching feedback (JSON-schema response).
    pub chat_model: String,
    /// Time-out of one request to the provider.
    pub timeout_ms: u64,
    /// Consecutive failed calls (429, 5xx, time-outs) that open OpenAI's circuit breaker.
    pub circuit_threshold: u32,
    pub circuit_cooldown_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ElevenLabsSettings {
    pub webhook_secret: String,
    /// How old a signed webhook's timestamp may be (and how far in the future).
    pub tolerance_secs: u64,
    /// The conversation's dynamic variable that carries the ticket of `POST /api/roleplays`.
    pub ticket_variable: String,
    /// The largest webhook body taken: a long call's `post_call_audio` (base64 audio). Other
    /// event types stay under 5 MB.
    pub audio_body_limit_bytes: usize,
    /// How long an issued role-play ticket may start a conversation.
    pub ticket_ttl_secs: u64,
    /// ElevenLabs API key; with `agent_id`, `POST /api/roleplays` also returns a signed
    /// conversation URL from ElevenLabs. Empty: no calls to ElevenLabs.
    pub api_key: String,
    pub agent_id: String,
    /// Empty = ElevenLabs' own API; any server speaking the same endpoints (a test's).
    pub base_url: String,
    /// The key `ticket_variable` replaced; only read to refuse it with directions.
    #[serde(default, rename = "profile_variable", skip_serializing)]
    pub(super) retired_profile_variable: Option<String>,
}
