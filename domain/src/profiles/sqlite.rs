//! [`ProfileStore`] on SQLite (times as microseconds since the epoch).

use async_trait::async_trait;
use chrono::Utc;

use super::{Profile, ProfileStore, SELECT_BY_ID, SELECT_IN_COMPANY, kept_company, profile};
use crate::db::SqliteDb;
use crate::{DbError, portable};

#[async_trait]
impl ProfileStore for SqliteDb {
    async fn upsert_seen(&self, p: &Profile) -> Result<bool, DbError> {
        let company = sqlx::query_scalar(
            "INSERT INTO profiles (id, company_id, email, role, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, role = excluded.role,
                 updated_at = excluded.updated_at
               WHERE profiles.company_id = excluded.company_id
             RETURNING company_id",
        )
        .bind(&p.id)
        .bind(&p.company_id)
        .bind(&p.email)
        .bind(&p.role)
        .bind(Utc::now().timestamp_micros())
        .fetch_optional(&self.pool)
        .await?;
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
