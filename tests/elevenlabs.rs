//! `POST /api/roleplays` and `POST /api/webhooks/elevenlabs` on both databases: a role-play's
//! ticket, carried through the conversation, makes the signed post-call transcription a session
//! of the ticket's profile whose analysis runs; redeliveries, bad signatures, missing, forged,
//! expired, reused and foreign tickets, other event types and a missing secret store nothing;
//! the role-play checks quotas like a submitted session.
//!
//! Deliveries are signed as ElevenLabs documents it (`t=<unix>,v0=<hex HMAC-SHA256 of
//! "<t>.<body>">`) by `signature_header`, which the API crate's unit tests pin to a signature
//! computed independently with Python's `hmac`.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::api::{Webhook, answer};
use support::{Backend, TEST_JWT_SECRET, TestDb, eventually, start_api, start_workers, token};
use voxline_api::auth::Role;
use voxline_api::roleplays::ticket::{TicketClaims, TicketKeys};
use voxline_api::webhooks::elevenlabs::signature_header;
use voxline_domain::profiles::{self, Profile};
use voxline_domain::sessions;

const SECRET: &str = "wsec_voxline_test_secret_0123456789";
const CONFIGURED: &str = "[elevenlabs]\nwebhook_secret = \"wsec_voxline_test_secret_0123456789\"\n\
                          [engine]\npoll_interval_ms = 100\n";
const TICKET_FIELD: &str =
    "data.conversation_initiation_client_data.dynamic_variables.voxline_ticket";

/// A post-call transcription as ElevenLabs sends it (abridged: no analysis, no costs).
fn transcription(conversation_id: &str, ticket: &str) -> Value {
    json!({
        "type": "post_call_transcription",
        "event_timestamp": 1_739_537_297,
        "data": {
            "agent_id": "agent_prospect_globex",
            "conversation_id": conversation_id,
            "status": "done",
            "transcript": [
                { "role": "agent", "message": "Hi, thanks for taking the call.", "time_in_call_secs": 0,
                  "tool_calls": null, "tool_results": null, "feedback": null },
                { "role": "user", "message": "Thanks. So I think we could start with your goals?", "time_in_call_secs": 4 },
                // A tool call without words: skipped, but it ends the user's turn at 11 s.
                { "role": "agent", "message": null, "time_in_call_secs": 11 },
                { "role": "agent", "message": "We want to cut onboarding time in half.", "time_in_call_secs": 12 },
                { "role": "user", "message": "How do you measure it today?", "time_in_call_secs": 20 }
            ],
            "metadata": { "start_time_unix_secs": 1_739_537_200, "call_duration_secs": 26 },
            "conversation_initiation_client_data": {
                "dynamic_variables": {
                    "voxline_ticket": ticket,
                    // Set by the client: never trusted for whose session it is.
                    "voxline_profile_id": "mallory",
                    "user_name": "Ann"
                }
            }
        }
    })
}

