//! Operator routes (`/api/admin`, operator role): queue overview, job list and detail, and the
//! actions retry, discard and bulk retry of dead jobs, each recorded in the audit log.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use voxline_domain::audit::{self, AuditEntry};
use voxline_jobs::store;
use voxline_jobs::{Job, JobError, JobId, JobState};

use crate::AppState;
use crate::admin_console::{JobMatch, QueuePauseView};
use crate::auth::Operator;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};

const ACTIVITY_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueOverview {
    pub queue: String,
    /// Jobs per state; every state of the closed set is present.
    pub counts: BTreeMap<String, i64>,
    /// Age of the oldest job that is due and not yet started.
    pub oldest_available_age_ms: Option<i64>,
    pub done_last_5m: i64,
    pub failed_last_5m: i64,
    /// Whether claims from the queue are paused, since when and by whom.
    pub paused: bool,
    pub paused_at: Option<DateTime<Utc>>,
    pub paused_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuesResponse {
    pub queues: Vec<QueueOverview>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobSummary {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub state: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// The tenant the job works for, when its payload names one.
    pub company_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobsResponse {
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptErrorView {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub priority: i16,
    pub created_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    /// How far the running (or last) attempt said it got, 0 to 100; absent when it never said.
    pub progress: Option<u8>,
    /// What the attempt said with its progress, e.g. "transcribing: 2 windows, 40 of 95 s".
    pub progress_note: Option<String>,
    /// The payload with personal data (emails, names, text, transcripts, secrets) redacted.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub errors: Vec<AttemptErrorView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetriedResponse {
    pub retried: Vec<i64>,
}

/// The schema of a job state's name: one of [`JobState::ALL`], as the API, the CLI and the
/// metrics name them.
pub struct JobStateName;

impl utoipa::PartialSchema for JobStateName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A job state, as the API, the CLI and the metrics name it (`voxline_jobs::JobState`).",
            ))
            .enum_values(Some(JobState::ALL.iter().map(|state| state.as_str())))
            .into()
    }
}

impl ToSchema for JobStateName {}

/// The largest page of jobs or audit entries.
pub const MAX_LIMIT: u32 = 200;
const DEFAULT_LIMIT: u32 = 50;

/// Which page of jobs or audit entries, newest first: the query parameters after the filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 200 (default 50); outside that range a 422 `invalid_limit` (not
    /// clamped).
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
}

impl PageQuery {
    /// The page size asked for, checked against its range.
    fn limit(&self) -> Result<u32, ApiError> {
        crate::extract::limit(self.limit, DEFAULT_LIMIT, MAX_LIMIT)
    }
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::NotFound(id) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {id} does not exist"),
        ),
        e @ JobError::WrongState { .. } => {
            ApiError::new(StatusCode::CONFLICT, "wrong_state", e.to_string())
        }
        other => ApiError::internal(other),
    }
}

