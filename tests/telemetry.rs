//! Traces of the real `voxline serve`, received by a small OTLP/HTTP collector in the test: a
//! session's request and the attempts of the jobs it set off are one trace (the context
//! travels with the job in its row), a retry links back to its enqueuer, the last spans are
//! flushed at shutdown, and with telemetry off no context is stored.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};
use support::{Backend, TestDb, eventually, free_port, signal};
use voxline_api::auth::Role;
use voxline_domain::Db;
use voxline_jobs::store::JobFilter;
use voxline_jobs::{DbJobs, Job, JobId, JobState, NewJob};
use voxline_workers::diag;

const WAIT: Duration = Duration::from_secs(30);
/// The caller's own trace, which the request continues.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// What the collector has received: every span, and the `service.name` of each batch.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    /// Serves `POST /v1/traces` on a loopback port; returns the base URL to export to.
    async fn start() -> (String, Collector) {
        let collector = Collector::default();
        let app = Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(collector.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), collector)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("not poisoned").clone()
    }

    fn services(&self) -> Vec<String> {
        self.services.lock().expect("not poisoned").clone()
    }
}

async fn receive(State(collector): State<Collector>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return Err(StatusCode::BAD_REQUEST);
    };
    for resource_spans in request.resource_spans {
        if let Some(resource) = &resource_spans.resource {
            let name = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| text(v.value.as_ref()));
            collector
                .services
                .lock()
                .expect("not poisoned")
                .extend(name);
        }
        for scope_spans in resource_spans.scope_spans {
            collector
                .spans
                .lock()
                .expect("not poisoned")
                .extend(scope_spans.spans);
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    ))
}

fn text(value: Option<&AnyValue>) -> Option<String> {
    match value? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A span's attribute as text.
fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()))
}

fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The attempt spans of job `id`, by attempt.
fn attempts(spans: &[Span], id: JobId) -> Vec<Span> {
    let mut found: Vec<Span> = spans
        .iter()
        .filter(|s| s.name == "job.attempt" && attr(s, "job.id") == Some(id.0.to_string()))
        .cloned()
        .collect();
    found.sort_by_key(|s| attr(s, "job.attempt"));
    found
}

/// The server span of `POST /api/sessions`.
fn session_request(spans: &[Span]) -> Option<Span> {
    spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32 && s.name == "POST /api/sessions")
        .cloned()
}

/// Whether following `span`'s parents through `spans` reaches `ancestor`.
fn descends_from(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut current = span.clone();
    for _ in 0..spans.len() {
        if current.parent_span_id == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|s| s.span_id == current.parent_span_id) {
            Some(parent) => current = parent.clone(),
            None => return false,
        }
    }
    false
}

/// A token whose profile has an address, so the analysis queues the feedback-ready email.
fn token_with_email() -> String {
    support::token_with_email("acme", "ann", Role::Member, Some("ann@example.com"))
}

