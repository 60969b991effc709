//! voxline's worker pools: the handlers each queue runs. The engine (claiming, retries,
//! time-outs, shutdown) lives in `voxline-jobs`; this crate only says what a job does.

pub mod analysis;
pub mod billing;
pub mod diag;
pub mod email;
pub mod maintenance;
pub mod openai;
pub mod pipeline;
pub mod transcription;

use voxline_domain::{Db, Settings};
use voxline_jobs::{DeadHooks, Handlers};

/// What voxline does when one of its jobs dies, by job kind: for every process that can see a
/// job die (the worker pools, and the maintenance leader's rescue).
pub fn dead_hooks(db: &Db) -> DeadHooks {
    pipeline::dead_hooks(db)
}

/// Every handler voxline runs, by job kind. Fails when a worker cannot be set up from the
/// configuration (e.g. an unusable `smtp.url`).
pub fn handlers(db: &Db, settings: &Settings) -> Result<Handlers, String> {
    let handlers = Handlers::new().with_dead_hooks(dead_hooks(db));
    let handlers = diag::register(handlers);
    let jobs = voxline_jobs::JobClient::new(db.clone(), std::sync::Arc::new(settings.clone()));
    let handlers = maintenance::register(handlers, jobs.clone());
    // One OpenAI adapter (and so one circuit breaker) for transcription and chat alike.
    let openai = openai::OpenAi::from_settings(&settings.openai).map_err(|e| e.to_string())?;
    let handlers =
        transcription::TranscriptionWorker::new(jobs.clone(), openai.clone()).register(handlers);
    let handlers = billing::BillingWorker::new(
        db.clone(),
        std::sync::Arc::new(settings.clone()),
        jobs.clone(),
    )?
    .register(handlers);
    let handlers = analysis::register(handlers, jobs, openai);
    Ok(email::EmailWorker::new(db.clone(), settings)?.register(handlers))
}