/// Starts a role-play as `profile` of `company`; answers the ticket.
async fn start_roleplay(base: &str, company: &str, profile: &str) -> String {
    let (status, answer) = roleplay_request(
        base,
        company,
        profile,
        &json!({ "kind": "sales", "title": "Discovery call with Globex" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["dynamic_variables"]["voxline_ticket"]
        .as_str()
        .expect("a ticket among the dynamic variables")
        .to_string()
}

/// The token a client app holds for `profile`, with the address "feedback ready" goes to.
fn token_with_email(company: &str, profile: &str) -> String {
    let email = format!("{profile}@example.com");
    support::token_with_email(company, profile, Role::Member, Some(&email))
}

async fn roleplay_request(
    base: &str,
    company: &str,
    profile: &str,
    body: &Value,
) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .post(format!("{base}/api/roleplays"))
            .bearer_auth(token_with_email(company, profile))
            .json(body),
    )
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

const ELEVENLABS: Webhook = Webhook {
    route: "/api/webhooks/elevenlabs",
    header: "ElevenLabs-Signature",
    secret: SECRET,
    sign: signature_header,
};

/// Posts `body` as is, with the `ElevenLabs-Signature` header when given.
async fn deliver(base: &str, body: &[u8], signature: Option<&str>) -> (StatusCode, Value) {
    ELEVENLABS.deliver(base, body, signature).await
}

/// Posts `event` signed with the configured secret, now.
async fn deliver_signed(base: &str, event: &Value) -> (StatusCode, Value) {
    ELEVENLABS.deliver_signed(base, event).await
}

async fn count(t: &TestDb, sql: &'static str) -> i64 {
    t.count_rows(sql).await
}

async fn assert_nothing_stored(t: &TestDb) {
    assert_eq!(
        count(t, "SELECT count(*) FROM sessions").await,
        0,
        "no session"
    );
    assert_eq!(
        count(t, "SELECT count(*) FROM transcripts").await,
        0,
        "no transcript"
    );
    assert_eq!(count(t, "SELECT count(*) FROM jobs").await, 0, "no job");
}

/// A deployment with the webhook configured (and `layers` over it), whose API serves; ann of
/// acme has signed in.
async fn with_ann_signed_in(backend: Backend, layers: &[&str]) -> Option<(TestDb, String)> {
    let all: Vec<&str> = std::iter::once(CONFIGURED)
        .chain(layers.iter().copied())
        .collect();
    let t = TestDb::new(backend, &all).await?;
    ann_has_signed_in(&t).await;
    let base = start_api(&t).await;
    Some((t, base))
}

/// Ann of acme signed in (see `with_ann_signed_in`) and in a role-play she started.
struct Roleplay {
    t: TestDb,
    base: String,
    ticket: String,
}

async fn ann_in_a_roleplay(backend: Backend, layers: &[&str]) -> Option<Roleplay> {
    let (t, base) = with_ann_signed_in(backend, layers).await?;
    let ticket = start_roleplay(&base, "acme", "ann").await;
    Some(Roleplay { t, base, ticket })
}

/// Ann's role-play, and the spoken call it was (`None` without espeak-ng or ffmpeg).
async fn ann_in_a_roleplay_over_a_spoken_call(backend: Backend) -> Option<(Roleplay, SpokenCall)> {
    let t = TestDb::new(backend, &[CONFIGURED]).await?;
    let call = spoken_call(t.dir.path())?;
    ann_has_signed_in(&t).await;
    let base = start_api(&t).await;
    let ticket = start_roleplay(&base, "acme", "ann").await;
    Some((Roleplay { t, base, ticket }, call))
}

/// Ann of acme, as voxline recorded her from a valid token.
async fn ann_has_signed_in(t: &TestDb) {
    let ann = Profile {
        id: "ann".into(),
        company_id: "acme".into(),
        email: Some("ann@example.com".into()),
        role: "member".into(),
    };
    assert!(profiles::upsert_seen(&t.db, &ann).await.unwrap());
}

on_both_databases!(a_signed_transcription_becomes_a_session_whose_analysis_runs);
async fn a_signed_transcription_becomes_a_session_whose_analysis_runs(backend: Backend) {
    let Some(Roleplay { t, base, ticket }) = ann_in_a_roleplay(backend, &[]).await else {
        return;
    };

    let (status, answer) = deliver_signed(&base, &transcription("conv_01", &ticket)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "queued");
    assert_eq!(answer["duplicate"], false);
    let id = answer["id"].as_str().expect("a session id").to_string();

    let session = sessions::get(&t.db, "acme", &id)
        .await
        .unwrap()
        .expect("the session is ann's company's");
    assert_eq!(session.profile_id, "ann");
    assert_eq!(session.source, "elevenlabs");
    assert_eq!(session.external_id.as_deref(), Some("conv_01"));
    assert_eq!(session.kind, "sales");
    assert_eq!(session.title, "Discovery call with Globex");
    assert_eq!(session.duration_seconds, Some(26.0));
    // agent → partner, user → user; each turn ends where the next begins (the tool call at
    // 11 s included), the last at the call's 26 s; the wordless tool call is not a segment.
    assert_eq!(
        sessions::segments(&t.db, "acme", &id).await.unwrap(),
        Some(json!([
            { "speaker": "partner", "start": 0.0, "end": 4.0, "text": "Hi, thanks for taking the call." },
            { "speaker": "user", "start": 4.0, "end": 11.0, "text": "Thanks. So I think we could start with your goals?" },
            { "speaker": "partner", "start": 12.0, "end": 20.0, "text": "We want to cut onboarding time in half." },
            { "speaker": "user", "start": 20.0, "end": 26.0, "text": "How do you measure it today?" }
        ]))
    );
    let jobs = t.any_jobs(10).await;
    assert_eq!(jobs.len(), 1, "one job: the analysis");
    assert_eq!(jobs[0].queue, "analysis");
    assert_eq!(jobs[0].payload["session_id"], id.as_str());
    assert_eq!(jobs[0].payload["company_id"], "acme");
    assert_eq!(jobs[0].payload["notify_email"], "ann@example.com");

    let workers = start_workers(&t, &["analysis"]);
    eventually("the session is ready", Duration::from_secs(20), || {
        let (db, id) = (t.db.clone(), id.clone());
        async move {
            sessions::get(&db, "acme", &id)
                .await
                .unwrap()
                .is_some_and(|s| s.status == "ready")
        }
    })
    .await;
    workers.shutdown().await;
    assert!(
        sessions::feedback(&t.db, "acme", &id)
            .await
            .unwrap()
            .is_some(),
        "the analysis stored its feedback"
    );
}

on_both_databases!(a_redelivered_conversation_makes_one_session);
async fn a_redelivered_conversation_makes_one_session(backend: Backend) {
    let Some(Roleplay { t, base, ticket }) = ann_in_a_roleplay(backend, &[]).await else {
        return;
    };
    let event = transcription("conv_02", &ticket);

    // Five deliveries at once race to the unique (source, external id) index.
    let answers = futures::future::join_all((0..5).map(|_| deliver_signed(&base, &event))).await;
    for (status, answer) in &answers {
        assert_eq!(*status, StatusCode::OK, "{answer}");
    }
    let id = &answers[0].1["id"];
    assert!(answers.iter().all(|(_, a)| a["id"] == *id), "{answers:?}");
    let first = answers
        .iter()
        .filter(|(_, a)| a["duplicate"] == false)
        .count();
    assert_eq!(
        first, 1,
        "exactly one delivery made the session: {answers:?}"
    );

    let (status, again) = deliver_signed(&base, &event).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], *id);
    assert_eq!(again["duplicate"], true);

    assert_eq!(count(&t, "SELECT count(*) FROM sessions").await, 1);
    assert_eq!(count(&t, "SELECT count(*) FROM transcripts").await, 1);
    assert_eq!(count(&t, "SELECT count(*) FROM jobs").await, 1);
}

