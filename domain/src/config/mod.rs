//! Layered configuration: `config/default.toml` (compiled in), then the file named by
//! `VOXLINE_CONFIG`, then `VOXLINE_*` environment variables, into typed [`Settings`].
//!
//! The environment names in [`FIXED_ENV_KEYS`] are part of voxline's interface (scripts and
//! deployments use them); any other key can be set as `VOXLINE_SECTION__KEY`.
//!
//! [`Settings`] lists every section here; each section's types live in the file of its area
//! (`http.rs`, `database.rs`, `jobs.rs`, …), loading in `load.rs` and the checks a loaded
//! configuration must pass in `validate.rs`.

mod analysis;
mod auth;
mod billing;
mod database;
mod email;
mod http;
mod jobs;
mod load;
mod metrics;
mod providers;
mod telemetry;
mod transcription;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use analysis::{AnalysisSettings, KindTargets};
pub use auth::AuthSettings;
pub use billing::{BillingSettings, Plan, SUBSCRIPTION_STATUSES, StripeSettings};
pub use database::{DatabaseSettings, UrlSetting};
pub use email::{EmailSettings, SmtpSettings};
pub use http::{HttpSettings, RateLimitSettings, TrustedProxies};
pub use jobs::{
    CatchUp, CronEntry, EngineSettings, QueueOverrides, QueueSettings, RetentionSettings,
};
pub use load::{DEFAULT_TOML, FIXED_ENV_KEYS};
pub use metrics::MetricsSettings;
pub use providers::{ElevenLabsSettings, OpenAiSettings};
pub use telemetry::TelemetrySettings;
pub use transcription::{
    ModelSourceSetting, TranscriptionProvider, TranscriptionSettings, UnsupportedModelSource,
    UploadSettings,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be read or has the wrong type; figment names the key.
    #[error("{0}")]
    Parse(String),
    /// A value was read but is not acceptable.
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Every section of the configuration, as `config/default.toml` lays them out: a new section
/// is a field here and a file of its own beside this one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: UrlSetting,
    pub auth: AuthSettings,
    pub openai: OpenAiSettings,
    pub transcription: TranscriptionSettings,
    pub uploads: UploadSettings,
    #[serde(default)]
    pub analysis: AnalysisSettings,
    pub elevenlabs: ElevenLabsSettings,
    pub rate_limits: RateLimitSettings,
    pub stripe: StripeSettings,
    pub billing: BillingSettings,
    /// Plans by name: what a company may use, and which Stripe prices put it on the plan.
    #[serde(default)]
    pub plans: BTreeMap<String, Plan>,
    pub smtp: SmtpSettings,
    pub email: EmailSettings,
    pub engine: EngineSettings,
    pub metrics: MetricsSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    pub retention: RetentionSettings,
    pub queue_defaults: QueueSettings,
    #[serde(default)]
    pub queues: BTreeMap<String, QueueOverrides>,
    #[serde(default)]
    pub cron: BTreeMap<String, CronEntry>,
}
