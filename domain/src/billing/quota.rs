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
        limit
            .admit(sessions_created(db, company, limit.from, limit.to).await?)
            .map_err(QuotaError::Denied)?;
    }
    if choice.plan.minutes_per_month > 0 {
        let (from, to) = month_bounds(now);
        let used = usage::total(db, company, from, to).await?.seconds;
        minutes_left(&choice, used, to).map_err(QuotaError::Denied)?;
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
    match admit_many_in(tx, settings, company, 1, now).await?.pop() {
        Some(Err(denial)) => Err(QuotaError::Denied(denial)),
        _ => Ok(()),
    }
}

/// [`admit_in`] for `n` sessions of one company that the transaction is about to write
/// together (intake's group commit), in their order: the answer for each, as if each had been
/// checked and written in turn. The reads are made once; under a daily limit the first ones
/// fill the day's remaining slots and the rest are refused, exactly (the company's lock is held
/// until the commit). Only the admitted ones may then be written.
pub async fn admit_many_in(
    tx: &mut Tx<'_>,
    settings: &Settings,
    company: &str,
    n: usize,
    now: DateTime<Utc>,
) -> Result<Vec<Result<(), Denial>>, DbError> {
    let subs = company_subscriptions_in(tx, company).await?;
    let Admission { choice, daily } = match admission(settings, &subs, now) {
        Ok(admission) => admission,
        Err(QuotaError::Denied(denial)) => return Ok(vec![Err(denial); n]),
        Err(QuotaError::Db(e)) => return Err(e),
    };
    let used_today = match &daily {
        Some(daily) => Some(
            tx.sessions()
                .count_created_exclusively(company, daily.from, daily.to)
                .await?,
        ),
        None => None,
    };
    let out_of_minutes = if choice.plan.minutes_per_month > 0 {
        let (from, to) = month_bounds(now);
        let used = usage::total_in(tx, company, from, to).await?.seconds;
        minutes_left(&choice, used, to).err()
    } else {
        None
    };
    let mut admitted = 0;
    let answers = (0..n)
        .map(|_| {
            if let (Some(daily), Some(used)) = (&daily, used_today)
                && let Err(e) = daily.admit(used + admitted)
            {
                return Err(e);
            }
            if let Some(e) = &out_of_minutes {
                return Err(e.clone());
            }
            admitted += 1;
            Ok(())
        })
        .collect();
    Ok(answers)
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
) -> Result<(), Denial> {
    let used = used_seconds / 60.0;
    let limit = choice.plan.minutes_per_month;
    if used >= limit as f64 {
        return Err(Denial::MinutesPerMonth {
            plan: choice.name.to_string(),
            limit,
            used,
            resets_at,
        });
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
    daily.admit(used).map_err(QuotaError::Denied)
}
