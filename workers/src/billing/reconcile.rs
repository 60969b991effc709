//! Reconciliation: Stripe's list of subscriptions (every status, page by page) compared with
//! the local copy, and any drift repaired — a missed or dead-lettered event, a row edited by
//! hand, a webhook endpoint that was down. Run hourly by cron (`billing.reconcile`) and by
//! `voxline billing reconcile [--dry-run]`.
//!
//! The listed state is stamped with the moment the listing started (whole seconds) and written
//! under the same order rule as events (`voxline_domain::billing`), so an event applied while
//! the listing ran is not undone by an older page. A dry run reads and reports, and writes
//! only its summary to the audit log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use voxline_domain::audit::{self, AuditEntry};
use voxline_domain::billing::{self, Source, Stamp, SubscriptionRow, SubscriptionState};
use voxline_domain::db::Scope;
use voxline_domain::{Db, DbError, Settings};
use voxline_jobs::HandlerError;

use super::StripeSubscription;
use super::stripe::{CallError, StripeApi};

/// What a reconciliation found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReconcileReport {
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub pages: usize,
    /// Subscriptions Stripe listed.
    pub listed: usize,
    /// Listed but missing locally: created (or, in a dry run, would be).
    pub created: Vec<String>,
    /// Different locally: repaired (or would be).
    pub updated: Vec<String>,
    pub unchanged: usize,
    /// Changed locally by an event newer than the listing: left as they are.
    pub newer_locally: Vec<String>,
    /// Listed, but whose customer is linked to no company (no `company_id` anywhere).
    pub unlinked: Vec<String>,
    /// Stored locally but not listed by Stripe (another account or mode?): reported only.
    pub missing_in_stripe: Vec<String>,
}

impl ReconcileReport {
    pub fn changed(&self) -> usize {
        self.created.len() + self.updated.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("listing Stripe's subscriptions: {0}")]
    Stripe(CallError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl ReconcileError {
    pub fn into_handler_error(self) -> HandlerError {
        match self {
            ReconcileError::Stripe(e) => e.into_handler_error("reconciling subscriptions"),
            ReconcileError::Db(e) => HandlerError::retry(e.to_string()),
        }
    }
}

/// The fields that differ between the stored and the listed state (for the audit log).
fn differences(
    before: &SubscriptionRow,
    company: &str,
    after: &SubscriptionState,
) -> Vec<&'static str> {
    let b = &before.state;
    let mut fields = Vec::new();
    let mut check = |name: &'static str, same: bool| {
        if !same {
            fields.push(name);
        }
    };
    check("company_id", before.company_id == company);
    check("customer_id", b.customer_id == after.customer_id);
    check("status", b.status == after.status);
    check("plan", b.plan == after.plan);
    check("price_id", b.price_id == after.price_id);
    check(
        "current_period_end",
        b.current_period_end == after.current_period_end,
    );
    check("trial_end", b.trial_end == after.trial_end);
    check(
        "cancel_at_period_end",
        b.cancel_at_period_end == after.cancel_at_period_end,
    );
    check("canceled_at", b.canceled_at == after.canceled_at);
    fields
}

