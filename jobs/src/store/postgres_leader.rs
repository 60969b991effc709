//! Leader election for maintenance on Postgres: the process holding a session-level advisory
//! lock (on a connection of its own) is the leader; when that connection dies the server drops
//! the lock and another process takes over.

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use super::LeaderElection;

pub struct PgLeadership {
    options: PgConnectOptions,
    key: i64,
    conn: Option<PgConnection>,
    leading: bool,
}

/// The advisory-lock key of a deployment's maintenance leader: one per schema, so parallel
/// test deployments each elect their own leader. It must be the same in every process and
/// every build (std's `DefaultHasher` is not promised to be), so it is FNV-1a (64-bit) of a
/// fixed prefix and the schema name.
pub fn lock_key(schema: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in "voxline-maintenance:".bytes().chain(schema.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash as i64
}

impl PgLeadership {
    pub fn new(options: PgConnectOptions, schema: &str) -> Self {
        PgLeadership {
            options,
            key: lock_key(schema),
            conn: None,
            leading: false,
        }
    }

    /// Whether this process leads now; tries to become leader when it does not.
    async fn check_now(&mut self) -> bool {
        let options = &self.options;
        if self.leading {
            // Still ours as long as the connection that holds the lock is alive.
            if let Some(conn) = self.conn.as_mut()
                && conn.ping().await.is_ok()
            {
                return true;
            }
            tracing::warn!("lost the maintenance leader connection");
            self.leading = false;
            self.conn = None;
        }
        if self.conn.is_none() {
            match options.connect().await {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot connect");
                    return false;
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(conn)
            .await
        {
            Ok(true) => {
                tracing::info!("became the maintenance leader");
                self.leading = true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "leader election query failed");
                self.conn = None;
            }
        }
        self.leading
    }
}

impl LeaderElection for PgLeadership {
    fn check(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(self.check_now())
    }
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn the_lock_key_is_fixed_for_a_schema_and_differs_between_schemas() {
        // Pinned: a build that computed another key would elect a second leader beside the
        // processes of an older build during a rolling deploy.
        assert_eq!(lock_key(""), 0xdf56_c2ed_0ace_4848_u64 as i64);
        assert_ne!(lock_key("t_1"), lock_key("t_2"));
        assert_eq!(lock_key("t_1"), lock_key("t_1"));
    }
}
