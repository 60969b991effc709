//! Usage rows on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Postgres;

use super::{UsageStore, UsageTotal, UsageWrites};
use crate::DbError;
use crate::db::{PgDb, Scope};

#[async_trait]
impl UsageStore for PgDb {
    async fn total(
        &self,
        company: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageTotal, DbError> {
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        UsageWrites::total(&mut tx, company, from, to).await
    }
}

usage_writes!(Postgres);
