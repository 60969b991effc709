//! The session pipeline with OpenAI, on both databases: an uploaded recording is transcribed
//! (by the real async-openai client talking to a local mock of OpenAI), analysed with metrics,
//! scores and LLM feedback, and ready; provider failures are retried by the engine or end the
//! session with the provider's reason; a transcript without timestamps keeps its words; LLM
//! output that cannot be trusted never costs the metrics. (The recording is decoded here to
//! tell its voices apart first, so these tests need the build's local decoder.)
#![cfg(feature = "local-whisper")]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::openai_mock::{self, Failure, OpenAiMock, Transcription};
use support::{Backend, TestDb, eventually, start_api, start_workers};
use voxline_api::auth::Role;
use voxline_domain::sessions::{self, SessionRow};
use voxline_jobs::DbJobs;
use voxline_jobs::store::JobFilter;
use voxline_jobs::{Job, JobState};

const COMPANY: &str = "acme";
const SPOKEN: &str = "Thanks for taking the call. What are your goals this quarter?";
const WAIT: Duration = Duration::from_secs(30);

/// The segments the mock "hears" in the recording of [`SPOKEN`].
fn heard() -> Transcription {
    Transcription::Verbose(vec![
        (0.0, 2.1, "Thanks for taking the call.".into()),
        (2.4, 5.0, "What are your goals this quarter?".into()),
    ])
}

/// A model answer whose evidence is quoted from `quote` (found in the transcript or not).
fn coaching(quote: &str) -> Value {
    json!({
        "summary": "A warm opening that gets to the customer's goals quickly.",
        "strengths": ["Asks an open question about goals early."],
        "improvements": ["Follow up on the answer before moving on."],
        "rubric": [
            { "criterion": "discovery questions", "score": 4, "evidence": quote }
        ]
    })
}

struct Pipeline {
    t: TestDb,
    mock: OpenAiMock,
    base: String,
    token: String,
    _workers: voxline_jobs::RunnerHandle,
}

/// A fresh deployment whose OpenAI is the mock, with quick retries (3 attempts per step).
async fn pipeline(backend: Backend, mock: OpenAiMock) -> Option<Pipeline> {
    pipeline_with(backend, mock, "").await
}

/// [`pipeline`] with `extra` settings layered last.
async fn pipeline_with(backend: Backend, mock: OpenAiMock, extra: &str) -> Option<Pipeline> {
    let retries = "[engine]\npoll_interval_ms = 100\n\
        [queues.transcription]\nbackoff_base_ms = 50\nbackoff_cap_ms = 200\nmax_attempts = 3\n\
        [queues.analysis]\nbackoff_base_ms = 50\nbackoff_cap_ms = 200\nmax_attempts = 3\n";
    let t = TestDb::new(backend, &[retries, &mock.config(), extra]).await?;
    // As after `voxline models install`: the speaker model tells a mono recording's voices
    // apart before OpenAI transcribes it.
    let speakers = support::models::speaker_model_dir().await?;
    let models = t.settings.data_dir.join("models");
    std::fs::create_dir_all(&models).expect("models dir");
    std::os::unix::fs::symlink(&speakers, models.join("resemblyzer-ge2e")).expect("link");
    let base = start_api(&t).await;
    let workers = start_workers(&t, &["transcription", "analysis", "email"]);
    let now = chrono::Utc::now().timestamp();
    // A token with an address, so the analysis queues the feedback-ready email.
    let claims = voxline_api::auth::Claims {
        sub: "ann".into(),
        company_id: COMPANY.into(),
        role: Role::Member,
        email: Some("ann@example.com".into()),
        iat: now,
        exp: now + 600,
    };
    let token = voxline_api::auth::Keys::hs256(support::TEST_JWT_SECRET)
        .mint(&claims)
        .expect("mint");
    Some(Pipeline {
        t,
        mock,
        base,
        token,
        _workers: workers,
    })
}

/// `duration` is the length of the WAV file `wav`.
fn assert_is_length_of(wav: &[u8], duration: Option<f64>) {
    let reader = hound::WavReader::new(std::io::Cursor::new(wav)).expect("espeak-ng's wav");
    let seconds = f64::from(reader.duration()) / f64::from(reader.spec().sample_rate);
    let duration = duration.expect("a duration");
    assert!((duration - seconds).abs() < 0.01, "{duration} vs {seconds}");
}

