//! [`RoleplayStore`] and [`RoleplayTxStore`] on SQLite (times as microseconds since the epoch).

use async_trait::async_trait;
use chrono::Utc;
use sqlx::SqliteConnection;

use super::{
    NewRoleplay, RoleplayStatus, RoleplayStore, RoleplayTxStore, SELECT_CONVERSATION,
    SELECT_STATUS, TicketUse, roleplay_status, ticket_use,
};
use crate::db::SqliteDb;
use crate::{DbError, portable};

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

#[async_trait]
impl RoleplayStore for SqliteDb {
    async fn insert(&self, roleplay: &NewRoleplay<'_>) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO roleplays (id, company_id, profile_id, kind, title, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(roleplay.id)
        .bind(roleplay.company_id)
        .bind(roleplay.profile_id)
        .bind(roleplay.kind)
        .bind(roleplay.title)
        .bind(now_us())
        .bind(roleplay.expires_at.timestamp_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl RoleplayTxStore for SqliteConnection {
    async fn use_ticket(
        &mut self,
        company: &str,
        id: &str,
        conversation: &str,
    ) -> Result<TicketUse, DbError> {
        let bound = sqlx::query(
            "UPDATE roleplays SET conversation_id = $3, used_at = $4
             WHERE company_id = $1 AND id = $2 AND conversation_id IS NULL",
        )
        .bind(company)
        .bind(id)
        .bind(conversation)
        .bind(now_us())
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
            "UPDATE roleplays SET failed_at = $4, failure_reason = $3
             WHERE company_id = $1 AND id = $2 AND conversation_id IS NULL AND failed_at IS NULL",
        )
        .bind(company)
        .bind(id)
        .bind(reason)
        .bind(now_us())
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn status(&mut self, company: &str, id: &str) -> Result<Option<RoleplayStatus>, DbError> {
        let row = portable::optional(self, SELECT_STATUS, &[company.into(), id.into()]).await?;
        Ok(row.map(roleplay_status))
    }
}
