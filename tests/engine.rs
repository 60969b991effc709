//! The job engine's guarantees, each proven on SQLite and on Postgres with in-process workers.
//! (Separate processes — crash rescue, several workers on one database — are in
//! `tests/processes.rs`.)

mod support;
#[path = "support/either_tx.rs"]
#[macro_use]
mod either_tx;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Backend, TestDb, eventually};
use voxline_domain::db::Scope;
use voxline_jobs::DbJobs;
use voxline_jobs::store::{self, JobFilter};
use voxline_jobs::{ClaimedJob, HandlerError, Handlers, JobError, JobState, NewJob, Runner};
use voxline_workers::diag;

const LONG: Duration = Duration::from_secs(20);

/// Fast engine settings for tests: short backoff, quick maintenance.
const FAST: &str = r#"
[engine]
poll_interval_ms = 200
heartbeat_interval_ms = 200
rescue_after_ms = 1000
maintenance_interval_ms = 100
shutdown_grace_ms = 2000
[queue_defaults]
concurrency = 4
backoff_base_ms = 200
backoff_cap_ms = 1000
backoff_jitter = 0.1
max_attempts = 5
[queues.test]
concurrency = 4
"#;

fn diag_handlers() -> Handlers {
    diag::register(Handlers::new())
}

fn runner(t: &TestDb, handlers: Handlers) -> Runner {
    Runner::new(t.db.clone(), t.settings.clone(), handlers).queues(vec!["test".into()])
}

fn job(kind: &str, payload: serde_json::Value) -> NewJob {
    NewJob::new("test", kind, payload)
}

on_both_databases!(a_job_runs_once_and_is_done);
async fn a_job_runs_once_and_is_done(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let enqueued = t
        .client()
        .enqueue_now(&job(diag::NOOP, json!({})))
        .await
        .unwrap();
    assert!(enqueued.inserted);
    assert_eq!(t.job(enqueued.id).await.state, JobState::Available);

    let workers = runner(&t, diag_handlers()).start();
    let done = t.wait_state(enqueued.id, JobState::Done, LONG).await;
    workers.shutdown().await;

    assert_eq!(done.attempt, 1);
    assert!(done.errors.is_empty());
    assert!(done.finished_at.is_some() && done.locked_by.is_none());
}

on_both_databases!(a_scheduled_job_waits_for_its_time);
async fn a_scheduled_job_waits_for_its_time(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let id = t.enqueue(job(diag::NOOP, json!({})).run_at(at)).await;
    assert_eq!(t.job(id).await.state, JobState::Scheduled);

    let workers = runner(&t, diag_handlers()).start();
    let done = t.wait_state(id, JobState::Done, LONG).await;
    workers.shutdown().await;
    let started = done.attempted_at.expect("started");
    assert!(started >= at, "started {started} before its run_at {at}");
}

on_both_databases!(a_failed_attempt_stores_its_backoff_and_frees_the_slot);
async fn a_failed_attempt_stores_its_backoff_and_frees_the_slot(backend: Backend) {
    let overrides = "[queues.slow]\nconcurrency = 1\nbackoff_base_ms = 1500\nbackoff_cap_ms = 1500\nbackoff_jitter = 0.1\n";
    let Some(t) = TestDb::new(backend, &[FAST, overrides]).await else {
        return;
    };
    let client = t.client();
    let failing = client
        .enqueue_now(&NewJob::new(
            "slow",
            diag::FAIL,
            json!({ "until_attempt": 2 }),
        ))
        .await
        .unwrap()
        .id;
    let workers = Runner::new(t.db.clone(), t.settings.clone(), diag_handlers())
        .queues(vec!["slow".into()])
        .start();

    let retrying = t.wait_state(failing, JobState::Retrying, LONG).await;
    let failed_at = retrying.errors[0].at;
    let wait = (retrying.run_at - failed_at).num_milliseconds();
    assert!(
        (1350..=1650).contains(&wait),
        "run_at should be 1.5 s ± 10% after the failure, was {wait} ms"
    );
    assert_eq!(
        retrying.last_error.as_deref(),
        Some("diag.fail: attempt 1 failed on purpose")
    );

    // The only slot is free while the failed job waits: another job runs meanwhile.
    let other = client
        .enqueue_now(&NewJob::new("slow", diag::NOOP, json!({})))
        .await
        .unwrap()
        .id;
    let other = t.wait_state(other, JobState::Done, LONG).await;
    assert!(
        other.finished_at.expect("finished") < retrying.run_at,
        "the slot was held during backoff"
    );

    let done = t.wait_state(failing, JobState::Done, LONG).await;
    workers.shutdown().await;
    assert_eq!(done.attempt, 2);
    assert!(
        done.attempted_at.expect("attempted") >= retrying.run_at,
        "retried before its backoff ended"
    );
}

