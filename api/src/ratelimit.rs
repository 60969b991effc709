//! Rate limits on intake and webhooks, per profile and per client IP (`[rate_limits]`).
//!
//! The algorithm is GCRA (a token bucket without a refill task): `limit` requests per minute
//! with bursts of up to `limit`. In one process it is governor's keyed limiter; with
//! `redis.url` set, the same algorithm runs as one Lua script in Redis so every API process
//! spends one shared budget per key (Redis's own clock, so process clocks do not matter). If
//! Redis cannot be reached, the process falls back to its own limiter rather than refusing
//! traffic: a limit is protection, not a reason for an outage.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::OnceCell;
use voxline_domain::Settings;

use crate::AppState;
use crate::error::ApiError;

/// What is being limited, and by which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    IntakePerProfile,
    IntakePerIp,
    WebhooksPerIp,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::IntakePerProfile => "intake_per_profile",
            Rule::IntakePerIp => "intake_per_ip",
            Rule::WebhooksPerIp => "webhooks_per_ip",
        }
    }

    fn limit(self, settings: &Settings) -> u32 {
        let limits = &settings.rate_limits;
        match self {
            Rule::IntakePerProfile => limits.intake_per_profile,
            Rule::IntakePerIp => limits.intake_per_ip,
            Rule::WebhooksPerIp => limits.webhooks_per_ip,
        }
    }
}

/// GCRA in Redis: KEYS[1] holds the theoretical arrival time (ms). ARGV: emission interval
/// (ms per request), burst. Returns 0 when allowed, else the ms to wait.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return allow_at - now
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return 0
"#;

pub struct RateLimits {
    settings: Arc<Settings>,
    local: Vec<(Rule, DefaultKeyedRateLimiter<String>)>,
    redis: OnceCell<Option<redis::aio::ConnectionManager>>,
    script: redis::Script,
    /// Redis keys are namespaced per deployment (the Postgres schema), like NOTIFY channels.
    prefix: String,
}

impl RateLimits {
    pub fn new(settings: Arc<Settings>) -> Self {
        let local = [
            Rule::IntakePerProfile,
            Rule::IntakePerIp,
            Rule::WebhooksPerIp,
        ]
        .into_iter()
        .filter_map(|rule| {
            let limit = NonZeroU32::new(rule.limit(&settings))?;
            Some((rule, governor::RateLimiter::keyed(Quota::per_minute(limit))))
        })
        .collect();
        let prefix = format!("voxline:{}:rl", settings.database.schema);
        RateLimits {
            settings,
            local,
            redis: OnceCell::new(),
            script: redis::Script::new(GCRA_LUA),
            prefix,
        }
    }

    /// The intake budgets a new session spends (a submission, or a role-play that becomes
    /// one): the caller's profile's, then its client address's.
    pub async fn check_intake(
        &self,
        claims: &crate::auth::Claims,
        client_ip: &str,
    ) -> Result<(), ApiError> {
        let profile_key = format!("{}/{}", claims.company_id, claims.sub);
        self.check(Rule::IntakePerProfile, &profile_key).await?;
        self.check(Rule::IntakePerIp, client_ip).await
    }

    /// Spends one request of `key`'s budget under `rule`, or answers 429 with `Retry-After`.
    pub async fn check(&self, rule: Rule, key: &str) -> Result<(), ApiError> {
        let limit = rule.limit(&self.settings);
        if limit == 0 {
            return Ok(());
        }
        let wait = match self.shared(rule, key, limit).await {
            Some(wait) => wait,
            None => self.local_wait(rule, key),
        };
        match wait {
            None => Ok(()),
            Some(wait) => {
                metrics::counter!("voxline_rate_limited_total", "rule" => rule.name()).increment(1);
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "rate limit {} ({limit} per minute) reached; retry in {secs} s",
                        rule.name()
                    ),
                )
                .field(rule.name())
                .retry_after(secs))
            }
        }
    }

    fn local_wait(&self, rule: Rule, key: &str) -> Option<Duration> {
        let (_, limiter) = self.local.iter().find(|(r, _)| *r == rule)?;
        if limiter.len() > 100_000 {
            // Keys that are back to a full budget carry no information; forget them.
            limiter.retain_recent();
        }
        limiter
            .check_key(&key.to_string())
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The Redis verdict: `Some(None)` allowed, `Some(Some(wait))` refused, `None` when there
    /// is no Redis (configured or reachable).
    async fn shared(&self, rule: Rule, key: &str, limit: u32) -> Option<Option<Duration>> {
        let conn = self
            .redis
            .get_or_init(|| async {
                let url = &self.settings.redis.url;
                if url.is_empty() {
                    return None;
                }
                let client = redis::Client::open(url.as_str())
                    .inspect_err(|e| tracing::warn!(error = %e, "rate limits: bad redis.url"))
                    .ok()?;
                redis::aio::ConnectionManager::new(client)
                    .await
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "rate limits: Redis unreachable; limiting per process")
                    })
                    .ok()
            })
            .await
            .clone()?;
        let mut conn = conn;
        let interval_ms = 60_000.0 / f64::from(limit);
        let redis_key = format!("{}:{}:{key}", self.prefix, rule.name());
        let answer: Result<f64, _> = self
            .script
            .key(redis_key)
            .arg(interval_ms)
            .arg(limit)
            .invoke_async(&mut conn)
            .await;
        match answer {
            Ok(wait_ms) if wait_ms <= 0.0 => Some(None),
            Ok(wait_ms) => Some(Some(Duration::from_millis(wait_ms.ceil() as u64))),
            Err(e) => {
                tracing::warn!(error = %e, "rate limits: Redis call failed; limiting per process");
                None
            }
        }
    }
}

/// The client's address for per-IP limits: the connection's peer, or with
/// `http.trusted_proxies` the nearest address no trusted proxy added to `X-Forwarded-For`
/// (see [`voxline_domain::config::TrustedProxies::client`]).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
        else {
            return Ok(ClientIp("unknown".into()));
        };
        // Several X-Forwarded-For headers are one list, in order.
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
        Ok(ClientIp(
            state
                .settings
                .http
                .trusted_proxies
                .client(peer, forwarded.as_deref()),
        ))
    }
}
