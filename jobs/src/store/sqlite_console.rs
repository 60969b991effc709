//! The operators' console on SQLite ([`super::console_impl`] writes it once for both
//! databases): search by a case-insensitive `LIKE` scan, times in microseconds, wake-ups
//! through this process's channel.

use voxline_domain::db::SqliteDb;

use super::console::Dialect;
use super::console_impl::impl_console;
use super::sqlite::SqliteStore;
use crate::error::JobError;

const DIALECT: Dialect = Dialect {
    placeholder: |n| format!("${n}"),
    company: |p| format!("tenant_key = {p}"),
    search: |p| format!("(kind || ' ' || errors || ' ' || payload) LIKE {p} ESCAPE '\\'"),
    micros: |p| p.to_string(),
    search_arg: |text| {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    },
    lock: "",
};

/// Wakes this process's fetchers of `queues` (SQLite serves one process).
async fn wake(db: &SqliteDb, queues: Vec<String>) -> Result<(), JobError> {
    for queue in queues {
        let _ = db.commits.send(queue.into());
    }
    Ok(())
}

impl_console!(SqliteStore, sqlx::Sqlite, DIALECT, wake);
