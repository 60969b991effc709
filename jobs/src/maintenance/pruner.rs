//! Retention of finished jobs: deletes in batches until it has caught up, within a time budget
//! per pass so rescue keeps its rhythm, and says whether it caught up so the next pass can come
//! at once instead of a minute later.

use std::time::Duration;

use voxline_domain::config::RetentionSettings;

use crate::error::JobError;
use crate::store::JobStore;

/// Jobs of one final state deleted per statement: large enough to keep up with thousands of
/// jobs a second, small enough that one statement holds its locks for milliseconds.
pub const BATCH: u32 = 5_000;

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub deleted: u64,
    /// No job past its retention was left when the pass ended.
    pub caught_up: bool,
}

/// Deletes finished jobs past their retention, batch after batch, until a batch comes back
/// empty or `budget` is spent.
pub async fn prune_until_caught_up(
    store: &dyn JobStore,
    retention: &RetentionSettings,
    budget: Duration,
) -> Result<Pruned, JobError> {
    let started = tokio::time::Instant::now();
    let mut deleted = 0;
    loop {
        let n = store.prune(retention, BATCH).await?;
        deleted += n;
        if n == 0 {
            return Ok(Pruned {
                deleted,
                caught_up: true,
            });
        }
        if started.elapsed() >= budget {
            return Ok(Pruned {
                deleted,
                caught_up: false,
            });
        }
    }
}
