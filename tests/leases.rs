//! Leases (fencing tokens), proven on SQLite and on Postgres: every claim of a job is an
//! attempt with a lease of its own, and an attempt whose lease is gone (its job was rescued, and
//! perhaps claimed again, by another process or by the same one) can change nothing: its
//! outcome, heartbeat and release are refused, and the worker that finds its lease gone aborts
//! the handler. Beside them, what leases make possible: an outcome kept until the database takes
//! it, a claimed row that cannot be read ending dead instead of running, the on-dead hook for
//! every way a job dies, and retention keeping up with a backlog.

mod support;
#[path = "support/either_tx.rs"]
#[macro_use]
mod either_tx;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Backend, TestDb, eventually};
use voxline_domain::db::Scope;
use voxline_domain::sessions::{self, NewSession};
use voxline_domain::{Db, Tx};
use voxline_jobs::JobArgs;
use voxline_jobs::maintenance::pruner::{self, Pruned};
use voxline_jobs::payloads::{Analysis, SessionJob, Transcription};
use voxline_jobs::{
    ClaimedJob, Completion, DbJobs, DeadHooks, DeadJob, HandlerError, Handlers, Job, JobId,
    JobState, JobStore, NewJob, OnDead, Outcome, Runner, RunnerHandle, queues,
};

const LONG: Duration = Duration::from_secs(20);

/// How old a heartbeat must be for these tests' rescues: far older than any live worker's.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Quick engine settings: a heartbeat every 100 ms (so a lost lease is noticed at once), short
/// backoff, and a queue time-out no test reaches unless it sets its own.
const FAST: &str = r#"
[engine]
poll_interval_ms = 200
heartbeat_interval_ms = 100
rescue_after_ms = 60000
maintenance_interval_ms = 100
shutdown_grace_ms = 2000
[queue_defaults]
concurrency = 4
timeout_ms = 60000
backoff_base_ms = 50
backoff_cap_ms = 100
backoff_jitter = 0.1
max_attempts = 5
[queues.test]
concurrency = 4
"#;

fn job(kind: &str) -> NewJob {
    NewJob::new("test", kind, json!({}))
}

fn runner(t: &TestDb, handlers: Handlers) -> Runner {
    Runner::new(t.db.clone(), t.settings.clone(), handlers).queues(vec!["test".into()])
}

/// Claims the one due job of `queue` for `worker`.
async fn claim_one(store: &dyn JobStore, queue: &str, worker: &str) -> ClaimedJob {
    let mut claimed = store.claim(queue, worker, 1).await.expect("claim");
    assert_eq!(claimed.len(), 1, "one job to claim on {queue}");
    claimed.remove(0)
}

/// Checks that a claim of `queue` finds no due job.
async fn assert_nothing_to_claim(store: &dyn JobStore, queue: &str) {
    let claimed = store.claim(queue, "worker-a", 10).await.expect("claim");
    assert!(
        claimed.is_empty(),
        "nothing to claim on {queue}: {claimed:?}"
    );
}

/// Writes one outcome; returns what the store says it changed.
async fn complete(
    store: &dyn JobStore,
    job: &ClaimedJob,
    outcome: Outcome,
    hooks: &DeadHooks,
) -> Vec<(JobId, JobState)> {
    store
        .complete(
            &[Completion {
                lease: job.lease(),
                outcome,
            }],
            hooks,
        )
        .await
        .expect("complete")
}