fn summary(job: &Job) -> JobSummary {
    JobSummary {
        id: job.id.0,
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        state: job.state.to_string(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        run_at: job.run_at,
        last_error: job.last_error.clone(),
        company_id: job
            .payload
            .get("company_id")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// Keys whose values are personal data or secrets; everything else (ids, kinds, counts) stays.
const REDACTED_KEYS: &[&str] = &[
    "email",
    "to",
    "name",
    "text",
    "transcript",
    "segments",
    "phone",
    "address",
    "body",
    "content",
    "audio",
    "token",
    "secret",
    "password",
    "summary",
];

pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if REDACTED_KEYS
                        .iter()
                        .any(|r| lower == *r || lower.ends_with(&format!("_{r}")))
                    {
                        (k.clone(), Value::String("[redacted]".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

pub(crate) async fn record(
    state: &AppState,
    operator: &Operator,
    action: &str,
    target: String,
    details: Value,
) -> Result<(), ApiError> {
    let claims = &operator.0;
    audit::append(
        &state.db,
        &AuditEntry {
            actor: &claims.sub,
            actor_role: claims.role.as_str(),
            // An operator's action on the engine belongs to no company: appended in platform scope.
            company_id: None,
            action,
            target: &target,
            details,
        },
    )
    .await
    .map(drop)
    .map_err(ApiError::from)
}

/// Counts per state, oldest due job's age, and the last five minutes' activity per queue.
#[utoipa::path(get, path = "/api/admin/queues", tag = "operators", operation_id = "admin_queues",
    responses((status = 200, body = QueuesResponse, description = "Every configured queue and every queue with jobs."), (status = 403, description = "Needs the operator role (`forbidden`), or the token's profile belongs to another company (`profile_company_mismatch`).")),
    security(("bearer" = [])))]
pub async fn queues(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<QueuesResponse>, ApiError> {
    let stats = state.jobs.store().stats().await?;
    let activity = state.jobs.store().activity(ACTIVITY_WINDOW).await?;
    let mut names = state.settings.queue_names();
    names.extend(stats.iter().map(|s| s.queue.clone()));
    names.sort();
    names.dedup();
    let queues = names
        .into_iter()
        .map(|queue| {
            let s = stats.iter().find(|s| s.queue == queue);
            let (done, failed) = activity
                .iter()
                .find(|(q, _, _)| *q == queue)
                .map(|(_, d, f)| (*d, *f))
                .unwrap_or((0, 0));
            // The counts carry the queue's pause: no second read of `queue_pauses`.
            let pause = QueuePauseView::from_pause(&queue, s.and_then(|s| s.pause.as_ref()));
            QueueOverview {
                paused: pause.paused,
                paused_at: pause.paused_at,
                paused_by: pause.paused_by,
                counts: JobState::ALL
                    .iter()
                    .map(|st| {
                        (
                            st.to_string(),
                            s.and_then(|s| s.counts.get(st)).copied().unwrap_or(0),
                        )
                    })
                    .collect(),
                oldest_available_age_ms: s.and_then(|s| s.oldest_available_age_ms),
                done_last_5m: done,
                failed_last_5m: failed,
                queue,
            }
        })
        .collect();
    Ok(Json(QueuesResponse { queues }))
}

/// Jobs newest first, filtered by queue and state, with cursor pagination.
#[utoipa::path(get, path = "/api/admin/jobs", tag = "operators", operation_id = "admin_jobs", params(JobMatch, PageQuery),
    responses((status = 200, body = JobsResponse, description = "A page of jobs, newest first."), (status = 403, description = "Needs the operator role (`forbidden`), or the token's profile belongs to another company (`profile_company_mismatch`)."),
              (status = 400, description = "A query parameter that is not of its type, is repeated or holds a NUL character (`invalid_query`), an unknown `state` (`invalid_state`), `from` not before `to` (`invalid_range`) or a `q` over 200 characters (`invalid_search`)."),
              (status = 422, description = "`limit` outside 1 to 200 (`invalid_limit`).")),
    security(("bearer" = [])))]
pub async fn jobs(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(matching): ApiQuery<JobMatch>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<JobsResponse>, ApiError> {
    // 400 as tests/admin.rs pins it for `state` (the `limit` below is a 422).
    let mut filter = matching.filter(StatusCode::BAD_REQUEST, true)?;
    let limit = page.limit()?;
    filter.before = page.cursor.map(JobId);
    filter.limit = limit;
    let jobs = state.jobs.store().list(&filter).await?;
    let next_cursor = (jobs.len() as u32 == limit)
        .then(|| jobs.last().map(|j| j.id.0))
        .flatten();
    Ok(Json(JobsResponse {
        jobs: jobs.iter().map(summary).collect(),
        next_cursor,
    }))
}

/// One job: redacted payload and every attempt's error.
#[utoipa::path(get, path = "/api/admin/jobs/{id}", tag = "operators", operation_id = "admin_job", params(("id" = i64, Path, description = "The job's id.")),
    responses((status = 200, body = JobDetail, description = "The job."), (status = 403, description = "Needs the operator role (`forbidden`), or the token's profile belongs to another company (`profile_company_mismatch`)."), (status = 404, description = "No such job (`not_found`).")),
    security(("bearer" = [])))]
pub async fn job(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<JobDetail>, ApiError> {
    let job = state
        .jobs
        .store()
        .get(JobId(id))
        .await?
        .ok_or_else(|| job_error(JobError::NotFound(JobId(id))))?;
    Ok(Json(JobDetail {
        summary: summary(&job),
        priority: job.priority,
        created_at: job.created_at,
        attempted_at: job.attempted_at,
        finished_at: job.finished_at,
        locked_by: job.locked_by.clone(),
        progress: job.progress.as_ref().map(|p| p.percent.get()),
        progress_note: job.progress.as_ref().and_then(|p| p.note.clone()),
        payload: redact(&job.payload),
        errors: job
            .errors
            .iter()
            .map(|e| AttemptErrorView {
                attempt: e.attempt,
                at: e.at,
                error: e.error.clone(),
            })
            .collect(),
    }))
}

/// Runs a dead or retrying job again now, attempts reset. 409 for any other state.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/retry", tag = "operators", operation_id = "admin_retry_job", params(("id" = i64, Path, description = "The job's id.")),
    responses((status = 200, body = JobSummary, description = "The job, available again."), (status = 403, description = "Needs the operator role (`forbidden`), or the token's profile belongs to another company (`profile_company_mismatch`)."), (status = 404, description = "No such job (`not_found`)."),
              (status = 409, description = "The job is neither dead nor retrying (`wrong_state`).")),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<JobSummary>, ApiError> {
    let job = store::retry(state.jobs.store().as_ref(), JobId(id))
        .await
        .map_err(job_error)?;
    recorded(&state, &operator, "job.retry", job).await
}

/// Cancels a waiting or dead job for good. 409 for a running or finished one.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/discard", tag = "operators", operation_id = "admin_discard_job", params(("id" = i64, Path, description = "The job's id.")),
    responses((status = 200, body = JobSummary, description = "The job, cancelled."), (status = 403, description = "Needs the operator role (`forbidden`), or the token's profile belongs to another company (`profile_company_mismatch`)."), (status = 404, description = "No such job (`not_found`)."),
              (status = 409, description = "The job is running or finished (`wrong_state`).")),
    security(("bearer" = [])))]
pub async fn discard(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<JobSummary>, ApiError> {
    let job = store::discard(state.jobs.store().as_ref(), JobId(id))
        .await
        .map_err(job_error)?;
    recorded(&state, &operator, "job.discard", job).await
}

/// Audit-logs an action that changed one job and answers with the job.
async fn recorded(
    state: &AppState,
    operator: &Operator,
    action: &str,
    job: Job,
) -> Result<Json<JobSummary>, ApiError> {
    let details = serde_json::json!({ "queue": job.queue, "kind": job.kind });
    record(state, operator, action, format!("job:{}", job.id), details).await?;
    Ok(Json(summary(&job)))
}

/// Retries every dead job of a queue.
#[utoipa::path(post, path = "/api/admin/queues/{queue}/retry-dead", tag = "operators", operation_id = "admin_retry_dead",
    params(("queue" = String, Path, description = "The queue's name; a queue without dead jobs retries none.")),
    responses((status = 200, body = RetriedResponse, description = "The ids of the jobs retried."), (status = 403, description = "Needs the operator role (`forbidden`), or the token's profile belongs to another company (`profile_company_mismatch`).")),
    security(("bearer" = [])))]
