//! GDPR: a profile exports everything voxline holds about it as one JSON bundle, erases it
//! (billing records and the audit log stay), and uploaded audio is deleted after the retention
//! period. On both databases.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::api::{submit_session, wait_until_ready};
use support::{Backend, TestDb, eventually, start_api, start_workers};
use voxline_api::auth::Role;
use voxline_domain::blobs::{BlobStore, LocalBlobs};
use voxline_domain::db::Scope;
use voxline_domain::sessions::{self, NewSession};
use voxline_jobs::DbJobs;
use voxline_jobs::{JobState, NewJob, store};

const WORDS: &str = "I think our budget is around fifty thousand";

fn token(company: &str, profile: &str, email: Option<&str>) -> String {
    support::token_with_email(company, profile, Role::Member, email)
}

fn call(title: &str) -> Value {
    support::two_turn_call(title, "What is your budget?", WORDS, 9.0)
}

async fn send(method: Method, url: &str, token: &str, body: Option<&Value>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("request")
}

async fn submit(base: &str, token: &str, title: &str) -> String {
    submit_session(base, token, &call(title), None).await
}

async fn wait_ready(base: &str, token: &str, id: &str) {
    wait_until_ready(base, token, id).await
}

/// A count over the whole table, whoever's rows (the owner's view on Postgres).
async fn count(t: &TestDb, sql: &'static str) -> i64 {
    t.count_rows(sql).await
}

/// An uploaded-audio session made directly (audio intake needs a transcription provider).
async fn audio_session(t: &TestDb, company: &str, profile: &str, id: &str) -> String {
    let key = format!("audio/{id}.wav");
    LocalBlobs::new(t.settings.blob_dir())
        .put(&key, b"RIFF....WAVEfmt ")
        .await
        .expect("blob");
    let mut tx = t.db.begin(Scope::Company(company)).await.expect("begin");
    sessions::insert(
        &mut tx,
        &NewSession {
            id,
            company_id: company,
            profile_id: profile,
            title: "Recorded pitch",
            kind: "presentation",
            source: "audio",
            audio_ref: Some(&key),
            audio_type: Some("wav"),
            external_id: None,
            channels: None,
            user_speaker: None,
        },
        None,
    )
    .await
    .expect("insert");
    tx.commit().await.expect("commit");
    key
}

on_both_databases!(an_export_bundles_the_profiles_data_and_mails_a_link);
async fn an_export_bundles_the_profiles_data_and_mails_a_link(backend: Backend) {
    let Some(t) = TestDb::new(backend, &["[engine]\npoll_interval_ms = 50\n"]).await else {
        return;
    };
    let base = start_api(&t).await;
    let workers = start_workers(&t, &["analysis", "email", "maintenance"]);
    let ann = token("acme", "ann", Some("ann@acme.example"));
    let carl = token("acme", "carl", None);
    let id = submit(&base, &ann, "Budget call").await;
    wait_ready(&base, &ann, &id).await;
    let colleague = submit(&base, &carl, "Carl's call").await;
    let prefs = send(
        Method::PUT,
        &format!("{base}/api/notifications/preferences"),
        &ann,
        Some(&json!({"trial_ending": false})),
    )
    .await;
    assert_eq!(prefs.status(), StatusCode::OK);

    let url = format!("{base}/api/me/export");
    let first = send(Method::GET, &url, &ann, None).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["status"], "pending");
    let export_id = first["export_id"].as_str().expect("export id").to_string();

    let mut served = None;
    for _ in 0..300 {
        let response = send(Method::GET, &url, &ann, None).await;
        if response.status() == StatusCode::OK {
            served = Some(response);
            break;
        }
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "pending until ready"
        );
        let pending: Value = response.json().await.expect("json");
        assert_eq!(
            pending["export_id"],
            export_id.as_str(),
            "one export at a time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.expect("the export became ready");
    let disposition = served.headers()["content-disposition"]
        .to_str()
        .expect("header");
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let bundle: Value = served.json().await.expect("the bundle is JSON");

    assert_eq!(bundle["format"], "voxline-export/1");
    assert_eq!(bundle["profile"]["id"], "ann");
    assert_eq!(bundle["profile"]["email"], "ann@acme.example");
    let sessions = bundle["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "Ann's session only, not her colleague's");
    assert_eq!(sessions[0]["id"], id.as_str());
    assert_eq!(sessions[0]["transcript"][1]["text"], WORDS);
    assert!(sessions[0]["feedback"]["metrics"].is_object(), "{bundle:#}");
    assert_eq!(bundle["usage"][0]["session_id"], id.as_str());
    assert!(
        bundle["emails"]
            .as_array()
            .expect("emails")
            .iter()
            .any(|e| e["template"] == "feedback_ready"),
        "{bundle:#}"
    );
    assert_eq!(bundle["notification_preferences"]["trial_ending"], false);
    assert!(!bundle.to_string().contains(&colleague));

    // The "export ready" email links to the route.
    let outbox = t.dir.path().join("outbox");
    eventually(
        "the export email is written",
        Duration::from_secs(20),
        || {
            let outbox = outbox.clone();
            async move {
                std::fs::read_dir(&outbox)
                    .map(|d| {
                        d.flatten().any(|f| {
                            std::fs::read_to_string(f.path())
                                .map(|m| m.replace("=\r\n", "").contains("/api/me/export"))
                                .unwrap_or(false)
                        })
                    })
                    .unwrap_or(false)
            }
        },
    )
    .await;
    workers.shutdown().await;

    let audit = t.audit_entries("gdpr.export").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "ann");
}

