//! axum's `Path` and `Query` with rejections answered in voxline's JSON error shape (axum's
//! own are plain text), and the checks every parameter gets: no NUL character (Postgres cannot
//! store or compare text with one), and `limit` within its documented range.

use axum::extract::{FromRequestParts, Path, Query, RawPathParams};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A path parameter; a malformed one (not UTF-8, not of its type, or holding a NUL character)
/// is a 400 `invalid_path` naming `path`.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid_path(e.body_text()))?;
        if let Some((name, _)) = raw.iter().find(|(_, value)| value.contains('\0')) {
            return Err(ApiError::invalid_path(format!(
                "the path parameter {name} must not contain a NUL character"
            )));
        }
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::invalid_path(e.body_text()))
    }
}

/// Query parameters; a malformed one (not of its type, repeated, or holding a NUL character) is
/// a 400 `invalid_query` naming `query` (or the parameter, for a NUL).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let malformed = |message: String, field: &str| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).field(field)
        };
        let pairs = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| malformed(e.body_text(), "query"))?;
        if let Some((name, _)) = pairs.0.iter().find(|(_, value)| value.contains('\0')) {
            return Err(malformed(
                format!("the query parameter {name} must not contain a NUL character"),
                name,
            ));
        }
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| malformed(e.body_text(), "query"))
    }
}

/// Whether any string in a JSON document (a key or a value) holds a NUL character, which
/// Postgres cannot store in JSON.
pub fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A page size checked against its documented range, 1 to `max` (`default` when absent):
/// outside it, 422 `invalid_limit` naming `limit`. (A value that is not an integer at all
/// never gets here: [`ApiQuery`] answers it 400.)
pub fn limit(value: Option<i64>, default: u32, max: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if (1..=i64::from(max)).contains(&n) => Ok(n as u32),
        Some(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_limit",
            format!("limit must be between 1 and {max}"),
        )
        .field("limit")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_outside_its_range_is_refused_naming_it() {
        assert_eq!(limit(None, 20, 100).unwrap(), 20);
        assert_eq!(limit(Some(1), 20, 100).unwrap(), 1);
        assert_eq!(limit(Some(100), 20, 100).unwrap(), 100);
        for bad in [0, -1, 101, i64::MAX, i64::MIN] {
            let e = limit(Some(bad), 20, 100).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(e.body.field.as_deref(), Some("limit"));
        }
    }
}