pub async fn retry_dead(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<RetriedResponse>, ApiError> {
    let ids = store::retry_all(state.jobs.store().as_ref(), &queue, JobState::Dead)
        .await
        .map_err(job_error)?;
    let retried: Vec<i64> = ids.iter().map(|id| id.0).collect();
    record(
        &state,
        &operator,
        "queue.retry_dead",
        format!("queue:{queue}"),
        serde_json::json!({ "jobs": retried }),
    )
    .await?;
    Ok(Json(RetriedResponse { retried }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action, e.g. job.retry, queue.retry_dead, preferences.update (empty: all).
    pub action: Option<String>,
    /// Only this actor's entries (a profile id, or `cli:<user>`; empty: all).
    pub actor: Option<String>,
    /// Only this company's entries (empty: all, the platform's included).
    pub company_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub actor_role: String,
    pub company_id: Option<String>,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditResponse {
    pub entries: Vec<AuditEntryView>,
    pub next_cursor: Option<i64>,
}

/// The audit log, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/api/admin/audit", tag = "operators", operation_id = "admin_audit", params(AuditQuery, PageQuery),
    responses((status = 200, body = AuditResponse, description = "A page of entries, newest first."), (status = 403, description = "Needs the operator role (`forbidden`), or the token's profile belongs to another company (`profile_company_mismatch`)."),
              (status = 422, description = "`limit` outside 1 to 200 (`invalid_limit`).")),
    security(("bearer" = [])))]
pub async fn audit_log(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(q): ApiQuery<AuditQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<AuditResponse>, ApiError> {
    let limit = page.limit()?;
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let filter = audit::AuditFilter {
        action: non_empty(q.action),
        actor: non_empty(q.actor),
        company_id: non_empty(q.company_id),
        before: page.cursor,
        limit: limit as i64,
    };
    // Operators read every company's entries: audit::list runs in platform scope on Postgres
    // (or in the one company's scope when the filter names it).
    let records = audit::list(&state.db, &filter).await?;
    let next_cursor = (records.len() as u32 == limit)
        .then(|| records.last().map(|r| r.id))
        .flatten();
    let entries = records
        .into_iter()
        .map(|r| AuditEntryView {
            id: r.id,
            at: r.at,
            actor: r.actor,
            actor_role: r.actor_role,
            company_id: r.company_id,
            action: r.action,
            target: r.target,
            details: r.details,
        })
        .collect();
    Ok(Json(AuditResponse {
        entries,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::redact;
    use serde_json::json;

    #[test]
    fn the_documented_states_are_the_engines() {
        let schema =
            serde_json::to_value(<super::JobStateName as utoipa::PartialSchema>::schema()).unwrap();
        let names: Vec<String> = super::JobState::ALL
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(schema["enum"], json!(names));
    }

    #[test]
    fn personal_data_is_redacted_and_ids_are_kept() {
        let payload = json!({
            "session_id": "s1", "company_id": "c1", "to_email": "a@b.c",
            "transcript": [{"text": "hi"}], "nested": {"name": "Ann", "count": 3}
        });
        assert_eq!(
            redact(&payload),
            json!({
                "session_id": "s1", "company_id": "c1", "to_email": "[redacted]",
                "transcript": "[redacted]", "nested": {"name": "[redacted]", "count": 3}
            })
        );
    }
}
