//! `voxline bench fairness`: how long a company waits behind another's backlog. Company A
//! enqueues a backlog of slow jobs (a handler that sleeps), then company B a few, one at a
//! time; B's time to start (its jobs' `attempted_at - created_at`) is measured with fair
//! claiming off and then on, in one run. Ends with one `key=value` summary line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use voxline_domain::config::QueueOverrides;
use voxline_domain::{Db, Settings};
use voxline_jobs::queues::BENCH;
use voxline_jobs::{DbJobs, JobClient, JobId, JobState, NewJob};
use voxline_workers::diag;

use crate::bench::{Workers, percentile, wait_drained};
use crate::services::connect;

// The options of its `voxline bench` subcommand (whose help is the variant's).
#[derive(clap::Args)]
pub struct FairnessBench {
    /// Company A's backlog.
    #[arg(long, default_value_t = 5_000)]
    pub backlog: usize,
    /// Company B's jobs, enqueued one at a time after A's.
    #[arg(long, default_value_t = 10)]
    pub late: usize,
    /// How long each job takes (a handler that sleeps).
    #[arg(long, default_value_t = 50)]
    pub job_ms: u64,
    /// Worker processes (more than one needs Postgres).
    #[arg(long, default_value_t = 2)]
    pub processes: usize,
    /// Worker slots per process.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Running jobs per company across processes when fairness is on (0: round-robin only).
    #[arg(long, default_value_t = 0)]
    pub per_company: usize,
}

pub async fn run(settings: Settings, bench: FairnessBench) -> anyhow::Result<()> {
    if bench.processes == 0 || bench.concurrency == 0 || bench.late == 0 {
        bail!("--processes, --concurrency and --late must be at least 1");
    }
    if bench.processes > 1 && !settings.is_postgres() {
        bail!("--processes above 1 needs Postgres (SQLite wakes workers in-process only)");
    }
    let off = measure(&settings, &bench, false)
        .await
        .context("fairness off")?;
    let on = measure(&settings, &bench, true)
        .await
        .context("fairness on")?;
    let database = if settings.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "db={database} backlog={} late={} job_ms={} processes={} concurrency={} per_company={} \
         off_p50_ms={:.1} off_p99_ms={:.1} on_p50_ms={:.1} on_p99_ms={:.1}",
        bench.backlog,
        bench.late,
        bench.job_ms,
        bench.processes,
        bench.concurrency,
        bench.per_company,
        percentile(&off, 0.50),
        percentile(&off, 0.99),
        percentile(&on, 0.50),
        percentile(&on, 0.99),
    );
    Ok(())
}

/// B's times to start, sorted, in milliseconds.
async fn measure(
    settings: &Settings,
    bench: &FairnessBench,
    fair: bool,
) -> anyhow::Result<Vec<f64>> {
    let mut settings = settings.clone();
    let per_company = if fair { bench.per_company } else { 0 };
    settings.queues.insert(
        BENCH.to_string(),
        QueueOverrides {
            concurrency: Some(bench.concurrency),
            prefetch: Some(0),
            round_robin: Some(fair),
            per_company_concurrency: Some(per_company),
            ..Default::default()
        },
    );
    let settings = Arc::new(settings);
    let db = connect(&settings).await?;
    let client = JobClient::new(db.clone(), settings.clone());
    db.jobs().purge_queue(BENCH).await?;
    let env = vec![
        (
            "VOXLINE_QUEUES__BENCH__ROUND_ROBIN".to_string(),
            fair.to_string(),
        ),
        (
            "VOXLINE_QUEUES__BENCH__PER_COMPANY_CONCURRENCY".to_string(),
            per_company.to_string(),
        ),
    ];
    let workers =
        Workers::start(&db, &settings, bench.processes, bench.concurrency, 0, &env).await?;
    // Warm-up: every process has connected and is listening once these are done.
    client
        .enqueue_many(sleeping(
            bench.processes * bench.concurrency * 2,
            "warmup",
            1,
        ))
        .await?;
    wait_drained(&db, Duration::from_secs(60))
        .await
        .context("warm-up")?;

    client
        .enqueue_many(sleeping(bench.backlog, "company-a", bench.job_ms))
        .await?;
    // B arrives once A's backlog is being worked off.
    wait_started(&db, 1).await?;
    let mut late = Vec::with_capacity(bench.late);
    for job in sleeping(bench.late, "company-b", bench.job_ms) {
        late.push(client.enqueue_now(&job).await?.id);
    }
    let waits = times_to_start(&db, &late, Duration::from_secs(600)).await?;
    workers.stop().await;
    db.jobs().purge_queue(BENCH).await?;
    db.close().await;
    Ok(waits)
}

fn sleeping(n: usize, company: &str, ms: u64) -> Vec<NewJob> {
    (0..n)
        .map(|_| {
            NewJob::new(
                BENCH,
                diag::SLEEP,
                serde_json::json!({ "ms": ms, "company_id": company }),
            )
        })
        .collect()
}

/// Waits until at least `n` jobs of the bench queue have started.
async fn wait_started(db: &Db, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = db.jobs().stats().await?;
        let running: i64 = stats
            .iter()
            .filter(|s| s.queue == BENCH)
            .map(|s| {
                let count = |state| s.counts.get(&state).copied().unwrap_or(0);
                count(JobState::Running) + count(JobState::Done)
            })
            .sum();
        if running as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no bench job started within a minute");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Each job's `attempted_at - created_at` once all of them have started.
async fn times_to_start(db: &Db, ids: &[JobId], limit: Duration) -> anyhow::Result<Vec<f64>> {
    let deadline = Instant::now() + limit;
    loop {
        let mut waits = Vec::with_capacity(ids.len());
        for id in ids {
            let job = db.jobs().get(*id).await?.context("late job vanished")?;
            if let Some(started) = job.attempted_at {
                waits.push(
                    (started - job.created_at)
                        .num_microseconds()
                        .unwrap_or(i64::MAX) as f64
                        / 1000.0,
                );
            }
        }
        if waits.len() == ids.len() {
            waits.sort_by(f64::total_cmp);
            return Ok(waits);
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} late jobs never started",
                ids.len() - waits.len(),
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
