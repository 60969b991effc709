//! The part of [`super::JobStore`] written once for both databases: [`impl_job_store!`]
//! expands it for a store whose `db` holds the pools. Where the two accept the same SQL
//! (SQLite takes `$n` placeholders) the statement is here; elsewhere the method calls the
//! backend's function of the same name, which each store module defines with the same
//! signature over its own `db`.

/// Implements [`super::JobStore`] for `$store`: the methods in braces are the backend's own
/// (enqueue, wake-ups, leadership, the caller's transactions), the rest are written here.
/// `$engine` names the pool of the worker runtime's writes (`db.engine_pool` on Postgres).
macro_rules! impl_job_store {
    ($store:ty, engine = $engine:ident, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::JobStore for $store {
            $($own)*

            async fn last_tick(&self, entry: &str) -> Result<Option<i64>, $crate::error::JobError> {
                Ok(
                    sqlx::query_scalar("SELECT last_tick FROM cron_ticks WHERE name = $1")
                        .bind(entry)
                        .fetch_optional(&self.db.pool)
                        .await?,
                )
            }

            async fn claim(
                &self,
                queue: &str,
                worker: &str,
                limit: usize,
            ) -> Result<Vec<$crate::model::ClaimedJob>, $crate::error::JobError> {
                if limit == 0 {
                    return Ok(Vec::new());
                }
                claim(&self.db, queue, worker, limit).await
            }

            async fn claim_fair(
                &self,
                queue: &str,
                worker: &str,
                limit: usize,
                per_company: Option<usize>,
            ) -> Result<Vec<$crate::model::ClaimedJob>, $crate::error::JobError> {
                if limit == 0 {
                    return Ok(Vec::new());
                }
                claim_fair(&self.db, queue, worker, limit, per_company).await
            }

            async fn complete(
                &self,
                completions: &[$crate::model::Completion],
                hooks: &$crate::handler::DeadHooks,
            ) -> Result<Vec<($crate::model::JobId, $crate::state::JobState)>, $crate::error::JobError>
            {
                if completions.is_empty() {
                    return Ok(Vec::new());
                }
                complete(&self.db, completions, hooks).await
            }

            async fn heartbeat(
                &self,
                leases: &[$crate::model::Lease],
            ) -> Result<Vec<$crate::model::Lease>, $crate::error::JobError> {
                if leases.is_empty() {
                    return Ok(Vec::new());
                }
                heartbeat(&self.db, leases).await
            }

            async fn release(
                &self,
                leases: &[$crate::model::Lease],
                started: bool,
            ) -> Result<u64, $crate::error::JobError> {
                if leases.is_empty() {
                    return Ok(0);
                }
                release(&self.db, leases, started).await
            }

            async fn set_progress(
                &self,
                lease: $crate::model::Lease,
                progress: &$crate::progress::JobProgress,
            ) -> Result<bool, $crate::error::JobError> {
                let result = sqlx::query(
                    "UPDATE jobs SET progress = $3, progress_note = $4
                     WHERE id = $1 AND lease = $2 AND state = 'running'",
                )
                .bind(lease.job.0)
                .bind(lease.token)
                .bind(i16::from(progress.percent.get()))
                .bind(progress.note.as_deref())
                .execute(&self.db.$engine)
                .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn progress_by_key(
                &self,
                unique_key: &str,
            ) -> Result<Option<$crate::store::KeyedProgress>, $crate::error::JobError> {
                let row = sqlx::query(
                    "SELECT id, state, progress, progress_note FROM jobs WHERE unique_key = $1",
                )
                .bind(unique_key)
                .fetch_optional(&self.db.pool)
                .await?;
                row.as_ref().map($crate::store::row::keyed_progress).transpose()
            }

            async fn rescue(
                &self,
                stale_after: std::time::Duration,
                hooks: &$crate::handler::DeadHooks,
            ) -> Result<Vec<($crate::model::JobId, $crate::state::JobState)>, $crate::error::JobError>
            {
                rescue(&self.db, stale_after, hooks).await
            }

            async fn prune(
                &self,
                retention: &voxline_domain::config::RetentionSettings,
                batch: u32,
            ) -> Result<u64, $crate::error::JobError> {
                let pruned = prune(&self.db, retention, batch).await?;
                $crate::store::console::Console::prune_minute_stats(self).await?;
                Ok(pruned)
            }

            async fn stats(&self) -> Result<Vec<$crate::model::QueueStats>, $crate::error::JobError> {
                let counts = queue_counts(&self.db).await?;
                let paused = $crate::store::console::Console::paused_queues(self).await?;
                Ok($crate::store::group_stats(counts, paused))
            }

            async fn list(
                &self,
                filter: &$crate::store::JobFilter,
            ) -> Result<Vec<$crate::model::Job>, $crate::error::JobError> {
                $crate::store::console::Console::list(self, filter).await
            }

            async fn get(
                &self,
                id: $crate::model::JobId,
            ) -> Result<Option<$crate::model::Job>, $crate::error::JobError> {
                let sql = format!("SELECT {} FROM jobs WHERE id = $1", $crate::store::JOB_COLUMNS);
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.0)
                    .fetch_optional(&self.db.pool)
                    .await?;
                row.as_ref().map($crate::store::row::decode_job).transpose()
            }

            async fn next_due(
                &self,
                queue: &str,
            ) -> Result<Option<chrono::DateTime<chrono::Utc>>, $crate::error::JobError> {
                let row = sqlx::query(
                    "SELECT min(run_at) AS due FROM jobs
                     WHERE queue = $1 AND state IN ('scheduled', 'retrying')
                       AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = $1)",
                )
                .bind(queue)
                .fetch_one(&self.db.$engine)
                .await?;
                $crate::store::row::JobRow::opt_time(&row, "due")
            }

            async fn unfinished(&self, queue: &str) -> Result<i64, $crate::error::JobError> {
                Ok(sqlx::query_scalar(
                    "SELECT count(*) FROM jobs
                     WHERE queue = $1 AND state IN ('scheduled', 'available', 'running', 'retrying')",
                )
                .bind(queue)
                .fetch_one(&self.db.pool)
                .await?)
            }

            async fn has_unfinished(&self, queue: &str) -> Result<bool, $crate::error::JobError> {
                // EXISTS stops at the first row the partial indexes find: cheap to poll.
                Ok(sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM jobs
                     WHERE queue = $1 AND state IN ('scheduled', 'available', 'running', 'retrying'))",
                )
                .bind(queue)
                .fetch_one(&self.db.pool)
                .await?)
            }

            async fn activity(
                &self,
                window: std::time::Duration,
            ) -> Result<Vec<(String, i64, i64)>, $crate::error::JobError> {
                $crate::store::console::Console::activity(self, window).await
            }

            async fn purge_queue(&self, queue: &str) -> Result<u64, $crate::error::JobError> {
                purge_queue(&self.db, queue).await
            }

            async fn make_available(
                &self,
                id: Option<$crate::model::JobId>,
                queue: Option<&str>,
                from: &[$crate::state::JobState],
            ) -> Result<Vec<$crate::model::JobId>, $crate::error::JobError> {
                retry(&self.db, id, queue, from).await
            }

            async fn cancel(
                &self,
                id: $crate::model::JobId,
                from: &[$crate::state::JobState],
            ) -> Result<bool, $crate::error::JobError> {
                cancel(&self.db, id, from).await
            }

            fn console(&self) -> &dyn $crate::store::console::Console {
                self
            }
        }
    };
}

pub(super) use impl_job_store;
