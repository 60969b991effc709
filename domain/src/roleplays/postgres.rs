//! [`RoleplayStore`] and [`RoleplayTxStore`] on Postgres.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, PgConnection};

use super::{NewRoleplay, RoleplayStore, insert_params, insert_sql};
use crate::DbError;
use crate::db::{PgDb, Scope};
use crate::portable;

#[async_trait]
impl RoleplayStore for PgDb {
    async fn insert(&self, roleplay: &NewRoleplay<'_>) -> Result<(), DbError> {
        let mut tx = self
            .begin_scoped(Scope::Profile {
                company: roleplay.company_id,
                profile: roleplay.profile_id,
            })
            .await?;
        let sql = AssertSqlSafe(insert_sql("now()"));
        portable::execute(&mut *tx, sql, &insert_params(roleplay)).await?;
        tx.commit().await?;
        Ok(())
    }
}

roleplay_tx_store!(PgConnection, sqlx::Postgres);
