//! Test harness: a fresh database per test (an SQLite file in a temp dir, or a Postgres schema
//! of its own on the shared server), settings to match, and helpers to start the real binary.
//!
//! Postgres comes from `VOXLINE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! and Redis from `VOXLINE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When one is not
//! reachable, a test says so loudly and stops; with `CI` set, it fails instead.
#![allow(dead_code)]

pub mod browser;
#[cfg(feature = "local-whisper")]
pub mod models;
pub mod openai_mock;
pub mod pg_cluster;
pub mod stripe_mock;
#[cfg(feature = "local-whisper")]
pub mod voices;

use std::future::Future;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use voxline_domain::{Db, Settings};
use voxline_jobs::DbJobs;
use voxline_jobs::{Job, JobClient, JobId, JobState, NewJob};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn postgres_url() -> String {
    std::env::var("VOXLINE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("VOXLINE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A required service is missing: fail in CI, otherwise say so loudly (the caller skips).
pub fn service_missing(what: &str, error: &dyn std::fmt::Display) {
    if in_ci() {
        panic!("{what} is required when CI is set, and it is not reachable: {error}");
    }
    eprintln!("SKIPPED (not in CI): {what} is not reachable: {error}");
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The HS256 secret every test deployment signs its tokens with.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub struct TestDb {
    pub backend: Backend,
    pub settings: Arc<Settings>,
    pub db: Db,
    /// Postgres: a pool of the owner role (the URL's superuser), which row-level security does
    /// not limit; checks that must see every company's rows read through it, the service never.
    pub owner: Option<sqlx::PgPool>,
    pub dir: tempfile::TempDir,
    /// `VOXLINE_*` variables that point a child process at this same database.
    pub env: Vec<(String, String)>,
}

impl TestDb {
    /// A fresh, migrated database; `layers` are TOML texts layered over the defaults in order.
    pub async fn new(backend: Backend, layers: &[&str]) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = vec![(
            "VOXLINE_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        )];
        env.push(("VOXLINE_AUTH_JWT_SECRET".into(), TEST_JWT_SECRET.into()));
        let database = match backend {
            Backend::Sqlite => {
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("voxline.db").display()
                );
                env.push(("VOXLINE_DATABASE_URL".into(), url.clone()));
                format!("url = \"{url}\"")
            }
            Backend::Postgres => {
                let url = postgres_url();
                let schema = format!(
                    "t_{}_{}_{:06x}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    rand::random::<u32>() & 0xffffff
                );
                env.push(("VOXLINE_DATABASE_URL".into(), url.clone()));
                env.push(("VOXLINE_DATABASE__SCHEMA".into(), schema.clone()));
                format!("url = \"{url}\"\nschema = \"{schema}\"\nmax_connections = 8")
            }
        };
        let own = format!(
            "data_dir = \"{}\"\n[auth]\njwt_secret = \"{TEST_JWT_SECRET}\"\n[database]\n{database}\n",
            dir.path().display()
        );
        let mut all: Vec<&str> = layers.to_vec();
        all.push(&own);
        let settings = Settings::from_toml_layers(&all).expect("test settings are valid");
        let db = match tokio::time::timeout(Duration::from_secs(10), Db::connect(&settings)).await {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => {
                service_missing("PostgreSQL", &e);
                return None;
            }
            Err(e) => {
                service_missing("PostgreSQL", &e);
                return None;
            }
        };
        db.migrate().await.expect("migrations apply");
        let owner = match &db {
            Db::Postgres(pg) => Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect_lazy_with(pg.owner_options.clone()),
            ),
            Db::Sqlite(_) => None,
        };
        Some(TestDb {
            backend,
            settings: Arc::new(settings),
            db,
            owner,
            dir,
            env,
        })
    }

    pub fn client(&self) -> JobClient {
        JobClient::new(self.db.clone(), self.settings.clone())
    }

    /// Enqueues one job on its own and returns its id.
    pub async fn enqueue(&self, job: NewJob) -> JobId {
        self.client().enqueue_now(&job).await.expect("enqueue").id
    }

    pub async fn job(&self, id: JobId) -> Job {
        self.db
            .jobs()
            .get(id)
            .await
            .expect("get job")
            .expect("job exists")
    }

    /// Waits until `check` holds for the job, or panics after `limit` with the job's state.
    pub async fn wait_for(&self, id: JobId, limit: Duration, check: impl Fn(&Job) -> bool) -> Job {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let job = self.job(id).await;
            if check(&job) {
                return job;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("job {id} did not reach the expected state within {limit:?}: {job:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_state(&self, id: JobId, state: JobState, limit: Duration) -> Job {
        self.wait_for(id, limit, |j| j.state == state).await
    }

    /// Counts of jobs per state over the whole table.
    pub async fn count(&self, state: JobState) -> i64 {
        self.db
            .jobs()
            .stats()
            .await
            .expect("stats")
            .iter()
            .map(|s| s.counts.get(&state).copied().unwrap_or(0))
            .sum()
    }

    /// The owner's pool (Postgres only): sees every company's rows.
    pub fn owner(&self) -> &sqlx::PgPool {
        self.owner
            .as_ref()
            .expect("an owner pool exists on Postgres")
    }

    /// Runs raw SQL as the owner (every company's rows), for set-ups and checks that have no
    /// API (backend-specific text per call).
    pub async fn execute(&self, pg_sql: &'static str, sqlite_sql: &'static str) {
        match &self.db {
            Db::Postgres(_) => {
                sqlx::query(pg_sql)
                    .execute(self.owner())
                    .await
                    .expect("pg sql");
            }
            Db::Sqlite(lite) => {
                sqlx::query(sqlite_sql)
                    .execute(&lite.pool)
                    .await
                    .expect("sqlite sql");
            }
        }
    }

    /// Starts the real `voxline` binary against this database.
    pub fn spawn_voxline(
        &self,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxline"));
        cmd.args(args)
            .env_remove("VOXLINE_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("start voxline")
    }

    /// Runs `voxline ARGS` to completion and returns (exit code, stdout, stderr).
    pub async fn run_voxline(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxline"));
        cmd.args(args)
            .env_remove("VOXLINE_CONFIG")
            .env("RUST_LOG", "warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().await.expect("run voxline");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Polls `check` until it returns true, or panics after `limit` naming `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGKILL or SIGTERM to a child by pid.
pub async fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("child still running").to_string();
    let status = tokio::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// Declares a test that runs once on SQLite and once on Postgres.
#[macro_export]
macro_rules! on_both_databases {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::support::Backend::Postgres).await
            }
        }
    };
}

/// The process-wide metrics recorder for in-process API servers (installable once per binary).
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| voxline_api::metrics::install().expect("install the metrics recorder"))
        .clone()
}

/// Serves the real router for this database on a random loopback port; returns its base URL.
pub async fn start_api(t: &TestDb) -> String {
    let state =
        voxline_api::AppState::new(t.db.clone(), t.settings.clone(), Some(metrics_handle()))
            .expect("app state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(voxline_api::serve(listener, state, stop));
    format!("http://{addr}")
}

/// A token signed with the test deployments' secret.
pub fn token(
    company: &str,
    profile: &str,
    role: voxline_api::auth::Role,
    lifetime_secs: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = voxline_api::auth::Claims {
        sub: profile.into(),
        company_id: company.into(),
        role,
        email: None,
        iat: now,
        exp: now + lifetime_secs,
    };
    voxline_api::auth::Keys::hs256(TEST_JWT_SECRET)
        .mint(&claims)
        .expect("mint")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Runs every voxline handler in this process on the given queues (the real worker pools).
pub fn start_workers(t: &TestDb, queues: &[&str]) -> voxline_jobs::RunnerHandle {
    let handlers = voxline_workers::handlers(&t.db, &t.settings).expect("handlers");
    voxline_jobs::Runner::new(t.db.clone(), t.settings.clone(), handlers)
        .queues(queues.iter().map(|q| q.to_string()).collect())
        .start()
}
