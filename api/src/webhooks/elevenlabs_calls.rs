//! The ElevenLabs webhook's other two events (see [`super::elevenlabs`] for the signature and
//! the transcription):
//!
//! - `post_call_audio` (`data.conversation_id`, `data.full_audio`: the whole call as base64,
//!   MP3 as ElevenLabs sends it): decoded and stored in the blob store, then attached to the
//!   conversation's session, or held until its transcript makes one ([`call_audio`]). When the
//!   session was already analysed from its transcript, its analysis runs again, now with the
//!   voice metrics of the user's turns, and the feedback document's version goes up. A
//!   redelivery changes nothing (`duplicate: true`). A payload that does not decode as audio is
//!   still kept: the session keeps its text feedback and says why it has no voice metrics.
//! - `call_initiation_failure` (`data.failure_reason`, and the ticket in the dynamic variables
//!   as for a transcription): the role-play is marked failed with the provider's reason. No
//!   session is made, so nothing is billed.

use std::borrow::Cow;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use voxline_domain::call_audio::{self, Held};
use voxline_domain::db::Scope;
use voxline_domain::roleplays::{self, MarkedFailed};
use voxline_jobs::payloads::SessionJob;

use super::elevenlabs::{DYNAMIC_VARIABLES, SOURCE, conversation_id, invalid, variable};
use crate::AppState;
use crate::audio::AudioType;
use crate::error::ApiError;

const MAX_REASON_CHARS: usize = 500;

#[derive(Deserialize)]
struct AudioEvent<'a> {
    #[serde(borrow)]
    data: AudioData<'a>,
}

#[derive(Deserialize)]
struct AudioData<'a> {
    #[serde(borrow, default)]
    conversation_id: Option<Cow<'a, str>>,
    /// Borrowed from the body (base64 has no characters JSON escapes), so a long call's audio
    /// is held once as the body and once decoded, never as a copied string.
    #[serde(borrow, default)]
    full_audio: Option<Cow<'a, str>>,
}

/// `post_call_audio`: the call's recording.
pub async fn receive_audio(state: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let limit = state.settings.elevenlabs.audio_body_limit_bytes;
    if body.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "a post_call_audio event may be up to {limit} bytes (elevenlabs.audio_body_limit_bytes)"
            ),
        ));
    }
    let event: AudioEvent<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    let conversation = conversation_id(event.data.conversation_id.as_deref())?;
    let encoded = event
        .data
        .full_audio
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            invalid(
                "data.full_audio",
                "data.full_audio must be the call's audio, base64",
            )
        })?;
    let audio = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|e| {
            invalid(
                "data.full_audio",
                format!("data.full_audio is not base64: {e}"),
            )
        })?;
    drop(encoded);
    // ElevenLabs sends MP3; anything else recognisable is kept as what it is. Bytes that are no
    // known audio are kept too (as MP3): the analysis then says why there are no voice metrics.
    let kind = AudioType::sniff(&audio).unwrap_or(AudioType::Mp3);
    let blob = format!(
        "calls/{}.{}",
        hex::encode(rand::random::<[u8; 16]>()),
        kind.extension()
    );
    state
        .blobs
        .put(&blob, &audio)
        .await
        .map_err(ApiError::internal)?;
    drop(audio);

    let mut tx = state
        .db
        .begin(Scope::Platform)
        .await
        .map_err(ApiError::internal)?;
    let held = call_audio::hold(&mut tx, SOURCE, &conversation, &blob, kind.mime())
        .await
        .map_err(ApiError::internal)?;
    let answer = match &held {
        Held::Attached(session) => {
            // Analysed again with the audio; the "feedback ready" email went out the first
            // time, so this run sends none.
            let job = SessionJob {
                session_id: session.id.clone(),
                company_id: session.company_id.clone(),
                profile_id: Some(session.profile_id.clone()),
                notify_email: None,
            }
            .analysis_with_audio()
            .map_err(ApiError::internal)?;
            state
                .jobs
                .enqueue(&mut tx, &job)
                .await
                .map_err(ApiError::internal)?;
            json!({ "id": session.id, "audio": "attached", "duplicate": false })
        }
        Held::AlreadyAttached(session) => {
            json!({ "id": session.id, "audio": "attached", "duplicate": true })
        }
        Held::Pending => json!({ "audio": "held_for_transcript", "duplicate": false }),
        Held::AlreadyPending => json!({ "audio": "held_for_transcript", "duplicate": true }),
    };
    if matches!(held, Held::AlreadyAttached(_) | Held::AlreadyPending) {
        tx.rollback().await.map_err(ApiError::internal)?;
        if let Err(e) = state.blobs.delete(&blob).await {
            tracing::warn!(blob, error = %e, "a redelivered call's second copy could not be removed");
        }
    } else {
        tx.commit().await.map_err(ApiError::internal)?;
    }
    tracing::info!(conversation = %conversation, outcome = ?held_name(&held), "ElevenLabs call audio received");
    Ok((StatusCode::OK, Json(answer)).into_response())
}

fn held_name(held: &Held) -> &'static str {
    match held {
        Held::Attached(_) => "attached",
        Held::AlreadyAttached(_) => "already attached",
        Held::Pending => "held for the transcript",
        Held::AlreadyPending => "already held",
    }
}

/// `call_initiation_failure`: the role-play's call never started.
pub async fn receive_failure(
    state: &AppState,
    event: &Value,
    ticket_variable: &str,
) -> Result<Response, ApiError> {
    let data = event.get("data");
    let reason = data
        .and_then(|d| d.get("failure_reason"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(MAX_REASON_CHARS).collect::<String>())
        .unwrap_or_else(|| "the provider gave no reason".to_string());
    if reason.contains('\0') {
        return Err(invalid(
            "data.failure_reason",
            "data.failure_reason holds a NUL character",
        ));
    }
    let ticket_field = format!("{DYNAMIC_VARIABLES}.{ticket_variable}");
    let ticket = variable(
        data.and_then(|d| d.pointer("/conversation_initiation_client_data/dynamic_variables")),
        ticket_variable,
    )
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ticket_missing",
            format!("{ticket_field} must carry the role-play's ticket"),
        )
        .field(ticket_field.clone())
    })?;
    let claims = state.tickets.verify(&ticket).map_err(|e| {
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string()).field(ticket_field.clone())
    })?;
    let marked = roleplays::mark_failed(&state.db, &claims.company, &claims.rid, &reason)
        .await
        .map_err(ApiError::internal)?;
    let status = match marked {
        MarkedFailed::Failed => "failed",
        MarkedFailed::CallHappened => "call_happened",
        MarkedFailed::Unknown => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ticket_invalid",
                "the role-play ticket names no role-play voxline issued",
            )
            .field(ticket_field));
        }
    };
    if marked == MarkedFailed::Failed {
        voxline_domain::audit::append(
            &state.db,
            &voxline_domain::audit::AuditEntry {
                actor: "elevenlabs",
                actor_role: "webhook",
                company_id: Some(&claims.company),
                action: "roleplay.failed",
                target: &format!("roleplay:{}", claims.rid),
                details: json!({ "reason": reason }),
            },
        )
        .await
        .map_err(ApiError::internal)?;
    }
    tracing::info!(roleplay = %claims.rid, %reason, status, "ElevenLabs call initiation failed");
    Ok((
        StatusCode::OK,
        Json(json!({ "roleplay": claims.rid, "status": status, "reason": reason })),
    )
        .into_response())
}
