//! Whether a company may submit one more session: its plan (chosen by the policy) against the
//! sessions and minutes it has used, counted in the database.

use chrono::{DateTime, Utc};

use super::policy::{DailySessions, Denial, QuotaError, choose_plan, day_bounds, month_bounds};
use super::store::subscriptions::company_subscriptions;
use crate::db::Scope;
use crate::{Db, DbError, Settings, Tx, usage};

/// The sessions a company submitted in a window; the same text runs on both databases (SQLite
/// reads `$N` as the N-th bound value), which bind the window in their own time encoding.
const SESSIONS_CREATED: &str =
    "SELECT count(*) FROM sessions WHERE company_id = $1 AND created_at >= $2 AND created_at < $3";

/// Sessions the company submitted in `[from, to)`.
pub async fn sessions_created(
    db: &Db,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, DbError> {
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query_scalar(SESSIONS_CREATED)
                .bind(company)
                .bind(from)
                .bind(to)
                .fetch_one(&mut *tx)
                .await?
        }
        Db::Sqlite(lite) => {
            sqlx::query_scalar(SESSIONS_CREATED)
                .bind(company)
                .bind(from.timestamp_micros())
                .bind(to.timestamp_micros())
                .fetch_one(&lite.pool)
                .await?
        }
    })
}

/// May the company submit one more session now? Limits of 0 are not checked (nor queried).
/// Returns the daily session limit to hold in the submission's transaction, if the plan has one:
/// the check here is a cheap early answer, [`hold_daily_slot`] is the exact one. The monthly
/// minutes stay a soft limit: a session's minutes are known only once it is analysed.
pub async fn check_quota(
    db: &Db,
    settings: &Settings,
    company: &str,
    now: DateTime<Utc>,
) -> Result<Option<DailySessions>, QuotaError> {
    let subs = company_subscriptions(db, company).await?;
    let choice = choose_plan(settings, &subs);
    let plan = choice.plan;
    if plan.requires_subscription && !choice.usable {
        return Err(QuotaError::Denied(Denial::SubscriptionRequired {
            plan: choice.name.to_string(),
        }));
    }
    let mut daily = None;
    if plan.sessions_per_day > 0 {
        let (from, to) = day_bounds(now);
        let limit = DailySessions {
            plan: choice.name.to_string(),
            limit: plan.sessions_per_day,
            from,
            to,
        };
        limit.admit(sessions_created(db, company, from, to).await?)?;
        daily = Some(limit);
    }
    if plan.minutes_per_month > 0 {
        let (from, to) = month_bounds(now);
        let used = usage::total(db, company, from, to).await?.seconds / 60.0;
        if used >= plan.minutes_per_month as f64 {
            return Err(QuotaError::Denied(Denial::MinutesPerMonth {
                plan: choice.name.to_string(),
                limit: plan.minutes_per_month,
                used,
                resets_at: to,
            }));
        }
    }
    Ok(daily)
}

/// Makes the daily session limit exact: called in the transaction that writes a new session,
/// before the write. It serialises the company's submissions until the commit — on Postgres
/// with a transaction-scoped advisory lock per company, on SQLite by the write lock that
/// `BEGIN IMMEDIATE` already holds — and counts again, so submissions racing at the limit
/// cannot all pass. Only plans with a daily limit pay for the lock.
pub async fn hold_daily_slot(
    tx: &mut Tx<'_>,
    company: &str,
    daily: &DailySessions,
) -> Result<(), QuotaError> {
    let used: i64 = match tx {
        Tx::Postgres(tx) => {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('voxline-daily-sessions:' || $1, 0))")
                .bind(company)
                .execute(&mut **tx)
                .await
                .map_err(DbError::from)?;
            // A new statement, so a new snapshot: it sees what a racer committed before
            // releasing the lock.
            sqlx::query_scalar(SESSIONS_CREATED)
                .bind(company)
                .bind(daily.from)
                .bind(daily.to)
                .fetch_one(&mut **tx)
                .await
                .map_err(DbError::from)?
        }
        Tx::Sqlite { tx, .. } => sqlx::query_scalar(SESSIONS_CREATED)
            .bind(company)
            .bind(daily.from.timestamp_micros())
            .bind(daily.to.timestamp_micros())
            .fetch_one(&mut **tx)
            .await
            .map_err(DbError::from)?,
    };
    daily.admit(used)
}
