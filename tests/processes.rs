//! Real `voxline worker` processes on one database: a crash (`kill -9`) mid-job is rescued,
//! several processes never run a job twice or lose one, SIGTERM drains gracefully.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use support::{Backend, TestDb, signal};
use voxline_domain::Db;
use voxline_jobs::DbJobs;
use voxline_jobs::{JobState, NewJob, store};
use voxline_workers::diag;

const LONG: Duration = Duration::from_secs(30);

/// Engine settings for worker processes, as environment variables.
const FAST_ENV: &[(&str, &str)] = &[
    ("VOXLINE_ENGINE__POLL_INTERVAL_MS", "200"),
    ("VOXLINE_ENGINE__HEARTBEAT_INTERVAL_MS", "300"),
    ("VOXLINE_ENGINE__RESCUE_AFTER_MS", "2000"),
    ("VOXLINE_ENGINE__MAINTENANCE_INTERVAL_MS", "200"),
    ("VOXLINE_ENGINE__SHUTDOWN_GRACE_MS", "5000"),
    ("VOXLINE_QUEUE_DEFAULTS__CONCURRENCY", "10"),
    ("VOXLINE_QUEUE_DEFAULTS__PREFETCH", "40"),
];

async fn running_holders(db: &Db) -> HashSet<String> {
    let jobs = db
        .jobs()
        .list(&store::JobFilter {
            state: Some(JobState::Running),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list running");
    jobs.into_iter().filter_map(|j| j.locked_by).collect()
}

on_both_databases!(a_killed_worker_s_jobs_are_rescued_and_completed);
async fn a_killed_worker_s_jobs_are_rescued_and_completed(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let client = t.client();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            client
                .enqueue_now(&NewJob::new("work", diag::SLEEP, json!({ "ms": 1500 })))
                .await
                .unwrap()
                .id,
        );
    }
    let mut doomed = t.spawn_voxline(&["worker", "--queues", "work"], FAST_ENV);
    for id in &ids {
        t.wait_state(*id, JobState::Running, LONG).await;
    }
    let holder = t.job(ids[0]).await.locked_by.expect("held");

    signal(&doomed, "-KILL").await;
    let status = doomed.wait().await.unwrap();
    assert!(!status.success(), "kill -9 must not look like a clean exit");

    let mut survivor = t.spawn_voxline(&["worker", "--queues", "work"], FAST_ENV);
    for id in &ids {
        let job = t.wait_state(*id, JobState::Done, LONG).await;
        assert_eq!(job.attempt, 2, "the killed attempt counts");
        assert_eq!(
            job.errors[0].error,
            format!("worker stopped heart-beating ({holder})"),
            "the rescue is recorded with the lost worker's name"
        );
    }
    signal(&survivor, "-TERM").await;
    assert!(survivor.wait().await.unwrap().success());
}

