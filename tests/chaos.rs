//! Real processes on PostgreSQL under failure: sessions submitted over HTTP (with
//! Idempotency-Keys, retried as a client would) while worker processes are `kill -9`ed again
//! and again, the API process is `kill -9`ed once and PostgreSQL itself restarts once (a cluster
//! of the test's own, `support::pg_cluster`). Afterwards every accepted session is ready, with
//! one usage row and one delivered email each, no session was created twice, and no job is
//! left unsettled or dead.
//!
//! The faults are tied to progress, not to a clock: the submissions are released in batches,
//! each batch's requests run while one fault happens, and the next batch waits until the
//! previous one has been answered.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::pg_cluster::PgCluster;
use support::{TestDb, free_port, signal};
use tokio::process::Child;
use tokio::sync::Semaphore;
use voxline_api::auth::{Claims, Keys, Role};

const SESSIONS: usize = 120;
const PROFILES: usize = 5;

/// What happens while one batch of submissions is under way.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `kill -9` of one worker process (taking turns), replaced at once.
    Worker,
    /// `kill -9` of the API process, replaced on the same address.
    Api,
    /// A PostgreSQL restart: every process's connections break at once.
    Database,
    /// Nothing: the last batch runs on a quiet system.
    None,
}

const SCHEDULE: [Fault; 10] = [
    Fault::Worker,
    Fault::Worker,
    Fault::Api,
    Fault::Worker,
    Fault::Database,
    Fault::Worker,
    Fault::Worker,
    Fault::Worker,
    Fault::Worker,
    Fault::None,
];
const BATCH: usize = SESSIONS.div_ceil(SCHEDULE.len());
const SETTLE: Duration = Duration::from_secs(60);

/// Engine settings for every process: quick rescue of a killed worker's jobs.
const FAST_ENV: &[(&str, &str)] = &[
    ("VOXLINE_ENGINE__POLL_INTERVAL_MS", "200"),
    ("VOXLINE_ENGINE__HEARTBEAT_INTERVAL_MS", "300"),
    ("VOXLINE_ENGINE__RESCUE_AFTER_MS", "2000"),
    ("VOXLINE_ENGINE__MAINTENANCE_INTERVAL_MS", "200"),
    ("VOXLINE_ENGINE__SHUTDOWN_GRACE_MS", "2000"),
    ("VOXLINE_QUEUE_DEFAULTS__BACKOFF_BASE_MS", "200"),
    ("VOXLINE_QUEUE_DEFAULTS__BACKOFF_CAP_MS", "1000"),
    ("VOXLINE_RATE_LIMITS__INTAKE_PER_PROFILE", "0"),
    ("VOXLINE_RATE_LIMITS__INTAKE_PER_IP", "0"),
];

fn token(profile: usize) -> String {
    let now = chrono::Utc::now().timestamp();
    Keys::hs256(support::TEST_JWT_SECRET)
        .mint(&Claims {
            sub: format!("p{profile}"),
            company_id: "acme".into(),
            role: Role::Member,
            email: Some(format!("p{profile}@acme.example")),
            iat: now,
            exp: now + 600,
        })
        .expect("mint")
}

fn transcript(n: usize) -> Value {
    json!({
        "title": format!("Call {n}"),
        "kind": "sales",
        "transcript": [
            { "speaker": "partner", "start": 0.0, "end": 3.0, "text": "Thanks for making time today." },
            { "speaker": "user", "start": 3.5, "end": 9.0, "text": "Of course. What would you like to get out of this quarter?" },
            { "speaker": "partner", "start": 9.5, "end": 14.0, "text": "Mostly a shorter onboarding." }
        ]
    })
}

/// The API process on a fixed address, so a restarted one takes the clients back.
struct Api {
    addr: String,
    child: Child,
}

