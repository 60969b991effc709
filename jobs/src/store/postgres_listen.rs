//! Wake-ups on Postgres: LISTEN on the deployment's channel, on a connection of its own. A
//! lost connection wakes every queue (notifications in between are gone) and is re-made with
//! backoff; the fetchers poll meanwhile.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener};
use tokio_util::sync::CancellationToken;

use crate::runtime::wakeup::Wakers;

/// Forwards NOTIFY wake-ups on `channel` to `wakers` until `stop` is cancelled.
pub async fn listen(
    options: &PgConnectOptions,
    channel: &str,
    wakers: &Wakers,
    stop: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match listen_once(options, channel, wakers, stop).await {
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

async fn listen_once(
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