on_both_databases!(a_stored_backoff_survives_a_restart);
async fn a_stored_backoff_survives_a_restart(backend: Backend) {
    let overrides = "[queues.test]\nbackoff_base_ms = 1000\nbackoff_cap_ms = 1000\n";
    let Some(t) = TestDb::new(backend, &[FAST, overrides]).await else {
        return;
    };
    let id = t
        .enqueue(job(diag::FAIL, json!({ "until_attempt": 2 })))
        .await;

    let first = runner(&t, diag_handlers()).start();
    let retrying = t.wait_state(id, JobState::Retrying, LONG).await;
    first.shutdown().await;
    assert_eq!(
        t.job(id).await.run_at,
        retrying.run_at,
        "shutdown must not touch a waiting retry"
    );

    let second = runner(&t, diag_handlers()).start();
    let done = t.wait_state(id, JobState::Done, LONG).await;
    second.shutdown().await;
    assert_eq!(done.attempt, 2);
    assert!(done.attempted_at.expect("attempted") >= retrying.run_at);
}

on_both_databases!(a_permanent_error_goes_straight_to_dead);
async fn a_permanent_error_goes_straight_to_dead(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let id = t
        .enqueue(job(diag::FAIL, json!({ "permanent": true })))
        .await;
    let workers = runner(&t, diag_handlers()).start();
    let dead = t.wait_state(id, JobState::Dead, LONG).await;
    workers.shutdown().await;
    assert_eq!(dead.attempt, 1, "a permanent error is not retried");
    assert_eq!(dead.errors.len(), 1);
    assert!(dead.finished_at.is_some());
}

on_both_databases!(an_unknown_kind_and_a_bad_payload_are_dead_with_a_reason);
async fn an_unknown_kind_and_a_bad_payload_are_dead_with_a_reason(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let unknown = t.enqueue(job("no.such.kind", json!({}))).await;
    let bad = t.enqueue(job(diag::SLEEP, json!({ "ms": "soon" }))).await;
    let workers = runner(&t, diag_handlers()).start();
    let unknown = t.wait_state(unknown, JobState::Dead, LONG).await;
    let bad = t.wait_state(bad, JobState::Dead, LONG).await;
    workers.shutdown().await;
    assert!(
        unknown
            .last_error
            .unwrap()
            .contains("no handler for job kind \"no.such.kind\"")
    );
    assert!(
        bad.last_error
            .unwrap()
            .starts_with("bad diag.sleep payload")
    );
}

