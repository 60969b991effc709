//! [`SessionEventSource`] on SQLite: one process, so the database's own in-process channel,
//! which writers send to after their commit.

use super::{SessionEventSource, StatusFeed};
use crate::db::SqliteDb;

impl SessionEventSource for SqliteDb {
    fn status_feed(&self) -> StatusFeed {
        StatusFeed::fed_by(self.session_events.clone(), None)
    }
}
