//! Operator commands: `voxline queues` and `voxline jobs list|show|retry|discard`.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use voxline_domain::{Db, Settings};
use voxline_jobs::DbJobs;
use voxline_jobs::store::{self, JobFilter};
use voxline_jobs::{Job, JobId, JobState, QueueStats};

use crate::services::connect;
use crate::table;

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        state: Option<JobState>,
        #[arg(long)]
        kind: Option<String>,
        /// Only jobs working for this company.
        #[arg(long)]
        company: Option<String>,
        /// Search the kind, the errors and the payload.
        #[arg(long, short = 'q')]
        search: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only jobs with an id below this (the next page).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// One job with every attempt's error.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Run a dead (or retrying) job again now, attempts reset; or every job of a queue in a state.
    Retry {
        id: Option<i64>,
        #[arg(long, requires = "state", conflicts_with = "id")]
        queue: Option<String>,
        #[arg(long, requires = "queue")]
        state: Option<JobState>,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a waiting or dead job for good.
    Discard {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

/// `voxline queues pause|resume Q`.
#[derive(Subcommand)]
pub enum QueuesCommand {
    /// Stop every process claiming from the queue (running jobs finish) until it is resumed.
    Pause { queue: String },
    /// Let workers claim from the queue again.
    Resume { queue: String },
}

pub async fn queue_action(settings: Settings, command: QueuesCommand) -> anyhow::Result<()> {
    let db = connect(&settings).await?;
    let result = queue_action_on(&db, command).await;
    db.close().await;
    result
}

async fn queue_action_on(db: &Db, command: QueuesCommand) -> anyhow::Result<()> {
    let store = db.jobs();
    match command {
        QueuesCommand::Pause { queue } => {
            if store.console().pause_queue(&queue, &cli_actor()).await? {
                audit_cli(db, "queue.pause", format!("queue:{queue}")).await?;
                println!("queue {queue} paused: no process claims from it until it is resumed");
            } else {
                println!("queue {queue} was already paused");
            }
        }
        QueuesCommand::Resume { queue } => {
            if store.console().resume_queue(&queue).await? {
                audit_cli(db, "queue.resume", format!("queue:{queue}")).await?;
                println!("queue {queue} resumed");
            } else {
                println!("queue {queue} was not paused");
            }
        }
    }
    Ok(())
}

pub async fn queues(settings: Settings, as_json: bool, watch: Option<u64>) -> anyhow::Result<()> {
    let db = connect(&settings).await?;
    loop {
        let stats = db.jobs().stats().await.context("reading queue counts")?;
        if as_json {
            println!(
                "{}",
                serde_json::to_string(&queues_json(&settings, &stats))?
            );
        } else {
            if watch.is_some() {
                // Clear the screen and go home, like `watch`.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", queues_table(&settings, &stats));
        }
        match watch {
            Some(secs) => {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            None => break,
        }
    }
    db.close().await;
    Ok(())
}

/// Configured queues are listed even when empty, so an operator sees all of them.
fn all_stats(settings: &Settings, stats: &[QueueStats]) -> Vec<QueueStats> {
    let mut all: Vec<QueueStats> = stats.to_vec();
    for name in settings.queue_names() {
        if !all.iter().any(|s| s.queue == name) {
            all.push(QueueStats {
                queue: name,
                ..Default::default()
            });
        }
    }
    all.sort_by(|a, b| a.queue.cmp(&b.queue));
    all
}

fn queues_json(settings: &Settings, stats: &[QueueStats]) -> serde_json::Value {
    let queues: Vec<serde_json::Value> = all_stats(settings, stats)
        .iter()
        .map(|s| {
            let counts: serde_json::Map<String, serde_json::Value> = JobState::ALL
                .iter()
                .map(|st| {
                    (
                        st.as_str().to_string(),
                        json!(s.counts.get(st).copied().unwrap_or(0)),
                    )
                })
                .collect();
            json!({
                "queue": s.queue,
                "counts": counts,
                "oldest_available_age_ms": s.oldest_available_age_ms,
                "paused": s.pause.is_some(),
            })
        })
        .collect();
    json!({ "queues": queues })
}

fn queues_table(settings: &Settings, stats: &[QueueStats]) -> String {
    let mut headers = vec!["QUEUE"];
    headers.extend(JobState::ALL.iter().map(|s| s.as_str()));
    headers.push("OLDEST AVAILABLE");
    // Last, so the columns scripts read by position keep their place.
    headers.push("STATUS");
    let rows: Vec<Vec<String>> = all_stats(settings, stats)
        .iter()
        .map(|s| {
            let status = if s.pause.is_some() {
                "paused"
            } else {
                "running"
            };
            let mut row = vec![s.queue.clone()];
            row.extend(
                JobState::ALL
                    .iter()
                    .map(|st| s.counts.get(st).copied().unwrap_or(0).to_string()),
            );
            row.push(
                s.oldest_available_age_ms
                    .map(human_ms)
                    .unwrap_or_else(|| "-".into()),
            );
            row.push(status.to_string());
            row
        })
        .collect();
    table::render(&headers, &rows)
}

fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms if ms < 3_600_000 => format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000),
        ms => format!("{}h{}m", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

pub async fn jobs(settings: Settings, command: JobsCommand) -> anyhow::Result<()> {
    let db = connect(&settings).await?;
    let result = jobs_on(&db, command).await;
    db.close().await;
    result
}

async fn jobs_on(db: &Db, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            queue,
            state,
            kind,
            company,
            search,
            limit,
            before,
            json,
        } => {
            let filter = JobFilter {
                queue,
                state,
                kind,
                company_id: company,
                search,
                before: before.map(JobId),
                limit: limit.clamp(1, 1000),
                ..Default::default()
            };
            let jobs = db.jobs().list(&filter).await.context("listing jobs")?;
            if json {
                let next = jobs
                    .last()
                    .filter(|_| jobs.len() as u32 == filter.limit)
                    .map(|j| j.id);
                println!(
                    "{}",
                    serde_json::to_string(&json!({ "jobs": jobs, "next_before": next }))?
                );
            } else {
                print!("{}", jobs_table(&jobs));
            }
        }
        JobsCommand::Show { id, json } => {
            let job = db
                .jobs()
                .get(JobId(id))
                .await?
                .with_context(|| format!("job {id} does not exist"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print!("{}", job_detail(&job));
            }
        }
        JobsCommand::Retry {
            id: Some(id), json, ..
        } => {
            let job = store::retry(db.jobs().as_ref(), JobId(id)).await?;
            report(json, &job, "retried: available now, attempts reset")?;
        }
        JobsCommand::Retry {
            id: None,
            queue: Some(queue),
            state: Some(state),
            json,
        } => {
            let ids = store::retry_all(db.jobs().as_ref(), &queue, state).await?;
            audit_cli(db, "queue.retry_dead", format!("queue:{queue}")).await?;
            if json {
                println!("{}", serde_json::to_string(&json!({ "retried": ids }))?);
            } else {
                println!("retried {} {state} job(s) on queue {queue}", ids.len());
            }
        }
        JobsCommand::Retry { .. } => bail!("give a job id, or --queue Q --state dead"),
        JobsCommand::Discard { id, json } => {
            let job = store::discard(db.jobs().as_ref(), JobId(id)).await?;
            audit_cli(db, "job.discard", format!("job:{id}")).await?;
            report(json, &job, "discarded (cancelled)")?;
        }
    }
    Ok(())
}

/// CLI actions are recorded like HTTP ones, with the shell user as the actor.
async fn audit_cli(db: &Db, action: &str, target: String) -> anyhow::Result<()> {
    let actor = cli_actor();
    let entry = voxline_domain::audit::AuditEntry {
        actor: &actor,
        actor_role: "operator",
        company_id: None,
        action,
        target: &target,
        details: json!({}),
    };
    voxline_domain::audit::append(db, &entry)
        .await
        .context("writing the audit log")?;
    Ok(())
}

/// Who acts from a shell: `cli:<user>`.
fn cli_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn report(as_json: bool, job: &Job, what: &str) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string(job)?);
    } else {
        println!("job {} {what}", job.id);
    }
    Ok(())
}

