//! [`ProfileStore`] on Postgres.

use async_trait::async_trait;

use super::{Profile, ProfileStore, SELECT_BY_ID, SELECT_IN_COMPANY, kept_company, profile};
use crate::db::{PgDb, Scope};
use crate::{DbError, portable};

#[async_trait]
impl ProfileStore for PgDb {
    async fn upsert_seen(&self, p: &Profile) -> Result<bool, DbError> {
        // Platform: the profile may already belong to another company, which this has to
        // see to refuse the move (a tenant-scoped upsert would fail on the hidden row).
        let mut tx = self.begin_scoped(Scope::Platform).await?;
        let company = sqlx::query_scalar(
            "INSERT INTO profiles (id, company_id, email, role) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, role = EXCLUDED.role,
                 updated_at = now()
               WHERE profiles.company_id = EXCLUDED.company_id
             RETURNING company_id",
        )
        .bind(&p.id)
        .bind(&p.company_id)
        .bind(&p.email)
        .bind(&p.role)
        .fetch_optional(&mut *tx)
        .await?;
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
