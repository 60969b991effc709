//! [`NotificationStore`] on Postgres: every tenant row in its company's scope, an email that
//! names no company in the platform's (see [`EmailRecord::scope`]).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{
    EmailKind, EmailRecord, LoggedEmail, NotificationStore, SELECT_LOGGED, SELECT_PREFERENCES,
    SELECT_SUPPRESSION, SendHolder, logged_email, normalized, not_claimed, with_defaults,
};
use crate::db::{PgDb, Scope};
use crate::{DbError, portable};

#[async_trait]
impl NotificationStore for PgDb {
    async fn preferences(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<BTreeMap<EmailKind, bool>, DbError> {
        // A read: the transaction is dropped (rolled back) when done.
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        let rows = portable::all(
            &mut *tx,
            SELECT_PREFERENCES,
            &[company.into(), profile.into()],
        )
        .await?;
        Ok(with_defaults(rows))
    }

    async fn set_preferences(
        &self,
        company: &str,
        profile: &str,
        changes: &BTreeMap<EmailKind, bool>,
    ) -> Result<(), DbError> {
        let mut tx = self.begin_scoped(Scope::Company(company)).await?;
        for (kind, enabled) in changes {
            sqlx::query(
                "INSERT INTO notification_preferences (company_id, profile_id, kind, enabled)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (company_id, profile_id, kind)
                 DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = now()",
            )
            .bind(company)
            .bind(profile)
            .bind(kind.as_str())
            .bind(enabled)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn is_suppressed(&self, address: &str) -> Result<Option<String>, DbError> {
        let address = normalized(address);
        Ok(portable::scalar(&self.pool, SELECT_SUPPRESSION, &[(&address).into()]).await?)
    }

    async fn suppress(&self, address: &str, reason: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO email_suppressions (address, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(normalized(address))
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_send(
        &self,
        email: &EmailRecord<'_>,
        holder: SendHolder,
    ) -> Result<Result<(), LoggedEmail>, DbError> {
        let mut tx = self.begin_scoped(email.scope()).await?;
        let claimed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO email_log (dedupe_key, company_id, profile_id, recipient, template,
                                    subject_id, message_id, status,
                                    claim_job, claim_lease)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'sending', $8, $9)
             ON CONFLICT (dedupe_key) DO UPDATE SET status = 'sending', updated_at = now(),
                 claim_job = EXCLUDED.claim_job, claim_lease = EXCLUDED.claim_lease
             WHERE email_log.status = 'failed'
                OR (email_log.status = 'sending' AND (
                    (email_log.claim_job IS NULL
                     AND email_log.updated_at < now() - interval '10 minutes')
                    OR (email_log.claim_job IS NOT NULL AND NOT EXISTS (
                        SELECT 1 FROM jobs WHERE jobs.id = email_log.claim_job
                          AND jobs.lease = email_log.claim_lease AND jobs.state = 'running'))))
             RETURNING id",
        )
        .bind(email.dedupe_key)
        .bind(email.company_id)
        .bind(email.profile_id)
        .bind(email.recipient)
        .bind(email.template.as_str())
        .bind(email.subject_id)
        .bind(email.message_id)
        .bind(holder.job)
        .bind(holder.lease)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        if claimed.is_some() {
            return Ok(Ok(()));
        }
        let logged = self.logged(email.scope(), email.dedupe_key).await?;
        Ok(Err(not_claimed(logged)))
    }

    async fn logged(
        &self,
        scope: Scope<'_>,
        dedupe_key: &str,
    ) -> Result<Option<LoggedEmail>, DbError> {
        // A read: the transaction is dropped (rolled back) when done.
        let mut tx = self.begin_scoped(scope).await?;
        let row = portable::optional(&mut *tx, SELECT_LOGGED, &[dedupe_key.into()]).await?;
        Ok(row.map(logged_email))
    }

    async fn finish(
        &self,
        email: &EmailRecord<'_>,
        status: &str,
        detail: Option<&str>,
    ) -> Result<(), DbError> {
        let mut tx = self.begin_scoped(email.scope()).await?;
        sqlx::query(
            "UPDATE email_log SET status = $2, detail = $3, updated_at = now(),
                    sent_at = CASE WHEN $2 = 'sent' THEN now() END
             WHERE dedupe_key = $1",
        )
        .bind(email.dedupe_key)
        .bind(status)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
