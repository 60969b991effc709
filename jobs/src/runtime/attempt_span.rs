//! The `job.attempt` span a claimed job's handler runs in, whose parent is the span that
//! enqueued the job (the W3C context stored with it): the attempts of a session's jobs appear
//! in the trace of the `POST /api/sessions` that created it, and whatever a handler enqueues
//! joins that trace in turn, since it enqueues from inside this span.

use tracing::Span;
use tracing::field::Empty;
use voxline_domain::trace_context;

use crate::model::{ClaimedJob, Outcome};

/// The span of `job`'s attempt, to run its handler in (not entered yet: its parent is set
/// here, before its OpenTelemetry span starts).
pub(super) fn start(job: &ClaimedJob) -> Span {
    let span = tracing::info_span!(
        "job.attempt",
        job.queue = %job.queue,
        job.kind = %job.kind,
        job.id = job.id.0,
        job.attempt = job.attempt,
        job.outcome = Empty,
        otel.kind = "consumer",
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    if let Some(enqueued_by) = job.trace_context.as_deref() {
        trace_context::set_parent(&span, enqueued_by, None);
        // Every attempt is a child of the enqueuing span, retries included, so one trace
        // holds all of a session's work however often a step failed. A retry also carries a
        // link to that span: the same span as its parent, but a link is how OpenTelemetry's
        // messaging conventions mark a redelivered message, and trace views show it on the
        // span itself, telling a retry (linked) from a first attempt at a glance.
        if job.attempt > 1 {
            trace_context::add_link(&span, enqueued_by);
        }
    }
    span
}

/// Records how the attempt ended; a failure marks the span as an error.
pub(super) fn finish(span: &Span, outcome: &Outcome) {
    let (label, error) = match outcome {
        Outcome::Done => ("done", None),
        Outcome::Retry { error, .. } => ("retry", Some(error)),
        Outcome::Dead { error } => ("dead", Some(error)),
        Outcome::Snooze { .. } => ("snooze", None),
    };
    span.record("job.outcome", label);
    if let Some(error) = error {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", error.as_str());
    }
}
