//! [`NotificationStore`] on SQLite (times as microseconds since the epoch; one database file,
//! so no tenancy scope: every query names its company itself).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{
    EmailKind, EmailRecord, LoggedEmail, NotificationStore, SELECT_LOGGED, SELECT_PREFERENCES,
    SELECT_SUPPRESSION, SendHolder, claim_send_params, claim_send_sql, finish_sql, logged_email,
    normalized, not_claimed, set_preference_sql, suppress_sql, with_defaults,
};
use crate::DbError;
use crate::db::{Scope, SqliteDb};
use crate::portable::{self, Param};
use sqlx::AssertSqlSafe;

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
            let params = [
                company.into(),
                profile.into(),
                kind.as_str().into(),
                (*enabled).into(),
                Param::Now,
            ];
            let sql = AssertSqlSafe(set_preference_sql("$5"));
            portable::execute(&mut *tx, sql, &params).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn is_suppressed(&self, address: &str) -> Result<Option<String>, DbError> {
        let address = normalized(address);
        Ok(portable::scalar(&self.pool, SELECT_SUPPRESSION, &[(&address).into()]).await?)
    }

    async fn suppress(&self, address: &str, reason: &str) -> Result<(), DbError> {
        let address = normalized(address);
        let sql = AssertSqlSafe(suppress_sql("$3"));
        let params = [(&address).into(), reason.into(), Param::Now];
        portable::execute(&self.pool, sql, &params).await?;
        Ok(())
    }

    async fn claim_send(
        &self,
        email: &EmailRecord<'_>,
        holder: SendHolder,
    ) -> Result<Result<(), LoggedEmail>, DbError> {
        let sql = AssertSqlSafe(claim_send_sql("$10", "$10 - 600000000"));
        let params = claim_send_params(email, holder);
        let claimed: Option<i64> = portable::scalar(&self.pool, sql, &params).await?;
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
        let sql = AssertSqlSafe(finish_sql("$4"));
        let params = [
            email.dedupe_key.into(),
            status.into(),
            detail.into(),
            Param::Now,
        ];
        portable::execute(&self.pool, sql, &params).await?;
        Ok(())
    }
}
