//! Handlers of the `maintenance` queue.

use voxline_domain::Db;
use voxline_domain::config::RetentionSettings;
use voxline_jobs::{ClaimedJob, HandlerError, Handlers, store};

/// `retention.prune` (daily cron): deletes finished jobs past their configured retention.
/// The elected leader also prunes every minute; this job makes the daily pass visible to
/// operators as a job of its own.
pub const RETENTION_PRUNE: &str = "retention.prune";

pub fn register(handlers: Handlers, db: Db, retention: RetentionSettings) -> Handlers {
    handlers.register(RETENTION_PRUNE, move |_job: ClaimedJob| {
        let db = db.clone();
        let retention = retention.clone();
        async move {
            let deleted = store::prune(&db, &retention)
                .await
                .map_err(|e| HandlerError::retry(e.to_string()))?;
            tracing::info!(deleted, "retention.prune finished");
            Ok(())
        }
    })
}