/// A real recording of `text`, spoken by espeak-ng.
fn recording(dir: &std::path::Path, text: &str) -> Option<Vec<u8>> {
    let path = dir.join("practice.wav");
    match std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&path)
        .arg(text)
        .status()
    {
        Ok(status) if status.success() => Some(std::fs::read(&path).expect("read the wav")),
        Ok(status) => panic!("espeak-ng failed: {status}"),
        Err(e) => {
            support::service_missing("espeak-ng", &e);
            None
        }
    }
}

impl Pipeline {
    /// `POST /api/sessions` as multipart with `title`, `kind` and `audio` parts.
    async fn upload(&self, title: &str, wav: &[u8]) -> String {
        let boundary = "voxline-test-boundary-7d1f";
        let mut body = Vec::new();
        for (name, value) in [("title", title), ("kind", "sales")] {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"practice.wav\"\r\n\
                 Content-Type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(wav);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let response = reqwest::Client::new()
            .post(format!("{}/api/sessions", self.base))
            .bearer_auth(&self.token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("upload");
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["status"], "queued");
        answer["id"].as_str().expect("session id").to_string()
    }

    /// `POST /api/sessions` with a JSON transcript.
    async fn submit(&self, body: &Value) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/api/sessions", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("submit");
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["id"].as_str().expect("session id").to_string()
    }

    async fn session(&self, id: &str) -> SessionRow {
        sessions::get(&self.t.db, COMPANY, id)
            .await
            .expect("read session")
            .expect("session exists")
    }

    async fn wait_status(&self, id: &str, status: &str) -> SessionRow {
        eventually(&format!("session {id} is {status}"), WAIT, || async {
            self.session(id).await.status == status
        })
        .await;
        self.session(id).await
    }

    async fn feedback(&self, id: &str) -> Value {
        sessions::feedback(&self.t.db, COMPANY, id)
            .await
            .expect("read feedback")
            .expect("feedback stored")
    }

    async fn segments(&self, id: &str) -> Value {
        sessions::segments(&self.t.db, COMPANY, id)
            .await
            .expect("read segments")
            .expect("transcript stored")
    }

    /// The jobs of `queue` about this session (by payload), with their attempt errors.
    async fn jobs(&self, queue: &str, session: &str) -> Vec<Job> {
        let filter = JobFilter {
            queue: Some(queue.into()),
            state: None,
            limit: 100,
            ..Default::default()
        };
        let mut found = Vec::new();
        for job in self.t.db.jobs().list(&filter).await.expect("list jobs") {
            let about = job.payload["session_id"].as_str() == Some(session)
                || job.payload["data"]["session_id"].as_str() == Some(session);
            if about {
                found.push(self.t.job(job.id).await);
            }
        }
        found
    }

    async fn job(&self, queue: &str, session: &str) -> Job {
        let mut jobs = self.jobs(queue, session).await;
        assert_eq!(jobs.len(), 1, "one {queue} job for {session}: {jobs:#?}");
        jobs.remove(0)
    }

    /// The step's job once its outcome is written (the session can be ready a moment before
    /// the worker's acknowledgement lands).
    async fn finished_job(&self, queue: &str, session: &str, state: JobState) -> Job {
        let job = self.job(queue, session).await;
        self.t.wait_state(job.id, state, WAIT).await
    }
}

