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
