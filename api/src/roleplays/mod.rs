//! `POST /api/roleplays`: starts a role-play with an ElevenLabs agent. It checks the caller's
//! plan and quotas as `POST /api/sessions` does, stores the role-play, and answers with the
//! dynamic variables the client passes to the ElevenLabs conversation: a ticket signed by
//! voxline ([`ticket`]) that the post-call webhook takes the session's profile, company, kind
//! and title from. With `elevenlabs.api_key` and `elevenlabs.agent_id` set it also returns a
//! signed conversation URL from ElevenLabs ([`signed_url`]).

pub mod signed_url;
pub mod ticket;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use voxline_domain::roleplays::{self, NewRoleplay};

use crate::AppState;
use crate::auth::Caller;
use crate::billing::IntakeRefusals;
use crate::error::ApiError;
use crate::ratelimit::ClientIp;
use ticket::TicketClaims;

/// The role-play to start. Read leniently (missing fields are empty) so that
/// `validate_title_kind` refuses each with a 422 naming it; the schema states the rules.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RoleplayRequest {
    #[serde(default)]
    #[schema(value_type = crate::sessions::SessionKind, required = true)]
    pub kind: String,
    /// 1 to 200 characters, not blank (trimmed).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = r"\S", required = true)]
    pub title: String,
}

/// Starts a role-play: answers the ElevenLabs conversation's dynamic variables.
#[utoipa::path(post, path = "/api/roleplays", tag = "sessions", operation_id = "create_roleplay",
    request_body(content = RoleplayRequest, content_type = "application/json"),
    responses((status = 201, description = "{roleplay_id, dynamic_variables: {voxline_ticket}, expires_at, signed_url?}: pass dynamic_variables to the ElevenLabs conversation"),
              (status = 400, description = "Malformed: a body that is not valid JSON, or whose fields are not strings (`invalid_json`)."),
              (status = 415, description = "The body is not application/json (`unsupported_media_type`)."),
              (status = 422, description = "A bad title or kind (`invalid_field`); `field` names it."),
              IntakeRefusals,
              (status = 502, description = "ElevenLabs did not give a signed URL.")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    body: Result<Json<RoleplayRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let claims = &caller.0;
    state.limits.check_intake(claims, &ip).await?;
    let Json(request) = body?;
    let (title, kind) = crate::sessions::validate_title_kind(&request.title, &request.kind)?;
    // The same plan and quota checks as a submitted session: the role-play becomes one.
    crate::billing::check_quota(&state, &claims.company_id).await?;

    let config = &state.settings.elevenlabs;
    let id = hex::encode(rand::random::<[u8; 16]>());
    let expires_at = Utc::now() + chrono::Duration::seconds(config.ticket_ttl_secs as i64);
    let ticket = state
        .tickets
        .sign(&TicketClaims::new(
            &id,
            &claims.sub,
            &claims.company_id,
            &kind,
            &title,
            expires_at.timestamp(),
        ))
        // Signing failed: ours. No `From` for token errors, which are the caller's (401) where
        // a token is read.
        .map_err(ApiError::internal)?;
    let signed_url = signed_url::fetch(&state.settings.elevenlabs).await?;
    roleplays::insert(
        &state.db,
        &NewRoleplay {
            id: &id,
            company_id: &claims.company_id,
            profile_id: &claims.sub,
            kind: &kind,
            title: &title,
            expires_at,
        },
    )
    .await?;
    tracing::info!(roleplay = %id, company = %claims.company_id, profile = %claims.sub, "role-play ticket issued");
    let mut answer = json!({
        "roleplay_id": id,
        "dynamic_variables": { config.ticket_variable.clone(): ticket },
        "expires_at": expires_at.to_rfc3339(),
    });
    if let Some(url) = signed_url {
        answer["signed_url"] = url.into();
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}
