//! Queue maintenance, run by the elected leader: rescue jobs of dead workers (running the
//! on-dead hook of those that had no attempt left) and prune finished jobs past their
//! retention. Scheduled and retrying jobs need no promotion: a claim takes any waiting job
//! whose `run_at` has passed, and idle fetchers sleep only until the next one is due.

pub mod pruner;

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use voxline_domain::{Db, Settings};

use crate::handler::DeadHooks;
use crate::store;

/// Pruning deletes in bulk; once a minute is plenty once it has caught up.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The most one maintenance tick spends pruning before rescue runs again.
const PRUNE_BUDGET: Duration = Duration::from_secs(5);

pub fn spawn(
    db: Db,
    settings: &Settings,
    hooks: DeadHooks,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let every = Duration::from_millis(settings.engine.maintenance_interval_ms);
    let rescue_after = Duration::from_millis(settings.engine.rescue_after_ms);
    let retention = settings.retention.clone();
    let store = store::for_db(&db);
    tokio::spawn(async move {
        let mut leadership = store.leader_election();
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_prune = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if !leadership.check().await {
                continue;
            }
            match store.rescue(rescue_after, &hooks).await {
                Ok(rescued) if !rescued.is_empty() => {
                    tracing::warn!(jobs = ?rescued, "rescued jobs of a worker that stopped heart-beating");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "rescue failed"),
            }
            if tokio::time::Instant::now() >= next_prune {
                match pruner::prune_until_caught_up(store.as_ref(), &retention, PRUNE_BUDGET).await
                {
                    Ok(pruned) => {
                        if pruned.deleted > 0 {
                            tracing::info!(
                                jobs = pruned.deleted,
                                caught_up = pruned.caught_up,
                                "pruned finished jobs past retention"
                            );
                        }
                        // Behind: the next tick prunes again instead of a minute later.
                        next_prune = tokio::time::Instant::now()
                            + if pruned.caught_up {
                                PRUNE_EVERY
                            } else {
                                Duration::ZERO
                            };
                    }
                    Err(e) => tracing::warn!(error = %e, "pruning failed"),
                }
            }
        }
    })
}
