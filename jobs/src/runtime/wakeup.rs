//! Wake-ups for idle fetchers: Postgres LISTEN/NOTIFY, or the in-process commit channel on
//! SQLite. Polling in the fetcher stays on as the fallback, and any sign that notifications
//! may have been lost (a reconnect, a lagging channel) wakes every queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use voxline_domain::Db;

/// One [`Notify`] per queue this process works.
#[derive(Clone, Default)]
pub struct Wakers {
    by_queue: Arc<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    pub fn new<'a>(queues: impl IntoIterator<Item = &'a str>) -> Self {
        let by_queue = queues
            .into_iter()
            .map(|q| (q.to_string(), Arc::new(Notify::new())))
            .collect();
        Wakers {
            by_queue: Arc::new(by_queue),
        }
    }

    pub fn get(&self, queue: &str) -> Option<Arc<Notify>> {
        self.by_queue.get(queue).cloned()
    }

    /// `notify_one` keeps a permit when the fetcher is busy, so a wake-up that arrives during
    /// a claim is not lost: the fetcher claims again right after.
    pub fn wake(&self, queue: &str) {
        if let Some(n) = self.by_queue.get(queue) {
            n.notify_one();
        }
    }

    pub fn wake_all(&self) {
        for n in self.by_queue.values() {
            n.notify_one();
        }
    }
}

/// Forwards database wake-ups to `wakers` until `stop` is cancelled.
pub async fn run(db: Db, listen_notify: bool, wakers: Wakers, stop: CancellationToken) {
    match db {
        Db::Postgres(pg) if listen_notify => {
            let mut backoff = Duration::from_millis(100);
            while !stop.is_cancelled() {
                match listen_pg(&pg.options, &pg.notify_channel, &wakers, &stop).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; polling until it is back");
                        wakers.wake_all();
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        Db::Postgres(_) => stop.cancelled().await,
        Db::Sqlite(lite) => forward_commits(lite.commits.subscribe(), &wakers, &stop).await,
    }
}

async fn listen_pg(
    options: &sqlx::postgres::PgConnectOptions,
    channel: &str,
    wakers: &Wakers,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let pool = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(channel).await?;
    // Anything enqueued before LISTEN took effect has no notification coming.
    wakers.wake_all();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            message = listener.try_recv() => match message? {
                Some(n) => wakers.wake(n.payload()),
                // The connection dropped and was re-established: notifications in between
                // are gone, so every queue looks again.
                None => wakers.wake_all(),
            },
        }
    }
}

async fn forward_commits(
    mut commits: broadcast::Receiver<Arc<str>>,
    wakers: &Wakers,
    stop: &CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            message = commits.recv() => match message {
                Ok(queue) => wakers.wake(&queue),
                Err(broadcast::error::RecvError::Lagged(_)) => wakers.wake_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