on_both_databases!(an_uploaded_recording_is_transcribed_analysed_and_ready);
async fn an_uploaded_recording_is_transcribed_analysed_and_ready(backend: Backend) {
    let mock = OpenAiMock::start().await;
    mock.transcribe_as(heard());
    mock.answer_chat_with(&coaching("what are your GOALS this quarter"));
    let Some(p) = pipeline(backend, mock).await else {
        return;
    };
    let Some(wav) = recording(p.t.dir.path(), SPOKEN) else {
        return;
    };

    let id = p.upload("Discovery call with Globex", &wav).await;
    let session = p.wait_status(&id, "ready").await;

    // The recording went to OpenAI once, as asked: verbose JSON with segment timestamps.
    let sent = p.mock.requests(openai_mock::TRANSCRIPTIONS);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let auth = format!("Bearer {}", openai_mock::API_KEY);
    assert_eq!(sent[0].authorization.as_deref(), Some(auth.as_str()));
    assert_eq!(sent[0].model.as_deref(), Some("whisper-1"));
    assert_eq!(sent[0].response_format, Some(json!("verbose_json")));
    assert_eq!(sent[0].timestamp_granularities, ["segment"]);
    assert_eq!(sent[0].file_name, Some(format!("{id}.wav")));
    assert_eq!(sent[0].file_size, Some(wav.len()), "the whole recording");

    // One voice is heard in it (espeak-ng's): its segments are the user's, with the length.
    assert_eq!(
        p.segments(&id).await,
        json!([
            { "speaker": "user", "start": 0.0, "end": 2.1, "text": "Thanks for taking the call." },
            { "speaker": "user", "start": 2.4, "end": 5.0, "text": "What are your goals this quarter?" }
        ])
    );
    // The length is the recording's own, as decoded (the provider's figure is not billed).
    assert_is_length_of(&wav, session.duration_seconds);
    assert_eq!(session.error, None);

    // The feedback: metrics, scores and the model's coaching, as one document.
    let feedback = p.feedback(&id).await;
    assert_eq!(feedback["kind"], "llm", "{feedback:#}");
    assert_eq!(feedback["metrics"]["timing_available"], true);
    assert_eq!(feedback["metrics"]["user_words"], 11);
    assert_eq!(feedback["metrics"]["questions"], 1);
    assert!(feedback["scores"].is_object(), "{feedback:#}");
    assert_eq!(
        feedback["llm"],
        coaching("what are your GOALS this quarter")
    );
    let notes = feedback["notes"].to_string();
    assert!(notes.contains("counted as transcribed"), "{notes}");

    // The chat request asked for the strict JSON schema, with the same key.
    let chats = p.mock.requests(openai_mock::CHAT);
    assert_eq!(chats.len(), 1, "{chats:#?}");
    assert_eq!(chats[0].authorization.as_deref(), Some(auth.as_str()));
    assert_eq!(chats[0].model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(chats[0].schema_name.as_deref(), Some("coaching_feedback"));
    let format = chats[0].response_format.clone().unwrap_or_default();
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["strict"], true);

    // The feedback-ready email carries the overall score the feedback has.
    // (Queued just after the feedback is saved, so it may trail the status by a moment.)
    eventually("the feedback-ready email is queued", WAIT, || async {
        !p.jobs("email", &id).await.is_empty()
    })
    .await;
    let email = p.job("email", &id).await;
    assert_eq!(email.payload["template"], "feedback_ready");
    assert_eq!(
        email.payload["data"]["overall_score"],
        feedback["scores"]["overall"]
    );
}

on_both_databases!(provider_errors_are_retried_by_the_engine_until_the_transcription_succeeds);
async fn provider_errors_are_retried_by_the_engine_until_the_transcription_succeeds(
    backend: Backend,
) {
    let mock = OpenAiMock::start().await;
    mock.transcribe_as(heard());
    mock.fail_transcriptions([Failure::Status(500), Failure::Status(500)]);
    mock.answer_chat_with(&coaching("Thanks for taking the call"));
    let Some(p) = pipeline(backend, mock).await else {
        return;
    };
    let Some(wav) = recording(p.t.dir.path(), SPOKEN) else {
        return;
    };

    let id = p.upload("Retried call", &wav).await;
    p.wait_status(&id, "ready").await;

    // Three requests in all: the client does not retry behind the engine's back; each failed
    // attempt is the engine's, with its error recorded.
    assert_eq!(p.mock.requests(openai_mock::TRANSCRIPTIONS).len(), 3);
    let job = p.finished_job("transcription", &id, JobState::Done).await;
    assert_eq!(job.attempt, 3);
    assert_eq!(job.errors.len(), 2, "{job:#?}");
    for e in &job.errors {
        assert!(e.error.contains("500"), "{}", e.error);
    }
    assert_eq!(p.segments(&id).await.as_array().map(Vec::len), Some(2));
    assert_eq!(p.feedback(&id).await["kind"], "llm");
}

