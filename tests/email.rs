//! The email worker against a real SMTP server on loopback (aiosmtpd, `tests/smtp_server.py`),
//! and the preferences API, on both databases.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::api::{answer, json_of};
use support::{Backend, TestDb, free_port, service_missing, start_api, token};
use tokio::io::{AsyncBufReadExt, BufReader};
use voxline_api::auth::Role;
use voxline_domain::notifications::{self, EmailKind};
use voxline_jobs::payloads::{EmailJob, EmailMessage, FeedbackReady, PaymentFailed};
use voxline_jobs::{DbJobs, JobArgs};
use voxline_jobs::{Job, JobId, JobState, Runner, RunnerHandle};
use voxline_workers::email::dedupe_key;

const LONG: Duration = Duration::from_secs(20);

/// A running aiosmtpd that writes what it accepts into `dir`.
struct SmtpServer {
    _child: tokio::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl SmtpServer {
    async fn start() -> Option<SmtpServer> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut child = match tokio::process::Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                service_missing("python3 (for the aiosmtpd test server)", &e);
                return None;
            }
        };
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "READY" => Some(SmtpServer {
                _child: child,
                dir,
                port,
            }),
            other => {
                service_missing(
                    "the aiosmtpd test server (pip install aiosmtpd)",
                    &format!("{other:?}"),
                );
                None
            }
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn messages(&self) -> Vec<String> {
        read_emls(self.dir.path())
    }
}

