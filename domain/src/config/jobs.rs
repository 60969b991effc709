//! The job engine: how its workers poll, heartbeat and are rescued, each queue's concurrency and
//! retry policy (`[queue_defaults]` with `[queues.NAME]` overrides), the cron entries that
//! enqueue jobs on a schedule, and how long finished jobs are kept.

use serde::{Deserialize, Serialize};

use super::Settings;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineSettings {
    pub poll_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub rescue_after_ms: u64,
    pub shutdown_grace_ms: u64,
    pub maintenance_interval_ms: u64,
    pub listen_notify: bool,
    /// Postgres: claims, outcomes and heartbeats commit without waiting for the WAL flush.
    pub async_commit: bool,
    /// Postgres: connections the worker runtime of one process may open.
    pub max_connections: u32,
}

/// Hours a job in a final state is kept; 0 keeps it forever.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionSettings {
    pub done_hours: u64,
    pub cancelled_hours: u64,
    pub dead_hours: u64,
    /// Days uploaded audio is kept before the daily `retention.prune` deletes it (the session,
    /// transcript and feedback stay); 0 keeps it forever.
    #[serde(default)]
    pub audio_days: u64,
    /// Hours a GDPR export bundle can be downloaded before it is deleted.
    #[serde(default = "default_export_hours")]
    pub export_hours: u64,
}

fn default_export_hours() -> u64 {
    24
}

/// Everything the engine needs to run one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueSettings {
    pub concurrency: usize,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub backoff_jitter: f64,
    pub prefetch: usize,
    /// Claim round-robin across the companies with jobs waiting, so that one company's
    /// backlog does not hold back the others'.
    #[serde(default)]
    pub round_robin: bool,
    /// Running jobs one company may have in this queue across every process; 0 is no limit.
    /// A limit implies round-robin claiming.
    #[serde(default)]
    pub per_company_concurrency: usize,
}

impl QueueSettings {
    /// Whether claims go company by company (round-robin, a per-company limit, or both).
    pub fn fair(&self) -> bool {
        self.round_robin || self.per_company_concurrency > 0
    }
}

/// A `[queues.NAME]` table: any field left out comes from `[queue_defaults]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueOverrides {
    pub concurrency: Option<usize>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_cap_ms: Option<u64>,
    pub backoff_jitter: Option<f64>,
    pub prefetch: Option<usize>,
    pub round_robin: Option<bool>,
    pub per_company_concurrency: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronEntry {
    pub schedule: String,
    pub queue: String,
    pub kind: String,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// Ticks missed while no process ran: none, the last one, or all of them.
    #[serde(default)]
    pub catch_up: CatchUp,
}

/// Which ticks of a cron entry that fell while no voxline process ran are enqueued at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Missed ticks are skipped.
    None,
    /// The latest missed tick runs once (a reconciliation or report covers the gap anyway).
    #[default]
    Last,
    /// Every missed tick runs, oldest first (at most [`CatchUp::MAX_TICKS`]).
    All,
}

impl CatchUp {
    /// The most missed ticks `all` enqueues: a schedule of every second down for a day must
    /// not flood the queue.
    pub const MAX_TICKS: usize = 1_000;
}

impl Settings {
    /// Settings for one queue: `[queue_defaults]` with the queue's own overrides applied.
    pub fn queue(&self, name: &str) -> QueueSettings {
        let d = &self.queue_defaults;
        match self.queues.get(name) {
            None => d.clone(),
            Some(o) => QueueSettings {
                concurrency: o.concurrency.unwrap_or(d.concurrency),
                timeout_ms: o.timeout_ms.unwrap_or(d.timeout_ms),
                max_attempts: o.max_attempts.unwrap_or(d.max_attempts),
                backoff_base_ms: o.backoff_base_ms.unwrap_or(d.backoff_base_ms),
                backoff_cap_ms: o.backoff_cap_ms.unwrap_or(d.backoff_cap_ms),
                backoff_jitter: o.backoff_jitter.unwrap_or(d.backoff_jitter),
                prefetch: o.prefetch.unwrap_or(d.prefetch),
                round_robin: o.round_robin.unwrap_or(d.round_robin),
                per_company_concurrency: o
                    .per_company_concurrency
                    .unwrap_or(d.per_company_concurrency),
            },
        }
    }

    /// Names of the queues configured under `[queues.*]`.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    #[test]
    fn queue_overrides_fall_back_to_the_defaults() {
        let s = Settings::from_toml_overrides(
            "[queue_defaults]\nbackoff_base_ms = 7\n[queues.email]\nconcurrency = 9",
        )
        .expect("valid");
        let email = s.queue("email");
        assert_eq!(email.concurrency, 9);
        assert_eq!(email.backoff_base_ms, 7);
        assert_eq!(s.queue("unknown"), s.queue_defaults);
    }
}