on_both_databases!(
    a_refused_request_kills_the_job_and_fails_the_session_with_the_providers_message
);
async fn a_refused_request_kills_the_job_and_fails_the_session_with_the_providers_message(
    backend: Backend,
) {
    let message = "Incorrect API key provided: sk-test-***. You can find your API key at \
                   https://platform.openai.com/account/api-keys.";
    let mock = OpenAiMock::start().await;
    mock.transcribe_as(heard());
    mock.fail_transcriptions([Failure::OpenAi {
        status: 401,
        message: message.into(),
        kind: "invalid_request_error".into(),
        code: "invalid_api_key".into(),
    }]);
    let Some(p) = pipeline(backend, mock).await else {
        return;
    };
    let Some(wav) = recording(p.t.dir.path(), SPOKEN) else {
        return;
    };

    let id = p.upload("Bad key", &wav).await;
    let session = p.wait_status(&id, "failed").await;

    // Dead at once: a 401 is not retried.
    let job = p.finished_job("transcription", &id, JobState::Dead).await;
    assert_eq!(job.attempt, 1);
    let last = job.last_error.unwrap_or_default();
    assert!(last.contains("401") && last.contains(message), "{last}");
    let reason = session.error.unwrap_or_default();
    assert!(reason.contains(message), "{reason}");
    assert_eq!(p.mock.requests(openai_mock::TRANSCRIPTIONS).len(), 1);
    assert!(
        p.jobs("analysis", &id).await.is_empty(),
        "nothing to analyse"
    );
    assert!(
        sessions::segments(&p.t.db, COMPANY, &id)
            .await
            .expect("read")
            .is_none()
    );
}

on_both_databases!(a_transcript_without_timestamps_keeps_its_words_and_marks_timing_unavailable);
async fn a_transcript_without_timestamps_keeps_its_words_and_marks_timing_unavailable(
    backend: Backend,
) {
    let mock = OpenAiMock::start().await;
    mock.transcribe_as(Transcription::TextOnly(format!(" {SPOKEN} ")));
    mock.answer_chat_with(&coaching("what are your goals this quarter?"));
    let Some(p) = pipeline(backend, mock).await else {
        return;
    };
    let Some(wav) = recording(p.t.dir.path(), SPOKEN) else {
        return;
    };

    let id = p.upload("No timestamps", &wav).await;
    let session = p.wait_status(&id, "ready").await;

    assert_eq!(
        p.segments(&id).await,
        json!([{ "speaker": "user", "start": null, "end": null, "text": SPOKEN }])
    );
    assert_is_length_of(&wav, session.duration_seconds);
    let feedback = p.feedback(&id).await;
    let metrics = &feedback["metrics"];
    assert_eq!(metrics["timing_available"], false, "{feedback:#}");
    assert_eq!(metrics["user_words"], 11, "the words are kept");
    assert_eq!(metrics["questions"], 1);
    for timed in [
        "words_per_minute",
        "talk_ratio",
        "fillers_per_minute",
        "longest_monologue_seconds",
    ] {
        assert_eq!(metrics[timed], Value::Null, "{timed}");
    }
    assert_eq!(feedback["kind"], "llm");
}

