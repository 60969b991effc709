//! A local HTTP server (axum) speaking the parts of Stripe's API voxline calls, so the real
//! async-stripe client is exercised: `GET /v1/subscriptions` (cursor pages with `limit`,
//! `starting_after`, `status`), `GET /v1/customers/{id}` and `POST /v1/billing/meter_events`
//! (form-encoded, with `Idempotency-Key` replays and one count per `identifier`). Failures can
//! be scripted per endpoint, and meter-event answers held back (the event counted) for as long
//! as a test needs a report in flight; every request is recorded for assertions.
//!
//! The fixtures ([`subscription`], [`customer`], [`event`], …) are complete enough for
//! async-stripe's typed parsing (its required fields at `=1.0.0-rc.10`), so a wrong shape fails
//! here the way a real answer would.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The secret key the test configuration gives voxline (see [`StripeMock::config`]).
pub const SECRET_KEY: &str = "sk_test_voxline_mock_0123456789";
pub const PRICE_PRO: &str = "price_pro_monthly";
pub const PRICE_UNKNOWN: &str = "price_legacy";

/// Which endpoint a scripted failure hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Subscriptions,
    Customers,
    MeterEvents,
}

/// A scripted answer in place of the real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this status before doing anything (Stripe's error shape).
    Status(u16),
    /// Do the work (and remember it under the Idempotency-Key), then answer 502 as a proxy
    /// would: the client never learns that it succeeded.
    LoseAnswer,
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: &'static str,
    pub path: String,
    pub query: HashMap<String, String>,
    pub form: HashMap<String, String>,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    pub stripe_version: Option<String>,
}

#[derive(Default)]
struct Script {
    subscriptions: Vec<Value>,
    customers: HashMap<String, Value>,
    page_cap: usize,
    failures: HashMap<Endpoint, VecDeque<Failure>>,
    /// Meter events counted: one per identifier.
    meter_events: Vec<Value>,
    /// Idempotency-Key → the answer given.
    replays: HashMap<String, Value>,
    requests: Vec<Recorded>,
    /// While set, meter-event requests are handled (counted) but not answered.
    holding: bool,
    /// Meter-event requests waiting for their answer now.
    held: usize,
    /// Wakes the held requests when `holding` is lifted.
    release: Arc<tokio::sync::Notify>,
}

#[derive(Clone)]
pub struct StripeMock {
    /// Where voxline's `stripe.base_url` points.
    pub base_url: String,
    script: Arc<Mutex<Script>>,
}

