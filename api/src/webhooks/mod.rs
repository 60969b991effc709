//! Provider webhooks. They carry no JWT: each is authenticated by its provider's signature over
//! the raw body, and finds whose data it is from the payload itself.

pub mod elevenlabs;
pub mod stripe;

use axum::http::StatusCode;

use crate::error::ApiError;

/// A webhook whose secret is not set answers 503: without it nothing can be verified.
pub(crate) fn not_configured(provider: &str, key: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_configured",
        format!("the {provider} webhook is not configured ({key})"),
    )
}

/// What the ElevenLabs webhook reads of a post-call webhook (documentation only: the handler,
/// `elevenlabs::parse_transcription`, checks it field by field so each refusal names its field).
/// The fields below are a transcription's; `post_call_audio` carries `data.conversation_id` and
/// `data.full_audio` (base64), `call_initiation_failure` `data.failure_reason` and the ticket.
#[derive(Debug, utoipa::ToSchema)]
pub struct ElevenLabsPostCall {
    /// `post_call_transcription` makes a session, `post_call_audio` gives it its recording,
    /// `call_initiation_failure` marks the role-play failed; any other type is answered
    /// `{ignored: true}`.
    #[schema(example = "post_call_transcription")]
    pub r#type: String,
    pub data: ElevenLabsCall,
}

#[derive(Debug, utoipa::ToSchema)]
pub struct ElevenLabsCall {
    /// The conversation's id: a redelivery with the same id answers with the session it made.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub conversation_id: String,
    /// Stored when it is a string; anything else is ignored.
    #[schema(value_type = Value, required = false)]
    pub agent_id: Option<serde_json::Value>,
    /// The turns in the order they were spoken; at least one must have words.
    #[schema(min_items = 1)]
    pub transcript: Vec<ElevenLabsTurn>,
    /// `{call_duration_secs: number, 0 or more}`, which ends the last turn; anything that is
    /// not an object is taken as absent.
    #[schema(value_type = Value, required = false)]
    pub metadata: Option<serde_json::Value>,
    pub conversation_initiation_client_data: ElevenLabsClientData,
}

/// A turn of the call.
#[derive(Debug, utoipa::ToSchema)]
pub struct ElevenLabsTurn {
    /// `agent` becomes the partner, `user` the user.
    pub role: ElevenLabsRole,
    /// What was said; a turn without words (a tool call) only marks when the one before ended.
    pub message: Option<String>,
    /// Seconds into the call; not before the turn before it.
    #[schema(minimum = 0)]
    pub time_in_call_secs: Option<f64>,
}

#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ElevenLabsRole {
    Agent,
    User,
}

#[derive(Debug, utoipa::ToSchema)]
pub struct ElevenLabsClientData {
    pub dynamic_variables: ElevenLabsVariables,
}

/// The conversation's dynamic variables: only the ticket is read (set by the client that
/// started the conversation, the others are not trusted).
#[derive(Debug, utoipa::ToSchema)]
pub struct ElevenLabsVariables {
    /// The ticket `POST /api/roleplays` answered, under the name `elevenlabs.ticket_variable`
    /// (`voxline_ticket` by default); a number is taken as its text.
    #[schema(schema_with = ticket_schema)]
    pub voxline_ticket: String,
}

fn ticket_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .pattern(Some(r"\S")),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .build();
    Schema::OneOf(one_of)
}
