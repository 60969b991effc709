//! Test harness: a fresh database per test (an SQLite file in a temp dir, or a Postgres schema
//! of its own on the shared server), settings to match, and helpers to start the real binary.
//!
//! Postgres comes from `VOXLINE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! and Redis from `VOXLINE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When one is not
//! reachable, a test says so loudly and stops; with `CI` set, it fails instead.
#![allow(dead_code)]

pub mod api;
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
use voxline_jobs::{Completion, DeadHooks, Job, JobClient, JobId, JobState, NewJob, Outcome};

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

/// Postgres: a small pool of the owner role (the URL's superuser), for `TestDb::owner`.
pub fn owner_pool(db: &Db) -> Option<sqlx::PgPool> {
    match db {
        Db::Postgres(pg) => Some(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect_lazy_with(pg.owner_options.clone()),
        ),
        Db::Sqlite(_) => None,
    }
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
        let owner = owner_pool(&db);
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

    /// A count (or any one integer) by the same SQL on either backend, over every company's
    /// rows (the owner's view on Postgres).
    pub async fn count_rows(&self, sql: &'static str) -> i64 {
        let counted = match &self.db {
            Db::Postgres(_) => sqlx::query_scalar(sql).fetch_one(self.owner()).await,
            Db::Sqlite(lite) => sqlx::query_scalar(sql).fetch_one(&lite.pool).await,
        };
        counted.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The jobs `filter` lists.
    pub async fn listed_jobs(&self, filter: voxline_jobs::store::JobFilter) -> Vec<Job> {
        self.db.jobs().list(&filter).await.expect("list jobs")
    }

    /// The first `limit` jobs of every queue and state.
    pub async fn any_jobs(&self, limit: u32) -> Vec<Job> {
        self.listed_jobs(voxline_jobs::store::JobFilter {
            limit,
            ..Default::default()
        })
        .await
    }

    /// Enqueues `job` and has it run one attempt ending in `outcome`, without workers (claimed
    /// and acknowledged through the store as a worker would).
    pub async fn finished_without_workers(&self, job: NewJob, outcome: Outcome) -> JobId {
        let queue = job.queue.clone();
        let id = self.enqueue(job).await;
        let claimed = self
            .db
            .jobs()
            .claim(&queue, "test-worker", 50)
            .await
            .expect("claim");
        let lease = claimed
            .iter()
            .find(|j| j.id == id)
            .map(|j| j.lease())
            .expect("the job was claimed");
        self.db
            .jobs()
            .complete(&[Completion { lease, outcome }], &DeadHooks::new())
            .await
            .expect("complete");
        id
    }

    /// A job that failed its one attempt for good with `error`, made without workers.
    pub async fn dead_job(&self, job: NewJob, error: &str) -> JobId {
        let outcome = Outcome::Dead {
            error: error.into(),
        };
        self.finished_without_workers(job, outcome).await
    }

    /// Sets job `id`'s heartbeat an hour back, as if its worker had stopped long ago.
    pub async fn backdate_heartbeat(&self, id: JobId) {
        let done = match &self.db {
            Db::Postgres(_) => sqlx::query(
                "UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = $1",
            )
            .bind(id.0)
            .execute(self.owner())
            .await
            .map(drop),
            Db::Sqlite(lite) => sqlx::query("UPDATE jobs SET heartbeat_at = ? WHERE id = ?")
                .bind(chrono::Utc::now().timestamp_micros() - 3_600_000_000)
                .bind(id.0)
                .execute(&lite.pool)
                .await
                .map(drop),
        };
        done.expect("backdate the heartbeat");
    }

    /// Waits until session `id` of `company` is ready, failing at once if it failed.
    pub async fn wait_session_ready(&self, company: &str, id: &str, limit: Duration) {
        eventually("the session is ready", limit, || async {
            let s = voxline_domain::sessions::get(&self.db, company, id)
                .await
                .expect("get")
                .expect("session");
            assert_ne!(s.status, "failed", "the session failed: {:?}", s.error);
            s.status == "ready"
        })
        .await;
    }

    /// The audit log's entries of `action`, newest first (at most 50).
    pub async fn audit_entries(&self, action: &str) -> Vec<voxline_domain::audit::AuditRecord> {
        voxline_domain::audit::list(
            &self.db,
            &voxline_domain::audit::AuditFilter {
                action: Some(action.into()),
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .expect("audit log")
    }

    /// The Postgres database of a Postgres deployment.
    pub fn postgres(&self) -> &voxline_domain::db::PgDb {
        match &self.db {
            Db::Postgres(pg) => pg,
            Db::Sqlite(_) => panic!("a Postgres deployment was expected"),
        }
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

/// A discovery call's transcript as a client submits it (`POST /api/sessions`): the user
/// asks questions, uses fillers and once talks over the partner.
pub fn discovery_call() -> serde_json::Value {
    serde_json::json!({
        "title": "Discovery call with Globex",
        "kind": "sales",
        "transcript": [
            { "speaker": "partner", "start": 0.0, "end": 4.0, "text": "Hi, thanks for taking the call." },
            { "speaker": "user", "start": 5.0, "end": 11.0, "text": "Um, thanks. So I think we could maybe start with your goals?" },
            { "speaker": "partner", "start": 11.5, "end": 20.0, "text": "Sure, we want to cut onboarding time in half." },
            { "speaker": "user", "start": 19.0, "end": 25.0, "text": "Basically that means what, you know, for your team?" },
            { "speaker": "user", "start": 25.0, "end": 31.0, "text": "And uh how do you measure it today?" },
            { "speaker": "partner", "start": 31.0, "end": 40.0, "text": "Mostly by gut feeling, honestly." },
            { "speaker": "user", "start": 42.0, "end": 46.0, "text": "Got it, that helps." }
        ]
    })
}

/// A valid 16 kHz mono 16-bit PCM WAV of `samples` samples of silence.
pub fn silent_wav(samples: usize) -> Vec<u8> {
    let data_len = (samples * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&32_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.resize(44 + samples * 2, 0);
    out
}

/// A short sales call as a client submits it: the partner says `partner` (0–3 s), the user
/// answers `user` (3.5 s to `user_ends`).
pub fn two_turn_call(title: &str, partner: &str, user: &str, user_ends: f64) -> serde_json::Value {
    serde_json::json!({
        "title": title,
        "kind": "sales",
        "transcript": [
            { "speaker": "partner", "start": 0.0, "end": 3.0, "text": partner },
            { "speaker": "user", "start": 3.5, "end": user_ends, "text": user }
        ]
    })
}

/// A sales session of a submitted transcript (no audio, no provider) of `profile` of `company`.
pub fn transcript_session<'a>(
    id: &'a str,
    company: &'a str,
    profile: &'a str,
    title: &'a str,
) -> voxline_domain::sessions::NewSession<'a> {
    voxline_domain::sessions::NewSession {
        id,
        company_id: company,
        profile_id: profile,
        title,
        kind: "sales",
        source: "transcript",
        audio_ref: None,
        audio_type: None,
        external_id: None,
        channels: None,
        user_speaker: None,
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
    signed_token(company, profile, role, None, lifetime_secs)
}

/// A token for ten minutes that also carries the profile's email address (where "feedback
/// ready" and other notifications go).
pub fn token_with_email(
    company: &str,
    profile: &str,
    role: voxline_api::auth::Role,
    email: Option<&str>,
) -> String {
    signed_token(company, profile, role, email, 600)
}

fn signed_token(
    company: &str,
    profile: &str,
    role: voxline_api::auth::Role,
    email: Option<&str>,
    lifetime_secs: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = voxline_api::auth::Claims {
        sub: profile.into(),
        company_id: company.into(),
        role,
        email: email.map(str::to_string),
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
