//! `POST /api/webhooks/stripe`: Stripe's events become stored rows and `billing` jobs; the
//! billing worker applies them. The answer goes out as soon as the event is durably stored, so
//! Stripe's delivery does not wait on voxline's work (and a slow worker is not a failed
//! delivery).
//!
//! - Authentication: the `Stripe-Signature` header, `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`,
//!   where a `v1` is the HMAC-SHA256 of `"<t>.<raw body>"` with the endpoint's signing secret.
//!   Verification is async-stripe's (`stripe_webhook::Webhook`): any `v1` may match (Stripe
//!   sends one per active secret while a secret is rolled), compared in constant time, and `t`
//!   must be within 300 s of now. `stripe.webhook_secret` may hold several secrets,
//!   comma-separated; each is tried. No secret configured: 503 `not_configured`.
//! - Refusals: a missing or bad signature is a 400 `invalid_signature` naming the header; a
//!   body that is not JSON, or not an event (`id`, `type`, `created`), is a 400 too. Nothing is
//!   stored for a refused delivery.
//! - Exactly once: the event row (its id is the key) and its job (unique key `stripe:<id>`) are
//!   written in one transaction; a redelivery finds the row, answers 200 `duplicate: true` and
//!   changes nothing. An event type voxline does not handle is stored as `ignored` (no job) and
//!   answered 200, so Stripe stops retrying it.
//!
//! async-stripe checks the signature and the time before it parses the event into its own
//! types, so a signed event it cannot type (another API version's shape) still counts as
//! signed; voxline reads only the envelope here, and the worker the fields it needs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use stripe_webhook::{Webhook, WebhookError};
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;
use voxline_domain::billing::{self, NewEvent, StripeEventJob};
use voxline_domain::db::Scope;

use crate::AppState;
use crate::error::ApiError;
use crate::ratelimit::{ClientIp, Rule};

pub const SIGNATURE_HEADER: &str = "Stripe-Signature";
/// Stripe's own tolerance, which async-stripe applies.
pub const TOLERANCE_SECS: i64 = 300;
const MAX_EVENT_ID_CHARS: usize = 255;

/// Why a delivery's signature was refused (each answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is not t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]")]
    Malformed,
    #[error("no v1 signature in the Stripe-Signature header matches the body")]
    Mismatch,
    #[error("the Stripe-Signature timestamp {timestamp} is more than {TOLERANCE_SECS} s from now")]
    OutsideTolerance { timestamp: i64 },
}

/// The header value Stripe sends for `body` at `timestamp` (for tests and local tools).
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// async-stripe answers a malformed header and a wrong signature alike; the shape is checked
/// first so the refusal says which it was.
fn well_formed(header: &str) -> bool {
    let mut timestamp = false;
    let mut v1 = false;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().is_ok(),
            Some(("v1", sig)) => v1 |= !sig.is_empty(),
            Some(_) => {}
            None => return false,
        }
    }
    timestamp && v1
}

/// Checks `header` against the raw `payload` with each secret in turn (async-stripe's
/// verification: any `v1`, constant-time, 300 s either way from now).
pub fn verify(secrets: &[&str], header: Option<&str>, payload: &str) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if !well_formed(header) {
        return Err(SignatureError::Malformed);
    }
    for secret in secrets {
        match Webhook::construct_event(payload, header, secret) {
            // The signature and time are checked before the parse: a signed event async-stripe
            // cannot type is still signed (see the module documentation).
            Ok(_) | Err(WebhookError::BadParse(_)) => return Ok(()),
            Err(WebhookError::BadTimestamp(timestamp)) => {
                return Err(SignatureError::OutsideTolerance { timestamp });
            }
            Err(WebhookError::BadHeader(_)) => return Err(SignatureError::Malformed),
            // Not this secret; another configured one may match.
            Err(WebhookError::BadSignature | WebhookError::BadKey) => {}
        }
    }
    Err(SignatureError::Mismatch)
}

fn bad_signature(error: SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_signature",
        error.to_string(),
    )
    .field(SIGNATURE_HEADER)
}

fn bad_event(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", message).field(field)
}

/// What the webhook needs of an event: its id, type and Stripe's creation time.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: String,
    pub event_type: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub body: Value,
}

