//! Cron from configuration on apalis-cron's schedule stream. Every process runs every entry,
//! and each tick is enqueued with the unique key `cron:<entry>:<tick>`, so the tick becomes
//! exactly one job however many processes saw it, and none is lost while any process is up.

use std::str::FromStr;

use apalis_cron::CronScheduler;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use voxline_domain::config::CronEntry;

use crate::client::JobClient;
use crate::model::NewJob;

/// The job a cron entry enqueues for the tick at `tick` (Unix seconds).
pub fn tick_job(name: &str, entry: &CronEntry, tick: u64) -> NewJob {
    let mut payload = entry
        .payload
        .clone()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(map) = payload.as_object_mut() {
        map.insert("cron".into(), name.into());
        map.insert("tick".into(), tick.into());
    }
    NewJob::new(&entry.queue, &entry.kind, payload).unique_key(format!("cron:{name}:{tick}"))
}

pub fn spawn(client: JobClient, stop: CancellationToken) -> Vec<JoinHandle<()>> {
    let entries: Vec<(String, CronEntry)> = client
        .settings()
        .cron
        .iter()
        .map(|(name, entry)| (name.clone(), entry.clone()))
        .collect();
    entries
        .into_iter()
        .filter_map(|(name, entry)| {
            // Validated at configuration load; a failure here is logged, not fatal.
            let schedule = match cron::Schedule::from_str(&entry.schedule) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(cron = %name, error = %e, "invalid cron schedule");
                    return None;
                }
            };
            let client = client.clone();
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                let ticks = CronScheduler::new(schedule).into_stream();
                futures::pin_mut!(ticks);
                loop {
                    let tick = tokio::select! {
                        _ = stop.cancelled() => return,
                        tick = ticks.next() => tick,
                    };
                    let tick = match tick {
                        Some(Ok(tick)) => tick.get_timestamp(),
                        Some(Err(e)) => {
                            tracing::warn!(cron = %name, error = %e, "cron schedule error");
                            continue;
                        }
                        None => return,
                    };
                    match client.enqueue_now(&tick_job(&name, &entry, tick)).await {
                        Ok(e) if e.inserted => tracing::info!(cron = %name, tick, job = %e.id, "cron tick enqueued"),
                        Ok(_) => tracing::debug!(cron = %name, tick, "cron tick already enqueued by another process"),
                        Err(e) => tracing::error!(cron = %name, tick, error = %e, "could not enqueue cron tick"),
                    }
                }
            }))
        })
        .collect()
}
