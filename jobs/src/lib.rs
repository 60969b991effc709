//! voxline's durable job engine.
//!
//! voxline runs its own runtime rather than apalis's (see docs/adr/0001-own-job-runtime.md):
//! one storage interface over Postgres and SQLite ([`store`]), stored backoff ([`backoff`]), a
//! dead-letter state with on-dead hooks, leases that fence every attempt, heartbeats and
//! rescue, transactional and unique enqueue ([`client`]), LISTEN/NOTIFY wake-ups, per-queue
//! concurrency and time-outs ([`runtime`]), leader-run maintenance ([`maintenance`]) and
//! exactly-once cron ticks ([`cron`], on apalis-cron's schedule stream).

pub mod args;
pub mod backoff;
pub mod circuit;
pub mod client;
pub mod cron;
pub mod enqueue_counts;
pub mod error;
pub mod handler;
pub mod maintenance;
pub mod model;
pub mod payloads;
pub mod progress;
pub mod queues;
pub mod runtime;
pub mod state;
pub mod store;

pub use args::{JobArgs, ToJob};
/// For implementing [`OnDead`] outside this crate.
pub use async_trait::async_trait;
pub use client::JobClient;
pub use error::JobError;
pub use handler::{DeadHooks, Handler, HandlerError, Handlers, OnDead};
pub use model::{
    ClaimedJob, Completion, DeadJob, Enqueued, Job, JobId, Lease, NewJob, Outcome, QueueStats,
};
pub use progress::{JobProgress, Percent, Progress, ProgressWrite};
pub use runtime::{Runner, RunnerHandle};
pub use state::JobState;
pub use store::{DbJobs, JobStore};