on_both_databases!(exhausted_attempts_become_dead_letters_with_every_error);
async fn exhausted_attempts_become_dead_letters_with_every_error(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let id = t.enqueue(job(diag::FAIL, json!({})).max_attempts(3)).await;
    let workers = runner(&t, diag_handlers()).start();
    let dead = t.wait_state(id, JobState::Dead, LONG).await;
    workers.shutdown().await;

    assert_eq!(dead.attempt, 3);
    let attempts: Vec<u32> = dead.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "every attempt's error is kept");
    assert!(dead.errors.windows(2).all(|w| w[0].at < w[1].at));
    assert_eq!(
        dead.last_error.as_deref(),
        Some("diag.fail: attempt 3 failed on purpose")
    );

    // Dead letters are kept by default (dead_hours = 0), however old.
    t.execute(
        "UPDATE jobs SET finished_at = now() - interval '1000 hours'",
        "UPDATE jobs SET finished_at = finished_at - 3600000000000",
    )
    .await;
    assert_eq!(
        t.db.jobs()
            .prune(&t.settings.retention, 10_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(t.job(id).await.state, JobState::Dead);
}

on_both_databases!(an_operator_retries_and_discards_dead_jobs);
async fn an_operator_retries_and_discards_dead_jobs(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let client = t.client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            client
                .enqueue_now(&job(diag::FAIL, json!({ "permanent": true })))
                .await
                .unwrap()
                .id,
        );
    }
    let workers = runner(&t, diag_handlers()).start();
    for id in &ids {
        t.wait_state(*id, JobState::Dead, LONG).await;
    }
    workers.shutdown().await;

    let retried = store::retry(t.db.jobs().as_ref(), ids[0]).await.unwrap();
    assert_eq!(retried.state, JobState::Available);
    assert_eq!(retried.attempt, 0, "an operator retry resets the attempts");
    assert!(retried.errors.len() == 1, "the history of errors is kept");

    let discarded = store::discard(t.db.jobs().as_ref(), ids[1]).await.unwrap();
    assert_eq!(discarded.state, JobState::Cancelled);

    match store::retry(t.db.jobs().as_ref(), ids[1]).await {
        Err(JobError::WrongState {
            state: JobState::Cancelled,
            ..
        }) => {}
        other => panic!("retrying a cancelled job must be refused, got {other:?}"),
    }
    match store::retry(t.db.jobs().as_ref(), voxline_jobs::JobId(987_654)).await {
        Err(JobError::NotFound(_)) => {}
        other => panic!("retrying a missing job must say so, got {other:?}"),
    }

    // Bulk: every dead job of the queue.
    let bulk = store::retry_all(t.db.jobs().as_ref(), "test", JobState::Dead)
        .await
        .unwrap();
    assert_eq!(bulk, vec![ids[2]]);
    assert_eq!(t.count(JobState::Dead).await, 0);
    assert_eq!(t.count(JobState::Available).await, 2);
}

on_both_databases!(retention_deletes_old_done_jobs_only);
async fn retention_deletes_old_done_jobs_only(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST, "[retention]\ndone_hours = 24\n"]).await else {
        return;
    };
    let client = t.client();
    let old = client
        .enqueue_now(&job(diag::NOOP, json!({})))
        .await
        .unwrap()
        .id;
    let workers = runner(&t, diag_handlers()).start();
    t.wait_state(old, JobState::Done, LONG).await;
    workers.shutdown().await;
    t.execute(
        "UPDATE jobs SET finished_at = now() - interval '25 hours'",
        "UPDATE jobs SET finished_at = finished_at - 90000000000",
    )
    .await;
    let fresh = client
        .enqueue_now(&job(diag::NOOP, json!({})))
        .await
        .unwrap()
        .id;
    let workers = runner(&t, diag_handlers()).start();
    t.wait_state(fresh, JobState::Done, LONG).await;
    workers.shutdown().await;

    assert_eq!(
        t.db.jobs()
            .prune(&t.settings.retention, 10_000)
            .await
            .unwrap(),
        1
    );
    assert!(t.db.jobs().get(old).await.unwrap().is_none());
    assert!(t.db.jobs().get(fresh).await.unwrap().is_some());
    if let Some(owner) = &t.owner {
        // Postgres keeps each job's company and words in job_search: they go with the job.
        let words: Vec<i64> = sqlx::query_scalar("SELECT job_id FROM job_search ORDER BY job_id")
            .fetch_all(owner)
            .await
            .unwrap();
        assert_eq!(
            words,
            vec![fresh.0],
            "the pruned job's words are gone, the kept one's stay"
        );
    }
}

