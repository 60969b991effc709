//! `voxline bench queue` (and the dispatch to `bench intake`): burn-down throughput, enqueue rates and enqueue→start latency of the
//! job engine on the configured database. Ends with one `key=value` summary line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sqlx::ConnectOptions;
use voxline_domain::config::QueueOverrides;
use voxline_domain::{Db, Settings};
use voxline_jobs::queues::BENCH;
use voxline_jobs::{DbJobs, JobClient, NewJob, Runner, RunnerHandle};
use voxline_workers::diag;

use crate::bench_fairness::FairnessBench;
use crate::bench_intake::IntakeBench;
use crate::services::connect;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Burn-down of N no-op jobs, enqueue rates, and enqueue→start latency with idle workers.
    Queue(QueueBench),
    /// Session submissions through the real intake API (in this process): accepted per second
    /// and time to the 202, with every session durably committed. No worker runs.
    Intake(IntakeBench),
    /// Tenant fairness: company A enqueues a backlog of slow jobs, then company B a few; B's
    /// time to start with fair claiming off and on.
    Fairness(FairnessBench),
    /// Local (offline Whisper) transcription of FILE: real-time factor and peak memory.
    Transcribe {
        /// An audio file (wav, mp3, m4a, ogg, webm, flac).
        file: std::path::PathBuf,
    },
}

// The options of `voxline bench queue` (its help is the variant's).
#[derive(Args)]
pub struct QueueBench {
    /// No-op jobs enqueued in bulk and then worked off.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Worker slots per process.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Worker processes (more than one needs Postgres: SQLite wake-ups are in-process).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Jobs claimed ahead of free slots, per process.
    #[arg(long, default_value_t = 100)]
    prefetch: usize,
    /// Jobs enqueued one at a time, each in its own transaction, for the single-enqueue rate.
    #[arg(long, default_value_t = 2_000)]
    single: usize,
    /// Jobs enqueued one at a time with idle workers, for latency.
    #[arg(long, default_value_t = 300)]
    latency_jobs: usize,
    /// Pause between latency jobs.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
}

pub async fn run(settings: Settings, command: BenchCommand) -> anyhow::Result<()> {
    let QueueBench {
        jobs,
        concurrency,
        processes,
        prefetch,
        single,
        latency_jobs,
        interval_ms,
    } = match command {
        BenchCommand::Queue(bench) => bench,
        BenchCommand::Intake(bench) => return crate::bench_intake::run(settings, bench).await,
        BenchCommand::Transcribe { file } => {
            return crate::models::bench_transcribe(settings, file).await;
        }
        BenchCommand::Fairness(bench) => {
            return crate::bench_fairness::run(settings, bench).await;
        }
    };
    if processes == 0 || concurrency == 0 {
        bail!("--processes and --concurrency must be at least 1");
    }
    let mut settings = settings;
    settings.queues.insert(
        BENCH.to_string(),
        QueueOverrides {
            concurrency: Some(concurrency),
            prefetch: Some(prefetch),
            ..Default::default()
        },
    );
    if processes > 1 && !settings.is_postgres() {
        bail!("--processes above 1 needs Postgres (SQLite wakes workers in-process only)");
    }
    let settings = Arc::new(settings);
    let db = connect(&settings).await?;
    let client = JobClient::new(db.clone(), settings.clone());
    db.jobs().purge_queue(BENCH).await?;

    // One-by-one enqueue from one client, each an autocommit statement, before any worker runs
    // (as `pgbench -c 1` measures a one-row INSERT); the warm-up below works these jobs off.
    let started = Instant::now();
    for _ in 0..single {
        client
            .enqueue_now(&NewJob::new(BENCH, diag::NOOP, serde_json::json!({})))
            .await?;
    }
    let enqueue_single_per_s = single as f64 / started.elapsed().as_secs_f64();
    let insert_baseline_per_s = insert_baseline(&db, single).await?;

    let workers = Workers::start(&db, &settings, processes, concurrency, prefetch, &[]).await?;
    // Warm-up: every process has connected and is listening once these are done.
    client
        .enqueue_many(noop_jobs(processes * concurrency * 4))
        .await?;
    wait_drained(&db, Duration::from_secs(60))
        .await
        .context("warm-up")?;

    // (a) Burn-down: one bulk insert, visible to workers at commit.
    let started = Instant::now();
    client.enqueue_many(noop_jobs(jobs)).await?;
    let committed = Instant::now();
    wait_drained(&db, Duration::from_secs(600))
        .await
        .context("burn-down")?;
    let drained = Instant::now();
    let enqueue_bulk_per_s = jobs as f64 / (committed - started).as_secs_f64();
    let jobs_per_s = jobs as f64 / (drained - committed).as_secs_f64();

    // (b) Latency with idle workers: enqueue → start, from the job's own timestamps.
    let mut ids = Vec::with_capacity(latency_jobs);
    for _ in 0..latency_jobs {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        ids.push(
            client
                .enqueue_now(&NewJob::new(BENCH, diag::NOOP, serde_json::json!({})))
                .await?
                .id,
        );
    }
    wait_drained(&db, Duration::from_secs(60))
        .await
        .context("latency")?;
    let mut latencies = Vec::with_capacity(ids.len());
    for id in ids {
        let job = db.jobs().get(id).await?.context("latency job vanished")?;
        let started = job.attempted_at.context("latency job never started")?;
        latencies.push(
            (started - job.created_at)
                .num_microseconds()
                .unwrap_or(i64::MAX) as f64
                / 1000.0,
        );
    }
    latencies.sort_by(f64::total_cmp);

    workers.stop().await;
    db.jobs().purge_queue(BENCH).await?;
    db.close().await;

    let database = if settings.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "db={database} jobs={jobs} processes={processes} concurrency={concurrency} prefetch={prefetch} \
         enqueue_bulk_per_s={:.0} enqueue_single_per_s={:.0} insert_baseline_per_s={:.0} \
         jobs_per_s={:.0} p50_ms={:.2} p95_ms={:.2} p99_ms={:.2}",
        enqueue_bulk_per_s,
        enqueue_single_per_s,
        insert_baseline_per_s,
        jobs_per_s,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
    );
    Ok(())
}

