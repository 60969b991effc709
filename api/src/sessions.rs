//! `POST /api/sessions` (a JSON transcript or an audio recording),
//! `GET /api/sessions/{id}` and `GET /api/sessions/{id}/feedback`. A session, its transcript and
//! its analysis job are written in one transaction, and the 202 goes out only after the commit.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use voxline_domain::audit;
use voxline_domain::db::Scope;
use voxline_domain::gdpr;
use voxline_domain::sessions::{self, StoredResponse};
use voxline_jobs::JobArgs;
use voxline_jobs::payloads::BlobsDelete;
use voxline_jobs::payloads::{Analysis, SessionJob, Transcription};
use voxline_jobs::store::ErasedSubject;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::billing::IntakeRefusals;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::intake::{Pending, Written};
use crate::ratelimit::ClientIp;
use crate::session_route::{CallerSession, SessionNotFound, SessionPath};
use crate::upload::{self, Submission};

/// The kinds of practice session (each has its own targets in `[analysis.targets]`).
pub const KINDS: [&str; 4] = ["sales", "interview", "presentation", "custom"];
const MAX_SEGMENTS: usize = 10_000;
/// A title's length in characters, after trimming.
pub const MAX_TITLE_CHARS: usize = 200;
/// The largest page of sessions.
pub const MAX_LIMIT: u32 = 100;
const DEFAULT_LIMIT: u32 = 20;

// The request bodies as the OpenAPI document states them. The handlers check the same rules
// field by field (so each refusal names its field, `transcript[3].text`); the tests at the end
// of this file keep the two in step.

/// The kind of practice session (each has its own targets in `[analysis.targets]`).
#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum SessionKind {
    Sales,
    Interview,
    Presentation,
    Custom,
}

/// Who speaks in a segment.
#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Speaker {
    User,
    Partner,
}

/// One turn of the conversation. Times are seconds from the start; `end` is not before
/// `start`.
#[derive(Debug, utoipa::ToSchema)]
pub struct Segment {
    pub speaker: Speaker,
    /// What was said (not blank).
    #[schema(min_length = 1, pattern = r"\S")]
    pub text: String,
    #[schema(minimum = 0)]
    pub start: Option<f64>,
    #[schema(minimum = 0)]
    pub end: Option<f64>,
}

/// `POST /api/sessions` as JSON: a transcript to analyse.
#[derive(Debug, utoipa::ToSchema)]
pub struct TranscriptSubmission {
    /// 1 to 200 characters, not blank (trimmed).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub title: String,
    pub kind: SessionKind,
    /// 1 to 10 000 segments.
    #[schema(min_items = 1, max_items = 10000)]
    pub transcript: Vec<Segment>,
}

/// `POST /api/sessions` as `multipart/form-data`: a recording to transcribe, then analyse.
#[derive(Debug, utoipa::ToSchema)]
pub struct AudioSubmission {
    /// 1 to 200 characters, not blank (trimmed).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub title: String,
    pub kind: SessionKind,
    /// wav, mp3, m4a/aac, ogg, webm or flac, up to `uploads.max_audio_bytes` (25 MB by
    /// default); its first bytes must be the type its part's Content-Type or file name claims.
    #[schema(value_type = String, format = Binary, content_media_type = "audio/*")]
    pub audio: Vec<u8>,
    /// One speaker per channel, in channel order, each `user` or `partner`, exactly one `user`
    /// (e.g. `user,partner`); as many names as the recording has channels. Without it a
    /// multi-channel recording has the user on channel 0; `user` on a mono recording means the
    /// user alone (no diarization).
    #[schema(pattern = r"^\s*(user|partner)\s*(,\s*(user|partner)\s*){0,7}$")]
    pub channels: Option<String>,
    /// Which voice of a mono recording of two people is the user's, by order of first speech
    /// (default `first`).
    #[schema(pattern = "^(first|second)$")]
    pub user_speaker: Option<String>,
}

