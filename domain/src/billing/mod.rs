//! Billing's rows: Stripe is the source of truth for money, and voxline keeps a local copy of
//! what it needs (which customer pays for which company, each subscription's state, the events
//! it was told, the usage it reported) and derives each company's plan and quotas from it.
//!
//! **Order rule.** Stripe delivers events late, twice and out of order, so a subscription row
//! remembers the [`Stamp`] of the write that made it: the event's `created` (Stripe's clock,
//! whole seconds) or, for a reconciliation, the moment its listing started. A new state is
//! written only when [`decide`] says so:
//! - a newer stamp wins and an older one is skipped;
//! - on a tie (same second), the rank decides: `created` (0) < `updated`, `trial_will_end` and
//!   reconciliation snapshots (1) < `deleted` (2), and an equal rank applies (the later
//!   delivery of two snapshots from the same second wins; the hourly reconciliation repairs
//!   the rare wrong guess);
//! - an event never moves a `canceled` subscription to another status (Stripe never reopens
//!   one), while a reconciliation snapshot may (it is read from Stripe, so it is the truth).
//!
//! The same rule guards the upsert's `WHERE`, so two workers racing on one subscription cannot
//! both win.
//!
//! **Tenancy.** On Postgres every query of a tenant table runs in a transaction scoped to the
//! company it is for ([`Scope::Company`](crate::db::Scope::Company));
//! [`Scope::Platform`](crate::db::Scope::Platform) is kept for mapping Stripe's ids to
//! companies and for the work that spans every company (reconciliation, usage reports).
//! `stripe_events` belongs to no company (an event arrives before voxline knows whose it is)
//! and has no policy.
//!
//! **Layout.** `policy.rs` is pure (the order rule, plan choice, quota windows and denials);
//! `store/` holds the rows, one file per group of tables, each query written for both
//! databases; `quota.rs` checks a submission against its plan with the counts it queries.

mod policy;
mod quota;
mod store;

use serde::{Deserialize, Serialize};

use crate::audit::AuditEntry;
use crate::{DbError, Tx};

pub use policy::{
    DailySessions, Decision, Denial, PlanChoice, QuotaError, Source, Stamp, choose_plan,
    day_bounds, decide, is_usable, month_bounds, plan_for_prices,
};
pub use quota::{admit_many_in, check_quota, sessions_created};
pub use store::customers::{
    BillingCustomer, Linked, billing_address, customer, customer_for_company, link_customer,
    set_customer_email,
};
pub use store::events::{
    EVENT_APPLIED, EVENT_IGNORED, EVENT_PENDING, EVENT_SKIPPED, HANDLED_EVENTS, NewEvent,
    StoredEvent, event, event_counts, finish_event, insert_event, is_handled, lock_event_status,
};
pub use store::metered_usage::{
    USAGE_FAILED, USAGE_PENDING, USAGE_REPORTED, UsageReport, UsageWindow, claim_usage_report,
    finish_usage_report, usage_reports, usage_windows,
};
pub use store::subscriptions::{
    SubscriptionRow, SubscriptionState, all_subscriptions, company_subscriptions,
    lock_subscription, record_invoice, save_subscription, subscription,
};
pub use store::{
    BillingStore, BillingTxStore, CustomerStore, MeteredUsageStore, StripeEventStore,
    StripeEventTxStore, SubscriptionStore, SubscriptionTxStore,
};

/// The billing worker's job for one stored Stripe event; its payload is a [`StripeEventJob`].
pub const STRIPE_EVENT_JOB: &str = "billing.stripe_event";
/// Cron kind: compare Stripe's subscriptions with the local copy and repair drift.
pub const RECONCILE_JOB: &str = "billing.reconcile";
/// Cron kind: report closed usage windows to Stripe's billing meter.
pub const USAGE_REPORT_JOB: &str = "usage.report";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripeEventJob {
    pub event_id: String,
}

/// Appends to the audit log in the caller's transaction, so a billing change and its record
/// commit together (the same row [`crate::audit::append`] writes).
pub async fn audit(tx: &mut Tx<'_>, entry: &AuditEntry<'_>) -> Result<(), DbError> {
    crate::audit::append_in(tx, entry).await.map(drop)
}
