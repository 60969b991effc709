//! The `/admin` page end to end in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs): sign in with an operator token, see a dead job
//! with its error shown as text, click Retry, and see the job complete.

mod support;

use std::time::Duration;

use fantoccini::Locator;
use serde_json::json;
use support::{Backend, TestDb, eventually, free_port, signal, token};
use voxline_api::auth::Role;
use voxline_jobs::{Completion, JobState, NewJob, Outcome};
use voxline_jobs::{DbJobs, DeadHooks};
use voxline_workers::diag;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_dead_job_from_the_admin_page() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };

    // A dead job whose next attempt will succeed (a no-op that was failed by hand).
    let id = t
        .enqueue(NewJob::new(
            "email",
            diag::NOOP,
            json!({ "to_email": "ann@example.com" }),
        ))
        .await;
    let lease =
        t.db.jobs()
            .claim("email", "earlier-worker", 1)
            .await
            .unwrap()
            .first()
            .map(|j| j.lease())
            .expect("the job was claimed");
    assert_eq!(lease.job, id);
    let outcome = Outcome::Dead {
        error: "550 <b>mailbox</b> unavailable".into(),
    };
    t.db.jobs()
        .complete(&[Completion { lease, outcome }], &DeadHooks::new())
        .await
        .unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let mut serve = t.spawn_voxline(&["serve"], &[("VOXLINE_HTTP_ADDR", &addr)]);
    let http = reqwest::Client::new();
    eventually("serve answers", Duration::from_secs(30), || {
        let (http, health) = (http.clone(), format!("http://{addr}/healthz"));
        async move { http.get(health).send().await.is_ok() }
    })
    .await;
    let Some(session) = support::browser::start(1280, 900).await else {
        return;
    };
    let browser = &session.client;

    browser.goto(&format!("http://{addr}/admin")).await.unwrap();
    let operator = token("platform", "op-browser", Role::Operator, 600);
    browser
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&operator)
        .await
        .unwrap();
    browser
        .find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    let row = format!("#dead tr[data-job=\"{id}\"]");
    let dead_row = browser
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&row))
        .await
        .expect("the dead job is listed");
    let text = dead_row.text().await.unwrap();
    assert!(
        text.contains("550 <b>mailbox</b> unavailable"),
        "the error is shown as text, not markup: {text}"
    );
    assert!(
        browser
            .find_all(Locator::Css("#dead b"))
            .await
            .unwrap()
            .is_empty(),
        "job data became markup"
    );

    browser
        .find(Locator::Css(&format!(
            "{row} button[data-action=\"retry\"]"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = t
        .wait_state(id, JobState::Done, Duration::from_secs(20))
        .await;
    assert_eq!(done.attempt, 1, "attempts were reset by the retry");
    eventually(
        "the page drops the job from the dead letters",
        Duration::from_secs(10),
        || {
            let browser = browser.clone();
            let row = row.clone();
            async move {
                browser
                    .find_all(Locator::Css(&row))
                    .await
                    .map(|r| r.is_empty())
                    .unwrap_or(false)
            }
        },
    )
    .await;
    let status = browser
        .find(Locator::Id("status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        status.starts_with("Updated") || status.contains("retry done"),
        "{status}"
    );

    browser.clone().close().await.unwrap();
    signal(&serve, "-TERM").await;
    assert!(serve.wait().await.unwrap().success());
}
