//! [`NotificationStore`] on Postgres: every tenant row in its company's scope, an email that
//! names no company in the platform's (see [`EmailRecord::scope`]).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{
    EmailKind, EmailRecord, LoggedEmail, NotificationStore, SELECT_LOGGED, SELECT_PREFERENCES,
    SELECT_SUPPRESSION, SendHolder, claim_send_params, claim_send_sql, finish_sql, logged_email,
    normalized, not_claimed, set_preference_sql, suppress_sql, with_defaults,
};
use crate::DbError;
use crate::db::{PgDb, Scope};
use crate::portable::{self, Param};
use sqlx::AssertSqlSafe;

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
            let params = [
                company.into(),
                profile.into(),
                kind.as_str().into(),
                (*enabled).into(),
                Param::Now,
            ];
            portable::execute(
                &mut *tx,
                AssertSqlSafe(set_preference_sql("now()")),
                &params,
            )
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
        let address = normalized(address);
        let sql = AssertSqlSafe(suppress_sql("now()"));
        let params = [(&address).into(), reason.into(), Param::Now];
        portable::execute(&self.pool, sql, &params).await?;
        Ok(())
    }

    async fn claim_send(
        &self,
        email: &EmailRecord<'_>,
        holder: SendHolder,
    ) -> Result<Result<(), LoggedEmail>, DbError> {
        let mut tx = self.begin_scoped(email.scope()).await?;
        let sql = AssertSqlSafe(claim_send_sql("now()", "now() - interval '10 minutes'"));
        let params = claim_send_params(email, holder);
        let claimed: Option<i64> = portable::scalar(&mut *tx, sql, &params).await?;
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
        let sql = AssertSqlSafe(finish_sql("now()"));
        let params = [
            email.dedupe_key.into(),
            status.into(),
            detail.into(),
            Param::Now,
        ];
        portable::execute(&mut *tx, sql, &params).await?;
        tx.commit().await?;
        Ok(())
    }
}
