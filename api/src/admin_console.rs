//! Operator routes for incidents and trends: pausing and resuming a queue, acting on every job
//! a filter matches (with a dry run that counts them first), and per-minute activity. Each
//! action is recorded in the audit log once, with what it applied to.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use voxline_jobs::JobState;
use voxline_jobs::store::{BulkAction, JobFilter, MinuteCounts, QueuePause, minute_of};

use crate::AppState;
use crate::admin::{JobStateName, record};
use crate::auth::Operator;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};

/// The longest search text.
const MAX_SEARCH_CHARS: usize = 200;

/// What selects jobs, in a list's query string (`GET /api/admin/jobs`) or a bulk action's
/// body. Every field given narrows the match; a bad one is refused naming it (400 in a query
/// string, 422 in a body: see [`JobMatch::filter`]).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobMatch {
    /// Only this queue's jobs (empty: every queue).
    pub queue: Option<String>,
    /// Only jobs in this state; another value is refused (`invalid_state`). Empty in a query
    /// string: every state.
    #[schema(value_type = Option<JobStateName>)]
    #[param(value_type = Option<JobStateName>, inline)]
    pub state: Option<String>,
    /// Only jobs of this kind, e.g. `email.send`.
    pub kind: Option<String>,
    /// Only jobs working for this company (named by their payload).
    pub company_id: Option<String>,
    /// Created at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Created before this time (RFC 3339); `from` must be before it (`invalid_range`).
    pub to: Option<DateTime<Utc>>,
    /// Text in the kind, the errors or the payload: on Postgres every word of it (full-text
    /// index), on SQLite the text as it stands, case-insensitive. At most 200 characters
    /// (`invalid_search`).
    pub q: Option<String>,
}

