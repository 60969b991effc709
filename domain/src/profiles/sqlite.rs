//! [`ProfileStore`] on SQLite (times as microseconds since the epoch).

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::{
    Profile, ProfileStore, SELECT_BY_ID, SELECT_IN_COMPANY, kept_company, profile,
    upsert_seen_params, upsert_seen_sql,
};
use crate::db::SqliteDb;
use crate::{DbError, portable};

#[async_trait]
impl ProfileStore for SqliteDb {
    async fn upsert_seen(&self, p: &Profile) -> Result<bool, DbError> {
        let sql = AssertSqlSafe(upsert_seen_sql("$5"));
        let company = portable::scalar(&self.pool, sql, &upsert_seen_params(p)).await?;
        Ok(kept_company(company, p))
    }

    async fn get(&self, id: &str) -> Result<Option<Profile>, DbError> {
        let row = portable::optional(&self.pool, SELECT_BY_ID, &[id.into()]).await?;
        Ok(row.map(profile))
    }

    async fn get_in(&self, company: &str, id: &str) -> Result<Option<Profile>, DbError> {
        let row =
            portable::optional(&self.pool, SELECT_IN_COMPANY, &[company.into(), id.into()]).await?;
        Ok(row.map(profile))
    }
}
