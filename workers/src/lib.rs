//! voxline's worker pools: the handlers each queue runs. The engine (claiming, retries,
//! time-outs, shutdown) lives in `voxline-jobs`; this crate only says what a job does.

pub mod diag;
pub mod maintenance;

use voxline_domain::{Db, Settings};
use voxline_jobs::Handlers;

/// Every handler voxline runs, by job kind.
pub fn handlers(db: &Db, settings: &Settings) -> Handlers {
    let handlers = Handlers::new();
    let handlers = diag::register(handlers);
    maintenance::register(handlers, db.clone(), settings.retention.clone())
}
