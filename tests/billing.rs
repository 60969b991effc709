//! Billing on both databases: Stripe webhooks into durable jobs (signed, stored once, applied
//! once, in Stripe's order whatever the delivery order), emails for payment problems, the
//! reconciliation against Stripe's list, metered usage reported once per window, and quotas
//! at intake.
//!
//! Deliveries are signed as Stripe documents it (`t=<unix>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">`) by `signature_header`, which the API crate's unit tests pin to a signature
//! computed independently with Python's `hmac`. Stripe's API is `support::stripe_mock`, a
//! local server the real async-stripe client talks to.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::api::{Webhook, json_of};
use support::stripe_mock::{self, Endpoint, Failure, PRICE_PRO, PRICE_UNKNOWN, StripeMock};
use support::{Backend, TestDb, start_api, start_workers, token};
use voxline_api::auth::Role;
use voxline_api::webhooks::stripe::signature_header;
use voxline_domain::audit;
use voxline_domain::billing::{self, Source, Stamp, SubscriptionState};
use voxline_domain::db::Scope;
use voxline_domain::{Db, profiles};
use voxline_jobs::DbJobs;
use voxline_jobs::store::{self, JobFilter};
use voxline_jobs::{Job, JobState, NewJob};

const SECRET: &str = "whsec_voxline_test_0123456789abcdef";
const OLD_SECRET: &str = "whsec_voxline_rolled_out_secret_42";

/// Webhooks on (two signing secrets, as during a roll), `pro` on Stripe's price, quick polling.
fn configured() -> String {
    format!(
        "[stripe]\nwebhook_secret = \"{OLD_SECRET}, {SECRET}\"\n\
         [plans.pro]\nstripe_prices = [\"{PRICE_PRO}\"]\n\
         [engine]\npoll_interval_ms = 50\n"
    )
}

fn now() -> i64 {
    Utc::now().timestamp()
}

const STRIPE: Webhook = Webhook {
    route: "/api/webhooks/stripe",
    header: "Stripe-Signature",
    secret: SECRET,
    sign: signature_header,
};

async fn deliver(base: &str, body: &[u8], signature: Option<&str>) -> (StatusCode, Value) {
    STRIPE.deliver(base, body, signature).await
}

/// Posts `event` signed with the current secret, now.
async fn deliver_signed(base: &str, event: &Value) -> (StatusCode, Value) {
    STRIPE.deliver_signed(base, event).await
}

async fn count(t: &TestDb, sql: &'static str) -> i64 {
    t.count_rows(sql).await
}

/// A deployment with webhooks `configured()`, whose API serves.
async fn configured_api(backend: Backend) -> Option<(TestDb, String)> {
    let t = TestDb::new(backend, &[&configured()]).await?;
    let base = start_api(&t).await;
    Some((t, base))
}

