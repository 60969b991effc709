//! Writes attempt outcomes in batches: whatever finished while the previous batch was being
//! written goes out in the next statement, so a busy pool acknowledges hundreds of jobs per
//! round trip and an idle one acknowledges each job at once.
//!
//! An outcome is never dropped: a batch that cannot be written is kept and retried, with
//! backoff, until the database answers. Memory stays bounded while it waits: the batch holds
//! at most [`MAX_BATCH`] outcomes and the channel behind it is bounded, so finished jobs wait
//! to hand over their outcome (and stay heart-beaten meanwhile) instead of piling up.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{Notify, mpsc};

use super::inflight::Inflight;
use crate::handler::DeadHooks;
use crate::model::Completion;
use crate::store::JobStore;

const MAX_BATCH: usize = 2_000;

pub fn channel() -> (mpsc::Sender<Completion>, mpsc::Receiver<Completion>) {
    mpsc::channel(MAX_BATCH * 4)
}

/// Runs until every sender is dropped and the last batch is written.
pub async fn run(
    store: Arc<dyn JobStore>,
    hooks: DeadHooks,
    inflight: Inflight,
    mut completions: mpsc::Receiver<Completion>,
    acked: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = completions.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match completions.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        write_until_done(store.as_ref(), &hooks, &batch).await;
        // Written, or refused because the lease was gone: either way no longer ours.
        inflight.acked(batch.iter().map(|c| c.lease));
        batch.clear();
        // Fetchers held back by a per-company limit may claim again now.
        acked.notify_waiters();
    }
}

/// Writes `batch`, retrying for as long as it takes (each wait at most two seconds).
async fn write_until_done(store: &dyn JobStore, hooks: &DeadHooks, batch: &[Completion]) {
    let mut waits = retry_waits();
    let mut failures = 0u32;
    loop {
        match store.complete(batch, hooks).await {
            Ok(states) => {
                if failures > 0 {
                    tracing::info!(
                        jobs = batch.len(),
                        failures,
                        "job outcomes written after the database came back"
                    );
                }
                for (id, state) in states {
                    tracing::trace!(job = %id, %state, "job attempt recorded");
                }
                return;
            }
            Err(e) => {
                failures += 1;
                let wait = waits.next().unwrap_or(Duration::from_secs(2));
                tracing::warn!(error = %e, jobs = batch.len(), failures, ?wait, "writing job outcomes failed; keeping them and retrying");
                metrics::counter!("voxline_ack_write_failures_total").increment(1);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn retry_waits() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
        .build()
}
