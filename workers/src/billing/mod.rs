//! The `billing` queue: Stripe events applied to the local copy (`billing.stripe_event`), the
//! hourly reconciliation against Stripe's own list (`billing.reconcile`, also `voxline billing
//! reconcile`) and the hourly metered-usage report (`usage.report`).
//!
//! Stripe is the source of truth for money; every job here is idempotent (a stored event is
//! applied once, a subscription only moves forward in Stripe's time, a usage window is
//! reported once), because the engine runs a job at least once.

pub mod events;
pub mod reconcile;
pub mod stripe;
pub mod usage;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::DateTime;
use serde::Deserialize;
use serde_json::Value;
use voxline_domain::billing::{
    self, RECONCILE_JOB, StripeEventJob, SubscriptionState, USAGE_REPORT_JOB,
};
use voxline_domain::{Db, Settings};
use voxline_jobs::{ClaimedJob, HandlerError, Handlers, JobClient};

use self::stripe::StripeApi;

/// A subscription as Stripe describes it (in an event or from the API), before voxline maps
/// its prices to a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeSubscription {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    /// Each item's price id and lookup key.
    pub prices: Vec<(String, Option<String>)>,
    pub current_period_end: Option<i64>,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<i64>,
    /// The `company_id` in the subscription's metadata (set at checkout), if any.
    pub company_hint: Option<String>,
}

/// A Stripe id where the API may also expand the object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum IdOrObject {
    Id(String),
    Object { id: String },
}

impl IdOrObject {
    pub(crate) fn id(&self) -> &str {
        match self {
            IdOrObject::Id(id) | IdOrObject::Object { id } => id,
        }
    }
}