on_both_databases!(enqueue_commits_and_rolls_back_with_the_callers_transaction);
async fn enqueue_commits_and_rolls_back_with_the_callers_transaction(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let client = t.client();
    t.execute(
        "CREATE TABLE business_rows (name TEXT NOT NULL)",
        "CREATE TABLE business_rows (name TEXT NOT NULL)",
    )
    .await;

    // A business row and its job, in one transaction that rolls back: neither exists. (Platform
    // scope: neither the test's table nor the jobs table belongs to a company.)
    let mut tx = t.db.begin(Scope::Platform).await.unwrap();
    insert_business_row(&mut tx, "rolled back").await;
    let rolled_back = client
        .enqueue(&mut tx, &job(diag::NOOP, json!({})))
        .await
        .unwrap()
        .id;
    tx.rollback().await.unwrap();
    assert!(t.db.jobs().get(rolled_back).await.unwrap().is_none());
    assert_eq!(business_rows(&t).await, Vec::<String>::new());

    // The same that commits: both exist, and the job was invisible until the commit.
    let mut tx = t.db.begin(Scope::Platform).await.unwrap();
    insert_business_row(&mut tx, "committed").await;
    let committed = client
        .enqueue(&mut tx, &job(diag::NOOP, json!({})))
        .await
        .unwrap()
        .id;
    if backend == Backend::Postgres {
        let claimed = t.db.jobs().claim("test", "someone", 10).await.unwrap();
        assert!(claimed.is_empty(), "an uncommitted job was claimed");
    }
    tx.commit().await.unwrap();
    assert_eq!(t.job(committed).await.state, JobState::Available);
    assert_eq!(business_rows(&t).await, vec!["committed".to_string()]);
}

async fn insert_business_row(tx: &mut voxline_domain::Tx<'_>, name: &str) {
    on_tx_connection!(tx, |conn| {
        sqlx::query("INSERT INTO business_rows (name) VALUES ($1)")
            .bind(name)
            .execute(conn)
            .await
            .unwrap();
    });
}

async fn business_rows(t: &TestDb) -> Vec<String> {
    match &t.db {
        voxline_domain::Db::Postgres(pg) => sqlx::query_scalar("SELECT name FROM business_rows")
            .fetch_all(&pg.pool)
            .await
            .unwrap(),
        voxline_domain::Db::Sqlite(lite) => sqlx::query_scalar("SELECT name FROM business_rows")
            .fetch_all(&lite.pool)
            .await
            .unwrap(),
    }
}

on_both_databases!(a_unique_key_makes_the_second_enqueue_a_no_op);
async fn a_unique_key_makes_the_second_enqueue_a_no_op(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let client = t.client();
    let first = client
        .enqueue_now(&job(diag::NOOP, json!({ "n": 1 })).unique_key("session:42"))
        .await
        .unwrap();
    let second = client
        .enqueue_now(&job(diag::NOOP, json!({ "n": 2 })).unique_key("session:42"))
        .await
        .unwrap();
    assert!(first.inserted);
    assert!(!second.inserted);
    assert_eq!(
        first.id, second.id,
        "the second enqueue returns the existing job"
    );
    assert_eq!(t.job(first.id).await.payload, json!({ "n": 1 }));
    let bulk = client
        .enqueue_many(vec![
            job(diag::NOOP, json!({})).unique_key("session:42"),
            job(diag::NOOP, json!({})),
        ])
        .await
        .unwrap();
    assert_eq!(bulk, 1, "bulk enqueue skips existing keys too");
    assert_eq!(t.count(JobState::Available).await, 2);
}