pub fn envelope(payload: &str) -> Result<Envelope, ApiError> {
    let body: Value = serde_json::from_str(payload).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    // Postgres stores the event as JSON, which cannot hold a NUL; Stripe never sends one.
    if crate::extract::holds_nul(&body) {
        return Err(bad_event(
            "body",
            "the event holds a NUL character (U+0000), which no Stripe event carries",
        ));
    }
    let text = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.chars().count() <= MAX_EVENT_ID_CHARS)
            .map(str::to_string)
            .ok_or_else(|| {
                bad_event(
                    name,
                    format!("{name} must be a string of 1 to {MAX_EVENT_ID_CHARS} characters"),
                )
            })
    };
    let id = text("id")?;
    let event_type = text("type")?;
    let created = body
        .get("created")
        .and_then(Value::as_i64)
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| bad_event("created", "created must be a unix time in seconds"))?;
    if !body.pointer("/data/object").is_some_and(Value::is_object) {
        return Err(bad_event(
            "data.object",
            "an event carries the object data.object",
        ));
    }
    Ok(Envelope {
        id,
        event_type,
        created,
        body,
    })
}

pub fn route() -> UtoipaMethodRouter<AppState> {
    routes!(receive)
}

/// What the webhook reads of a Stripe event (the rest is stored as it came).
#[derive(Debug, utoipa::ToSchema)]
pub struct StripeEvent {
    /// The event's id, e.g. `evt_1Q…`: its key, so a redelivery changes nothing.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub id: String,
    /// e.g. `invoice.paid`; a type voxline does not apply is stored as ignored.
    #[schema(rename = "type", min_length = 1, max_length = 255, pattern = r"\S")]
    pub event_type: String,
    /// When Stripe created the event, Unix seconds.
    #[schema(format = Int64)]
    pub created: i64,
    pub data: StripeEventData,
}

#[derive(Debug, utoipa::ToSchema)]
pub struct StripeEventData {
    /// The subscription, invoice or checkout session the event is about.
    #[schema(value_type = Object)]
    pub object: Value,
}

/// Stripe's webhook: a signed event is stored and its `billing` job queued, in one transaction.
#[utoipa::path(post, path = "/api/webhooks/stripe", tag = "webhooks", operation_id = "stripe_webhook",
    request_body(content = StripeEvent, content_type = "application/json", description = "A Stripe event: {id, object: \"event\", type, created, data: {object}}. Applied: checkout.session.completed, customer.subscription.created|updated|deleted|trial_will_end, invoice.paid, invoice.payment_failed, invoice.payment_action_required; other types are stored as ignored."),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" with a signing secret in stripe.webhook_secret>")),
    responses((status = 200, description = "{received, id, duplicate, ignored}"),
              (status = 400, description = "A missing or bad signature (`invalid_signature`), a body that is not JSON (`invalid_json`), or not an event (`invalid_event`; `field` names what is wrong)."),
              (status = 413, description = "The body is over http.body_limit_bytes (`payload_too_large`)."),
              (status = 429, description = "Over webhooks_per_ip (`rate_limited`); see Retry-After."),
              (status = 503, description = "stripe.webhook_secret is not configured (`not_configured`), or the database cannot be reached (`database_unavailable`, with Retry-After).")))]
