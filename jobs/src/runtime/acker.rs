//! Writes attempt outcomes in batches: whatever finished while the previous batch was being
//! written goes out in the next statement, so a busy pool acknowledges hundreds of jobs per
//! round trip and an idle one acknowledges each job at once.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;
use voxline_domain::Db;

use crate::model::Completion;
use crate::store;

const MAX_BATCH: usize = 2_000;

pub fn channel() -> (mpsc::Sender<Completion>, mpsc::Receiver<Completion>) {
    mpsc::channel(MAX_BATCH * 4)
}

/// Runs until every sender is dropped and the last batch is written.
pub async fn run(db: Db, worker: String, mut completions: mpsc::Receiver<Completion>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = completions.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match completions.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        // A database blip must not lose outcomes; if it outlasts the retries, the jobs stay
        // `running` under this worker and are rescued (run again) later: at-least-once.
        let written = (|| store::complete(&db, &worker, &batch))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(8),
            )
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "writing job outcomes failed; retrying"))
            .await;
        match written {
            Ok(states) => {
                for (id, state) in states {
                    tracing::trace!(job = %id, %state, "job attempt recorded");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "could not record job outcomes; they will be rescued")
            }
        }
        batch.clear();
    }
}
