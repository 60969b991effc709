//! Tenant-fair claiming: a company that arrives behind another's backlog is claimed in turn,
//! not after the backlog (round-robin), and a per-company limit holds across worker
//! processes, without a job lost or run twice.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use support::{Backend, TestDb, start_workers};
use voxline_jobs::{DbJobs, Job, JobId, JobState, NewJob};
use voxline_workers::diag;

const LONG: Duration = Duration::from_secs(60);

fn sleeping(company: &str, ms: u64, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| {
            NewJob::new(
                "work",
                diag::SLEEP,
                json!({ "ms": ms, "company_id": company }),
            )
        })
        .collect()
}

async fn enqueue(t: &TestDb, jobs: Vec<NewJob>) -> Vec<JobId> {
    let client = t.client();
    let mut ids = Vec::with_capacity(jobs.len());
    for job in jobs {
        ids.push(client.enqueue_now(&job).await.expect("enqueue").id);
    }
    ids
}

async fn finished(t: &TestDb, ids: &[JobId]) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.push(t.wait_state(*id, JobState::Done, LONG).await);
    }
    jobs
}

fn started(job: &Job) -> DateTime<Utc> {
    job.attempted_at.expect("a done job has started")
}

/// The most of `jobs` that were running at one instant, from their claim and finish times.
fn most_at_once(jobs: &[Job]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for job in jobs {
        edges.push((started(job), 1));
        edges.push((job.finished_at.expect("a done job has finished"), -1));
    }
    // A finish and a start at the same instant do not overlap: the finish counts first.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

on_both_databases!(a_late_company_is_claimed_in_turn_not_after_the_backlog);
async fn a_late_company_is_claimed_in_turn_not_after_the_backlog(backend: Backend) {
    let Some(t) = TestDb::new(
        backend,
        &["[queues.work]\nconcurrency = 2\nround_robin = true"],
    )
    .await
    else {
        return;
    };
    // Everything waits before any worker runs: without fairness B's jobs, the newest, would
    // start after all twenty of A's.
    let a = enqueue(&t, sleeping("company-a", 20, 20)).await;
    let b = enqueue(&t, sleeping("company-b", 20, 3)).await;
    let workers = start_workers(&t, &["work"]);
    let a_jobs = finished(&t, &a).await;
    let b_jobs = finished(&t, &b).await;
    workers.shutdown().await;

    let mut a_starts: Vec<_> = a_jobs.iter().map(started).collect();
    a_starts.sort();
    let last_b = b_jobs.iter().map(started).max().expect("three jobs");
    let a_before_last_b = a_starts.iter().filter(|s| **s < last_b).count();
    assert!(
        a_before_last_b <= 6,
        "B's three jobs wait their turns, not A's backlog: {a_before_last_b} of A's started first"
    );
    assert!(
        a_jobs.iter().chain(&b_jobs).all(|j| j.attempt == 1),
        "each job ran once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_company_limit_holds_across_worker_processes() {
    let Some(t) = TestDb::new(Backend::Postgres, &[]).await else {
        return;
    };
    let env = [
        ("VOXLINE_ENGINE__POLL_INTERVAL_MS", "100"),
        ("VOXLINE_QUEUES__WORK__CONCURRENCY", "3"),
        ("VOXLINE_QUEUES__WORK__PER_COMPANY_CONCURRENCY", "2"),
    ];
    let a = enqueue(&t, sleeping("company-a", 150, 12)).await;
    let b = enqueue(&t, sleeping("company-b", 150, 4)).await;
    let mut workers = vec![
        t.spawn_voxline(&["worker", "--queues", "work"], &env),
        t.spawn_voxline(&["worker", "--queues", "work"], &env),
    ];
    let a_jobs = finished(&t, &a).await;
    let b_jobs = finished(&t, &b).await;
    for worker in &workers {
        support::signal(worker, "-TERM").await;
    }
    for worker in &mut workers {
        assert!(worker.wait().await.expect("worker exits").success());
    }

    // Six slots in all, two per company: neither company ever had more than two running.
    assert_eq!(most_at_once(&a_jobs), 2, "A used its two, never more");
    assert!(most_at_once(&b_jobs) <= 2, "B never had more than two");
    let a_last = a_jobs.iter().map(started).max().expect("jobs");
    let b_last = b_jobs.iter().map(started).max().expect("jobs");
    assert!(b_last < a_last, "B ran beside A's backlog, not after it");
    assert!(
        a_jobs.iter().chain(&b_jobs).all(|j| j.attempt == 1),
        "each job ran once"
    );
    let stats = t.db.jobs().stats().await.expect("stats");
    let done: i64 = stats
        .iter()
        .filter(|s| s.queue == "work")
        .map(|s| s.counts.get(&JobState::Done).copied().unwrap_or(0))
        .sum();
    assert_eq!(done, 16, "no job lost or added");
}