fn stripe_error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "error": { "type": kind, "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

impl StripeMock {
    pub async fn start() -> StripeMock {
        let script = Arc::new(Mutex::new(Script {
            page_cap: 100,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/v1/subscriptions", get(list_subscriptions))
            .route("/v1/customers/{id}", get(retrieve_customer))
            .route("/v1/billing/meter_events", post(create_meter_event))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Stripe mock");
        let addr = listener.local_addr().expect("mock addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StripeMock {
            base_url: format!("http://{addr}"),
            script,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `[stripe]` layer pointing voxline here, with quick retries.
    pub fn config(&self) -> String {
        format!(
            "[stripe]\nsecret_key = \"{SECRET_KEY}\"\nbase_url = \"{}\"\ntimeout_ms = 5000\n\
             max_retries = 3\nretry_base_ms = 10\ncircuit_threshold = 50\n",
            self.base_url
        )
    }

    /// Adds the subscription, or replaces the one with its id (keeping its place in the list).
    pub fn put_subscription(&self, subscription: Value) {
        let mut script = self.lock();
        let id = subscription["id"].clone();
        match script.subscriptions.iter_mut().find(|s| s["id"] == id) {
            Some(existing) => *existing = subscription,
            None => script.subscriptions.push(subscription),
        }
    }

    pub fn put_customer(&self, customer: Value) {
        let id = customer["id"].as_str().unwrap_or_default().to_string();
        self.lock().customers.insert(id, customer);
    }

    /// At most this many subscriptions per page, whatever `limit` asks (to force paging).
    pub fn page_cap(&self, cap: usize) {
        self.lock().page_cap = cap.max(1);
    }

    pub fn fail_next(&self, endpoint: Endpoint, failures: &[Failure]) {
        self.lock()
            .failures
            .entry(endpoint)
            .or_default()
            .extend(failures.iter().copied());
    }

    /// From now on, meter events are handled (counted, remembered for replays) as usual but
    /// their answers wait until [`StripeMock::release_meter_events`]: the reporting caller is
    /// in flight, with Stripe already holding its event, for as long as the test needs.
    pub fn hold_meter_events(&self) {
        self.lock().holding = true;
    }

    /// Meter-event requests handled and waiting for their answer now.
    pub fn held_meter_events(&self) -> usize {
        self.lock().held
    }

    /// Answers the held meter-event requests and stops holding new ones.
    pub fn release_meter_events(&self) {
        let mut script = self.lock();
        script.holding = false;
        script.release.notify_waiters();
    }

    /// Meter events Stripe counted (one per identifier).
    pub fn meter_events(&self) -> Vec<Value> {
        self.lock().meter_events.clone()
    }

    /// Recorded requests whose path starts with `prefix`.
    pub fn requests(&self, prefix: &str) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

type Shared = Arc<Mutex<Script>>;

/// A request without the test's secret key: answered 401 as Stripe does.
struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        stripe_error(
            401,
            "invalid_request_error",
            None,
            "Invalid API Key provided",
        )
    }
}

fn record(
    script: &Shared,
    method: &'static str,
    path: String,
    query: HashMap<String, String>,
    form: HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Option<Failure>, Unauthorized> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let recorded = Recorded {
        method,
        path: path.clone(),
        query,
        form,
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
        stripe_version: header("stripe-version"),
    };
    let authorized = recorded.authorization.as_deref() == Some(&format!("Bearer {SECRET_KEY}"));
    let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
    s.requests.push(recorded);
    if !authorized {
        return Err(Unauthorized);
    }
    let endpoint = if path.starts_with("/v1/subscriptions") {
        Endpoint::Subscriptions
    } else if path.starts_with("/v1/customers") {
        Endpoint::Customers
    } else {
        Endpoint::MeterEvents
    };
    Ok(s.failures.get_mut(&endpoint).and_then(VecDeque::pop_front))
}

/// Records a `GET` of `path`; answers the refusal to give instead of the resource, if any (no
/// key, or a failure scripted for the endpoint).
fn read_refused(
    script: &Shared,
    path: String,
    query: HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<Response> {
    match record(script, "GET", path, query, HashMap::new(), headers) {
        Err(refused) => Some(refused.into_response()),
        Ok(Some(failure)) => Some(scripted(failure)),
        Ok(None) => None,
    }
}

fn scripted(failure: Failure) -> Response {
    match failure {
        Failure::Status(429) => stripe_error(
            429,
            "rate_limit_error",
            Some("rate_limit"),
            "Too many requests",
        ),
        Failure::Status(status) if status >= 500 => stripe_error(
            status,
            "api_error",
            None,
            "Something went wrong on Stripe's end",
        ),
        Failure::Status(status) => stripe_error(
            status,
            "invalid_request_error",
            Some("parameter_invalid"),
            "Scripted refusal",
        ),
        Failure::LoseAnswer => {
            (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response()
        }
    }
}

async fn list_subscriptions(
    State(script): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = "/v1/subscriptions".to_string();
    if let Some(refusal) = read_refused(&script, path, query.clone(), &headers) {
        return refusal;
    }
    let s = script.lock().unwrap_or_else(|p| p.into_inner());
    let status = query.get("status").map(String::as_str);
    let listed: Vec<&Value> = s
        .subscriptions
        .iter()
        .filter(|sub| match status {
            Some("all") => true,
            Some(wanted) => sub["status"] == wanted,
            // Stripe's default: everything not canceled.
            None => sub["status"] != "canceled",
        })
        .collect();
    let start = match query.get("starting_after") {
        Some(after) => match listed.iter().position(|sub| sub["id"] == after.as_str()) {
            Some(i) => i + 1,
            None => {
                return stripe_error(
                    400,
                    "invalid_request_error",
                    Some("resource_missing"),
                    "No such subscription for starting_after",
                );
            }
        },
        None => 0,
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10)
        .min(s.page_cap);
    let page: Vec<Value> = listed
        .iter()
        .skip(start)
        .take(limit)
        .map(|v| (*v).clone())
        .collect();
    let has_more = start + page.len() < listed.len();
    ok(json!({ "object": "list", "data": page, "has_more": has_more, "url": "/v1/subscriptions" }))
}

async fn retrieve_customer(
    State(script): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refusal) = read_refused(
        &script,
        format!("/v1/customers/{id}"),
        HashMap::new(),
        &headers,
    ) {
        return refusal;
    }
    let s = script.lock().unwrap_or_else(|p| p.into_inner());
    match s.customers.get(&id) {
        Some(customer) => ok(customer.clone()),
        None => stripe_error(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such customer: '{id}'"),
        ),
    }
}

/// One held meter-event request, counted in `held` until it is answered or its caller is gone.
struct Held(Shared);

impl Held {
    fn new(script: &Shared) -> Held {
        script.lock().unwrap_or_else(|p| p.into_inner()).held += 1;
        Held(script.clone())
    }

    fn holding(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).holding
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).held -= 1;
    }
}

async fn create_meter_event(
    State(script): State<Shared>,
    headers: HeaderMap,
    form: Form<HashMap<String, String>>,
) -> Response {
    let answer = meter_event(&script, &headers, form);
    let (holding, release) = {
        let s = script.lock().unwrap_or_else(|p| p.into_inner());
        (s.holding, s.release.clone())
    };
    if holding {
        let held = Held::new(&script);
        loop {
            let released = release.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !held.holding() {
                break;
            }
            released.await;
        }
    }
    answer
}

/// Handles a meter event at once (counted, remembered under its Idempotency-Key) and returns
/// the answer to give.
fn meter_event(
    script: &Shared,
    headers: &HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let failure = match record(
        script,
        "POST",
        "/v1/billing/meter_events".into(),
        HashMap::new(),
        form.clone(),
        headers,
    ) {
        Err(refused) => return refused.into_response(),
        Ok(Some(Failure::Status(status))) => return scripted(Failure::Status(status)),
        Ok(other) => other,
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(answer) = key.as_ref().and_then(|k| s.replays.get(k)) {
        return ok(answer.clone());
    }
    let (Some(event_name), Some(customer), Some(value)) = (
        form.get("event_name"),
        form.get("payload[stripe_customer_id]"),
        form.get("payload[value]"),
    ) else {
        return stripe_error(
            400,
            "invalid_request_error",
            Some("parameter_missing"),
            "event_name, payload[stripe_customer_id] and payload[value] are required",
        );
    };
    let identifier = form.get("identifier").cloned().unwrap_or_default();
    let timestamp: i64 = form
        .get("timestamp")
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    let answer = json!({
        "object": "billing.meter_event",
        "created": chrono::Utc::now().timestamp(),
        "event_name": event_name,
        "identifier": identifier,
        "livemode": false,
        "payload": { "stripe_customer_id": customer, "value": value },
        "timestamp": timestamp,
    });
    if !s
        .meter_events
        .iter()
        .any(|e| e["identifier"] == identifier.as_str())
    {
        s.meter_events.push(answer.clone());
    }
    if let Some(key) = key {
        s.replays.insert(key, answer.clone());
    }
    match failure {
        Some(Failure::LoseAnswer) => scripted(Failure::LoseAnswer),
        _ => ok(answer),
    }
}

/// A subscription as Stripe's API renders it (abridged to what async-stripe requires, plus the
/// fields voxline reads), with one item on `price`.
pub fn subscription(
    id: &str,
    customer: &str,
    status: &str,
    price: &str,
    created: i64,
    period_end: i64,
) -> Value {
    let recurring = json!({ "interval": "month", "interval_count": 1, "usage_type": "licensed",
                            "meter": null, "trial_period_days": null });
    let plan = json!({
        "id": price, "object": "plan", "active": true, "amount": 4900, "amount_decimal": "4900",
        "billing_scheme": "per_unit", "created": created, "currency": "usd", "interval": "month",
        "interval_count": 1, "livemode": false, "metadata": {}, "nickname": null,
        "product": "prod_voxline", "usage_type": "licensed"
    });
    let price = json!({
        "id": price, "object": "price", "active": true, "billing_scheme": "per_unit",
        "created": created, "currency": "usd", "custom_unit_amount": null, "livemode": false,
        "lookup_key": null, "metadata": {}, "nickname": null, "product": "prod_voxline",
        "recurring": recurring, "tax_behavior": "unspecified", "tiers_mode": null,
        "transform_quantity": null, "type": "recurring", "unit_amount": 4900,
        "unit_amount_decimal": "4900"
    });
    let item = json!({
        "id": format!("si_{id}"), "object": "subscription_item", "billing_thresholds": null,
        "created": created, "current_period_start": period_end - 30 * 86_400,
        "current_period_end": period_end, "discounts": [], "metadata": {}, "plan": plan,
        "price": price, "quantity": 1, "subscription": id, "tax_rates": []
    });
    let items = json!({
        "object": "list", "has_more": false, "total_count": 1,
        "url": format!("/v1/subscription_items?subscription={id}"), "data": [item]
    });
    // Built in two parts: one json! of every field exceeds the macro's recursion limit.
    let mut subscription = json!({
        "id": id, "object": "subscription", "application": null, "application_fee_percent": null,
        "automatic_tax": { "enabled": false, "liability": null, "disabled_reason": null },
        "billing_cycle_anchor": created, "billing_cycle_anchor_config": null,
        "billing_mode": { "type": "classic" }, "billing_schedules": [],
        "billing_thresholds": null, "cancel_at": null, "cancel_at_period_end": false,
        "canceled_at": null,
        "cancellation_details": { "comment": null, "feedback": null, "reason": null },
        "collection_method": "charge_automatically", "created": created, "currency": "usd",
        "customer": customer, "customer_account": null, "days_until_due": null
    });
    let rest = json!({
        "default_payment_method": null, "default_source": null, "default_tax_rates": [],
        "description": null, "discounts": [], "ended_at": null,
        "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
        "items": items, "latest_invoice": null, "livemode": false, "metadata": {},
        "next_pending_invoice_item_invoice": null, "on_behalf_of": null,
        "pause_collection": null, "payment_settings": null,
        "pending_invoice_item_interval": null, "pending_setup_intent": null,
        "pending_update": null, "schedule": null, "start_date": created, "status": status,
        "test_clock": null, "transfer_data": null, "trial_end": null, "trial_settings": null,
        "trial_start": null
    });
    if let (Some(all), Value::Object(rest)) = (subscription.as_object_mut(), rest) {
        all.extend(rest);
    }
    subscription
}

/// A customer, with `company_id` metadata when given.
pub fn customer(id: &str, email: Option<&str>, company: Option<&str>) -> Value {
    let metadata = match company {
        Some(c) => json!({ "company_id": c }),
        None => json!({}),
    };
    json!({
        "id": id, "object": "customer", "address": null, "balance": 0, "created": 1_700_000_000,
        "currency": "usd", "default_source": null, "delinquent": false, "description": null,
        "email": email, "invoice_prefix": "VOX", "livemode": false, "metadata": metadata,
        "name": null, "phone": null, "preferred_locales": [], "shipping": null,
        "tax_exempt": "none", "test_clock": null
    })
}

/// An event as Stripe delivers it to a webhook endpoint.
pub fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "api_version": "2025-08-27.basil", "created": created,
        "data": { "object": object }, "livemode": false, "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null }, "type": kind
    })
}

/// An invoice of `subscription` (the current API's shape: the subscription under `parent`).
pub fn invoice(
    id: &str,
    customer: &str,
    subscription: &str,
    amount_due: i64,
    email: Option<&str>,
) -> Value {
    json!({
        "id": id, "object": "invoice", "customer": customer, "customer_email": email,
        "amount_due": amount_due, "amount_paid": 0, "currency": "usd", "attempt_count": 1,
        "hosted_invoice_url": format!("https://invoice.stripe.com/i/{id}"),
        "parent": { "type": "subscription_details",
                    "subscription_details": { "subscription": subscription, "metadata": {} } },
        "status": "open", "livemode": false, "metadata": {}
    })
}

/// A completed checkout for `company` (as `client_reference_id`).
pub fn checkout_session(
    id: &str,
    customer: &str,
    subscription: &str,
    company: &str,
    email: &str,
) -> Value {
    json!({
        "id": id, "object": "checkout.session", "mode": "subscription", "status": "complete",
        "customer": customer, "subscription": subscription, "client_reference_id": company,
        "customer_details": { "email": email }, "metadata": {}, "livemode": false
    })
}
