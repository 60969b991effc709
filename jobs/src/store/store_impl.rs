//! The part of [`super::JobStore`] written once for both databases: [`impl_job_store!`]
//! expands it for a store whose `db` holds the pools. Where the two accept the same SQL
//! (SQLite takes `$n` placeholders) the statement is here; elsewhere the method calls the
//! backend's function of the same name, which each store module defines with the same
//! signature over its own `db`. Besides those, each backend supplies the few pieces the shared
//! statements need: `tx_connection` (the connection of a [`voxline_domain::Tx`]), `begin_tx`
//! (a transaction of the store's own), `wake_on_commit` (wakes the fetchers of queues once a
//! transaction commits), and the time of a write, `now_sql(n)` in the text with `bind_now` on
//! the query (Postgres' `now()`, binding nothing; SQLite's `$n`, bound to this process's
//! clock: so that parameter comes last).

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

            async fn enqueue_tick(
                &self,
                entry: &str,
                tick: i64,
                job: &$crate::model::NewJob,
                max_attempts: u32,
            ) -> Result<$crate::model::Enqueued, $crate::error::JobError> {
                // The job and its tick commit together: a tick is enqueued once.
                let mut tx = begin_tx(&self.db).await?;
                let enqueued =
                    $crate::store::JobStore::insert_in(self, &mut tx, job, max_attempts).await?;
                // A tick older than the latest (a late process) leaves the latest standing.
                sqlx::query(
                    "INSERT INTO cron_ticks (name, last_tick) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick
                     WHERE excluded.last_tick > cron_ticks.last_tick",
                )
                .bind(entry)
                .bind(tick)
                .execute(tx_connection(&mut tx)?)
                .await?;
                tx.commit().await?;
                Ok(enqueued)
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
                let mut pruned = 0;
                for (state, hours) in $crate::store::expiring_states(retention) {
                    pruned += prune(&self.db, state, hours, batch).await?;
                }
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
                use sqlx::Row;
                let sql = format!(
                    "UPDATE jobs SET state = 'available', attempt = 0, run_at = {}, finished_at = NULL,
                                     locked_by = NULL, heartbeat_at = NULL
                     WHERE (CAST($1 AS BIGINT) IS NULL OR id = $1)
                       AND (CAST($2 AS TEXT) IS NULL OR queue = $2) AND {}
                     RETURNING id, queue",
                    now_sql(3),
                    $crate::store::console::state_in(from)
                );
                let mut tx = begin_tx(&self.db).await?;
                let rows = bind_now(
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(id.map(|i| i.0))
                        .bind(queue),
                )
                .fetch_all(tx_connection(&mut tx)?)
                .await?;
                let mut ids = Vec::with_capacity(rows.len());
                let mut queues = Vec::with_capacity(rows.len());
                for row in &rows {
                    ids.push($crate::model::JobId(row.try_get("id")?));
                    queues.push(row.try_get("queue")?);
                }
                wake_on_commit(&self.db, &mut tx, queues).await?;
                tx.commit().await?;
                Ok(ids)
            }

            async fn cancel(
                &self,
                id: $crate::model::JobId,
                from: &[$crate::state::JobState],
            ) -> Result<bool, $crate::error::JobError> {
                let sql = format!(
                    "UPDATE jobs SET state = 'cancelled', finished_at = {}, locked_by = NULL
                     WHERE id = $1 AND {}",
                    now_sql(2),
                    $crate::store::console::state_in(from)
                );
                let result = bind_now(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.0))
                    .execute(&self.db.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            fn console(&self) -> &dyn $crate::store::console::Console {
                self
            }

            async fn cancel_for_erased(
                &self,
                tx: &mut voxline_domain::Tx<'_>,
                subject: &$crate::store::ErasedSubject<'_>,
            ) -> Result<u64, $crate::error::JobError> {
                cancel_for_erased(tx_connection(tx)?, subject).await
            }
        }
    };
}

pub(super) use impl_job_store;
