//! The `/admin` page end to end in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs): sign in with an operator token, see a dead job
//! with its error shown as text, click Retry, and see the job complete; filter the jobs by state
//! and company, retry the matching set in bulk after a confirmation that counts it, pause and
//! resume a queue, and read the per-minute charts. A screenshot of the page with data goes to
//! `VOXLINE_SCREENSHOT_DIR` (else a temp dir), and its path is printed.

mod support;

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use support::{Backend, TestDb, eventually, free_port, signal, token};
use voxline_api::auth::Role;
use voxline_jobs::DbJobs;
use voxline_jobs::{JobId, JobState, NewJob, Outcome};
use voxline_workers::diag;

/// How long the page may take to show a change (it refreshes every two seconds).
const PAGE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_dead_job_from_the_admin_page() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };

    // A dead job whose next attempt will succeed (a no-op that was failed by hand).
    let job = NewJob::new(
        "email",
        diag::NOOP,
        json!({ "to_email": "ann@example.com" }),
    );
    let id = t.dead_job(job, "550 <b>mailbox</b> unavailable").await;

    let (mut serve, addr) = serve(&t).await;
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

    let row = format!("#jobs tr[data-job=\"{id}\"]");
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
            .find_all(Locator::Css("#jobs b"))
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
        "the page drops the job from the dead letters (the list's first filter)",
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

/// A job on `queue` that ran its one attempt with `outcome`, made without workers (the
/// acknowledgement writes the per-minute activity the charts read).
async fn finished(t: &TestDb, queue: &str, payload: Value, outcome: Outcome) -> JobId {
    let job = NewJob::new(queue, diag::NOOP, payload).max_attempts(1);
    t.finished_without_workers(job, outcome).await
}

fn dead(error: &str) -> Outcome {
    Outcome::Dead {
        error: error.into(),
    }
}

async fn text(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(found) => found.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    match support::browser::appears(browser, css, PAGE).await {
        Ok(found) => found,
        Err(e) => panic!(
            "{css} did not appear within {PAGE:?} ({e}); status: {:?}",
            text(browser, "#status").await
        ),
    }
}