pub async fn receive(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.limits.check(Rule::WebhooksPerIp, &ip).await?;
    let secrets = state.settings.stripe.webhook_secrets();
    if secrets.is_empty() {
        return Err(super::not_configured("Stripe", "stripe.webhook_secret"));
    }
    let body = body?;
    let header = match headers.get(SIGNATURE_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| bad_signature(SignatureError::Malformed))?,
        ),
    };
    // Stripe signs UTF-8 JSON; other bytes cannot carry its signature.
    let payload =
        std::str::from_utf8(&body).map_err(|_| bad_signature(SignatureError::Mismatch))?;
    verify(&secrets, header, payload).map_err(bad_signature)?;
    let event = envelope(payload)?;

    let handled = billing::is_handled(&event.event_type);
    let row = NewEvent {
        id: &event.id,
        event_type: &event.event_type,
        created: event.created,
        payload: &event.body,
        status: if handled {
            billing::EVENT_PENDING
        } else {
            billing::EVENT_IGNORED
        },
    };
    let job = StripeEventJob {
        event_id: event.id.clone(),
    };
    // Platform: whose event it is is known only once the worker maps its customer; this
    // transaction writes only the event row and its job, which belong to no company.
    let mut tx = state.db.begin(Scope::Platform).await?;
    let inserted = billing::insert_event(&mut tx, &row).await?;
    if inserted && handled {
        state.jobs.enqueue(&mut tx, &job).await?;
    }
    tx.commit().await?;
    match (inserted, handled) {
        (false, _) => {
            tracing::info!(event = %event.id, kind = %event.event_type, "Stripe event redelivered; already stored")
        }
        (true, true) => {
            tracing::info!(event = %event.id, kind = %event.event_type, "Stripe event stored; billing job queued")
        }
        (true, false) => {
            tracing::info!(event = %event.id, kind = %event.event_type, "Stripe event stored as ignored")
        }
    }
    Ok((
        StatusCode::OK,
        Json(json!({
            "received": true,
            "id": event.id,
            "duplicate": !inserted,
            "ignored": !handled,
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_0123456789";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // Computed independently with Python:
        // hmac.new(b"whsec_test_0123456789", b"1739537297." + body, hashlib.sha256).hexdigest()
        let body = br#"{"id":"evt_1","object":"event"}"#;
        assert_eq!(
            signature_header(SECRET, 1_739_537_297, body),
            "t=1739537297,v1=b816c3821934400c7a85860f36d021e87221f8a262f1e82b992e8c8c50dd5835"
        );
    }

    #[test]
    fn any_configured_secret_and_any_v1_may_match() {
        let body = r#"{"id":"evt_1"}"#;
        let t = now();
        let header = signature_header(SECRET, t, body.as_bytes());
        assert_eq!(verify(&["whsec_old", SECRET], Some(&header), body), Ok(()));
        // During a roll Stripe sends one v1 per secret; ours may be the second.
        let other = signature_header("whsec_other", t, body.as_bytes());
        let both = format!("{other},{}", header.split_once(',').unwrap().1);
        assert_eq!(verify(&[SECRET], Some(&both), body), Ok(()));
        assert_eq!(
            verify(&["whsec_old"], Some(&header), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_changed_body_or_an_old_timestamp_does_not_verify() {
        let body = r#"{"id":"evt_1"}"#;
        let header = signature_header(SECRET, now(), body.as_bytes());
        assert_eq!(
            verify(&[SECRET], Some(&header), r#"{"id":"evt_2"}"#),
            Err(SignatureError::Mismatch)
        );
        let old = now() - 301;
        assert_eq!(
            verify(
                &[SECRET],
                Some(&signature_header(SECRET, old, body.as_bytes())),
                body
            ),
            Err(SignatureError::OutsideTolerance { timestamp: old })
        );
        let ahead = now() + 301;
        assert_eq!(
            verify(
                &[SECRET],
                Some(&signature_header(SECRET, ahead, body.as_bytes())),
                body
            ),
            Err(SignatureError::OutsideTolerance { timestamp: ahead })
        );
    }

    #[test]
    fn a_missing_or_malformed_header_is_refused() {
        let body = "{}";
        assert_eq!(verify(&[SECRET], None, body), Err(SignatureError::Missing));
        for header in [
            "",
            "garbage",
            "t=soon,v1=00",
            "t=1739537297",
            "v1=00",
            "t=1,v0=00",
        ] {
            assert_eq!(
                verify(&[SECRET], Some(header), body),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
        assert_eq!(
            verify(&[SECRET], Some(&format!("t={},v1=zz", now())), body),
            Err(SignatureError::Mismatch),
            "a v1 that is not hex matches nothing"
        );
    }

    #[test]
    fn the_envelope_needs_id_type_created_and_data() {
        let ok = envelope(
            r#"{"id":"evt_1","type":"invoice.paid","created":1739537297,"data":{"object":{}}}"#,
        )
        .unwrap();
        assert_eq!(ok.id, "evt_1");
        assert_eq!(ok.event_type, "invoice.paid");
        assert_eq!(ok.created.timestamp(), 1_739_537_297);
        let field = |body: &str| envelope(body).unwrap_err().body.field;
        assert_eq!(
            field(r#"{"type":"x","created":1,"data":{"object":{}}}"#).as_deref(),
            Some("id")
        );
        assert_eq!(
            field(r#"{"id":"e","created":1,"data":{"object":{}}}"#).as_deref(),
            Some("type")
        );
        assert_eq!(
            field(r#"{"id":"e","type":"x","data":{"object":{}}}"#).as_deref(),
            Some("created")
        );
        assert_eq!(
            field(r#"{"id":"e","type":"x","created":1}"#).as_deref(),
            Some("data.object")
        );
        assert_eq!(envelope("{not json").unwrap_err().body.code, "invalid_json");
    }
}
