//! Hardening of the HTTP surface: security headers, CORS from configuration, body limits, and
//! no configured secret ever written to the logs.

mod support;

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::{Backend, TestDb, eventually, free_port, signal, start_api, token};
use voxline_api::auth::Role;

#[tokio::test]
async fn answers_carry_security_headers_and_pages_keep_their_own_policy() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    let h = health.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(
        h["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    // The pages keep their own policy: their scripts and styles, from this origin only.
    for page in ["/admin", "/app"] {
        let answer = reqwest::get(format!("{base}{page}")).await.unwrap();
        let policy = answer.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(policy.contains("script-src 'self'"), "{page}: {policy}");
        assert!(policy.contains("style-src 'self'"), "{page}: {policy}");
        assert!(!policy.contains("unsafe-inline"), "{page}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{page}: {policy}"
        );
    }
}

#[tokio::test]
async fn only_configured_origins_pass_cors() {
    let layer = "[http]\ncors_origins = [\"https://app.example.com\"]\n";
    let Some(t) = TestDb::new(Backend::Sqlite, &[layer]).await else {
        return;
    };
    let base = start_api(&t).await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{base}/api/notifications/preferences"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = preflight("https://evil.example.net").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let Some(t) = TestDb::new(Backend::Sqlite, &["[http]\nbody_limit_bytes = 1024\n"]).await else {
        return;
    };
    let base = start_api(&t).await;
    let big: serde_json::Map<String, serde_json::Value> = (0..200)
        .map(|i| (format!("kind_{i:04}"), json!(true)))
        .collect();
    let response = reqwest::Client::new()
        .put(format!("{base}/api/notifications/preferences"))
        .bearer_auth(token("acme", "ann", Role::Member, 600))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
}

/// Sends a whole request — headers, then every byte of a `body_len`-byte body — before reading
/// anything, the way many HTTP clients do, and returns the status and JSON body of the answer.
/// Fails if the connection breaks while the body is being written.
async fn send_all_then_read(base: &str, head: &str, body_len: usize) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{head}\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        if let Err(e) = stream.write_all(&chunk[..n]).await {
            panic!("the connection broke after {sent} of {body_len} bytes, the answer lost: {e}");
        }
        sent += n;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.get(9..12).and_then(|s| s.parse().ok());
    let split = answer.split_once("\r\n\r\n");
    let (Some(status), Some((_, json))) = (status, split) else {
        panic!("not an HTTP answer: {answer}");
    };
    (status, serde_json::from_str(json).unwrap())
}

/// Refusals that come before the body has been read — no token; past the body limit — reach a
/// client that writes its whole body before reading, as JSON. (A server that simply closes
/// with the body unread makes the kernel reset the connection, and such a client only sees
/// "connection reset" or "broken pipe": the TCP reset problem of RFC 9112 §9.6.)
#[tokio::test]
async fn a_client_that_sends_its_whole_body_first_still_gets_the_refusal() {
    let Some(t) = TestDb::new(Backend::Sqlite, &["[http]\nbody_limit_bytes = 1048576\n"]).await
    else {
        return;
    };
    let base = start_api(&t).await;
    // Far more than the socket buffers on both sides hold, so most of it is still to be
    // written when the server answers.
    let body_len = 24 * 1024 * 1024;

    let (status, error) = send_all_then_read(&base, "POST /api/sessions HTTP/1.1", body_len).await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["error"]["field"], "Authorization");

    let bearer = token("acme", "ann", Role::Member, 600);
    let head =
        format!("PUT /api/notifications/preferences HTTP/1.1\r\nAuthorization: Bearer {bearer}");
    let (status, error) = send_all_then_read(&base, &head, body_len).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["error"]["code"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_secrets_never_reach_the_logs() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let secrets = [
        (
            "VOXLINE_STRIPE_SECRET_KEY",
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        ),
        ("VOXLINE_STRIPE_WEBHOOK_SECRET", "whsec_Zm9vYmFyYmF6cXV4"),
        (
            "VOXLINE_OPENAI_API_KEY",
            "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        ),
        (
            "VOXLINE_ELEVENLABS_WEBHOOK_SECRET",
            "el_wh_secret_0123456789abcdef",
        ),
        ("VOXLINE_SMTP_URL", "smtp://mailer:SmtpPa55word@127.0.0.1:1"),
    ];
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxline"));
    cmd.arg("serve")
        .env_remove("VOXLINE_CONFIG")
        .env("RUST_LOG", "debug")
        .env("VOXLINE_HTTP_ADDR", &addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in t
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(secrets)
    {
        cmd.env(k, v);
    }
    let mut serve = cmd.spawn().unwrap();
    // Read both pipes while serve runs: a debug-level process fills a pipe's buffer in
    // seconds, and unread it would block on its next log line.
    let drain = |pipe: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
        tokio::spawn(async move {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut out)
                    .await
                    .expect("read the logs");
            }
            out
        })
    };
    let stdout = drain(serve.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(serve.stderr.take().map(|p| Box::new(p) as _));
    let http = reqwest::Client::new();
    eventually("serve answers", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("http://{addr}/healthz"));
        async move { http.get(url).send().await.is_ok() }
    })
    .await;
    // Traffic that logs: good and bad tokens, an email that fails to send (SMTP refused).
    let operator = token("acme", "op", Role::Operator, 600);
    http.get(format!("http://{addr}/api/admin/queues"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    http.get(format!("http://{addr}/api/admin/queues"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    let email = voxline_jobs::payloads::EmailJob {
        company_id: None,
        profile_id: None,
        to: "ann@example.com".into(),
        subject_id: "x:1".into(),
        message: voxline_jobs::payloads::EmailMessage::TrialEnding(
            voxline_jobs::payloads::TrialEnding {
                plan: "pro".into(),
                trial_end: "2026-12-01".into(),
            },
        ),
    };
    let id = t
        .enqueue(voxline_jobs::JobArgs::to_job(&email).unwrap())
        .await;
    t.wait_for(id, Duration::from_secs(20), |j| !j.errors.is_empty())
        .await;
    signal(&serve, "-TERM").await;
    serve.wait().await.unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout.await.unwrap()),
        String::from_utf8_lossy(&stderr.await.unwrap())
    );
    assert!(
        logs.contains("HTTP listening"),
        "the logs were captured: {logs}"
    );
    let job = t.job(id).await;
    let stored = serde_json::to_string(&job.errors).unwrap();
    for (name, value) in secrets
        .iter()
        .map(|(n, v)| (*n, *v))
        .chain([("JWT", support::TEST_JWT_SECRET)])
    {
        let needle = value.rsplit_once(':').map(|(_, _)| value).unwrap_or(value);
        assert!(!logs.contains(needle), "{name} appears in the logs");
        assert!(
            !stored.contains(needle),
            "{name} appears in a stored job error"
        );
    }
    assert!(
        !logs.contains("SmtpPa55word") && !stored.contains("SmtpPa55word"),
        "the SMTP password leaked"
    );
}
