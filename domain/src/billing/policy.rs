//! Billing's pure policy: which subscription state wins (the order rule in the module
//! documentation of `billing`), which plan a company is on, the calendar windows its quotas
//! count in, and why a submission is refused. Nothing here reads or writes a row.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use super::SubscriptionRow;
use crate::config::Plan;
use crate::{DbError, Settings};

// ---------------------------------------------------------------------------------------------
// Order rule

/// Where a subscription state comes from, which ranks it against a state of the same second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Created,
    Updated,
    Deleted,
    /// Read from Stripe's API by a reconciliation.
    Snapshot,
}

impl Source {
    pub fn rank(self) -> i16 {
        match self {
            Source::Created => 0,
            Source::Updated | Source::Snapshot => 1,
            Source::Deleted => 2,
        }
    }
}

/// When a state was true, and how it ranks among states of the same second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    pub rank: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Apply,
    /// Older than what is stored (or the same second with a lower rank).
    Stale,
    /// An event would reopen a canceled subscription.
    AfterCancel,
}

/// Whether a state from `source` at `at` with `status` replaces the stored one (see the
/// module documentation for the rule).
pub fn decide(
    stored: Option<(&Stamp, &str)>,
    at: DateTime<Utc>,
    source: Source,
    status: &str,
) -> Decision {
    let Some((stamp, stored_status)) = stored else {
        return Decision::Apply;
    };
    if source != Source::Snapshot && stored_status == "canceled" && status != "canceled" {
        return Decision::AfterCancel;
    }
    if at > stamp.at || (at == stamp.at && source.rank() >= stamp.rank) {
        Decision::Apply
    } else {
        Decision::Stale
    }
}

// ---------------------------------------------------------------------------------------------
// Plans and quota windows

/// The plan a subscription's prices put it on: the first plan (by name) listing one of them
/// (a price id or lookup key). Validation makes sure no price is on two plans.
pub fn plan_for_prices(settings: &Settings, prices: &[&str]) -> Option<String> {
    settings
        .plans
        .iter()
        .find(|(_, plan)| {
            plan.stripe_prices
                .iter()
                .any(|p| prices.contains(&p.as_str()))
        })
        .map(|(name, _)| name.clone())
}

/// A company's plan as intake sees it.
#[derive(Debug, Clone)]
pub struct PlanChoice<'a> {
    pub name: &'a str,
    pub plan: &'a Plan,
    /// The subscription that decided it: the usable one, else the newest.
    pub subscription: Option<&'a SubscriptionRow>,
    /// Whether that subscription lets the company use its plan.
    pub usable: bool,
}

pub fn is_usable(settings: &Settings, status: &str) -> bool {
    settings.billing.usable_statuses.iter().any(|s| s == status)
}

/// The company's plan: a usable subscription's plan (or the default plan when its prices name
/// none), else the default plan.
pub fn choose_plan<'a>(settings: &'a Settings, subs: &'a [SubscriptionRow]) -> PlanChoice<'a> {
    let usable = subs
        .iter()
        .filter(|s| is_usable(settings, &s.state.status))
        .max_by_key(|s| s.stamp.at);
    let subscription = usable.or_else(|| subs.iter().max_by_key(|s| s.stamp.at));
    let named = usable
        .and_then(|s| s.state.plan.as_deref())
        .and_then(|name| settings.plans.get_key_value(name));
    let (name, plan) = match named {
        Some((name, plan)) => (name.as_str(), plan),
        None => {
            let name = settings.billing.default_plan.as_str();
            match settings.plans.get_key_value(name) {
                Some((name, plan)) => (name.as_str(), plan),
                // Validation guarantees the default plan exists; this is only a fallback.
                None => (name, &NO_LIMITS),
            }
        }
    };
    PlanChoice {
        name,
        plan,
        subscription,
        usable: usable.is_some(),
    }
}

