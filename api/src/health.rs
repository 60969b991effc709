//! `/healthz` (the process answers) and `/readyz` (its dependencies answer too).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The process and its database (and Redis, when configured) answer.
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses((status = 200, description = "ready"), (status = 503, description = "the database or Redis is not reachable (`not_ready`)")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.db.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: database check failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "database is not reachable",
        )
    })?;
    let redis = &state.settings.redis.url;
    if !redis.is_empty() {
        voxline_domain::redis::ping(redis, Duration::from_secs(2))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "readiness: redis check failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "redis is not reachable",
                )
            })?;
    }
    let database = match state.db.kind() {
        voxline_domain::DbKind::Postgres => "postgres",
        voxline_domain::DbKind::Sqlite => "sqlite",
    };
    Ok(Json(json!({
        "status": "ready",
        "database": database,
        "redis": if redis.is_empty() { "not configured" } else { "ok" },
    })))
}
