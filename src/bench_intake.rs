//! `voxline bench intake`: how many session submissions the intake API accepts per second on
//! the configured database, and how long each takes to answer — the whole path a client sees:
//! HTTP, JWT check, validation, the session row + transcript + job (+ audio blob) committed
//! durably, and the 202. No worker runs, so the jobs only queue; the benchmark's own company's
//! rows, jobs and blobs are removed afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use voxline_api::auth::{Claims, Keys, Role};
use voxline_domain::db::Scope;
use voxline_domain::{Db, Settings};

use crate::bench::percentile;
use crate::services::connect;

// The options of its `voxline bench` subcommand (whose help is the variant's).
#[derive(clap::Args)]
pub struct IntakeBench {
    /// Submissions measured (after a short warm-up).
    #[arg(long, default_value_t = 2_000)]
    pub requests: usize,
    /// Clients submitting at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Upload this recording (multipart) instead of a 30-turn JSON transcript.
    #[arg(long)]
    pub audio: Option<std::path::PathBuf>,
}

/// A realistic JSON submission: a 30-turn sales conversation.
fn transcript() -> serde_json::Value {
    let turns: Vec<_> = (0..30)
        .map(|i| {
            let start = i as f64 * 6.0;
            serde_json::json!({
                "speaker": if i % 2 == 0 { "partner" } else { "user" },
                "start": start, "end": start + 5.5,
                "text": "So what would it mean for your team if onboarding took half the time?",
            })
        })
        .collect();
    serde_json::json!({ "title": "Benchmark call", "kind": "sales", "transcript": turns })
}

pub async fn run(settings: Settings, bench: IntakeBench) -> anyhow::Result<()> {
    if bench.requests == 0 || bench.concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let audio = match &bench.audio {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let mut settings = settings;
    // One benchmark client is one profile on one address: the limits would measure themselves.
    settings.rate_limits.intake_per_profile = 0;
    settings.rate_limits.intake_per_ip = 0;
    if audio.is_some() {
        // No worker runs: the transcription jobs only queue, so any provider will do for intake.
        settings.transcription.provider = "openai".into();
    }
    let settings = Arc::new(settings);
    let db = connect(&settings).await?;
    let state = voxline_api::AppState::new(db.clone(), settings.clone(), None)
        .context("setting up the API")?;
    let secret = voxline_domain::secrets::jwt_secret(&settings)?;
    let company = format!("bench-{}", hex::encode(rand::random::<[u8; 4]>()));
    let now = chrono::Utc::now().timestamp();
    let token = Keys::hs256(&secret).mint(&Claims {
        sub: format!("{company}-profile"),
        company_id: company.clone(),
        role: Role::Member,
        email: None,
        iat: now,
        exp: now + 3600,
    })?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/sessions", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(voxline_api::serve(listener, state, stop.clone()));

    let load = Load {
        client: http_client::Client::builder()
            .pool_max_idle_per_host(bench.concurrency)
            .build()?,
        url,
        token,
        body: transcript().to_string(),
        audio,
    };
    // Warm-up: connections open, statements prepared.
    drive(&load, bench.concurrency.min(8) * 4, bench.concurrency).await?;
    let started = Instant::now();
    let latencies = drive(&load, bench.requests, bench.concurrency).await?;
    let elapsed = started.elapsed();

    stop.cancel();
    let _ = server.await;
    cleanup(&db, &settings, &company).await?;
    db.close().await;

    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    let database = if settings.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let mode = if load.audio.is_some() {
        "audio"
    } else {
        "json"
    };
    println!(
        "db={database} mode={mode} requests={} concurrency={} requests_per_s={:.0} p50_ms={:.2} p95_ms={:.2} p99_ms={:.2}",
        bench.requests,
        bench.concurrency,
        bench.requests as f64 / elapsed.as_secs_f64(),
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.95),
        percentile(&sorted, 0.99),
    );
    Ok(())
}

struct Load {
    client: http_client::Client,
    url: String,
    token: String,
    body: String,
    audio: Option<Vec<u8>>,
}

impl Load {
    async fn submit(&self) -> anyhow::Result<Duration> {
        let request = self.client.post(&self.url).bearer_auth(&self.token);
        let request = match &self.audio {
            Some(bytes) => {
                let part =
                    http_client::multipart::Part::bytes(bytes.clone()).file_name("bench-audio");
                let form = http_client::multipart::Form::new()
                    .text("title", "Benchmark upload")
                    .text("kind", "sales")
                    .part("audio", part);
                request.multipart(form)
            }
            None => request
                .header("content-type", "application/json")
                .body(self.body.clone()),
        };
        let started = Instant::now();
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        let took = started.elapsed();
        if status != http_client::StatusCode::ACCEPTED {
            bail!(
                "intake answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(took)
    }
}

/// Sends `n` submissions from `concurrency` clients; returns each one's latency in ms.
async fn drive(load: &Load, n: usize, concurrency: usize) -> anyhow::Result<Vec<f64>> {
    let next = AtomicUsize::new(0);
    let clients = (0..concurrency).map(|_| async {
        let mut latencies = Vec::new();
        while next.fetch_add(1, Ordering::Relaxed) < n {
            latencies.push(load.submit().await?.as_secs_f64() * 1000.0);
        }
        anyhow::Ok(latencies)
    });
    let mut all = Vec::with_capacity(n);
    for latencies in futures::future::try_join_all(clients).await? {
        all.extend(latencies);
    }
    Ok(all)
}

/// Removes the benchmark company's sessions (transcripts cascade), answers, profile, queued
/// jobs and uploaded audio.
async fn cleanup(db: &Db, settings: &Settings, company: &str) -> anyhow::Result<()> {
    let blob_refs: Vec<Option<String>> = match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query_scalar("SELECT audio_ref FROM sessions WHERE company_id = $1")
                .bind(company)
                .fetch_all(&mut *tx)
                .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_scalar("SELECT audio_ref FROM sessions WHERE company_id = ?")
                .bind(company)
                .fetch_all(&lite.pool)
                .await?
        }
    };
    let statements: [(&str, &str); 4] = [
        (
            "WITH gone AS (DELETE FROM jobs WHERE tenant_key = $1 RETURNING id)
             DELETE FROM job_search WHERE job_id IN (SELECT id FROM gone)",
            "DELETE FROM jobs WHERE tenant_key = ?",
        ),
        (
            "DELETE FROM sessions WHERE company_id = $1",
            "DELETE FROM sessions WHERE company_id = ?",
        ),
        (
            "DELETE FROM idempotency_keys WHERE company_id = $1",
            "DELETE FROM idempotency_keys WHERE company_id = ?",
        ),
        (
            "DELETE FROM profiles WHERE company_id = $1",
            "DELETE FROM profiles WHERE company_id = ?",
        ),
    ];
    for (pg_sql, lite_sql) in statements {
        match db {
            Db::Postgres(pg) => {
                let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
                sqlx::query(pg_sql).bind(company).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Db::Sqlite(lite) => {
                sqlx::query(lite_sql)
                    .bind(company)
                    .execute(&lite.pool)
                    .await?;
            }
        }
    }
    let blobs = voxline_domain::blobs::LocalBlobs::new(settings.blob_dir());
    for blob in blob_refs.into_iter().flatten() {
        use voxline_domain::blobs::BlobStore;
        blobs.delete(&blob).await?;
    }
    Ok(())
}
