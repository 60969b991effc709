//! The caller's company's billing: `GET /api/billing/subscription` (its plan and the local copy
//! of its Stripe subscription) and `GET /api/billing/usage` (what it used against the plan's
//! limits), and the quota check intake runs before it accepts a session.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use voxline_domain::billing::{self, Denial, PlanChoice, QuotaError};
use voxline_domain::usage;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Refuses a new session when the company's plan does not allow one now: 402
/// `subscription_required` when the plan needs a subscription the company does not have, 429
/// `quota_exceeded` with `Retry-After` (until the day or month resets) over a limit. The error's
/// `field` names the limit (`subscription`, `sessions_per_day`, `minutes_per_month`). An early
/// answer before costly work; the transaction that writes the session checks again exactly
/// ([`billing::admit_many_in`], through [`crate::intake`]).
pub async fn check_quota(state: &AppState, company: &str) -> Result<(), ApiError> {
    let now = Utc::now();
    billing::check_quota(&state.db, &state.settings, company, now)
        .await
        .map(|_daily| ())
        .map_err(|e| quota_error(e, now))
}

/// What refuses a new session (`POST /api/sessions`, `POST /api/roleplays`) before it is
/// written, as the OpenAPI document states it: the plan ([`check_quota`]) and the intake's rate
/// limits (`crate::ratelimit`).
#[derive(Debug, utoipa::IntoResponses)]
pub enum IntakeRefusals {
    #[response(
        status = 402,
        description = "The company's plan needs a subscription it does not have (`subscription_required`)."
    )]
    SubscriptionRequired,
    #[response(
        status = 429,
        description = "Over a rate limit (`rate_limited`: intake_per_profile, intake_per_ip) or a quota (`quota_exceeded`); see Retry-After."
    )]
    OverLimit,
}

fn quota_error(error: QuotaError, now: DateTime<Utc>) -> ApiError {
    match error {
        QuotaError::Db(e) => ApiError::internal(e),
        QuotaError::Denied(denial) => refusal(&denial, now),
    }
}

pub(crate) fn refusal(denial: &Denial, now: DateTime<Utc>) -> ApiError {
    metrics::counter!("voxline_quota_refusals_total", "limit" => denial.limit()).increment(1);
    match denial.resets_at() {
        None => ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "subscription_required",
            denial.to_string(),
        )
        .field(denial.limit()),
        Some(resets_at) => {
            let secs = (resets_at - now).num_seconds().max(1);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                denial.to_string(),
            )
            .field(denial.limit())
            .retry_after(u64::try_from(secs).unwrap_or(1))
        }
    }
}

/// A plan's limits (0 = none).
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    pub name: String,
    pub requires_subscription: bool,
    pub minutes_per_month: u64,
    pub sessions_per_day: u64,
}

impl From<&PlanChoice<'_>> for PlanView {
    fn from(choice: &PlanChoice<'_>) -> Self {
        PlanView {
            name: choice.name.to_string(),
            requires_subscription: choice.plan.requires_subscription,
            minutes_per_month: choice.plan.minutes_per_month,
            sessions_per_day: choice.plan.sessions_per_day,
        }
    }
}

/// The local copy of a Stripe subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    /// Stripe's status: active, trialing, past_due, canceled, unpaid, incomplete, …
    pub status: String,
    /// Whether the status lets the company use the subscription's plan.
    pub usable: bool,
    /// The voxline plan its price is on (none when no plan lists the price).
    pub plan: Option<String>,
    pub price_id: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    /// The newest invoice event: paid, payment_failed or payment_action_required.
    pub latest_invoice_status: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionResponse {
    pub company_id: String,
    /// The plan in force now.
    pub plan: PlanView,
    /// The subscription that decides it (the usable one, else the newest); none without one.
    pub subscription: Option<SubscriptionView>,
}

/// The company's plan and subscription, as voxline last heard from Stripe.
#[utoipa::path(get, path = "/api/billing/subscription", tag = "billing", operation_id = "billing_subscription",
    responses((status = 200, body = SubscriptionResponse, description = "The plan in force and its subscription.")),
    security(("bearer" = [])))]
pub async fn subscription(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SubscriptionResponse>, ApiError> {
    let company = &caller.0.company_id;
    let subs = billing::company_subscriptions(&state.db, company).await?;
    let choice = billing::choose_plan(&state.settings, &subs);
    let subscription = choice.subscription.map(|row| SubscriptionView {
        id: row.state.id.clone(),
        status: row.state.status.clone(),
        usable: billing::is_usable(&state.settings, &row.state.status),
        plan: row.state.plan.clone(),
        price_id: row.state.price_id.clone(),
        current_period_end: row.state.current_period_end,
        trial_end: row.state.trial_end,
        cancel_at_period_end: row.state.cancel_at_period_end,
        canceled_at: row.state.canceled_at,
        latest_invoice_status: row.latest_invoice_status.clone(),
        updated_at: row.updated_at,
    });
    Ok(Json(SubscriptionResponse {
        company_id: company.clone(),
        plan: PlanView::from(&choice),
        subscription,
    }))
}

/// Analysed conversation in the calendar month (UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct MonthUsage {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Sessions analysed.
    pub sessions: i64,
    pub seconds: f64,
    pub minutes: f64,
    /// The plan's limit; none when unlimited.
    pub limit_minutes: Option<u64>,
    pub remaining_minutes: Option<f64>,
}

/// Sessions submitted today (UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct DayUsage {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub sessions: i64,
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResponse {
    pub company_id: String,
    pub plan: PlanView,
    pub month: MonthUsage,
    pub today: DayUsage,
}

/// What the company used this month and today, against its plan's limits.
#[utoipa::path(get, path = "/api/billing/usage", tag = "billing", operation_id = "billing_usage",
    responses((status = 200, body = UsageResponse, description = "This month's and today's use against the plan.")),
    security(("bearer" = [])))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UsageResponse>, ApiError> {
    let company = &caller.0.company_id;
    let now = Utc::now();
    let subs = billing::company_subscriptions(&state.db, company).await?;
    let choice = billing::choose_plan(&state.settings, &subs);
    let (month_from, month_to) = billing::month_bounds(now);
    let analysed = usage::total(&state.db, company, month_from, month_to).await?;
    let (day_from, day_to) = billing::day_bounds(now);
    let submitted = billing::sessions_created(&state.db, company, day_from, day_to).await?;
    let limit = |n: u64| (n > 0).then_some(n);
    let minutes = analysed.seconds / 60.0;
    let month_limit = limit(choice.plan.minutes_per_month);
    let day_limit = limit(choice.plan.sessions_per_day);
    Ok(Json(UsageResponse {
        company_id: company.clone(),
        plan: PlanView::from(&choice),
        month: MonthUsage {
            from: month_from,
            to: month_to,
            sessions: analysed.sessions,
            seconds: analysed.seconds,
            minutes,
            limit_minutes: month_limit,
            remaining_minutes: month_limit.map(|l| (l as f64 - minutes).max(0.0)),
        },
        today: DayUsage {
            from: day_from,
            to: day_to,
            sessions: submitted,
            limit: day_limit,
            remaining: day_limit.map(|l| l.saturating_sub(u64::try_from(submitted).unwrap_or(0))),
        },
    }))
}