/// Lists every subscription from Stripe and repairs the local copy (unless `dry_run`); `actor`
/// is who asked (`cron:billing_reconcile`, `cli:$USER`), for the audit log.
pub async fn run(
    db: &Db,
    settings: &Settings,
    api: &StripeApi,
    dry_run: bool,
    actor: &str,
) -> Result<ReconcileReport, ReconcileError> {
    // Events carry whole seconds: an event of the listing's first second ties with it, and
    // the tie rule lets `updated` and `deleted` events of that second still apply.
    let started = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default();
    let mut report = ReconcileReport {
        dry_run,
        started_at: started,
        ..Default::default()
    };
    let local: BTreeMap<String, SubscriptionRow> = billing::all_subscriptions(db)
        .await?
        .into_iter()
        .map(|row| (row.state.id.clone(), row))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = api
            .subscriptions(settings.billing.reconcile_page_size, after.as_deref())
            .await
            .map_err(ReconcileError::Stripe)?;
        report.pages += 1;
        report.listed += page.subscriptions.len();
        after = page.subscriptions.last().map(|s| s.id.clone());
        for remote in &page.subscriptions {
            seen.insert(remote.id.clone());
            let stored = local.get(&remote.id);
            let Some(company) = company_of(db, api, remote, stored, dry_run).await? else {
                report.unlinked.push(remote.id.clone());
                continue;
            };
            let state = remote.state(settings);
            let changed = match stored {
                Some(row) => differences(row, &company, &state),
                None => Vec::new(),
            };
            if stored.is_some() && changed.is_empty() {
                report.unchanged += 1;
                continue;
            }
            if !dry_run && !repair(db, actor, &company, stored, &state, started, &changed).await? {
                report.newer_locally.push(remote.id.clone());
                continue;
            }
            match stored {
                None => report.created.push(remote.id.clone()),
                Some(_) => report.updated.push(remote.id.clone()),
            }
        }
        if !page.has_more || after.is_none() {
            break;
        }
    }
    report.missing_in_stripe = local
        .keys()
        .filter(|id| !seen.contains(*id))
        .cloned()
        .collect();
    audit::append(
        db,
        &AuditEntry {
            actor,
            actor_role: "system",
            company_id: None,
            action: "billing.reconciled",
            target: "subscriptions",
            details: serde_json::to_value(&report).unwrap_or_default(),
        },
    )
    .await?;
    tracing::info!(
        dry_run,
        pages = report.pages,
        listed = report.listed,
        created = ?report.created,
        updated = ?report.updated,
        unchanged = report.unchanged,
        newer_locally = ?report.newer_locally,
        unlinked = ?report.unlinked,
        missing_in_stripe = ?report.missing_in_stripe,
        "billing reconciliation finished"
    );
    Ok(report)
}

/// The listed subscription's company: the stored row's, its customer's link, its metadata, or
/// its customer's metadata read from Stripe (linked on the way, except in a dry run).
async fn company_of(
    db: &Db,
    api: &StripeApi,
    remote: &StripeSubscription,
    stored: Option<&SubscriptionRow>,
    dry_run: bool,
) -> Result<Option<String>, ReconcileError> {
    if let Some(linked) = billing::customer(db, &remote.customer_id).await? {
        return Ok(Some(linked.company_id));
    }
    let (company, email) = match (&remote.company_hint, stored) {
        (Some(hint), _) => (hint.clone(), None),
        (None, Some(row)) => (row.company_id.clone(), None),
        (None, None) => match api.customer(&remote.customer_id).await {
            Ok(Some(info)) => match info.company_id {
                Some(company) => (company, info.email),
                None => return Ok(None),
            },
            Ok(None) => return Ok(None),
            Err(e) => return Err(ReconcileError::Stripe(e)),
        },
    };
    if dry_run {
        return Ok(Some(company));
    }
    let linked =
        billing::link_customer(db, &remote.customer_id, &company, email.as_deref()).await?;
    Ok(Some(linked.company_id))
}

/// Writes the listed state; false when an event newer than the listing got there first.
async fn repair(
    db: &Db,
    actor: &str,
    company: &str,
    before: Option<&SubscriptionRow>,
    state: &SubscriptionState,
    started: DateTime<Utc>,
    changed: &[&str],
) -> Result<bool, ReconcileError> {
    let scope = match before {
        // Platform: the stored row names another company (edited by hand), and moving it back
        // to its customer's company touches two companies' rows.
        Some(row) if row.company_id != company => Scope::Platform,
        _ => Scope::Company(company),
    };
    let mut tx = db.begin(scope).await?;
    let stamp = Stamp {
        at: started,
        rank: Source::Snapshot.rank(),
    };
    if !billing::save_subscription(&mut tx, company, state, stamp, None, true).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    billing::audit(
        &mut tx,
        &AuditEntry {
            actor,
            actor_role: "system",
            company_id: Some(company),
            action: "billing.subscription_repaired",
            target: &state.id,
            details: json!({
                "changed": if before.is_none() { vec!["created"] } else { changed.to_vec() },
                "before": before.map(|b| &b.state),
                "after": state,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
