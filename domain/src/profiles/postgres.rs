//! [`ProfileStore`] on Postgres.

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::{
    Profile, ProfileStore, SELECT_BY_ID, SELECT_IN_COMPANY, kept_company, profile,
    upsert_seen_params, upsert_seen_sql,
};
use crate::db::{PgDb, Scope};
use crate::{DbError, portable};

#[async_trait]
impl ProfileStore for PgDb {
    async fn upsert_seen(&self, p: &Profile) -> Result<bool, DbError> {
        // Platform: the profile may already belong to another company, which this has to
        // see to refuse the move (a tenant-scoped upsert would fail on the hidden row).
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        let sql = AssertSqlSafe(upsert_seen_sql("now()"));
        let company = portable::scalar(&mut *tx, sql, &upsert_seen_params(p)).await?;
        tx.commit().await?;
        Ok(kept_company(company, p))
    }

    async fn get(&self, id: &str) -> Result<Option<Profile>, DbError> {
        // Platform: webhooks learn a profile's company from this row.
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        let row = portable::optional(&mut *tx, SELECT_BY_ID, &[id.into()]).await?;
        Ok(row.map(profile))
    }

    async fn get_in(&self, company: &str, id: &str) -> Result<Option<Profile>, DbError> {
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        let row =
            portable::optional(&mut *tx, SELECT_IN_COMPANY, &[company.into(), id.into()]).await?;
        Ok(row.map(profile))
    }
}
