//! Usage rows on SQLite (times as microseconds).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Sqlite;

use super::{IN_WINDOW, UsageStore, UsageTotal, usage_total};
use crate::db::SqliteDb;
use crate::{DbError, portable};

#[async_trait]
impl UsageStore for SqliteDb {
    async fn total(
        &self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageTotal, DbError> {
        let params = [company.into(), from.into(), to.into()];
        usage_total(portable::optional(&self.pool, IN_WINDOW, &params).await?)
    }
}

usage_writes!(Sqlite);
