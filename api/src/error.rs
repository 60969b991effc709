//! The one place errors become HTTP answers: `{"error": {"code", "message", "field"}}`
//! ([`ErrorResponse`] in the OpenAPI document, which every 4xx and 5xx response references).
//!
//! A database that cannot be reached (down, restarting, its pooled connections broken) is
//! answered 503 `database_unavailable` with a `Retry-After`, never 500: see
//! [`ApiError::internal`] and [`is_unavailable`]. Text the database refuses to store (Postgres
//! takes no NUL character in text or JSON) is the caller's: 422 `invalid_text`, never 500. The
//! edges refuse such text first with the field named; this is the net under them.

mod conversions;
mod unavailable;

pub use unavailable::is_unavailable;

use std::fmt::Display;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// What a 503 `database_unavailable` tells the client to wait before retrying.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

/// Why a request was refused or failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable, stable: e.g. `invalid_field`, `unauthorized`, `not_found`,
    /// `rate_limited`, `database_unavailable`.
    #[schema(value_type = String, min_length = 1, example = "invalid_field")]
    pub code: &'static str,
    /// For people; may change between versions.
    pub message: String,
    /// The input at fault when there is one: a body field (`transcript[2].speaker`), a query
    /// or path parameter (`limit`, `path`), a header (`Idempotency-Key`) or a limit's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
                field: None,
            },
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// A failure that is ours, not the caller's: logged with its cause, answered without it.
    /// When the cause is the database being unreachable ([`is_unavailable`], looked for
    /// through `DbError`, `JobError` and `QuotaError`), the answer is
    /// [`ApiError::database_unavailable`] instead of 500.
    pub fn internal<E: Display + 'static>(cause: E) -> Self {
        if unavailable::cause_is_unavailable(&cause) {
            return ApiError::database_unavailable(&cause);
        }
        if unavailable::cause_is_unstorable_text(&cause) {
            tracing::info!(error = %cause, "request refused: the database cannot store its text");
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_text",
                "the request carries text the database cannot store (a NUL character, U+0000)",
            );
        }
        tracing::error!(error = %cause, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the operation failed; see the server log",
        )
    }

    /// 503 `database_unavailable` with `Retry-After`: the request may well succeed a moment
    /// later, once the database answers again (or the pool has replaced its broken connections).
    pub fn database_unavailable(cause: &dyn Display) -> Self {
        tracing::warn!(error = %cause, "request failed: the database is unreachable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database cannot be reached right now; retry shortly",
        )
        .retry_after(DATABASE_RETRY_AFTER_SECS)
    }

    /// 422 `invalid_field`: the input named by `field` (a body field such as
    /// `transcript[2].speaker`, or a form part) is missing or wrong.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).field(field)
    }

    /// 400 `invalid_json`: a body that does not parse as the JSON it should be.
    pub fn invalid_json(error: serde_json::Error) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", error.to_string())
    }

    /// 400 `invalid_path` naming `path`: a path parameter that is malformed.
    pub fn invalid_path(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", message).field("path")
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorResponse { error: self.body })).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
