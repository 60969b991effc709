//! Real processes on PostgreSQL under failure: sessions submitted over HTTP (with
//! Idempotency-Keys, retried as a client would) while worker processes are `kill -9`ed again
//! and again, the API process is `kill -9`ed once and PostgreSQL itself restarts once (a cluster
//! of the test's own, `support::pg_cluster`). The sessions' companies are billed through Stripe
//! (the billing tests' local server, `support::stripe_mock`), and their usage is reported to
//! Stripe's meter during the faults. Afterwards every accepted session is ready, with one usage
//! row and one delivered email each, no session was created twice, every closed usage window
//! was reported and counted by Stripe exactly once, and no job is left unsettled or dead.
//!
//! The faults are tied to progress, not to a clock: the submissions are released in batches,
//! each batch's requests run while one fault happens, and the next batch waits until the
//! previous one has been answered. A worker is killed, and PostgreSQL stopped, while a usage
//! report is in flight: Stripe has counted its meter event and holds the answer back.
//!
//! Usage is only reported for windows that closed at least five minutes before, so before each
//! of those faults the test dates the usage of the sessions ready so far into a past hour of its
//! own (one statement: a report sees all of that hour's usage or none of it).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::pg_cluster::PgCluster;
use support::stripe_mock::{self, PRICE_PRO, StripeMock};
use support::{TestDb, free_port, signal};
use tokio::process::Child;
use tokio::sync::Semaphore;
use voxline_api::auth::{Claims, Keys, Role};
use voxline_api::webhooks::stripe::signature_header;
use voxline_domain::billing;
use voxline_jobs::NewJob;
use voxline_jobs::queues;

const SESSIONS: usize = 120;
const PROFILES: usize = 5;
/// The profiles' companies (profile `p` is in `COMPANIES[p % 2]`), each billed through Stripe.
const COMPANIES: [&str; 2] = ["acme", "globex"];
const WEBHOOK_SECRET: &str = "whsec_voxline_chaos_0123456789abcdef";
/// `billing.usage_window_secs` (the default): usage is reported per company and hour.
const WINDOW_SECS: i64 = 3600;

/// What happens while one batch of submissions is under way.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `kill -9` of the worker process reporting usage (of both, when both are), while Stripe
    /// holds back the answer to an event it counted; replaced at once.
    Worker,
    /// `kill -9` of the API process, replaced on the same address.
    Api,
    /// A PostgreSQL restart while a usage report is in flight: its worker gets Stripe's answer
    /// while the database is down. Every process's connections break at once.
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

/// The settings every process reads (`VOXLINE_CONFIG`) besides [`FAST_ENV`]: Stripe is the
/// mock, its webhooks are signed with [`WEBHOOK_SECRET`], and its price is the `pro` plan's.
fn billing_config(mock: &StripeMock) -> String {
    format!(
        "{}webhook_secret = \"{WEBHOOK_SECRET}\"\n[plans.pro]\nstripe_prices = [\"{PRICE_PRO}\"]\n",
        mock.config()
    )
}

fn company(profile: usize) -> &'static str {
    COMPANIES[profile % COMPANIES.len()]
}

