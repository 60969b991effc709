//! The operators' console over HTTP and the CLI: job lists by any filter and search, bulk
//! actions on a filtered set, pausing a queue (across worker processes on Postgres), and the
//! per-minute activity table after known work.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::api::answer;
use support::{Backend, TestDb, eventually, start_api, start_workers, token};
use voxline_api::auth::Role;
use voxline_domain::audit;
use voxline_jobs::{DbJobs, JobId, JobState, NewJob};
use voxline_workers::diag;

const LONG: Duration = Duration::from_secs(30);

fn operator() -> String {
    token("platform", "op-ann", Role::Operator, 600)
}

async fn get(url: &str) -> (StatusCode, Value) {
    answer(reqwest::Client::new().get(url).bearer_auth(operator())).await
}

async fn post(url: &str, body: Value) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .post(url)
            .bearer_auth(operator())
            .json(&body),
    )
    .await
}

/// The ids of a job list, in the order given.
fn ids(body: &Value) -> Vec<i64> {
    body["jobs"]
        .as_array()
        .expect("a jobs array")
        .iter()
        .map(|j| j["id"].as_i64().expect("an id"))
        .collect()
}

/// A job that failed its one attempt for good with `error`, made without workers.
async fn dead_job(t: &TestDb, queue: &str, kind: &str, payload: Value, error: &str) -> JobId {
    let job = NewJob::new(queue, kind, payload).max_attempts(1);
    t.dead_job(job, error).await
}

async fn audit_entries(t: &TestDb, action: &str) -> Vec<audit::AuditRecord> {
    t.audit_entries(action).await
}