static NO_LIMITS: Plan = Plan {
    requires_subscription: false,
    minutes_per_month: 0,
    sessions_per_day: 0,
    stripe_prices: Vec::new(),
};

/// The calendar month (UTC) around `now`: `[start, next start)`.
pub fn month_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let first = |y: i32, m: u32| {
        NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| Utc.from_utc_datetime(&t))
            .unwrap_or(now)
    };
    let start = first(now.year(), now.month());
    let end = if now.month() == 12 {
        first(now.year() + 1, 1)
    } else {
        first(now.year(), now.month() + 1)
    };
    (start, end)
}

/// The day (UTC) around `now`: `[midnight, next midnight)`.
pub fn day_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| Utc.from_utc_datetime(&t))
        .unwrap_or(now);
    (start, start + Duration::days(1))
}

// ---------------------------------------------------------------------------------------------
// Denials

/// Why intake refuses a company's new session.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Denial {
    #[error("the {plan} plan needs an active subscription; this company has none")]
    SubscriptionRequired { plan: String },
    #[error(
        "the {plan} plan includes {limit} minutes of analysed conversation per month and {used:.1} are used; it resets at {resets_at}"
    )]
    MinutesPerMonth {
        plan: String,
        limit: u64,
        used: f64,
        resets_at: DateTime<Utc>,
    },
    #[error(
        "the {plan} plan allows {limit} sessions per day and {used} were submitted today; it resets at {resets_at}"
    )]
    SessionsPerDay {
        plan: String,
        limit: u64,
        used: i64,
        resets_at: DateTime<Utc>,
    },
}

impl Denial {
    /// The limit's name, as configured under `[plans.NAME]` (or `subscription`).
    pub fn limit(&self) -> &'static str {
        match self {
            Denial::SubscriptionRequired { .. } => "subscription",
            Denial::MinutesPerMonth { .. } => "minutes_per_month",
            Denial::SessionsPerDay { .. } => "sessions_per_day",
        }
    }

    /// When asking again can succeed (none for a missing subscription).
    pub fn resets_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Denial::SubscriptionRequired { .. } => None,
            Denial::MinutesPerMonth { resets_at, .. }
            | Denial::SessionsPerDay { resets_at, .. } => Some(*resets_at),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(transparent)]
    Denied(Denial),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A plan's daily session limit, which a submission re-checks inside the transaction that