fn token(profile: usize) -> String {
    let now = chrono::Utc::now().timestamp();
    let company = company(profile);
    Keys::hs256(support::TEST_JWT_SECRET)
        .mint(&Claims {
            sub: format!("p{profile}"),
            company_id: company.into(),
            role: Role::Member,
            email: Some(format!("p{profile}@{company}.example")),
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
    async fn start(t: &TestDb, env: &[(&str, &str)], addr: &str) -> Api {
        let mut env = env.to_vec();
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
async fn start_worker(t: &TestDb, env: &[(&str, &str)]) -> Child {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut env = env.to_vec();
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
    let mock = StripeMock::start().await;
    let billing_config = billing_config(&mock);
    let t = cluster.test_db(&[&billing_config]).await;
    let config = t.dir.path().join("billing.toml");
    std::fs::write(&config, &billing_config).expect("write the processes' settings");
    let config = config.display().to_string();
    let mut env = FAST_ENV.to_vec();
    env.push(("VOXLINE_CONFIG", &config));
    let mut hours = PastHours::before(Utc::now());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut api = Api::start(&t, &env, &addr).await;
    let base = api.base();
    let mut workers = vec![start_worker(&t, &env).await, start_worker(&t, &env).await];
    subscribe(&t, &mock, &base).await;

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
    for fault in SCHEDULE {
        let batch = BATCH.min(SESSIONS - released);
        permits.add_permits(batch);
        released += batch;
        match fault {
            Fault::Worker => {
                let reporting = report_in_flight(&t, &mock, &workers, &mut hours).await;
                for &i in &reporting {
                    kill(&mut workers[i]).await;
                }
                mock.release_meter_events();
                for i in reporting {
                    workers[i] = start_worker(&t, &env).await;
                }
            }
            Fault::Api => {
                kill(&mut api.child).await;
                api = Api::start(&t, &env, &addr).await;
            }
            Fault::Database => {
                report_in_flight(&t, &mock, &workers, &mut hours).await;
                cluster.stop().await;
                // Stripe's answer reaches its worker while the database is down.
                mock.release_meter_events();
                let deadline = tokio::time::Instant::now() + SETTLE;
                while mock.held_meter_events() > 0 {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "held meter events not answered within {SETTLE:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                cluster.start_again().await;
            }
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

    // The last sessions' usage goes into a closed hour of its own, and is reported too.
    until_new_usage(&t, &hours).await;
    date_usage(&t, &mut hours).await;
    enqueue_report(&t).await;
    let windows = usage_windows(&t).await;
    let reported = "SELECT count(*) FROM usage_reports WHERE status = 'reported'";
    settle(
        &t,
        "every closed hour with usage is reported",
        reported,
        windows.len() as i64,
    )
    .await;
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
    // One meter event per closed hour with usage, every session's seconds in one of them.
    assert_eq!(
        windows
            .keys()
            .map(|(c, _)| c.as_str())
            .collect::<BTreeSet<_>>(),
        COMPANIES.into_iter().collect(),
        "both companies' usage is dated into closed hours: {windows:?}"
    );
    assert!(
        windows.keys().all(|(_, start)| *start < hours.this_hour),
        "no usage is left in the test's own hour: {windows:?}"
    );
    assert_reported_once(&t, &mock, &windows).await;
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

/// Makes every company billable the way Stripe does: an active subscription on the pro price
/// (the company in its metadata, which links its customer), known to the mock and delivered to
/// the API as a signed `customer.subscription.created` that a worker applies.
async fn subscribe(t: &TestDb, mock: &StripeMock, base: &str) {
    let created = Utc::now().timestamp() - 60;
    let http = reqwest::Client::new();
    for company in COMPANIES {
        let customer = format!("cus_{company}");
        let mut subscription = stripe_mock::subscription(
            &format!("sub_{company}"),
            &customer,
            "active",
            PRICE_PRO,
            created,
            created + 30 * 86_400,
        );
        subscription["metadata"] = json!({ "company_id": company });
        mock.put_subscription(subscription.clone());
        mock.put_customer(stripe_mock::customer(
            &customer,
            Some(&format!("billing@{company}.example")),
            Some(company),
        ));
        let event = stripe_mock::event(
            &format!("evt_{company}_subscribed"),
            "customer.subscription.created",
            created,
            subscription,
        );
        let body = event.to_string();
        let signature = signature_header(WEBHOOK_SECRET, Utc::now().timestamp(), body.as_bytes());
        let response = http
            .post(format!("{base}/api/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await
            .expect("the API answers");
        let status = response.status();
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            response.text().await.unwrap_or_default()
        );
    }
    let applied = "SELECT count(*) FROM stripe_events WHERE status = 'applied'";
    settle(t, "the subscriptions are applied", applied, 2).await;
    let billable = "SELECT count(*) FROM subscriptions s JOIN billing_customers c \
         USING (customer_id, company_id) WHERE s.status = 'active' AND s.plan = 'pro'";
    assert_eq!(count(t, billable).await, 2, "both companies are billable");
}

/// The closed hours the sessions' usage is dated into: the `n`th is `n + 2` hours before the
/// hour the test began in, so it closed long before a report looks at it
/// (`voxline_workers::billing::usage::SETTLE`), and each is filled once.
struct PastHours {
    /// The start of the hour the test began in: usage recorded since then is not dated yet.
    this_hour: DateTime<Utc>,
    used: i64,
}

impl PastHours {
    fn before(now: DateTime<Utc>) -> PastHours {
        let start = now.timestamp().div_euclid(WINDOW_SECS) * WINDOW_SECS;
        PastHours {
            this_hour: DateTime::from_timestamp(start, 0).expect("an hour"),
            used: 0,
        }
    }

    fn next(&mut self) -> DateTime<Utc> {
        self.used += 1;
        self.this_hour - chrono::Duration::seconds((self.used + 1) * WINDOW_SECS)
    }
}

/// Waits until a session has become ready since usage was last dated.
async fn until_new_usage(t: &TestDb, hours: &PastHours) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM usage_records WHERE recorded_at >= $1")
                .bind(hours.this_hour)
                .fetch_one(t.owner())
                .await
                .expect("usage since the test began");
        if live > 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "no session became ready within {SETTLE:?}\n{}",
                diagnosis(t).await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Dates the usage of every session ready since the last call into the next past hour, in one
/// statement: a report sees all of that hour's usage or none of it, and no later row joins it.
async fn date_usage(t: &TestDb, hours: &mut PastHours) {
    let hour = hours.next();
    sqlx::query("UPDATE usage_records SET recorded_at = $1 WHERE recorded_at >= $2")
        .bind(hour + chrono::Duration::minutes(30))
        .bind(hours.this_hour)
        .execute(t.owner())
        .await
        .expect("date the usage into a past hour");
}

/// Enqueues a `usage.report` job, again while the test's own connections are still broken by
/// the database restart.
async fn enqueue_report(t: &TestDb) {
    let job = NewJob::new(queues::BILLING, billing::USAGE_REPORT_JOB, json!({}));
    let deadline = tokio::time::Instant::now() + SETTLE;
    while let Err(e) = t.client().enqueue_now(&job).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "enqueueing a usage report: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Puts a usage report in flight: once a session became ready, holds Stripe's meter-event
/// answers, dates the usage of the sessions ready so far into a closed hour (which some report
/// must now send), enqueues a `usage.report` and waits until Stripe has counted an event whose
/// answer it holds. Returns
/// the workers running a report: the held one is among them, its job running until the answer
/// comes. The caller releases the answers ([`StripeMock::release_meter_events`]).
async fn report_in_flight(
    t: &TestDb,
    mock: &StripeMock,
    workers: &[Child],
    hours: &mut PastHours,
) -> Vec<usize> {
    until_new_usage(t, hours).await;
    let deadline = tokio::time::Instant::now() + SETTLE;
    mock.hold_meter_events();
    date_usage(t, hours).await;
    enqueue_report(t).await;
    loop {
        if mock.held_meter_events() > 0 {
            let holders: Vec<String> = sqlx::query_scalar(
                "SELECT locked_by FROM jobs WHERE kind = $1 AND state = 'running' \
                 AND locked_by IS NOT NULL",
            )
            .bind(billing::USAGE_REPORT_JOB)
            .fetch_all(t.owner())
            .await
            .expect("running usage reports");
            // `locked_by` is `host:pid:random`.
            let pids: BTreeSet<u32> = holders
                .iter()
                .filter_map(|l| l.rsplit(':').nth(1)?.parse().ok())
                .collect();
            let reporting: Vec<usize> = (0..workers.len())
                .filter(|&i| workers[i].id().is_some_and(|pid| pids.contains(&pid)))
                .collect();
            assert!(
                !reporting.is_empty(),
                "a meter event is held, but no worker runs a usage report: {holders:?}"
            );
            return reporting;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "no usage report reached Stripe within {SETTLE:?}\n{}",
                diagnosis(t).await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every company's usage per hour (as the report sums it): (company, hour's start) → seconds.
async fn usage_windows(t: &TestDb) -> BTreeMap<(String, DateTime<Utc>), f64> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT company_id, floor(extract(epoch FROM recorded_at) / $1::int8)::int8 * $1::int8, \
                sum(seconds)::float8 \
         FROM usage_records GROUP BY 1, 2",
    )
    .bind(WINDOW_SECS)
    .fetch_all(t.owner())
    .await
    .expect("usage per hour");
    rows.into_iter()
        .map(|(company, start, seconds)| {
            let start = DateTime::from_timestamp(start, 0).expect("an hour");
            ((company, start), seconds)
        })
        .collect()
}

/// Each closed hour with usage has one `reported` row, and Stripe counted one meter event for
/// it: the row's identifier, the company's customer, the whole seconds, the hour's last second.
/// Every request under an identifier was the same request (retries, with the identifier as
/// Idempotency-Key), no hour went out under a second identifier, and at least one report that
/// Stripe counted but never answered was sent again, and still counted once.
async fn assert_reported_once(
    t: &TestDb,
    mock: &StripeMock,
    windows: &BTreeMap<(String, DateTime<Utc>), f64>,
) {
    type Row = (
        String,
        DateTime<Utc>,
        DateTime<Utc>,
        String,
        i64,
        String,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT company_id, window_start, window_end, customer_id, value, identifier, status \
         FROM usage_reports ORDER BY company_id, window_start",
    )
    .fetch_all(t.owner())
    .await
    .expect("usage reports");
    assert_eq!(
        rows.iter()
            .map(|r| (r.0.clone(), r.1))
            .collect::<BTreeSet<_>>(),
        windows.keys().cloned().collect::<BTreeSet<_>>(),
        "one usage report per closed hour with usage"
    );
    let counted = mock.meter_events();
    assert_eq!(
        counted.len(),
        windows.len(),
        "one meter event per closed hour with usage: {counted:#?}"
    );
    let hours: BTreeSet<(String, i64)> = counted
        .iter()
        .map(|e| {
            let customer = e["payload"]["stripe_customer_id"].as_str().unwrap_or("");
            (customer.to_string(), e["timestamp"].as_i64().unwrap_or(0))
        })
        .collect();
    assert_eq!(
        hours.len(),
        counted.len(),
        "no hour counted twice: {counted:#?}"
    );
    for (company, start, end, customer, value, identifier, status) in &rows {
        let seconds = windows[&(company.clone(), *start)];
        assert_eq!(status, "reported", "{company} at {start}");
        assert_eq!(*value, seconds.round() as i64, "{company} at {start}");
        assert_eq!(customer, &format!("cus_{company}"));
        let events: Vec<&Value> = counted
            .iter()
            .filter(|e| e["identifier"] == identifier.as_str())
            .collect();
        assert_eq!(events.len(), 1, "{company} at {start}: {counted:#?}");
        assert_eq!(
            events[0]["payload"]["stripe_customer_id"],
            customer.as_str()
        );
        assert_eq!(events[0]["payload"]["value"], value.to_string());
        assert_eq!(events[0]["timestamp"], end.timestamp() - 1);
    }

    let posts = mock.requests("/v1/billing/meter_events");
    let mut sent: BTreeMap<String, Vec<&stripe_mock::Recorded>> = BTreeMap::new();
    for post in &posts {
        let identifier = post.form.get("identifier").cloned().unwrap_or_default();
        sent.entry(identifier).or_default().push(post);
    }
    assert_eq!(
        sent.keys().cloned().collect::<BTreeSet<_>>(),
        rows.iter().map(|r| r.5.clone()).collect::<BTreeSet<_>>(),
        "every identifier sent is a report's"
    );
    for (identifier, posts) in &sent {
        for post in posts {
            assert_eq!(post.idempotency_key.as_deref(), Some(identifier.as_str()));
            assert_eq!(post.form, posts[0].form, "a retry is the same request");
        }
    }
    assert!(
        sent.values().any(|posts| posts.len() > 1),
        "a report whose answer never arrived was sent again"
    );
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

/// Jobs by queue and state, the errors of unfinished or dead ones, emails and usage reports by
/// status.
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
    let reports: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM usage_reports GROUP BY status")
            .fetch_all(t.owner())
            .await
            .unwrap_or_default();
    format!("jobs: {jobs:?}\nnot done: {stuck:#?}\nemails: {emails:?}\nusage reports: {reports:?}")
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
                .unwrap_or_else(|| {
                    panic!(
                        "{} has no Message-ID ({} bytes: a torn write?)",
                        path.display(),
                        text.len()
                    )
                })
        })
        .collect()
}
