//! `GET /api/sessions/{id}/events`: the session's status as Server-Sent Events — the current
//! status first, then every change (queued → transcribing → analyzing → ready | failed), and
//! the stream ends after a final status.
//!
//! Changes arrive through the process's [`voxline_domain::events::StatusFeed`] (Redis pub/sub
//! when `redis.url` is set, else Postgres LISTEN/NOTIFY, so workers in other processes reach
//! this stream; in-process on SQLite). A notification can be lost (a dropped connection, a slow
//! reader lagging behind), so the stream also re-reads the status every few seconds: the
//! database stays the truth.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast;
use voxline_domain::events::{SessionEvent, is_final};
use voxline_domain::{Db, sessions};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiPath;

/// How often a stream re-reads the status in case a notification was lost.
const RECHECK: Duration = Duration::from_secs(3);

/// Server-Sent Events of the session's status (`event: status`, data `{session_id, status, error}`).
#[utoipa::path(get, path = "/api/sessions/{id}/events", tag = "sessions", operation_id = "session_events",
    params(("id" = String, Path, description = "The session's id.")),
    responses((status = 200, description = "text/event-stream of status events; ends after ready or failed", content_type = "text/event-stream"),
              (status = 404, description = "No such session in the caller's company (`not_found`).")),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let company = caller.0.company_id;
    // Subscribe before reading the status, so a change between the two is not missed.
    let updates = state.feed().subscribe();
    let session = sessions::get(&state.db, &company, &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| crate::sessions::not_found(&id))?;
    let current = SessionEvent {
        company_id: company,
        session_id: id,
        status: session.status,
        error: session.error,
    };
    let stream = StatusStream {
        db: state.db.clone(),
        company: current.company_id.clone(),
        session: current.session_id.clone(),
        updates,
        last: None,
        pending: Some(current),
    };
    Ok(
        Sse::new(futures::stream::unfold(stream, StatusStream::next))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}

struct StatusStream {
    db: Db,
    company: String,
    session: String,
    updates: broadcast::Receiver<SessionEvent>,
    /// The last status sent (None before the first).
    last: Option<String>,
    /// A status to send next.
    pending: Option<SessionEvent>,
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
            self.pending = self.wait().await;
        }
    }

    /// The next change of this session: from the feed, or from the database on a re-check.
    async fn wait(&mut self) -> Option<SessionEvent> {
        let (company, id) = self.ids();
        let received = tokio::time::timeout(RECHECK, async {
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
            Ok(Err(broadcast::error::RecvError::Closed)) => tokio::time::sleep(RECHECK).await,
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
