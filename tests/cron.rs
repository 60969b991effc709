//! Cron across restarts and outages: ticks that fell while no process ran are caught up as
//! each entry's `catch_up` says, and a tick whose enqueue fails is retried until it is stored.

mod support;

use std::time::Duration;

use chrono::Utc;
use support::{Backend, TestDb, eventually};
use voxline_domain::config::CronEntry;
use voxline_jobs::store::JobFilter;
use voxline_jobs::{DbJobs, cron};

const LONG: Duration = Duration::from_secs(20);
const HOUR: i64 = 3_600;

/// Hourly entries that differ only in `catch_up`.
const HOURLY: &str = r#"
[cron.catch_up_last]
schedule = "0 0 * * * *"
queue = "test"
kind = "diag.noop"
catch_up = "last"
[cron.catch_up_all]
schedule = "0 0 * * * *"
queue = "test"
kind = "diag.noop"
catch_up = "all"
"#;

fn entry(t: &TestDb, name: &str) -> CronEntry {
    t.settings
        .cron
        .get(name)
        .cloned()
        .expect("entry configured")
}

/// The ticks enqueued for cron entry `name`, oldest first.
async fn ticks_of(t: &TestDb, name: &str) -> Vec<i64> {
    let jobs =
        t.db.jobs()
            .list(&JobFilter {
                queue: Some("test".into()),
                limit: 1_000,
                ..Default::default()
            })
            .await
            .expect("list jobs");
    let mut ticks: Vec<i64> = jobs
        .iter()
        .filter(|j| j.payload["cron"] == name)
        .filter_map(|j| j.payload["tick"].as_i64())
        .collect();
    ticks.sort_unstable();
    ticks
}

/// Records `tick` as the entry's latest, as a process that ran then would have.
async fn ran_at(t: &TestDb, name: &str, tick: i64) {
    let job = cron::tick_job(name, &entry(t, name), tick as u64);
    t.client()
        .enqueue_tick(name, tick, &job)
        .await
        .expect("record a tick");
}

on_both_databases!(ticks_missed_while_no_process_ran_are_caught_up_as_configured);
async fn ticks_missed_while_no_process_ran_are_caught_up_as_configured(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[HOURLY]).await else {
        return;
    };
    // The last process stopped three hours and some minutes ago, just after its tick.
    let this_hour = Utc::now().timestamp() / HOUR * HOUR;
    let last = this_hour - 3 * HOUR;
    ran_at(&t, "catch_up_last", last).await;
    ran_at(&t, "catch_up_all", last).await;

    let stop = tokio_util::sync::CancellationToken::new();
    let tasks = cron::spawn(t.client(), stop.clone());

    eventually(
        "every missed hour of catch_up = all is enqueued",
        LONG,
        || async { ticks_of(&t, "catch_up_all").await.len() == 4 },
    )
    .await;
    assert_eq!(
        ticks_of(&t, "catch_up_all").await,
        vec![last, last + HOUR, last + 2 * HOUR, this_hour]
    );
    eventually(
        "the latest missed hour of catch_up = last is enqueued",
        LONG,
        || async { ticks_of(&t, "catch_up_last").await.len() == 2 },
    )
    .await;
    assert_eq!(ticks_of(&t, "catch_up_last").await, vec![last, this_hour]);

    // A second start catches up nothing more: every tick is recorded now.
    let again = cron::spawn(t.client(), stop.clone());
    stop.cancel();
    for task in tasks.into_iter().chain(again) {
        task.await.expect("cron task ends");
    }
    assert_eq!(ticks_of(&t, "catch_up_all").await.len(), 4);
    assert_eq!(ticks_of(&t, "catch_up_last").await.len(), 2);
}

/// The Postgres sessions waiting for the owner's lock of `cron_ticks`.
async fn blocked_enqueues(t: &TestDb) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE relation = 'cron_ticks'::regclass AND NOT granted",
    )
    .fetch_all(t.owner())
    .await
    .expect("read pg_locks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_whose_enqueue_fails_is_retried_until_it_is_stored() {
    let Some(t) = TestDb::new(Backend::Postgres, &[HOURLY]).await else {
        return;
    };
    let this_hour = Utc::now().timestamp() / HOUR * HOUR;
    ran_at(&t, "catch_up_last", this_hour - HOUR).await;
    ran_at(&t, "catch_up_all", this_hour - HOUR).await;

    // The owner holds the tick table against writes (reads go on), so the scheduler's
    // enqueues of the two missed ticks wait on its lock ...
    let mut lock = t.owner().begin().await.expect("begin");
    sqlx::query("LOCK TABLE cron_ticks IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock cron_ticks");
    let stop = tokio_util::sync::CancellationToken::new();
    let tasks = cron::spawn(t.client(), stop.clone());

    // ... and fail: their connections are cut while they wait (each enqueue's job insert is
    // rolled back with its tick).
    let entries = 2;
    eventually("both catch-up enqueues are waiting", LONG, || async {
        blocked_enqueues(&t).await.len() == entries
    })
    .await;
    let cut = blocked_enqueues(&t).await;
    for &pid in &cut {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(t.owner())
            .await
            .expect("terminate");
    }
    // Retried: they come back on new connections and wait again.
    eventually("the failed enqueues are retried", LONG, || async {
        let waiting = blocked_enqueues(&t).await;
        waiting.len() == entries && waiting.iter().all(|pid| !cut.contains(pid))
    })
    .await;
    lock.rollback().await.expect("unlock");

    eventually("both missed ticks are stored", LONG, || async {
        ticks_of(&t, "catch_up_last").await.len() == 2
            && ticks_of(&t, "catch_up_all").await.len() == 2
    })
    .await;
    assert_eq!(
        ticks_of(&t, "catch_up_last").await,
        vec![this_hour - HOUR, this_hour]
    );
    stop.cancel();
    for task in tasks {
        task.await.expect("cron task ends");
    }
}
