//! Wake-ups for idle fetchers: Postgres LISTEN/NOTIFY, or the in-process commit channel on
//! SQLite. Polling in the fetcher stays on as the fallback, and any sign that notifications
//! may have been lost (a reconnect, a lagging channel) wakes every queue.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::store::JobStore;

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

/// Forwards the store's wake-ups to `wakers` until `stop` is cancelled.
pub async fn run(
    store: Arc<dyn JobStore>,
    listen_notify: bool,
    wakers: Wakers,
    stop: CancellationToken,
) {
    store.forward_wakeups(listen_notify, wakers, stop).await
}

/// Wakes the queues named on an in-process channel (SQLite's commits) until `stop`.
pub async fn forward_commits(
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