/// Takes running job `id` from whoever holds it, as maintenance does once its worker stopped
/// heart-beating: the heartbeat is set back and rescue runs (again, if a live worker's
/// heartbeat refreshed the row in between). Returns the state rescue moved the job to.
async fn rescue(t: &TestDb, id: JobId, hooks: &DeadHooks) -> JobState {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        t.backdate_heartbeat(id).await;
        let rescued =
            t.db.jobs()
                .rescue(STALE_AFTER, hooks)
                .await
                .expect("rescue");
        if let Some((_, state)) = rescued.iter().find(|(job, _)| *job == id) {
            return *state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} was never rescued: {:#?}",
            t.job(id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An on-dead hook that records which jobs it saw and writes a mark into `dead_marks` in the
/// transaction it is given, so a test can tell whether its writes committed with the job. A
/// job whose payload says `"hook_fails": true` makes it fail after writing its mark, and one
/// with `"hook_sql_fails": true` makes it run a statement the database refuses.
#[derive(Clone, Default)]
struct MarkDead {
    seen: Arc<Mutex<Vec<JobId>>>,
}

impl MarkDead {
    fn seen(&self) -> Vec<JobId> {
        let mut seen = self.seen.lock().unwrap().clone();
        seen.sort();
        seen
    }
}

#[voxline_jobs::async_trait]
impl OnDead for MarkDead {
    async fn on_dead(&self, tx: &mut Tx<'_>, job: &DeadJob) -> Result<(), String> {
        self.seen.lock().unwrap().push(job.id);
        on_tx_connection!(tx, |conn| {
            sqlx::query("INSERT INTO dead_marks (job_id, error) VALUES ($1, $2)")
                .bind(job.id.0)
                .bind(&job.error)
                .execute(conn)
                .await
                .map(drop)
        })
        .map_err(|e| e.to_string())?;
        if job.payload["hook_fails"] == json!(true) {
            return Err("the hook failed on purpose".into());
        }
        if job.payload["hook_sql_fails"] == json!(true) {
            // A statement the database refuses, after the mark: on Postgres it aborts the
            // transaction unless the hook's savepoint is rolled back.
            let refused = on_tx_connection!(tx, |conn| {
                sqlx::query("INSERT INTO no_such_table VALUES (1)")
                    .execute(conn)
                    .await
                    .map(drop)
            });
            return refused.map_err(|e| e.to_string());
        }
        Ok(())
    }
}

/// A deployment with the `dead_marks` table, and a hook that marks there the jobs that die.
async fn marking_the_dead(backend: Backend) -> Option<(TestDb, MarkDead)> {
    let t = TestDb::new(backend, &[FAST]).await?;
    t.execute(
        "CREATE TABLE dead_marks (job_id BIGINT NOT NULL, error TEXT NOT NULL)",
        "CREATE TABLE dead_marks (job_id INTEGER NOT NULL, error TEXT NOT NULL)",
    )
    .await;
    Some((t, MarkDead::default()))
}

/// The committed marks, by job.
async fn dead_marks(t: &TestDb) -> Vec<(i64, String)> {
    let sql = "SELECT job_id, error FROM dead_marks ORDER BY job_id";
    match &t.db {
        Db::Postgres(_) => sqlx::query_as(sql).fetch_all(t.owner()).await,
        Db::Sqlite(lite) => sqlx::query_as(sql).fetch_all(&lite.pool).await,
    }
    .expect("read dead_marks")
}

on_both_databases!(a_stale_outcome_after_a_rescue_changes_nothing);
async fn a_stale_outcome_after_a_rescue_changes_nothing(backend: Backend) {
    let Some((t, marks)) = marking_the_dead(backend).await else {
        return;
    };
    let hooks = DeadHooks::new().register("lease.test", marks.clone());
    let store = t.db.jobs();
    let id = t.enqueue(job("lease.test")).await;

    // Worker A claims it and stops heart-beating; rescue gives it to worker B.
    let first = claim_one(store.as_ref(), "test", "worker-a").await;
    assert_eq!(rescue(&t, id, &hooks).await, JobState::Available);
    let second = claim_one(store.as_ref(), "test", "worker-b").await;
    assert_eq!(second.id, id);
    assert_ne!(second.lease, first.lease, "a new claim is a new lease");

    // Whatever worker A reports now, late, is refused.
    for outcome in [
        Outcome::Done,
        Outcome::Retry {
            error: "late failure".into(),
            delay: Duration::from_millis(10),
        },
        Outcome::Dead {
            error: "late permanent failure".into(),
        },
        Outcome::Snooze {
            delay: Duration::from_millis(10),
        },
    ] {
        let label = format!("{outcome:?}");
        let written = complete(store.as_ref(), &first, outcome, &hooks).await;
        assert!(
            written.is_empty(),
            "a stale {label} was applied: {written:?}"
        );
    }
    let held = t.job(id).await;
    assert_eq!(held.state, JobState::Running, "still worker B's attempt");
    assert_eq!(held.locked_by.as_deref(), Some("worker-b"));
    assert_eq!(held.attempt, 2);
    assert_eq!(held.errors.len(), 1, "only the rescue is on record");
    assert!(
        held.errors[0].error.contains("worker-a"),
        "{:?}",
        held.errors
    );
    assert!(marks.seen().is_empty(), "a refused death runs no hook");

    // In one batch with a stale outcome, the current lease's outcome is the one written.
    let written = store
        .complete(
            &[
                Completion {
                    lease: first.lease(),
                    outcome: Outcome::Dead {
                        error: "late permanent failure".into(),
                    },
                },
                Completion {
                    lease: second.lease(),
                    outcome: Outcome::Done,
                },
            ],
            &hooks,
        )
        .await
        .expect("complete");
    assert_eq!(written, vec![(id, JobState::Done)]);
    let done = t.job(id).await;
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.attempt, 2);
    assert!(done.locked_by.is_none() && done.finished_at.is_some());
    assert_eq!(done.errors.len(), 1);
    assert!(marks.seen().is_empty());
    assert!(dead_marks(&t).await.is_empty());
}

on_both_databases!(a_reclaim_by_the_same_worker_is_a_new_lease_and_the_old_one_is_refused);
async fn a_reclaim_by_the_same_worker_is_a_new_lease_and_the_old_one_is_refused(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let store = t.db.jobs();
    let hooks = DeadHooks::new();
    let id = t.enqueue(job("lease.test")).await;

    // The same worker name claims it twice: the worker's name does not say which attempt.
    let first = claim_one(store.as_ref(), "test", "worker-a").await;
    assert_eq!(rescue(&t, id, &hooks).await, JobState::Available);
    let second = claim_one(store.as_ref(), "test", "worker-a").await;
    assert_eq!(second.id, id);
    assert_ne!(second.lease, first.lease);

    // The heartbeat answers with the leases still held: only the second.
    let held = store
        .heartbeat(&[first.lease(), second.lease()])
        .await
        .expect("heartbeat");
    assert_eq!(held, vec![second.lease()]);
    assert!(
        store
            .heartbeat(&[first.lease()])
            .await
            .expect("heartbeat")
            .is_empty()
    );

    // Releasing or finishing under the old lease changes nothing.
    assert_eq!(
        store
            .release(&[first.lease()], true)
            .await
            .expect("release"),
        0
    );
    assert_eq!(
        store
            .release(&[first.lease()], false)
            .await
            .expect("release"),
        0
    );
    assert!(
        complete(store.as_ref(), &first, Outcome::Done, &hooks)
            .await
            .is_empty()
    );
    let running = t.job(id).await;
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.locked_by.as_deref(), Some("worker-a"));
    assert_eq!(
        running.attempt, 2,
        "a refused release gives no attempt back"
    );
    assert!(
        running
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("heart-beating"),
        "a refused release records nothing: {:?}",
        running.last_error
    );

    // The current lease finishes the job; after that it is gone too.
    assert_eq!(
        complete(store.as_ref(), &second, Outcome::Done, &hooks).await,
        vec![(id, JobState::Done)]
    );
    assert!(
        store
            .heartbeat(&[second.lease()])
            .await
            .expect("heartbeat")
            .is_empty(),
        "a finished job's lease is not held"
    );
    assert_eq!(
        store
            .release(&[second.lease()], true)
            .await
            .expect("release"),
        0
    );
    assert_eq!(t.job(id).await.state, JobState::Done);
}

/// Sets its flag when dropped: the handler's future was dropped (aborted), not left running.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

on_both_databases!(a_worker_that_loses_its_lease_aborts_the_handler);
async fn a_worker_that_loses_its_lease_aborts_the_handler(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let first_started = Arc::new(AtomicBool::new(false));
    let first_dropped = Arc::new(AtomicBool::new(false));
    let first_returned = Arc::new(AtomicBool::new(false));
    let later_attempts = Arc::new(AtomicUsize::new(0));
    let (started, dropped, returned, later) = (
        first_started.clone(),
        first_dropped.clone(),
        first_returned.clone(),
        later_attempts.clone(),
    );
    // The first attempt blocks until its future is dropped; a later one succeeds at once.
    let handlers = Handlers::new().register("lease.hold", move |job: ClaimedJob| {
        let (started, dropped, returned, later) = (
            started.clone(),
            dropped.clone(),
            returned.clone(),
            later.clone(),
        );
        async move {
            if job.attempt > 1 {
                later.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            let _guard = SetOnDrop(dropped);
            started.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
            returned.store(true, Ordering::SeqCst);
            Ok::<(), HandlerError>(())
        }
    });
    let id = t.enqueue(job("lease.hold")).await;
    let workers = runner(&t, handlers).start();
    eventually("the first attempt runs", LONG, || async {
        first_started.load(Ordering::SeqCst)
    })
    .await;

    // The job is rescued out from under the running handler (its worker is alive and
    // heart-beating; maintenance elsewhere thought otherwise).
    assert_eq!(rescue(&t, id, &DeadHooks::new()).await, JobState::Available);
    eventually(
        "the handler whose lease is gone is aborted",
        LONG,
        || async { first_dropped.load(Ordering::SeqCst) },
    )
    .await;

    // The job runs again under a new lease and is done by that attempt alone.
    let done = t.wait_state(id, JobState::Done, LONG).await;
    workers.shutdown().await;
    assert!(
        !first_returned.load(Ordering::SeqCst),
        "the aborted handler ran on past its lease"
    );
    assert_eq!(later_attempts.load(Ordering::SeqCst), 1);
    assert_eq!(done.attempt, 2);
    assert_eq!(done.errors.len(), 1, "{:?}", done.errors);
    assert!(done.errors[0].error.contains("heart-beating"));
}

/// Tests that watch the acknowledger fail count its failures through the process-wide metrics
/// recorder; they take turns so one test's failures are not mistaken for another's.
static OUTAGES: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// `voxline_ack_write_failures_total` of this process so far.
fn ack_write_failures() -> f64 {
    support::metrics_handle()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix("voxline_ack_write_failures_total "))
        .map(|n| n.trim().parse().expect("a counter value"))
        .unwrap_or(0.0)
}

/// A handler that waits for the test to let it finish, counting its runs.
fn finish_when_told(finish: Arc<tokio::sync::Notify>, runs: Arc<AtomicUsize>) -> Handlers {
    Handlers::new().register("lease.finish", move |_job: ClaimedJob| {
        let (finish, runs) = (finish.clone(), runs.clone());
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            finish.notified().await;
            Ok::<(), HandlerError>(())
        }
    })
}