/// Checks a submission and returns (title, kind, normalised segments).
pub fn validate(body: &Value) -> Result<(String, String, Value), ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "expected a JSON object"))?;
    let (title, kind) = validate_title_kind(
        object
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    )?;
    let transcript = object
        .get("transcript")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("transcript", "transcript must be a list of segments"))?;
    if transcript.is_empty() || transcript.len() > MAX_SEGMENTS {
        return Err(ApiError::invalid(
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
            return Err(ApiError::invalid(
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
            return Err(ApiError::invalid(at("text"), "text must not be empty"));
        }
        if text.contains('\0') {
            return Err(ApiError::invalid(
                at("text"),
                "text must not contain a NUL character",
            ));
        }
        let time = |name: &str| -> Result<Option<f64>, ApiError> {
            match segment.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(t) if t >= 0.0 && t.is_finite() => Ok(Some(t)),
                    _ => Err(ApiError::invalid(
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
            return Err(ApiError::invalid(at("end"), "end must not be before start"));
        }
        segments.push(json!({ "speaker": speaker, "start": start, "end": end, "text": text }));
    }
    Ok((title, kind, Value::Array(segments)))
}

fn links(id: &str) -> Value {
    json!({
        "self": format!("/api/sessions/{id}"),
        "feedback": format!("/api/sessions/{id}/feedback"),
        "transcript": format!("/api/sessions/{id}/transcript"),
        "events": format!("/api/sessions/{id}/events"),
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str().map(str::trim) {
            Ok(k) if !k.is_empty() && k.len() <= 200 => Ok(Some(k.to_string())),
            _ => Err(ApiError::invalid(
                "Idempotency-Key",
                "the Idempotency-Key header must be 1 to 200 visible characters",
            )),
        },
    }
}

pub(crate) fn validate_title_kind(title: &str, kind: &str) -> Result<(String, String), ApiError> {
    let title = title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::invalid(
            "title",
            format!("title must be 1 to {MAX_TITLE_CHARS} characters"),
        ));
    }
    if title.contains('\0') {
        return Err(ApiError::invalid(
            "title",
            "title must not contain a NUL character",
        ));
    }
    if !KINDS.contains(&kind) {
        return Err(ApiError::invalid(
            "kind",
            "kind must be one of sales, interview, presentation, custom",
        ));
    }
    Ok((title.to_string(), kind.to_string()))
}

/// Submits a practice conversation: a JSON transcript (analysis is queued) or a multipart
/// form with an `audio` part plus `title` and `kind` (transcription is queued).
#[utoipa::path(post, path = "/api/sessions", tag = "sessions", operation_id = "create_session",
    request_body(description = "A transcript as JSON, or a recording as multipart/form-data (parts title, kind and audio; optionally channels and user_speaker).",
        content((TranscriptSubmission = "application/json"), (AudioSubmission = "multipart/form-data"))),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200,
            description = "1 to 200 visible ASCII characters (trimmed), otherwise a 422 naming Idempotency-Key. A retried submission with the same key gets the first answer and creates nothing; the same key with a different body is a 422.")),
    responses((status = 202, description = "Accepted: {id, status: queued, links}."),
              (status = 400, description = "Malformed: a body that is not valid JSON (`invalid_json`), or a multipart body that cannot be read or has no boundary (`invalid_multipart`)."),
              (status = 413, description = "The body is over http.body_limit_bytes, or the audio over uploads.max_audio_bytes (`payload_too_large`)."),
              (status = 415, description = "Neither application/json nor multipart/form-data, or audio of a type voxline does not take (`unsupported_media_type`)."),
              (status = 422, description = "A field breaks a constraint (`invalid_field`), the audio is not what it claims (`audio_type_mismatch`), audio while no transcription provider is enabled, or a bad or reused Idempotency-Key; `field` names it."),
              IntakeRefusals),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = &caller.0;
    // Limits first: a client over its budget costs no body read and no database work.
    state.limits.check_intake(claims, &ip).await?;
    let key = idempotency_key(&headers)?;
    let submission = upload::read(
        &headers,
        body,
        state.settings.http.body_limit_bytes,
        state.settings.uploads.max_audio_bytes,
    )
    .await?;
    // The key with the request's hash: only a keyed submission is compared with a retry's,
    // so only it is hashed.
    let keyed = key.map(|key| (key, submission.request_hash()));
    if let Some((key, request_hash)) = &keyed
        && let Some(stored) =
            sessions::stored_response(&state.db, &claims.company_id, &claims.sub, key).await?
    {
        return replay(stored, request_hash);
    }
    // Quotas after the replay: a retried submission gets its first answer even once the
    // company has reached a limit since. They are checked in the transaction that writes the
    // session (one transaction per submission); only a recording, which is stored before
    // that transaction, gets an early answer first.
    if matches!(submission, Submission::Audio { .. }) {
        crate::billing::check_quota(&state, &claims.company_id).await?;
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    let task = SessionJob {
        session_id: id.clone(),
        company_id: claims.company_id.clone(),
        profile_id: Some(claims.sub.clone()),
        // The token's email (when it has one) is where "feedback ready" goes.
        notify_email: claims.email.clone(),
    };
    let (title, kind, segments, audio, speakers, job) = match submission {
        Submission::Json(body) => {
            let (title, kind, segments) = validate(&body)?;
            (
                title,
                kind,
                Some(segments),
                None,
                upload::SpeakerFields::default(),
                Analysis(task).to_job(),
            )
        }
        Submission::Audio {
            title,
            kind,
            audio,
            speakers,
        } => {
            let (title, kind) = validate_title_kind(&title, &kind)?;
            if state.settings.transcription_provider().is_none() {
                return Err(ApiError::invalid(
                    "audio",
                    "audio transcription is not enabled on this server: set openai.api_key \
                     (VOXLINE_OPENAI_API_KEY) or install the local model with `voxline models install`; \
                     or submit a JSON transcript",
                ));
            }
            (
                title,
                kind,
                None,
                Some(audio),
                speakers,
                Transcription(task).to_job(),
            )
        }
    };
    let channels = speakers.channels.as_ref().map(ToString::to_string);
    let mut job = job?;
    // The job joins the request's trace, not the writer's that commits it.
    if job.trace_context.is_none() {
        job.trace_context = voxline_domain::trace_context::current();
    }
    // The recording is on disk (synced) before the row that points at it commits; if the
    // transaction fails, the orphan blob is removed.
    let audio_ref = audio
        .as_ref()
        .map(|a| format!("audio/{id}.{}", a.kind.extension()));
    if let (Some(audio), Some(blob)) = (&audio, &audio_ref) {
        state.blobs.put(blob, &audio.bytes).await?;
    }
    let answer = json!({ "id": id, "status": "queued", "links": links(&id) });
    let stored = keyed.as_ref().map(|(key, request_hash)| {
        (
            key.clone(),
            StoredResponse {
                request_hash: request_hash.clone(),
                status: 202,
                response: answer.clone(),
            },
        )
    });
    let pending = Pending {
        id: id.clone(),
        company_id: claims.company_id.clone(),
        profile_id: claims.sub.clone(),
        title,
        kind,
        source: if audio.is_some() {
            "audio"
        } else {
            "transcript"
        },
        audio_ref: audio_ref.clone(),
        audio_type: audio.as_ref().map(|a| a.kind.extension()),
        channels,
        user_speaker: speakers.user_speaker.map(|u| u.as_str()),
        segments,
        job,
        actor_role: claims.role.as_str(),
        stored,
    };
    // Written with whatever other submissions are waiting, within the plan's quotas (exact
    // for the daily session limit), in one transaction; answered after its commit.
    match state.intake().write(pending).await {
        Ok(Written::Created) => Ok((StatusCode::ACCEPTED, Json(answer)).into_response()),
        outcome => {
            if let Some(blob) = &audio_ref
                && let Err(e) = state.blobs.delete(blob).await
            {
                tracing::warn!(blob, error = %e, "could not remove the audio of a session that was not created");
            }
            outcome?;
            // A concurrent retry with the same key committed first: answer as it did.
            let (key, request_hash) = keyed
                .as_ref()
                .ok_or_else(|| ApiError::internal("a key was taken without a key"))?;
            let stored = sessions::stored_response(&state.db, &claims.company_id, &claims.sub, key)
                .await?
                .ok_or_else(|| ApiError::internal("idempotency key vanished"))?;
            replay(stored, request_hash)
        }
    }
}

fn replay(stored: StoredResponse, request_hash: &str) -> Result<Response, ApiError> {
    if stored.request_hash != request_hash {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "this Idempotency-Key was used for a different request",
        ));
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::ACCEPTED);
    Ok((status, Json(stored.response)).into_response())
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20); outside that range a 422 `invalid_limit` naming
    /// `limit` (not clamped).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// `true`: only the caller's own sessions (a person's history, as `/app` shows it);
    /// otherwise the company's.
    pub mine: Option<bool>,
}

