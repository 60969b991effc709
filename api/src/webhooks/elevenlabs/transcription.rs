//! `post_call_transcription`: a role-play call with an ElevenLabs agent has ended, and its
//! transcript becomes a session with its analysis job (see the module documentation of
//! `elevenlabs` for whose session it is and how a redelivery is answered).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use voxline_domain::db::Scope;
use voxline_domain::profiles;
use voxline_domain::roleplays::{self, TicketUse};
use voxline_domain::sessions::{self, NewSession, SessionRow};
use voxline_domain::speakers::Attribution;
use voxline_jobs::payloads::{Analysis, SessionJob};

use super::conversation::parse_transcription;
use super::{SOURCE, ticket_field};
use crate::AppState;
use crate::error::ApiError;

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

/// `post_call_transcription`: the call's session, with its transcript and analysis job.
pub(super) async fn receive_transcription(
    state: AppState,
    event: &Value,
) -> Result<Response, ApiError> {
    let config = &state.settings.elevenlabs;
    let call = parse_transcription(event, &config.ticket_variable)?;
    let existing = |state: AppState, conversation_id: String| async move {
        sessions::find_external(&state.db, SOURCE, &conversation_id)
            .await
            .map_err(ApiError::from)
    };
    if let Some(session) = existing(state.clone(), call.conversation_id.clone()).await? {
        return Ok(redelivery(&session));
    }
    let ticket = state.tickets.verify(&call.ticket).map_err(|e| {
        tracing::warn!(conversation = %call.conversation_id, error = %e, "ElevenLabs conversation refused: bad ticket; nothing stored");
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
            .field(ticket_field(&config.ticket_variable))
    })?;
    let Some(profile) = profiles::get(&state.db, &ticket.sub)
        .await?
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
        .field(ticket_field(&config.ticket_variable)));
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
    let job = Analysis(SessionJob {
        session_id: id.clone(),
        company_id: profile.company_id.clone(),
        profile_id: Some(profile.id.clone()),
        notify_email: profile.email.clone(),
    });
    let mut tx = state
        .db
        .begin(Scope::Profile {
            company: &profile.company_id,
            profile: &profile.id,
        })
        .await?;
    match roleplays::use_ticket(
        &mut tx,
        &profile.company_id,
        &ticket.rid,
        &call.conversation_id,
    )
    .await?
    {
        TicketUse::Bound | TicketUse::SameConversation => {}
        TicketUse::UsedBy(other) => {
            tx.rollback().await?;
            tracing::warn!(conversation = %call.conversation_id, roleplay = %ticket.rid, used_by = %other, "ElevenLabs conversation refused: its ticket was used by another conversation; nothing stored");
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ticket_used",
                "this role-play ticket was already used by another conversation",
            )
            .field(ticket_field(&config.ticket_variable)));
        }
        TicketUse::Unknown => {
            tx.rollback().await?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ticket_invalid",
                "the role-play ticket names no role-play voxline issued",
            )
            .field(ticket_field(&config.ticket_variable)));
        }
    }
    if let Err(error) = sessions::insert(&mut tx, &session, None).await {
        // Most likely a concurrent delivery of the same conversation committed first (the
        // unique index on source and external id); then answer as a redelivery.
        tx.rollback().await?;
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
    .await?;
    let speakers = serde_json::to_value(Attribution::from_transcript())?;
    sessions::save_transcript(
        &mut tx,
        &profile.company_id,
        &id,
        &Value::Array(call.segments),
        Some(&speakers),
        call.duration_seconds,
    )
    .await?;
    state.jobs.enqueue(&mut tx, &job).await?;
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
    .await?;
    tx.commit().await?;
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