/// The write of a done outcome, on a connection not in `excluding`, waiting for the lock that
/// the test's Postgres backend `holder` holds. Returns every backend waiting for that lock.
async fn ack_waiting_on(t: &TestDb, holder: i32, excluding: &[i32]) -> Vec<i32> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let waiting: Vec<(i32, String)> = sqlx::query_as(
            "SELECT pid, query FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))",
        )
        .bind(holder)
        .fetch_all(t.owner())
        .await
        .expect("pg_stat_activity");
        if waiting.iter().any(|(pid, query)| {
            // The batched done write (a CTE that also counts the minute's outcomes).
            query.contains("UPDATE jobs j SET state = 'done'") && !excluding.contains(pid)
        }) {
            return waiting.into_iter().map(|(pid, _)| pid).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write of the outcome waits on the locked table (besides {excluding:?}): {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the acknowledger has failed to write an outcome more than `failures_before`
/// times.
async fn the_acknowledger_fails_after(failures_before: f64) {
    eventually(
        "the acknowledger fails to write the outcome",
        Duration::from_secs(40),
        || async { ack_write_failures() > failures_before },
    )
    .await;
}

/// A `lease.finish` job whose handler has started and waits for `finish`, on running workers.
struct HeldJob {
    id: JobId,
    finish: Arc<tokio::sync::Notify>,
    runs: Arc<AtomicUsize>,
    workers: RunnerHandle,
}

async fn a_job_running_until_told(t: &TestDb) -> HeldJob {
    let finish = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let id = t.enqueue(job("lease.finish")).await;
    let workers = runner(t, finish_when_told(finish.clone(), runs.clone())).start();
    eventually("the handler runs", LONG, || async {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;
    HeldJob {
        id,
        finish,
        runs,
        workers,
    }
}

impl HeldJob {
    /// Lets the handler return.
    fn finish(&self) {
        self.finish.notify_one();
    }

    /// Stops the workers; `done`, the job as read once done, is done after one run of its
    /// handler, in its first attempt, with no error.
    async fn shut_down_done_after_one_run(self, done: &Job) {
        self.workers.shutdown().await;
        assert_eq!(self.runs.load(Ordering::SeqCst), 1, "the job ran once");
        assert_eq!(done.attempt, 1);
        assert!(done.errors.is_empty(), "{:?}", done.errors);
    }
}

on_both_databases!(an_outcome_the_database_refuses_is_kept_and_written_once_it_accepts);
async fn an_outcome_the_database_refuses_is_kept_and_written_once_it_accepts(backend: Backend) {
    let _turn = OUTAGES.lock().await;
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let held = a_job_running_until_told(&t).await;

    match &t.db {
        Db::Sqlite(lite) => {
            // Another connection holds the write lock past the busy timeout (10 s): the
            // acknowledgement's transaction cannot begin and fails.
            let failures_before = ack_write_failures();
            let lock = lite
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .expect("take the write lock");
            held.finish();
            the_acknowledger_fails_after(failures_before).await;
            lock.rollback().await.expect("release the write lock");
        }
        Db::Postgres(_) => {
            // The jobs table is locked and the connection whose write of the outcome waits on it
            // is cut (with every other one waiting there), so that write fails; the outcome
            // must be kept and written once the lock goes.
            let mut lock = t.owner().begin().await.expect("begin");
            sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *lock)
                .await
                .expect("lock the jobs table");
            let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *lock)
                .await
                .expect("pid");
            held.finish();
            let cut = ack_waiting_on(&t, holder, &[]).await;
            for pid in &cut {
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(t.owner())
                    .await
                    .expect("cut a waiting connection");
            }
            // The acknowledger kept the outcome and tries again, on another connection.
            ack_waiting_on(&t, holder, &cut).await;
            lock.commit().await.expect("unlock the jobs table");
        }
    }

    let done = t.wait_state(held.id, JobState::Done, LONG).await;
    held.shut_down_done_after_one_run(&done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_is_written_after_postgres_restarts() {
    let _turn = OUTAGES.lock().await;
    let Some(cluster) = support::pg_cluster::PgCluster::start().await else {
        return;
    };
    let t = cluster.test_db(&[FAST]).await;
    let held = a_job_running_until_told(&t).await;

    // The server goes down while the handler runs; it finishes while the server is down.
    let failures_before = ack_write_failures();
    cluster.stop().await;
    held.finish();
    the_acknowledger_fails_after(failures_before).await;
    cluster.start_again().await;

    // The test's own pool still holds connections the restart broke: a failed read is retried.
    let store = t.db.jobs();
    let deadline = tokio::time::Instant::now() + LONG;
    let done = loop {
        let read = store.get(held.id).await;
        match read {
            Ok(Some(job)) if job.state == JobState::Done => break job,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!(
                "job {} was not done within {LONG:?} of the restart: {other:?}",
                held.id
            ),
        }
    };
    held.shut_down_done_after_one_run(&done).await;
}

/// Inserts a job row whose payload is not JSON (only SQLite can hold one: Postgres stores jsonb).
async fn insert_unreadable_job(t: &TestDb) -> JobId {
    let Db::Sqlite(lite) = &t.db else {
        unreachable!("SQLite only")
    };
    let now = chrono::Utc::now().timestamp_micros();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (queue, kind, payload, state, max_attempts, run_at, created_at)
         VALUES ('test', 'lease.test', 'this is not JSON', 'available', 5, ?1, ?1)
         RETURNING id",
    )
    .bind(now)
    .fetch_one(&lite.pool)
    .await
    .expect("insert an unreadable row");
    JobId(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_row_that_cannot_be_decoded_ends_dead_with_the_reason_on_sqlite() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[FAST]).await else {
        return;
    };
    let Db::Sqlite(lite) = &t.db else {
        unreachable!()
    };
    let store = t.db.jobs();
    let readable = t.enqueue(job("lease.test")).await;
    let unreadable = insert_unreadable_job(&t).await;

    // The claim hands out the readable job and is not failed by the other.
    let claimed = store
        .claim("test", "worker-a", 10)
        .await
        .expect("an unreadable row does not fail the claim");
    let ids: Vec<JobId> = claimed.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![readable]);

    let (state, last_error, locked_by, heartbeat_at, finished_at, errors): (
        String,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        String,
    ) = sqlx::query_as(
        "SELECT state, last_error, locked_by, heartbeat_at, finished_at, errors
         FROM jobs WHERE id = ?",
    )
    .bind(unreadable.0)
    .fetch_one(&lite.pool)
    .await
    .expect("read the row");
    assert_eq!(state, "dead", "never left running");
    let last_error = last_error.expect("a reason");
    assert!(
        last_error.starts_with("claimed row could not be decoded: job payload:"),
        "{last_error}"
    );
    assert!(locked_by.is_none() && heartbeat_at.is_none() && finished_at.is_some());
    let errors: serde_json::Value = serde_json::from_str(&errors).expect("errors are JSON");
    assert_eq!(errors.as_array().map(Vec::len), Some(1), "{errors}");
    assert_eq!(errors[0]["attempt"], json!(1));
    assert_eq!(errors[0]["error"], json!(last_error));

    // Nothing is left to claim, and the readable job finishes as usual.
    assert_nothing_to_claim(store.as_ref(), "test").await;
    assert_eq!(
        complete(
            store.as_ref(),
            &claimed[0],
            Outcome::Done,
            &DeadHooks::new()
        )
        .await,
        vec![(readable, JobState::Done)]
    );
    assert_eq!(t.count(JobState::Dead).await, 1);
    assert_eq!(t.count(JobState::Running).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_inspect_a_dead_job_whose_row_could_not_be_decoded_on_sqlite() {
    // bury_undecodable moves such a row to dead "so an operator can inspect it there".
    let Some(t) = TestDb::new(Backend::Sqlite, &[FAST]).await else {
        return;
    };
    let store = t.db.jobs();
    let unreadable = insert_unreadable_job(&t).await;
    assert_nothing_to_claim(store.as_ref(), "test").await;

    let job = store
        .get(unreadable)
        .await
        .expect("an operator reads the dead job")
        .expect("it exists");
    assert_eq!(job.state, JobState::Dead);
    let dead = store
        .list(&voxline_jobs::store::JobFilter {
            state: Some(JobState::Dead),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("an operator lists the dead-letter queue");
    assert_eq!(dead.len(), 1);
}

on_both_databases!(the_on_dead_hook_runs_once_with_the_job_for_every_way_it_dies);
async fn the_on_dead_hook_runs_once_with_the_job_for_every_way_it_dies(backend: Backend) {
    let Some((t, marks)) = marking_the_dead(backend).await else {
        return;
    };
    let kinds = [
        "doomed.permanent",
        "doomed.retry",
        "doomed.slow",
        "doomed.ghost",
    ];
    let hooks = kinds.iter().fold(DeadHooks::new(), |hooks, kind| {
        hooks.register(*kind, marks.clone())
    });
    let handlers = Handlers::new()
        .with_dead_hooks(hooks.clone())
        .register("doomed.permanent", |_job: ClaimedJob| async {
            Err::<(), _>(HandlerError::permanent("the recording is empty"))
        })
        .register("doomed.retry", |job: ClaimedJob| async move {
            Err::<(), _>(HandlerError::retry(format!(
                "provider down (attempt {})",
                job.attempt
            )))
        })
        .register("doomed.slow", |_job: ClaimedJob| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<(), HandlerError>(())
        });

    let permanent = t.enqueue(job("doomed.permanent")).await;
    // Permanent failures whose hook refuses (see `MarkDead`).
    let permanent_with = |payload| NewJob::new("test", "doomed.permanent", payload);
    let hook_fails = t
        .enqueue(permanent_with(json!({ "hook_fails": true })))
        .await;
    let hook_sql_fails = t
        .enqueue(permanent_with(json!({ "hook_sql_fails": true })))
        .await;
    let exhausted = t.enqueue(job("doomed.retry").max_attempts(2)).await;
    let timed_out = t
        .enqueue(
            job("doomed.slow")
                .timeout(Duration::from_millis(100))
                .max_attempts(2),
        )
        .await;
    // A job on a queue no worker here runs: a worker that vanished claimed its last attempt.
    let abandoned = t
        .enqueue(NewJob::new("ghost", "doomed.ghost", json!({})).max_attempts(1))
        .await;
    claim_one(t.db.jobs().as_ref(), "ghost", "ghost-worker").await;

    let workers = runner(&t, handlers).start();
    let permanent = t.wait_state(permanent, JobState::Dead, LONG).await;
    let hook_fails = t.wait_state(hook_fails, JobState::Dead, LONG).await;
    let hook_sql_fails = t.wait_state(hook_sql_fails, JobState::Dead, LONG).await;
    let exhausted = t.wait_state(exhausted, JobState::Dead, LONG).await;
    let timed_out = t.wait_state(timed_out, JobState::Dead, LONG).await;
    workers.shutdown().await;
    assert_eq!(rescue(&t, abandoned, &hooks).await, JobState::Dead);
    let abandoned = t.job(abandoned).await;

    assert_eq!(exhausted.attempt, 2);
    assert_eq!(
        exhausted.last_error.as_deref(),
        Some("provider down (attempt 2)")
    );
    assert_eq!(timed_out.attempt, 2);
    assert_eq!(
        timed_out.last_error.as_deref(),
        Some("timed out after 100 ms")
    );
    assert!(
        abandoned
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("ghost-worker")
    );

    // Once per death: a failed attempt that is retried runs no hook.
    let mut expected = vec![
        permanent.id,
        hook_fails.id,
        hook_sql_fails.id,
        exhausted.id,
        timed_out.id,
        abandoned.id,
    ];
    expected.sort();
    assert_eq!(marks.seen(), expected);

    // Its writes commit with the job, carrying the reason; a failing hook's writes are rolled
    // back alone, and its job dies all the same.
    let mut committed: Vec<(i64, String)> = [&permanent, &exhausted, &timed_out, &abandoned]
        .iter()
        .map(|j| (j.id.0, j.last_error.clone().expect("a reason")))
        .collect();
    committed.sort();
    assert_eq!(dead_marks(&t).await, committed);
    assert_eq!(hook_fails.state, JobState::Dead);
    assert_eq!(hook_sql_fails.state, JobState::Dead);
    assert_eq!(
        hook_sql_fails.last_error.as_deref(),
        Some("the recording is empty")
    );
}

const COMPANY: &str = "acme";

async fn insert_session(t: &TestDb, id: &str) {
    let mut tx = t.db.begin(Scope::Company(COMPANY)).await.expect("begin");
    sessions::insert(
        &mut tx,
        &NewSession {
            id,
            company_id: COMPANY,
            profile_id: "ann",
            title: "Discovery call",
            kind: "sales",
            source: "audio",
            audio_ref: None,
            audio_type: None,
            external_id: None,
            channels: None,
            user_speaker: None,
        },
        None,
    )
    .await
    .expect("insert a session");
    tx.commit().await.expect("commit");
}

fn session_job(id: &str) -> SessionJob {
    SessionJob {
        session_id: id.into(),
        company_id: COMPANY.into(),
        profile_id: Some("ann".into()),
        notify_email: None,
    }
}

async fn session(t: &TestDb, id: &str) -> sessions::SessionRow {
    sessions::get(&t.db, COMPANY, id)
        .await
        .expect("get the session")
        .expect("the session exists")
}

on_both_databases!(a_dead_pipeline_job_marks_its_session_failed_with_the_reason);
async fn a_dead_pipeline_job_marks_its_session_failed_with_the_reason(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[FAST]).await else {
        return;
    };
    let hooks = voxline_workers::dead_hooks(&t.db);
    let store = t.db.jobs();

    // A transcription that fails for good.
    insert_session(&t, "s-transcription").await;
    let transcription = Transcription(session_job("s-transcription"))
        .to_job()
        .expect("job");
    let id = t.enqueue(transcription).await;
    let claimed = claim_one(store.as_ref(), queues::TRANSCRIPTION, "worker-a").await;
    assert_eq!(claimed.id, id);
    assert_eq!(session(&t, "s-transcription").await.status, "queued");
    let reason = "OpenAI answered 400: unsupported audio format";
    assert_eq!(
        complete(
            store.as_ref(),
            &claimed,
            Outcome::Dead {
                error: reason.into()
            },
            &hooks
        )
        .await,
        vec![(id, JobState::Dead)]
    );
    let failed = session(&t, "s-transcription").await;
    assert_eq!(failed.status, "failed");
    assert_eq!(failed.error.as_deref(), Some(reason));

    // An analysis whose worker vanished on its last attempt: maintenance's rescue kills it.
    insert_session(&t, "s-analysis").await;
    let analysis = Analysis(session_job("s-analysis"))
        .to_job()
        .expect("job")
        .max_attempts(1);
    let id = t.enqueue(analysis).await;
    claim_one(store.as_ref(), queues::ANALYSIS, "ghost-worker").await;
    assert_eq!(rescue(&t, id, &hooks).await, JobState::Dead);
    let failed = session(&t, "s-analysis").await;
    assert_eq!(failed.status, "failed");
    assert_eq!(
        failed.error.as_deref(),
        t.job(id).await.last_error.as_deref(),
        "the session says why its job died"
    );
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("ghost-worker")
    );
}

/// Moves job `id` (every job, without one) to the final `state`, finished `hours_ago`.
async fn set_finished(t: &TestDb, id: Option<JobId>, state: JobState, hours_ago: i64) {
    let id = id.map(|id| id.0);
    match &t.db {
        Db::Postgres(_) => {
            sqlx::query(
                "UPDATE jobs SET state = $1, attempt = 1,
                                 finished_at = now() - $2 * interval '1 hour'
                 WHERE $3::int8 IS NULL OR id = $3",
            )
            .bind(state.as_str())
            .bind(hours_ago)
            .bind(id)
            .execute(t.owner())
            .await
            .expect("finish jobs");
        }
        Db::Sqlite(lite) => {
            sqlx::query(
                "UPDATE jobs SET state = ?1, attempt = 1, finished_at = ?2
                 WHERE ?3 IS NULL OR id = ?3",
            )
            .bind(state.as_str())
            .bind(chrono::Utc::now().timestamp_micros() - hours_ago * 3_600_000_000)
            .bind(id)
            .execute(&lite.pool)
            .await
            .expect("finish jobs");
        }
    }
}

on_both_databases!(pruning_keeps_up_with_twenty_thousand_done_jobs);
async fn pruning_keeps_up_with_twenty_thousand_done_jobs(backend: Backend) {
    const JOBS: u64 = 20_000;
    let Some(t) = TestDb::new(backend, &[FAST, "[retention]\ndone_hours = 24\n"]).await else {
        return;
    };
    let inserted = t
        .client()
        .enqueue_many(
            (0..JOBS)
                .map(|n| NewJob::new("test", "bulk", json!({ "n": n })))
                .collect(),
        )
        .await
        .expect("bulk insert");
    assert_eq!(inserted, JOBS);
    // All of them done 25 hours ago, past the 24 hours of retention.
    set_finished(&t, None, JobState::Done, 25).await;
    // What retention keeps: a job done just now, and an old dead letter (dead_hours = 0).
    let fresh = t.enqueue(job("keep")).await;
    let dead_letter = t.enqueue(job("keep")).await;
    set_finished(&t, Some(fresh), JobState::Done, 0).await;
    set_finished(&t, Some(dead_letter), JobState::Dead, 1000).await;
    assert_eq!(t.job(fresh).await.state, JobState::Done);
    assert_eq!(t.job(dead_letter).await.state, JobState::Dead);

    let started = std::time::Instant::now();
    let pruned = pruner::prune_until_caught_up(
        t.db.jobs().as_ref(),
        &t.settings.retention,
        Duration::from_secs(600),
    )
    .await
    .expect("prune");
    let took = started.elapsed();
    println!("pruning {JOBS} done jobs on {backend:?} took {took:?}");

    assert_eq!(
        pruned,
        Pruned {
            deleted: JOBS,
            caught_up: true
        }
    );
    assert_eq!(t.count(JobState::Done).await, 1);
    assert_eq!(t.count(JobState::Dead).await, 1);
    assert!(t.db.jobs().get(fresh).await.unwrap().is_some());
    assert!(t.db.jobs().get(dead_letter).await.unwrap().is_some());
}