on_both_databases!(jobs_are_found_by_any_filter_and_by_search);
async fn jobs_are_found_by_any_filter_and_by_search(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let refused = dead_job(
        &t,
        "mail",
        "mail.send",
        json!({ "company_id": "acme", "session_id": "sess-alpha" }),
        "smtp refused zebra",
    )
    .await;
    let waiting = t
        .enqueue(NewJob::new(
            "mail",
            "mail.send",
            json!({ "company_id": "globex" }),
        ))
        .await;
    let report = t
        .enqueue(NewJob::new(
            "reports",
            "report.build",
            json!({ "company_id": "acme" }),
        ))
        .await;
    let jobs = format!("{base}/api/admin/jobs");

    let (status, body) = get(&format!("{jobs}?company_id=acme")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), vec![report.0, refused.0], "newest first");
    assert_eq!(body["jobs"][0]["company_id"], "acme");
    let (_, body) = get(&format!("{jobs}?kind=report.build")).await;
    assert_eq!(ids(&body), vec![report.0]);
    let (_, body) = get(&format!("{jobs}?queue=mail&state=available")).await;
    assert_eq!(ids(&body), vec![waiting.0]);
    let (_, body) = get(&format!("{jobs}?state=dead")).await;
    assert_eq!(ids(&body), vec![refused.0]);

    // Search reaches the errors, the payload and the kind.
    let (_, body) = get(&format!("{jobs}?q=zebra")).await;
    assert_eq!(ids(&body), vec![refused.0], "found by its error");
    let (_, body) = get(&format!("{jobs}?q=sess-alpha")).await;
    assert_eq!(ids(&body), vec![refused.0], "found by its payload");
    let (_, body) = get(&format!("{jobs}?q=report.build")).await;
    assert_eq!(ids(&body), vec![report.0], "found by its kind");
    let (_, body) = get(&format!("{jobs}?q=zebra&company_id=globex")).await;
    assert!(ids(&body).is_empty(), "search and filters combine");

    // Time range on the creation time.
    let hour = chrono::Duration::hours(1);
    let now = chrono::Utc::now();
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339().replace('+', "%2B");
    let (_, body) = get(&format!("{jobs}?from={}", stamp(now - hour))).await;
    assert_eq!(ids(&body).len(), 3);
    let (_, body) = get(&format!("{jobs}?from={}", stamp(now + hour))).await;
    assert!(ids(&body).is_empty());
    let (_, body) = get(&format!("{jobs}?to={}", stamp(now - hour))).await;
    assert!(ids(&body).is_empty());

    // Pages follow the cursor.
    let (_, first) = get(&format!("{jobs}?limit=2")).await;
    assert_eq!(ids(&first), vec![report.0, waiting.0]);
    let cursor = first["next_cursor"].as_i64().expect("a next page");
    let (_, second) = get(&format!("{jobs}?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second), vec![refused.0]);

    // Bad filters name their field.
    let (status, body) = get(&format!(
        "{jobs}?from={}&to={}",
        stamp(now + hour),
        stamp(now - hour)
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_range");
    assert_eq!(body["error"]["field"], "from");
    let (status, body) = get(&format!("{jobs}?q={}", "x".repeat(201))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "q");
    let (status, body) = get(&format!("{jobs}?state=sleeping")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "state");
}

on_both_databases!(a_filtered_set_is_retried_or_discarded_in_bulk_and_audited_once);
async fn a_filtered_set_is_retried_or_discarded_in_bulk_and_audited_once(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let mut acme_dead = Vec::new();
    for n in 0..3 {
        acme_dead.push(
            dead_job(
                &t,
                "mail",
                "mail.send",
                json!({ "company_id": "acme", "n": n }),
                "550 mailbox unavailable",
            )
            .await,
        );
    }
    let globex_dead = dead_job(
        &t,
        "mail",
        "mail.send",
        json!({ "company_id": "globex" }),
        "550 mailbox unavailable",
    )
    .await;
    let acme_waiting = t
        .enqueue(NewJob::new(
            "mail",
            "mail.send",
            json!({ "company_id": "acme" }),
        ))
        .await;
    let bulk = format!("{base}/api/admin/jobs/bulk");
    let acme = json!({ "queue": "mail", "company_id": "acme" });

    let (status, body) = post(
        &bulk,
        json!({ "action": "retry", "filter": acme, "dry_run": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["count"], 3,
        "the dead jobs only: a waiting job is not retried"
    );
    for id in &acme_dead {
        assert_eq!(
            t.job(*id).await.state,
            JobState::Dead,
            "a dry run changes nothing"
        );
    }
    assert!(audit_entries(&t, "jobs.bulk_retry").await.is_empty());

    let (status, body) = post(&bulk, json!({ "action": "retry", "filter": acme })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 3);
    for id in &acme_dead {
        let job = t.job(*id).await;
        assert_eq!(job.state, JobState::Available);
        assert_eq!(job.attempt, 0, "attempts reset");
    }
    assert_eq!(
        t.job(globex_dead).await.state,
        JobState::Dead,
        "another company's job is kept"
    );
    assert_eq!(t.job(acme_waiting).await.state, JobState::Available);
    let entries = audit_entries(&t, "jobs.bulk_retry").await;
    assert_eq!(entries.len(), 1, "one entry for the action");
    assert_eq!(entries[0].actor, "op-ann");
    assert_eq!(entries[0].details["count"], 3);
    assert_eq!(entries[0].details["filter"]["company_id"], "acme");

    let (status, body) = post(
        &bulk,
        json!({ "action": "discard", "filter": { "company_id": "globex" } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 1);
    assert_eq!(t.job(globex_dead).await.state, JobState::Cancelled);
    assert_eq!(audit_entries(&t, "jobs.bulk_discard").await.len(), 1);

    // Bad bodies name their field.
    for (body, field) in [
        (json!({ "action": "explode" }), "action"),
        (json!({ "filter": {} }), "action"),
        (
            json!({ "action": "retry", "everything": true }),
            "everything",
        ),
        (
            json!({ "action": "retry", "filter": { "state": "sleeping" } }),
            "state",
        ),
    ] {
        let (status, answer) = post(&bulk, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
}

on_both_databases!(a_paused_queue_is_not_claimed_until_it_is_resumed);
async fn a_paused_queue_is_not_claimed_until_it_is_resumed(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let (status, body) = post(&format!("{base}/api/admin/queues/email/pause"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["paused"], true);
    assert_eq!(body["paused_by"], "op-ann");
    let (status, _) = post(&format!("{base}/api/admin/queues/email/pause"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "pausing twice is no error");
    assert_eq!(
        audit_entries(&t, "queue.pause").await.len(),
        1,
        "nor a second change"
    );

    let job = t.enqueue(NewJob::new("email", diag::NOOP, json!({}))).await;
    assert!(
        t.db.jobs()
            .claim("email", "console-test", 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing is claimed from a paused queue"
    );
    let (_, queues) = get(&format!("{base}/api/admin/queues")).await;
    let email = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "email")
        .expect("the email queue is listed")
        .clone();
    assert_eq!(email["paused"], true);
    assert_eq!(email["paused_by"], "op-ann");
    let (_, metrics) = {
        let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert!(
        metrics.contains("voxline_queue_paused{queue=\"email\"} 1"),
        "{metrics}"
    );

    let (status, body) = post(&format!("{base}/api/admin/queues/email/resume"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["paused"], false);
    assert_eq!(audit_entries(&t, "queue.resume").await.len(), 1);
    let claimed =
        t.db.jobs()
            .claim("email", "console-test", 10)
            .await
            .unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![job]);

    let (status, body) = post(&format!("{base}/api/admin/queues/nope/pause"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "unknown_queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_across_worker_processes_and_lets_running_jobs_finish() {
    let Some(t) = TestDb::new(Backend::Postgres, &[]).await else {
        return;
    };
    let env = [
        ("VOXLINE_ENGINE__POLL_INTERVAL_MS", "200"),
        ("VOXLINE_ENGINE__SHUTDOWN_GRACE_MS", "5000"),
    ];
    let mut workers = vec![
        t.spawn_voxline(&["worker", "--queues", "work,marks"], &env),
        t.spawn_voxline(&["worker", "--queues", "work,marks"], &env),
    ];
    let client = t.client();
    let slow = client
        .enqueue_now(&NewJob::new("work", diag::SLEEP, json!({ "ms": 1500 })))
        .await
        .unwrap()
        .id;
    t.wait_state(slow, JobState::Running, LONG).await;

    let (code, out, err) = t.run_voxline(&["queues", "pause", "work"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let mut waiting = Vec::new();
    for _ in 0..20 {
        waiting.push(
            client
                .enqueue_now(&NewJob::new("work", diag::NOOP, json!({})))
                .await
                .unwrap()
                .id,
        );
    }
    // Both processes are alive and claiming: a job of another queue, enqueued after the
    // paused queue's, runs; the paused queue's have not been touched by then.
    let mark = client
        .enqueue_now(&NewJob::new("marks", diag::NOOP, json!({})))
        .await
        .unwrap()
        .id;
    t.wait_state(mark, JobState::Done, LONG).await;
    t.wait_state(slow, JobState::Done, LONG).await;
    for id in &waiting {
        let job = t.job(*id).await;
        assert_eq!(
            job.state,
            JobState::Available,
            "job {id} was claimed while paused"
        );
        assert_eq!(job.attempt, 0);
    }
    let (code, out, _) = t.run_voxline(&["queues", "--json"]).await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).expect("queues as JSON");
    let work = listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "work")
        .expect("the work queue is listed")
        .clone();
    assert_eq!(work["paused"], true);
    let entries = audit_entries(&t, "queue.pause").await;
    assert_eq!(entries.len(), 1);
    assert!(entries[0].actor.starts_with("cli:"));

    let (code, out, err) = t.run_voxline(&["queues", "resume", "work"]).await;
    assert_eq!(code, 0, "{out}{err}");
    for id in &waiting {
        t.wait_state(*id, JobState::Done, LONG).await;
    }
    for worker in &workers {
        support::signal(worker, "-TERM").await;
    }
    for worker in &mut workers {
        assert!(worker.wait().await.unwrap().success());
    }
}

on_both_databases!(the_activity_table_counts_known_work_per_minute);
async fn the_activity_table_counts_known_work_per_minute(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let workers = start_workers(&t, &["work"]);
    let client = t.client();
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(NewJob::new("work", diag::NOOP, json!({})));
    }
    // Fails once, then is done on its second attempt.
    jobs.push(NewJob::new(
        "work",
        diag::FAIL,
        json!({ "until_attempt": 2, "retry_after_ms": 10 }),
    ));
    jobs.push(NewJob::new(
        "work",
        diag::FAIL,
        json!({ "permanent": true }),
    ));
    for job in &jobs {
        client.enqueue_now(job).await.unwrap();
    }
    let totals = |body: &Value| -> (i64, i64, i64, i64) {
        let work = body["queues"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|q| q["queue"] == "work");
        let mut sums = (0, 0, 0, 0);
        for p in work
            .and_then(|q| q["points"].as_array())
            .into_iter()
            .flatten()
        {
            sums.0 += p["enqueued"].as_i64().unwrap_or(0);
            sums.1 += p["done"].as_i64().unwrap_or(0);
            sums.2 += p["failed"].as_i64().unwrap_or(0);
            sums.3 += p["dead"].as_i64().unwrap_or(0);
        }
        sums
    };
    let url = format!("{base}/api/admin/stats?minutes=5");
    eventually("the activity table shows the work", LONG, || async {
        let (_, body) = get(&url).await;
        totals(&body) == (5, 4, 1, 1)
    })
    .await;
    let (_, body) = get(&url).await;
    assert_eq!(body["minutes"], 5);
    let points = body["queues"][0]["points"].as_array().expect("points");
    assert_eq!(
        points.len(),
        5,
        "one point per minute, empty minutes as zeros"
    );

    let (status, body) = get(&format!("{base}/api/admin/stats?minutes=0")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "minutes");
    workers.shutdown().await;
}