on_both_databases!(an_idle_worker_is_woken_without_polling);
async fn an_idle_worker_is_woken_without_polling(backend: Backend) {
    // Polling every 60 s: only a wake-up (NOTIFY, or the in-process commit signal) can start
    // this job within the test's limit.
    let Some(t) = TestDb::new(backend, &[FAST, "[engine]\npoll_interval_ms = 60000\n"]).await
    else {
        return;
    };
    let workers = runner(&t, diag_handlers()).start();
    tokio::time::sleep(Duration::from_millis(500)).await; // idle, listening
    for _ in 0..3 {
        let id = t.enqueue(job(diag::NOOP, json!({}))).await;
        t.wait_state(id, JobState::Done, Duration::from_secs(10))
            .await;
    }
    workers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_does_not_strand_jobs_on_postgres() {
    let Some(t) = TestDb::new(
        Backend::Postgres,
        &[FAST, "[engine]\npoll_interval_ms = 60000\n"],
    )
    .await
    else {
        return;
    };
    let voxline_domain::Db::Postgres(pg) = &t.db else {
        unreachable!()
    };
    let workers = runner(&t, diag_handlers()).start();
    let listen = format!("LISTEN \"{}\"", pg.notify_channel);
    eventually("the worker is listening", LONG, || {
        let pool = pg.pool.clone();
        let listen = listen.clone();
        async move {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE query = $1")
                    .bind(listen)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            n > 0
        }
    })
    .await;
    // Cut the LISTEN connection, and enqueue while it is down: that NOTIFY is lost.
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1")
        .bind(&listen)
        .execute(&pg.pool)
        .await
        .unwrap();
    let id = t.enqueue(job(diag::NOOP, json!({}))).await;
    // Reconnecting wakes every queue, so the job runs long before the 60 s poll.
    t.wait_state(id, JobState::Done, Duration::from_secs(15))
        .await;
    workers.shutdown().await;
}

on_both_databases!(higher_priority_runs_first);
async fn higher_priority_runs_first(backend: Backend) {
    let overrides = "[queues.test]\nconcurrency = 1\nprefetch = 0\n";
    let Some(t) = TestDb::new(backend, &[FAST, overrides]).await else {
        return;
    };
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let handlers = Handlers::new().register("record", move |job: ClaimedJob| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .push(job.payload["n"].as_i64().unwrap());
            Ok(())
        }
    });
    let jobs = vec![
        job("record", json!({ "n": 1 })).priority(0),
        job("record", json!({ "n": 2 })).priority(5),
        job("record", json!({ "n": 3 })).priority(-1),
        job("record", json!({ "n": 4 })).priority(5),
    ];
    t.client().enqueue_many(jobs).await.unwrap();
    let workers = runner(&t, handlers).start();
    eventually("all four ran", LONG, || async {
        order.lock().unwrap().len() == 4
    })
    .await;
    workers.shutdown().await;
    assert_eq!(*order.lock().unwrap(), vec![2, 4, 1, 3]);
}

