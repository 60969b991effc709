//! One queue in one process: the fetch loop that claims jobs in batches as worker slots free
//! up, and the execution of each claimed job under the queue's time-out.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use voxline_domain::QueueSettings;

use super::attempt_span;
use super::inflight::{Inflight, Phase};
use crate::backoff::BackoffPolicy;
use crate::handler::{HandlerError, Handlers};
use crate::model::{ClaimedJob, Completion, Outcome};
use crate::progress::Progress;
use crate::store::JobStore;

/// Everything a queue's fetcher and its jobs share.
pub struct QueueContext {
    pub store: Arc<dyn JobStore>,
    pub queue: String,
    pub worker: String,
    pub settings: QueueSettings,
    pub policy: BackoffPolicy,
    pub handlers: Handlers,
    pub poll_interval: Duration,
    pub wake: Arc<Notify>,
    pub acks: mpsc::Sender<Completion>,
    /// Notified each time this process has written a batch of outcomes.
    pub acked: Arc<Notify>,
    pub inflight: Inflight,
    /// Cancelled when the process stops fetching.
    pub stop: CancellationToken,
    /// Claimed and not yet finished: concurrency + prefetch.
    pub held: Arc<Semaphore>,
    /// Running now: concurrency.
    pub running: Arc<Semaphore>,
}

impl QueueContext {
    fn capacity(&self) -> usize {
        self.settings.concurrency + self.settings.prefetch
    }
}

