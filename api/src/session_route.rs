//! What the routes about one session (`/api/sessions/{id}…`) share: the path parameter and the
//! 404 their annotations document, and [`CallerSession`], the extractor that looks the session
//! up in the caller's company.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use voxline_domain::sessions::SessionRow;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::sessions::existing;

/// The path of a session's routes, as the OpenAPI document states it.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// The session's id.
    pub id: String,
}

/// The 404 of a session's routes (see [`crate::sessions::not_found`]).
#[derive(Debug, utoipa::IntoResponses)]
#[response(
    status = 404,
    description = "No such session in the caller's company (`not_found`)."
)]
pub struct SessionNotFound;

/// The caller and the session of its company that the path names: 404 `not_found` when its
/// company has none of that id. The token is checked before the path is read, as when a
/// handler takes [`Caller`] before [`ApiPath`].
pub struct CallerSession {
    pub caller: Caller,
    pub session: SessionRow,
}

impl FromRequestParts<AppState> for CallerSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let ApiPath(id) = ApiPath::<String>::from_request_parts(parts, state).await?;
        let session = existing(&state.db, &caller.0.company_id, &id).await?;
        Ok(CallerSession { caller, session })
    }
}