async fn jobs(t: &TestDb, queue: &str) -> Vec<Job> {
    t.db.jobs()
        .list(&JobFilter {
            queue: Some(queue.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Waits until the billing worker has processed every stored event.
async fn all_events_processed(t: &TestDb) {
    let db = t.db.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let counts = billing::event_counts(&db).await.unwrap();
        if !counts.contains_key(billing::EVENT_PENDING) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "events still pending after 20 s: {counts:?}; billing jobs: {:#?}",
                jobs(t, "billing").await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn event_row(t: &TestDb, id: &str) -> billing::StoredEvent {
    billing::event(&t.db, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("event {id} is stored"))
}

async fn subscription(t: &TestDb, id: &str) -> billing::SubscriptionRow {
    billing::subscription(&t.db, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("subscription {id} is stored"))
}

async fn audit_actions(t: &TestDb) -> Vec<String> {
    let mut actions: Vec<String> = audit::recent(&t.db, None, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    actions.reverse();
    actions
}

/// A `customer.subscription.<change>` event `id` sent `at`, of acme's `sub_acme` (see
/// `acme_subscription`) in `status`.
fn sub_acme_event(id: &str, change: &str, at: i64, status: &str, created: i64) -> Value {
    let sub = acme_subscription("sub_acme", status, created);
    stripe_mock::event(id, &format!("customer.subscription.{change}"), at, sub)
}

/// Acme's subscription as Stripe would send it: on the pro price, company named in metadata.
fn acme_subscription(id: &str, status: &str, created: i64) -> Value {
    let mut sub = stripe_mock::subscription(
        id,
        "cus_acme",
        status,
        PRICE_PRO,
        created,
        created + 30 * 86_400,
    );
    sub["metadata"] = json!({ "company_id": "acme" });
    sub
}

on_both_databases!(the_same_event_delivered_ten_times_is_stored_once_and_applied_once);
async fn the_same_event_delivered_ten_times_is_stored_once_and_applied_once(backend: Backend) {
    let Some((t, base)) = configured_api(backend).await else {
        return;
    };
    let created = now() - 60;
    let event = sub_acme_event("evt_created_1", "created", created, "active", created);

    // Ten deliveries at once race to the event's primary key.
    let answers = futures::future::join_all((0..10).map(|_| deliver_signed(&base, &event))).await;
    for (status, answer) in &answers {
        assert_eq!(*status, StatusCode::OK, "{answer}");
        assert_eq!(answer["id"], "evt_created_1");
        assert_eq!(answer["ignored"], false);
    }
    let firsts = answers
        .iter()
        .filter(|(_, a)| a["duplicate"] == false)
        .count();
    assert_eq!(firsts, 1, "exactly one delivery stored the event");
    assert_eq!(count(&t, "SELECT count(*) FROM stripe_events").await, 1);
    let queued = jobs(&t, "billing").await;
    assert_eq!(queued.len(), 1, "one billing job: {queued:#?}");
    assert_eq!(queued[0].kind, billing::STRIPE_EVENT_JOB);
    assert_eq!(queued[0].payload, json!({ "event_id": "evt_created_1" }));

    let workers = start_workers(&t, &["billing"]);
    all_events_processed(&t).await;
    // Redelivered after it was applied: still answered, still nothing new.
    let (status, answer) = deliver_signed(&base, &event).await;
    assert_eq!(
        (status, answer["duplicate"].clone()),
        (StatusCode::OK, json!(true))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    workers.shutdown().await;

    assert_eq!(event_row(&t, "evt_created_1").await.status, "applied");
    let sub = subscription(&t, "sub_acme").await;
    assert_eq!(sub.company_id, "acme");
    assert_eq!(sub.state.status, "active");
    assert_eq!(sub.state.plan.as_deref(), Some("pro"));
    assert_eq!(sub.state.price_id.as_deref(), Some(PRICE_PRO));
    assert_eq!(
        sub.state.current_period_end.map(|t| t.timestamp()),
        Some(created + 30 * 86_400)
    );
    assert_eq!(sub.stamp.at.timestamp(), created);
    let customer = billing::customer(&t.db, "cus_acme").await.unwrap().unwrap();
    assert_eq!(
        customer.company_id, "acme",
        "linked from the subscription's metadata"
    );
    let actions = audit_actions(&t).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "billing.subscription_created")
            .count(),
        1,
        "applied once: {actions:?}"
    );
    assert_eq!(
        jobs(&t, "billing").await.len(),
        1,
        "no job for the redelivery"
    );
}

on_both_databases!(bad_signatures_and_bodies_are_refused_and_nothing_is_stored);
async fn bad_signatures_and_bodies_are_refused_and_nothing_is_stored(backend: Backend) {
    let Some((t, base)) = configured_api(backend).await else {
        return;
    };
    let event = sub_acme_event("evt_refused", "updated", now(), "active", now());
    let body = event.to_string();
    let signed = |secret: &str, at: i64, body: &str| signature_header(secret, at, body.as_bytes());
    let cases: Vec<(&str, Option<String>, String)> = vec![
        ("no signature", None, body.clone()),
        (
            "another secret",
            Some(signed("whsec_someone_else", now(), &body)),
            body.clone(),
        ),
        (
            "older than 300 s",
            Some(signed(SECRET, now() - 301, &body)),
            body.clone(),
        ),
        ("not t=…,v1=…", Some("sha256=abc".into()), body.clone()),
        (
            "signed for another body",
            Some(signed(SECRET, now(), "{}")),
            body.clone(),
        ),
    ];
    for (what, signature, body) in &cases {
        let (status, answer) = deliver(&base, body.as_bytes(), signature.as_deref()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature", "{what}");
        assert_eq!(answer["error"]["field"], "Stripe-Signature", "{what}");
    }
    let garbage = "{\"id\": \"evt_x\", not json";
    let not_an_event = r#"{"hello": "world"}"#;
    for (body, code, field) in [
        (garbage, "invalid_json", None),
        (not_an_event, "invalid_event", Some("id")),
    ] {
        let signature = signed(SECRET, now(), body);
        let (status, answer) = deliver(&base, body.as_bytes(), Some(&signature)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], code);
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field);
        }
    }
    assert_eq!(count(&t, "SELECT count(*) FROM stripe_events").await, 0);
    assert_eq!(count(&t, "SELECT count(*) FROM jobs").await, 0);

    // While a secret is rolled, Stripe signs with both; either verifies.
    let (status, answer) = deliver(
        &base,
        body.as_bytes(),
        Some(&signed(OLD_SECRET, now(), &body)),
    )
    .await;
    assert_eq!(
        (status, answer["duplicate"].clone()),
        (StatusCode::OK, json!(false)),
        "{answer}"
    );
}

on_both_databases!(an_event_type_voxline_does_not_handle_is_stored_as_ignored);
async fn an_event_type_voxline_does_not_handle_is_stored_as_ignored(backend: Backend) {
    let Some((t, base)) = configured_api(backend).await else {
        return;
    };
    let event = stripe_mock::event(
        "evt_customer",
        "customer.created",
        now(),
        stripe_mock::customer("cus_new", Some("a@example.com"), None),
    );
    let (status, answer) = deliver_signed(&base, &event).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ignored"], true);
    assert_eq!(event_row(&t, "evt_customer").await.status, "ignored");
    assert_eq!(count(&t, "SELECT count(*) FROM jobs").await, 0, "no job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_signing_secret_the_webhook_answers_503() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let (status, answer) = deliver(&base, b"{}", Some("t=1,v1=00")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "not_configured");
}

/// Delivers `event` and waits until the worker has processed it.
async fn deliver_and_apply(t: &TestDb, base: &str, event: &Value) {
    let (status, answer) = deliver_signed(base, event).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = event["id"].as_str().expect("an event id");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while event_row(t, id).await.status == billing::EVENT_PENDING {
        if tokio::time::Instant::now() > deadline {
            panic!(
                "event {id} still pending after 20 s; billing jobs: {:#?}",
                jobs(t, "billing").await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both_databases!(an_updated_event_delivered_before_created_is_not_undone_by_it);
async fn an_updated_event_delivered_before_created_is_not_undone_by_it(backend: Backend) {
    let Some((t, base)) = configured_api(backend).await else {
        return;
    };
    let workers = start_workers(&t, &["billing"]);
    let t0 = now() - 600;
    let created = sub_acme_event("evt_1_created", "created", t0, "incomplete", t0);
    let updated = sub_acme_event("evt_2_updated", "updated", t0 + 10, "active", t0);

    deliver_and_apply(&t, &base, &updated).await;
    deliver_and_apply(&t, &base, &created).await;
    workers.shutdown().await;

    let sub = subscription(&t, "sub_acme").await;
    assert_eq!(sub.state.status, "active", "the newer event's state stays");
    assert_eq!(sub.last_event_id.as_deref(), Some("evt_2_updated"));
    assert_eq!(event_row(&t, "evt_2_updated").await.status, "applied");
    let late = event_row(&t, "evt_1_created").await;
    assert_eq!(late.status, "skipped");
    assert!(
        late.detail.as_deref().is_some_and(|d| d.contains("older")),
        "{late:?}"
    );
}

on_both_databases!(a_late_updated_event_does_not_reopen_a_deleted_subscription);
async fn a_late_updated_event_does_not_reopen_a_deleted_subscription(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[&configured()]).await else {
        return;
    };
    ann_is_acmes_admin(&t).await;
    let base = start_api(&t).await;
    let workers = start_workers(&t, &["billing"]);
    let t0 = now() - 600;
    let mut canceled = acme_subscription("sub_acme", "canceled", t0);
    canceled["canceled_at"] = json!(t0 + 20);
    let events = [
        sub_acme_event("evt_1_created", "created", t0, "active", t0),
        stripe_mock::event(
            "evt_3_deleted",
            "customer.subscription.deleted",
            t0 + 20,
            canceled,
        ),
        // Created before the deletion, delivered after it.
        sub_acme_event("evt_2_updated", "updated", t0 + 15, "past_due", t0),
        // Even a newer event cannot reopen it: Stripe never does.
        sub_acme_event("evt_4_updated", "updated", t0 + 30, "active", t0),
    ];
    for event in &events {
        deliver_and_apply(&t, &base, event).await;
    }
    workers.shutdown().await;

    let sub = subscription(&t, "sub_acme").await;
    assert_eq!(sub.state.status, "canceled");
    assert_eq!(sub.last_event_id.as_deref(), Some("evt_3_deleted"));
    assert_eq!(event_row(&t, "evt_2_updated").await.status, "skipped");
    assert_eq!(event_row(&t, "evt_4_updated").await.status, "skipped");
    let emails: Vec<Value> = jobs(&t, "email")
        .await
        .into_iter()
        .map(|j| j.payload)
        .collect();
    assert_eq!(emails.len(), 1, "one cancellation email: {emails:#?}");
    assert_eq!(emails[0]["template"], "subscription_cancelled");
    assert_eq!(
        emails[0]["to"], "ann@acme.test",
        "no Stripe address: the admin's"
    );
    assert_eq!(emails[0]["data"]["plan"], "pro");
    assert_eq!(emails[0]["subject_id"], "subscription:sub_acme:cancelled");
    let actions = audit_actions(&t).await;
    assert_eq!(
        actions,
        [
            "billing.customer_linked",
            "billing.subscription_created",
            "billing.subscription_canceled"
        ]
    );
}

/// Ann administers acme and has signed in with her address.
async fn ann_is_acmes_admin(t: &TestDb) {
    let ann = profiles::Profile {
        id: "ann".into(),
        company_id: "acme".into(),
        email: Some("ann@acme.test".into()),
        role: "admin".into(),
    };
    assert!(profiles::upsert_seen(&t.db, &ann).await.unwrap());
}

on_both_databases!(payment_problems_and_a_trial_ending_are_emailed_to_the_billing_address);
async fn payment_problems_and_a_trial_ending_are_emailed_to_the_billing_address(backend: Backend) {
    let mock = StripeMock::start().await;
    // The subscription names no company: the customer's metadata at Stripe does.
    mock.put_customer(stripe_mock::customer(
        "cus_globex",
        Some("billing@globex.test"),
        Some("globex"),
    ));
    let Some(t) = TestDb::new(backend, &[&configured(), &mock.config()]).await else {
        return;
    };
    let base = start_api(&t).await;
    let workers = start_workers(&t, &["billing"]);
    let t0 = now() - 600;
    let mut trialing = stripe_mock::subscription(
        "sub_globex",
        "cus_globex",
        "trialing",
        PRICE_PRO,
        t0,
        t0 + 14 * 86_400,
    );
    trialing["trial_end"] = json!(1_800_000_000);
    deliver_and_apply(
        &t,
        &base,
        &stripe_mock::event(
            "evt_sub",
            "customer.subscription.created",
            t0,
            trialing.clone(),
        ),
    )
    .await;
    assert_eq!(
        mock.requests("/v1/customers/cus_globex").len(),
        1,
        "the customer was asked for its company once"
    );
    deliver_and_apply(
        &t,
        &base,
        &stripe_mock::event(
            "evt_trial",
            "customer.subscription.trial_will_end",
            t0 + 1,
            trialing,
        ),
    )
    .await;
    let invoice = stripe_mock::invoice("in_1", "cus_globex", "sub_globex", 4900, None);
    for (id, kind, at) in [
        ("evt_failed", "invoice.payment_failed", t0 + 2),
        ("evt_action", "invoice.payment_action_required", t0 + 3),
    ] {
        deliver_and_apply(
            &t,
            &base,
            &stripe_mock::event(id, kind, at, invoice.clone()),
        )
        .await;
    }
    assert_eq!(
        subscription(&t, "sub_globex")
            .await
            .latest_invoice_status
            .as_deref(),
        Some("payment_action_required")
    );
    deliver_and_apply(
        &t,
        &base,
        &stripe_mock::event("evt_paid", "invoice.paid", t0 + 4, invoice.clone()),
    )
    .await;
    workers.shutdown().await;

    let sub = subscription(&t, "sub_globex").await;
    assert_eq!(sub.company_id, "globex");
    assert_eq!(sub.latest_invoice_status.as_deref(), Some("paid"));
    let mut emails: Vec<Value> = jobs(&t, "email")
        .await
        .into_iter()
        .map(|j| j.payload)
        .collect();
    emails.sort_by_key(|e| e["template"].as_str().unwrap_or_default().to_string());
    let templates: Vec<&str> = emails
        .iter()
        .map(|e| e["template"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        templates,
        ["payment_action_required", "payment_failed", "trial_ending"]
    );
    for email in &emails {
        assert_eq!(
            email["to"], "billing@globex.test",
            "Stripe's address for the customer"
        );
        assert_eq!(email["company_id"], "globex");
    }
    assert_eq!(
        emails[0]["data"]["hosted_invoice_url"],
        "https://invoice.stripe.com/i/in_1"
    );
    assert_eq!(emails[1]["data"]["amount_due"], "$49.00");
    assert_eq!(
        emails[1]["subject_id"],
        "invoice:in_1:payment_failed:attempt:1"
    );
    assert_eq!(
        emails[2]["data"],
        json!({ "plan": "pro", "trial_end": "2027-01-15" })
    );
    let actions = audit_actions(&t).await;
    for action in [
        "billing.customer_linked",
        "billing.subscription_created",
        "billing.payment_failed",
        "billing.payment_action_required",
        "billing.invoice_paid",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

on_both_databases!(a_checkout_links_the_customer_that_later_events_name);
async fn a_checkout_links_the_customer_that_later_events_name(backend: Backend) {
    // No Stripe key: the worker can only learn the company from the events themselves.
    let Some((t, base)) = configured_api(backend).await else {
        return;
    };
    let t0 = now() - 600;
    let anonymous =
        stripe_mock::subscription("sub_x", "cus_x", "active", PRICE_PRO, t0, t0 + 86_400);
    let (status, _) = deliver_signed(
        &base,
        &stripe_mock::event(
            "evt_sub_x",
            "customer.subscription.created",
            t0 + 1,
            anonymous,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let workers = start_workers(&t, &["billing"]);
    let job = jobs(&t, "billing").await.remove(0);
    let waiting = t
        .wait_for(job.id, Duration::from_secs(10), |j| !j.errors.is_empty())
        .await;
    assert!(
        waiting.errors[0]
            .error
            .contains("not linked to a company yet"),
        "{:?}",
        waiting.errors
    );
    deliver_and_apply(
        &t,
        &base,
        &stripe_mock::event(
            "evt_checkout",
            "checkout.session.completed",
            t0,
            stripe_mock::checkout_session("cs_1", "cus_x", "sub_x", "initech", "pay@initech.test"),
        ),
    )
    .await;
    // The subscription's job retries with backoff; run it now rather than wait (it may have
    // run again by itself already, which is just as good).
    let _ = store::retry(t.db.jobs().as_ref(), job.id).await;
    t.wait_state(job.id, JobState::Done, Duration::from_secs(10))
        .await;
    workers.shutdown().await;
    let linked = billing::customer(&t.db, "cus_x").await.unwrap().unwrap();
    assert_eq!(linked.company_id, "initech");
    assert_eq!(linked.email.as_deref(), Some("pay@initech.test"));
    assert_eq!(subscription(&t, "sub_x").await.company_id, "initech");
}

/// Runs `voxline ARGS` against this database with `config` as its `VOXLINE_CONFIG` file;
/// returns (exit code, stdout, stderr).
async fn voxline(t: &TestDb, config: &str, args: &[&str]) -> (i32, String, String) {
    let path = t.dir.path().join("billing-cli.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxline"));
    cmd.args(args)
        .env("VOXLINE_CONFIG", &path)
        .env("RUST_LOG", "warn");
    for (k, v) in &t.env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run voxline");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stores `status` on `plan` for acme's `id`, as an event at `at` would have.
async fn store_subscription(
    t: &TestDb,
    company: &str,
    id: &str,
    status: &str,
    plan: Option<&str>,
    at: i64,
) {
    let state = SubscriptionState {
        id: id.into(),
        customer_id: format!("cus_{company}"),
        status: status.into(),
        plan: plan.map(str::to_string),
        price_id: plan.map(|_| PRICE_PRO.to_string()),
        current_period_end: DateTime::from_timestamp(at + 30 * 86_400, 0),
        trial_end: None,
        cancel_at_period_end: false,
        canceled_at: None,
    };
    let mut tx = t.db.begin(Scope::Company(company)).await.unwrap();
    let stamp = Stamp {
        at: DateTime::from_timestamp(at, 0).unwrap(),
        rank: Source::Updated.rank(),
    };
    assert!(
        billing::save_subscription(&mut tx, company, &state, stamp, None, false)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
}

on_both_databases!(reconciliation_pages_through_stripe_and_repairs_seeded_drift);
async fn reconciliation_pages_through_stripe_and_repairs_seeded_drift(backend: Backend) {
    let mock = StripeMock::start().await;
    let t0 = now() - 86_400;
    let end = t0 + 30 * 86_400;
    // Stripe's truth: five subscriptions of five companies.
    for (company, status, price) in [
        ("acme", "active", PRICE_PRO),
        ("globex", "past_due", PRICE_PRO),
        ("initech", "active", PRICE_UNKNOWN),
        ("umbrella", "active", PRICE_PRO),
        ("hooli", "canceled", PRICE_PRO),
    ] {
        let customer = format!("cus_{company}");
        mock.put_subscription(stripe_mock::subscription(
            &format!("sub_{company}"),
            &customer,
            status,
            price,
            t0,
            end,
        ));
        mock.put_customer(stripe_mock::customer(&customer, None, Some(company)));
    }
    let config = format!("{}\n[billing]\nreconcile_page_size = 2\n", mock.config());
    // The command's own configuration file (one file cannot repeat a table).
    let cli_config = format!("{config}\n[plans.pro]\nstripe_prices = [\"{PRICE_PRO}\"]\n");
    let Some(t) = TestDb::new(backend, &[&configured(), &config]).await else {
        return;
    };
    // The local copy has drifted: acme is right, globex missed its past_due, initech has a
    // plan its price does not give, umbrella is missing, hooli missed its cancellation, and
    // wayne is not in this Stripe account at all.
    store_subscription(&t, "acme", "sub_acme", "active", Some("pro"), t0).await;
    store_subscription(&t, "globex", "sub_globex", "active", Some("pro"), t0).await;
    store_subscription(&t, "initech", "sub_initech", "active", Some("pro"), t0).await;
    store_subscription(&t, "hooli", "sub_hooli", "active", Some("pro"), t0).await;
    store_subscription(&t, "wayne", "sub_wayne", "active", Some("pro"), t0).await;
    for company in ["acme", "globex", "initech", "hooli", "wayne"] {
        billing::link_customer(&t.db, &format!("cus_{company}"), company, None)
            .await
            .unwrap();
    }

    let (code, out, err) = voxline(&t, &cli_config, &["billing", "reconcile", "--dry-run"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("dry run: listed=5 pages=3 created=1 updated=3 unchanged=1"),
        "{out}"
    );
    assert!(out.contains("would be created: sub_umbrella\n"), "{out}");
    assert!(
        out.contains("would be updated: sub_globex, sub_initech, sub_hooli\n"),
        "{out}"
    );
    assert!(out.contains("stored but not in Stripe: sub_wayne"), "{out}");
    assert_eq!(
        subscription(&t, "sub_globex").await.state.status,
        "active",
        "a dry run changes nothing"
    );
    assert!(
        billing::subscription(&t.db, "sub_umbrella")
            .await
            .unwrap()
            .is_none()
    );

    let (code, out, err) = voxline(&t, &cli_config, &["billing", "reconcile", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["created"], json!(["sub_umbrella"]));
    assert_eq!(
        report["updated"],
        json!(["sub_globex", "sub_initech", "sub_hooli"])
    );
    assert_eq!(report["unchanged"], 1);
    assert_eq!(report["pages"], 3);
    let pages = mock.requests("/v1/subscriptions");
    assert_eq!(pages.len(), 6, "three pages per run");
    assert_eq!(pages[3].query.get("limit").map(String::as_str), Some("2"));
    assert_eq!(
        pages[3].query.get("status").map(String::as_str),
        Some("all")
    );
    assert_eq!(pages[3].query.get("starting_after"), None);
    assert_eq!(
        pages[4].query.get("starting_after").map(String::as_str),
        Some("sub_globex")
    );
    assert_eq!(
        pages[5].query.get("starting_after").map(String::as_str),
        Some("sub_umbrella")
    );
    assert!(
        pages.iter().all(|r| r.stripe_version.is_some()),
        "async-stripe pins its API version"
    );

    assert_eq!(
        subscription(&t, "sub_globex").await.state.status,
        "past_due"
    );
    assert_eq!(subscription(&t, "sub_initech").await.state.plan, None);
    assert_eq!(subscription(&t, "sub_hooli").await.state.status, "canceled");
    let umbrella = subscription(&t, "sub_umbrella").await;
    assert_eq!(
        umbrella.company_id, "umbrella",
        "from the customer's metadata at Stripe"
    );
    assert_eq!(umbrella.state.plan.as_deref(), Some("pro"));
    assert_eq!(
        subscription(&t, "sub_wayne").await.state.status,
        "active",
        "left as it is"
    );
    let repaired = audit::recent(&t.db, Some("billing.subscription_repaired"), 10)
        .await
        .unwrap();
    assert_eq!(repaired.len(), 4);
    assert!(repaired.iter().all(|r| r.actor.starts_with("cli:")));
    let globex = repaired.iter().find(|r| r.target == "sub_globex").unwrap();
    assert_eq!(globex.details["changed"], json!(["status"]));

    // The hourly job finds nothing left to repair.
    let workers = start_workers(&t, &["billing"]);
    let id = t
        .enqueue(NewJob::new(
            "billing",
            billing::RECONCILE_JOB,
            json!({ "cron": "billing_reconcile" }),
        ))
        .await;
    t.wait_state(id, JobState::Done, Duration::from_secs(20))
        .await;
    workers.shutdown().await;
    let runs = audit::recent(&t.db, Some("billing.reconciled"), 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 3, "the dry run, the repair and the cron run");
    assert_eq!(runs[0].actor, "cron:billing_reconcile");
    assert_eq!(runs[0].details["unchanged"], 5);
    assert_eq!(runs[0].details["created"], json!([]));
    assert_eq!(runs[0].details["updated"], json!([]));
    assert_eq!(runs[0].details["missing_in_stripe"], json!(["sub_wayne"]));
}

/// A usage row for one analysed session at `at`.
async fn seed_usage(t: &TestDb, session: &str, company: &str, seconds: f64, at: DateTime<Utc>) {
    match &t.db {
        Db::Postgres(_) => {
            sqlx::query(
                "INSERT INTO usage_records (session_id, company_id, profile_id, seconds, recorded_at)
                 VALUES ($1, $2, 'p', $3, $4)",
            )
            .bind(session)
            .bind(company)
            .bind(seconds)
            .bind(at)
            .execute(t.owner())
            .await
            .unwrap();
        }
        Db::Sqlite(lite) => {
            sqlx::query(
                "INSERT INTO usage_records (session_id, company_id, profile_id, seconds, recorded_at)
                 VALUES (?, ?, 'p', ?, ?)",
            )
            .bind(session)
            .bind(company)
            .bind(seconds)
            .bind(at.timestamp_micros())
            .execute(&lite.pool)
            .await
            .unwrap();
        }
    }
}

fn hour_start(hours_ago: i64) -> DateTime<Utc> {
    let secs = (now() / 3600 - hours_ago) * 3600;
    DateTime::from_timestamp(secs, 0).unwrap()
}

on_both_databases!(usage_is_reported_to_the_meter_once_per_window);
async fn usage_is_reported_to_the_meter_once_per_window(backend: Backend) {
    let mock = StripeMock::start().await;
    let Some(t) = TestDb::new(backend, &[&configured(), &mock.config()]).await else {
        return;
    };
    billing::link_customer(&t.db, "cus_acme", "acme", None)
        .await
        .unwrap();
    let three = hour_start(3);
    let two = hour_start(2);
    seed_usage(
        &t,
        "s1",
        "acme",
        100.4,
        three + chrono::Duration::minutes(5),
    )
    .await;
    seed_usage(
        &t,
        "s2",
        "acme",
        200.0,
        three + chrono::Duration::minutes(50),
    )
    .await;
    seed_usage(&t, "s3", "acme", 59.6, two + chrono::Duration::minutes(1)).await;
    // Not billed through Stripe (no customer), and a window that has not closed yet.
    seed_usage(&t, "s4", "solo", 42.0, two).await;
    seed_usage(&t, "s5", "acme", 30.0, Utc::now()).await;
    // The first report reaches Stripe but its answer is lost on the way back.
    mock.fail_next(Endpoint::MeterEvents, &[Failure::LoseAnswer]);

    let workers = start_workers(&t, &["billing"]);
    let first = t
        .enqueue(NewJob::new("billing", billing::USAGE_REPORT_JOB, json!({})))
        .await;
    t.wait_state(first, JobState::Done, Duration::from_secs(20))
        .await;
    let second = t
        .enqueue(NewJob::new("billing", billing::USAGE_REPORT_JOB, json!({})))
        .await;
    t.wait_state(second, JobState::Done, Duration::from_secs(20))
        .await;
    workers.shutdown().await;

    let counted = mock.meter_events();
    assert_eq!(
        counted.len(),
        2,
        "two closed windows, each counted once: {counted:#?}"
    );
    assert_eq!(counted[0]["event_name"], "voxline_analysed_seconds");
    assert_eq!(counted[0]["payload"]["stripe_customer_id"], "cus_acme");
    assert_eq!(
        counted[0]["payload"]["value"], "300",
        "100.4 + 200.0 s, whole seconds"
    );
    assert_eq!(counted[0]["timestamp"], three.timestamp() + 3599);
    assert_eq!(counted[1]["payload"]["value"], "60");
    let posts = mock.requests("/v1/billing/meter_events");
    assert_eq!(
        posts.len(),
        3,
        "the lost answer's retry, then one per window; none the second run"
    );
    assert_eq!(
        posts[0].idempotency_key, posts[1].idempotency_key,
        "a retry is the same request"
    );
    assert_eq!(posts[0].form, posts[1].form);
    assert_eq!(
        posts[0].idempotency_key.as_deref(),
        posts[0].form.get("identifier").map(String::as_str),
        "the identifier is the idempotency key"
    );
    assert_ne!(
        posts[0].form.get("identifier"),
        posts[2].form.get("identifier")
    );
    let reports = billing::usage_reports(&t.db, three).await.unwrap();
    assert_eq!(reports.len(), 2);
    assert!(
        reports
            .iter()
            .all(|r| r.status == "reported" && r.company_id == "acme")
    );
}

/// Submits a short transcript for `company` as `profile`.
async fn submit(base: &str, company: &str, profile: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(token(company, profile, Role::Member, 600))
        .json(&json!({
            "title": "Quick call", "kind": "sales",
            "transcript": [{ "speaker": "user", "start": 0.0, "end": 2.0, "text": "Hello there." }]
        }))
        .send()
        .await
        .expect("the API answers")
}

async fn refused(response: reqwest::Response) -> (StatusCode, Option<u64>, Value) {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

on_both_databases!(over_a_plan_limit_intake_answers_429_naming_the_limit);
async fn over_a_plan_limit_intake_answers_429_naming_the_limit(backend: Backend) {
    let limits = "[plans.free]\nminutes_per_month = 10\nsessions_per_day = 3\n";
    let Some(t) = TestDb::new(backend, &[&configured(), limits]).await else {
        return;
    };
    let base = start_api(&t).await;
    for n in 1..=3 {
        let response = submit(&base, "acme", "ann").await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "session {n} of 3");
    }
    let (status, retry_after, body) = refused(submit(&base, "acme", "bob").await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert_eq!(body["error"]["field"], "sessions_per_day");
    let midnight = billing::day_bounds(Utc::now()).1;
    let until = (midnight - Utc::now()).num_seconds();
    let retry_after = retry_after.expect("Retry-After");
    assert!(
        retry_after as i64 >= until - 5 && retry_after as i64 <= until + 5,
        "Retry-After {retry_after} s is the time to midnight UTC ({until} s)"
    );
    assert_eq!(
        count(&t, "SELECT count(*) FROM sessions").await,
        3,
        "nothing stored"
    );

    // Minutes: just under the month's 10 is fine; at 10, the next session is refused.
    seed_usage(&t, "g1", "globex", 9.5 * 60.0, Utc::now()).await;
    assert_eq!(
        submit(&base, "globex", "gil").await.status(),
        StatusCode::ACCEPTED
    );
    seed_usage(&t, "g2", "globex", 30.0, Utc::now()).await;
    let (status, retry_after, body) = refused(submit(&base, "globex", "gil").await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["field"], "minutes_per_month");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("10 minutes")),
        "{body}"
    );
    let month_end = billing::month_bounds(Utc::now()).1;
    assert!(retry_after.expect("Retry-After") as i64 <= (month_end - Utc::now()).num_seconds() + 5);

    // The usage endpoint shows the same numbers.
    let usage = json_of(
        reqwest::Client::new()
            .get(format!("{base}/api/billing/usage"))
            .bearer_auth(token("globex", "gil", Role::Member, 600)),
    )
    .await;
    assert_eq!(usage["plan"]["name"], "free");
    assert_eq!(usage["month"]["minutes"], 10.0);
    assert_eq!(usage["month"]["limit_minutes"], 10);
    assert_eq!(usage["month"]["remaining_minutes"], 0.0);
    assert_eq!(usage["today"]["sessions"], 1);
    assert_eq!(usage["today"]["remaining"], 2);
}

on_both_databases!(submissions_racing_at_the_daily_limit_never_exceed_it);
async fn submissions_racing_at_the_daily_limit_never_exceed_it(backend: Backend) {
    let limits = "[plans.free]\nsessions_per_day = 3\n";
    let Some(t) = TestDb::new(backend, &[&configured(), limits]).await else {
        return;
    };
    let base = start_api(&t).await;
    // Twelve members submit at once, each seeing room under the limit before any commits.
    let racing = (0..12).map(|n| {
        let base = base.clone();
        tokio::spawn(async move { submit(&base, "acme", &format!("member-{n}")).await.status() })
    });
    let mut statuses = Vec::new();
    for outcome in futures::future::join_all(racing).await {
        statuses.push(outcome.expect("submission task"));
    }
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((accepted, refused), (3, 9), "{statuses:?}");
    assert_eq!(count(&t, "SELECT count(*) FROM sessions").await, 3);
}

/// `GET /api/billing/subscription` as member `profile` of `company`.
async fn subscription_shown(base: &str, company: &str, profile: &str) -> Value {
    json_of(
        reqwest::Client::new()
            .get(format!("{base}/api/billing/subscription"))
            .bearer_auth(token(company, profile, Role::Member, 600)),
    )
    .await
}

on_both_databases!(a_plan_that_needs_a_subscription_answers_402_without_a_usable_one);
async fn a_plan_that_needs_a_subscription_answers_402_without_a_usable_one(backend: Backend) {
    let paid_only = "[billing]\ndefault_plan = \"pro\"\n";
    let Some(t) = TestDb::new(backend, &[&configured(), paid_only]).await else {
        return;
    };
    let base = start_api(&t).await;
    let (status, retry_after, body) = refused(submit(&base, "acme", "ann").await).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(body["error"]["code"], "subscription_required");
    assert_eq!(body["error"]["field"], "subscription");
    assert_eq!(retry_after, None);

    store_subscription(&t, "acme", "sub_acme", "active", Some("pro"), now() - 60).await;
    assert_eq!(
        submit(&base, "acme", "ann").await.status(),
        StatusCode::ACCEPTED
    );
    let shown = subscription_shown(&base, "acme", "ann").await;
    assert_eq!(shown["plan"]["name"], "pro");
    assert_eq!(shown["subscription"]["id"], "sub_acme");
    assert_eq!(shown["subscription"]["status"], "active");
    assert_eq!(shown["subscription"]["usable"], true);

    // Another company sees its own (none), not acme's.
    let other = subscription_shown(&base, "globex", "gil").await;
    assert_eq!(other["company_id"], "globex");
    assert_eq!(other["subscription"], Value::Null);
    let anonymous = reqwest::Client::new()
        .get(format!("{base}/api/billing/subscription"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Unpaid is not usable: the company is back to needing one.
    store_subscription(&t, "acme", "sub_acme", "unpaid", Some("pro"), now()).await;
    let (status, _, body) = refused(submit(&base, "acme", "ann").await).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stripe_client_retries_outages_not_refusals_and_opens_its_circuit() {
    use voxline_workers::billing::stripe::{CallError, StripeApi};
    let mock = StripeMock::start().await;
    mock.put_customer(stripe_mock::customer(
        "cus_1",
        Some("a@b.test"),
        Some("acme"),
    ));
    let breaker = "[stripe]\ncircuit_threshold = 2\ncircuit_cooldown_ms = 60000\n";
    let settings = voxline_domain::Settings::from_toml_layers(&[&mock.config(), breaker]).unwrap();
    let api = StripeApi::from_settings(&settings.stripe)
        .unwrap()
        .expect("a key is set");
    let asked = || mock.requests("/v1/customers").len();

    // A 429 and a 503 are retried (with backoff) until the answer comes.
    mock.fail_next(
        Endpoint::Customers,
        &[Failure::Status(429), Failure::Status(503)],
    );
    let found = api.customer("cus_1").await.unwrap().expect("the customer");
    assert_eq!(found.company_id.as_deref(), Some("acme"));
    assert_eq!(asked(), 3);

    // A 404 is an answer: not retried, and the customer is simply not there.
    assert_eq!(api.customer("cus_missing").await.unwrap(), None);
    assert_eq!(asked(), 4);

    // An outage outlasting the retries (1 + max_retries = 4 requests) fails the call; two such
    // calls open the circuit, and then nothing is sent at all.
    mock.fail_next(Endpoint::Customers, &[Failure::Status(500); 8]);
    for _ in 0..2 {
        assert!(matches!(
            api.customer("cus_1").await,
            Err(CallError::Unavailable(_))
        ));
    }
    assert_eq!(asked(), 12);
    assert!(matches!(
        api.customer("cus_1").await,
        Err(CallError::CircuitOpen(_))
    ));
    assert_eq!(asked(), 12, "an open circuit sends nothing");
}