impl Api {
    async fn start(t: &TestDb, addr: &str) -> Api {
        let mut env = FAST_ENV.to_vec();
        env.push(("VOXLINE_HTTP_ADDR", addr));
        let mut child = t.spawn_voxline(&["api"], &env);
        until_up(
            &mut child,
            "the API process",
            &format!("http://{addr}/healthz"),
        )
        .await;
        Api {
            addr: addr.to_string(),
            child,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A `voxline worker` process (every queue, and the scheduler), started and running: its
/// metrics listener, which it opens once its pools run, answers.
async fn start_worker(t: &TestDb) -> Child {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut env = FAST_ENV.to_vec();
    env.push(("VOXLINE_METRICS__WORKER_ADDR", &addr));
    let mut child = t.spawn_voxline(&["worker"], &env);
    until_up(
        &mut child,
        "a worker process",
        &format!("http://{addr}/metrics"),
    )
    .await;
    child
}

/// Waits until `url` answers 200; fails at once if the process exits instead.
async fn until_up(child: &mut Child, what: &str, url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("poll the child process") {
            panic!("{what} exited during its start: {status}");
        }
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not come up within 30 s ({url})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kill -9`s a child and reaps it.
async fn kill(child: &mut Child) {
    signal(child, "-KILL").await;
    let status = child.wait().await.expect("reap the killed process");
    assert!(!status.success(), "kill -9 must not look like a clean exit");
}

/// Submits session `n` until it is accepted, as a client would: the same Idempotency-Key on
/// every try, again after a refused connection, a broken-off answer or a 503. Anything else
/// is a defect. Returns the session's id.
async fn submit(base: &str, n: usize) -> String {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let token = token(n % PROFILES);
    let key = format!("chaos-{n}");
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let sent = http
            .post(format!("{base}/api/sessions"))
            .bearer_auth(&token)
            .header("Idempotency-Key", &key)
            .json(&transcript(n))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == StatusCode::ACCEPTED => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if let Some(id) = body["id"].as_str() {
                    return id.to_string();
                }
                // The answer broke off after its status line: ask again.
            }
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {}
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                panic!("session {n}: {status} {body}");
            }
            Err(_) => {} // the API process is down or went down mid-request
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session {n} not accepted within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(t: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(t.owner())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Jobs that are not final yet, and not merely waiting for a time in the future (cron ticks).
const UNSETTLED: &str = "SELECT count(*) FROM jobs WHERE state IN ('available', 'running', 'retrying') \
     OR (state = 'scheduled' AND run_at <= now())";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_sessions_survive_killed_workers_a_killed_api_and_a_database_restart() {
    let Some(cluster) = PgCluster::start().await else {
        return;
    };
    let t = cluster.test_db(&[]).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut api = Api::start(&t, &addr).await;
    let base = api.base();
    let mut workers = vec![start_worker(&t).await, start_worker(&t).await];

    // The clients: each waits for a permit, which the fault loop below hands out per batch.
    let permits = Arc::new(Semaphore::new(0));
    let answered = Arc::new(Semaphore::new(0));
    let clients: Vec<_> = (0..SESSIONS)
        .map(|n| {
            let (permits, answered, base) = (permits.clone(), answered.clone(), base.clone());
            tokio::spawn(async move {
                permits.acquire().await.expect("permits open").forget();
                let id = submit(&base, n).await;
                answered.add_permits(1);
                id
            })
        })
        .collect();

    let mut released = 0;
    let mut victim = 0;
    for fault in SCHEDULE {
        let batch = BATCH.min(SESSIONS - released);
        permits.add_permits(batch);
        released += batch;
        match fault {
            Fault::Worker => {
                victim = (victim + 1) % workers.len();
                kill(&mut workers[victim]).await;
                workers[victim] = start_worker(&t).await;
            }
            Fault::Api => {
                kill(&mut api.child).await;
                api = Api::start(&t, &addr).await;
            }
            Fault::Database => cluster.restart().await,
            Fault::None => {}
        }
        // The batch is answered (retried through the fault) before the next one is released.
        let done = answered
            .acquire_many(batch as u32)
            .await
            .expect("answers open");
        done.forget();
    }
    assert_eq!(released, SESSIONS);

    let mut ids = BTreeSet::new();
    for client in clients {
        ids.insert(client.await.expect("a client task ends"));
    }
    assert_eq!(ids.len(), SESSIONS, "each submission has its own session");

    let ready = "SELECT count(*) FROM sessions WHERE status = 'ready'";
    settle(&t, "every session is ready", ready, SESSIONS as i64).await;
    // Exactly the accepted sessions, nothing created twice by a retried submission.
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM sessions")
        .fetch_all(t.owner())
        .await
        .expect("sessions");
    assert_eq!(stored.len(), SESSIONS, "no session was created twice");
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), ids);
    // One usage row per session.
    let usage: Vec<(String, i64)> =
        sqlx::query_as("SELECT session_id, count(*) FROM usage_records GROUP BY session_id")
            .fetch_all(t.owner())
            .await
            .expect("usage");
    let usage: BTreeMap<String, i64> = usage.into_iter().collect();
    for id in &ids {
        assert_eq!(usage.get(id), Some(&1), "usage rows of session {id}");
    }
    assert_eq!(usage.len(), SESSIONS);
    let sent =
        "SELECT count(*) FROM email_log WHERE template = 'feedback_ready' AND status = 'sent'";
    settle(&t, "every email is sent", sent, SESSIONS as i64).await;
    settle(&t, "no job is left unsettled", UNSETTLED, 0).await;

    // One delivered email per session: one `sent` row, and every message in the outbox is one
    // of those (a resend after a crash mid-send carries the same Message-ID).
    let sent: Vec<(String, String)> = sqlx::query_as(
        "SELECT subject_id, message_id FROM email_log WHERE template = 'feedback_ready' AND status = 'sent'",
    )
    .fetch_all(t.owner())
    .await
    .expect("email log");
    let subjects: BTreeSet<String> = sent.iter().map(|(s, _)| s.clone()).collect();
    let expected: BTreeSet<String> = ids.iter().map(|id| format!("session:{id}")).collect();
    assert_eq!(subjects, expected, "one feedback email per session");
    let logged: BTreeSet<String> = sent
        .iter()
        .map(|(_, m)| m.trim_matches(['<', '>']).to_string())
        .collect();
    let delivered = outbox_message_ids(&t.dir.path().join("outbox"));
    assert_eq!(
        delivered, logged,
        "the outbox holds exactly the logged emails"
    );
    // Nothing dead, nothing waiting that should have run.
    assert_eq!(
        count(&t, "SELECT count(*) FROM jobs WHERE state = 'dead'").await,
        0
    );
    assert_eq!(count(&t, UNSETTLED).await, 0);

    for mut worker in workers {
        signal(&worker, "-TERM").await;
        assert!(worker.wait().await.expect("worker exits").success());
    }
    signal(&api.child, "-TERM").await;
    assert!(api.child.wait().await.expect("api exits").success());
}

/// Waits until `sql` counts `want`; past [`SETTLE`], fails with what the jobs and emails are at.
async fn settle(t: &TestDb, what: &str, sql: &'static str, want: i64) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let have = count(t, sql).await;
        if have == want {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{what}: {have} instead of {want} after {SETTLE:?}\n{}",
                diagnosis(t).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Jobs by queue and state, the errors of unfinished or dead ones, emails by status.
async fn diagnosis(t: &TestDb) -> String {
    let jobs: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state ORDER BY queue, state",
    )
    .fetch_all(t.owner())
    .await
    .unwrap_or_default();
    let stuck: Vec<(i64, String, String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT id, queue, kind, state, attempt, errors::text FROM jobs \
         WHERE state NOT IN ('done', 'cancelled') ORDER BY id LIMIT 20",
    )
    .fetch_all(t.owner())
    .await
    .unwrap_or_default();
    let emails: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM email_log GROUP BY status")
            .fetch_all(t.owner())
            .await
            .unwrap_or_default();
    format!("jobs: {jobs:?}\nnot done: {stuck:#?}\nemails: {emails:?}")
}

/// The distinct Message-IDs of the `.eml` files in `dir`.
fn outbox_message_ids(dir: &std::path::Path) -> BTreeSet<String> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading the outbox {}: {e}", dir.display()));
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "eml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("Message-ID:")
                        .or_else(|| l.strip_prefix("Message-Id:"))
                })
                .map(|id| id.trim().trim_matches(['<', '>']).to_string())
                .unwrap_or_else(|| panic!("{} has no Message-ID", path.display()))
        })
        .collect()
}
