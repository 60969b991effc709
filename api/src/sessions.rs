//! `POST /api/sessions` (a JSON transcript; audio uploads come with the transcription worker),
//! `GET /api/sessions/{id}` and `GET /api/sessions/{id}/feedback`. A session, its transcript and
//! its analysis job are written in one transaction, and the 202 goes out only after the commit.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use voxline_domain::sessions::{self, NewSession, StoredResponse};
use voxline_jobs::payloads::ANALYSIS_RUN;
use voxline_jobs::{NewJob, queues};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiPath;

const KINDS: [&str; 4] = ["sales", "interview", "presentation", "custom"];
const MAX_SEGMENTS: usize = 10_000;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).field(field)
}

/// Checks a submission and returns (title, kind, normalised segments).
pub fn validate(body: &Value) -> Result<(String, String, Value), ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| invalid("body", "expected a JSON object"))?;
    let title = object
        .get("title")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(invalid("title", "title must be 1 to 200 characters"));
    }
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !KINDS.contains(&kind) {
        return Err(invalid(
            "kind",
            "kind must be one of sales, interview, presentation, custom",
        ));
    }
    let transcript = object
        .get("transcript")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("transcript", "transcript must be a list of segments"))?;
    if transcript.is_empty() || transcript.len() > MAX_SEGMENTS {
        return Err(invalid(
            "transcript",
            format!("transcript must have 1 to {MAX_SEGMENTS} segments"),
        ));
    }
    let mut segments = Vec::with_capacity(transcript.len());
    for (i, segment) in transcript.iter().enumerate() {
        let at = |name: &str| format!("transcript[{i}].{name}");
        let speaker = segment
            .get("speaker")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(speaker, "user" | "partner") {
            return Err(invalid(
                at("speaker"),
                "speaker must be \"user\" or \"partner\"",
            ));
        }
        let text = segment
            .get("text")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default();
        if text.is_empty() {
            return Err(invalid(at("text"), "text must not be empty"));
        }
        let time = |name: &str| -> Result<Option<f64>, ApiError> {
            match segment.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(t) if t >= 0.0 && t.is_finite() => Ok(Some(t)),
                    _ => Err(invalid(
                        at(name),
                        format!("{name} must be a number of seconds, 0 or more"),
                    )),
                },
            }
        };
        let (start, end) = (time("start")?, time("end")?);
        if let (Some(s), Some(e)) = (start, end)
            && e < s
        {
            return Err(invalid(at("end"), "end must not be before start"));
        }
        segments.push(json!({ "speaker": speaker, "start": start, "end": end, "text": text }));
    }
    Ok((title.to_string(), kind.to_string(), Value::Array(segments)))
}

fn links(id: &str) -> Value {
    json!({ "self": format!("/api/sessions/{id}"), "feedback": format!("/api/sessions/{id}/feedback") })
}

