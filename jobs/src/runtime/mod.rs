//! The worker runtime of one process: a fetch loop per queue, a shared acknowledger, a
//! heartbeat, database wake-ups, and graceful shutdown that hands unfinished work back.

mod acker;
mod attempt_span;
mod inflight;
mod queue;
pub mod wakeup;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use voxline_domain::{Db, Settings};

use crate::backoff::BackoffPolicy;
use crate::handler::Handlers;
use crate::model::Lease;
use crate::store::{self, JobStore};
use inflight::{Inflight, Phase};
use queue::QueueContext;
use wakeup::Wakers;

/// A unique name for this worker process, stored in `locked_by` on the jobs it holds.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Builds and starts the worker pools of one process.
pub struct Runner {
    db: Db,
    settings: Arc<Settings>,
    handlers: Handlers,
    queues: Vec<String>,
    worker: String,
}

impl Runner {
    pub fn new(db: Db, settings: Arc<Settings>, handlers: Handlers) -> Self {
        let queues = settings.queue_names();
        Runner {
            db,
            settings,
            handlers,
            queues,
            worker: worker_id(),
        }
    }

    /// Works only these queues (default: every configured queue).
    pub fn queues(mut self, queues: Vec<String>) -> Self {
        self.queues = queues;
        self
    }

    pub fn worker_name(mut self, worker: impl Into<String>) -> Self {
        self.worker = worker.into();
        self
    }

    pub fn start(self) -> RunnerHandle {
        let engine = &self.settings.engine;
        let stop_fetching = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let inflight = Inflight::default();
        let wakers = Wakers::new(self.queues.iter().map(String::as_str));
        let (acks, ack_rx) = acker::channel();
        let store = store::for_db(&self.db);
        let acked = Arc::new(tokio::sync::Notify::new());

        let acker = tokio::spawn(acker::run(
            store.clone(),
            self.handlers.dead_hooks().clone(),
            inflight.clone(),
            ack_rx,
            acked.clone(),
        ));
        let wakeup = tokio::spawn(wakeup::run(
            store.clone(),
            engine.listen_notify,
            wakers.clone(),
            stop_background.clone(),
        ));
        let heartbeat = tokio::spawn(heartbeat_loop(
            store.clone(),
            inflight.clone(),
            Duration::from_millis(engine.heartbeat_interval_ms),
            stop_background.clone(),
        ));

        let mut fetchers = Vec::new();
        for name in &self.queues {
            let settings = self.settings.queue(name);
            let Some(wake) = wakers.get(name) else {
                continue;
            };
            let ctx = Arc::new(QueueContext {
                store: store.clone(),
                queue: name.clone(),
                worker: self.worker.clone(),
                policy: BackoffPolicy::from_queue(&settings),
                held: Arc::new(Semaphore::new(settings.concurrency + settings.prefetch)),
                running: Arc::new(Semaphore::new(settings.concurrency)),
                settings,
                handlers: self.handlers.clone(),
                poll_interval: Duration::from_millis(engine.poll_interval_ms),
                wake,
                acks: acks.clone(),
                acked: acked.clone(),
                inflight: inflight.clone(),
                stop: stop_fetching.clone(),
            });
            fetchers.push(tokio::spawn(queue::fetch_loop(ctx)));
        }
        drop(acks);
        tracing::info!(worker = %self.worker, queues = ?self.queues, "worker pools started");

        RunnerHandle {
            store,
            worker: self.worker,
            grace: Duration::from_millis(engine.shutdown_grace_ms),
            stop_fetching,
            stop_background,
            inflight,
            fetchers,
            acker,
            background: vec![wakeup, heartbeat],
        }
    }
}

/// A running set of worker pools. [`RunnerHandle::shutdown`] stops it gracefully.
pub struct RunnerHandle {
    store: Arc<dyn JobStore>,
    worker: String,
    grace: Duration,
    stop_fetching: CancellationToken,
    stop_background: CancellationToken,
    inflight: Inflight,
    fetchers: Vec<JoinHandle<()>>,
    acker: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl RunnerHandle {
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Jobs this process holds right now (claimed and not yet finished).
    pub fn inflight(&self) -> usize {
        self.inflight.count()
    }

    /// Stops fetching, returns prefetched jobs to the queue at once, lets running jobs finish
    /// within the grace period, returns the rest (their attempt counts), and writes every
    /// outcome before returning.
    pub async fn shutdown(mut self) {
        self.stop_fetching.cancel();
        for fetcher in std::mem::take(&mut self.fetchers) {
            let _ = fetcher.await;
        }
        let waiting = self.inflight.drain(Phase::Waiting);
        self.release(waiting, false).await;

        let deadline = tokio::time::Instant::now() + self.grace;
        while self.inflight.working() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let interrupted = self.inflight.drain(Phase::Running);
        if !interrupted.is_empty() {
            tracing::warn!(
                jobs = interrupted.len(),
                "grace period over; returning running jobs to the queue"
            );
        }
        self.release(interrupted, true).await;

        // Every job task has ended or been aborted, so the acknowledger's senders are gone
        // once their tasks drop; it writes what it has and stops. While the database is
        // unreachable it keeps retrying; after the grace period the outcomes are given up
        // (their jobs are rescued and run again) so that shutdown ends.
        let acker_grace = self.grace.max(Duration::from_secs(5));
        if tokio::time::timeout(acker_grace, &mut self.acker)
            .await
            .is_err()
        {
            tracing::error!(
                jobs = self.inflight.count(),
                "could not write the last job outcomes before shutdown; those jobs will be rescued"
            );
            self.acker.abort();
        }
        self.stop_background.cancel();
        for task in std::mem::take(&mut self.background) {
            let _ = task.await;
        }
        tracing::info!(worker = %self.worker, "worker pools stopped");
    }

    async fn release(&self, jobs: Vec<(Lease, tokio::task::AbortHandle)>, started: bool) {
        if jobs.is_empty() {
            return;
        }
        let leases: Vec<Lease> = jobs
            .into_iter()
            .map(|(lease, handle)| {
                handle.abort();
                lease
            })
            .collect();
        if let Err(e) = self.store.release(&leases, started).await {
            tracing::error!(error = %e, jobs = leases.len(), "could not return jobs to the queue; they will be rescued");
        }
    }
}

/// Refreshes the heartbeat of exactly the attempts this process holds. A lease the database
/// no longer has (the job was rescued, and perhaps claimed again) aborts its handler: its
/// work belongs to another attempt now.
async fn heartbeat_loop(
    store: Arc<dyn JobStore>,
    inflight: Inflight,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let leases = inflight.leases();
        if leases.is_empty() {
            continue;
        }
        let held = match store.heartbeat(&leases).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                continue;
            }
        };
        let held: std::collections::HashSet<Lease> = held.into_iter().collect();
        for lease in leases.into_iter().filter(|l| !held.contains(l)) {
            // An attempt that finished meanwhile is simply forgotten; one still running is
            // aborted.
            if inflight.lose(lease) {
                tracing::warn!(job = %lease.job, lease = lease.token, "lease lost (the job was rescued); aborting its handler");
                metrics::counter!("voxline_leases_lost_total").increment(1);
            }
        }
    }
}
