//! Coaching from a recorded conversation: who said what. Calls are made by the tests with two
//! espeak-ng voices at known turn times, as a stereo file (one speaker per channel, each
//! channel carrying the other side's bleed 25 dB down) and as a mono mix, and uploaded as a
//! client would; on both databases, on the local models (no API key).
//!
//! What must hold: every transcript segment has the speaker of the turn it lies in; the talk
//! ratio is within 0.05 of the truth measured from the audio placed; the user's questions are
//! counted exactly and the partner's not at all; the voice metrics are there (a 2.5 s pause
//! placed in the user's last turn is one long pause); a one-voice mono recording has speaker
//! metrics unavailable with the reason, not wrong; and every bad `channels` / `user_speaker`
//! is a 422 naming the field.
#![cfg(feature = "local-whisper")]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use support::api::{answer, upload_session};
use support::models::deployment_with_models;
use support::voices::{
    DISCOVERY_CALL, DISCOVERY_CALL_USER_QUESTIONS, Line, Recording, Who, line, record, wav,
};
use support::{Backend, TestDb, start_api, start_workers, token};
use voxline_api::auth::Role;
use voxline_jobs::RunnerHandle;

/// A deployment with the local models (see `deployment_with_models`) whose API and workers
/// run, and `lines` recorded in its data directory.
struct Recorded {
    t: TestDb,
    call: Recording,
    base: String,
    /// Kept while the workers should run.
    _workers: RunnerHandle,
}

async fn recorded(backend: Backend, diarize: bool, lines: &[Line]) -> Option<Recorded> {
    let t = deployment_with_models(backend, diarize).await?;
    let call = record(lines, t.dir.path())?;
    let base = start_api(&t).await;
    let workers = start_workers(&t, &["transcription", "analysis"]);
    Some(Recorded {
        t,
        call,
        base,
        _workers: workers,
    })
}

async fn upload(base: &str, wav: Vec<u8>, fields: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut form = Form::new()
        .text("title", "Discovery call")
        .text("kind", "sales");
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    let form = form.part(
        "audio",
        Part::bytes(wav)
            .file_name("call.wav")
            .mime_str("audio/wav")
            .expect("mime"),
    );
    upload_session(base, &ann(), form).await
}

fn ann() -> String {
    token("acme", "ann", Role::Member, 600)
}

async fn get(base: &str, path: &str) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(ann()),
    )
    .await
}

async fn ready(t: &TestDb, id: &str) {
    t.wait_session_ready("acme", id, Duration::from_secs(300))
        .await
}

/// Uploads `wav`, waits for the feedback and checks the transcript against the call's turns.
async fn coached(r: &Recorded, wav: Vec<u8>, fields: &[(&str, &str)], method: &str) {
    let (t, base, call) = (&r.t, r.base.as_str(), &r.call);
    let (status, body) = upload(base, wav, fields).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    ready(t, &id).await;

    let (status, transcript) = get(base, &format!("/api/sessions/{id}/transcript")).await;
    assert_eq!(status, StatusCode::OK, "{transcript}");
    assert_eq!(transcript["speakers"]["method"], method, "{transcript}");
    assert_eq!(transcript["speakers"]["status"], "separated");
    let segments = transcript["segments"].as_array().expect("segments");
    assert!(segments.len() >= DISCOVERY_CALL.len() - 1, "{transcript}");
    let mut turns_heard = std::collections::BTreeSet::new();
    for s in segments {
        let (start, end) = (
            s["start"].as_f64().expect("start"),
            s["end"].as_f64().expect("end"),
        );
        let truth = call
            .speaker_of(start, end)
            .expect("a segment inside some turn");
        assert_eq!(
            s["speaker"],
            truth.label(),
            "segment {s} lies in a {truth:?} turn"
        );
        for (i, turn) in call.turns.iter().enumerate() {
            if start < turn.end && end > turn.start {
                turns_heard.insert(i);
            }
        }
    }
    assert_eq!(
        turns_heard.len(),
        call.turns.len(),
        "every turn is heard: {transcript}"
    );
    let user_question = segments
        .iter()
        .filter(|s| s["speaker"] == "user")
        .flat_map(|s| s["questions"].as_array().cloned().unwrap_or_default())
        .next()
        .expect("a highlighted question in the user's turns");
    assert!(
        user_question["text"]
            .as_str()
            .unwrap_or_default()
            .ends_with('?')
    );

    let (status, feedback) = get(base, &format!("/api/sessions/{id}/feedback")).await;
    assert_eq!(status, StatusCode::OK, "{feedback}");
    let metrics = &feedback["metrics"];
    let talk_ratio = metrics["talk_ratio"].as_f64().expect("a talk ratio");
    let truth = call.talk_ratio();
    assert!(
        (talk_ratio - truth).abs() <= 0.05,
        "talk ratio {talk_ratio:.3} vs the truth {truth:.3}"
    );
    assert_eq!(
        metrics["questions"], DISCOVERY_CALL_USER_QUESTIONS,
        "the user's questions only: {metrics}"
    );
    assert!(metrics["interruptions"].as_u64().is_some(), "{metrics}");
    let voice = &metrics["voice"];
    assert!(voice.is_object(), "voice metrics from the audio: {metrics}");
    assert!(
        voice["pitch_variation_semitones"].as_f64().is_some(),
        "{voice}"
    );
    assert!(voice["median_pitch_hz"].as_f64().is_some(), "{voice}");
    assert_eq!(voice["pauses"]["long_count"], 1, "the 2.5 s pause: {voice}");
    assert!(
        voice["pauses"]["longest_seconds"]
            .as_f64()
            .unwrap_or_default()
            >= 2.0,
        "{voice}"
    );
    assert!(
        feedback["scores"]["metrics"]["pitch_variation_semitones"]["score"]
            .as_f64()
            .is_some(),
        "the pitch is scored against the sales target: {feedback}"
    );
}

