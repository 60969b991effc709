//! The session intake (JSON transcripts) to ready feedback, on both databases: validation,
//! idempotency, tenant isolation, and the analysis worker's metrics.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestDb, eventually, start_api, token};
use voxline_api::auth::Role;
use voxline_jobs::{JobState, Runner};
async fn post(
    base: &str,
    token: Option<&str>,
    body: &Value,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .json(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(k) = key {
        request = request.header("Idempotency-Key", k);
    }
    let response = request.send().await.unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn get(url: &str, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn count(t: &TestDb, sql: &'static str) -> i64 {
    t.count_rows(sql).await
}

on_both_databases!(a_submitted_transcript_becomes_ready_feedback);
async fn a_submitted_transcript_becomes_ready_feedback(backend: Backend) {
    let Some(t) = TestDb::new(backend, &["[engine]\npoll_interval_ms = 100\n"]).await else {
        return;
    };
    let base = start_api(&t).await;
    // A token that carries the address "feedback ready" goes to.
    let ann = support::token_with_email("acme", "ann", Role::Member, Some("ann@example.com"));
    let handlers = voxline_workers::handlers(&t.db, &t.settings).unwrap();
    let queues = vec!["analysis".to_string(), "email".to_string()];
    let workers = Runner::new(t.db.clone(), t.settings.clone(), handlers)
        .queues(queues)
        .start();

    let (status, accepted) = post(&base, Some(&ann), &support::discovery_call(), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(accepted["status"], "queued");
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(
        accepted["links"]["feedback"],
        format!("/api/sessions/{id}/feedback")
    );

    let url = format!("{base}/api/sessions/{id}");
    eventually("the session is ready", Duration::from_secs(20), || {
        let (url, ann) = (url.clone(), ann.clone());
        async move { get(&url, &ann).await.1["status"] == "ready" }
    })
    .await;
    let outbox = t.dir.path().join("outbox");
    eventually(
        "the feedback-ready email is written",
        Duration::from_secs(20),
        || {
            let outbox = outbox.clone();
            async move {
                std::fs::read_dir(&outbox)
                    .map(|d| d.count() == 1)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    workers.shutdown().await;
    let mail = std::fs::read_dir(&outbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mail = std::fs::read_to_string(mail).unwrap().replace("=\r\n", "");
    assert!(mail.contains("To: ann@example.com"), "{mail}");
    assert!(
        mail.contains("Subject: Your feedback for \"Discovery call with Globex\" is ready"),
        "{mail}"
    );
    assert!(mail.contains(&format!("/sessions/{id}")), "{mail}");

    let (status, feedback) = get(&format!("{url}/feedback"), &ann).await;
    assert_eq!(status, StatusCode::OK);
    // The feedback document: `{session_id, kind, metrics, scores, llm, notes}`.
    let stored = &feedback;
    assert_eq!(stored["session_id"], id.as_str());
    assert_eq!(stored["kind"], "metrics_only");
    assert_eq!(stored["llm"], Value::Null);
    assert!(
        stored["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("No language model is configured")),
        "{stored:#}"
    );
    let m = &stored["metrics"];
    assert!((m["talk_ratio"].as_f64().unwrap() - 22.0 / 43.5).abs() < 1e-9);
    assert_eq!(m["questions"], 3);
    assert_eq!(m["fillers"]["count"], 4);
    assert_eq!(m["interruptions"], 1);
    assert_eq!(m["patience_seconds"], 1.5);
}

on_both_databases!(bad_submissions_are_refused_with_the_field_named_and_nothing_stored);
async fn bad_submissions_are_refused_with_the_field_named_and_nothing_stored(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let ann = token("acme", "ann", Role::Member, 600);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = support::discovery_call();
        change(&mut body);
        body
    };
    let cases = [
        (with(&|b| b["transcript"] = json!([])), "transcript"),
        (
            with(&|b| b["transcript"][1]["end"] = json!(4.0)),
            "transcript[1].end",
        ),
        (
            with(&|b| b["transcript"][2]["start"] = json!(-1)),
            "transcript[2].start",
        ),
        (
            with(&|b| b["transcript"][0]["speaker"] = json!("coach")),
            "transcript[0].speaker",
        ),
        (
            with(&|b| b["transcript"][3]["text"] = json!("  ")),
            "transcript[3].text",
        ),
        (with(&|b| b["kind"] = json!("karaoke")), "kind"),
        (with(&|b| b["title"] = json!("")), "title"),
    ];
    for (body, field) in cases {
        let (status, error) = post(&base, Some(&ann), &body, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(error["error"]["field"], field);
    }
    let text = reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(&ann)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let broken = reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(&ann)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        post(&base, None, &support::discovery_call(), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        count(&t, "SELECT count(*) FROM sessions").await,
        0,
        "no half-written session"
    );
    assert_eq!(count(&t, "SELECT count(*) FROM jobs").await, 0);
}

on_both_databases!(a_retried_submission_with_its_key_gets_the_first_answer);
async fn a_retried_submission_with_its_key_gets_the_first_answer(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let ann = token("acme", "ann", Role::Member, 600);
    let (s1, first) = post(&base, Some(&ann), &support::discovery_call(), Some("req-1")).await;
    let (s2, second) = post(&base, Some(&ann), &support::discovery_call(), Some("req-1")).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first, second);
    assert_eq!(count(&t, "SELECT count(*) FROM sessions").await, 1);
    assert_eq!(count(&t, "SELECT count(*) FROM jobs").await, 1);

    let mut other = support::discovery_call();
    other["title"] = json!("Another call");
    let (status, error) = post(&base, Some(&ann), &other, Some("req-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "Idempotency-Key");
}

on_both_databases!(another_company_sees_nothing_and_feedback_waits_for_ready);
async fn another_company_sees_nothing_and_feedback_waits_for_ready(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let ann = token("acme", "ann", Role::Member, 600);
    let (_, accepted) = post(&base, Some(&ann), &support::discovery_call(), None).await;
    let id = accepted["id"].as_str().unwrap();

    let (status, body) = get(&format!("{base}/api/sessions/{id}/feedback"), &ann).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "not_ready");

    let eve = token("globex", "eve", Role::Admin, 600);
    for path in [
        format!("/api/sessions/{id}"),
        format!("/api/sessions/{id}/feedback"),
    ] {
        let (status, body) = get(&format!("{base}{path}"), &eve).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            !body.to_string().contains("Globex"),
            "no data of the other company"
        );
    }
    let jobs = t.any_jobs(10).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Available);
    assert_eq!(jobs[0].payload["session_id"], id);
}

on_both_databases!(sessions_are_listed_newest_first_page_by_page_per_company);
async fn sessions_are_listed_newest_first_page_by_page_per_company(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let ann = token("acme", "ann", Role::Member, 600);
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut body = support::discovery_call();
        body["title"] = json!(format!("Call {n}"));
        ids.push(
            post(&base, Some(&ann), &body, None).await.1["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, first) = get(&format!("{base}/api/sessions?limit=2"), &ann).await;
    assert_eq!(status, StatusCode::OK);
    let titles: Vec<&str> = first["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Call 2", "Call 1"]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, second) = get(
        &format!("{base}/api/sessions?limit=2&cursor={cursor}"),
        &ann,
    )
    .await;
    assert_eq!(second["sessions"][0]["id"], ids[0].as_str());
    assert_eq!(second["sessions"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());

    // A colleague's session is in the company's list, not in ann's own (`mine=true`).
    let bob = token("acme", "bob", Role::Member, 600);
    let bobs = post(&base, Some(&bob), &support::discovery_call(), None)
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, company) = get(&format!("{base}/api/sessions"), &ann).await;
    assert_eq!(company["sessions"].as_array().unwrap().len(), 4);
    let (status, mine) = get(&format!("{base}/api/sessions?mine=true&limit=2"), &ann).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let own: Vec<&str> = mine["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        own,
        [ids[2].as_str(), ids[1].as_str()],
        "ann's own, newest first"
    );
    let cursor = mine["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, rest) = get(
        &format!("{base}/api/sessions?mine=true&limit=2&cursor={cursor}"),
        &ann,
    )
    .await;
    assert_eq!(rest["sessions"][0]["id"], ids[0].as_str());
    assert_eq!(rest["sessions"].as_array().unwrap().len(), 1);
    let (_, bob_own) = get(&format!("{base}/api/sessions?mine=true"), &bob).await;
    assert_eq!(bob_own["sessions"][0]["id"], bobs.as_str());
    assert_eq!(bob_own["sessions"].as_array().unwrap().len(), 1);
    let (status, _) = get(&format!("{base}/api/sessions?mine=maybe"), &ann).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "mine is a boolean");

    let (_, other) = get(
        &format!("{base}/api/sessions"),
        &token("globex", "eve", Role::Admin, 600),
    )
    .await;
    assert_eq!(
        other["sessions"],
        json!([]),
        "another company lists nothing"
    );
    // Outside its documented range, as on the admin lists: 422 naming the parameter.
    let (status, error) = get(&format!("{base}/api/sessions?limit=0"), &ann).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "limit");
}