/// Claims and starts jobs until `ctx.stop` is cancelled.
pub async fn fetch_loop(ctx: Arc<QueueContext>) {
    let capacity = ctx.capacity();
    // Claiming one job per freed slot would cost a round trip per job; wait briefly for a
    // quarter of the slots so a busy queue claims in batches.
    let min_batch = (capacity / 4).max(1);
    let mut error_wait = Duration::from_millis(50);
    loop {
        if ctx.stop.is_cancelled() {
            return;
        }
        let mut free = ctx.held.available_permits();
        if free < min_batch {
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                permit = ctx.held.clone().acquire_many_owned(min_batch as u32) => drop(permit),
                _ = tokio::time::sleep(Duration::from_millis(2)), if free > 0 => {}
            }
            free = ctx.held.available_permits();
            if free == 0 {
                continue;
            }
        }
        // Registered before the claim, so an outcome written while it runs is not missed.
        let acked = ctx.acked.notified();
        tokio::pin!(acked);
        acked.as_mut().enable();
        let claimed = match claim(&ctx, free).await {
            Ok(claimed) => {
                error_wait = Duration::from_millis(50);
                claimed
            }
            Err(e) => {
                tracing::warn!(queue = %ctx.queue, error = %e, "claiming jobs failed; retrying");
                tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    _ = tokio::time::sleep(error_wait) => {}
                }
                error_wait = (error_wait * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let full = claimed.len() == free;
        for job in claimed {
            start_job(&ctx, job);
        }
        if full {
            continue;
        }
        let capped = ctx.settings.per_company_concurrency > 0;
        let wait = match ctx.store.next_due(&ctx.queue).await {
            Ok(Some(at)) => match (at - chrono::Utc::now()).to_std() {
                Ok(later) => later.min(ctx.poll_interval),
                // Due jobs left behind by a per-company limit wait for a running job of
                // theirs to finish: here (an outcome written) or elsewhere (the poll).
                Err(_) if capped => ctx.poll_interval,
                Err(_) => Duration::ZERO,
            },
            _ => ctx.poll_interval,
        };
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = ctx.wake.notified() => {}
            _ = &mut acked, if capped => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One claim of up to `free` jobs: company by company on a fair queue.
async fn claim(ctx: &QueueContext, free: usize) -> Result<Vec<ClaimedJob>, crate::error::JobError> {
    if ctx.settings.fair() {
        let cap = Some(ctx.settings.per_company_concurrency).filter(|c| *c > 0);
        ctx.store
            .claim_fair(&ctx.queue, &ctx.worker, free, cap)
            .await
    } else {
        ctx.store.claim(&ctx.queue, &ctx.worker, free).await
    }
}

fn start_job(ctx: &Arc<QueueContext>, job: ClaimedJob) {
    let Ok(held) = ctx.held.clone().try_acquire_owned() else {
        // Cannot happen (only this loop takes `held` permits and it claimed at most the free
        // ones); if it ever did, the job stays `running` and is rescued.
        tracing::error!(job = %job.id, "claimed more jobs than free slots");
        return;
    };
    let lease = job.lease();
    let task_ctx = ctx.clone();
    // Register before the task can run, so it always finds itself in the map.
    let mut inflight = ctx.inflight.lock();
    let handle = tokio::spawn(async move {
        let _held = held;
        run_claimed(task_ctx, job).await;
    });
    inflight
        .jobs
        .insert(lease, (Phase::Waiting, handle.abort_handle()));
}

async fn run_claimed(ctx: Arc<QueueContext>, job: ClaimedJob) {
    let _slot = tokio::select! {
        // Shutdown returns waiting jobs to the queue without running them.
        _ = ctx.stop.cancelled() => return,
        slot = ctx.running.clone().acquire_owned() => match slot {
            Ok(slot) => slot,
            Err(_) => return,
        },
    };
    let lease = job.lease();
    if !ctx.inflight.start(lease) {
        return;
    }
    let started = std::time::Instant::now();
    let span = attempt_span::start(&job);
    let outcome = execute(&ctx, job).instrument(span.clone()).await;
    attempt_span::finish(&span, &outcome);
    // The span ends here: waiting for the acknowledger is not part of the attempt.
    drop(span);
    let label = match &outcome {
        Outcome::Done => "done",
        Outcome::Retry { .. } => "retry",
        Outcome::Dead { .. } => "dead",
        Outcome::Snooze { .. } => "snooze",
    };
    metrics::histogram!("voxline_job_duration_seconds", "queue" => ctx.queue.clone(), "outcome" => label)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("voxline_job_attempts_total", "queue" => ctx.queue.clone(), "outcome" => label).increment(1);
    if ctx.inflight.finish(lease) {
        // The acker lives until every queue has stopped, so this send only fails if it died.
        if ctx.acks.send(Completion { lease, outcome }).await.is_err() {
            tracing::error!(job = %lease.job, "job outcome lost: acknowledger stopped; it will be rescued");
        }
    }
}

/// Runs one attempt and decides what it means for the job.
async fn execute(ctx: &QueueContext, mut job: ClaimedJob) -> Outcome {
    let attempt = job.attempt;
    job.progress = Progress::for_lease(ctx.store.clone(), job.lease());
    let Some(handler) = ctx.handlers.get(&job.kind) else {
        return Outcome::Dead {
            error: format!(
                "no handler for job kind \"{}\" on queue \"{}\"",
                job.kind, ctx.queue
            ),
        };
    };
    let timeout = Duration::from_millis(job.timeout_ms.unwrap_or(ctx.settings.timeout_ms));
    let run = AssertUnwindSafe(handler.run(job)).catch_unwind();
    let failure = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(Ok(()))) => return Outcome::Done,
        Ok(Ok(Err(e))) => e,
        Ok(Err(panic)) => {
            HandlerError::retry(format!("handler panicked: {}", panic_message(&panic)))
        }
        Err(_) => HandlerError::retry(format!("timed out after {} ms", timeout.as_millis())),
    };
    match failure {
        HandlerError::Permanent(error) => Outcome::Dead { error },
        HandlerError::Snooze { reason, after } => {
            tracing::debug!(queue = %ctx.queue, %reason, ?after, "job snoozed");
            Outcome::Snooze {
                delay: after.max(Duration::from_millis(1)),
            }
        }
        HandlerError::Retryable { message, after } => {
            let delay = match after {
                Some(wanted) => ctx.policy.requested(wanted),
                None => ctx.policy.delay(attempt, &mut rand::rng()),
            };
            Outcome::Retry {
                error: message,
                delay,
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_string())
}
