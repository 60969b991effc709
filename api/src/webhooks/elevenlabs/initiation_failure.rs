//! `call_initiation_failure` (`data.failure_reason`, and the ticket in the dynamic variables
//! as for a transcription): the role-play is marked failed with the provider's reason. No
//! session is made, so nothing is billed.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use voxline_domain::roleplays::{self, MarkedFailed};

use super::payload::{self, FailureEvent};
use super::{ticket_field, ticket_missing};
use crate::AppState;
use crate::error::ApiError;

const MAX_REASON_CHARS: usize = 500;

/// A checked `call_initiation_failure`: the provider's reason and the ticket it carried (not
/// yet checked).
#[derive(Debug, PartialEq)]
struct Failure {
    reason: String,
    ticket: String,
}

/// Reads the reason (trimmed and cut to 500 characters; a stand-in when there is none) and the
/// ticket of a `call_initiation_failure`.
fn read_failure(event: &Value, ticket_variable: &str) -> Result<Failure, ApiError> {
    let failure: FailureEvent<'_> = payload::read(event).map_err(ApiError::invalid_json)?;
    let data = failure.data.fields();
    let reason = data
        .failure_reason
        .as_str()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(MAX_REASON_CHARS).collect::<String>())
        .unwrap_or_else(|| "the provider gave no reason".to_string());
    if reason.contains('\0') {
        return Err(ApiError::invalid(
            "data.failure_reason",
            "data.failure_reason holds a NUL character",
        ));
    }
    let ticket = data
        .conversation_initiation_client_data
        .fields()
        .variable(ticket_variable)
        .ok_or_else(|| {
            let field = ticket_field(ticket_variable);
            let message = format!("{field} must carry the role-play's ticket");
            ticket_missing(ticket_variable, message)
        })?;
    Ok(Failure { reason, ticket })
}

/// `call_initiation_failure`: the role-play's call never started.
pub(super) async fn receive_failure(
    state: &AppState,
    event: &Value,
    ticket_variable: &str,
) -> Result<Response, ApiError> {
    let Failure { reason, ticket } = read_failure(event, ticket_variable)?;
    let field = ticket_field(ticket_variable);
    let claims = state.tickets.verify(&ticket).map_err(|e| {
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string()).field(field.clone())
    })?;
    let marked = roleplays::mark_failed(&state.db, &claims.company, &claims.rid, &reason).await?;
    let status = match marked {
        MarkedFailed::Failed => "failed",
        MarkedFailed::CallHappened => "call_happened",
        MarkedFailed::Unknown => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ticket_invalid",
                "the role-play ticket names no role-play voxline issued",
            )
            .field(field));
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
        .await?;
    }
    tracing::info!(roleplay = %claims.rid, %reason, status, "ElevenLabs call initiation failed");
    Ok((
        StatusCode::OK,
        Json(json!({ "roleplay": claims.rid, "status": status, "reason": reason })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_trimmed_and_cut_and_the_ticket_read_like_a_transcriptions() {
        let field = ticket_field("voxline_ticket");
        let read = |data: Value| read_failure(&json!({ "data": data }), "voxline_ticket");
        let variables =
            |ticket: Value| json!({ "dynamic_variables": { "voxline_ticket": ticket } });
        let failure = read(json!({
            "failure_reason": format!("  {}  ", "x".repeat(600)),
            "conversation_initiation_client_data": variables(json!(" t.i.cket "))
        }))
        .unwrap();
        assert_eq!(failure.reason, "x".repeat(MAX_REASON_CHARS));
        assert_eq!(failure.ticket, "t.i.cket");
        let failure = read(json!({
            "failure_reason": 5,
            "conversation_initiation_client_data": variables(json!(42))
        }))
        .unwrap();
        assert_eq!(
            (failure.reason.as_str(), failure.ticket.as_str()),
            ("the provider gave no reason", "42")
        );
        let missing = read(json!({ "failure_reason": "busy" })).unwrap_err();
        assert_eq!(
            (missing.body.code, missing.body.field),
            ("ticket_missing", Some(field.clone()))
        );
        let nul = read(json!({ "failure_reason": "a\u{0}b" })).unwrap_err();
        assert_eq!(nul.body.field.as_deref(), Some("data.failure_reason"));
    }
}