fn view(session: &sessions::SessionRow) -> Value {
    json!({
        "id": session.id, "title": session.title, "kind": session.kind, "status": session.status,
        "source": session.source, "created_at": session.created_at, "updated_at": session.updated_at,
        "links": links(&session.id),
    })
}

/// The caller's company's sessions (or with `mine=true` the caller's own), newest first, with
/// cursor pagination.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions", operation_id = "list_sessions", params(ListQuery),
    responses((status = 200, description = "{sessions, next_cursor}"),
              (status = 400, description = "A query parameter that is not of its type, is repeated or holds a NUL character (`invalid_query`)."),
              (status = 422, description = "`limit` outside 1 to 100 (`invalid_limit`).")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = crate::extract::limit(q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let mine = q.mine.unwrap_or(false).then_some(caller.0.sub.as_str());
    let rows = sessions::list_of(
        &state.db,
        &caller.0.company_id,
        mine,
        q.cursor.as_deref(),
        limit as i64,
    )
    .await?;
    let next_cursor = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(
        json!({ "sessions": rows.iter().map(view).collect::<Vec<_>>(), "next_cursor": next_cursor }),
    ))
}

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("session {id} does not exist"),
    )
}

/// What follows an erasure in `tx`: the waiting jobs about `subject` are cancelled (their
/// count returned) and the deletion of its stored `files` is queued (when there are any).
pub(crate) async fn forget_erased(
    state: &AppState,
    tx: &mut voxline_domain::Tx<'_>,
    subject: &ErasedSubject<'_>,
    files: Vec<String>,
) -> Result<u64, ApiError> {
    let cancelled = state.jobs.store().cancel_for_erased(tx, subject).await?;
    if !files.is_empty() {
        let job = BlobsDelete {
            company_id: subject.company_id.to_string(),
            refs: files,
        };
        state.jobs.enqueue(tx, &job).await?;
    }
    Ok(cancelled)
}