on_both_databases!(two_worker_processes_neither_double_run_nor_lose_jobs);
async fn two_worker_processes_neither_double_run_nor_lose_jobs(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    const JOBS: usize = 3000;
    let jobs = (0..JOBS)
        .map(|_| NewJob::new("work", diag::SLEEP, json!({ "ms": 1 })))
        .collect();
    let mut workers = vec![
        t.spawn_voxline(&["worker", "--queues", "work"], FAST_ENV),
        t.spawn_voxline(&["worker", "--queues", "work"], FAST_ENV),
    ];
    t.client().enqueue_many(jobs).await.unwrap();

    let mut holders = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while t.db.jobs().unfinished("work").await.unwrap() > 0 {
        holders.extend(running_holders(&t.db).await);
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs still unfinished after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in &workers {
        signal(w, "-TERM").await;
    }
    for w in &mut workers {
        assert!(w.wait().await.unwrap().success());
    }

    assert_eq!(
        holders.len(),
        2,
        "both processes should have worked: {holders:?}"
    );
    assert_eq!(t.count(JobState::Done).await, JOBS as i64, "no job lost");
    let all =
        t.db.jobs()
            .list(&store::JobFilter {
                limit: 5000,
                ..Default::default()
            })
            .await
            .unwrap();
    assert_eq!(all.len(), JOBS);
    let claimed_twice: Vec<_> = all
        .iter()
        .filter(|j| j.attempt != 1)
        .map(|j| (j.id, j.attempt))
        .collect();
    assert!(
        claimed_twice.is_empty(),
        "jobs claimed more than once: {claimed_twice:?}"
    );
}

on_both_databases!(sigterm_lets_the_running_job_finish_then_exits_cleanly);
async fn sigterm_lets_the_running_job_finish_then_exits_cleanly(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let id = t
        .enqueue(NewJob::new("work", diag::SLEEP, json!({ "ms": 1500 })))
        .await;
    let mut worker = t.spawn_voxline(&["worker", "--queues", "work"], FAST_ENV);
    t.wait_state(id, JobState::Running, LONG).await;
    signal(&worker, "-TERM").await;
    let status = tokio::time::timeout(LONG, worker.wait())
        .await
        .expect("exits within the grace")
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0");
    let job = t.job(id).await;
    assert_eq!(
        job.state,
        JobState::Done,
        "the running job finished before exit"
    );
    assert_eq!(job.attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_serves_its_own_job_metrics() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let addr = format!("127.0.0.1:{}", support::free_port());
    let mut env = FAST_ENV.to_vec();
    env.push(("VOXLINE_METRICS__WORKER_ADDR", &addr));
    let mut worker = t.spawn_voxline(&["worker", "--queues", "work"], &env);
    let ids = [
        t.enqueue(NewJob::new("work", diag::NOOP, json!({}))).await,
        t.enqueue(NewJob::new("work", diag::NOOP, json!({}))).await,
    ];
    for id in ids {
        t.wait_state(id, JobState::Done, LONG).await;
    }
    let text = support::api::text_of(&format!("http://{addr}/metrics")).await;
    assert!(
        text.lines()
            .any(|l| l == "voxline_job_attempts_total{queue=\"work\",outcome=\"done\"} 2"),
        "{text}"
    );
    signal(&worker, "-TERM").await;
    assert!(worker.wait().await.unwrap().success());
}

on_both_databases!(two_scheduler_processes_enqueue_each_cron_tick_once);
async fn two_scheduler_processes_enqueue_each_cron_tick_once(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let mut env = FAST_ENV.to_vec();
    env.extend([
        ("VOXLINE_CRON__EVERY_SECOND__SCHEDULE", "* * * * * *"),
        ("VOXLINE_CRON__EVERY_SECOND__QUEUE", "ticks"),
        ("VOXLINE_CRON__EVERY_SECOND__KIND", "diag.noop"),
    ]);
    // Both run the scheduler; neither works the `ticks` queue, so every tick's job stays put.
    let mut schedulers = vec![
        t.spawn_voxline(&["worker", "--queues", "work"], &env),
        t.spawn_voxline(&["worker", "--queues", "work"], &env),
    ];
    tokio::time::sleep(Duration::from_millis(4500)).await;
    for s in &schedulers {
        signal(s, "-TERM").await;
    }
    for s in &mut schedulers {
        assert!(s.wait().await.unwrap().success());
    }
    let filter = store::JobFilter {
        queue: Some("ticks".into()),
        limit: 100,
        ..Default::default()
    };
    let jobs = t.db.jobs().list(&filter).await.unwrap();
    let mut ticks: Vec<i64> = jobs
        .iter()
        .map(|j| j.payload["tick"].as_i64().unwrap())
        .collect();
    assert!(ticks.len() >= 2, "expected a job per tick, got {ticks:?}");
    let total = ticks.len();
    ticks.sort_unstable();
    ticks.dedup();
    assert_eq!(ticks.len(), total, "a tick was enqueued by both processes");
    assert!(
        ticks.windows(2).all(|w| w[1] - w[0] == 1),
        "a tick was missed: {ticks:?}"
    );
}
