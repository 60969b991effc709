//! Whether a company may submit one more session: its plan (chosen by the policy) against the
//! sessions and minutes it has used, counted in the database.

use chrono::{DateTime, Utc};

use super::policy::{
    DailySessions, Denial, PlanChoice, QuotaError, choose_plan, day_bounds, month_bounds,
};
use super::store::subscriptions::{
    SubscriptionRow, company_subscriptions, company_subscriptions_in,
};
use crate::{Db, DbError, Settings, Tx, usage};

/// Sessions the company submitted in `[from, to)`.
pub async fn sessions_created(
    db: &Db,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, DbError> {
    db.sessions().count_created(company, from, to).await
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
    let Admission { choice, daily } = admission(settings, &subs, now)?;
    if let Some(limit) = &daily {
        limit.admit(sessions_created(db, company, limit.from, limit.to).await?)?;
    }
    if choice.plan.minutes_per_month > 0 {
        let (from, to) = month_bounds(now);
        let used = usage::total(db, company, from, to).await?.seconds;
        minutes_left(&choice, used, to)?;
    }
    Ok(daily)
}

/// The whole quota check, exact, inside the transaction that writes the new session (on
/// Postgres scoped to the company): it reads the company's subscriptions and, when the plan
/// limits them, its month's minutes in that transaction, and holds a daily slot
/// ([`hold_daily_slot`]) only when the plan has a daily session limit, so a plan without one
/// pays for no lock. Reading inside the writing transaction saves the two transactions a
/// separate check would open.
pub async fn admit_in(
    tx: &mut Tx<'_>,
    settings: &Settings,
    company: &str,
    now: DateTime<Utc>,
) -> Result<(), QuotaError> {
    let subs = company_subscriptions_in(tx, company).await?;
    let Admission { choice, daily } = admission(settings, &subs, now)?;
    if let Some(daily) = &daily {
        hold_daily_slot(tx, company, daily).await?;
    }
    if choice.plan.minutes_per_month > 0 {
        let (from, to) = month_bounds(now);
        let used = usage::total_in(tx, company, from, to).await?.seconds;
        minutes_left(&choice, used, to)?;
    }
    Ok(())
}

/// The plan that applies and the daily limit it sets, if any.
struct Admission<'s> {
    choice: PlanChoice<'s>,
    daily: Option<DailySessions>,
}

/// Chooses the company's plan from its subscriptions; refuses a plan that needs a usable
/// subscription the company does not have.
fn admission<'s>(
    settings: &'s Settings,
    subs: &'s [SubscriptionRow],
    now: DateTime<Utc>,
) -> Result<Admission<'s>, QuotaError> {
    let choice = choose_plan(settings, subs);
    let plan = choice.plan;
    if plan.requires_subscription && !choice.usable {
        return Err(QuotaError::Denied(Denial::SubscriptionRequired {
            plan: choice.name.to_string(),
        }));
    }
    let daily = (plan.sessions_per_day > 0).then(|| {
        let (from, to) = day_bounds(now);
        DailySessions {
            plan: choice.name.to_string(),
            limit: plan.sessions_per_day,
            from,
            to,
        }
    });
    Ok(Admission { choice, daily })
}

/// Refuses once the month's analysed seconds reach the plan's minutes.
fn minutes_left(
    choice: &PlanChoice<'_>,
    used_seconds: f64,
    resets_at: DateTime<Utc>,
) -> Result<(), QuotaError> {
    let used = used_seconds / 60.0;
    let limit = choice.plan.minutes_per_month;
    if used >= limit as f64 {
        return Err(QuotaError::Denied(Denial::MinutesPerMonth {
            plan: choice.name.to_string(),
            limit,
            used,
            resets_at,
        }));
    }
    Ok(())
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
    let used = tx
        .sessions()
        .count_created_exclusively(company, daily.from, daily.to)
        .await?;
    daily.admit(used)
}