/// `voxline serve` on a free port with `env`, answering `/healthz`; returns it and its address.
async fn serve(t: &TestDb, env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut all = vec![("VOXLINE_HTTP_ADDR", addr.as_str())];
    all.extend_from_slice(env);
    let child = t.spawn_voxline(&["serve"], &all);
    let http = reqwest::Client::new();
    eventually("serve answers /healthz", WAIT, || {
        let (http, url) = (http.clone(), format!("http://{addr}/healthz"));
        async move { http.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    (child, addr)
}

/// `POST /api/sessions` with a JSON transcript, as part of the caller's trace.
async fn submit(addr: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/sessions"))
        .bearer_auth(token_with_email())
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&support::discovery_call())
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json answer");
    answer["id"].as_str().expect("session id").to_string()
}

/// The one job of `queue` whose payload names `needle` (a session id), once there is one.
async fn job_about(t: &TestDb, queue: &str, needle: &str) -> Job {
    let find = || async {
        let filter = JobFilter {
            queue: Some(queue.into()),
            limit: 100,
            ..Default::default()
        };
        let jobs = t.db.jobs().list(&filter).await.expect("list jobs");
        jobs.into_iter()
            .find(|j| j.payload.to_string().contains(needle))
    };
    eventually(&format!("a {queue} job about {needle}"), WAIT, || async {
        find().await.is_some()
    })
    .await;
    find().await.expect("found")
}

/// The `trace_context` column of job `id` (no operator view shows it).
async fn stored_context(t: &TestDb, id: JobId) -> Option<String> {
    let sql_pg = "SELECT trace_context FROM jobs WHERE id = $1";
    let sql_lite = "SELECT trace_context FROM jobs WHERE id = ?";
    match &t.db {
        Db::Postgres(_) => sqlx::query_scalar(sql_pg)
            .bind(id.0)
            .fetch_one(t.owner())
            .await
            .expect("read trace_context"),
        Db::Sqlite(lite) => sqlx::query_scalar(sql_lite)
            .bind(id.0)
            .fetch_one(&lite.pool)
            .await
            .expect("read trace_context"),
    }
}

async fn stop(mut child: tokio::process::Child) {
    signal(&child, "-TERM").await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
}

on_both_databases!(a_session_is_one_trace_from_its_request_to_its_jobs);
async fn a_session_is_one_trace_from_its_request_to_its_jobs(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let (endpoint, collector) = Collector::start().await;
    let (serve, addr) = serve(
        &t,
        &[
            ("VOXLINE_TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("VOXLINE_TELEMETRY__EXPORT_DELAY_MS", "50"),
            ("VOXLINE_ENGINE__POLL_INTERVAL_MS", "100"),
        ],
    )
    .await;
    let session = submit(&addr).await;
    let analysis = job_about(&t, "analysis", &session).await;
    let email = job_about(&t, "email", &session).await;
    t.wait_state(email.id, JobState::Done, WAIT).await;

    eventually(
        "the request's and both jobs' spans are exported",
        WAIT,
        || async {
            let spans = collector.spans();
            session_request(&spans).is_some()
                && !attempts(&spans, analysis.id).is_empty()
                && !attempts(&spans, email.id).is_empty()
        },
    )
    .await;
    let spans = collector.spans();
    let request = session_request(&spans).expect("the request's span");
    let analysed = &attempts(&spans, analysis.id)[0];
    let emailed = &attempts(&spans, email.id)[0];

    // The request continued the caller's trace and says what it was.
    assert_eq!(hex_id(&request.trace_id), CALLER_TRACE);
    assert_eq!(hex_id(&request.parent_span_id), CALLER_SPAN);
    assert_eq!(
        attr(&request, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attr(&request, "http.route").as_deref(),
        Some("/api/sessions")
    );
    assert_eq!(
        attr(&request, "http.response.status_code").as_deref(),
        Some("202")
    );

    // The analysis the request enqueued ran in its trace, under it...
    assert_eq!(analysed.trace_id, request.trace_id);
    assert_eq!(analysed.kind, SpanKind::Consumer as i32);
    assert!(
        descends_from(&spans, analysed, &request),
        "the analysis attempt's parents lead to the request"
    );
    assert_eq!(attr(analysed, "job.queue").as_deref(), Some("analysis"));
    assert_eq!(attr(analysed, "job.kind").as_deref(), Some("analysis.run"));
    assert_eq!(attr(analysed, "job.attempt").as_deref(), Some("1"));
    assert_eq!(attr(analysed, "job.outcome").as_deref(), Some("done"));
    assert!(analysed.links.is_empty(), "a first attempt has no link");
    // ...because the job row carried the context of the span that enqueued it.
    let stored = stored_context(&t, analysis.id)
        .await
        .expect("the analysis job has a trace context");
    assert_eq!(
        stored,
        format!("00-{CALLER_TRACE}-{}-01", hex_id(&analysed.parent_span_id))
    );

    // The email the analysis queued from inside its attempt is a child of that attempt.
    assert_eq!(emailed.trace_id, request.trace_id);
    assert_eq!(emailed.parent_span_id, analysed.span_id);
    assert!(collector.services().iter().all(|s| s == "voxline"));

    stop(serve).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_links_to_its_enqueuer_and_the_last_spans_are_flushed_at_shutdown() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let (endpoint, collector) = Collector::start().await;
    // A batch delay far longer than the test: spans can only arrive through the flush at
    // shutdown.
    let (serve, _addr) = serve(
        &t,
        &[
            ("VOXLINE_TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("VOXLINE_TELEMETRY__EXPORT_DELAY_MS", "600000"),
            ("VOXLINE_ENGINE__POLL_INTERVAL_MS", "100"),
        ],
    )
    .await;
    let enqueuer = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let mut job = NewJob::new(
        "maintenance",
        diag::FAIL,
        json!({ "until_attempt": 2, "retry_after_ms": 10 }),
    );
    job.trace_context = Some(enqueuer.clone());
    let id = t.enqueue(job).await;
    t.wait_state(id, JobState::Done, WAIT).await;
    assert!(
        collector.spans().is_empty(),
        "nothing is exported before the delay"
    );

    stop(serve).await;
    let spans = attempts(&collector.spans(), id);
    assert_eq!(spans.len(), 2, "both attempts were flushed at shutdown");
    for span in &spans {
        assert_eq!(hex_id(&span.trace_id), CALLER_TRACE);
        assert_eq!(hex_id(&span.parent_span_id), CALLER_SPAN);
    }
    assert_eq!(attr(&spans[0], "job.outcome").as_deref(), Some("retry"));
    assert!(spans[0].links.is_empty());
    assert_eq!(attr(&spans[1], "job.attempt").as_deref(), Some("2"));
    assert_eq!(attr(&spans[1], "job.outcome").as_deref(), Some("done"));
    let links: Vec<String> = spans[1]
        .links
        .iter()
        .map(|l| format!("{}-{}", hex_id(&l.trace_id), hex_id(&l.span_id)))
        .collect();
    assert_eq!(links, vec![format!("{CALLER_TRACE}-{CALLER_SPAN}")]);
}

on_both_databases!(with_telemetry_off_no_trace_context_is_stored);
async fn with_telemetry_off_no_trace_context_is_stored(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let (serve, addr) = serve(&t, &[("VOXLINE_ENGINE__POLL_INTERVAL_MS", "100")]).await;
    // Even a caller's traceparent is not kept: with no OpenTelemetry layer no span has a
    // context to hand on.
    let session = submit(&addr).await;
    let analysis = job_about(&t, "analysis", &session).await;
    let analysis = t.wait_state(analysis.id, JobState::Done, WAIT).await;
    assert_eq!(stored_context(&t, analysis.id).await, None);
    let email = job_about(&t, "email", &session).await;
    assert_eq!(stored_context(&t, email.id).await, None);
    stop(serve).await;
}
