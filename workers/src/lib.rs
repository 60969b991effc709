//! voxline's worker pools: the handlers each queue runs. The engine (claiming, retries,
//! time-outs, shutdown) lives in `voxline-jobs`; this crate only says what a job does.

pub mod analysis;
pub mod diag;
pub mod email;
pub mod maintenance;
pub mod pipeline;

use voxline_domain::{Db, Settings};
use voxline_jobs::Handlers;

/// Every handler voxline runs, by job kind. Fails when a worker cannot be set up from the
/// configuration (e.g. an unusable `smtp.url`).
pub fn handlers(db: &Db, settings: &Settings) -> Result<Handlers, String> {
    let handlers = Handlers::new();
    let handlers = diag::register(handlers);
    let handlers = maintenance::register(handlers, db.clone(), settings.retention.clone());
    let jobs = voxline_jobs::JobClient::new(db.clone(), std::sync::Arc::new(settings.clone()));
    let handlers = analysis::register(handlers, jobs);
    Ok(email::EmailWorker::new(db.clone(), settings)?.register(handlers))
}
