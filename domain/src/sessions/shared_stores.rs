//! The session stores written once for both databases, as macros expanded in `postgres.rs`
//! and `sqlite.rs` (each expansion's `super` is the `sessions` module).

/// [`SessionReads`](super::SessionReads) for one database handle (`$handle`), invoked in
/// `postgres.rs` and `sqlite.rs`: the same statements on both databases, each run by
/// [`Own`](crate::portable::Own) in the scope it names.
macro_rules! session_reads {
    ($handle:ty) => {
        #[async_trait::async_trait]
        impl super::SessionReads for $handle {
            async fn find_external(
                &self,
                source: &str,
                external_id: &str,
            ) -> Result<Option<super::SessionRow>, $crate::DbError> {
                // Platform: the webhook asks which company's session a conversation made.
                let mut conn = self.own($crate::db::Scope::Platform).await?;
                let sql = sqlx::AssertSqlSafe(super::by_external_id_sql());
                let params = [source.into(), external_id.into()];
                let row = $crate::portable::row(&mut *conn, sql, &params).await?;
                Ok(row.as_ref().map(super::session_row).transpose()?)
            }

            async fn get(
                &self,
                company: &str,
                id: &str,
            ) -> Result<Option<super::SessionRow>, $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let sql = sqlx::AssertSqlSafe(super::by_id_sql());
                let params = [company.into(), id.into()];
                let row = $crate::portable::row(&mut *conn, sql, &params).await?;
                Ok(row.as_ref().map(super::session_row).transpose()?)
            }

            async fn segments(
                &self,
                company: &str,
                id: &str,
            ) -> Result<Option<serde_json::Value>, $crate::DbError> {
                self.json_of_session(super::SEGMENTS, "segments", company, id)
                    .await
            }

            async fn transcript(
                &self,
                company: &str,
                id: &str,
            ) -> Result<Option<super::StoredTranscript>, $crate::DbError> {
                use $crate::portable::Columns;
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let params = [company.into(), id.into()];
                let row = $crate::portable::row(&mut *conn, super::TRANSCRIPT, &params).await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let segments = row.json("segments").map_err(|e| {
                    $crate::DbError::Corrupt(format!("transcript of session {id}: {e}"))
                })?;
                let speakers = row.json_or_none("speakers")?;
                Ok(Some(super::StoredTranscript { segments, speakers }))
            }

            async fn feedback(
                &self,
                company: &str,
                id: &str,
            ) -> Result<Option<serde_json::Value>, $crate::DbError> {
                self.json_of_session(super::FEEDBACK, "metrics", company, id)
                    .await
            }

            async fn stored_response(
                &self,
                company: &str,
                profile: &str,
                key: &str,
            ) -> Result<Option<super::StoredResponse>, $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let params = [company.into(), profile.into(), key.into()];
                let sql = super::STORED_RESPONSE;
                let row = $crate::portable::row(&mut *conn, sql, &params).await?;
                Ok(row.as_ref().map(super::stored_response_row).transpose()?)
            }

            async fn list_of(
                &self,
                company: &str,
                profile: Option<&str>,
                before: Option<&str>,
                limit: i64,
            ) -> Result<Vec<super::SessionRow>, $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let sql = sqlx::AssertSqlSafe(super::list_sql());
                let params = [company.into(), before.into(), limit.into(), profile.into()];
                let rows = $crate::portable::rows(&mut *conn, sql, &params).await?;
                Ok(rows
                    .iter()
                    .map(super::session_row)
                    .collect::<Result<_, _>>()?)
            }

            async fn count_created(
                &self,
                company: &str,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
            ) -> Result<i64, $crate::DbError> {
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let params = [company.into(), from.into(), to.into()];
                let sql = super::COUNT_CREATED;
                let count = $crate::portable::scalar(&mut *conn, sql, &params).await?;
                Ok(count.unwrap_or_default())
            }
        }

        impl $handle {
            /// The JSON `column` of a session's row that `sql` selects (binding the company
            /// and the session id); an unreadable one is none, as its readers expect.
            async fn json_of_session(
                &self,
                sql: &'static str,
                column: &str,
                company: &str,
                id: &str,
            ) -> Result<Option<serde_json::Value>, $crate::DbError> {
                use $crate::portable::Columns;
                let mut conn = self.own($crate::db::Scope::Company(company)).await?;
                let params = [company.into(), id.into()];
                let row = $crate::portable::row(&mut *conn, sql, &params).await?;
                Ok(row.map(|r| r.json_or_none(column)).transpose()?.flatten())
            }
        }
    };
}

/// [`SessionWrites`](super::SessionWrites) for one driver's transaction (of `$dialect`),
/// invoked in `postgres.rs` and `sqlite.rs`: the same statements on both databases, but for the
/// time of the write, how new sessions are written (`insert`, and `insert_many` where one
/// statement writes several: each `async fn(&mut connection, …)` taking the trait method's
/// arguments) and the lock that serialises a company's new sessions (`lock`:
/// `async fn(&mut connection, company)`).
macro_rules! session_writes {
    (
        $dialect:ty,
        insert = $insert:path,
        $(insert_many = $insert_many:path,)?
        lock = $lock:path
    ) => {
        #[async_trait::async_trait]
        impl super::SessionWrites for sqlx::Transaction<'_, $dialect> {
            async fn insert(
                &mut self,
                s: &super::NewSession<'_>,
                segments: Option<&serde_json::Value>,
            ) -> Result<(), $crate::DbError> {
                $insert(&mut **self, s, segments).await
            }

            $(
                async fn insert_many(
                    &mut self,
                    rows: &[(super::NewSession<'_>, Option<&serde_json::Value>)],
                ) -> Result<(), $crate::DbError> {
                    $insert_many(&mut **self, rows).await
                }
            )?

            async fn save_transcript(
                &mut self,
                company: &str,
                id: &str,
                segments: &serde_json::Value,
                speakers: Option<&serde_json::Value>,
                duration_seconds: Option<f64>,
            ) -> Result<(), $crate::DbError> {
                let params = [id.into(), company.into(), segments.into(), speakers.into()];
                $crate::portable::execute(&mut **self, super::UPSERT_TRANSCRIPT, &params).await?;
                let params = [company.into(), id.into(), duration_seconds.into()];
                $crate::portable::execute(&mut **self, super::SET_DURATION, &params).await?;
                Ok(())
            }

            async fn store_response(
                &mut self,
                company: &str,
                profile: &str,
                key: &str,
                stored: &super::StoredResponse,
            ) -> Result<bool, $crate::DbError> {
                use $crate::portable::Dialect;
                let sql = sqlx::AssertSqlSafe(super::store_response_sql(&<$dialect>::now(7)));
                let params = super::store_response_params(company, profile, key, stored);
                Ok($crate::portable::execute(&mut **self, sql, &params).await? == 1)
            }

            async fn count_created_exclusively(
                &mut self,
                company: &str,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
            ) -> Result<i64, $crate::DbError> {
                $lock(&mut **self, company).await?;
                // A new statement, so a new snapshot: it sees what a racer committed before
                // releasing the lock.
                let params = [company.into(), from.into(), to.into()];
                let sql = super::COUNT_CREATED;
                let count = $crate::portable::scalar(&mut **self, sql, &params).await?;
                Ok(count.unwrap_or_default())
            }
        }
    };
}
