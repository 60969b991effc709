//! Outgoing email: the SMTP server it goes through and how it presents itself.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmtpSettings {
    pub url: String,
    pub timeout_ms: u64,
    /// Consecutive failed sends that open the SMTP circuit breaker.
    pub circuit_threshold: u32,
    /// How long an open circuit keeps emails waiting (snoozed, attempts kept).
    pub circuit_cooldown_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailSettings {
    pub from: String,
    pub public_base_url: String,
}
