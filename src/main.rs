//! The `voxline` binary: parses the command line, loads configuration and wires the crates
//! together. No behaviour of its own lives here.

mod bench;
mod bench_fairness;
mod bench_intake;
mod billing_cmd;
mod models;
mod ops;
mod services;
mod table;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use voxline_domain::Settings;

#[derive(Parser)]
#[command(
    name = "voxline",
    version,
    about = "voxline: intake API, job workers and scheduler for voice coaching"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: HTTP API, every worker pool, the scheduler.
    Serve,
    /// The HTTP API alone.
    Api,
    /// Worker pools (and the scheduler: maintenance and cron).
    Worker {
        /// Queues to work, comma-separated (default: every configured queue).
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
        /// Leave maintenance and cron to other processes.
        #[arg(long, hide = true)]
        no_scheduler: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Job counts by state for each queue.
    Queues {
        #[command(subcommand)]
        command: Option<ops::QueuesCommand>,
        #[arg(long)]
        json: bool,
        /// Refresh every N seconds until interrupted.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
    },
    /// Inspect and act on jobs.
    Jobs {
        #[command(subcommand)]
        command: ops::JobsCommand,
    },
    /// Print a signed JWT for local use (the embedded default's secret, or auth.jwt_secret).
    Token {
        #[arg(long)]
        company: String,
        #[arg(long)]
        profile: String,
        #[arg(long, default_value = "member")]
        role: voxline_api::auth::Role,
        /// The address mail to this profile goes to.
        #[arg(long)]
        email: Option<String>,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: i64,
    },
    /// Benchmarks that print one `key=value` summary line.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Stripe billing: `reconcile [--dry-run]` repairs the local copy of the subscriptions.
    Billing {
        #[command(subcommand)]
        command: billing_cmd::BillingCommand,
    },
    /// The local transcription model (offline Whisper).
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS stack for every client in the process (sqlx, redis, HTTP clients): rustls + ring.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a TLS crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // In the runtime's context: the span exporter's batch processor is a task on it.
    let installed = {
        let _in_runtime = runtime.enter();
        telemetry::init(&settings.telemetry)
    };
    let telemetry = match installed {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => services::run(settings, services::Roles::all()).await,
            Command::Api => services::run(settings, services::Roles::api()).await,
            Command::Worker {
                queues,
                no_scheduler,
            } => services::run(settings, services::Roles::worker(queues, !no_scheduler)).await,
            Command::Migrate => services::migrate(settings).await,
            Command::Queues {
                command: Some(command),
                ..
            } => ops::queue_action(settings, command).await,
            Command::Queues {
                command: None,
                json,
                watch,
            } => ops::queues(settings, json, watch).await,
            Command::Jobs { command } => ops::jobs(settings, command).await,
            Command::Bench { command } => bench::run(settings, command).await,
            Command::Models { command } => models::run(settings, command).await,
            Command::Billing { command } => billing_cmd::run(settings, command).await,
            Command::Token {
                company,
                profile,
                role,
                email,
                hours,
            } => ops::token(&settings, company, profile, role, email, hours),
        }
    });
    // Here, on the main thread with the runtime still up: the flush blocks until the batch
    // processor (a task on the runtime) has sent what it holds.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
