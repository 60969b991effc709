//! `GET /api/sessions/{id}/events`: the session's status as Server-Sent Events — the current
//! status first, then every change (queued → transcribing → analyzing → ready | failed), and
//! the stream ends after a final status.
//!
//! Changes arrive through the process's [`voxline_domain::events::StatusFeed`] (Redis pub/sub
//! when `redis.url` is set, else Postgres LISTEN/NOTIFY, so workers in other processes reach
//! this stream; in-process on SQLite). A notification can be lost (a dropped connection, a slow
//! reader lagging behind), so the stream also re-reads the status every few seconds: the
//! database stays the truth.
//!
//! While the session is `transcribing`, the stream also sends the transcription job's progress
//! (`event: progress`, data `{session_id, status, progress, note}`) whenever it changes. The
//! worker stores it on the job (see `voxline_jobs::progress`), and the stream reads it from the
//! job's row by its unique key every [`PROGRESS_POLL`]: one indexed row per open stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast;
use voxline_domain::events::{SessionEvent, is_final};
use voxline_domain::{Db, sessions};
use voxline_jobs::store::JobStore;
use voxline_jobs::{JobProgress, JobState};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiPath;

/// How often a stream re-reads the status in case a notification was lost.
const RECHECK: Duration = Duration::from_secs(3);

/// How often a stream reads the transcription's progress while the session is transcribing.
const PROGRESS_POLL: Duration = Duration::from_secs(1);

/// The status whose progress the stream follows.
const TRANSCRIBING: &str = "transcribing";

/// Server-Sent Events of the session's status (`event: status`, data `{session_id, status, error}`),
/// and while it is transcribing, its progress (`event: progress`, data `{session_id, status,
/// progress, note}`, `progress` from 0 to 100).
#[utoipa::path(get, path = "/api/sessions/{id}/events", tag = "sessions", operation_id = "session_events",
    params(crate::session_route::SessionPath),
    responses((status = 200, description = "text/event-stream of status events, and progress events while transcribing; ends after ready or failed", content_type = "text/event-stream"),
              crate::session_route::SessionNotFound),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let company = caller.0.company_id;
    // Subscribe before reading the status, so a change between the two is not missed.
    let updates = state.feed().subscribe();
    let session = crate::sessions::existing(&state.db, &company, &id).await?;
    let current = SessionEvent {
        company_id: company,
        session_id: id,
        status: session.status,
        error: session.error,
    };
    let stream = StatusStream {
        db: state.db.clone(),
        jobs: state.jobs.store().clone(),
        company: current.company_id.clone(),
        progress_key: transcription_key(&current.session_id),
        session: current.session_id.clone(),
        updates,
        last: None,
        pending: Some(current),
        last_progress: None,
        check_progress: true,
    };
    Ok(
        Sse::new(futures::stream::unfold(stream, StatusStream::next))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}

/// The unique key of a session's transcription job (`voxline_jobs::payloads::SessionJob`).
fn transcription_key(session: &str) -> String {
    format!("transcription:{session}")
}

struct StatusStream {
    db: Db,
    jobs: Arc<dyn JobStore>,
    company: String,
    session: String,
    /// The unique key of the session's transcription job.
    progress_key: String,
    updates: broadcast::Receiver<SessionEvent>,
    /// The last status sent (None before the first).
    last: Option<String>,
    /// A status to send next.
    pending: Option<SessionEvent>,
    /// The last progress sent.
    last_progress: Option<JobProgress>,
    /// Whether the progress is to be read before waiting again.
    check_progress: bool,
}

impl StatusStream {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if self.last.as_deref().is_some_and(is_final) {
            return None;
        }
        loop {
            if let Some(event) = self.pending.take()
                && self.last.as_deref() != Some(event.status.as_str())
            {
                self.last = Some(event.status.clone());
                let data = json!({
                    "session_id": event.session_id, "status": event.status, "error": event.error,
                });
                let sse = Event::default().event("status").data(data.to_string());
                return Some((Ok(sse), self));
            }
            if std::mem::take(&mut self.check_progress)
                && let Some(sse) = self.progress_event().await
            {
                return Some((Ok(sse), self));
            }
            self.pending = self.wait().await;
            self.check_progress = self.last.as_deref() == Some(TRANSCRIBING);
        }
    }

    /// The transcription's progress, when the session is transcribing and it changed since
    /// the last one sent. A failed read only skips this one (the next poll reads again).
    async fn progress_event(&mut self) -> Option<Event> {
        if self.last.as_deref() != Some(TRANSCRIBING) {
            return None;
        }
        let job = match self.jobs.progress_by_key(&self.progress_key).await {
            Ok(job) => job?,
            Err(e) => {
                tracing::debug!(session = %self.session, error = %e, "reading the transcription's progress failed");
                return None;
            }
        };
        let progress = job.progress.filter(|_| job.state == JobState::Running)?;
        if self.last_progress.as_ref() == Some(&progress) {
            return None;
        }
        let data = json!({
            "session_id": self.session, "status": TRANSCRIBING,
            "progress": progress.percent.get(), "note": progress.note,
        });
        self.last_progress = Some(progress);
        Some(Event::default().event("progress").data(data.to_string()))
    }

    /// The next change of this session: from the feed, or from the database on a re-check.
    async fn wait(&mut self) -> Option<SessionEvent> {
        let (company, id) = self.ids();
        let recheck = if self.last.as_deref() == Some(TRANSCRIBING) {
            PROGRESS_POLL
        } else {
            RECHECK
        };
        let received = tokio::time::timeout(recheck, async {
            loop {
                match self.updates.recv().await {
                    Ok(e) if e.session_id == id && e.company_id == company => return Ok(e),
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match received {
            Ok(Ok(event)) => return Some(event),
            // The feed is gone (the process is stopping): pace the database reads instead.
            Ok(Err(broadcast::error::RecvError::Closed)) => tokio::time::sleep(recheck).await,
            // Lagged behind, or the re-check is due: read the database.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => {}
        }
        let session = sessions::get(&self.db, &company, &id).await.ok().flatten();
        Some(match session {
            Some(s) => SessionEvent {
                company_id: company,
                session_id: id,
                status: s.status,
                error: s.error,
            },
            // Erased meanwhile: nothing more will happen to it.
            None => SessionEvent {
                company_id: company,
                session_id: id,
                status: "failed".into(),
                error: Some("the session was deleted".into()),
            },
        })
    }

    fn ids(&self) -> (String, String) {
        (self.company.clone(), self.session.clone())
    }
}
