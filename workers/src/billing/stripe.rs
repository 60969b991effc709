//! Stripe in one place: the async-stripe client built from `[stripe]`, and the one path every
//! call takes — the circuit breaker first (while it is open nothing is sent and the job
//! snoozes), then the request with its time-out, retried on 429, 5xx, time-outs and lost
//! connections with exponential backoff (backon), writes carrying an Idempotency-Key that stays
//! the same across the retries.
//!
//! async-stripe's own retry strategies are not used (the client sends each request once): its
//! backoff is fixed and invisible to the circuit breaker, and only ours logs each retry.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::subscription::{ListSubscription, ListSubscriptionStatus};
use stripe_core::customer::{RetrieveCustomer, RetrieveCustomerReturned};
use voxline_domain::config::StripeSettings;
use voxline_jobs::HandlerError;
use voxline_jobs::circuit::CircuitBreaker;

use super::StripeSubscription;

/// The provider's name in metrics (`voxline_provider_circuit_state{provider="stripe"}`) and logs.
pub const PROVIDER: &str = "stripe";

/// async-stripe's message when an error answer's body is not Stripe's JSON (a proxy's 502
/// page): the status is lost, so such an answer counts as an outage.
const UNREADABLE_ERROR_BODY: &str = "error deserializing Stripe error";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("stripe.secret_key or stripe.base_url cannot be used: {0}")]
    Client(String),
}

/// Why a Stripe call failed, after its retries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// Too many recent failures: nothing was sent.
    #[error("Stripe circuit open")]
    CircuitOpen(Duration),
    /// 429, 5xx, time-outs, refused connections: worth trying again later.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// A 4xx other than 429: the same request will be refused again.
    #[error("Stripe refused the request ({status}): {message}")]
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// A success whose body async-stripe could not read, or a request that cannot be made.
    #[error("{0}")]
    Broken(String),
}

impl CallError {
    /// What the failure means for the job that made the call.
    pub fn into_handler_error(self, what: &str) -> HandlerError {
        match self {
            CallError::CircuitOpen(wait) => {
                HandlerError::snooze(format!("{what}: Stripe circuit open"), wait)
            }
            CallError::Unavailable(_) => HandlerError::retry(format!("{what}: {self}")),
            CallError::Refused { .. } | CallError::Broken(_) => {
                HandlerError::permanent(format!("{what}: {self}"))
            }
        }
    }
}

fn is_outage(error: &StripeError) -> bool {
    match error {
        StripeError::Stripe(_, status) => *status == 429 || *status == 409 || *status >= 500,
        StripeError::ClientError(_) | StripeError::Timeout => true,
        StripeError::JSONDeserialize(message) => message == UNREADABLE_ERROR_BODY,
        StripeError::ConfigError(_) => false,
    }
}

fn classify(error: StripeError) -> CallError {
    if is_outage(&error) {
        return CallError::Unavailable(describe(&error));
    }
    match error {
        StripeError::Stripe(api, status) => CallError::Refused {
            status,
            code: api.code.as_ref().map(|c| c.as_str().to_string()),
            message: api.message.clone().unwrap_or_default(),
        },
        other => CallError::Broken(describe(&other)),
    }
}

/// A short description: async-stripe's own `Display` of an API error dumps the whole error
/// object, request log URL included.
fn describe(error: &StripeError) -> String {
    match error {
        StripeError::Stripe(api, status) => format!(
            "{status} {}",
            api.message.as_deref().unwrap_or("(no message)")
        ),
        other => other.to_string(),
    }
}

/// A customer as Stripe has it: what linking it to a company needs.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerInfo {
    pub id: String,
    pub email: Option<String>,
    /// The `company_id` in the customer's metadata.
    pub company_id: Option<String>,
}

/// One page of `GET /v1/subscriptions`.
#[derive(Debug, Clone)]
pub struct SubscriptionPage {
    pub subscriptions: Vec<StripeSubscription>,
    pub has_more: bool,
}

/// The Stripe adapter. Build it once per process and share it (`Arc`), so every caller sees
/// one circuit breaker.
pub struct StripeApi {
    client: Client,
    circuit: CircuitBreaker,
    retries: usize,
    retry_base: Duration,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client: its configuration holds the secret key.
        f.debug_struct("StripeApi")
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// async-stripe appends `v1/<path>` to its base, so the base is the origin with a slash.
fn api_base(base_url: &str) -> Option<String> {
    let base = base_url.trim().trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    (!base.is_empty()).then(|| format!("{base}/"))
}

impl StripeApi {
    /// The adapter, or `None` when no secret key is configured (voxline then calls no one).
    pub fn from_settings(settings: &StripeSettings) -> Result<Option<Arc<StripeApi>>, SetupError> {
        if settings.secret_key.trim().is_empty() {
            return Ok(None);
        }
        // hyper-rustls builds its TLS config on the process's provider: ring, as everywhere in
        // voxline (installing it again is a harmless no-op, hence the ignored result).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = ClientBuilder::new(settings.secret_key.trim())
            .timeout(Duration::from_millis(settings.timeout_ms))
            .request_strategy(RequestStrategy::Once)
            .app_info("voxline", Some(env!("CARGO_PKG_VERSION").to_string()), None);
        if let Some(base) = api_base(&settings.base_url) {
            builder = builder.url(base);
        }
        let client = builder
            .build()
            .map_err(|e| SetupError::Client(e.to_string()))?;
        Ok(Some(Arc::new(StripeApi {
            client,
            circuit: CircuitBreaker::new(
                PROVIDER,
                settings.circuit_threshold,
                Duration::from_millis(settings.circuit_cooldown_ms),
            ),
            retries: usize::try_from(settings.max_retries).unwrap_or(3),
            retry_base: Duration::from_millis(settings.retry_base_ms),
        })))
    }

