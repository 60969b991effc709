//! Session status changes as a live feed, for `GET /api/sessions/{id}/events`.
//!
//! The writer of a status change publishes it with the change itself: on Postgres a
//! `pg_notify` in the same statement (delivered on commit, to every process that LISTENs — the
//! API and the workers can be different processes); on SQLite (one process) an in-process
//! broadcast after the commit. A reader subscribes through [`StatusFeed`], which on Postgres
//! keeps one LISTEN connection per process and fans it out. Notifications can be lost (a
//! dropped LISTEN connection), so readers also re-read the status now and then; the feed makes
//! changes prompt, the database stays the truth.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
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

impl StatusFeed {
    /// On SQLite, the database's own in-process channel; on Postgres, a LISTEN task on the
    /// session events channel (reconnecting after a lost connection) feeding a broadcast.
    pub fn start(db: &Db) -> Self {
        match db {
            Db::Sqlite(lite) => StatusFeed {
                sender: lite.session_events.clone(),
                _listener: None,
            },
            Db::Postgres(pg) => {
                let (sender, _) = broadcast::channel(1024);
                let task = tokio::spawn(listen(pg.clone(), sender.clone()));
                StatusFeed {
                    sender,
                    _listener: Some(std::sync::Arc::new(CancelOnDrop(task))),
                }
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.sender.subscribe()
    }
}

async fn listen(pg: std::sync::Arc<crate::db::PgDb>, sender: broadcast::Sender<SessionEvent>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&pg.pool).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(&pg.events_channel).await {
                    tracing::warn!(error = %e, "LISTEN for session events failed; retrying");
                } else {
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(note)) => {
                                match serde_json::from_str::<SessionEvent>(note.payload()) {
                                    Ok(event) => {
                                        // No receiver only means no stream is open right now.
                                        let _ = sender.send(event);
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "unreadable session event")
                                    }
                                }
                            }
                            // The connection was lost (and will be re-established by the next
                            // call); readers fall back on re-reading the status meanwhile.
                            Ok(None) => tracing::info!("session events connection lost"),
                            Err(e) => {
                                tracing::warn!(error = %e, "session events listener failed");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "session events listener cannot connect"),
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
