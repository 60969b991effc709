//! Enqueueing: the one way jobs enter the system, inside the caller's transaction or alone.

use std::borrow::Cow;
use std::sync::Arc;

use voxline_domain::{Db, Settings, Tx, trace_context};

use crate::args::ToJob;
use crate::enqueue_counts::EnqueueCounts;
use crate::error::JobError;
use crate::model::{Enqueued, NewJob};
use crate::store::{self, JobStore};

/// Enqueues jobs with the queue defaults from configuration. Cheap to clone.
#[derive(Clone)]
pub struct JobClient {
    db: Db,
    store: Arc<dyn JobStore>,
    settings: Arc<Settings>,
    /// New jobs per queue and minute, for operators' trends (none outside a Tokio runtime).
    counts: Option<Arc<EnqueueCounts>>,
}

impl JobClient {
    pub fn new(db: Db, settings: Arc<Settings>) -> Self {
        let store = store::for_db(&db);
        JobClient {
            counts: EnqueueCounts::start(store.clone()),
            store,
            db,
            settings,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The job store behind this client (operator reads and actions).
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn max_attempts(&self, job: &NewJob) -> u32 {
        job.max_attempts
            .unwrap_or_else(|| self.settings.queue(&job.queue).max_attempts)
    }

    /// Enqueues `job` in the caller's transaction: it becomes visible to workers only if and
    /// when that transaction commits, together with the caller's own rows.
    pub async fn enqueue(
        &self,
        tx: &mut Tx<'_>,
        job: &(impl ToJob + Sync),
    ) -> Result<Enqueued, JobError> {
        let job = job.to_new_job()?;
        let job = traced(&job);
        let enqueued = self
            .store
            .insert_in(tx, &job, self.max_attempts(&job))
            .await?;
        // Counted before the caller commits: a transaction rolled back afterwards leaves one
        // enqueue too many in the trend, never a job too few.
        self.counted(&job.queue, enqueued)
    }

    fn counted(&self, queue: &str, enqueued: Enqueued) -> Result<Enqueued, JobError> {
        if enqueued.inserted
            && let Some(counts) = &self.counts
        {
            counts.add(queue, 1);
        }
        Ok(enqueued)
    }

    /// Enqueues `job` on its own: one autocommit statement, durable when this returns.
    pub async fn enqueue_now(&self, job: &(impl ToJob + Sync)) -> Result<Enqueued, JobError> {
        let job = job.to_new_job()?;
        let job = traced(&job);
        let enqueued = self.store.insert(&job, self.max_attempts(&job)).await?;
        self.counted(&job.queue, enqueued)
    }

    /// Enqueues a cron tick's job and records the tick as its entry's latest (see
    /// [`crate::cron`]).
    pub async fn enqueue_tick(
        &self,
        entry: &str,
        tick: i64,
        job: &NewJob,
    ) -> Result<Enqueued, JobError> {
        let job = traced(job);
        let enqueued = self
            .store
            .enqueue_tick(entry, tick, &job, self.max_attempts(&job))
            .await?;
        self.counted(&job.queue, enqueued)
    }

    /// Enqueues many jobs in one transaction (bulk insert); returns how many were new.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<u64, JobError> {
        let resolved = self.resolved(jobs);
        let inserted = self.store.insert_many(&resolved).await?;
        self.counted_many(&resolved, inserted);
        Ok(inserted)
    }

    /// Enqueues many jobs in the caller's transaction (see [`JobClient::enqueue`]); returns how
    /// many were new.
    pub async fn enqueue_many_in(
        &self,
        tx: &mut Tx<'_>,
        jobs: Vec<NewJob>,
    ) -> Result<u64, JobError> {
        let resolved = self.resolved(jobs);
        let inserted = self.store.insert_many_in(tx, &resolved).await?;
        self.counted_many(&resolved, inserted);
        Ok(inserted)
    }

    /// Each job with the current trace context (unless it names its own) and its resolved
    /// attempts.
    fn resolved(&self, jobs: Vec<NewJob>) -> Vec<(NewJob, u32)> {
        let context = trace_context::current();
        jobs.into_iter()
            .map(|mut job| {
                if job.trace_context.is_none() {
                    job.trace_context.clone_from(&context);
                }
                let attempts = self.max_attempts(&job);
                (job, attempts)
            })
            .collect()
    }

    fn counted_many(&self, resolved: &[(NewJob, u32)], inserted: u64) {
        // The store reports how many were new, not which: a batch of one queue (the usual bulk
        // enqueue) counts exactly, a mixed one only when every job was new (else it is left
        // out of the trend rather than counted against the wrong queue).
        if let Some(counts) = &self.counts
            && let Some((first, _)) = resolved.first()
        {
            if resolved.iter().all(|(j, _)| j.queue == first.queue) {
                counts.add(&first.queue, inserted as i64);
            } else if inserted == resolved.len() as u64 {
                for (job, _) in resolved {
                    counts.add(&job.queue, 1);
                }
            }
        }
    }
}

/// `job` carrying the current span's trace context, so its attempts join the enqueuer's trace.
/// A job that names a context of its own keeps it; with telemetry off no span has one and the
/// job is used as it is, uncopied.
fn traced(job: &NewJob) -> Cow<'_, NewJob> {
    if job.trace_context.is_some() {
        return Cow::Borrowed(job);
    }
    match trace_context::current() {
        Some(context) => Cow::Owned(NewJob {
            trace_context: Some(context),
            ..job.clone()
        }),
        None => Cow::Borrowed(job),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_telemetry_off_a_job_is_enqueued_as_it_is_with_no_context() {
        // No OpenTelemetry layer, as when telemetry.otlp_endpoint is unset: even inside a
        // span there is no context to store, and the job is not copied.
        let job = NewJob::new("email", "email.send", serde_json::json!({}));
        let span = tracing::info_span!("request");
        let _entered = span.enter();
        let traced = traced(&job);
        assert!(matches!(traced, Cow::Borrowed(_)));
        assert_eq!(traced.trace_context, None);
    }

    #[test]
    fn a_context_the_job_names_itself_is_kept() {
        let mut job = NewJob::new("email", "email.send", serde_json::json!({}));
        job.trace_context = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        assert_eq!(traced(&job).trace_context, job.trace_context);
    }
}