impl JobMatch {
    /// The store's filter; a bad field is `status` (400 in a query string, 422 in a body)
    /// naming it. An empty `state` means every state in a query string (`state=`); in a
    /// body, where `state` is one of the named states or absent, it is refused.
    pub fn filter(
        &self,
        status: StatusCode,
        blank_state_is_any: bool,
    ) -> Result<JobFilter, ApiError> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let state = if blank_state_is_any {
            given(&self.state)
        } else {
            self.state.clone()
        };
        let state = match state {
            None => None,
            Some(s) => Some(s.parse::<JobState>().map_err(|e| {
                ApiError::new(status, "invalid_state", e.to_string()).field("state")
            })?),
        };
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(ApiError::new(
                status,
                "invalid_range",
                "`from` must be before `to`".to_string(),
            )
            .field("from"));
        }
        let search = given(&self.q);
        if search
            .as_ref()
            .is_some_and(|q| q.chars().count() > MAX_SEARCH_CHARS)
        {
            return Err(ApiError::new(
                status,
                "invalid_search",
                format!("q is longer than {MAX_SEARCH_CHARS} characters"),
            )
            .field("q"));
        }
        Ok(JobFilter {
            queue: given(&self.queue),
            state,
            kind: given(&self.kind),
            company_id: given(&self.company_id),
            created_from: self.from,
            created_to: self.to,
            search,
            before: None,
            limit: 0,
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkActionName {
    /// Dead or retrying jobs run again now, attempts reset.
    Retry,
    /// Waiting or dead jobs are cancelled.
    Discard,
}

impl From<BulkActionName> for BulkAction {
    fn from(name: BulkActionName) -> Self {
        match name {
            BulkActionName::Retry => BulkAction::Retry,
            BulkActionName::Discard => BulkAction::Discard,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub action: BulkActionName,
    #[serde(default)]
    pub filter: JobMatch,
    /// Only count the jobs the action would change (for a confirmation), change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The field a body error is about: its path, or for a missing or unknown top-level field the
/// name serde quotes in backticks.
fn body_field(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    if path != "." {
        return path;
    }
    let message = e.inner().to_string();
    message
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or(path)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResponse {
    pub action: BulkActionName,
    pub dry_run: bool,
    /// Jobs changed, or with `dry_run` the jobs that would be.
    pub count: u64,
}

/// Retries or discards every job a filter matches, in the states the action applies to.
#[utoipa::path(post, path = "/api/admin/jobs/bulk", tag = "operators", operation_id = "admin_bulk_jobs",
    request_body = BulkRequest,
    responses((status = 200, body = BulkResponse, description = "How many jobs changed (or would, with `dry_run`)."),
              (status = 400, description = "Malformed: a body that is not valid JSON (`invalid_json`)."),
              (status = 403, description = "Needs the operator role (`forbidden`)."),
              (status = 415, description = "The body is not application/json (`unsupported_media_type`)."),
              (status = 422, description = "A field of the body that is not valid, named by `field` (`invalid_state`, `invalid_range`, `invalid_search`, `invalid_body`).")),
    security(("bearer" = [])))]
pub async fn bulk(
    State(state): State<AppState>,
    operator: Operator,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<BulkResponse>, ApiError> {
    let Json(body) = body.map_err(ApiError::from)?;
    let request: BulkRequest = serde_path_to_error::deserialize(body).map_err(|e| {
        let field = body_field(&e);
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            e.inner().to_string(),
        )
        .field(field)
    })?;
    let filter = request
        .filter
        .filter(StatusCode::UNPROCESSABLE_ENTITY, false)?;
    let action = BulkAction::from(request.action);
    let store = state.jobs.store();
    let count = if request.dry_run {
        let n = store
            .console()
            .count_matching(&filter, &action.from_states())
            .await?;
        u64::try_from(n).unwrap_or(0)
    } else {
        let n = store.console().act_on_matching(&filter, action).await?;
        record(
            &state,
            &operator,
            &format!("jobs.bulk_{}", action.as_str()),
            "jobs".to_string(),
            json!({ "filter": request.filter, "count": n }),
        )
        .await?;
        n
    };
    Ok(Json(BulkResponse {
        action: request.action,
        dry_run: request.dry_run,
        count,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePauseView {
    pub queue: String,
    pub paused: bool,
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it: a profile id, or `cli:<user>`.
    pub paused_by: Option<String>,
}

impl QueuePauseView {
    pub fn of(queue: &str, pauses: &[QueuePause]) -> QueuePauseView {
        QueuePauseView::from_pause(queue, pauses.iter().find(|p| p.queue == queue))
    }

    pub fn from_pause(queue: &str, pause: Option<&QueuePause>) -> QueuePauseView {
        QueuePauseView {
            queue: queue.to_string(),
            paused: pause.is_some(),
            paused_at: pause.map(|p| p.paused_at),
            paused_by: pause.map(|p| p.paused_by.clone()),
        }
    }
}

/// A queue this deployment knows: configured, or holding jobs.
async fn known_queue(state: &AppState, queue: &str) -> Result<(), ApiError> {
    if state.settings.queue_names().iter().any(|q| q == queue) {
        return Ok(());
    }
    let stats = state.jobs.store().stats().await?;
    if stats.iter().any(|s| s.queue == queue) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_queue",
        format!("queue {queue} is not configured and has no jobs"),
    )
    .field("queue"))
}

/// Stops every process claiming from the queue until it is resumed; running jobs finish.
#[utoipa::path(post, path = "/api/admin/queues/{queue}/pause", tag = "operators", operation_id = "admin_pause_queue",
    params(("queue" = String, Path, description = "The queue's name.")),
    responses((status = 200, body = QueuePauseView, description = "The queue, paused (already paused: unchanged, not audited again)."),
              (status = 403, description = "Needs the operator role (`forbidden`)."),
              (status = 404, description = "No such queue (`unknown_queue`).")),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueuePauseView>, ApiError> {
    known_queue(&state, &queue).await?;
    let store = state.jobs.store();
    let paused = store.console().pause_queue(&queue, &operator.0.sub).await?;
    if paused {
        record(
            &state,
            &operator,
            "queue.pause",
            format!("queue:{queue}"),
            json!({}),
        )
        .await?;
    }
    pause_view(&state, &queue).await
}

/// Lets workers claim from the queue again.
#[utoipa::path(post, path = "/api/admin/queues/{queue}/resume", tag = "operators", operation_id = "admin_resume_queue",
    params(("queue" = String, Path, description = "The queue's name.")),
    responses((status = 200, body = QueuePauseView, description = "The queue, running (not paused: unchanged, not audited)."),
              (status = 403, description = "Needs the operator role (`forbidden`)."),
              (status = 404, description = "No such queue (`unknown_queue`).")),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueuePauseView>, ApiError> {
    known_queue(&state, &queue).await?;
    let resumed = state.jobs.store().console().resume_queue(&queue).await?;
    if resumed {
        record(
            &state,
            &operator,
            "queue.resume",
            format!("queue:{queue}"),
            json!({}),
        )
        .await?;
    }
    pause_view(&state, &queue).await
}

async fn pause_view(state: &AppState, queue: &str) -> Result<Json<QueuePauseView>, ApiError> {
    let pauses = state.jobs.store().console().paused_queues().await?;
    Ok(Json(QueuePauseView::of(queue, &pauses)))
}

const DEFAULT_MINUTES: i64 = 60;
const MAX_MINUTES: i64 = 24 * 60;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// How many minutes back, 1 to 1440 (default 60), the current minute included.
    #[param(minimum = 1, maximum = 1440, default = 60)]
    pub minutes: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinutePoint {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub enqueued: i64,
    /// Attempts that finished the job.
    pub done: i64,
    /// Attempts that failed and will be retried.
    pub failed: i64,
    /// Jobs that went to the dead-letter queue.
    pub dead: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueSeries {
    pub queue: String,
    /// One point per minute, oldest first, minutes without activity as zeros.
    pub points: Vec<MinutePoint>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    pub minutes: i64,
    pub queues: Vec<QueueSeries>,
}

/// Per-minute enqueued, done, failed and dead jobs per queue, from the activity table.
#[utoipa::path(get, path = "/api/admin/stats", tag = "operators", operation_id = "admin_stats", params(StatsQuery),
    responses((status = 200, body = StatsResponse, description = "Every configured queue and every queue with activity in the window."),
              (status = 403, description = "Needs the operator role (`forbidden`)."),
              (status = 422, description = "`minutes` outside 1 to 1440 (`invalid_minutes`).")),
    security(("bearer" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<StatsResponse>, ApiError> {
    let minutes = q.minutes.unwrap_or(DEFAULT_MINUTES);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_minutes",
            format!("minutes must be between 1 and {MAX_MINUTES}"),
        )
        .field("minutes"));
    }
    let now = minute_of(Utc::now());
    let start = now - (minutes - 1) * 60;
    let rows = state.jobs.store().console().minute_stats(start).await?;
    let mut names = state.settings.queue_names();
    names.extend(rows.iter().map(|r| r.queue.clone()));
    names.sort();
    names.dedup();
    let by_minute: HashMap<(i64, &str), MinuteCounts> = rows
        .iter()
        .map(|r| ((r.minute, r.queue.as_str()), r.counts))
        .collect();
    let queues = names
        .iter()
        .map(|queue| {
            let points = (0..minutes)
                .map(|i| {
                    let minute = start + i * 60;
                    let counts = by_minute
                        .get(&(minute, queue.as_str()))
                        .copied()
                        .unwrap_or_default();
                    point(minute, counts)
                })
                .collect();
            let queue = queue.clone();
            QueueSeries { queue, points }
        })
        .collect();
    Ok(Json(StatsResponse { minutes, queues }))
}

fn point(minute: i64, counts: MinuteCounts) -> MinutePoint {
    MinutePoint {
        minute: DateTime::from_timestamp(minute, 0).unwrap_or_default(),
        enqueued: counts.enqueued,
        done: counts.done,
        failed: counts.failed,
        dead: counts.dead,
    }
}
