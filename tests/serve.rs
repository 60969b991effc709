//! `voxline serve` as a user runs it: HTTP health and readiness (with Redis), jobs worked in
//! the same process, and a clean exit on SIGTERM.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Backend, TestDb, eventually, free_port, service_missing, signal};
use voxline_jobs::{JobState, NewJob};
use voxline_workers::diag;

async fn redis_reachable() -> bool {
    match voxline_domain::redis::ping(&support::redis_url(), Duration::from_secs(3)).await {
        Ok(()) => true,
        Err(e) => {
            service_missing("Redis", &e);
            false
        }
    }
}

on_both_databases!(serve_answers_health_and_readiness_and_works_jobs);
async fn serve_answers_health_and_readiness_and_works_jobs(backend: Backend) {
    if !redis_reachable().await {
        return;
    }
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let redis = support::redis_url();
    let mut serve = t.spawn_voxline(
        &["serve"],
        &[("VOXLINE_HTTP_ADDR", &addr), ("VOXLINE_REDIS_URL", &redis)],
    );
    let http = reqwest::Client::new();
    eventually("serve answers /healthz", Duration::from_secs(30), || {
        let http = http.clone();
        let url = format!("http://{addr}/healthz");
        async move { http.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;

    let ready = support::api::json_of(http.get(format!("http://{addr}/readyz"))).await;
    let database = if backend == Backend::Postgres {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(
        ready,
        json!({ "status": "ready", "database": database, "redis": "ok" })
    );

    let id = t
        .enqueue(NewJob::new("maintenance", diag::NOOP, json!({})))
        .await;
    t.wait_state(id, JobState::Done, Duration::from_secs(20))
        .await;

    signal(&serve, "-TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(20), serve.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn readiness_fails_with_a_json_error_when_redis_is_down() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let mut api = t.spawn_voxline(
        &["api"],
        &[
            ("VOXLINE_HTTP_ADDR", &addr),
            ("VOXLINE_REDIS_URL", &dead_redis),
        ],
    );
    let http = reqwest::Client::new();
    eventually("api answers /healthz", Duration::from_secs(30), || {
        let http = http.clone();
        let url = format!("http://{addr}/healthz");
        async move { http.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let response = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready");
    assert_eq!(body["error"]["message"], "redis is not reachable");
    signal(&api, "-TERM").await;
    assert!(api.wait().await.unwrap().success());
}

#[tokio::test]
async fn a_taken_port_fails_the_start() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxline"))
        .arg("serve")
        .envs(t.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("VOXLINE_HTTP_ADDR", &addr)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("http.addr: cannot listen on {addr}")),
        "{stderr}"
    );
}