    /// Sends one call through the breaker, retrying outages (see the module documentation).
    async fn call<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StripeError>>,
    {
        if let Err(wait) = self.circuit.permit() {
            return Err(CallError::CircuitOpen(wait));
        }
        let mut outcome = self.circuit.call();
        let result = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(self.retry_base)
                    .with_max_delay(self.retry_base * 32)
                    .with_max_times(self.retries)
                    .with_jitter(),
            )
            .when(is_outage)
            .notify(|e, wait| {
                tracing::warn!(call = what, error = %describe(e), ?wait, "Stripe call failed; retrying")
            })
            .await;
        match result {
            Ok(value) => {
                outcome.settle(false);
                Ok(value)
            }
            Err(error) => {
                outcome.settle(is_outage(&error));
                Err(classify(error))
            }
        }
    }

    /// One page of every subscription (all statuses, canceled included), after `starting_after`.
    pub async fn subscriptions(
        &self,
        page_size: u32,
        starting_after: Option<&str>,
    ) -> Result<SubscriptionPage, CallError> {
        let mut request = ListSubscription::new()
            .status(ListSubscriptionStatus::All)
            .limit(i64::from(page_size));
        if let Some(id) = starting_after {
            request = request.starting_after(id);
        }
        let page = self
            .call("list subscriptions", || request.send(&self.client))
            .await?;
        Ok(SubscriptionPage {
            subscriptions: page.data.iter().map(StripeSubscription::from_api).collect(),
            has_more: page.has_more,
        })
    }

    /// The customer, or `None` when Stripe has deleted it (or never had it).
    pub async fn customer(&self, id: &str) -> Result<Option<CustomerInfo>, CallError> {
        let request = RetrieveCustomer::new(id);
        match self
            .call("retrieve customer", || request.send(&self.client))
            .await
        {
            Ok(RetrieveCustomerReturned::Customer(c)) => Ok(Some(CustomerInfo {
                id: c.id.to_string(),
                email: c.email.clone(),
                company_id: c
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get("company_id"))
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            })),
            Ok(RetrieveCustomerReturned::DeletedCustomer(_)) => Ok(None),
            Err(CallError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reports `value` for `customer` to the billing meter `event_name`. `identifier` names the
    /// event (Stripe counts one identifier once) and is also the Idempotency-Key, so every
    /// retry of this report is the same request.
    pub async fn meter_event(
        &self,
        event_name: &str,
        customer: &str,
        value: i64,
        timestamp: i64,
        identifier: &str,
    ) -> Result<(), CallError> {
        let key = IdempotencyKey::new(identifier)
            .map_err(|e| CallError::Broken(format!("idempotency key: {e}")))?;
        let payload = [
            ("stripe_customer_id".to_string(), customer.to_string()),
            ("value".to_string(), value.to_string()),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>();
        let request = CreateBillingMeterEvent::new(event_name, payload)
            .identifier(identifier)
            .timestamp(timestamp);
        self.call("report meter event", || {
            request
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key.clone()))
                .send(&self.client)
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_is_an_origin_with_a_slash() {
        assert_eq!(api_base(""), None);
        assert_eq!(
            api_base("http://127.0.0.1:1234").as_deref(),
            Some("http://127.0.0.1:1234/")
        );
        assert_eq!(
            api_base("https://proxy.example/stripe/v1/").as_deref(),
            Some("https://proxy.example/stripe/")
        );
    }

    #[test]
    fn outages_are_retried_and_refusals_are_not() {
        assert!(is_outage(&StripeError::Timeout));
        assert!(is_outage(&StripeError::ClientError("refused".into())));
        assert!(is_outage(&StripeError::JSONDeserialize(
            UNREADABLE_ERROR_BODY.into()
        )));
        assert!(!is_outage(&StripeError::JSONDeserialize(
            "error deserializing request data".into()
        )));
        assert!(!is_outage(&StripeError::ConfigError("bad".into())));
        assert_eq!(
            CallError::Unavailable("x".into()).into_handler_error("c"),
            HandlerError::retry("c: Stripe is unavailable: x")
        );
        assert!(matches!(
            CallError::CircuitOpen(Duration::from_secs(3)).into_handler_error("c"),
            HandlerError::Snooze { .. }
        ));
    }
}