/// The `company_id` of a metadata object; metadata values are strings, anything else is no hint.
pub(crate) fn company_in(metadata: Option<&HashMap<String, Value>>) -> Option<String> {
    metadata?
        .get("company_id")?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl StripeSubscription {
    /// Reads the fields voxline needs from an event's `data.object`, in any API version: the
    /// period end moved from the subscription to its items in 2025-03-31, so both are read.
    pub fn from_json(object: &Value) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Price {
            id: String,
            #[serde(default)]
            lookup_key: Option<String>,
        }
        #[derive(Deserialize)]
        struct Item {
            #[serde(default)]
            price: Option<Price>,
            #[serde(default)]
            current_period_end: Option<i64>,
        }
        #[derive(Deserialize)]
        struct Items {
            #[serde(default)]
            data: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Raw {
            id: String,
            customer: IdOrObject,
            status: String,
            #[serde(default)]
            items: Option<Items>,
            #[serde(default)]
            current_period_end: Option<i64>,
            #[serde(default)]
            trial_end: Option<i64>,
            #[serde(default)]
            cancel_at_period_end: bool,
            #[serde(default)]
            canceled_at: Option<i64>,
            #[serde(default)]
            metadata: Option<HashMap<String, Value>>,
        }
        let raw = Raw::deserialize(object)?;
        let items = raw.items.map(|i| i.data).unwrap_or_default();
        let item_end = items.iter().filter_map(|i| i.current_period_end).max();
        Ok(StripeSubscription {
            id: raw.id,
            customer_id: raw.customer.id().to_string(),
            status: raw.status,
            prices: items
                .into_iter()
                .filter_map(|i| i.price)
                .map(|p| (p.id, p.lookup_key))
                .collect(),
            current_period_end: item_end.or(raw.current_period_end),
            trial_end: raw.trial_end,
            cancel_at_period_end: raw.cancel_at_period_end,
            canceled_at: raw.canceled_at,
            company_hint: company_in(raw.metadata.as_ref()),
        })
    }

    /// From async-stripe's typed subscription (the reconciliation's list).
    pub fn from_api(s: &stripe_shared::Subscription) -> Self {
        let items = &s.items.data;
        StripeSubscription {
            id: s.id.to_string(),
            customer_id: s.customer.id().to_string(),
            status: s.status.as_str().to_string(),
            prices: items
                .iter()
                .map(|i| (i.price.id.to_string(), i.price.lookup_key.clone()))
                .collect(),
            current_period_end: items.iter().map(|i| i.current_period_end).max(),
            trial_end: s.trial_end,
            cancel_at_period_end: s.cancel_at_period_end,
            canceled_at: s.canceled_at,
            company_hint: s
                .metadata
                .get("company_id")
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
        }
    }

    /// In voxline's terms: the plan is the one listing one of its prices (id or lookup key).
    pub fn state(&self, settings: &Settings) -> SubscriptionState {
        let names: Vec<&str> = self
            .prices
            .iter()
            .flat_map(|(id, key)| std::iter::once(id.as_str()).chain(key.as_deref()))
            .collect();
        let time = |secs: Option<i64>| secs.and_then(|s| DateTime::from_timestamp(s, 0));
        SubscriptionState {
            id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            status: self.status.clone(),
            plan: billing::plan_for_prices(settings, &names),
            price_id: self.prices.first().map(|(id, _)| id.clone()),
            current_period_end: time(self.current_period_end),
            trial_end: time(self.trial_end),
            cancel_at_period_end: self.cancel_at_period_end,
            canceled_at: time(self.canceled_at),
        }
    }
}

/// The billing worker: one per process, sharing one Stripe adapter (and so one breaker).
pub struct BillingWorker {
    pub(crate) db: Db,
    pub(crate) settings: Arc<Settings>,
    pub(crate) jobs: JobClient,
    pub(crate) stripe: Option<Arc<StripeApi>>,
}

impl BillingWorker {
    pub fn new(db: Db, settings: Arc<Settings>, jobs: JobClient) -> Result<Self, String> {
        let stripe = StripeApi::from_settings(&settings.stripe).map_err(|e| e.to_string())?;
        Ok(BillingWorker {
            db,
            settings,
            jobs,
            stripe,
        })
    }

    pub fn register(self, handlers: Handlers) -> Handlers {
        let worker = Arc::new(self);
        let events = worker.clone();
        let reconciler = worker.clone();
        handlers
            .add_worker(move |_job: ClaimedJob, task: StripeEventJob| {
                let worker = events.clone();
                async move { worker.apply_event(task).await }
            })
            .register(RECONCILE_JOB, move |job: ClaimedJob| {
                let worker = reconciler.clone();
                async move { worker.reconcile_job(job).await }
            })
            .register(USAGE_REPORT_JOB, move |job: ClaimedJob| {
                let worker = worker.clone();
                async move { worker.usage_job(job).await }
            })
    }

    async fn reconcile_job(&self, job: ClaimedJob) -> Result<(), HandlerError> {
        let Some(api) = &self.stripe else {
            tracing::info!(
                job = %job.id,
                "Stripe is not configured (stripe.secret_key); nothing to reconcile"
            );
            return Ok(());
        };
        let actor = match job.payload.get("cron").and_then(Value::as_str) {
            Some(entry) => format!("cron:{entry}"),
            None => format!("job:{}", job.id),
        };
        reconcile::run(&self.db, &self.settings, api, false, &actor)
            .await
            .map(|_| ())
            .map_err(|e| e.into_handler_error())
    }

    async fn usage_job(&self, job: ClaimedJob) -> Result<(), HandlerError> {
        let Some(api) = &self.stripe else {
            tracing::info!(
                job = %job.id,
                "Stripe is not configured (stripe.secret_key); no usage to report"
            );
            return Ok(());
        };
        usage::report(&self.db, &self.settings, api, chrono::Utc::now())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_subscription_is_read_from_either_api_version() {
        let settings =
            Settings::from_toml_overrides("[plans.pro]\nstripe_prices = [\"pro_monthly\"]")
                .unwrap();
        // 2025-03-31 and later: the period end is on the items.
        let basil = json!({
            "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
            "cancel_at_period_end": false, "trial_end": null,
            "metadata": {"company_id": " acme "},
            "items": {"object": "list", "data": [
                {"id": "si_1", "current_period_end": 1_800_000_000,
                 "price": {"id": "price_123", "lookup_key": "pro_monthly"}}
            ]}
        });
        let s = StripeSubscription::from_json(&basil).unwrap();
        assert_eq!(s.customer_id, "cus_1");
        assert_eq!(s.current_period_end, Some(1_800_000_000));
        assert_eq!(s.company_hint.as_deref(), Some("acme"));
        let state = s.state(&settings);
        assert_eq!(state.plan.as_deref(), Some("pro"));
        assert_eq!(state.price_id.as_deref(), Some("price_123"));

        // Older versions: on the subscription; the customer may be expanded.
        let older = json!({
            "id": "sub_2", "customer": {"id": "cus_2", "object": "customer"},
            "status": "trialing", "current_period_end": 1_700_000_000, "trial_end": 1_700_000_000,
            "items": {"data": [{"price": {"id": "price_other"}}]}
        });
        let s = StripeSubscription::from_json(&older).unwrap();
        assert_eq!(s.customer_id, "cus_2");
        assert_eq!(s.current_period_end, Some(1_700_000_000));
        assert_eq!(s.state(&settings).plan, None);

        assert!(StripeSubscription::from_json(&json!({"id": "sub_3"})).is_err());
    }
}
