//! voxline's durable job engine.
//!
//! apalis 1.0's own Postgres/SQLite storages re-fetch failed jobs at once, keep exhausted jobs
//! as `Failed` and vacuum them, and apalis-cron fires on every replica; this crate replaces that
//! storage with its own (one interface over Postgres and SQLite, [`store`]) and adds what
//! voxline needs: stored backoff ([`backoff`]), a dead-letter state, heartbeats and rescue,
//! transactional and unique enqueue ([`client`]), LISTEN/NOTIFY wake-ups, per-queue
//! concurrency and time-outs ([`runtime`]), leader-run maintenance ([`maintenance`]) and
//! exactly-once cron ticks ([`cron`], on apalis-cron's schedule stream).

pub mod backoff;
pub mod circuit;
pub mod client;
pub mod cron;
pub mod error;
pub mod handler;
pub mod maintenance;
pub mod model;
pub mod payloads;
pub mod queues;
pub mod runtime;
pub mod state;
pub mod store;

pub use client::JobClient;
pub use error::JobError;
pub use handler::{DeadHooks, Handler, HandlerError, Handlers, OnDead};
pub use model::{
    ClaimedJob, Completion, DeadJob, Enqueued, Job, JobId, Lease, NewJob, Outcome, QueueStats,
};
pub use runtime::{Runner, RunnerHandle};
pub use state::JobState;
pub use store::{DbJobs, JobStore};
