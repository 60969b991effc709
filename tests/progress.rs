//! Job progress, on SQLite and on Postgres: a handler reports a percentage and a note through
//! its claimed job; the store keeps them on the job, fenced by the attempt's lease (an attempt
//! whose job was rescued and claimed again writes nothing), cleared by the next claim; unchanged
//! and too-frequent reports are not written. Local transcription reports per window, and the
//! session's event stream and the operators' job view show it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::{Backend, TestDb, eventually};
use tokio::sync::Notify;
use voxline_jobs::progress::NOTE_MAX_CHARS;
use voxline_jobs::{
    ClaimedJob, DbJobs, DeadHooks, HandlerError, Handlers, JobProgress, JobState, NewJob, Percent,
    Progress, ProgressWrite, Runner,
};

const LONG: Duration = Duration::from_secs(20);

const FAST: &str = r#"
[engine]
poll_interval_ms = 200
heartbeat_interval_ms = 100
rescue_after_ms = 60000
[queues.test]
concurrency = 2
timeout_ms = 60000
"#;

fn percent(value: u8) -> Percent {
    Percent::new(value).expect("a percentage")
}

async fn progress_is_stored_with_the_job_and_fenced_by_its_lease(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let store = t.db.jobs();
    let id = t
        .enqueue(NewJob::new("test", "progress.demo", json!({})).unique_key("progress:demo"))
        .await;
    let first = store.claim("test", "w1", 1).await.expect("claim").remove(0);
    let reporter = Progress::for_lease(store.clone(), first.lease());

    assert_eq!(
        reporter
            .report(percent(10), "window 1 of 3")
            .await
            .expect("report"),
        ProgressWrite::Written
    );
    let job = t.job(id).await;
    assert_eq!(
        job.progress,
        Some(JobProgress::new(percent(10), "window 1 of 3"))
    );
    // The same value again is not written; another one this soon is dropped; 100 never is.
    assert_eq!(
        reporter
            .report(percent(10), "window 1 of 3")
            .await
            .expect("report"),
        ProgressWrite::Unchanged
    );
    assert_eq!(
        reporter
            .report(percent(20), "window 2 of 3")
            .await
            .expect("report"),
        ProgressWrite::Throttled
    );
    assert_eq!(
        t.job(id).await.progress.map(|p| p.percent),
        Some(percent(10))
    );
    let long = "x".repeat(NOTE_MAX_CHARS * 2);
    assert_eq!(
        reporter.report(Percent::DONE, &long).await.expect("report"),
        ProgressWrite::Written
    );
    let stored = t.job(id).await.progress.expect("progress");
    assert_eq!(stored.percent, Percent::DONE);
    assert_eq!(
        stored.note.map(|n| n.chars().count()),
        Some(NOTE_MAX_CHARS),
        "the note is cut"
    );
    let keyed = store
        .progress_by_key("progress:demo")
        .await
        .expect("by key")
        .expect("the job");
    assert_eq!((keyed.id, keyed.state), (id, JobState::Running));
    assert_eq!(keyed.progress.map(|p| p.percent), Some(Percent::DONE));

    // The job is rescued and claimed again: the new attempt starts with no progress, and the
    // old attempt's writes are refused.
    t.backdate_heartbeat(id).await;
    let rescued = store
        .rescue(Duration::from_secs(60), &DeadHooks::new())
        .await
        .expect("rescue");
    assert_eq!(rescued, vec![(id, JobState::Available)]);
    let second = store.claim("test", "w2", 1).await.expect("claim").remove(0);
    assert_eq!(second.lease, first.lease + 1);
    assert_eq!(
        t.job(id).await.progress,
        None,
        "a new attempt starts afresh"
    );
    let current = Progress::for_lease(store.clone(), second.lease());
    assert_eq!(
        current
            .report(percent(5), "starting over")
            .await
            .expect("report"),
        ProgressWrite::Written
    );
    let stale = store
        .set_progress(first.lease(), &JobProgress::new(percent(90), "stale"))
        .await
        .expect("write");
    assert!(!stale, "a stale lease's progress is refused");
    // (100 is never throttled, so this one reaches the store, which refuses it; after that
    // the old attempt does not even try.)
    assert_eq!(
        reporter
            .report(Percent::DONE, "stale")
            .await
            .expect("report"),
        ProgressWrite::NotHeld
    );
    assert_eq!(
        reporter.report(percent(95), "stale").await.expect("report"),
        ProgressWrite::NotHeld
    );
    assert_eq!(
        t.job(id).await.progress,
        Some(JobProgress::new(percent(5), "starting over"))
    );
    // A job that is not running takes no progress either.
    assert!(
        !store
            .set_progress(
                voxline_jobs::Lease {
                    job: id,
                    token: second.lease + 1
                },
                &JobProgress::new(percent(1), "")
            )
            .await
            .expect("write")
    );
}
on_both_databases!(progress_is_stored_with_the_job_and_fenced_by_its_lease);

