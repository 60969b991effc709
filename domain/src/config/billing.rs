//! Billing: the Stripe account voxline syncs with, how quotas and usage reports work, and the
//! plans a company can be on.

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use crate::Settings;

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
}