fn jobs_table(jobs: &[Job]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.queue.clone(),
                j.kind.clone(),
                j.state.to_string(),
                format!("{}/{}", j.attempt, j.max_attempts),
                j.run_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                j.last_error
                    .as_deref()
                    .map(|e| truncate(e, 60))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table::render(
        &[
            "ID",
            "QUEUE",
            "KIND",
            "STATE",
            "ATTEMPTS",
            "RUN AT",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn job_detail(j: &Job) -> String {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
    };
    let mut out = format!(
        "id:           {}\nqueue:        {}\nkind:         {}\nstate:        {}\nattempts:     {}/{}\npriority:     {}\nrun at:       {}\ncreated at:   {}\nattempted at: {}\nfinished at:  {}\nheld by:      {}\nunique key:   {}\npayload:      {}\n",
        j.id,
        j.queue,
        j.kind,
        j.state,
        j.attempt,
        j.max_attempts,
        j.priority,
        j.run_at.to_rfc3339(),
        j.created_at.to_rfc3339(),
        time(j.attempted_at),
        time(j.finished_at),
        j.locked_by.as_deref().unwrap_or("-"),
        j.unique_key.as_deref().unwrap_or("-"),
        j.payload,
    );
    if j.errors.is_empty() {
        out.push_str("errors:       none\n");
    } else {
        out.push_str("errors:\n");
        for e in &j.errors {
            out.push_str(&format!(
                "  attempt {} at {}: {}\n",
                e.attempt,
                e.at.to_rfc3339(),
                e.error
            ));
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        line.to_string()
    } else {
        format!("{}…", line.chars().take(max - 1).collect::<String>())
    }
}

/// `voxline token`: a signed JWT with the given claims.
pub fn token(
    settings: &Settings,
    company: String,
    profile: String,
    role: voxline_api::auth::Role,
    email: Option<String>,
    hours: i64,
) -> anyhow::Result<()> {
    if hours <= 0 {
        bail!("--hours must be positive");
    }
    let secret = voxline_domain::secrets::jwt_secret(settings)?;
    let now = chrono::Utc::now().timestamp();
    let claims = voxline_api::auth::Claims {
        sub: profile,
        company_id: company,
        role,
        email,
        iat: now,
        exp: now + hours * 3600,
    };
    let token = voxline_api::auth::Keys::hs256(&secret)
        .mint(&claims)
        .context("signing the token")?;
    println!("{token}");
    Ok(())
}
