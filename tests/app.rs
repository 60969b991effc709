//! The `/app` page end to end in headless Chromium, on the local Whisper model (no API key):
//! a member signs in, sees a 422 naming its field, uploads a two-voice stereo call the test
//! makes with espeak-ng, follows it to ready, and finds a highlighted question in one of their
//! own turns, the metrics and the three charts drawn; a corrupt recording fails and its reason
//! is shown; the past sessions list opens an earlier result. A screenshot of the result goes to
//! `VOXLINE_SCREENSHOT_DIR` (else a temp dir), and its path is printed.
#![cfg(feature = "local-whisper")]

mod support;

use std::path::Path;
use std::time::Duration;

use fantoccini::{Client, Locator};
use support::models::whisper_model_dir;
use support::voices::{DISCOVERY_CALL, record};
use support::{Backend, TestDb, browser, start_api, start_workers, token};
use voxline_api::auth::Role;

/// Transcribing and analysing the call on two cores, with room to spare.
const PIPELINE: Duration = Duration::from_secs(400);
const PAGE: Duration = Duration::from_secs(20);

/// Starts with a WAV header and nothing decodable after it: accepted at intake (its first bytes
/// are WAV), refused by the decoder for good.
fn corrupt_wav() -> Vec<u8> {
    let mut bytes = b"RIFF\x24\x00\x00\x00WAVE".to_vec();
    bytes.extend(b"this is not audio at all, only some words".repeat(20));
    bytes
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

async fn wait_for(browser: &Client, css: &str, limit: Duration) -> fantoccini::elements::Element {
    match support::browser::appears(browser, css, limit).await {
        Ok(found) => found,
        Err(e) => {
            let status = text(browser, "#status").await;
            let failure = text(browser, "#failure").await;
            panic!(
                "{css} did not appear within {limit:?} ({e}); status: {status:?}, failure: {failure:?}"
            )
        }
    }
}

async fn count(browser: &Client, css: &str) -> usize {
    browser.find_all(Locator::Css(css)).await.unwrap().len()
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Fills the form and submits it; `speakers` is the value of a "Who is speaking" option.
async fn submit(browser: &Client, file: &Path, title: &str, speakers: &str) {
    let input = browser.find(Locator::Id("file")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(&file.display().to_string()).await.unwrap();
    let title_input = browser.find(Locator::Id("title")).await.unwrap();
    title_input.clear().await.unwrap();
    title_input.send_keys(title).await.unwrap();
    click(browser, &format!("#speakers option[value=\"{speakers}\"]")).await;
    click(browser, "#submit").await;
}

/// The session shown once it is final; panics naming its reason when it is not `expected`.
async fn shown_session(browser: &Client, expected: &str, not: Option<&str>) -> String {
    let css = match not {
        Some(id) => format!(
            "#session:not([data-session=\"{id}\"])[data-status=\"ready\"], \
             #session:not([data-session=\"{id}\"])[data-status=\"failed\"]"
        ),
        None => "#session[data-status=\"ready\"], #session[data-status=\"failed\"]".to_string(),
    };
    let session = wait_for(browser, &css, PIPELINE).await;
    let status = session
        .attr("data-status")
        .await
        .unwrap()
        .unwrap_or_default();
    if status != expected {
        let failure = text(browser, "#failure").await;
        panic!("the session is {status}, not {expected}: {failure}");
    }
    session
        .attr("data-session")
        .await
        .unwrap()
        .expect("the shown session's id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_uploads_a_call_and_reads_the_coaching_on_the_app_page() {
    let Some(whisper) = whisper_model_dir().await else {
        return;
    };
    let Some(t) = TestDb::new(
        Backend::Sqlite,
        &["[queues.transcription]\nbackoff_base_ms = 50\n"],
    )
    .await
    else {
        return;
    };
    let models = t.settings.data_dir.join("models");
    std::fs::create_dir_all(&models).expect("models dir");
    std::os::unix::fs::symlink(&whisper, models.join("whisper-tiny.en")).expect("link");
    let Some(call) = record(&DISCOVERY_CALL, t.dir.path()) else {
        return;
    };
    let call_file = t.dir.path().join("discovery-call.wav");
    std::fs::write(&call_file, call.stereo()).expect("write the call");
    let broken_file = t.dir.path().join("broken.wav");
    std::fs::write(&broken_file, corrupt_wav()).expect("write the broken file");
    let Some(chrome) = browser::start(1280, 1900).await else {
        return;
    };
    let browser = &chrome.client;
    let base = start_api(&t).await;
    let _workers = start_workers(&t, &["transcription", "analysis"]);

    // The page is served with its strict policy.
    let page = reqwest::get(format!("{base}/app")).await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    // A typed transcript has no recording: its voice metrics are unavailable, for a reason.
    let typed = reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(token("acme", "ann", Role::Member, 600))
        .json(
            &serde_json::json!({"title": "Typed <b>notes</b>", "kind": "sales", "transcript": [
            {"speaker": "partner", "start": 0.0, "end": 2.0, "text": "Um, how can I help?"},
            {"speaker": "user", "start": 2.5, "end": 6.0,
             "text": "Um, I think we need a <i>demo</i>. When are you free?"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(typed.status(), reqwest::StatusCode::ACCEPTED);
    let typed: serde_json::Value = typed.json().await.unwrap();
    let typed = typed["id"].as_str().expect("id").to_string();

    browser.goto(&format!("{base}/app")).await.unwrap();
    browser
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&token("acme", "ann", Role::Member, 3600))
        .await
        .unwrap();
    click(browser, "#login button[type=submit]").await;
    wait_for(browser, "#main:not([hidden])", PAGE).await;

    // A refusal shows the field it names.
    submit(browser, &call_file, "", "channels=user,partner").await;
    wait_for(
        browser,
        "#form-error[data-field=\"title\"]:not([hidden])",
        PAGE,
    )
    .await;
    let refusal = text(browser, "#form-error").await;
    assert!(refusal.starts_with("title:"), "{refusal}");

    submit(
        browser,
        &call_file,
        "Discovery call",
        "channels=user,partner",
    )
    .await;
    let ready = shown_session(browser, "ready", None).await;
    wait_for(browser, &format!("#result[data-loaded=\"{ready}\"]"), PAGE).await;

    let question = wait_for(browser, "#transcript .turn.user mark.question", PAGE).await;
    let asked = question.text().await.unwrap();
    assert!(asked.trim_end().ends_with('?'), "{asked}");
    assert_eq!(
        count(browser, "#transcript .turn.partner mark").await,
        0,
        "the partner is not coached"
    );
    assert!(count(browser, "#chart-talk svg rect.bar").await >= 2);
    assert!(count(browser, "#chart-pace svg circle.dot").await >= 1);
    assert!(
        count(browser, "#chart-pitch svg circle.dot").await >= 1,
        "the pitch chart: {}",
        text(browser, "#chart-pitch").await
    );
    let pace = text(browser, "#metrics tr[data-metric=\"words_per_minute\"]").await;
    assert!(pace.contains("wpm"), "value and target band: {pace}");
    assert!(
        count(browser, "#metrics tbody tr").await >= 3,
        "{}",
        text(browser, "#metrics").await
    );

    let shot = support::browser::screenshot_dir().join("app.png");
    std::fs::write(&shot, browser.screenshot().await.unwrap()).expect("write the screenshot");
    println!("screenshot of /app: {}", shot.display());

    // A recording that cannot be decoded fails, and the page says why.
    submit(browser, &broken_file, "Broken recording", "").await;
    let failed = shown_session(browser, "failed", Some(&ready)).await;
    let reason = text(browser, "#failure").await;
    assert!(reason.contains("cannot be decoded"), "{reason}");

    // The past sessions list both; the earlier one opens its result again.
    wait_for(
        browser,
        &format!("#sessions tr[data-session=\"{failed}\"]"),
        PAGE,
    )
    .await;
    click(
        browser,
        &format!("#sessions tr[data-session=\"{ready}\"] a"),
    )
    .await;
    wait_for(browser, &format!("#result[data-loaded=\"{ready}\"]"), PAGE).await;
    assert_eq!(
        count(browser, &format!("#session[data-session=\"{ready}\"]")).await,
        1
    );

    // The typed session: what is unavailable says why, and no API text became markup.
    click(
        browser,
        &format!("#sessions tr[data-session=\"{typed}\"] a"),
    )
    .await;
    wait_for(
        browser,
        &format!("#result[data-loaded=\"{typed}\"]"),
        PIPELINE,
    )
    .await;
    let pitch = text(browser, "#chart-pitch p.na").await;
    assert!(pitch.contains("no recording"), "{pitch}");
    let pitch_row = text(
        browser,
        "#metrics tr.unavailable[data-metric=\"pitch_variation_semitones\"]",
    )
    .await;
    assert!(
        pitch_row.contains("unavailable") && pitch_row.contains("no recording"),
        "{pitch_row}"
    );
    assert!(
        text(browser, "#session-title")
            .await
            .contains("<b>notes</b>")
    );
    assert!(text(browser, "#transcript").await.contains("<i>demo</i>"));
    assert_eq!(
        count(browser, "#session b, #session i, #sessions b").await,
        0
    );
    let hedge = text(browser, "#transcript .turn.user mark.hedge").await;
    assert_eq!(hedge, "I think");

    // Recorded in the browser (Chromium's fake microphone: a tone): MediaRecorder's webm/opus
    // is accepted and decoded; a tone holds no speech, so it may fail, but not as undecodable.
    click(browser, "#record").await;
    wait_for(browser, "#recorded[data-seconds=\"2\"]", PAGE).await;
    click(browser, "#record").await;
    wait_for(browser, "#recorded[data-state=\"recorded\"]", PAGE).await;
    let title_input = browser.find(Locator::Id("title")).await.unwrap();
    title_input.clear().await.unwrap();
    title_input.send_keys("Recorded here").await.unwrap();
    click(browser, "#speakers option[value=\"\"]").await;
    click(browser, "#submit").await;
    let css = format!(
        "#session:not([data-session=\"{typed}\"])[data-status=\"ready\"], \
         #session:not([data-session=\"{typed}\"])[data-status=\"failed\"]"
    );
    wait_for(browser, &css, PIPELINE).await;
    let failure = text(browser, "#failure").await;
    assert!(!failure.contains("cannot be decoded"), "{failure}");
    println!("the recording made in the browser: {failure:?}");

    chrome.client.clone().close().await.unwrap();
}
