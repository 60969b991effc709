//! Redis, when configured (`redis.url`): shared rate limits and live-update fan-out across API
//! processes. Here: the connection check that readiness uses.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Client(#[from] redis::RedisError),
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
}

/// Opens a connection to `url` and sends PING.
pub async fn ping(url: &str, timeout: Duration) -> Result<(), RedisError> {
    let check = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        debug_assert_eq!(pong, "PONG");
        Ok::<_, RedisError>(())
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| RedisError::Timeout(timeout))?
}