/// Waits until the text of `css` satisfies `wanted`, and returns it.
async fn wait_text(browser: &Client, css: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PAGE;
    loop {
        let shown = text(browser, css).await;
        if wanted(&shown) {
            return shown;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{css} shows {shown:?} after {PAGE:?}; status: {:?}",
                text(browser, "#status").await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(browser: &Client, css: &str) {
    wait_for(browser, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn fill(browser: &Client, css: &str, value: &str) {
    let input = wait_for(browser, css).await;
    input.clear().await.unwrap();
    if !value.is_empty() {
        input.send_keys(value).await.unwrap();
    }
}

/// The ids of the job rows shown, in order.
async fn shown_jobs(browser: &Client) -> Vec<i64> {
    let mut ids = Vec::new();
    for row in browser
        .find_all(Locator::Css("#jobs tbody tr"))
        .await
        .unwrap()
    {
        if let Ok(Some(id)) = row.attr("data-job").await {
            ids.push(id.parse().expect("a job id"));
        }
    }
    ids
}

async fn wait_jobs(browser: &Client, expected: &[JobId]) {
    let expected: Vec<i64> = expected.iter().map(|id| id.0).collect();
    let deadline = tokio::time::Instant::now() + PAGE;
    loop {
        let shown = shown_jobs(browser).await;
        if shown == expected {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "the page lists {shown:?}, not {expected:?}; {:?}",
                text(browser, "#applied").await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_filters_jobs_retries_a_set_in_bulk_pauses_a_queue_and_reads_the_trends() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    // On `mail`, a queue no worker of `serve` claims from, so retried jobs stay available.
    let mut acme = Vec::new();
    for n in 0..3 {
        let payload = json!({ "company_id": "acme", "n": n });
        acme.push(finished(&t, "mail", payload, dead("550 mailbox unavailable")).await);
    }
    let globex = finished(
        &t,
        "mail",
        json!({ "company_id": "globex" }),
        dead("550 mailbox unavailable"),
    )
    .await;
    for n in 0..4 {
        finished(&t, "mail", json!({ "n": n }), Outcome::Done).await;
    }
    for n in 0..2 {
        finished(&t, "reports", json!({ "n": n }), Outcome::Done).await;
    }

    let (mut serve, addr) = serve(&t).await;
    let Some(session) = support::browser::start(1400, 1900).await else {
        return;
    };
    let browser = &session.client;
    browser.goto(&format!("http://{addr}/admin")).await.unwrap();
    let operator = token("platform", "op-browser", Role::Operator, 600);
    fill(browser, "#token", &operator).await;
    click(browser, "#login button").await;
    wait_for(
        browser,
        "#queues tr[data-queue=\"mail\"][data-paused=\"false\"]",
    )
    .await;

    // A bad filter is refused, and the error is shown beside the field it names.
    click(browser, "#f-state option[value=\"dead\"]").await;
    fill(browser, "#f-company", "acme").await;
    fill(browser, "#f-q", &"x".repeat(201)).await;
    click(browser, "#apply").await;
    let error = wait_text(browser, "#err-q", |s| !s.is_empty()).await;
    assert!(error.contains("200"), "{error}");
    assert!(
        text(browser, "#filter-error")
            .await
            .contains("Filter not applied")
    );

    // Dead jobs of acme: exactly its three, newest first.
    fill(browser, "#f-q", "").await;
    click(browser, "#apply").await;
    wait_text(browser, "#applied", |s| s.contains("company acme")).await;
    assert_eq!(text(browser, "#err-q").await, "", "the error is cleared");
    let newest_first: Vec<JobId> = acme.iter().rev().copied().collect();
    wait_jobs(browser, &newest_first).await;

    // Retry all matching: counted first, changed only on Confirm.
    click(browser, "#bulk-retry").await;
    let question = wait_text(browser, "#confirm-text", |s| !s.is_empty()).await;
    assert!(question.contains("Retry 3 jobs?"), "{question}");
    assert!(question.contains("company acme"), "{question}");
    for id in &acme {
        assert_eq!(
            t.job(*id).await.state,
            JobState::Dead,
            "nothing changed yet"
        );
    }
    click(browser, "#confirm-yes").await;
    let result = wait_text(browser, "#bulk-result", |s| !s.is_empty()).await;
    assert!(result.to_lowercase().contains("retried 3 jobs"), "{result}");
    for id in &acme {
        let job = t.job(*id).await;
        assert_eq!(job.state, JobState::Available, "job {id} was retried");
        assert_eq!(job.attempt, 0);
    }
    assert_eq!(
        t.job(globex).await.state,
        JobState::Dead,
        "globex's is kept"
    );
    wait_jobs(browser, &[]).await;
    wait_for(browser, "#jobs-empty:not([hidden])").await;

    // Pausing a queue from the page: marked in the queues table, the jobs and the charts.
    click(
        browser,
        "#queues tr[data-queue=\"mail\"] button[data-action=\"pause\"]",
    )
    .await;
    let paused_row = "#queues tr[data-queue=\"mail\"][data-paused=\"true\"]";
    wait_for(browser, paused_row).await;
    let status = text(browser, &format!("{paused_row} td.status")).await;
    assert!(
        status.contains("paused since") && status.contains("op-browser"),
        "{status}"
    );
    let pauses = t.db.jobs().console().paused_queues().await.unwrap();
    assert_eq!(
        pauses.iter().map(|p| p.queue.as_str()).collect::<Vec<_>>(),
        vec!["mail"]
    );
    assert!(
        text(browser, "#queues tr[data-queue=\"reports\"] td.status")
            .await
            .contains("running")
    );
    click(browser, "#f-state option[value=\"\"]").await;
    click(browser, "#apply").await;
    wait_text(browser, "#applied", |s| !s.contains("state")).await;
    wait_jobs(browser, &newest_first).await;
    let first = format!("#jobs tr[data-job=\"{}\"]", acme[2]);
    wait_for(browser, &format!("{first}[data-state=\"available\"]")).await;
    wait_for(browser, &format!("{first} .badge.paused")).await;

    // The charts: one per busy queue and a total, with bars for the minute's work.
    let mail_chart = "#trends figure[data-chart=\"mail\"]";
    wait_for(browser, &format!("{mail_chart} figcaption .badge.paused")).await;
    let marks = browser
        .find_all(Locator::Css(&format!("{mail_chart} svg rect.mark.dead")))
        .await
        .unwrap();
    assert!(!marks.is_empty(), "the mail chart draws its dead jobs");
    let caption = text(browser, &format!("{mail_chart} figcaption")).await;
    assert!(
        caption.contains("4 done") && caption.contains("4 dead"),
        "{caption}"
    );
    wait_for(
        browser,
        "#trends figure[data-chart=\"reports\"] svg rect.mark.done",
    )
    .await;
    wait_for(browser, "#trends figure[data-chart=\"all queues\"] svg").await;
    let labels = wait_for(browser, &format!("{mail_chart} svg"))
        .await
        .prop("textContent")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(labels.contains("now"), "axis labels as text: {labels}");

    // A job's detail: its payload and the error of each attempt.
    click(browser, &format!("{first} a")).await;
    let detail = wait_text(browser, "#detail", |s| s.contains("\"errors\"")).await;
    assert!(
        detail.contains("\"company_id\": \"acme\"") && detail.contains("550 mailbox unavailable"),
        "{detail}"
    );
    wait_for(browser, &format!("{first}.selected")).await;

    let shot = support::browser::screenshot_dir().join("admin.png");
    std::fs::write(&shot, browser.screenshot().await.unwrap()).expect("write the screenshot");
    println!("screenshot of /admin: {}", shot.display());

    click(
        browser,
        "#queues tr[data-queue=\"mail\"] button[data-action=\"resume\"]",
    )
    .await;
    wait_for(
        browser,
        "#queues tr[data-queue=\"mail\"][data-paused=\"false\"]",
    )
    .await;
    assert!(
        t.db.jobs()
            .console()
            .paused_queues()
            .await
            .unwrap()
            .is_empty()
    );

    browser.clone().close().await.unwrap();
    signal(&serve, "-TERM").await;
    assert!(serve.wait().await.unwrap().success());
}

/// `voxline serve` on this database, answering on the returned address.
async fn serve(t: &TestDb) -> (tokio::process::Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let serve = t.spawn_voxline(&["serve"], &[("VOXLINE_HTTP_ADDR", &addr)]);
    let http = reqwest::Client::new();
    eventually("serve answers", Duration::from_secs(30), || {
        let (http, health) = (http.clone(), format!("http://{addr}/healthz"));
        async move { http.get(health).send().await.is_ok() }
    })
    .await;
    (serve, addr)
}
