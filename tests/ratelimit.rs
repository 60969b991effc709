//! Rate limits on intake: per profile and per client IP, answered with 429, `Retry-After` and a
//! JSON error naming the limit; in one process by default, and shared by every API process
//! through Redis when `redis.url` is set.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestDb, eventually, free_port, redis_url, start_api, token};
use voxline_api::auth::Role;

fn transcript() -> Value {
    json!({
        "title": "Quick call", "kind": "sales",
        "transcript": [{ "speaker": "user", "start": 0.0, "end": 2.0, "text": "Hello there." }]
    })
}

async fn submit(base: &str, company: &str, profile: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(token(company, profile, Role::Member, 600))
        .json(&transcript())
        .send()
        .await
        .expect("send")
}

async fn assert_limited(response: reqwest::Response, limit: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["field"], limit);
}

fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

#[tokio::test]
async fn a_profile_over_its_intake_budget_gets_429_and_others_are_unaffected() {
    let limits = "[rate_limits]\nintake_per_profile = 3\nintake_per_ip = 1000\n";
    let Some(t) = TestDb::new(Backend::Sqlite, &[limits]).await else {
        return;
    };
    let base = start_api(&t).await;
    for _ in 0..3 {
        assert_eq!(
            submit(&base, "acme", "ann").await.status(),
            StatusCode::ACCEPTED
        );
    }
    assert_limited(submit(&base, "acme", "ann").await, "intake_per_profile").await;
    // The same profile name in another company is another budget, and so is a colleague.
    assert_eq!(
        submit(&base, "acme", "bob").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        voxline_domain::sessions::list(&t.db, "acme", None, 100)
            .await
            .expect("list")
            .len(),
        4,
        "the refused request stored nothing"
    );
}

#[tokio::test]
async fn one_client_address_over_its_budget_gets_429_whichever_profile_it_uses() {
    let limits = "[rate_limits]\nintake_per_profile = 1000\nintake_per_ip = 2\n";
    let Some(t) = TestDb::new(Backend::Sqlite, &[limits]).await else {
        return;
    };
    let base = start_api(&t).await;
    assert_eq!(
        submit(&base, "acme", "p1").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        submit(&base, "acme", "p2").await.status(),
        StatusCode::ACCEPTED
    );
    assert_limited(submit(&base, "acme", "p3").await, "intake_per_ip").await;
}

#[tokio::test]
async fn two_api_processes_share_one_budget_through_redis() {
    let Some(t) = TestDb::new(Backend::Postgres, &[]).await else {
        return;
    };
    if let Err(e) = voxline_domain::redis::ping(&redis_url(), Duration::from_secs(3)).await {
        support::service_missing("Redis", &e);
        return;
    }
    let env = [
        ("VOXLINE_REDIS_URL", redis_url()),
        ("VOXLINE_RATE_LIMITS__INTAKE_PER_PROFILE", "4".to_string()),
    ];
    let mut bases = Vec::new();
    let mut children = Vec::new();
    for _ in 0..2 {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.push(("VOXLINE_HTTP_ADDR", &addr));
        children.push(t.spawn_voxline(&["api"], &vars));
        let url = format!("http://{addr}");
        eventually(
            "the API process answers /healthz",
            Duration::from_secs(30),
            || {
                let url = format!("{url}/healthz");
                async move {
                    reqwest::get(url)
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
        bases.push(url);
    }
    // A fresh company and profile per run: the budget lives in the shared Redis.
    let (company, profile) = (unique("acme"), unique("ann"));
    for i in 0..4 {
        let response = submit(&bases[i % 2], &company, &profile).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "request {i}");
    }
    // Each process alone has seen only 2 of its 4; together they have spent the budget.
    for base in &bases {
        assert_limited(submit(base, &company, &profile).await, "intake_per_profile").await;
    }
    drop(children);
}

#[tokio::test]
async fn webhook_floods_from_one_address_get_429_before_any_signature_work() {
    let layer =
        "[rate_limits]\nwebhooks_per_ip = 2\n[elevenlabs]\nwebhook_secret = \"wsec_test\"\n";
    let Some(t) = TestDb::new(Backend::Sqlite, &[layer]).await else {
        return;
    };
    let base = start_api(&t).await;
    let deliver = || async {
        reqwest::Client::new()
            .post(format!("{base}/api/webhooks/elevenlabs"))
            .header("ElevenLabs-Signature", "t=1,v0=00")
            .body("{}")
            .send()
            .await
            .expect("send")
    };
    assert_eq!(deliver().await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(deliver().await.status(), StatusCode::UNAUTHORIZED);
    assert_limited(deliver().await, "webhooks_per_ip").await;
}

/// Behind one trusted proxy, the client is the address that proxy appended: whatever a client
/// writes into `X-Forwarded-For` itself, it stays one address with one budget.
#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_escape_the_per_ip_limit() {
    let limits = "[rate_limits]\nintake_per_profile = 1000\nintake_per_ip = 2\n\
                  [http]\ntrusted_proxies = 1\n";
    let Some(t) = TestDb::new(Backend::Sqlite, &[limits]).await else {
        return;
    };
    let base = start_api(&t).await;
    // The test plays the load balancer: it appends the real client's address.
    let through_proxy = |spoofed: String, real: &'static str| {
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/sessions"))
                .bearer_auth(token("acme", &unique("p"), Role::Member, 600))
                .header("x-forwarded-for", format!("{spoofed}, {real}"))
                .json(&transcript())
                .send()
                .await
                .expect("send")
        }
    };
    for n in 0..2 {
        let spoofed = format!("198.51.100.{n}");
        assert_eq!(
            through_proxy(spoofed, "203.0.113.7").await.status(),
            StatusCode::ACCEPTED
        );
    }
    assert_limited(
        through_proxy("198.51.100.99".into(), "203.0.113.7").await,
        "intake_per_ip",
    )
    .await;
    // Another real client behind the same proxy has its own budget.
    assert_eq!(
        through_proxy("198.51.100.99".into(), "203.0.113.8")
            .await
            .status(),
        StatusCode::ACCEPTED
    );
}