on_both_databases!(
    a_diarizing_model_is_asked_for_its_speakers_and_the_partners_words_are_not_the_users
);
async fn a_diarizing_model_is_asked_for_its_speakers_and_the_partners_words_are_not_the_users(
    backend: Backend,
) {
    let mock = OpenAiMock::start().await;
    // The provider hears two voices: the user thanks, the partner asks.
    mock.transcribe_as(Transcription::Diarized(vec![
        ("A".into(), 0.0, 2.1, "Thanks for taking the call.".into()),
        (
            "B".into(),
            2.4,
            5.0,
            "What are your goals this quarter?".into(),
        ),
    ]));
    mock.answer_chat_with(&coaching("Thanks for taking the call"));
    let diarize = "[openai]\ntranscription_model = \"gpt-4o-transcribe-diarize\"\n";
    let Some(p) = pipeline_with(backend, mock, diarize).await else {
        return;
    };
    let Some(wav) = recording(p.t.dir.path(), SPOKEN) else {
        return;
    };
    let id = p.upload("Diarized by the provider", &wav).await;
    p.wait_status(&id, "ready").await;

    let sent = p.mock.requests(openai_mock::TRANSCRIPTIONS);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].model.as_deref(), Some("gpt-4o-transcribe-diarize"));
    assert_eq!(sent[0].response_format, Some(json!("diarized_json")));
    assert_eq!(sent[0].chunking_strategy.as_deref(), Some("auto"));
    assert!(sent[0].timestamp_granularities.is_empty());
    assert_eq!(sent[0].file_size, Some(wav.len()), "the whole recording");
    assert_eq!(
        p.segments(&id).await,
        json!([
            { "speaker": "user", "start": 0.0, "end": 2.1, "text": "Thanks for taking the call." },
            { "speaker": "partner", "start": 2.4, "end": 5.0, "text": "What are your goals this quarter?" }
        ])
    );
    let metrics = p.feedback(&id).await["metrics"].clone();
    assert_eq!(
        metrics["questions"], 0,
        "the partner's question is not the user's: {metrics}"
    );
    assert_eq!(metrics["user_words"], 5);
    let talk = metrics["talk_ratio"].as_f64().expect("a talk ratio");
    assert!((talk - 2.1 / 4.7).abs() < 1e-9, "{talk}");
}

on_both_databases!(feedback_whose_evidence_is_not_in_the_transcript_falls_back_to_metrics_only);
async fn feedback_whose_evidence_is_not_in_the_transcript_falls_back_to_metrics_only(
    backend: Backend,
) {
    let mock = OpenAiMock::start().await;
    mock.answer_chat_with(&coaching("I can offer you a 30% discount today"));
    let Some(p) = pipeline(backend, mock).await else {
        return;
    };

    let id = p.submit(&support::discovery_call()).await;
    p.wait_status(&id, "ready").await;

    // Asked on every attempt; the last one stores the metrics and says why there is no LLM.
    assert_eq!(p.mock.requests(openai_mock::CHAT).len(), 3);
    let job = p.finished_job("analysis", &id, JobState::Done).await;
    assert_eq!(job.attempt, 3);
    let feedback = p.feedback(&id).await;
    assert_eq!(feedback["kind"], "metrics_only", "{feedback:#}");
    assert_eq!(feedback["llm"], Value::Null);
    assert_eq!(feedback["metrics"]["questions"], 3, "the metrics are kept");
    assert_eq!(feedback["metrics"]["interruptions"], 1);
    let note = feedback["notes"][0].as_str().unwrap_or_default();
    assert!(
        note.contains("not usable after 3 attempts") && note.contains("is not in the transcript"),
        "{note}"
    );
}

on_both_databases!(a_json_transcript_gets_llm_feedback_grounded_in_its_metrics_and_scores);
async fn a_json_transcript_gets_llm_feedback_grounded_in_its_metrics_and_scores(backend: Backend) {
    let mock = OpenAiMock::start().await;
    mock.answer_chat_with(&coaching("And uh, how do you measure it today?"));
    let Some(p) = pipeline(backend, mock).await else {
        return;
    };

    let id = p.submit(&support::discovery_call()).await;
    p.wait_status(&id, "ready").await;

    assert!(p.mock.requests(openai_mock::TRANSCRIPTIONS).is_empty());
    let feedback = p.feedback(&id).await;
    assert_eq!(feedback["kind"], "llm", "{feedback:#}");
    assert_eq!(feedback["llm"]["rubric"][0]["score"], 4);

    // The model was given exactly the stored metrics and scores, and the transcript.
    let chats = p.mock.requests(openai_mock::CHAT);
    assert_eq!(chats.len(), 1);
    let messages = &chats[0].body["messages"];
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("word for word")),
        "{messages:#}"
    );
    assert_eq!(messages[1]["role"], "user");
    let grounding: Value =
        serde_json::from_str(messages[1]["content"].as_str().unwrap_or_default())
            .expect("the user message is the grounding document");
    assert_eq!(grounding["metrics"], feedback["metrics"]);
    assert_eq!(grounding["scores"], feedback["scores"]);
    assert_eq!(
        grounding["session"],
        json!({ "kind": "sales", "title": "Discovery call with Globex" })
    );
    assert_eq!(
        grounding["transcript"][4]["text"],
        "And uh how do you measure it today?"
    );
}
