//! Starting and stopping the long-running roles: API, worker pools, scheduler.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use voxline_api::AppState;
use voxline_domain::{Db, Settings};
use voxline_jobs::{JobClient, Runner, cron, maintenance};

/// Which roles this process plays.
pub struct Roles {
    pub api: bool,
    /// `Some(queues)` runs worker pools; an empty list means every configured queue.
    pub workers: Option<Vec<String>>,
    pub scheduler: bool,
}

impl Roles {
    pub fn all() -> Self {
        Roles {
            api: true,
            workers: Some(Vec::new()),
            scheduler: true,
        }
    }

    pub fn api() -> Self {
        Roles {
            api: true,
            workers: None,
            scheduler: false,
        }
    }

    pub fn worker(queues: Vec<String>, scheduler: bool) -> Self {
        Roles {
            api: false,
            workers: Some(queues),
            scheduler,
        }
    }
}

/// How long a starting process waits for a database that cannot be reached yet (starting,
/// restarting, shutting down) before it gives up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// Connects and migrates. A database that is unreachable right now is waited for, with
/// backoff, up to [`CONNECT_PATIENCE`]: a process restarted beside a restarting PostgreSQL
/// comes up with it instead of exiting. Any other error (a wrong URL, a failed migration)
/// stops the start at once.
pub async fn connect(settings: &Settings) -> anyhow::Result<Db> {
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut waits = backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times(),
    );
    loop {
        match connect_once(settings).await {
            Ok(db) => return Ok(db),
            Err((e, unavailable)) => {
                let wait = waits.next().unwrap_or(Duration::from_secs(5));
                if !unavailable || tokio::time::Instant::now() + wait > deadline {
                    return Err(e);
                }
                tracing::warn!(error = %format!("{e:#}"), ?wait, "the database cannot be reached yet; waiting");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One try; the flag says whether the failure was the database being unreachable.
async fn connect_once(settings: &Settings) -> Result<Db, (anyhow::Error, bool)> {
    let db = Db::connect(settings).await.map_err(|e| {
        let unavailable = e.is_unavailable();
        let context = format!("connecting to {}", redact(&settings.database_url()));
        (anyhow::Error::new(e).context(context), unavailable)
    })?;
    if let Err(e) = db.migrate().await {
        let unavailable = e.is_unavailable();
        db.close().await;
        return Err((
            anyhow::Error::new(e).context("applying migrations"),
            unavailable,
        ));
    }
    Ok(db)
}

pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let db = connect(&settings).await?;
    db.close().await;
    println!("migrations applied");
    Ok(())
}

pub async fn run(settings: Settings, roles: Roles) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let metrics =
        voxline_api::metrics::install().map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;
    // Checked before anything starts: a production deployment without a JWT secret is refused.
    let jwt_secret_check = voxline_domain::secrets::jwt_secret(&settings);
    if roles.api {
        jwt_secret_check?;
    }
    let db = connect(&settings).await?;
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();

    // Bind first, so a taken port fails the start before any worker claims a job.
    let listener = if roles.api {
        let addr = &settings.http.addr;
        Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("http.addr: cannot listen on {addr}"))?,
        )
    } else {
        None
    };

    let runner = match roles.workers {
        Some(queues) => {
            let handlers =
                voxline_workers::handlers(&db, &settings).map_err(|e| anyhow::anyhow!(e))?;
            let runner = Runner::new(db.clone(), settings.clone(), handlers);
            let runner = if queues.is_empty() {
                runner
            } else {
                runner.queues(queues)
            };
            Some(runner.start())
        }
        None => None,
    };
    if roles.scheduler {
        tasks.push(maintenance::spawn(
            db.clone(),
            &settings,
            voxline_workers::dead_hooks(&db),
            stop.clone(),
        ));
        tasks.extend(cron::spawn(
            JobClient::new(db.clone(), settings.clone()),
            stop.clone(),
        ));
    }
    if !roles.api && !settings.metrics.worker_addr.is_empty() {
        let addr = &settings.metrics.worker_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics.worker_addr: cannot listen on {addr}"))?;
        tasks.push(tokio::spawn({
            let (handle, stop) = (metrics.clone(), stop.clone());
            async move {
                if let Err(e) =
                    voxline_api::metrics::serve_process_metrics(listener, handle, stop).await
                {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            }
        }));
    }
    let api = match listener {
        Some(listener) => {
            let state = AppState::new(db.clone(), settings.clone(), Some(metrics))?;
            Some(tokio::spawn(voxline_api::serve(
                listener,
                state,
                stop.clone(),
            )))
        }
        None => None,
    };

    shutdown_signal().await;
    tracing::info!("shutting down");
    stop.cancel();
    if let Some(api) = api {
        match api.await {
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
            Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(runner) = runner {
        runner.shutdown().await;
    }
    for task in tasks {
        let _ = task.await;
    }
    db.close().await;
    Ok(())
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
