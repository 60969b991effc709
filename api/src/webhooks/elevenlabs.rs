//! `POST /api/webhooks/elevenlabs`: ElevenLabs' post-call webhook. A `post_call_transcription`
//! (a role-play call with an ElevenLabs agent has ended) becomes a session with its transcript
//! and its analysis job; `post_call_audio` and `call_initiation_failure` are handled in
//! [`super::elevenlabs_calls`]; other event types are acknowledged and ignored. Bodies are read
//! by hand: up to `elevenlabs.audio_body_limit_bytes` (50 MB) for `post_call_audio`, 5 MB for
//! the others, 413 past that.
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

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use utoipa_axum::router::{UtoipaMethodRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use voxline_domain::db::Scope;
use voxline_domain::profiles;
use voxline_domain::roleplays::{self, TicketUse};
use voxline_domain::sessions::{self, NewSession, SessionRow};
use voxline_domain::speakers::Attribution;
use voxline_jobs::payloads::SessionJob;

use crate::AppState;
use crate::error::ApiError;
use crate::ratelimit::{ClientIp, Rule};

/// The `source` of the sessions this webhook makes; with the conversation id, their key.
pub const SOURCE: &str = "elevenlabs";
/// Transcripts of long calls are large: events other than `post_call_audio` may be up to 5 MB
/// (that one up to `elevenlabs.audio_body_limit_bytes`, 50 MB by default).
pub const BODY_LIMIT_BYTES: usize = 5 * 1024 * 1024;
pub const SIGNATURE_HEADER: &str = "ElevenLabs-Signature";

const TRANSCRIPTION: &str = "post_call_transcription";
const AUDIO: &str = "post_call_audio";
const INITIATION_FAILURE: &str = "call_initiation_failure";
const MAX_CONVERSATION_ID_CHARS: usize = 200;
pub(super) const DYNAMIC_VARIABLES: &str =
    "data.conversation_initiation_client_data.dynamic_variables";

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery's signature was refused (each answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the ElevenLabs-Signature header is missing")]
    Missing,
    #[error("the ElevenLabs-Signature header is not t=<unix seconds>,v0=<hex HMAC-SHA256>")]
    Malformed,
    #[error("the ElevenLabs-Signature does not match the body")]
    Mismatch,
    #[error(
        "the ElevenLabs-Signature timestamp is {skew_secs} s from now, beyond the {tolerance_secs} s tolerance"
    )]
    OutsideTolerance { skew_secs: i64, tolerance_secs: u64 },
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value ElevenLabs sends for `body` at `timestamp` (for tests and local tools).
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v0={}", hex::encode(digest))
}

/// Checks the `ElevenLabs-Signature` header against the raw body: the HMAC in constant time,
/// then the timestamp against `tolerance_secs` around `now` (unix seconds).
pub fn verify_signature(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() => timestamp = Some(t.trim()),
            Some(("v0", hex)) => candidates.push(hex.trim()),
            // Unknown schemes are ignored, so a future v1 does not break verification.
            Some((_, _)) if !part.trim().starts_with("t=") => {}
            _ => return Err(SignatureError::Malformed),
        }
    }
    let text = timestamp.ok_or(SignatureError::Malformed)?;
    let t: i64 = text.parse().map_err(|_| SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = mac(secret, text, body);
    let matches = candidates.iter().any(|candidate| {
        hex::decode(candidate).is_ok_and(|bytes| expected.clone().verify_slice(&bytes).is_ok())
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let skew_secs = now.saturating_sub(t);
    if skew_secs.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance {
            skew_secs,
            tolerance_secs,
        });
    }
    Ok(())
}

fn unauthorized(error: SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        error.to_string(),
    )
    .field(SIGNATURE_HEADER)
}

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).field(field)
}

/// A post-call transcription, checked and mapped to voxline's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub conversation_id: String,
    pub agent_id: Option<String>,
    /// The role-play ticket, as the conversation carried it (not yet checked).
    pub ticket: String,
    /// `{speaker, start, end, text}`, as the session intake stores them.
    pub segments: Vec<Value>,
    pub duration_seconds: Option<f64>,
}