async fn a_stereo_call_is_heard_one_speaker_per_channel(backend: Backend) {
    let Some(r) = recorded(backend, false, &DISCOVERY_CALL).await else {
        return;
    };
    let fields = [("channels", "user,partner")];
    coached(&r, r.call.stereo(), &fields, "channels").await;
    // Without `channels`, channel 0 is the user.
    coached(&r, r.call.stereo(), &[], "channels").await;
}
on_both_databases!(a_stereo_call_is_heard_one_speaker_per_channel);

async fn a_mono_call_of_two_voices_is_diarized(backend: Backend) {
    let Some(r) = recorded(backend, true, &DISCOVERY_CALL).await else {
        return;
    };
    // The partner speaks first: the user is the second voice.
    let fields = [("user_speaker", "second")];
    coached(&r, r.call.mono(), &fields, "diarization").await;
}
on_both_databases!(a_mono_call_of_two_voices_is_diarized);

async fn one_voice_has_no_speaker_metrics_but_its_own(backend: Backend) {
    let monologue = [
        line(
            Who::User,
            0.5,
            "Good morning everyone. Today I will show our results.",
        ),
        line(
            Who::User,
            0.8,
            "Our sales grew by twelve percent this quarter.",
        ),
        line(Who::User, 0.8, "Do you have any questions?"),
    ];
    let Some(Recorded {
        t,
        call: talk,
        base,
        _workers,
    }) = recorded(backend, true, &monologue).await
    else {
        return;
    };
    let (status, body) = upload(&base, wav(&[&talk.user]), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    ready(&t, &id).await;
    let (_, transcript) = get(&base, &format!("/api/sessions/{id}/transcript")).await;
    assert_eq!(
        transcript["speakers"]["status"], "one_voice",
        "{transcript}"
    );
    for s in transcript["segments"].as_array().expect("segments") {
        assert_eq!(s["speaker"], "user");
    }
    let (_, feedback) = get(&base, &format!("/api/sessions/{id}/feedback")).await;
    let metrics = &feedback["metrics"];
    assert_eq!(metrics["talk_ratio"], Value::Null, "not 100 %: {metrics}");
    assert_eq!(metrics["interruptions"], Value::Null, "not 0: {metrics}");
    let verdict = feedback["scores"]["metrics"]["talk_ratio"]["verdict"]
        .as_str()
        .unwrap_or_default();
    assert!(
        verdict.contains("one voice"),
        "the reason is given: {verdict}"
    );
    assert_eq!(
        metrics["questions"], 1,
        "the user's own metrics stay: {metrics}\n{transcript}"
    );
    assert!(metrics["words_per_minute"].as_f64().is_some());
    assert!(
        metrics["voice"]["pitch_variation_semitones"]
            .as_f64()
            .is_some(),
        "{metrics}"
    );
}
on_both_databases!(one_voice_has_no_speaker_metrics_but_its_own);

/// Refusals need no model: the fields are checked before anything is stored.
async fn bad_channels_and_user_speaker_are_refused_naming_the_field(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let stereo = wav(&[&[0.1; 1600], &[0.0; 1600]]);
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("channels", "user,user")], "channels"),
        (&[("channels", "partner,partner")], "channels"),
        (&[("channels", "user,coach")], "channels"),
        (&[("channels", "")], "channels"),
        (&[("channels", "user,")], "channels"),
        (&[("channels", "user,partner,partner")], "channels"),
        (&[("user_speaker", "third")], "user_speaker"),
        (&[("user_speaker", "")], "user_speaker"),
        (
            &[("channels", "user,partner"), ("user_speaker", "first")],
            "user_speaker",
        ),
    ];
    for (fields, field) in cases {
        let (status, body) = upload(&base, stereo.clone(), fields).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{fields:?}: {body}"
        );
        assert_eq!(body["error"]["field"], field, "{fields:?}: {body}");
    }
    let mono = wav(&[&[0.1; 1600]]);
    let (status, body) = upload(&base, mono, &[("channels", "user,partner")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "channels");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1 channel"),
        "{body}"
    );
}
on_both_databases!(bad_channels_and_user_speaker_are_refused_naming_the_field);

