//! [`NotificationStore`] on SQLite (times as microseconds since the epoch; one database file,
//! so no tenancy scope: every query names its company itself).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;

use super::{
    EmailKind, EmailRecord, LoggedEmail, NotificationStore, SELECT_LOGGED, SELECT_PREFERENCES,
    SELECT_SUPPRESSION, SendHolder, logged_email, normalized, not_claimed, with_defaults,
};
use crate::db::{Scope, SqliteDb};
use crate::{DbError, portable};

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

#[async_trait]
impl NotificationStore for SqliteDb {
    async fn preferences(
        &self,
        company: &str,
        profile: &str,
    ) -> Result<BTreeMap<EmailKind, bool>, DbError> {
        let rows = portable::all(
            &self.pool,
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (kind, enabled) in changes {
            sqlx::query(
                "INSERT INTO notification_preferences (company_id, profile_id, kind, enabled, updated_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (company_id, profile_id, kind)
                 DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
            )
            .bind(company)
            .bind(profile)
            .bind(kind.as_str())
            .bind(enabled)
            .bind(now_us())
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
            "INSERT INTO email_suppressions (address, reason, created_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(normalized(address))
        .bind(reason)
        .bind(now_us())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_send(
        &self,
        email: &EmailRecord<'_>,
        holder: SendHolder,
    ) -> Result<Result<(), LoggedEmail>, DbError> {
        let claimed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO email_log (dedupe_key, company_id, profile_id, recipient, template,
                                    subject_id, message_id, status, updated_at,
                                    claim_job, claim_lease)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'sending', $8, $9, $10)
             ON CONFLICT (dedupe_key) DO UPDATE SET status = 'sending', updated_at = $8,
                 claim_job = excluded.claim_job, claim_lease = excluded.claim_lease
             WHERE email_log.status = 'failed'
                OR (email_log.status = 'sending' AND (
                    (email_log.claim_job IS NULL AND email_log.updated_at < $8 - 600000000)
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
        .bind(now_us())
        .bind(holder.job)
        .bind(holder.lease)
        .fetch_optional(&self.pool)
        .await?;
        if claimed.is_some() {
            return Ok(Ok(()));
        }
        let logged = self.logged(email.scope(), email.dedupe_key).await?;
        Ok(Err(not_claimed(logged)))
    }

    async fn logged(
        &self,
        _scope: Scope<'_>,
        dedupe_key: &str,
    ) -> Result<Option<LoggedEmail>, DbError> {
        let row = portable::optional(&self.pool, SELECT_LOGGED, &[dedupe_key.into()]).await?;
        Ok(row.map(logged_email))
    }

    async fn finish(
        &self,
        email: &EmailRecord<'_>,
        status: &str,
        detail: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE email_log SET status = $2, detail = $3, updated_at = $4,
                    sent_at = CASE WHEN $2 = 'sent' THEN $4 END
             WHERE dedupe_key = $1",
        )
        .bind(email.dedupe_key)
        .bind(status)
        .bind(detail)
        .bind(now_us())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
