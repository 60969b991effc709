//! voxline's HTTP surface (axum). It writes rows and enqueues jobs; it never runs them.

pub mod admin;
pub mod admin_console;
pub mod admin_page;
pub mod app_page;
pub mod audio;
pub mod auth;
pub mod billing;
pub mod drain;
pub mod error;
pub mod extract;
pub mod hardening;
pub mod health;
pub mod intake;
pub mod jwks;
pub mod me;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod ratelimit;
pub mod roleplays;
pub mod session_events;
pub mod session_route;
pub mod sessions;
pub mod trace;
pub mod transcript;
pub mod upload;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use voxline_domain::blobs::{BlobStore, LocalBlobs};
use voxline_domain::events::StatusFeed;
use voxline_domain::secrets::SecretError;
use voxline_domain::{Db, Settings};
use voxline_jobs::JobClient;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub jobs: JobClient,
    pub keys: Arc<auth::Keys>,
    /// Signs and checks role-play tickets (`POST /api/roleplays`, the ElevenLabs webhook).
    pub tickets: Arc<roleplays::ticket::TicketKeys>,
    /// The process's metrics recorder, when one is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Where uploaded audio is kept.
    pub blobs: Arc<dyn BlobStore>,
    /// Session status changes for the SSE streams, started on first use (a process that
    /// never streams keeps no LISTEN connection).
    feed: Arc<std::sync::OnceLock<StatusFeed>>,
    /// Intake's group commit, started on first use (see [`intake`]).
    intake: Arc<std::sync::OnceLock<intake::IntakeWriter>>,
    /// Profiles this process has already recorded (see [`auth::Caller`]).
    pub seen_profiles: Arc<auth::SeenProfiles>,
    /// Per-profile and per-IP limits on intake and webhooks.
    pub limits: Arc<ratelimit::RateLimits>,
    /// The queue counts `/metrics` reports, read at most once per
    /// [`metrics::QUEUE_GAUGES_MAX_AGE`] however often it is scraped.
    pub queue_stats: Arc<metrics::cached::Cached<Vec<voxline_jobs::QueueStats>>>,
}

impl AppState {
    pub fn new(
        db: Db,
        settings: Arc<Settings>,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, SecretError> {
        let secret = voxline_domain::secrets::jwt_secret(&settings)?;
        let jobs = JobClient::new(db.clone(), settings.clone());
        let blobs = Arc::new(LocalBlobs::new(settings.blob_dir()));
        let settings_for_limits = settings.clone();
        let keys = Arc::new(auth::Keys::from_settings(&secret, &settings.auth));
        let tickets = Arc::new(roleplays::ticket::TicketKeys::from_secret(&secret));
        Ok(AppState {
            db,
            settings,
            jobs,
            keys,
            tickets,
            metrics,
            blobs,
            feed: Arc::default(),
            intake: Arc::default(),
            seen_profiles: Arc::default(),
            limits: Arc::new(ratelimit::RateLimits::new(settings_for_limits)),
            queue_stats: Arc::new(metrics::cached::Cached::new(metrics::QUEUE_GAUGES_MAX_AGE)),
        })
    }

    /// The session status feed (on Postgres, this starts its LISTEN task on first use).
    pub fn feed(&self) -> &StatusFeed {
        self.feed.get_or_init(|| StatusFeed::start(&self.db))
    }

    /// The writers that commit new sessions (their tasks start on first use, on the runtime
    /// of the request that first submits).
    pub fn intake(&self) -> &intake::IntakeWriter {
        self.intake.get_or_init(|| {
            intake::IntakeWriter::start(self.db.clone(), self.jobs.clone(), self.settings.clone())
        })
    }
}

/// The full router: every `/api` route is registered through [`openapi::routes`], which puts it
/// in the OpenAPI document as it adds it, so the two cannot drift apart.
pub fn router(state: AppState) -> Router {
    let (api, spec) = openapi::routes().split_for_parts();
    let spec = Arc::new(openapi::complete(spec));
    let http = &state.settings.http;
    let body_limit = axum::extract::DefaultBodyLimit::max(http.body_limit_bytes);
    let cors = hardening::cors(&http.cors_origins);
    let app = api
        .merge(openapi::docs_router(spec))
        .merge(admin_page::router())
        .merge(app_page::router())
        .route("/metrics", axum::routing::get(metrics::render))
        .fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "no_route",
                "no such route",
            )
        })
        .layer(body_limit)
        .layer(axum::middleware::from_fn(metrics::track_http))
        .layer(cors);
    hardening::with_security_headers(app)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(trace::RequestSpan)
                .on_response(trace::RecordStatus::default()),
        )
        // Outermost, so every early refusal (auth, limits, content type) reaches the client.
        .layer(axum::middleware::from_fn(drain::discard_unread_body))
        .with_state(state)
}

/// Serves until `stop` is cancelled, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "HTTP listening");
    // The peer address feeds the per-IP rate limits.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
