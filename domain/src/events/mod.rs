//! Session status changes as a live feed, for `GET /api/sessions/{id}/events`.
//!
//! The writer of a status change publishes it with the change itself: on Postgres a
//! `pg_notify` in the same statement (delivered on commit, to every process that LISTENs — the
//! API and the workers can be different processes), and, when `redis.url` is set, a Redis
//! PUBLISH right after the commit ([`RedisFanout`]); on SQLite (one process) an in-process
//! broadcast after the commit. A reader subscribes through [`StatusFeed`], which on Postgres
//! keeps one subscription per process — to Redis when it is configured, else a LISTEN
//! connection — and fans it out. Notifications can be lost (a dropped connection, a Redis
//! outage), so readers also re-read the status now and then; the feed makes changes prompt,
//! the database stays the truth.

mod postgres;
mod sqlite;

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, broadcast};
use tokio::task::JoinHandle;
use tokio_util_free::CancelOnDrop;

use crate::Db;

/// One session's new status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub company_id: String,
    pub session_id: String,
    pub status: String,
    /// Why the session failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SessionEvent {
    /// A status the pipeline never leaves.
    pub fn is_final(&self) -> bool {
        is_final(&self.status)
    }

    /// The event as sent on the wire (NOTIFY payload or Redis message).
    pub fn payload(&self) -> String {
        // NOTIFY payloads are limited to 8000 bytes; a failure reason is cut well below that.
        let mut event = self.clone();
        if let Some(error) = &mut event.error
            && error.len() > 2000
        {
            let mut cut = 2000;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        serde_json::to_string(&event).unwrap_or_default()
    }
}

pub fn is_final(status: &str) -> bool {
    matches!(status, "ready" | "failed")
}

/// The process's subscription point for session events.
#[derive(Clone)]
pub struct StatusFeed {
    sender: broadcast::Sender<SessionEvent>,
    _listener: Option<std::sync::Arc<CancelOnDrop>>,
}

/// Where a database handle's session events come from (`db.session_events()`): implemented
/// for Postgres (`postgres.rs`: NOTIFY, or Redis when configured) and SQLite (`sqlite.rs`: the
/// process's own channel).
pub trait SessionEventSource: Send + Sync {
    /// A new subscription point (see [`StatusFeed::start`]).
    fn status_feed(&self) -> StatusFeed;
}

impl StatusFeed {
    /// On SQLite, the database's own in-process channel; on Postgres, a task feeding a
    /// broadcast from the Redis channel when `redis.url` is set, else from a LISTEN on the
    /// session events channel (either reconnecting after a lost connection).
    pub fn start(db: &Db) -> Self {
        db.session_events().status_feed()
    }

    /// A feed of `sender`, kept fed by `listener` (a task ended when the last clone goes).
    fn fed_by(sender: broadcast::Sender<SessionEvent>, listener: Option<JoinHandle<()>>) -> Self {
        StatusFeed {
            sender,
            _listener: listener.map(|task| std::sync::Arc::new(CancelOnDrop(task))),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.sender.subscribe()
    }
}

/// Hands one received payload to the process's streams.
fn forward(payload: &[u8], sender: &broadcast::Sender<SessionEvent>) {
    match serde_json::from_slice::<SessionEvent>(payload) {
        // No receiver only means no stream is open right now.
        Ok(event) => {
            let _ = sender.send(event);
        }
        Err(e) => tracing::warn!(error = %e, "unreadable session event"),
    }
}

/// How long a writer waits for Redis before giving up on one publication (the readers'
/// re-read covers it): a Redis outage must not hold up the pipeline.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// Live-update fan-out through Redis (`redis.url` set): writers PUBLISH each status change on
/// the deployment's channel after its commit, and each API process SUBSCRIBEs once instead of
/// holding a Postgres LISTEN connection of its own (which a transaction-pooling proxy in front
/// of Postgres would not carry either). The channel is the NOTIFY channel's name, one per
/// schema, so deployments sharing a Redis do not hear each other.
pub struct RedisFanout {
    client: redis::Client,
    channel: String,
    publisher: OnceCell<redis::aio::ConnectionManager>,
}

impl std::fmt::Debug for RedisFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the URL, which may carry a password.
        f.debug_struct("RedisFanout")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisFanout {
    pub fn new(url: &str, channel: String) -> Result<Self, redis::RedisError> {
        Ok(RedisFanout {
            client: redis::Client::open(url)?,
            channel,
            publisher: OnceCell::new(),
        })
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Publishes a committed change. Best effort: a failure is logged, and the streams learn
    /// the status from their next re-read instead.
    pub async fn publish(&self, event: &SessionEvent) {
        let payload = event.payload();
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            let connection = self
                .publisher
                .get_or_try_init(|| redis::aio::ConnectionManager::new(self.client.clone()))
                .await?;
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(&payload)
                .query_async::<i64>(&mut connection.clone())
                .await
        })
        .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "publishing a session event to redis failed"),
            Err(_) => tracing::warn!("publishing a session event to redis timed out"),
        }
    }
}

async fn subscribe(fanout: std::sync::Arc<RedisFanout>, sender: broadcast::Sender<SessionEvent>) {
    loop {
        match fanout.client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&fanout.channel).await {
                Ok(()) => {
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        forward(message.get_payload_bytes(), &sender);
                    }
                    // Readers fall back on re-reading the status until it is back.
                    tracing::info!("session events subscription to redis lost");
                }
                Err(e) => tracing::warn!(error = %e, "SUBSCRIBE for session events failed"),
            },
            Err(e) => tracing::warn!(error = %e, "session events cannot connect to redis"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

mod tokio_util_free {
    /// Aborts the task when the last [`super::StatusFeed`] clone goes.
    pub struct CancelOnDrop(pub tokio::task::JoinHandle<()>);

    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
}
