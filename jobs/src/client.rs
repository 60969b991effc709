//! Enqueueing: the one way jobs enter the system, inside the caller's transaction or alone.

use std::sync::Arc;

use voxline_domain::{Db, Settings, Tx};

use crate::error::JobError;
use crate::model::{Enqueued, NewJob};
use crate::store;

/// Enqueues jobs with the queue defaults from configuration. Cheap to clone.
#[derive(Clone)]
pub struct JobClient {
    db: Db,
    settings: Arc<Settings>,
}

impl JobClient {
    pub fn new(db: Db, settings: Arc<Settings>) -> Self {
        JobClient { db, settings }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn max_attempts(&self, job: &NewJob) -> u32 {
        job.max_attempts
            .unwrap_or_else(|| self.settings.queue(&job.queue).max_attempts)
    }

    fn pg_channel(&self) -> &str {
        match &self.db {
            Db::Postgres(pg) => &pg.notify_channel,
            Db::Sqlite(_) => "",
        }
    }

    /// Enqueues `job` in the caller's transaction: it becomes visible to workers only if and
    /// when that transaction commits, together with the caller's own rows.
    pub async fn enqueue(&self, tx: &mut Tx<'_>, job: &NewJob) -> Result<Enqueued, JobError> {
        store::insert(tx, job, self.max_attempts(job), self.pg_channel()).await
    }

    /// Enqueues `job` on its own: one autocommit statement, durable when this returns.
    pub async fn enqueue_now(&self, job: &NewJob) -> Result<Enqueued, JobError> {
        store::insert_now(&self.db, job, self.max_attempts(job)).await
    }

    /// Enqueues many jobs in one transaction (bulk insert); returns how many were new.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<u64, JobError> {
        let resolved: Vec<(NewJob, u32)> = jobs
            .into_iter()
            .map(|job| {
                let attempts = self.max_attempts(&job);
                (job, attempts)
            })
            .collect();
        store::insert_many(&self.db, &resolved).await
    }
}
