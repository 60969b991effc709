//! Leader election for maintenance: on Postgres, the process holding a session-level advisory
//! lock (on a connection of its own) is the leader; when that connection dies the server drops
//! the lock and another process takes over. SQLite runs in one process, which always leads.

use std::hash::{DefaultHasher, Hash, Hasher};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use voxline_domain::Db;

pub struct Leadership {
    options: Option<PgConnectOptions>,
    key: i64,
    conn: Option<PgConnection>,
    leading: bool,
}

impl Leadership {
    pub fn new(db: &Db) -> Self {
        match db {
            Db::Postgres(pg) => {
                // One lock per schema, so parallel test deployments each elect their own leader.
                let mut hasher = DefaultHasher::new();
                ("voxline-maintenance", &pg.schema).hash(&mut hasher);
                Leadership {
                    options: Some(pg.options.clone()),
                    key: hasher.finish() as i64,
                    conn: None,
                    leading: false,
                }
            }
            Db::Sqlite(_) => Leadership {
                options: None,
                key: 0,
                conn: None,
                leading: true,
            },
        }
    }

    /// Whether this process leads now; tries to become leader when it does not.
    pub async fn check(&mut self) -> bool {
        let Some(options) = &self.options else {
            return true;
        };
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