on_both_databases!(a_queue_never_runs_more_than_its_concurrency);
async fn a_queue_never_runs_more_than_its_concurrency(backend: Backend) {
    let overrides = "[queues.test]\nconcurrency = 3\nprefetch = 5\n";
    let Some(t) = TestDb::new(backend, &[FAST, overrides]).await else {
        return;
    };
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let handlers = Handlers::new().register("busy", move |_job: ClaimedJob| {
        let (r, p) = (r.clone(), p.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    });
    t.client()
        .enqueue_many((0..24).map(|_| job("busy", json!({}))).collect())
        .await
        .unwrap();
    let workers = runner(&t, handlers).start();
    eventually("all done", LONG, || async {
        t.count(JobState::Done).await == 24
    })
    .await;
    workers.shutdown().await;
    assert_eq!(peak.load(Ordering::SeqCst), 3, "peak concurrency");
}

on_both_databases!(a_timed_out_attempt_counts_as_failed);
async fn a_timed_out_attempt_counts_as_failed(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let id = t
        .client()
        .enqueue_now(
            &job(diag::SLEEP, json!({ "ms": 10_000 }))
                .timeout(Duration::from_millis(100))
                .max_attempts(2),
        )
        .await
        .unwrap()
        .id;
    let workers = runner(&t, diag_handlers()).start();
    let dead = t.wait_state(id, JobState::Dead, LONG).await;
    workers.shutdown().await;
    assert_eq!(dead.attempt, 2);
    assert!(
        dead.errors
            .iter()
            .all(|e| e.error == "timed out after 100 ms"),
        "{:?}",
        dead.errors
    );
}

on_both_databases!(a_panicking_handler_is_a_failed_attempt_not_a_dead_worker);
async fn a_panicking_handler_is_a_failed_attempt_not_a_dead_worker(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let client = t.client();
    let panics = client
        .enqueue_now(&job(diag::PANIC, json!({})).max_attempts(1))
        .await
        .unwrap()
        .id;
    let workers = runner(&t, diag_handlers()).start();
    let dead = t.wait_state(panics, JobState::Dead, LONG).await;
    assert!(
        dead.last_error
            .unwrap()
            .contains("handler panicked: diag.panic")
    );
    let after = client
        .enqueue_now(&job(diag::NOOP, json!({})))
        .await
        .unwrap()
        .id;
    t.wait_state(after, JobState::Done, LONG).await;
    workers.shutdown().await;
}

on_both_databases!(a_retry_after_hint_sets_the_delay);
async fn a_retry_after_hint_sets_the_delay(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let id = t
        .enqueue(job(
            diag::FAIL,
            json!({ "until_attempt": 2, "retry_after_ms": 700 }),
        ))
        .await;
    let workers = runner(&t, diag_handlers()).start();
    let retrying = t.wait_state(id, JobState::Retrying, LONG).await;
    let wait = (retrying.run_at - retrying.errors[0].at).num_milliseconds();
    // 700 ms asked, but the queue's cap is 1000 ms, base 200 ms: the hint wins below the cap.
    assert!(
        (690..=720).contains(&wait),
        "retry-after delay was {wait} ms"
    );
    t.wait_state(id, JobState::Done, LONG).await;
    workers.shutdown().await;
}

/// A `slow` handler that counts its starts in `started` and then takes `duration`.
fn slow_handlers(started: Arc<AtomicUsize>, duration: Duration) -> Handlers {
    Handlers::new().register("slow", move |_job: ClaimedJob| {
        let started = started.clone();
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(duration).await;
            Ok::<(), HandlerError>(())
        }
    })
}