/// writes it ([`admit_many_in`](super::admit_many_in)).
#[derive(Debug, Clone, PartialEq)]
pub struct DailySessions {
    pub plan: String,
    pub limit: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl DailySessions {
    /// Refuses one more session when `used` have been submitted in the window already.
    pub(super) fn admit(&self, used: i64) -> Result<(), Denial> {
        if used >= i64::try_from(self.limit).unwrap_or(i64::MAX) {
            return Err(Denial::SessionsPerDay {
                plan: self.plan.clone(),
                limit: self.limit,
                used,
                resets_at: self.to,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::SubscriptionState;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn stamp(secs: i64, source: Source) -> Stamp {
        Stamp {
            at: at(secs),
            rank: source.rank(),
        }
    }

    #[test]
    fn a_first_state_always_applies() {
        assert_eq!(
            decide(None, at(1), Source::Updated, "active"),
            Decision::Apply
        );
    }

    #[test]
    fn a_newer_event_applies_and_an_older_one_is_stale() {
        let stored = stamp(100, Source::Updated);
        let s = Some((&stored, "active"));
        assert_eq!(
            decide(s, at(101), Source::Created, "incomplete"),
            Decision::Apply
        );
        assert_eq!(
            decide(s, at(99), Source::Updated, "past_due"),
            Decision::Stale
        );
    }

    #[test]
    fn within_one_second_created_updated_deleted_is_the_order() {
        let created = stamp(100, Source::Created);
        let updated = stamp(100, Source::Updated);
        let deleted = stamp(100, Source::Deleted);
        // A late `created` of the same second does not undo the `updated`.
        assert_eq!(
            decide(
                Some((&updated, "active")),
                at(100),
                Source::Created,
                "incomplete"
            ),
            Decision::Stale
        );
        assert_eq!(
            decide(
                Some((&created, "incomplete")),
                at(100),
                Source::Updated,
                "active"
            ),
            Decision::Apply
        );
        // Two `updated` of the same second: the later delivery wins.
        assert_eq!(
            decide(
                Some((&updated, "active")),
                at(100),
                Source::Updated,
                "past_due"
            ),
            Decision::Apply
        );
        assert_eq!(
            decide(
                Some((&updated, "active")),
                at(100),
                Source::Deleted,
                "canceled"
            ),
            Decision::Apply
        );
        assert_eq!(
            decide(
                Some((&deleted, "canceled")),
                at(100),
                Source::Snapshot,
                "canceled"
            ),
            Decision::Stale
        );
    }

    #[test]
    fn an_event_never_reopens_a_canceled_subscription_but_a_snapshot_may() {
        let deleted = stamp(100, Source::Deleted);
        let s = Some((&deleted, "canceled"));
        assert_eq!(
            decide(s, at(500), Source::Updated, "active"),
            Decision::AfterCancel
        );
        assert_eq!(
            decide(s, at(500), Source::Snapshot, "active"),
            Decision::Apply
        );
        assert_eq!(
            decide(s, at(500), Source::Updated, "canceled"),
            Decision::Apply
        );
    }

    #[test]
    fn months_and_days_are_utc_calendar_ones() {
        let now = DateTime::parse_from_rfc3339("2026-12-31T23:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        let (from, to) = month_bounds(now);
        assert_eq!(from.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        let (from, to) = day_bounds(now);
        assert_eq!(from.to_rfc3339(), "2026-12-31T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }

    fn row(status: &str, plan: Option<&str>, secs: i64) -> SubscriptionRow {
        SubscriptionRow {
            company_id: "acme".into(),
            state: SubscriptionState {
                id: format!("sub_{secs}"),
                customer_id: "cus_1".into(),
                status: status.into(),
                plan: plan.map(str::to_string),
                price_id: None,
                current_period_end: None,
                trial_end: None,
                cancel_at_period_end: false,
                canceled_at: None,
            },
            stamp: stamp(secs, Source::Updated),
            last_event_id: None,
            latest_invoice_id: None,
            latest_invoice_status: None,
            invoice_event_at: None,
            created_at: at(secs),
            updated_at: at(secs),
        }
    }

    #[test]
    fn the_plan_is_the_usable_subscriptions_else_the_default() {
        let settings = Settings::from_toml_overrides(
            "[plans.pro]\nstripe_prices = [\"price_pro\", \"pro_monthly\"]",
        )
        .unwrap();
        assert_eq!(
            plan_for_prices(&settings, &["price_x", "pro_monthly"]).as_deref(),
            Some("pro")
        );
        assert_eq!(plan_for_prices(&settings, &["price_x"]), None);

        let none = choose_plan(&settings, &[]);
        assert_eq!((none.name, none.usable), ("free", false));

        let subs = [
            row("canceled", Some("pro"), 10),
            row("active", Some("pro"), 5),
        ];
        let chosen = choose_plan(&settings, &subs);
        assert_eq!((chosen.name, chosen.usable), ("pro", true));
        assert_eq!(chosen.subscription.unwrap().state.id, "sub_5");

        let lapsed = [row("canceled", Some("pro"), 10)];
        let chosen = choose_plan(&settings, &lapsed);
        assert_eq!((chosen.name, chosen.usable), ("free", false));
        assert_eq!(chosen.subscription.unwrap().state.id, "sub_10");

        let unnamed = [row("active", None, 10)];
        assert_eq!(choose_plan(&settings, &unnamed).name, "free");
    }
}
