//! `POST /api/webhooks/elevenlabs`: ElevenLabs' post-call webhook. A `post_call_transcription`
//! (a role-play call with an ElevenLabs agent has ended) becomes a session with its transcript
//! and its analysis job; `post_call_audio` attaches the call's recording to it and
//! `call_initiation_failure` marks the role-play failed; other event types are acknowledged and
//! ignored. Bodies are read by hand: up to `elevenlabs.audio_body_limit_bytes` (50 MB) for
//! `post_call_audio`, 5 MB for the others, 413 past that.
//!
//! - Authentication: the `ElevenLabs-Signature` header, `t=<unix seconds>,v0=<hex>`, where the
//!   hex is the HMAC-SHA256 of `"<t>.<raw body>"` with `elevenlabs.webhook_secret`, and `t`
//!   must be within `elevenlabs.tolerance_secs` of now, either way (a captured delivery cannot
//!   be replayed later). No secret configured: 503 `not_configured`, so a deployment that never
//!   set one cannot be fed sessions by anyone.
//! - Whose session: only the ticket `POST /api/roleplays` issued, carried in the dynamic
//!   variable named by `elevenlabs.ticket_variable` (default `voxline_ticket`), says: it is
//!   signed by voxline and names the profile, company, kind and title. The other dynamic
//!   variables are set by the client that starts the conversation, so none of them is trusted.
//!   A missing, forged or expired ticket is refused (422 `ticket_missing`, 401
//!   `ticket_invalid` / `ticket_expired`), and one already used by another conversation is
//!   refused (409 `ticket_used`); nothing is stored. The profile (seen in a valid token) gives
//!   the "feedback ready" address.
//! - Transcript: each turn becomes a segment, agent → `partner`, user → `user`, starting at
//!   its `time_in_call_secs` and ending where the next turn starts (whether or not that turn is
//!   kept: a turn without words, such as a tool call, still marks when the one before stopped);
//!   the last turn ends at `metadata.call_duration_secs` when it is known. Turns without words
//!   are skipped.
//! - Idempotent on the conversation id: a redelivery answers with the session it made
//!   (`duplicate: true`) and stores nothing. Two deliveries racing each other meet at the
//!   unique index on (source, external id): the loser rolls back and answers as a redelivery.
//!
//! Here: the signature (`signature.rs`), the payloads as typed, leniently read serde types
//! (`payload.rs` over `lenient.rs`), the transcription's checks (`conversation.rs`), and one
//! handler per event (`transcription.rs`, `audio.rs`, `initiation_failure.rs`).

mod audio;
mod conversation;
mod initiation_failure;
mod lenient;
mod payload;
mod signature;
mod transcription;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use utoipa_axum::router::{UtoipaMethodRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::ratelimit::{ClientIp, Rule};
use payload::EventType;

pub use conversation::{Conversation, parse_transcription};
pub use signature::{SignatureError, signature_header, verify_signature};

/// The `source` of the sessions this webhook makes; with the conversation id, their key.
pub const SOURCE: &str = "elevenlabs";
/// Transcripts of long calls are large: events other than `post_call_audio` may be up to 5 MB
/// (that one up to `elevenlabs.audio_body_limit_bytes`, 50 MB by default).
pub const BODY_LIMIT_BYTES: usize = 5 * 1024 * 1024;
pub const SIGNATURE_HEADER: &str = "ElevenLabs-Signature";

const TRANSCRIPTION: &str = "post_call_transcription";
const AUDIO: &str = "post_call_audio";
const INITIATION_FAILURE: &str = "call_initiation_failure";
/// Where the ticket variable is, for the `field` of a refusal that concerns it.
const DYNAMIC_VARIABLES: &str = "data.conversation_initiation_client_data.dynamic_variables";

fn unauthorized(error: SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        error.to_string(),
    )
    .field(SIGNATURE_HEADER)
}

/// The `field` of a refusal about the role-play ticket: the dynamic variable that carries it.
fn ticket_field(ticket_variable: &str) -> String {
    format!("{DYNAMIC_VARIABLES}.{ticket_variable}")
}

/// 422 `ticket_missing`: the event carries no role-play ticket in `ticket_variable`.
fn ticket_missing(ticket_variable: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ticket_missing", message)
        .field(ticket_field(ticket_variable))
}

/// This route, for [`crate::openapi::routes`]. Its body is read by [`read_body`] under its own
/// limits, so the global one is lifted here.
pub fn route() -> UtoipaMethodRouter<AppState> {
    routes!(receive).layer(DefaultBodyLimit::disable())
}