/// Session `id` of `company`; 404 `not_found` when it has none of that id.
pub(crate) async fn existing(
    db: &voxline_domain::Db,
    company: &str,
    id: &str,
) -> Result<sessions::SessionRow, ApiError> {
    sessions::get(db, company, id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// 409 `not_ready`: `session` is not far enough yet; `later` says what comes when.
pub(crate) fn not_ready(session: &sessions::SessionRow, later: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_ready",
        format!("session {} is {}; {later}", session.id, session.status),
    )
}

/// One session of the caller's company.
#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", operation_id = "get_session",
    params(SessionPath),
    responses((status = 200, description = "The session."), SessionNotFound),
    security(("bearer" = [])))]
pub async fn get(CallerSession { session, .. }: CallerSession) -> Json<Value> {
    Json(view(&session))
}

/// Deletes a session with its transcript, feedback and audio; its waiting jobs are cancelled.
/// Allowed to the profile that made it and to its company's admins (403 for other members).
#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "sessions", operation_id = "delete_session",
    params(SessionPath),
    responses((status = 204, description = "Deleted."),
              (status = 403, description = "Neither the session's own profile nor a company admin (`forbidden`), or the token's profile belongs to another company (`profile_company_mismatch`)."),
              SessionNotFound),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let claims = &caller.0;
    let company = claims.company_id.as_str();
    let mut tx = state
        .db
        .begin(Scope::Profile {
            company,
            profile: &claims.sub,
        })
        .await?;
    let session = gdpr::delete_session(&mut tx, company, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if session.profile_id != claims.sub && !matches!(claims.role, Role::Admin) {
        tx.rollback().await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the session's own profile or a company admin may delete it",
        ));
    }
    let subject = ErasedSubject {
        company_id: company,
        profile_id: None,
        session_ids: std::slice::from_ref(&session.id),
    };
    let files = session.audio_ref.iter().cloned().collect();
    let cancelled = forget_erased(&state, &mut tx, &subject, files).await?;
    audit::append_in(
        &mut tx,
        &claims.audit_entry(
            "session.delete",
            &format!("session:{id}"),
            json!({ "owner": session.profile_id, "jobs_cancelled": cancelled }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The coaching feedback of a session once it is ready (409 before): `{session_id, kind:
/// llm|metrics_only, metrics, scores, llm, notes}`.
#[utoipa::path(get, path = "/api/sessions/{id}/feedback", tag = "sessions", operation_id = "get_feedback",
    params(SessionPath),
    responses((status = 200, description = "The feedback."), SessionNotFound,
              (status = 409, description = "The session is not ready yet (`not_ready`).")),
    security(("bearer" = [])))]
pub async fn feedback(
    State(state): State<AppState>,
    CallerSession { caller, session }: CallerSession,
) -> Result<Json<Value>, ApiError> {
    let id = &session.id;
    match sessions::feedback(&state.db, &caller.0.company_id, id).await? {
        // The stored document is `{kind, metrics, scores, llm, notes}`; the answer adds the id.
        Some(Value::Object(mut feedback)) => {
            feedback.insert("session_id".into(), Value::String(id.clone()));
            Ok(Json(Value::Object(feedback)))
        }
        Some(other) => Err(ApiError::internal(format!(
            "session {id}: stored feedback is not an object: {other}"
        ))),
        None => Err(not_ready(&session, "feedback comes when it is ready")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use utoipa::PartialSchema;

    use super::*;

    fn schema<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    #[test]
    fn the_documented_bodies_state_what_validate_checks() {
        assert_eq!(schema::<SessionKind>()["enum"], json!(KINDS));
        assert_eq!(schema::<Speaker>()["enum"], json!(["user", "partner"]));
        for body in [
            schema::<TranscriptSubmission>(),
            schema::<AudioSubmission>(),
            schema::<crate::roleplays::RoleplayRequest>(),
        ] {
            assert_eq!(body["properties"]["title"]["maxLength"], MAX_TITLE_CHARS);
            let required = body["required"].as_array().unwrap();
            assert!(required.contains(&json!("title")) && required.contains(&json!("kind")));
        }
        let transcript = &schema::<TranscriptSubmission>()["properties"]["transcript"];
        assert_eq!(transcript["maxItems"], MAX_SEGMENTS);
        assert_eq!(transcript["minItems"], 1);
    }

    #[test]
    fn nul_characters_are_refused_naming_the_field() {
        let body = json!({"title": "a\u{0}b", "kind": "sales",
            "transcript": [{"speaker": "user", "text": "hi"}]});
        assert_eq!(
            validate(&body).unwrap_err().body.field.as_deref(),
            Some("title")
        );
        let body = json!({"title": "ok", "kind": "sales",
            "transcript": [{"speaker": "user", "text": "h\u{0}i"}]});
        assert_eq!(
            validate(&body).unwrap_err().body.field.as_deref(),
            Some("transcript[0].text")
        );
    }
}
