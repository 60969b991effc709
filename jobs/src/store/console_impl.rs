//! The operators' console for one database, written once: [`impl_console!`] expands it for a
//! store with that database's pool, wake-up and [`super::console::Dialect`]. The SQL text is
//! the same on both (SQLite accepts `$n` placeholders; times are Unix microseconds where a
//! table is the console's own), and rows are decoded by [`super::row`], so only those three
//! differ.

/// Implements [`super::console::Console`] for `$store` (whose `db.pool` is a pool of `$db`),
/// and a free `add_minute_stats` on a `$db` connection for the stores' own transactions.
macro_rules! impl_console {
    ($store:ty, $db:ty, $dialect:expr, $wake:path) => {
        fn bind_all<'q>(
            mut query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
            args: Vec<$crate::store::console::Arg>,
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
            for arg in args {
                query = match arg {
                    $crate::store::console::Arg::Text(text) => query.bind(text),
                    $crate::store::console::Arg::Int(n) => query.bind(n),
                };
            }
            query
        }

        /// Adds `rows` to the activity table in `conn`'s transaction.
        pub(super) async fn add_minute_stats(
            conn: &mut <$db as sqlx::Database>::Connection,
            rows: &[$crate::store::console::MinuteStats],
        ) -> Result<(), $crate::error::JobError> {
            for row in rows {
                sqlx::query($crate::store::console::ADD_MINUTE_STATS)
                    .bind(row.minute)
                    .bind(&row.queue)
                    .bind(row.counts.enqueued)
                    .bind(row.counts.done)
                    .bind(row.counts.failed)
                    .bind(row.counts.dead)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::store::console::Console for $store {
            async fn list(
                &self,
                filter: &$crate::store::JobFilter,
            ) -> Result<Vec<$crate::model::Job>, $crate::error::JobError> {
                use $crate::store::console;
                let c = console::conditions(&$dialect, filter, None, true);
                let sql = format!(
                    "SELECT {} FROM jobs WHERE {} ORDER BY id DESC LIMIT {}",
                    $crate::store::JOB_COLUMNS,
                    c.clause(),
                    filter.limit
                );
                let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.args)
                    .fetch_all(&self.db.pool)
                    .await?;
                rows.iter().map($crate::store::row::decode_job).collect()
            }

            async fn count_matching(
                &self,
                filter: &$crate::store::JobFilter,
                states: &[$crate::state::JobState],
            ) -> Result<i64, $crate::error::JobError> {
                use sqlx::Row;
                let c = $crate::store::console::conditions(&$dialect, filter, Some(states), false);
                let sql = format!("SELECT count(*) FROM jobs WHERE {}", c.clause());
                let row = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.args)
                    .fetch_one(&self.db.pool)
                    .await?;
                Ok(row.try_get(0)?)
            }

            async fn act_on_matching(
                &self,
                filter: &$crate::store::JobFilter,
                action: $crate::store::console::BulkAction,
            ) -> Result<u64, $crate::error::JobError> {
                use sqlx::Row;
                use $crate::store::console::{self, Arg};
                let states = action.from_states();
                let mut c = console::conditions(&$dialect, filter, Some(&states), false);
                c.args.push(Arg::Int(chrono::Utc::now().timestamp_micros()));
                let sql = console::bulk_update(&$dialect, action, &c);
                let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.args)
                    .fetch_all(&self.db.pool)
                    .await?;
                let queues = rows
                    .iter()
                    .map(|r| r.try_get::<String, _>(0))
                    .collect::<Result<Vec<_>, _>>()?;
                let changed = queues.len() as u64;
                if action == console::BulkAction::Retry {
                    $wake(&self.db, queues).await?;
                }
                Ok(changed)
            }

            async fn pause_queue(
                &self,
                queue: &str,
                by: &str,
            ) -> Result<bool, $crate::error::JobError> {
                let result = sqlx::query($crate::store::console::PAUSE_QUEUE)
                    .bind(queue)
                    .bind(chrono::Utc::now().timestamp_micros())
                    .bind(by)
                    .execute(&self.db.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn resume_queue(&self, queue: &str) -> Result<bool, $crate::error::JobError> {
                let result = sqlx::query($crate::store::console::RESUME_QUEUE)
                    .bind(queue)
                    .execute(&self.db.pool)
                    .await?;
                // Idle fetchers of the queue wait for a wake-up: give them one.
                $wake(&self.db, vec![queue.to_string()]).await?;
                Ok(result.rows_affected() == 1)
            }

            async fn paused_queues(
                &self,
            ) -> Result<Vec<$crate::store::console::QueuePause>, $crate::error::JobError> {
                let rows = sqlx::query($crate::store::console::PAUSED_QUEUES)
                    .fetch_all(&self.db.pool)
                    .await?;
                rows.iter().map($crate::store::console::pause_row).collect()
            }

            async fn add_minute_stats(
                &self,
                rows: &[$crate::store::console::MinuteStats],
            ) -> Result<(), $crate::error::JobError> {
                // One transaction: a flush that fails adds nothing, so its counts can be retried.
                let mut tx = self.db.pool.begin().await?;
                add_minute_stats(&mut tx, rows).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn minute_stats(
                &self,
                since_minute: i64,
            ) -> Result<Vec<$crate::store::console::MinuteStats>, $crate::error::JobError> {
                let rows = sqlx::query($crate::store::console::MINUTE_STATS_SINCE)
                    .bind(since_minute)
                    .fetch_all(&self.db.pool)
                    .await?;
                Ok(rows
                    .iter()
                    .map($crate::store::console::minute_row)
                    .collect::<Result<_, _>>()?)
            }

            async fn activity(
                &self,
                window: std::time::Duration,
            ) -> Result<Vec<(String, i64, i64)>, $crate::error::JobError> {
                use sqlx::Row;
                let rows = sqlx::query($crate::store::console::ACTIVITY_SINCE)
                    .bind($crate::store::console::window_start(window))
                    .fetch_all(&self.db.pool)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect()
            }

            async fn prune_minute_stats(&self) -> Result<u64, $crate::error::JobError> {
                let now = $crate::store::console::minute_of(chrono::Utc::now());
                let result = sqlx::query($crate::store::console::PRUNE_MINUTE_STATS)
                    .bind(now - $crate::store::console::STATS_RETENTION_SECS)
                    .execute(&self.db.pool)
                    .await?;
                Ok(result.rows_affected())
            }
        }
    };
}

pub(super) use impl_console;
