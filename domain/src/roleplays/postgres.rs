//! [`RoleplayStore`] and [`RoleplayTxStore`] on Postgres.

use async_trait::async_trait;
use sqlx::PgConnection;

use super::{
    NewRoleplay, RoleplayStatus, RoleplayStore, RoleplayTxStore, SELECT_CONVERSATION,
    SELECT_STATUS, TicketUse, roleplay_status, ticket_use,
};
use crate::db::{PgDb, Scope};
use crate::{DbError, portable};

#[async_trait]
impl RoleplayStore for PgDb {
    async fn insert(&self, roleplay: &NewRoleplay<'_>) -> Result<(), DbError> {
        let mut tx = self
            .begin_scoped(Scope::Profile {
                company: roleplay.company_id,
                profile: roleplay.profile_id,
            })
            .await?;
        sqlx::query(
            "INSERT INTO roleplays (id, company_id, profile_id, kind, title, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(roleplay.id)
        .bind(roleplay.company_id)
        .bind(roleplay.profile_id)
        .bind(roleplay.kind)
        .bind(roleplay.title)
        .bind(roleplay.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl RoleplayTxStore for PgConnection {
    async fn use_ticket(
        &mut self,
        company: &str,
        id: &str,
        conversation: &str,
    ) -> Result<TicketUse, DbError> {
        let bound = sqlx::query(
            "UPDATE roleplays SET conversation_id = $3, used_at = now()
             WHERE company_id = $1 AND id = $2 AND conversation_id IS NULL",
        )
        .bind(company)
        .bind(id)
        .bind(conversation)
        .execute(&mut *self)
        .await?
        .rows_affected();
        let current = portable::scalar(
            &mut *self,
            SELECT_CONVERSATION,
            &[company.into(), id.into()],
        )
        .await?;
        Ok(ticket_use(bound, current, conversation))
    }

    async fn fail(&mut self, company: &str, id: &str, reason: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE roleplays SET failed_at = now(), failure_reason = $3
             WHERE company_id = $1 AND id = $2 AND conversation_id IS NULL AND failed_at IS NULL",
        )
        .bind(company)
        .bind(id)
        .bind(reason)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn status(&mut self, company: &str, id: &str) -> Result<Option<RoleplayStatus>, DbError> {
        let row = portable::optional(self, SELECT_STATUS, &[company.into(), id.into()]).await?;
        Ok(row.map(roleplay_status))
    }
}
