//! Prometheus metrics at `/metrics`: what this process recorded (job durations and attempts,
//! HTTP requests) plus queue gauges read from the database, so any API process reports the
//! whole deployment's queues. The counts are cached ([`cached`]): however often and however
//! many scrapers ask, the database is read at most once per [`QUEUE_GAUGES_MAX_AGE`].

pub mod cached;

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use voxline_jobs::{JobState, QueueStats};

use crate::AppState;

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the process-wide recorder; call once at start.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

pub async fn render(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process",
        )
            .into_response();
    };
    // The one read of the queue counts (a `GROUP BY` over the jobs table), at most once per
    // QUEUE_GAUGES_MAX_AGE whatever the scrape rate.
    let stats = state
        .queue_stats
        .get(Instant::now(), "queue counts for metrics", || {
            state.jobs.store().stats()
        })
        .await;
    if let Some(stats) = stats {
        set_queue_gauges(&state, &stats);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle.render(),
    )
        .into_response()
}

/// How stale the queue gauges may be: one read of the counts per second serves every scrape.
pub const QUEUE_GAUGES_MAX_AGE: Duration = Duration::from_secs(1);

/// Sets the queue gauges from `stats` on every scrape (cheap), so that each scrape shows the
/// counts of its own database even where several share the process-wide recorder.
fn set_queue_gauges(state: &AppState, stats: &[QueueStats]) {
    for queue in state
        .settings
        .queue_names()
        .into_iter()
        .chain(stats.iter().map(|s| s.queue.clone()))
    {
        let s = stats.iter().find(|s| s.queue == queue);
        for st in JobState::ALL {
            let n = s.and_then(|s| s.counts.get(&st)).copied().unwrap_or(0);
            metrics::gauge!("voxline_jobs", "queue" => queue.clone(), "state" => st.as_str())
                .set(n as f64);
        }
        let dead = s
            .and_then(|s| s.counts.get(&JobState::Dead))
            .copied()
            .unwrap_or(0);
        metrics::gauge!("voxline_dead_letters", "queue" => queue.clone()).set(dead as f64);
        let paused = s.is_some_and(|s| s.pause.is_some());
        metrics::gauge!("voxline_queue_paused", "queue" => queue.clone()).set(if paused {
            1.0
        } else {
            0.0
        });
        let age = s.and_then(|s| s.oldest_available_age_ms).unwrap_or(0);
        metrics::gauge!("voxline_oldest_available_age_seconds", "queue" => queue.clone())
            .set(age as f64 / 1000.0);
    }
}

/// Records every request's duration by route template (never the raw path: ids would
/// explode the label set), method and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        "voxline_http_request_duration_seconds",
        "route" => route,
        "method" => method,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// A bare `/metrics` listener for processes without the API (`voxline worker`): their job
/// durations and attempts live in their own memory. Queue gauges come from the API's scrape.
pub async fn serve_process_metrics(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
