//! voxline's HTTP surface (axum). It writes rows and enqueues jobs; it never runs them.

pub mod error;
pub mod health;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use voxline_domain::{Db, Settings};
use voxline_jobs::JobClient;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub jobs: JobClient,
}

impl AppState {
    pub fn new(db: Db, settings: Arc<Settings>) -> Self {
        let jobs = JobClient::new(db.clone(), settings.clone());
        AppState { db, settings, jobs }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .layer(TraceLayer::new_for_http())
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
