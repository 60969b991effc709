//! `post_call_audio` (`data.conversation_id`, `data.full_audio`: the whole call as base64, MP3
//! as ElevenLabs sends it): decoded and stored in the blob store, then attached to the
//! conversation's session, or held until its transcript makes one ([`call_audio`]). When the
//! session was already analysed from its transcript, its analysis runs again, now with the
//! voice metrics of the user's turns, and the feedback document's version goes up. A
//! redelivery changes nothing (`duplicate: true`). A payload that does not decode as audio is
//! still kept: the session keeps its text feedback and says why it has no voice metrics.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;
use voxline_domain::call_audio::{self, Held};
use voxline_domain::db::Scope;
use voxline_jobs::payloads::{AnalysisWithAudio, SessionJob};

use super::SOURCE;
use super::conversation::conversation_id;
use super::payload::AudioEvent;
use crate::AppState;
use crate::audio::AudioType;
use crate::error::ApiError;

/// `post_call_audio`: the call's recording.
pub(super) async fn receive_audio(state: &AppState, body: &[u8]) -> Result<Response, ApiError> {
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
    let event: AudioEvent<'_> = serde_json::from_slice(body).map_err(ApiError::invalid_json)?;
    let conversation = conversation_id(event.data.conversation_id.as_deref())?;
    let encoded = event
        .data
        .full_audio
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "data.full_audio",
                "data.full_audio must be the call's audio, base64",
            )
        })?;
    let audio = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|e| {
            ApiError::invalid(
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
    state.blobs.put(&blob, &audio).await?;
    drop(audio);

    let mut tx = state.db.begin(Scope::Platform).await?;
    let held = call_audio::hold(&mut tx, SOURCE, &conversation, &blob, kind.mime()).await?;
    let answer = match &held {
        Held::Attached(session) => {
            // Analysed again with the audio; the "feedback ready" email went out the first
            // time, so this run sends none.
            let job = AnalysisWithAudio(SessionJob {
                session_id: session.id.clone(),
                company_id: session.company_id.clone(),
                profile_id: Some(session.profile_id.clone()),
                notify_email: None,
            });
            state.jobs.enqueue(&mut tx, &job).await?;
            json!({ "id": session.id, "audio": "attached", "duplicate": false })
        }
        Held::AlreadyAttached(session) => {
            json!({ "id": session.id, "audio": "attached", "duplicate": true })
        }
        Held::Pending => json!({ "audio": "held_for_transcript", "duplicate": false }),
        Held::AlreadyPending => json!({ "audio": "held_for_transcript", "duplicate": true }),
    };
    if matches!(held, Held::AlreadyAttached(_) | Held::AlreadyPending) {
        tx.rollback().await?;
        if let Err(e) = state.blobs.delete(&blob).await {
            tracing::warn!(blob, error = %e, "a redelivered call's second copy could not be removed");
        }
    } else {
        tx.commit().await?;
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
