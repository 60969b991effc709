//! Whether a company may submit one more session: its plan (chosen by the policy) against the
//! sessions and minutes it has used, counted in the database.

use chrono::{DateTime, Utc};

use super::policy::{
    DailySessions, Denial, PlanChoice, QuotaError, choose_plan, day_bounds, month_bounds,
};
use super::store::subscriptions::{SubscriptionRow, company_subscriptions, quota_reads_in};
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
/// the check here is a cheap early answer, [`admit_many_in`] is the exact one. The monthly
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

/// The whole quota check, exact, inside the transaction that writes `n` new sessions of one
/// company (intake's group commit; on Postgres scoped to the company), in their order: the
/// answer for each, as if each had been checked and written in turn. The subscriptions and,
/// when the plan limits them, the month's minutes are read once, in that transaction. Only a
/// plan with a daily session limit takes the company's lock (on Postgres a transaction-scoped
/// advisory lock, on SQLite the write lock `BEGIN IMMEDIATE` already holds) and counts the
/// day's sessions under it: the first submissions fill the remaining slots and the rest are
/// refused, exactly, however many race. Only the admitted ones may then be written.
pub async fn admit_many_in(
    tx: &mut Tx<'_>,
    settings: &Settings,
    company: &str,
    n: usize,
    now: DateTime<Utc>,
) -> Result<Vec<Result<(), Denial>>, DbError> {
    // The subscriptions and the month's usage in one round trip: the usage is read whether or
    // not the plan limits minutes (one index range), and before any daily-limit lock, which is
    // fine for minutes, a soft limit.
    let (month_from, month_to) = month_bounds(now);
    let reads = quota_reads_in(tx, company, month_from, month_to).await?;
    let Admission { choice, daily } = match admission(settings, &reads.subscriptions, now) {
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
        minutes_left(&choice, reads.usage.seconds, month_to).err()
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