async fn a_handler_reports_progress_through_its_claimed_job(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let release = Arc::new(Notify::new());
    let handlers = Handlers::new().register("progress.demo", {
        let release = release.clone();
        move |job: ClaimedJob| {
            let release = release.clone();
            async move {
                let written = job
                    .progress
                    .report(percent(50), "halfway")
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
                if written != ProgressWrite::Written {
                    return Err(HandlerError::permanent(format!("not written: {written:?}")));
                }
                release.notified().await;
                Ok(())
            }
        }
    });
    let id = t
        .enqueue(NewJob::new("test", "progress.demo", json!({})))
        .await;
    let runner = Runner::new(t.db.clone(), t.settings.clone(), handlers)
        .queues(vec!["test".into()])
        .start();
    eventually("the running job shows its progress", LONG, || async {
        let job = t.job(id).await;
        job.state == JobState::Running
            && job.progress == Some(JobProgress::new(percent(50), "halfway"))
    })
    .await;
    release.notify_one();
    let done = t.wait_state(id, JobState::Done, LONG).await;
    assert_eq!(
        done.progress,
        Some(JobProgress::new(percent(50), "halfway")),
        "the last progress stays on the finished job"
    );
    runner.shutdown().await;
}
on_both_databases!(a_handler_reports_progress_through_its_claimed_job);

#[cfg(feature = "local-whisper")]
mod transcription {
    use super::*;
    use reqwest::multipart::{Form, Part};
    use serde_json::Value;
    use support::models::whisper_model_dir;
    use support::voices::{DISCOVERY_CALL, line, record};
    use support::{start_api, start_workers, token};
    use voxline_api::auth::Role;

    /// Reads the session's event stream until its final status; every event's name and data.
    async fn read_events(mut response: reqwest::Response) -> Vec<(String, Value)> {
        let mut text = String::new();
        let mut events = Vec::new();
        let finished = tokio::time::timeout(Duration::from_secs(300), async {
            while let Ok(Some(chunk)) = response.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
                while let Some(cut) = text.find("\n\n") {
                    let block: String = text.drain(..cut + 2).collect();
                    let name = block.lines().find_map(|l| l.strip_prefix("event: "));
                    let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                    if let (Some(name), Some(data)) = (name, data) {
                        let data: Value = serde_json::from_str(data).expect("json data");
                        let last = name == "status"
                            && matches!(data["status"].as_str(), Some("ready" | "failed"));
                        events.push((name.to_string(), data));
                        if last {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        assert!(finished.is_ok(), "no final status: {events:?}");
        events
    }

    async fn the_session_stream_shows_the_transcriptions_progress(backend: Backend) {
        let Some(whisper) = whisper_model_dir().await else {
            return;
        };
        let Some(t) = TestDb::new(backend, &[]).await else {
            return;
        };
        let models = t.settings.data_dir.join("models");
        std::fs::create_dir_all(&models).expect("models dir");
        std::os::unix::fs::symlink(&whisper, models.join("whisper-tiny.en")).expect("link");
        // The call three times over: over a minute of speech, heard in several windows.
        let lines: Vec<_> = (0..3)
            .flat_map(|_| DISCOVERY_CALL.iter())
            .map(|l| line(l.who, l.gap_before, l.text))
            .collect();
        let Some(call) = record(&lines, t.dir.path()) else {
            return;
        };
        let base = start_api(&t).await;
        let client = reqwest::Client::new();
        let member = token("acme", "ann", Role::Member, 600);
        let form = Form::new()
            .text("title", "Discovery call")
            .text("kind", "sales")
            .text("channels", "user")
            .part(
                "audio",
                Part::bytes(call.mono())
                    .file_name("call.wav")
                    .mime_str("audio/wav")
                    .expect("mime"),
            );
        let (_, created) = support::api::upload_session(&base, &member, form).await;
        let id = support::api::id_of(&created);
        let stream = support::api::session_events(&base, &id, Some(&member)).await;
        assert_eq!(stream.status(), reqwest::StatusCode::OK);
        let _workers = start_workers(&t, &["transcription", "analysis"]);
        let events = read_events(stream).await;

        let last = events.last().map(|(_, data)| data["status"].clone());
        assert_eq!(last, Some(json!("ready")), "{events:?}");
        let transcribing = events
            .iter()
            .position(|(name, data)| name == "status" && data["status"] == "transcribing")
            .expect("a transcribing status");
        let analyzing = events
            .iter()
            .position(|(name, data)| name == "status" && data["status"] == "analyzing")
            .unwrap_or(events.len());
        let progress: Vec<&Value> = events
            .iter()
            .filter(|(name, _)| name == "progress")
            .map(|(_, data)| data)
            .collect();
        assert!(
            !progress.is_empty(),
            "progress while transcribing: {events:?}"
        );
        for (at, (name, data)) in events.iter().enumerate() {
            if name == "progress" {
                assert!(at > transcribing && at < analyzing, "{events:?}");
                assert_eq!(data["status"], "transcribing");
                assert_eq!(data["session_id"], id.as_str());
                assert!(data["progress"].as_u64().is_some_and(|p| p <= 100));
                assert!(data["note"].as_str().is_some_and(|n| !n.is_empty()));
            }
        }

        // The job keeps the last window's report; the operators' job view shows it.
        let job =
            t.db.jobs()
                .progress_by_key(&format!("transcription:{id}"))
                .await
                .expect("read")
                .expect("the transcription job");
        let operator = token("platform", "op-ann", Role::Operator, 600);
        let detail: Value = client
            .get(format!("{base}/api/admin/jobs/{}", job.id))
            .bearer_auth(&operator)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(detail["progress"], 100, "{detail}");
        let note = detail["progress_note"].as_str().unwrap_or_default();
        assert!(note.contains("windows"), "per-window progress: {detail}");
    }
    on_both_databases!(the_session_stream_shows_the_transcriptions_progress);
}