on_both_databases!(shutdown_finishes_running_jobs_and_returns_prefetched_ones);
async fn shutdown_finishes_running_jobs_and_returns_prefetched_ones(backend: Backend) {
    let overrides = "[queues.test]\nconcurrency = 2\nprefetch = 4\n";
    let Some(t) = TestDb::new(backend, &[FAST, overrides]).await else {
        return;
    };
    let started = Arc::new(AtomicUsize::new(0));
    let handlers = slow_handlers(started.clone(), Duration::from_millis(600));
    t.client()
        .enqueue_many((0..6).map(|_| job("slow", json!({}))).collect())
        .await
        .unwrap();
    let workers = runner(&t, handlers).start();
    eventually("two running, four prefetched", LONG, || async {
        started.load(Ordering::SeqCst) == 2 && workers.inflight() == 6
    })
    .await;
    workers.shutdown().await;

    assert_eq!(
        started.load(Ordering::SeqCst),
        2,
        "prefetched jobs must not start during shutdown"
    );
    assert_eq!(
        t.count(JobState::Done).await,
        2,
        "running jobs finish within the grace period"
    );
    let available =
        t.db.jobs()
            .list(&JobFilter {
                state: Some(JobState::Available),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
    assert_eq!(available.len(), 4);
    assert!(
        available
            .iter()
            .all(|j| j.attempt == 0 && j.locked_by.is_none()),
        "unstarted jobs give their attempt back"
    );
}

on_both_databases!(shutdown_returns_jobs_that_outlive_the_grace_period);
async fn shutdown_returns_jobs_that_outlive_the_grace_period(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST, "[engine]\nshutdown_grace_ms = 200\n"]).await else {
        return;
    };
    let started = Arc::new(AtomicUsize::new(0));
    let handlers = slow_handlers(started.clone(), Duration::from_secs(30));
    let id = t.enqueue(job("slow", json!({}))).await;
    let workers = runner(&t, handlers).start();
    // The handler itself has begun: a claimed job waiting in the prefetch buffer is also
    // `running` in the database, but shutdown rightly gives its attempt back.
    eventually("the handler runs", LONG, || async {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    workers.shutdown().await;
    let job = t.job(id).await;
    assert_eq!(job.state, JobState::Available);
    assert_eq!(job.attempt, 1, "an interrupted attempt counts");
    assert_eq!(
        job.last_error.as_deref(),
        Some("worker shut down before the job finished")
    );
}

on_both_databases!(a_stale_running_job_is_rescued_and_completes);
async fn a_stale_running_job_is_rescued_and_completes(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let id = t.enqueue(job(diag::NOOP, json!({}))).await;
    // A worker that claimed it and vanished without a heartbeat.
    let claimed = t.db.jobs().claim("test", "ghost-worker", 1).await.unwrap();
    assert_eq!(claimed.len(), 1);

    let stop = tokio_util::sync::CancellationToken::new();
    let maintenance = voxline_jobs::maintenance::spawn(
        t.db.clone(),
        &t.settings,
        voxline_workers::dead_hooks(&t.db),
        stop.clone(),
    );
    let workers = runner(&t, diag_handlers()).start();
    let done = t.wait_state(id, JobState::Done, LONG).await;
    workers.shutdown().await;
    stop.cancel();
    maintenance.await.unwrap();

    assert_eq!(done.attempt, 2, "the lost attempt counts");
    assert!(
        done.errors[0]
            .error
            .contains("worker stopped heart-beating (ghost-worker)")
    );
}

on_both_databases!(each_cron_tick_is_enqueued_once_across_schedulers);
async fn each_cron_tick_is_enqueued_once_across_schedulers(backend: Backend) {
    let overrides =
        "[cron.every_second]\nschedule = \"* * * * * *\"\nqueue = \"test\"\nkind = \"diag.noop\"\n";
    let Some(t) = TestDb::new(backend, &[FAST, overrides]).await else {
        return;
    };
    // Three replicas' schedulers over one database.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.extend(voxline_jobs::cron::spawn(t.client(), stop.clone()));
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    let jobs =
        t.db.jobs()
            .list(&JobFilter {
                queue: Some("test".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
    let mut ticks: Vec<i64> = jobs
        .iter()
        .map(|j| j.payload["tick"].as_i64().unwrap())
        .collect();
    assert!(ticks.len() >= 3, "expected a job per tick, got {ticks:?}");
    let total = ticks.len();
    ticks.sort_unstable();
    ticks.dedup();
    assert_eq!(ticks.len(), total, "a tick was enqueued more than once");
    assert!(
        ticks.windows(2).all(|w| w[1] - w[0] == 1),
        "a tick was missed: {ticks:?}"
    );
}

on_both_databases!(a_snoozed_job_waits_without_spending_an_attempt);
async fn a_snoozed_job_waits_without_spending_an_attempt(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let handlers = Handlers::new().register("provider.call", move |_job: ClaimedJob| {
        let seen = seen.clone();
        async move {
            if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                return Err(HandlerError::snooze(
                    "circuit open",
                    Duration::from_millis(300),
                ));
            }
            Ok(())
        }
    });
    let id = t
        .enqueue(job("provider.call", json!({})).max_attempts(1))
        .await;
    let workers = runner(&t, handlers).start();
    let waiting = t.wait_state(id, JobState::Scheduled, LONG).await;
    assert_eq!(waiting.attempt, 0, "a snooze gives the attempt back");
    let done = t.wait_state(id, JobState::Done, LONG).await;
    workers.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        done.attempt, 1,
        "two snoozes and one real attempt, within max_attempts = 1"
    );
    assert!(done.errors.is_empty(), "a snooze is not an error");
}