/// A number of seconds (0 or more) or nothing; anything else is a 422 naming `field`.
fn seconds(value: Option<&Value>, field: &str) -> Result<Option<f64>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(s) if s >= 0.0 && s.is_finite() => Ok(Some(s)),
            _ => Err(invalid(
                field,
                format!("{field} must be a number of seconds, 0 or more"),
            )),
        },
    }
}

/// Maps ElevenLabs transcript turns to segments (see the module doc for the rules).
pub fn segments(transcript: &[Value], call_duration: Option<f64>) -> Result<Vec<Value>, ApiError> {
    struct Turn {
        speaker: &'static str,
        text: Option<String>,
        start: Option<f64>,
    }
    let mut turns = Vec::with_capacity(transcript.len());
    let mut latest: Option<f64> = None;
    for (i, turn) in transcript.iter().enumerate() {
        let at = |name: &str| format!("data.transcript[{i}].{name}");
        let speaker = match turn.get("role").and_then(Value::as_str) {
            Some("agent") => "partner",
            Some("user") => "user",
            _ => return Err(invalid(at("role"), "role must be \"agent\" or \"user\"")),
        };
        let text = match turn.get("message") {
            None | Some(Value::Null) => None,
            // A NUL is no text a transcript holds (and Postgres cannot store it).
            Some(Value::String(text)) if text.contains('\0') => {
                return Err(invalid(
                    at("message"),
                    "message must not contain NUL characters",
                ));
            }
            Some(Value::String(text)) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
            Some(_) => return Err(invalid(at("message"), "message must be text")),
        };
        let start = seconds(turn.get("time_in_call_secs"), &at("time_in_call_secs"))?;
        if let (Some(before), Some(now)) = (latest, start)
            && now < before
        {
            return Err(invalid(
                at("time_in_call_secs"),
                "turns must be in the order they were spoken",
            ));
        }
        latest = start.or(latest);
        turns.push(Turn {
            speaker,
            text,
            start,
        });
    }
    let mut segments = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let Some(text) = &turn.text else { continue };
        let end = match turns.get(i + 1) {
            Some(next) => next.start,
            // The call's length is in whole seconds and may round below the last turn's start.
            None => call_duration.map(|d| turn.start.map_or(d, |s| d.max(s))),
        };
        segments.push(
            json!({ "speaker": turn.speaker, "start": turn.start, "end": end, "text": text }),
        );
    }
    Ok(segments)
}

/// A dynamic variable as text: a non-empty string, or a number (ElevenLabs passes both).
pub(super) fn variable(variables: Option<&Value>, name: &str) -> Option<String> {
    match variables?.get(name)? {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `data.conversation_id`, checked: 1 to 200 characters (trimmed), none of them NUL.
pub(super) fn conversation_id(id: Option<&str>) -> Result<String, ApiError> {
    id.map(str::trim)
        .filter(|id| {
            !id.is_empty() && !id.contains('\0') && id.chars().count() <= MAX_CONVERSATION_ID_CHARS
        })
        .map(str::to_string)
        .ok_or_else(|| {
            invalid(
                "data.conversation_id",
                format!(
                    "conversation_id must be 1 to {MAX_CONVERSATION_ID_CHARS} characters, none of them NUL"
                ),
            )
        })
}

/// Checks a `post_call_transcription` payload and maps it; `ticket_variable` names the dynamic
/// variable with the role-play ticket (checked by the caller).
pub fn parse_transcription(body: &Value, ticket_variable: &str) -> Result<Conversation, ApiError> {
    let data = body
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| invalid("data", "data must be an object"))?;
    let conversation_id = conversation_id(data.get("conversation_id").and_then(Value::as_str))?;
    let agent_id = data
        .get("agent_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let transcript = data
        .get("transcript")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("data.transcript", "transcript must be a list of turns"))?;
    let metadata = data.get("metadata");
    let duration_seconds = seconds(
        metadata.and_then(|m| m.get("call_duration_secs")),
        "data.metadata.call_duration_secs",
    )?;
    let segments = segments(transcript, duration_seconds)?;
    if segments.is_empty() {
        return Err(invalid(
            "data.transcript",
            "the transcript has no turn with words in it",
        ));
    }

    let variables = data
        .get("conversation_initiation_client_data")
        .and_then(|c| c.get("dynamic_variables"));
    let ticket = variable(variables, ticket_variable).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ticket_missing",
            format!(
                "the conversation must carry the ticket of POST /api/roleplays in its dynamic \
                 variable {ticket_variable}"
            ),
        )
        .field(format!("{DYNAMIC_VARIABLES}.{ticket_variable}"))
    })?;
    Ok(Conversation {
        conversation_id,
        agent_id,
        ticket,
        segments,
        duration_seconds,
    })
}

