//! Audio intake and live status, on both databases: a recording is stored and its session and
//! transcription job are written together; every bad upload is refused with the right status
//! and the field named, leaving nothing behind; and a session's status streams as
//! Server-Sent Events — across processes on Postgres.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use support::api::{answer, id_of, json_of, session_events};
use support::{Backend, TestDb, start_api, start_workers, token};
use voxline_api::auth::Role;
use voxline_domain::blobs::BlobStore;
use voxline_domain::sessions;
use voxline_jobs::DbJobs;
use voxline_jobs::{JobState, store};

/// OpenAI "configured" (the key is never used here: no transcription worker runs), so audio
/// uploads are accepted.
const WITH_TRANSCRIPTION: &str = "[openai]\napi_key = \"sk-test\"\n";

fn audio_part(bytes: Vec<u8>, file_name: &str, mime: &str) -> Part {
    Part::bytes(bytes)
        .file_name(file_name.to_string())
        .mime_str(mime)
        .expect("mime")
}

fn form(title: &str, kind: &str, audio: Option<Part>) -> Form {
    let form = Form::new()
        .text("title", title.to_string())
        .text("kind", kind.to_string());
    match audio {
        Some(part) => form.part("audio", part),
        None => form,
    }
}

/// Posts `body` as a new session with the given `Content-Type`, as `auth`.
async fn post_raw(
    base: &str,
    auth: &str,
    content_type: &str,
    body: &'static str,
) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .post(format!("{base}/api/sessions"))
            .bearer_auth(auth)
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

async fn submit(base: &str, form: Form, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(token("acme", "ann", Role::Member, 600))
        .multipart(form);
    if let Some(k) = key {
        request = request.header("Idempotency-Key", k);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn session_count(t: &TestDb) -> usize {
    sessions::list(&t.db, "acme", None, 100)
        .await
        .expect("list")
        .len()
}

async fn jobs(t: &TestDb, queue: Option<&str>, state: Option<JobState>) -> Vec<voxline_jobs::Job> {
    let filter = store::JobFilter {
        queue: queue.map(str::to_string),
        state,
        limit: 100,
        ..Default::default()
    };
    t.db.jobs().list(&filter).await.expect("list jobs")
}

fn blob_files(t: &TestDb) -> usize {
    walk(&t.settings.blob_dir())
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

fn assert_refused(answer: &(StatusCode, Value), status: StatusCode, field: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["field"], field, "{}", answer.1);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

async fn an_uploaded_recording_is_stored_with_its_session_and_transcription_job(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[WITH_TRANSCRIPTION]).await else {
        return;
    };
    let base = start_api(&t).await;
    let recording = support::silent_wav(16_000);
    let (status, body) = submit(
        &base,
        form(
            "Pitch rehearsal",
            "presentation",
            Some(audio_part(recording.clone(), "pitch.wav", "audio/wav")),
        ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().expect("id");
    assert_eq!(
        body["links"]["events"],
        format!("/api/sessions/{id}/events")
    );

    let session = sessions::get(&t.db, "acme", id)
        .await
        .expect("get")
        .expect("the session exists after the 202");
    assert_eq!(session.source, "audio");
    assert_eq!(session.audio_type.as_deref(), Some("wav"));
    let blob = session.audio_ref.expect("an audio reference");
    let stored = voxline_domain::blobs::LocalBlobs::new(t.settings.blob_dir())
        .get(&blob)
        .await
        .expect("the recording is in the blob store");
    assert_eq!(
        stored, recording,
        "the stored recording is the uploaded one, byte for byte"
    );
    assert!(
        sessions::segments(&t.db, "acme", id)
            .await
            .expect("segments")
            .is_none(),
        "no transcript before transcription"
    );

    let jobs = jobs(&t, Some("transcription"), Some(JobState::Available)).await;
    assert_eq!(jobs.len(), 1, "exactly one transcription job");
    assert_eq!(jobs[0].kind, "transcription.run");
    assert_eq!(jobs[0].payload["session_id"], id);
    assert_eq!(jobs[0].payload["company_id"], "acme");
}
on_both_databases!(an_uploaded_recording_is_stored_with_its_session_and_transcription_job);

async fn a_retried_upload_with_the_same_key_creates_one_session_and_one_blob(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[WITH_TRANSCRIPTION]).await else {
        return;
    };
    let base = start_api(&t).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let audio = audio_part(support::silent_wav(8_000), "a.wav", "audio/wav");
        let (status, body) =
            submit(&base, form("Call", "sales", Some(audio)), Some("upload-1")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(session_count(&t).await, 1);
    assert_eq!(blob_files(&t), 1);

    // The same key with a different recording is a client bug, not a replay.
    let other = audio_part(support::silent_wav(9_000), "a.wav", "audio/wav");
    let answer = submit(&base, form("Call", "sales", Some(other)), Some("upload-1")).await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "Idempotency-Key");
    assert_eq!(session_count(&t).await, 1);
    assert_eq!(blob_files(&t), 1);
}
on_both_databases!(a_retried_upload_with_the_same_key_creates_one_session_and_one_blob);

async fn bad_uploads_are_refused_naming_the_field_and_leave_nothing_behind(backend: Backend) {
    let limits = format!("{WITH_TRANSCRIPTION}[uploads]\nmax_audio_bytes = 20000\n");
    let Some(t) = TestDb::new(backend, &[&limits]).await else {
        return;
    };
    let base = start_api(&t).await;
    let ok_wav = || audio_part(support::silent_wav(1_000), "a.wav", "audio/wav");

    let oversize = audio_part(support::silent_wav(20_000), "big.wav", "audio/wav");
    let answer = submit(&base, form("Call", "sales", Some(oversize)), None).await;
    assert_refused(&answer, StatusCode::PAYLOAD_TOO_LARGE, "audio");

    let text_as_wav = audio_part(b"just some text, not audio".to_vec(), "a.wav", "audio/wav");
    let answer = submit(&base, form("Call", "sales", Some(text_as_wav)), None).await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "audio");
    assert_eq!(answer.1["error"]["code"], "audio_type_mismatch");

    let flac_claiming_mp3 = audio_part(b"fLaC\0\0\0\x22rest".to_vec(), "a.mp3", "audio/mpeg");
    let answer = submit(&base, form("Call", "sales", Some(flac_claiming_mp3)), None).await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "audio");
    assert_eq!(answer.1["error"]["code"], "audio_type_mismatch");

    let video = audio_part(support::silent_wav(100), "clip.mov", "video/quicktime");
    let answer = submit(&base, form("Call", "sales", Some(video)), None).await;
    assert_refused(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "audio");

    let unknown = audio_part(
        b"\x00\x01\x02\x03 no magic".to_vec(),
        "blob",
        "application/octet-stream",
    );
    let answer = submit(&base, form("Call", "sales", Some(unknown)), None).await;
    assert_refused(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "audio");

    let empty = audio_part(Vec::new(), "a.wav", "audio/wav");
    let answer = submit(&base, form("Call", "sales", Some(empty)), None).await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "audio");

    let answer = submit(&base, form("Call", "sales", None), None).await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "audio");

    let answer = submit(&base, form("Call", "podcast", Some(ok_wav())), None).await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "kind");

    let answer = submit(&base, form("  ", "sales", Some(ok_wav())), None).await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "title");

    let extra = form("Call", "sales", Some(ok_wav())).text("speaker", "me");
    let answer = submit(&base, extra, None).await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "speaker");

    let auth = token("acme", "ann", Role::Member, 600);
    let answer = post_raw(&base, &auth, "text/plain", "hello").await;
    assert_refused(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type");

    let answer = post_raw(
        &base,
        &auth,
        "multipart/form-data; boundary=XYZ",
        "--XYZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nunterminated",
    )
    .await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);

    assert_eq!(
        session_count(&t).await,
        0,
        "no refused upload created a session"
    );
    assert_eq!(blob_files(&t), 0, "no refused upload left a file");
    let jobs = jobs(&t, None, None).await;
    assert!(jobs.is_empty(), "no refused upload queued a job: {jobs:?}");
}
on_both_databases!(bad_uploads_are_refused_naming_the_field_and_leave_nothing_behind);