on_both_databases!(erasing_a_profile_removes_its_data_keeps_billing_records_and_cancels_its_jobs);
async fn erasing_a_profile_removes_its_data_keeps_billing_records_and_cancels_its_jobs(
    backend: Backend,
) {
    let Some(t) = TestDb::new(backend, &["[engine]\npoll_interval_ms = 50\n"]).await else {
        return;
    };
    let base = start_api(&t).await;
    let ann = token("acme", "ann", Some("ann@acme.example"));
    let carl = token("acme", "carl", None);
    // One analysed session (usage recorded; its "feedback ready" email waits: no email worker).
    let analysis = start_workers(&t, &["analysis"]);
    let ready = submit(&base, &ann, "Analysed").await;
    wait_ready(&base, &ann, &ready).await;
    analysis.shutdown().await;
    // One still waiting for analysis, one uploaded recording, a preference, a colleague's session.
    let waiting = submit(&base, &ann, "Waiting").await;
    let audio = audio_session(&t, "acme", "ann", "ann-audio").await;
    let put = send(
        Method::PUT,
        &format!("{base}/api/notifications/preferences"),
        &ann,
        Some(&json!({"feedback_ready": false})),
    )
    .await;
    assert_eq!(put.status(), StatusCode::OK);
    let colleague = submit(&base, &carl, "Carl's call").await;
    // A role-play Ann started (its title is hers).
    let roleplay = send(
        Method::POST,
        &format!("{base}/api/roleplays"),
        &ann,
        Some(&json!({"kind": "sales", "title": "Ann's pitch"})),
    )
    .await;
    assert_eq!(roleplay.status(), StatusCode::CREATED);

    let response = send(Method::DELETE, &format!("{base}/api/me"), &ann, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let erased: Value = response.json().await.expect("json");
    let erased = &erased["erased"];
    assert_eq!(erased["sessions"], 3, "{erased:#}");
    assert_eq!(erased["profile"], true);
    assert_eq!(erased["preferences"], 1);
    assert_eq!(erased["files"], 1);
    assert_eq!(
        erased["jobs_cancelled"], 2,
        "the waiting analysis and the unsent email: {erased:#}"
    );

    // Gone: sessions (with transcripts and feedback), preferences, emails, the profile.
    for sql in [
        "SELECT count(*) FROM sessions WHERE profile_id = 'ann'",
        "SELECT count(*) FROM transcripts WHERE session_id IN ('ann-audio') OR session_id NOT IN (SELECT id FROM sessions)",
        "SELECT count(*) FROM feedback WHERE session_id NOT IN (SELECT id FROM sessions)",
        "SELECT count(*) FROM notification_preferences WHERE profile_id = 'ann'",
        "SELECT count(*) FROM email_log WHERE profile_id = 'ann'",
        "SELECT count(*) FROM idempotency_keys WHERE profile_id = 'ann'",
        "SELECT count(*) FROM roleplays WHERE profile_id = 'ann'",
        "SELECT count(*) FROM profiles WHERE id = 'ann'",
    ] {
        assert_eq!(count(&t, sql).await, 0, "{sql}");
    }
    // Kept: the usage billing is based on, and the colleague's session.
    assert_eq!(
        count(
            &t,
            "SELECT count(*) FROM usage_records WHERE profile_id = 'ann'"
        )
        .await,
        1
    );
    let response = send(
        Method::GET,
        &format!("{base}/api/sessions/{colleague}"),
        &carl,
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    // The waiting jobs about Ann are cancelled; the colleague's is not.
    let jobs =
        t.db.jobs()
            .list(&store::JobFilter {
                limit: 20,
                ..Default::default()
            })
            .await
            .expect("jobs");
    for job in &jobs {
        let about_ann =
            job.payload["session_id"] == waiting.as_str() || job.payload["profile_id"] == "ann";
        if job.state != JobState::Done {
            assert_eq!(job.state == JobState::Cancelled, about_ann, "{job:#?}");
        }
    }
    // The recording is deleted by the durable job the erasure enqueued.
    let file = t.settings.blob_dir().join(&audio);
    assert!(file.exists(), "deleted only by the job");
    let maintenance = start_workers(&t, &["maintenance"]);
    eventually("the recording is deleted", Duration::from_secs(20), || {
        let file = file.clone();
        async move { !file.exists() }
    })
    .await;
    maintenance.shutdown().await;

    // Audit-logged, with counts and no transcript text.
    let audit = t.audit_entries("gdpr.erase").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "ann");
    assert_eq!(audit[0].details["sessions"], 3);
    assert!(!audit[0].details.to_string().contains("budget"));

    // A later request with a valid token starts an empty profile; the company's list holds
    // the colleague's session only.
    let list = send(Method::GET, &format!("{base}/api/sessions"), &ann, None)
        .await
        .text()
        .await
        .expect("body");
    assert!(list.contains(&colleague), "{list}");
    for id in [&ready, &waiting] {
        assert!(!list.contains(id.as_str()), "{list}");
    }
}

on_both_databases!(retention_deletes_old_audio_and_expired_exports_only);
async fn retention_deletes_old_audio_and_expired_exports_only(backend: Backend) {
    let Some(t) = TestDb::new(
        backend,
        &["[engine]\npoll_interval_ms = 50\n[retention]\naudio_days = 30\n"],
    )
    .await
    else {
        return;
    };
    let old = audio_session(&t, "acme", "ann", "old").await;
    let recent = audio_session(&t, "acme", "ann", "recent").await;
    t.execute(
        "UPDATE sessions SET created_at = now() - interval '31 days' WHERE id = 'old'",
        "UPDATE sessions SET created_at = created_at - 31 * 86400 * 1000000 WHERE id = 'old'",
    )
    .await;
    let blobs = LocalBlobs::new(t.settings.blob_dir());
    for (id, expired) in [("gone", true), ("kept", false)] {
        let key = format!("exports/{id}.json");
        blobs.put(&key, b"{}").await.expect("blob");
        let mut tx = t.db.begin(Scope::Company("acme")).await.expect("begin");
        voxline_domain::gdpr::create_export(&mut tx, id, "acme", "ann")
            .await
            .expect("export");
        tx.commit().await.expect("commit");
        let expires = chrono::Utc::now() + chrono::Duration::hours(if expired { -1 } else { 1 });
        voxline_domain::gdpr::finish_export(&t.db, "acme", id, Ok((&key, expires)))
            .await
            .expect("finish");
    }

    let id = t
        .enqueue(NewJob::new("maintenance", "retention.prune", json!({})))
        .await;
    let workers = start_workers(&t, &["maintenance"]);
    t.wait_state(id, JobState::Done, Duration::from_secs(20))
        .await;
    workers.shutdown().await;

    let dir = t.settings.blob_dir();
    assert!(!dir.join(&old).exists(), "old audio deleted");
    assert!(dir.join(&recent).exists(), "recent audio kept");
    assert!(
        !dir.join("exports/gone.json").exists(),
        "expired export deleted"
    );
    assert!(dir.join("exports/kept.json").exists(), "live export kept");
    let old_session = sessions::get(&t.db, "acme", "old")
        .await
        .expect("get")
        .expect("the session stays");
    assert_eq!(old_session.audio_ref, None);
    assert_eq!(
        old_session.audio_type.as_deref(),
        Some("wav"),
        "what it was stays known"
    );
    let recent_session = sessions::get(&t.db, "acme", "recent")
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(recent_session.audio_ref.as_deref(), Some(recent.as_str()));
    assert_eq!(count(&t, "SELECT count(*) FROM data_exports").await, 1);
}
