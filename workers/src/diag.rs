//! Diagnostic job kinds with known behaviour, used by `voxline bench` and by the engine's
//! end-to-end tests against real worker processes. They touch nothing but their own job.
//!
//! - `diag.noop`: succeeds at once.
//! - `diag.sleep` `{"ms": N}`: sleeps N ms, then succeeds (time-outs, shutdown, crash tests).
//! - `diag.fail` `{"until_attempt": N, "permanent": false, "retry_after_ms": null}`: fails
//!   every attempt before N (all of them when N is absent), retryably unless `permanent`.
//! - `diag.panic`: panics (the engine must turn that into a failed attempt).

use std::time::Duration;

use serde::Deserialize;
use voxline_jobs::{ClaimedJob, HandlerError, Handlers};

pub const NOOP: &str = "diag.noop";
pub const SLEEP: &str = "diag.sleep";
pub const FAIL: &str = "diag.fail";
pub const PANIC: &str = "diag.panic";

#[derive(Debug, Deserialize)]
struct SleepArgs {
    ms: u64,
}

#[derive(Debug, Deserialize)]
struct FailArgs {
    until_attempt: Option<u32>,
    #[serde(default)]
    permanent: bool,
    retry_after_ms: Option<u64>,
}

fn args<T: serde::de::DeserializeOwned>(job: &ClaimedJob) -> Result<T, HandlerError> {
    serde_json::from_value(job.payload.clone())
        .map_err(|e| HandlerError::permanent(format!("bad {} payload: {e}", job.kind)))
}

pub fn register(handlers: Handlers) -> Handlers {
    handlers
        .register(NOOP, |_job: ClaimedJob| async { Ok(()) })
        .register(SLEEP, |job: ClaimedJob| async move {
            let SleepArgs { ms } = args(&job)?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        })
        .register(FAIL, |job: ClaimedJob| async move {
            let a: FailArgs = args(&job)?;
            if a.until_attempt.is_some_and(|n| job.attempt >= n) {
                return Ok(());
            }
            let message = format!("diag.fail: attempt {} failed on purpose", job.attempt);
            Err(match (a.permanent, a.retry_after_ms) {
                (true, _) => HandlerError::permanent(message),
                (false, Some(ms)) => HandlerError::retry_after(message, Duration::from_millis(ms)),
                (false, None) => HandlerError::retry(message),
            })
        })
        .register(PANIC, |_job: ClaimedJob| async move {
            panic!("diag.panic: panicking on purpose");
        })
}