fn answer(session_id: &str, status: &str, duplicate: bool) -> Response {
    (
        StatusCode::OK,
        Json(json!({ "id": session_id, "status": status, "duplicate": duplicate })),
    )
        .into_response()
}

fn redelivery(existing: &SessionRow) -> Response {
    answer(&existing.id, &existing.status, true)
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

/// Only the event type, read without copying the rest of the body.
#[derive(serde::Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
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
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?
        .kind
        .map(|k| k.into_owned())
        .ok_or_else(|| invalid("type", "type must be the event type"))?;
    if kind == AUDIO {
        return super::elevenlabs_calls::receive_audio(&state, &body).await;
    }
    if body.len() > BODY_LIMIT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a {kind} event may be up to {BODY_LIMIT_BYTES} bytes"),
        ));
    }
    let event: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    drop(body);
    match kind.as_str() {
        TRANSCRIPTION => receive_transcription(state, &event).await,
        INITIATION_FAILURE => {
            super::elevenlabs_calls::receive_failure(&state, &event, &config.ticket_variable).await
        }
        other => {
            tracing::info!(event = other, "ElevenLabs event ignored");
            Ok((StatusCode::OK, Json(json!({ "ignored": true }))).into_response())
        }
    }
}

/// `post_call_transcription`: the call's session, with its transcript and analysis job.
async fn receive_transcription(state: AppState, event: &Value) -> Result<Response, ApiError> {
    let config = &state.settings.elevenlabs;
    let call = parse_transcription(event, &config.ticket_variable)?;
    let existing = |state: AppState, conversation_id: String| async move {
        sessions::find_external(&state.db, SOURCE, &conversation_id)
            .await
            .map_err(ApiError::internal)
    };
    if let Some(session) = existing(state.clone(), call.conversation_id.clone()).await? {
        return Ok(redelivery(&session));
    }
    let ticket = state.tickets.verify(&call.ticket).map_err(|e| {
        tracing::warn!(conversation = %call.conversation_id, error = %e, "ElevenLabs conversation refused: bad ticket; nothing stored");
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
            .field(format!("{DYNAMIC_VARIABLES}.{}", config.ticket_variable))
    })?;
    let Some(profile) = profiles::get(&state.db, &ticket.sub)
        .await
        .map_err(ApiError::internal)?
        .filter(|p| p.company_id == ticket.company)
    else {
        tracing::warn!(
            conversation = %call.conversation_id,
            profile = %ticket.sub,
            company = %ticket.company,
            "ElevenLabs conversation's ticket names a profile voxline does not know in that company; nothing stored"
        );
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_profile",
            format!(
                "the ticket's profile {} is not known in company {}",
                ticket.sub, ticket.company
            ),
        )
        .field(format!("{DYNAMIC_VARIABLES}.{}", config.ticket_variable)));
    };
    let (kind, title) = (ticket.kind.as_str(), ticket.title.as_str());

    let id = hex::encode(rand::random::<[u8; 16]>());
    let session = NewSession {
        id: &id,
        company_id: &profile.company_id,
        profile_id: &profile.id,
        title,
        kind,
        source: SOURCE,
        audio_ref: None,
        audio_type: None,
        external_id: Some(&call.conversation_id),
        channels: None,
        user_speaker: None,
    };
    let job = SessionJob {
        session_id: id.clone(),
        company_id: profile.company_id.clone(),
        profile_id: Some(profile.id.clone()),
        notify_email: profile.email.clone(),
    }
    .analysis()
    .map_err(ApiError::internal)?;
    let mut tx = state
        .db
        .begin(Scope::Profile {
            company: &profile.company_id,
            profile: &profile.id,
        })
        .await
        .map_err(ApiError::internal)?;
    match roleplays::use_ticket(
        &mut tx,
        &profile.company_id,
        &ticket.rid,
        &call.conversation_id,
    )
    .await
    .map_err(ApiError::internal)?
    {
        TicketUse::Bound | TicketUse::SameConversation => {}
        TicketUse::UsedBy(other) => {
            tx.rollback().await.map_err(ApiError::internal)?;
            tracing::warn!(conversation = %call.conversation_id, roleplay = %ticket.rid, used_by = %other, "ElevenLabs conversation refused: its ticket was used by another conversation; nothing stored");
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ticket_used",
                "this role-play ticket was already used by another conversation",
            )
            .field(format!("{DYNAMIC_VARIABLES}.{}", config.ticket_variable)));
        }
        TicketUse::Unknown => {
            tx.rollback().await.map_err(ApiError::internal)?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ticket_invalid",
                "the role-play ticket names no role-play voxline issued",
            )
            .field(format!("{DYNAMIC_VARIABLES}.{}", config.ticket_variable)));
        }
    }
    if let Err(error) = sessions::insert(&mut tx, &session, None).await {
        // Most likely a concurrent delivery of the same conversation committed first (the
        // unique index on source and external id); then answer as a redelivery.
        tx.rollback().await.map_err(ApiError::internal)?;
        return match existing(state.clone(), call.conversation_id.clone()).await? {
            Some(session) => Ok(redelivery(&session)),
            None => Err(ApiError::internal(error)),
        };
    }
    // The call's audio, if ElevenLabs delivered it first, becomes the session's recording.
    let audio = voxline_domain::call_audio::claim(
        &mut tx,
        SOURCE,
        &call.conversation_id,
        &profile.company_id,
        &id,
    )
    .await
    .map_err(ApiError::internal)?;
    let speakers =
        serde_json::to_value(Attribution::from_transcript()).map_err(ApiError::internal)?;
    sessions::save_transcript(
        &mut tx,
        &profile.company_id,
        &id,
        &Value::Array(call.segments),
        Some(&speakers),
        call.duration_seconds,
    )
    .await
    .map_err(ApiError::internal)?;
    state
        .jobs
        .enqueue(&mut tx, &job)
        .await
        .map_err(ApiError::internal)?;
    voxline_domain::audit::append_in(
        &mut tx,
        &voxline_domain::audit::AuditEntry {
            actor: "elevenlabs",
            actor_role: "webhook",
            company_id: Some(&profile.company_id),
            action: "session.create",
            target: &format!("session:{id}"),
            details: serde_json::json!({
                "source": SOURCE, "kind": kind, "profile": profile.id,
                "conversation_id": call.conversation_id, "roleplay": ticket.rid,
            }),
        },
    )
    .await
    .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    tracing::info!(
        session = %id,
        conversation = %call.conversation_id,
        agent = ?call.agent_id,
        company = %profile.company_id,
        with_audio = audio.is_some(),
        "ElevenLabs conversation stored; analysis queued"
    );
    Ok(answer(&id, "queued", false))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wsec_test_0123456789";
    const NOW: i64 = 1_739_537_297;

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // Computed independently with Python:
        // hmac.new(b"wsec_test_0123456789", b"1739537297." + body, hashlib.sha256).hexdigest()
        let body = br#"{"type":"post_call_transcription","data":{}}"#;
        assert_eq!(
            signature_header(SECRET, NOW, body),
            "t=1739537297,v0=c166c9978ae5e48fa20f40ae6c7e9620c63d3c86249b9edddcfbc81e710e7e23"
        );
    }

    #[test]
    fn a_signed_body_verifies_within_the_tolerance_either_way() {
        let body = b"{}";
        let header = signature_header(SECRET, NOW, body);
        for now in [NOW, NOW + 1800, NOW - 1800] {
            assert_eq!(
                verify_signature(SECRET, Some(&header), body, now, 1800),
                Ok(())
            );
        }
        assert_eq!(
            verify_signature(SECRET, Some(&header), body, NOW + 1801, 1800),
            Err(SignatureError::OutsideTolerance {
                skew_secs: 1801,
                tolerance_secs: 1800
            })
        );
        assert_eq!(
            verify_signature(SECRET, Some(&header), body, NOW - 1801, 1800),
            Err(SignatureError::OutsideTolerance {
                skew_secs: -1801,
                tolerance_secs: 1800
            })
        );
    }

    #[test]
    fn a_changed_body_secret_or_timestamp_does_not_verify() {
        let header = signature_header(SECRET, NOW, b"{\"a\":1}");
        let check = |secret: &str, header: &str, body: &[u8]| {
            verify_signature(secret, Some(header), body, NOW, 1800)
        };
        assert_eq!(
            check(SECRET, &header, b"{\"a\":2}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check("another", &header, b"{\"a\":1}"),
            Err(SignatureError::Mismatch)
        );
        let moved = header.replace("t=1739537297", "t=1739537298");
        assert_eq!(
            check(SECRET, &moved, b"{\"a\":1}"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_missing_or_malformed_header_is_refused() {
        let body = b"{}";
        let v0 = signature_header(SECRET, NOW, body);
        assert_eq!(
            verify_signature(SECRET, None, body, NOW, 1800),
            Err(SignatureError::Missing)
        );
        for header in [
            "",
            "garbage",
            "t=,v0=00",
            "t=soon,v0=00",
            "t=1739537297",
            "v0=00",
        ] {
            assert_eq!(
                verify_signature(SECRET, Some(header), body, NOW, 1800),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
        assert_eq!(
            verify_signature(SECRET, Some("t=1739537297,v0=zz"), body, NOW, 1800),
            Err(SignatureError::Mismatch),
            "a v0 that is not hex matches nothing"
        );
        // Spaces after the commas are tolerated, as is an unknown scheme next to v0.
        let spaced = v0.replace(',', ", ") + ", v1=abc";
        assert_eq!(
            verify_signature(SECRET, Some(&spaced), body, NOW, 1800),
            Ok(())
        );
    }

    fn turn(role: &str, message: Value, at: Value) -> Value {
        json!({ "role": role, "message": message, "time_in_call_secs": at })
    }

    #[test]
    fn turns_become_segments_that_end_where_the_next_turn_starts() {
        let transcript = [
            turn("agent", json!("Hi, I'm Sam from Globex."), json!(0)),
            turn("user", json!(" Hi Sam, thanks for the time. "), json!(3)),
            // A tool call: no words, but it marks when the user's turn stopped.
            turn("agent", Value::Null, json!(9)),
            turn("agent", json!("So, what brings you here?"), json!(10)),
            turn("user", json!(""), json!(14)),
            turn("user", json!("Our reporting takes too long."), json!(15)),
        ];
        assert_eq!(
            segments(&transcript, Some(21.0)).unwrap(),
            vec![
                json!({"speaker": "partner", "start": 0.0, "end": 3.0, "text": "Hi, I'm Sam from Globex."}),
                json!({"speaker": "user", "start": 3.0, "end": 9.0, "text": "Hi Sam, thanks for the time."}),
                json!({"speaker": "partner", "start": 10.0, "end": 14.0, "text": "So, what brings you here?"}),
                json!({"speaker": "user", "start": 15.0, "end": 21.0, "text": "Our reporting takes too long."}),
            ]
        );
    }

    #[test]
    fn the_last_turn_has_no_end_without_the_call_duration() {
        let transcript = [
            turn("agent", json!("Hello."), json!(0)),
            turn("user", json!("Hi."), json!(2)),
        ];
        let mapped = segments(&transcript, None).unwrap();
        assert_eq!(mapped[1]["end"], Value::Null);
        // A duration rounded below the last turn's start ends it where it starts.
        let mapped = segments(&transcript, Some(1.0)).unwrap();
        assert_eq!(mapped[1]["end"], 2.0);
    }

    #[test]
    fn bad_turns_are_refused_naming_the_field() {
        let field = |transcript: &[Value]| {
            segments(transcript, None)
                .unwrap_err()
                .body
                .field
                .unwrap_or_default()
        };
        assert_eq!(
            field(&[turn("coach", json!("Hi"), json!(0))]),
            "data.transcript[0].role"
        );
        assert_eq!(
            field(&[turn("user", json!(5), json!(0))]),
            "data.transcript[0].message"
        );
        assert_eq!(
            field(&[turn("user", json!("Hi"), json!(-1))]),
            "data.transcript[0].time_in_call_secs"
        );
        assert_eq!(
            field(&[
                turn("user", json!("Hi"), json!(5)),
                turn("agent", json!("Hello"), json!(4))
            ]),
            "data.transcript[1].time_in_call_secs"
        );
    }

    fn payload(variables: Value) -> Value {
        json!({
            "type": "post_call_transcription",
            "event_timestamp": NOW,
            "data": {
                "conversation_id": "conv_1",
                "agent_id": "agent_1",
                "transcript": [turn("agent", json!("Hello."), json!(0)), turn("user", json!("Hi."), json!(2))],
                "metadata": { "start_time_unix_secs": NOW - 60, "call_duration_secs": 5 },
                "conversation_initiation_client_data": { "dynamic_variables": variables }
            }
        })
    }

    #[test]
    fn the_conversation_carries_its_ticket_and_nothing_else_names_the_profile() {
        let call = parse_transcription(
            &payload(json!({
                "voxline_ticket": "t.i.cket", "voxline_profile_id": "someone-else",
                "user_name": "Ann"
            })),
            "voxline_ticket",
        )
        .unwrap();
        assert_eq!(call.conversation_id, "conv_1");
        assert_eq!(call.agent_id.as_deref(), Some("agent_1"));
        assert_eq!(call.ticket, "t.i.cket");
        assert_eq!(call.duration_seconds, Some(5.0));
        assert_eq!(call.segments.len(), 2);
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let refusal = |body: Value| {
            let e = parse_transcription(&body, "voxline_ticket").unwrap_err();
            (e.body.code, e.body.field.unwrap_or_default())
        };
        let field = |body: Value| refusal(body).1;
        let good = payload(json!({"voxline_ticket": "t.i.cket"}));
        let without = |pointer: &str, key: &str| {
            let mut body = good.clone();
            if let Some(Value::Object(map)) = body.pointer_mut(pointer) {
                map.remove(key);
            }
            body
        };
        assert_eq!(field(without("", "data")), "data");
        assert_eq!(
            field(without("/data", "conversation_id")),
            "data.conversation_id"
        );
        assert_eq!(field(without("/data", "transcript")), "data.transcript");
        // A profile variable alone is no ticket.
        assert_eq!(
            refusal(payload(json!({"voxline_profile_id": "ann"}))),
            (
                "ticket_missing",
                "data.conversation_initiation_client_data.dynamic_variables.voxline_ticket".into()
            )
        );
        let mut silent = good.clone();
        silent["data"]["transcript"] = json!([turn("user", json!("  "), json!(0))]);
        assert_eq!(field(silent), "data.transcript");
        let mut nul = good.clone();
        nul["data"]["transcript"][1]["message"] = json!("Hi\u{0}.");
        assert_eq!(field(nul), "data.transcript[1].message");
        let mut nul = good.clone();
        nul["data"]["conversation_id"] = json!("conv\u{0}1");
        assert_eq!(field(nul), "data.conversation_id");
    }
}
