//! [`SessionEventSource`] on Postgres: one subscription per process, to Redis when
//! `redis.url` is set, else a LISTEN on the deployment's session events channel.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::broadcast;

use super::{SessionEvent, SessionEventSource, StatusFeed, forward, subscribe};
use crate::db::PgDb;

impl SessionEventSource for PgDb {
    fn status_feed(&self) -> StatusFeed {
        let (sender, _) = broadcast::channel(1024);
        let task = match &self.fanout {
            Some(fanout) => tokio::spawn(subscribe(fanout.clone(), sender.clone())),
            None => tokio::spawn(listen(
                self.pool.clone(),
                self.events_channel.clone(),
                sender.clone(),
            )),
        };
        StatusFeed::fed_by(sender, Some(task))
    }
}

async fn listen(pool: PgPool, channel: String, sender: broadcast::Sender<SessionEvent>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(&channel).await {
                    tracing::warn!(error = %e, "LISTEN for session events failed; retrying");
                } else {
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(note)) => forward(note.payload().as_bytes(), &sender),
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