on_both_databases!(deliveries_without_a_valid_signature_are_refused_and_store_nothing);
async fn deliveries_without_a_valid_signature_are_refused_and_store_nothing(backend: Backend) {
    let Some(Roleplay { t, base, ticket }) = ann_in_a_roleplay(backend, &[]).await else {
        return;
    };
    let body = transcription("conv_03", &ticket).to_string();
    let body = body.as_bytes();
    let tampered = transcription("conv_03b", &ticket).to_string();
    let cases = [
        ("no header", body, None),
        (
            "another secret",
            body,
            Some(signature_header("not-the-secret", now(), body)),
        ),
        (
            "a body other than the signed one",
            tampered.as_bytes(),
            Some(signature_header(SECRET, now(), body)),
        ),
        (
            "signed 31 minutes ago",
            body,
            Some(signature_header(SECRET, now() - 31 * 60, body)),
        ),
        (
            "signed 31 minutes ahead",
            body,
            Some(signature_header(SECRET, now() + 31 * 60, body)),
        ),
        ("not the documented format", body, Some("sha256=abc".into())),
    ];
    for (case, body, signature) in cases {
        let (status, error) = deliver(&base, body, signature.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {error}");
        assert_eq!(error["error"]["code"], "invalid_signature", "{case}");
        assert_eq!(error["error"]["field"], "ElevenLabs-Signature", "{case}");
    }
    assert_nothing_stored(&t).await;
}

on_both_databases!(only_a_valid_unused_ticket_of_a_known_profile_makes_a_session);
async fn only_a_valid_unused_ticket_of_a_known_profile_makes_a_session(backend: Backend) {
    let Some((t, base)) = with_ann_signed_in(backend, &[]).await else {
        return;
    };
    let refused = |event: Value, status: StatusCode, code: &'static str| {
        let base = base.clone();
        async move {
            let (got, error) = deliver_signed(&base, &event).await;
            assert_eq!(got, status, "{code}: {error}");
            assert_eq!(error["error"]["code"], code, "{error}");
            assert_eq!(error["error"]["field"], TICKET_FIELD, "{code}");
        }
    };

    // No ticket: the profile variable alone names nobody.
    let mut anonymous = transcription("conv_04", "");
    anonymous["data"]["conversation_initiation_client_data"]["dynamic_variables"] =
        json!({ "voxline_profile_id": "ann", "user_name": "Ann" });
    refused(
        anonymous,
        StatusCode::UNPROCESSABLE_ENTITY,
        "ticket_missing",
    )
    .await;

    // Forged: signed with another key, or altered.
    let later = now() + 3_600;
    let claims = |exp| TicketClaims::new("rp_forged", "ann", "acme", "sales", "Forged", exp);
    let foreign = TicketKeys::from_secret("not-the-service-secret")
        .sign(&claims(later))
        .unwrap();
    refused(
        transcription("conv_05", &foreign),
        StatusCode::UNAUTHORIZED,
        "ticket_invalid",
    )
    .await;
    // An API token is no ticket, though signed with the service's own JWT secret.
    let api_token = token("acme", "ann", Role::Member, 600);
    refused(
        transcription("conv_06", &api_token),
        StatusCode::UNAUTHORIZED,
        "ticket_invalid",
    )
    .await;

    // Expired.
    let keys = TicketKeys::from_secret(TEST_JWT_SECRET);
    let expired = keys.sign(&claims(now() - 1)).unwrap();
    refused(
        transcription("conv_07", &expired),
        StatusCode::UNAUTHORIZED,
        "ticket_expired",
    )
    .await;

    // Well signed but for no role-play voxline issued.
    let unissued = keys.sign(&claims(later)).unwrap();
    refused(
        transcription("conv_08", &unissued),
        StatusCode::UNAUTHORIZED,
        "ticket_invalid",
    )
    .await;

    // A profile of another company than the ticket names.
    let elsewhere = keys
        .sign(&TicketClaims::new(
            "rp_x",
            "ann",
            "globex",
            "sales",
            "Elsewhere",
            later,
        ))
        .unwrap();
    refused(
        transcription("conv_09", &elsewhere),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_profile",
    )
    .await;
    assert_nothing_stored(&t).await;

    // A real ticket works once; a second conversation with it is refused.
    let ticket = start_roleplay(&base, "acme", "ann").await;
    let (status, first) = deliver_signed(&base, &transcription("conv_10", &ticket)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    refused(
        transcription("conv_11", &ticket),
        StatusCode::CONFLICT,
        "ticket_used",
    )
    .await;
    let session = sessions::get(&t.db, "acme", first["id"].as_str().unwrap())
        .await
        .unwrap()
        .expect("the session");
    assert_eq!(
        session.profile_id, "ann",
        "the ticket's profile, not the variable's"
    );
    assert_eq!(session.kind, "sales");
    assert_eq!(session.title, "Discovery call with Globex");
    assert_eq!(count(&t, "SELECT count(*) FROM sessions").await, 1);
}

on_both_databases!(a_roleplay_is_refused_with_the_reason_when_its_request_is_bad);
async fn a_roleplay_is_refused_with_the_reason_when_its_request_is_bad(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[CONFIGURED]).await else {
        return;
    };
    let base = start_api(&t).await;
    for (body, field) in [
        (json!({ "kind": "karaoke", "title": "Sing" }), "kind"),
        (json!({ "kind": "sales", "title": "" }), "title"),
        (json!({ "kind": "sales" }), "title"),
    ] {
        let (status, error) = roleplay_request(&base, "acme", "ann", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    assert_eq!(count(&t, "SELECT count(*) FROM roleplays").await, 0);
}

on_both_databases!(without_a_secret_the_webhook_is_not_configured);
async fn without_a_secret_the_webhook_is_not_configured(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    ann_has_signed_in(&t).await;
    let base = start_api(&t).await;
    let body = transcription("conv_06", "any-ticket").to_string();
    // Not even a request signed with an empty secret gets in.
    for signature in [None, Some(signature_header("", now(), body.as_bytes()))] {
        let (status, error) = deliver(&base, body.as_bytes(), signature.as_deref()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
        assert_eq!(error["error"]["code"], "not_configured");
    }
    assert_nothing_stored(&t).await;
}

on_both_databases!(other_event_types_are_acknowledged_and_ignored);
async fn other_event_types_are_acknowledged_and_ignored(backend: Backend) {
    let Some((t, base)) = with_ann_signed_in(backend, &[]).await else {
        return;
    };
    let removal = json!({
        "type": "voice_removal_notice",
        "event_timestamp": 1_739_537_297,
        "data": { "voice_id": "voice_1" }
    });
    let workspace = json!({ "type": "workspace_event", "data": {} });
    for event in [removal, workspace] {
        let (status, answer) = deliver_signed(&base, &event).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer, json!({ "ignored": true }));
    }
    assert_nothing_stored(&t).await;
}

on_both_databases!(malformed_deliveries_are_refused_naming_the_field);
async fn malformed_deliveries_are_refused_naming_the_field(backend: Backend) {
    let Some((t, base)) = with_ann_signed_in(backend, &[]).await else {
        return;
    };

    let broken = b"{\"type\": \"post_call_transcription\", ";
    let (status, error) = deliver(
        &base,
        broken,
        Some(&signature_header(SECRET, now(), broken)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "invalid_json");

    let with = |change: &dyn Fn(&mut Value)| {
        let mut event = transcription("conv_09", "unchecked: fields are read first");
        change(&mut event);
        event
    };
    let cases = [
        (with(&|e| e["type"] = Value::Null), "type"),
        (
            with(&|e| e["data"]["conversation_id"] = Value::Null),
            "data.conversation_id",
        ),
        (
            with(&|e| e["data"]["transcript"] = json!("hello")),
            "data.transcript",
        ),
        (
            with(&|e| e["data"]["transcript"][1]["role"] = json!("coach")),
            "data.transcript[1].role",
        ),
        (
            with(&|e| e["data"]["transcript"][3]["time_in_call_secs"] = json!(2)),
            "data.transcript[3].time_in_call_secs",
        ),
        (
            with(&|e| e["data"]["metadata"]["call_duration_secs"] = json!("long")),
            "data.metadata.call_duration_secs",
        ),
    ];
    for (event, field) in cases {
        let (status, error) = deliver_signed(&base, &event).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {error}");
        assert_eq!(error["error"]["field"], field);
    }
    assert_nothing_stored(&t).await;
}

on_both_databases!(a_long_transcript_may_exceed_the_global_body_limit_up_to_5_mb);
async fn a_long_transcript_may_exceed_the_global_body_limit_up_to_5_mb(backend: Backend) {
    let Some(Roleplay { t, base, ticket }) = ann_in_a_roleplay(backend, &[]).await else {
        return;
    };
    let with_turns = |conversation: &str, turns: usize| {
        let mut event = transcription(conversation, &ticket);
        let line = "We looked at every option on the table and settled on the plan. ".repeat(3);
        event["data"]["transcript"] = (0..turns)
            .map(|i| {
                let role = if i % 2 == 0 { "agent" } else { "user" };
                json!({ "role": role, "message": line, "time_in_call_secs": i })
            })
            .collect();
        event["data"]["metadata"]["call_duration_secs"] = json!(turns);
        event
    };
    // About 2.5 MB: over http.body_limit_bytes (1 MiB), under this route's 5 MB.
    let long = with_turns("conv_10", 10_000);
    assert!(long.to_string().len() > 2 * 1024 * 1024);
    let (status, answer) = deliver_signed(&base, &long).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["duplicate"], false);

    let too_long = with_turns("conv_11", 25_000);
    assert!(too_long.to_string().len() > 5 * 1024 * 1024);
    let (status, error) = deliver_signed(&base, &too_long).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["error"]["code"], "payload_too_large");
    assert_eq!(count(&t, "SELECT count(*) FROM sessions").await, 1);
}

on_both_databases!(a_roleplay_checks_the_plan_and_quotas_as_a_submitted_session_does);
async fn a_roleplay_checks_the_plan_and_quotas_as_a_submitted_session_does(backend: Backend) {
    let paid_only = "[billing]\ndefault_plan = \"pro\"\n";
    let Some(t) = TestDb::new(backend, &[CONFIGURED, paid_only]).await else {
        return;
    };
    let base = start_api(&t).await;
    let body = json!({ "kind": "sales", "title": "Discovery call" });
    let (status, error) = roleplay_request(&base, "acme", "ann", &body).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{error}");
    assert_eq!(error["error"]["code"], "subscription_required");

    let one_a_day = "[plans.free]\nsessions_per_day = 1\n";
    let Some(Roleplay { t, base, ticket }) = ann_in_a_roleplay(backend, &[one_a_day]).await else {
        return;
    };
    let (status, answer) = deliver_signed(&base, &transcription("conv_q1", &ticket)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, error) = roleplay_request(&base, "acme", "ann", &body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{error}");
    assert_eq!(error["error"]["field"], "sessions_per_day");
    assert_eq!(count(&t, "SELECT count(*) FROM roleplays").await, 1);
}

/// A local server speaking ElevenLabs' signed-URL endpoint: it checks the API key and the
/// agent, and answers a URL naming the agent.
async fn elevenlabs_api() -> String {
    use axum::extract::Query;
    use axum::http::HeaderMap;
    let app = axum::Router::new().route(
        "/v1/convai/conversation/get-signed-url",
        axum::routing::get(
            |headers: HeaderMap, Query(query): Query<std::collections::HashMap<String, String>>| async move {
                if headers.get("xi-api-key").and_then(|v| v.to_str().ok()) != Some("xi_test_key") {
                    return (StatusCode::UNAUTHORIZED, axum::Json(json!({"detail": "bad key"})));
                }
                let agent = query.get("agent_id").cloned().unwrap_or_default();
                (
                    StatusCode::OK,
                    axum::Json(json!({
                        "signed_url": format!("wss://convai.test/v1/convai/conversation?agent_id={agent}&conversation_signature=sig")
                    })),
                )
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

on_both_databases!(with_an_api_key_and_agent_a_roleplay_also_gets_a_signed_conversation_url);
async fn with_an_api_key_and_agent_a_roleplay_also_gets_a_signed_conversation_url(
    backend: Backend,
) {
    let api = elevenlabs_api().await;
    let keyed = format!(
        "[elevenlabs]\napi_key = \"xi_test_key\"\nagent_id = \"agent_prospect\"\nbase_url = \"{api}\"\n"
    );
    let Some(t) = TestDb::new(backend, &[CONFIGURED, &keyed]).await else {
        return;
    };
    let base = start_api(&t).await;
    let body = json!({ "kind": "interview", "title": "Mock interview" });
    let (status, answer) = roleplay_request(&base, "acme", "ann", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(
        answer["signed_url"],
        "wss://convai.test/v1/convai/conversation?agent_id=agent_prospect&conversation_signature=sig"
    );
    assert!(answer["dynamic_variables"]["voxline_ticket"].is_string());

    // A wrong key: ElevenLabs refuses, and so does voxline, storing nothing.
    let wrong = format!(
        "[elevenlabs]\napi_key = \"xi_wrong\"\nagent_id = \"agent_prospect\"\nbase_url = \"{api}\"\n"
    );
    let Some(t) = TestDb::new(backend, &[CONFIGURED, &wrong]).await else {
        return;
    };
    let base = start_api(&t).await;
    let (status, error) = roleplay_request(&base, "acme", "ann", &body).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{error}");
    assert_eq!(error["error"]["code"], "elevenlabs_unavailable");
    assert_eq!(count(&t, "SELECT count(*) FROM roleplays").await, 0);
}

// ---- post_call_audio and call_initiation_failure -------------------------------------------

const WITH_AUDIO_LIMIT: &str = "[elevenlabs]\naudio_body_limit_bytes = 1048576\n";

/// `post_call_audio` for `conversation_id` carrying `audio`.
fn call_audio(conversation_id: &str, audio: &[u8]) -> Value {
    use base64::Engine;
    json!({
        "type": "post_call_audio",
        "event_timestamp": 1_739_537_300,
        "data": {
            "agent_id": "agent_prospect_globex",
            "conversation_id": conversation_id,
            "full_audio": base64::engine::general_purpose::STANDARD.encode(audio),
        }
    })
}

/// A role-play call the test makes: the discovery call's lines in two espeak-ng voices, mixed
/// to one track and encoded as MP3 (what ElevenLabs sends), with the transcript ElevenLabs
/// would send for it (each turn at the time its sound starts).
struct SpokenCall {
    mp3: Vec<u8>,
    turns: Vec<Value>,
    duration: f64,
}

fn spoken_call(dir: &std::path::Path) -> Option<SpokenCall> {
    use support::voices::{DISCOVERY_CALL, Who, record};
    let call = record(&DISCOVERY_CALL, dir)?;
    let wav = dir.join("call.wav");
    let mp3 = dir.join("call.mp3");
    std::fs::write(&wav, call.mono()).expect("write the call");
    let encoded = std::process::Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-i"])
        .arg(&wav)
        .args(["-codec:a", "libmp3lame", "-b:a", "64k"])
        .arg(&mp3)
        .status();
    if !encoded.as_ref().is_ok_and(|s| s.success()) {
        support::service_missing("ffmpeg", &format!("{encoded:?}"));
        return None;
    }
    let turns = DISCOVERY_CALL
        .iter()
        .zip(&call.turns)
        .map(|(line, turn)| {
            let role = if line.who == Who::User {
                "user"
            } else {
                "agent"
            };
            json!({ "role": role, "message": line.text, "time_in_call_secs": turn.start })
        })
        .collect();
    Some(SpokenCall {
        mp3: std::fs::read(&mp3).expect("the mp3"),
        turns,
        duration: call.user.len() as f64 / 16_000.0,
    })
}

fn spoken_transcription(conversation_id: &str, ticket: &str, call: &SpokenCall) -> Value {
    let mut event = transcription(conversation_id, ticket);
    event["data"]["transcript"] = Value::Array(call.turns.clone());
    event["data"]["metadata"]["call_duration_secs"] = json!(call.duration);
    event
}

async fn feedback_when(t: &TestDb, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(60), || {
        let (db, id) = (t.db.clone(), id.to_string());
        let done = &done;
        async move {
            let ready = sessions::get(&db, "acme", &id)
                .await
                .unwrap()
                .is_some_and(|s| s.status == "ready");
            ready
                && sessions::feedback(&db, "acme", &id)
                    .await
                    .unwrap()
                    .is_some_and(|f| done(&f))
        }
    })
    .await;
    sessions::feedback(&t.db, "acme", id)
        .await
        .unwrap()
        .expect("feedback")
}

/// The voice metrics were measured on the user's turns only: the user's espeak-ng voice is
/// pitched near 100 Hz and the partner's above 180 Hz, and the user's 2.5 s pause is the one
/// long pause.
fn assert_the_users_voice(feedback: &Value) {
    let voice = &feedback["metrics"]["voice"];
    let median = voice["median_pitch_hz"].as_f64().expect("a median pitch");
    assert!(
        median < 150.0,
        "the user's pitch, not the partner's: {voice}"
    );
    assert!(
        voice["pitch_variation_semitones"].as_f64().is_some(),
        "{voice}"
    );
    assert_eq!(
        voice["pauses"]["long_count"], 1,
        "the user's 2.5 s pause: {voice}"
    );
}

on_both_databases!(call_audio_before_its_transcript_is_held_and_taken_by_the_session);
async fn call_audio_before_its_transcript_is_held_and_taken_by_the_session(backend: Backend) {
    let Some((Roleplay { t, base, ticket }, call)) =
        ann_in_a_roleplay_over_a_spoken_call(backend).await
    else {
        return;
    };

    let (status, answer) = deliver_signed(&base, &call_audio("conv_a1", &call.mp3)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["audio"], "held_for_transcript");
    assert_eq!(answer["duplicate"], false);
    let (status, again) = deliver_signed(&base, &call_audio("conv_a1", &call.mp3)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        again["duplicate"], true,
        "a redelivery is held once: {again}"
    );
    assert_eq!(
        count(&t, "SELECT count(*) FROM pending_call_audio").await,
        1
    );

    let (status, made) =
        deliver_signed(&base, &spoken_transcription("conv_a1", &ticket, &call)).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let id = made["id"].as_str().expect("a session").to_string();
    assert_eq!(
        count(&t, "SELECT count(*) FROM pending_call_audio").await,
        0
    );
    let session = sessions::get(&t.db, "acme", &id).await.unwrap().unwrap();
    assert!(
        session.audio_ref.is_some(),
        "the held audio is the session's"
    );
    assert_eq!(session.audio_type.as_deref(), Some("audio/mpeg"));

    let workers = start_workers(&t, &["analysis"]);
    let feedback = feedback_when(&t, &id, "the feedback", |f| f["version"] == 1).await;
    workers.shutdown().await;
    assert_the_users_voice(&feedback);
    // A late redelivery of the audio changes nothing.
    let (_, late) = deliver_signed(&base, &call_audio("conv_a1", &call.mp3)).await;
    assert_eq!(late["duplicate"], true, "{late}");
    assert_eq!(count(&t, "SELECT count(*) FROM usage_records").await, 1);
}

on_both_databases!(call_audio_after_its_transcript_re_scores_the_feedback_once);
async fn call_audio_after_its_transcript_re_scores_the_feedback_once(backend: Backend) {
    let Some((Roleplay { t, base, ticket }, call)) =
        ann_in_a_roleplay_over_a_spoken_call(backend).await
    else {
        return;
    };
    let workers = start_workers(&t, &["analysis", "email"]);

    let (status, made) =
        deliver_signed(&base, &spoken_transcription("conv_a2", &ticket, &call)).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let id = made["id"].as_str().expect("a session").to_string();
    let first = feedback_when(&t, &id, "the text feedback", |f| f["version"] == 1).await;
    assert!(first["metrics"]["voice"].is_null(), "no audio yet: {first}");
    assert!(
        first["metrics"]["voice_note"]
            .as_str()
            .unwrap_or_default()
            .contains("no recording"),
        "{first}"
    );

    let (status, attached) = deliver_signed(&base, &call_audio("conv_a2", &call.mp3)).await;
    assert_eq!(status, StatusCode::OK, "{attached}");
    assert_eq!(attached["id"], id.as_str());
    assert_eq!(attached["duplicate"], false);
    let second = feedback_when(&t, &id, "the re-scored feedback", |f| f["version"] == 2).await;
    assert_the_users_voice(&second);
    assert!(
        second["notes"].as_array().is_some_and(|n| n
            .iter()
            .any(|n| n.as_str().unwrap_or_default().contains("Re-scored"))),
        "the feedback says it was re-scored: {second}"
    );
    assert!(
        second["scores"]["metrics"]["pitch_variation_semitones"]["score"]
            .as_f64()
            .is_some(),
        "{second}"
    );
    let (_, again) = deliver_signed(&base, &call_audio("conv_a2", &call.mp3)).await;
    assert_eq!(again["duplicate"], true, "{again}");
    workers.shutdown().await;
    // Billed once, one "feedback ready" email.
    assert_eq!(count(&t, "SELECT count(*) FROM usage_records").await, 1);
    assert_eq!(
        count(&t, "SELECT count(*) FROM jobs WHERE queue = 'email'").await,
        1,
        "one feedback-ready email"
    );
    assert_eq!(
        sessions::feedback(&t.db, "acme", &id)
            .await
            .unwrap()
            .unwrap()["version"],
        2,
        "the redelivery re-scored nothing"
    );
}

on_both_databases!(corrupt_call_audio_keeps_the_text_feedback_and_says_why);
async fn corrupt_call_audio_keeps_the_text_feedback_and_says_why(backend: Backend) {
    let Some(Roleplay { t, base, ticket }) = ann_in_a_roleplay(backend, &[]).await else {
        return;
    };
    // An ID3 tag and then text: no audio frame anywhere.
    let mut garbage = b"ID3\x04\x00\x00\x00\x00\x00\x10".to_vec();
    garbage.extend(b"this is not audio ".repeat(1_000));
    let (status, answer) = deliver_signed(&base, &call_audio("conv_a3", &garbage)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, made) = deliver_signed(&base, &transcription("conv_a3", &ticket)).await;
    let id = made["id"].as_str().expect("a session").to_string();
    let workers = start_workers(&t, &["analysis"]);
    let feedback = feedback_when(&t, &id, "the feedback", |f| f["version"] == 1).await;
    workers.shutdown().await;
    let metrics = &feedback["metrics"];
    assert!(metrics["voice"].is_null(), "{metrics}");
    assert!(
        metrics["voice_note"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot be decoded"),
        "{metrics}"
    );
    assert_eq!(metrics["questions"], 2, "the text metrics stay: {metrics}");
}

on_both_databases!(oversized_or_malformed_call_audio_is_refused_and_nothing_is_stored);
async fn oversized_or_malformed_call_audio_is_refused_and_nothing_is_stored(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[CONFIGURED, WITH_AUDIO_LIMIT]).await else {
        return;
    };
    let base = start_api(&t).await;
    let big = vec![0x55u8; 900 * 1024]; // 1.2 MB as base64: over the 1 MiB limit
    let (status, error) = deliver_signed(&base, &call_audio("conv_a4", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["error"]["code"], "payload_too_large");
    let mut not_base64 = call_audio("conv_a4", b"x");
    not_base64["data"]["full_audio"] = json!("not base64 at all!");
    let (status, error) = deliver_signed(&base, &not_base64).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["field"], "data.full_audio");
    let mut no_id = call_audio("conv_a4", b"x");
    no_id["data"]["conversation_id"] = json!("");
    let (status, error) = deliver_signed(&base, &no_id).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["field"], "data.conversation_id");
    assert_eq!(
        count(&t, "SELECT count(*) FROM pending_call_audio").await,
        0
    );
    let calls = t.settings.blob_dir().join("calls");
    let files = std::fs::read_dir(&calls).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files, 0, "no audio file kept");
    assert_nothing_stored(&t).await;
}

on_both_databases!(a_call_that_never_started_marks_its_roleplay_failed_and_bills_nothing);
async fn a_call_that_never_started_marks_its_roleplay_failed_and_bills_nothing(backend: Backend) {
    let Some(Roleplay { t, base, ticket }) = ann_in_a_roleplay(backend, &[]).await else {
        return;
    };
    let rid = TicketKeys::from_secret(TEST_JWT_SECRET)
        .verify(&ticket)
        .map(|c: TicketClaims| c.rid)
        .expect("the ticket verifies");
    let failure = |ticket: &str| {
        json!({
            "type": "call_initiation_failure",
            "event_timestamp": 1_739_537_297,
            "data": {
                "agent_id": "agent_prospect_globex",
                "conversation_id": "conv_a5",
                "failure_reason": "busy",
                "metadata": { "type": "twilio", "body": {} },
                "conversation_initiation_client_data": {
                    "dynamic_variables": { "voxline_ticket": ticket }
                }
            }
        })
    };
    let (status, answer) = deliver_signed(&base, &failure(&ticket)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "failed");
    assert_eq!(answer["reason"], "busy");
    let (_, again) = deliver_signed(&base, &failure(&ticket)).await;
    assert_eq!(again["status"], "failed", "a redelivery: {again}");
    let roleplay = voxline_domain::roleplays::status(&t.db, "acme", &rid)
        .await
        .unwrap()
        .expect("the role-play");
    assert_eq!(roleplay.failure_reason.as_deref(), Some("busy"));
    let (status, error) = deliver_signed(&base, &failure("forged")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    assert_eq!(error["error"]["field"], TICKET_FIELD);
    assert_nothing_stored(&t).await;
    assert_eq!(count(&t, "SELECT count(*) FROM usage_records").await, 0);
}