/// Reads the body chunk by chunk into one buffer (sized from Content-Length when it is given),
/// refusing with 413 as soon as it passes `limit`: a body over the limit is never held whole.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {limit} bytes"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the body broke off: {e}"),
            )
        })?;
        if buffer.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer)
}

/// ElevenLabs' post-call webhook: a transcription becomes a session whose analysis is queued.
#[utoipa::path(post, path = "/api/webhooks/elevenlabs", tag = "webhooks", operation_id = "elevenlabs_webhook",
    request_body(content = crate::webhooks::ElevenLabsPostCall, content_type = "application/json",
        description = "ElevenLabs' post-call webhook. post_call_transcription makes a session (bodies up to 5 MB); post_call_audio (data.conversation_id, data.full_audio as base64; up to elevenlabs.audio_body_limit_bytes, 50 MB) attaches the call's recording to its session or holds it until the transcript comes; call_initiation_failure (data.failure_reason, the ticket in the dynamic variables) marks the role-play failed; other types are acknowledged."),
    params(("ElevenLabs-Signature" = String, Header, description = "t=<unix seconds>,v0=<hex HMAC-SHA256 of \"<t>.<raw body>\" with elevenlabs.webhook_secret>")),
    responses((status = 200, description = "{id, status, duplicate} for a transcription; {id?, audio: attached|held_for_transcript, duplicate} for audio; {roleplay, status: failed|call_happened, reason} for a failure; {ignored: true} for other event types"),
              (status = 400, description = "The body is not JSON (`invalid_json`)."),
              (status = 401, description = "A missing or bad signature (`invalid_signature`), or a forged, unissued or expired ticket (`ticket_invalid`, `ticket_expired`)."),
              (status = 409, description = "The ticket was used by another conversation (`ticket_used`)."),
              (status = 413, description = "The body is over 5 MB, or over elevenlabs.audio_body_limit_bytes for post_call_audio (`payload_too_large`); nothing is stored."),
              (status = 422, description = "A missing or bad field (`invalid_field`), a missing ticket (`ticket_missing`), a ticket whose profile is unknown (`unknown_profile`), or text the database cannot store (`invalid_text`); `field` names it when known."),
              (status = 429, description = "Over webhooks_per_ip (`rate_limited`); see Retry-After."),
              (status = 503, description = "elevenlabs.webhook_secret is not configured (`not_configured`), or the database cannot be reached (`database_unavailable`, with Retry-After).")))]
pub async fn receive(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.limits.check(Rule::WebhooksPerIp, &ip).await?;
    let config = &state.settings.elevenlabs;
    if config.webhook_secret.is_empty() {
        return Err(super::not_configured(
            "ElevenLabs",
            "elevenlabs.webhook_secret",
        ));
    }
    let body = read_body(
        &headers,
        body,
        config.audio_body_limit_bytes.max(BODY_LIMIT_BYTES),
    )
    .await?;
    let header = match headers.get(SIGNATURE_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| unauthorized(SignatureError::Malformed))?,
        ),
    };
    verify_signature(
        &config.webhook_secret,
        header,
        &body,
        chrono::Utc::now().timestamp(),
        config.tolerance_secs,
    )
    .map_err(unauthorized)?;

    let kind = serde_json::from_slice::<EventType<'_>>(&body)
        .map_err(ApiError::invalid_json)?
        .kind
        .map(|k| k.into_owned())
        .ok_or_else(|| ApiError::invalid("type", "type must be the event type"))?;
    if kind == AUDIO {
        return audio::receive_audio(&state, &body).await;
    }
    if body.len() > BODY_LIMIT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a {kind} event may be up to {BODY_LIMIT_BYTES} bytes"),
        ));
    }
    // Parsed whole, whatever the type: every string and number of the body is checked (a body
    // that is not JSON is refused before any field is read) and a repeated key keeps its last
    // value. The handlers read their typed payloads from this tree, borrowing its strings.
    let event: Value = serde_json::from_slice(&body).map_err(ApiError::invalid_json)?;
    drop(body);
    match kind.as_str() {
        TRANSCRIPTION => transcription::receive_transcription(state, &event).await,
        INITIATION_FAILURE => {
            initiation_failure::receive_failure(&state, &event, &config.ticket_variable).await
        }
        other => {
            tracing::info!(event = other, "ElevenLabs event ignored");
            Ok((StatusCode::OK, Json(json!({ "ignored": true }))).into_response())
        }
    }
}
