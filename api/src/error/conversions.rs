//! Every `From` into [`ApiError`], so a handler can write `?`.
//!
//! Failures of ours ([`sqlx::Error`], [`DbError`], [`JobError`], [`BlobError`], serialising our
//! own values) go through [`ApiError::internal`]: 503 when the database is unreachable, 422 for
//! text it cannot store, otherwise 500. A body axum could not take is the caller's (4xx).

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::StatusCode;
use voxline_domain::DbError;
use voxline_domain::blobs::BlobError;
use voxline_jobs::JobError;

use super::ApiError;

/// Database errors for `?`: 503 when the database is unreachable, otherwise 500.
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::internal(error)
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        ApiError::internal(error)
    }
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        ApiError::internal(error)
    }
}

/// The blob store failing to write, read or delete: ours, a 500.
impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> Self {
        ApiError::internal(error)
    }
}

/// Serialising a value of ours (a job payload, a stored document) failed: a 500. JSON the
/// caller sent is refused with [`ApiError::invalid_json`] (400) instead, never through `?`.
impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> Self {
        ApiError::internal(error)
    }
}

/// A JSON body axum could not take: too large (413), not JSON (415), or not parseable (400).
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            _ => (StatusCode::BAD_REQUEST, "invalid_json"),
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

/// A raw body axum could not read: too large (413) or broken off (400).
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(status, code, rejection.body_text())
    }
}