/// Submits a practice conversation as a JSON transcript; analysis is queued.
#[utoipa::path(post, path = "/api/sessions", tag = "sessions",
    request_body(content = Object, description = "{title, kind: sales|interview|presentation|custom, transcript: [{speaker: user|partner, start, end, text}]}"),
    params(("Idempotency-Key" = Option<String>, Header, description = "a retried submission with the same key gets the first answer")),
    responses((status = 202, description = "accepted: {id, status, links}"), (status = 400), (status = 401),
              (status = 413), (status = 415), (status = 422)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(ApiError::from)?;
    let claims = &caller.0;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str().map(str::trim) {
            Ok(k) if !k.is_empty() && k.len() <= 200 => Some(k.to_string()),
            _ => {
                return Err(invalid(
                    "Idempotency-Key",
                    "the Idempotency-Key header must be 1 to 200 visible characters",
                ));
            }
        },
    };
    let request_hash = hex::encode(Sha256::digest(body.to_string()));
    if let Some(key) = &key
        && let Some(stored) =
            sessions::stored_response(&state.db, &claims.company_id, &claims.sub, key)
                .await
                .map_err(ApiError::internal)?
    {
        return replay(stored, &request_hash);
    }
    let (title, kind, segments) = validate(&body)?;
    let id = hex::encode(rand::random::<[u8; 16]>());
    let answer = json!({ "id": id, "status": "queued", "links": links(&id) });

    let mut tx = state.db.begin().await.map_err(ApiError::internal)?;
    let session = NewSession {
        id: &id,
        company_id: &claims.company_id,
        profile_id: &claims.sub,
        title: &title,
        kind: &kind,
        source: "transcript",
    };
    sessions::insert(&mut tx, &session, &segments)
        .await
        .map_err(ApiError::internal)?;
    // The token's email (when it has one) is where "feedback ready" goes.
    let payload = json!({
        "session_id": id, "company_id": claims.company_id, "profile_id": claims.sub, "notify_email": claims.email,
    });
    let job =
        NewJob::new(queues::ANALYSIS, ANALYSIS_RUN, payload).unique_key(format!("analysis:{id}"));
    state
        .jobs
        .enqueue(&mut tx, &job)
        .await
        .map_err(ApiError::internal)?;
    if let Some(key) = &key {
        let stored = StoredResponse {
            request_hash: request_hash.clone(),
            status: 202,
            response: answer.clone(),
        };
        if !sessions::store_response(&mut tx, &claims.company_id, &claims.sub, key, &stored)
            .await
            .map_err(ApiError::internal)?
        {
            // A concurrent retry with the same key committed first: answer as it did.
            tx.rollback().await.map_err(ApiError::internal)?;
            let stored = sessions::stored_response(&state.db, &claims.company_id, &claims.sub, key)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::internal("idempotency key vanished"))?;
            return replay(stored, &request_hash);
        }
    }
    tx.commit().await.map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

fn replay(stored: StoredResponse, request_hash: &str) -> Result<Response, ApiError> {
    if stored.request_hash != request_hash {
        return Err(invalid(
            "Idempotency-Key",
            "this Idempotency-Key was used for a different request",
        ));
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::ACCEPTED);
    Ok((status, Json(stored.response)).into_response())
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
}

fn view(session: &sessions::SessionRow) -> Value {
    json!({
        "id": session.id, "title": session.title, "kind": session.kind, "status": session.status,
        "source": session.source, "created_at": session.created_at, "updated_at": session.updated_at,
        "links": links(&session.id),
    })
}

/// The caller's company's sessions, newest first, with cursor pagination.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions", params(ListQuery),
    responses((status = 200, description = "{sessions, next_cursor}"), (status = 400), (status = 401)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_limit",
            "limit must be between 1 and 100",
        )
        .field("limit"));
    }
    let rows = sessions::list(
        &state.db,
        &caller.0.company_id,
        q.cursor.as_deref(),
        limit as i64,
    )
    .await
    .map_err(ApiError::internal)?;
    let next_cursor = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(
        json!({ "sessions": rows.iter().map(view).collect::<Vec<_>>(), "next_cursor": next_cursor }),
    ))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("session {id} does not exist"),
    )
}

/// One session of the caller's company.
#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, description = "the session"), (status = 401), (status = 404)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let session = sessions::get(&state.db, &caller.0.company_id, &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(view(&session)))
}

/// The coaching metrics of a session once it is ready (409 before).
#[utoipa::path(get, path = "/api/sessions/{id}/feedback", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, description = "the feedback"), (status = 401), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub async fn feedback(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let company = &caller.0.company_id;
    let session = sessions::get(&state.db, company, &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| not_found(&id))?;
    match sessions::feedback(&state.db, company, &id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(metrics) => Ok(Json(json!({ "session_id": id, "metrics": metrics }))),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!(
                "session {id} is {}; feedback comes when it is ready",
                session.status
            ),
        )),
    }
}
