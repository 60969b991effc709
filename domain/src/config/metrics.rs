//! Where the Prometheus metrics of a process without the HTTP API are served.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsSettings {
    /// Where a process without the HTTP API (`voxline worker`) serves its own `/metrics`;
    /// empty = not served.
    pub worker_addr: String,
}