async fn audio_is_refused_with_instructions_when_no_transcription_provider_is_enabled(
    backend: Backend,
) {
    // The embedded default: no OpenAI key and no local model installed.
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let audio = audio_part(support::silent_wav(1_000), "a.wav", "audio/wav");
    let answer = submit(&base, form("Call", "sales", Some(audio)), None).await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "audio");
    let message = answer.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("voxline models install"), "{message}");
    assert!(message.contains("openai.api_key"), "{message}");
    assert_eq!(session_count(&t).await, 0);
    assert_eq!(blob_files(&t), 0);
}
on_both_databases!(audio_is_refused_with_instructions_when_no_transcription_provider_is_enabled);

/// Reads `event: status` data lines from an SSE response until it ends (or `limit` passes).
async fn read_status_events(mut response: reqwest::Response, limit: Duration) -> Vec<Value> {
    let mut text = String::new();
    let _ = tokio::time::timeout(limit, async {
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    text.split("\n\n")
        .filter(|block| block.lines().any(|l| l == "event: status"))
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str(d).ok())
        })
        .collect()
}

fn transcript() -> Value {
    let question = "What matters most to your team this quarter?";
    support::two_turn_call("Discovery call", "Thanks for calling.", question, 8.0)
}

async fn a_sessions_status_streams_as_server_sent_events_until_it_is_ready(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let auth = token("acme", "ann", Role::Member, 600);
    let client = reqwest::Client::new();
    let created = json_of(
        client
            .post(format!("{base}/api/sessions"))
            .bearer_auth(&auth)
            .json(&transcript()),
    )
    .await;
    let id = id_of(&created);

    let stream = session_events(&base, &id, Some(&auth)).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );

    // On Postgres the worker is another process: the changes cross it through LISTEN/NOTIFY.
    let (_child, _runner) = match backend {
        Backend::Postgres => (
            Some(t.spawn_voxline(&["worker", "--queues", "analysis"], &[])),
            None,
        ),
        Backend::Sqlite => (None, Some(start_workers(&t, &["analysis"]))),
    };
    let events = read_status_events(stream, Duration::from_secs(30)).await;
    let statuses: Vec<&str> = events.iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses.first(), Some(&"queued"), "{events:?}");
    assert_eq!(
        statuses.last(),
        Some(&"ready"),
        "the stream ends with ready: {events:?}"
    );
    assert!(statuses.contains(&"analyzing"), "{events:?}");
    assert!(events.iter().all(|e| e["session_id"] == id.as_str()));

    // A stream opened after the end says the final status once and closes.
    let again = session_events(&base, &id, Some(&auth)).await;
    let events = read_status_events(again, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "ready");
}
on_both_databases!(a_sessions_status_streams_as_server_sent_events_until_it_is_ready);

async fn another_companys_session_stream_is_not_found(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let client = reqwest::Client::new();
    let created = json_of(
        client
            .post(format!("{base}/api/sessions"))
            .bearer_auth(token("acme", "ann", Role::Member, 600))
            .json(&transcript()),
    )
    .await;
    let id = id_of(&created);
    let response =
        session_events(&base, &id, Some(&token("globex", "gus", Role::Member, 600))).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = session_events(&base, &id, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
on_both_databases!(another_companys_session_stream_is_not_found);