fn read_emls(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Undoes quoted-printable soft breaks and escapes, so assertions read the rendered text.
fn decoded(message: &str) -> String {
    let unfolded = message.replace("=\r\n", "").replace("=\n", "");
    let mut out = String::new();
    let bytes = unfolded.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(b) = escaped {
            out.push(b as char);
            i += 3;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

fn engine_layer(smtp_url: &str) -> String {
    format!(
        "[smtp]\nurl = \"{smtp_url}\"\ntimeout_ms = 3000\n[email]\npublic_base_url = \"https://app.example.com\"\n\
         [engine]\npoll_interval_ms = 100\n[queues.email]\nbackoff_base_ms = 200\nbackoff_cap_ms = 400\nmax_attempts = 5\n"
    )
}

/// An SMTP server and a database whose settings send mail to it.
async fn deployment(backend: Backend) -> Option<(SmtpServer, TestDb)> {
    let smtp = SmtpServer::start().await?;
    let layer = engine_layer(&smtp.url());
    let t = TestDb::new(backend, &[&layer]).await?;
    Some((smtp, t))
}

fn start_workers(t: &TestDb) -> RunnerHandle {
    let handlers = voxline_workers::handlers(&t.db, &t.settings).expect("handlers");
    Runner::new(t.db.clone(), t.settings.clone(), handlers)
        .queues(vec!["email".into()])
        .start()
}

fn feedback_email(to: &str, session: &str) -> EmailJob {
    EmailJob {
        company_id: Some("acme".into()),
        profile_id: Some("ann".into()),
        to: to.into(),
        subject_id: format!("session:{session}"),
        message: EmailMessage::FeedbackReady(FeedbackReady {
            session_id: session.into(),
            session_title: "Discovery call with Globex".into(),
            overall_score: Some(4.2),
        }),
    }
}

async fn send(t: &TestDb, email: EmailJob) -> JobId {
    t.enqueue(email.to_job().unwrap()).await
}

/// Enqueues `email` and waits until its job reaches `state`.
async fn sent(t: &TestDb, email: EmailJob, state: JobState) -> Job {
    let id = send(t, email).await;
    t.wait_state(id, state, LONG).await
}

/// What the notification log says of the feedback email about `session` to `to`.
async fn feedback_status(t: &TestDb, to: &str, session: &str) -> Option<String> {
    let subject = format!("session:{session}");
    status_of(t, to, EmailKind::FeedbackReady, &subject).await
}

async fn status_of(t: &TestDb, to: &str, kind: EmailKind, subject: &str) -> Option<String> {
    notifications::logged(&t.db, &dedupe_key(to, kind.as_str(), subject))
        .await
        .unwrap()
        .map(|l| l.status)
}

on_both_databases!(a_feedback_email_arrives_with_headers_and_both_parts);
async fn a_feedback_email_arrives_with_headers_and_both_parts(backend: Backend) {
    let Some((smtp, t)) = deployment(backend).await else {
        return;
    };
    let workers = start_workers(&t);
    sent(&t, feedback_email("ann@example.com", "s42"), JobState::Done).await;
    workers.shutdown().await;

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let m = decoded(&messages[0]);
    let key = dedupe_key("ann@example.com", "feedback_ready", "session:s42");
    assert!(m.contains("From: voxline <no-reply@voxline.local>"), "{m}");
    assert!(m.contains("To: ann@example.com"));
    assert!(
        m.contains("Subject: Your feedback for \"Discovery call with Globex\" is ready"),
        "{m}"
    );
    assert!(
        m.contains(&format!("Message-ID: <{}@voxline>", &key[..32])),
        "{m}"
    );
    assert!(m.contains("multipart/alternative"));
    assert!(m.contains("Content-Type: text/plain; charset=utf-8"));
    assert!(m.contains("Content-Type: text/html; charset=utf-8"));
    assert!(m.contains("is ready (overall score 4.2)."), "{m}");
    assert!(m.contains("Read it here: https://app.example.com/sessions/s42"));
    assert!(m.contains("<a href=\"https://app.example.com/sessions/s42\">Read your feedback</a>"));
    assert_eq!(
        feedback_status(&t, "ann@example.com", "s42")
            .await
            .as_deref(),
        Some("sent")
    );
}

on_both_databases!(a_451_is_retried_and_the_message_is_delivered_once);
async fn a_451_is_retried_and_the_message_is_delivered_once(backend: Backend) {
    let Some((smtp, t)) = deployment(backend).await else {
        return;
    };
    let workers = start_workers(&t);
    let job = sent(
        &t,
        feedback_email("flaky@example.com", "s1"),
        JobState::Done,
    )
    .await;
    workers.shutdown().await;
    assert_eq!(job.attempt, 2);
    assert!(job.errors[0].error.contains("451"), "{:?}", job.errors);
    assert_eq!(smtp.messages().len(), 1);
}

on_both_databases!(a_550_is_dead_and_the_address_is_suppressed_for_later_sends);
async fn a_550_is_dead_and_the_address_is_suppressed_for_later_sends(backend: Backend) {
    let Some((smtp, t)) = deployment(backend).await else {
        return;
    };
    let workers = start_workers(&t);
    let dead = sent(
        &t,
        feedback_email("bounce@example.com", "s1"),
        JobState::Dead,
    )
    .await;
    assert_eq!(dead.attempt, 1, "a permanent refusal is not retried");
    let reply = dead.last_error.unwrap();
    assert!(
        reply.contains("550") && reply.contains("mailbox unavailable"),
        "{reply}"
    );
    assert!(
        notifications::is_suppressed(&t.db, "Bounce@Example.com")
            .await
            .unwrap()
            .is_some()
    );

    sent(
        &t,
        feedback_email("bounce@example.com", "s2"),
        JobState::Done,
    )
    .await;
    workers.shutdown().await;
    assert_eq!(
        feedback_status(&t, "bounce@example.com", "s2")
            .await
            .as_deref(),
        Some("suppressed_address")
    );
    assert!(smtp.messages().is_empty());
}

on_both_databases!(the_same_email_enqueued_twice_is_sent_once);
async fn the_same_email_enqueued_twice_is_sent_once(backend: Backend) {
    let Some((smtp, t)) = deployment(backend).await else {
        return;
    };
    let workers = start_workers(&t);
    sent(&t, feedback_email("ann@example.com", "s7"), JobState::Done).await;
    sent(&t, feedback_email("ANN@example.com", "s7"), JobState::Done).await;
    workers.shutdown().await;
    assert_eq!(
        smtp.messages().len(),
        1,
        "a duplicated event must not send twice"
    );
}

on_both_databases!(an_opted_out_kind_is_recorded_not_sent_but_payment_mail_always_goes);
async fn an_opted_out_kind_is_recorded_not_sent_but_payment_mail_always_goes(backend: Backend) {
    let Some((smtp, t)) = deployment(backend).await else {
        return;
    };
    let changes = [
        (EmailKind::FeedbackReady, false),
        (EmailKind::PaymentFailed, false),
    ]
    .into_iter()
    .collect();
    notifications::set_preferences(&t.db, "acme", "ann", &changes)
        .await
        .unwrap();
    let workers = start_workers(&t);
    let feedback = send(&t, feedback_email("ann@example.com", "s3")).await;
    let payment = send(
        &t,
        EmailJob {
            company_id: Some("acme".into()),
            profile_id: Some("ann".into()),
            to: "ann@example.com".into(),
            subject_id: "invoice:in_1".into(),
            message: EmailMessage::PaymentFailed(PaymentFailed {
                invoice_id: "in_1".into(),
                amount_due: "$49.00".into(),
                hosted_invoice_url: Some("https://pay.example.com/in_1".into()),
            }),
        },
    )
    .await;
    t.wait_state(feedback, JobState::Done, LONG).await;
    t.wait_state(payment, JobState::Done, LONG).await;
    workers.shutdown().await;
    assert_eq!(
        feedback_status(&t, "ann@example.com", "s3")
            .await
            .as_deref(),
        Some("suppressed_preference")
    );
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert!(decoded(&messages[0]).contains("Subject: Payment failed for invoice in_1"));
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let closed = free_port();
    let layer = engine_layer(&format!("smtp://127.0.0.1:{closed}"));
    let Some(t) = TestDb::new(Backend::Sqlite, &[&layer]).await else {
        return;
    };
    let workers = start_workers(&t);
    let id = send(&t, feedback_email("ann@example.com", "s1")).await;
    let job = t
        .wait_for(id, LONG, |j| {
            j.attempt >= 2 && j.state == JobState::Retrying
        })
        .await;
    workers.shutdown().await;
    assert!(!job.errors.is_empty());
    assert_eq!(
        feedback_status(&t, "ann@example.com", "s1")
            .await
            .as_deref(),
        Some("failed")
    );
}

#[tokio::test]
async fn without_smtp_the_email_is_written_to_the_outbox() {
    let Some(t) = TestDb::new(Backend::Sqlite, &["[engine]\npoll_interval_ms = 100\n"]).await
    else {
        return;
    };
    let workers = start_workers(&t);
    sent(&t, feedback_email("ann@example.com", "s5"), JobState::Done).await;
    workers.shutdown().await;
    let outbox = read_emls(&t.dir.path().join("outbox"));
    assert_eq!(outbox.len(), 1);
    assert!(decoded(&outbox[0]).contains("Read it here: http://127.0.0.1:8080/sessions/s5"));
}

on_both_databases!(preferences_are_read_and_changed_over_http);
async fn preferences_are_read_and_changed_over_http(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let url = format!("{base}/api/notifications/preferences");
    let ann = token("acme", "ann", Role::Member, 600);
    let http = reqwest::Client::new();

    let all = json_of(http.get(&url).bearer_auth(&ann)).await;
    let prefs = all["preferences"].as_array().unwrap();
    assert_eq!(prefs.len(), 6);
    assert!(prefs.iter().all(|p| p["enabled"] == true));
    let mandatory: Vec<&str> = prefs
        .iter()
        .filter(|p| p["mandatory"] == true)
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(mandatory, ["payment_failed", "payment_action_required"]);

    let turn_off_trial_ending = http.put(&url).bearer_auth(&ann);
    let (status, body) =
        answer(turn_off_trial_ending.json(&json!({ "trial_ending": false }))).await;
    assert_eq!(status, StatusCode::OK);
    let trial = body["preferences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "trial_ending")
        .unwrap()
        .clone();
    assert_eq!(trial["enabled"], false);

    for (payload, field, code) in [
        (
            json!({ "payment_failed": false }),
            "payment_failed",
            "mandatory_kind",
        ),
        (json!({ "newsletter": false }), "newsletter", "unknown_kind"),
        (
            json!({ "trial_ending": "no" }),
            "trial_ending",
            "invalid_value",
        ),
    ] {
        let (status, body) = answer(http.put(&url).bearer_auth(&ann).json(&payload)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["field"], field);
        assert_eq!(body["error"]["code"], code);
    }
    let broken = http
        .put(&url)
        .bearer_auth(&ann)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        broken.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );

    // Another profile's preferences are its own.
    let bob = json_of(
        http.get(&url)
            .bearer_auth(token("acme", "bob", Role::Member, 600)),
    )
    .await;
    assert!(
        bob["preferences"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["enabled"] == true)
    );
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let audit = voxline_domain::audit::recent(&t.db, Some("preferences.update"), 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].details, json!({ "trial_ending": false }));
}

on_both_databases!(the_same_job_run_twice_sends_one_message);
async fn the_same_job_run_twice_sends_one_message(backend: Backend) {
    let Some((smtp, t)) = deployment(backend).await else {
        return;
    };
    send(&t, feedback_email("ann@example.com", "s9")).await;
    let job =
        t.db.jobs()
            .claim("email", "twice", 1)
            .await
            .unwrap()
            .remove(0);
    let handlers = voxline_workers::handlers(&t.db, &t.settings).unwrap();
    let handler = handlers.get(voxline_jobs::payloads::EMAIL_SEND).unwrap();
    handler.run(job.clone()).await.unwrap();
    // As if the job were rescued after its worker died before recording the outcome.
    handler.run(job).await.unwrap();
    assert_eq!(smtp.messages().len(), 1);
}
