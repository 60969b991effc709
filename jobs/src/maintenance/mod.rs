//! Queue maintenance, run by the elected leader: rescue jobs of dead workers, promote due
//! scheduled and retrying jobs, and prune finished jobs past their retention.

mod leader;

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use voxline_domain::{Db, Settings};

use crate::store;
pub use leader::Leadership;

/// Pruning deletes in bulk; once a minute is plenty.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub fn spawn(db: Db, settings: &Settings, stop: CancellationToken) -> JoinHandle<()> {
    let every = Duration::from_millis(settings.engine.maintenance_interval_ms);
    let rescue_after = Duration::from_millis(settings.engine.rescue_after_ms);
    let retention = settings.retention.clone();
    tokio::spawn(async move {
        let mut leadership = Leadership::new(&db);
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if !leadership.check().await {
                continue;
            }
            match store::rescue(&db, rescue_after).await {
                Ok(rescued) if !rescued.is_empty() => {
                    tracing::warn!(jobs = ?rescued, "rescued jobs of a worker that stopped heart-beating");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "rescue failed"),
            }
            if let Err(e) = store::promote(&db).await {
                tracing::warn!(error = %e, "promoting due jobs failed");
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                match store::prune(&db, &retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(jobs = n, "pruned finished jobs past retention"),
                    Err(e) => tracing::warn!(error = %e, "pruning failed"),
                }
            }
        }
    })
}