/// The transcript route: 409 until there is one; a JSON transcript has one at once, its
/// speakers as submitted, and its voice metrics unavailable for want of a recording.
async fn the_transcript_is_there_once_transcribed(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let models = t.settings.data_dir.join("models").join("whisper-tiny.en");
    std::fs::create_dir_all(&models).expect("models dir");
    std::fs::write(models.join("model.bin"), b"not used: no worker runs").expect("marker");
    let (status, body) = upload(&base, wav(&[&[0.1; 1600]]), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id");
    assert_eq!(
        body["links"]["transcript"],
        format!("/api/sessions/{id}/transcript")
    );
    let (status, body) = get(&base, &format!("/api/sessions/{id}/transcript")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "not_ready");

    let response = reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(token("acme", "ann", Role::Member, 600))
        .json(&serde_json::json!({"title": "Typed", "kind": "sales", "transcript": [
            {"speaker": "partner", "start": 0.0, "end": 2.0, "text": "Um, how can I help?"},
            {"speaker": "user", "start": 2.5, "end": 6.0, "text": "Um, I think we need a demo. When are you free?"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.expect("json");
    let id = body["id"].as_str().expect("id");
    let (status, transcript) = get(&base, &format!("/api/sessions/{id}/transcript")).await;
    assert_eq!(status, StatusCode::OK, "{transcript}");
    assert_eq!(transcript["speakers"]["method"], "transcript");
    let [partner, user] = transcript["segments"]
        .as_array()
        .expect("segments")
        .as_slice()
    else {
        panic!("two segments: {transcript}");
    };
    assert_eq!(
        partner["fillers"],
        serde_json::json!([]),
        "the partner is not coached"
    );
    assert_eq!(user["fillers"][0]["text"], "Um");
    assert_eq!(user["fillers"][0]["start"], 0);
    assert_eq!(user["hedges"][0]["text"], "I think");
    assert_eq!(user["questions"][0]["text"], "When are you free?");

    let _workers = start_workers(&t, &["analysis"]);
    ready(&t, id).await;
    let (_, feedback) = get(&base, &format!("/api/sessions/{id}/feedback")).await;
    assert_eq!(feedback["metrics"]["voice"], Value::Null, "{feedback}");
    assert!(
        feedback["metrics"]["voice_note"]
            .as_str()
            .unwrap_or_default()
            .contains("no recording"),
        "{feedback}"
    );
    let pitch = &feedback["scores"]["metrics"]["pitch_variation_semitones"];
    assert_eq!(pitch["score"], Value::Null);
    assert!(
        pitch["verdict"]
            .as_str()
            .unwrap_or_default()
            .contains("no recording"),
        "{pitch}"
    );
    // Another company sees no such session.
    let response = reqwest::Client::new()
        .get(format!("{base}/api/sessions/{id}/transcript"))
        .bearer_auth(token("globex", "gus", Role::Member, 600))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
on_both_databases!(the_transcript_is_there_once_transcribed);