/// The same client and pool inserting `n` one-row rows into a bare table (what `pgbench -c 1`
/// measures with a one-row INSERT), so `enqueue_single_per_s` can be read against it.
async fn insert_baseline(db: &Db, n: usize) -> anyhow::Result<f64> {
    const PG_TABLE: &str =
        "CREATE TABLE IF NOT EXISTS voxline_bench_baseline (id BIGSERIAL PRIMARY KEY, v INTEGER)";
    const SQLITE_TABLE: &str =
        "CREATE TABLE IF NOT EXISTS voxline_bench_baseline (id INTEGER PRIMARY KEY, v INTEGER)";
    const INSERT: &str = "INSERT INTO voxline_bench_baseline (v) VALUES (1)";
    const DROP: &str = "DROP TABLE voxline_bench_baseline";
    const GRANT: &str = "GRANT INSERT ON voxline_bench_baseline TO voxline_app;
        GRANT USAGE ON SEQUENCE voxline_bench_baseline_id_seq TO voxline_app";
    let started;
    match db {
        Db::Postgres(pg) => {
            // The service's role may not create tables: the baseline table is the owner's,
            // lent to the service's role for the inserts.
            let mut owner = pg.owner_options.connect().await?;
            sqlx::query(PG_TABLE).execute(&mut owner).await?;
            sqlx::raw_sql(GRANT).execute(&mut owner).await?;
            started = Instant::now();
            for _ in 0..n {
                sqlx::query(INSERT).execute(&pg.pool).await?;
            }
        }
        Db::Sqlite(lite) => {
            sqlx::query(SQLITE_TABLE).execute(&lite.pool).await?;
            started = Instant::now();
            for _ in 0..n {
                sqlx::query(INSERT).execute(&lite.pool).await?;
            }
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    match db {
        Db::Postgres(pg) => {
            let mut owner = pg.owner_options.connect().await?;
            sqlx::query(DROP).execute(&mut owner).await.map(drop)?
        }
        Db::Sqlite(lite) => sqlx::query(DROP).execute(&lite.pool).await.map(drop)?,
    }
    Ok(rate)
}

fn noop_jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob::new(BENCH, diag::NOOP, serde_json::json!({})))
        .collect()
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) async fn wait_drained(db: &Db, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if !db.jobs().has_unfinished(BENCH).await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("jobs still unfinished after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The benchmark's workers: in this process for one, child `voxline worker` processes for more.
pub(crate) enum Workers {
    InProcess(RunnerHandle),
    Children(Vec<tokio::process::Child>),
}

impl Workers {
    /// Starts `processes` workers of the bench queue; child processes also get `env` (the
    /// in-process runner reads the same settings from `settings`).
    pub(crate) async fn start(
        db: &Db,
        settings: &Arc<Settings>,
        processes: usize,
        concurrency: usize,
        prefetch: usize,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        if processes == 1 {
            let handlers =
                voxline_workers::handlers(db, settings).map_err(|e| anyhow::anyhow!(e))?;
            let runner =
                Runner::new(db.clone(), settings.clone(), handlers).queues(vec![BENCH.to_string()]);
            return Ok(Workers::InProcess(runner.start()));
        }
        let exe = std::env::current_exe().context("locating the voxline binary")?;
        let mut children = Vec::with_capacity(processes);
        for _ in 0..processes {
            let child = tokio::process::Command::new(&exe)
                .args(["worker", "--queues", BENCH, "--no-scheduler"])
                .env(
                    "VOXLINE_QUEUES__BENCH__CONCURRENCY",
                    concurrency.to_string(),
                )
                .env("VOXLINE_QUEUES__BENCH__PREFETCH", prefetch.to_string())
                .envs(env.iter().cloned())
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            children.push(child);
        }
        Ok(Workers::Children(children))
    }

    pub(crate) async fn stop(self) {
        match self {
            Workers::InProcess(handle) => handle.shutdown().await,
            Workers::Children(children) => {
                for mut child in children {
                    if let Some(pid) = child.id() {
                        let _ = tokio::process::Command::new("kill")
                            .args(["-TERM", &pid.to_string()])
                            .status()
                            .await;
                    }
                    let _ = child.wait().await;
                }
            }
        }
    }
}
