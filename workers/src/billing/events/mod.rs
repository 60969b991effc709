//! Applying one stored Stripe event (`billing.stripe_event`).
//!
//! Each job first works out whose event it is (which may ask Stripe for the customer), then,
//! in one transaction with the event row locked, applies the change, enqueues the emails it
//! calls for, writes the audit entries and marks the event `applied` or `skipped`. A second job
//! for the same event finds it no longer `pending` and does nothing, so an event is applied
//! once however often it was delivered or its job ran.
//!
//! - `checkout.session.completed` links the Stripe customer to the company named by the
//!   session's `metadata.company_id` or `client_reference_id`.
//! - `customer.subscription.created|updated|deleted|trial_will_end` write the subscription under
//!   the order rule of `voxline_domain::billing` (an older event never overwrites newer state);
//!   `deleted` sends "subscription cancelled", `trial_will_end` "trial ending" while the
//!   subscription is still trialing.
//! - `invoice.paid|payment_failed|payment_action_required` record the newest invoice outcome on
//!   its subscription and send "payment failed" / "payment action required".
//!
//! Whose: a customer already linked keeps its company; otherwise the event's own
//! `metadata.company_id` (or the checkout's `client_reference_id`), otherwise the customer's
//! `company_id` metadata read from Stripe. A customer with none is retried later (its checkout
//! event may still be on its way) and dead-lettered when it never resolves. Finding the company
//! is platform work (a Stripe id is mapped to a company); the change itself is then made in a
//! transaction scoped to that company, so it can touch no other company's rows.
//!
//! This module holds the job's frame (dispatch, the locked transaction, the event's outcome);
//! [`customer`] finds whose event it is and applies checkouts, [`subscription`] and
//! [`invoice`] apply their events, and [`format`] words amounts and dates for the emails.

mod customer;
mod format;
mod invoice;
mod subscription;

pub use format::money;

use serde_json::Value;
use voxline_domain::audit::AuditEntry;
use voxline_domain::billing::{
    self, EVENT_APPLIED, EVENT_PENDING, EVENT_SKIPPED, StoredEvent, StripeEventJob,
};
use voxline_domain::db::Scope;
use voxline_domain::{DbError, Tx};
use voxline_jobs::payloads::{EmailJob, EmailMessage};
use voxline_jobs::{HandlerError, JobArgs};

use super::BillingWorker;

const ACTOR: &str = "stripe";
const ACTOR_ROLE: &str = "webhook";

/// The audit entry of `action`, done by a Stripe event to `target` of `company`.
fn audit_entry<'a>(
    company: &'a str,
    action: &'a str,
    target: &'a str,
    details: Value,
) -> AuditEntry<'a> {
    AuditEntry {
        actor: ACTOR,
        actor_role: ACTOR_ROLE,
        company_id: Some(company),
        action,
        target,
        details,
    }
}

fn db_error(e: DbError) -> HandlerError {
    HandlerError::retry(e.to_string())
}

fn job_error(e: voxline_jobs::JobError) -> HandlerError {
    HandlerError::retry(e.to_string())
}

/// What applying an event decided, for the event row.
struct Outcome {
    status: &'static str,
    detail: Option<String>,
}

impl Outcome {
    fn applied() -> Self {
        Outcome {
            status: EVENT_APPLIED,
            detail: None,
        }
    }

    fn skipped(detail: impl Into<String>) -> Self {
        Outcome {
            status: EVENT_SKIPPED,
            detail: Some(detail.into()),
        }
    }
}

impl BillingWorker {
    pub(crate) async fn apply_event(&self, task: StripeEventJob) -> Result<(), HandlerError> {
        let Some(event) = billing::event(&self.db, &task.event_id)
            .await
            .map_err(db_error)?
        else {
            return Err(HandlerError::permanent(format!(
                "Stripe event {} is not stored",
                task.event_id
            )));
        };
        if event.status != EVENT_PENDING {
            tracing::info!(event = %event.id, status = %event.status, "Stripe event already processed");
            return Ok(());
        }
        let object = event
            .payload
            .pointer("/data/object")
            .cloned()
            .unwrap_or(Value::Null);
        match event.event_type.as_str() {
            "checkout.session.completed" => self.checkout_completed(&event, &object).await,
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.trial_will_end" => {
                self.subscription_event(&event, &object).await
            }
            "invoice.paid" | "invoice.payment_failed" | "invoice.payment_action_required" => {
                self.invoice_event(&event, &object).await
            }
            // Stored as pending by an older build, or by hand: nothing to apply.
            other => self.skip(&event, format!("{other} is not applied")).await,
        }
    }

    /// Opens the event's transaction, limited to `scope`, with its row locked; `None` when
    /// another job processed it first (then nothing is to be done).
    async fn begin(
        &self,
        event: &StoredEvent,
        scope: Scope<'_>,
    ) -> Result<Option<Tx<'static>>, HandlerError> {
        let mut tx = self.db.begin(scope).await.map_err(db_error)?;
        let status = billing::lock_event_status(&mut tx, &event.id)
            .await
            .map_err(db_error)?;
        if status.as_deref() != Some(EVENT_PENDING) {
            tx.rollback().await.map_err(db_error)?;
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// Marks the event with `outcome` and commits everything done in `tx`.
    async fn complete(
        &self,
        mut tx: Tx<'static>,
        event: &StoredEvent,
        outcome: Outcome,
    ) -> Result<(), HandlerError> {
        billing::finish_event(
            &mut tx,
            &event.id,
            outcome.status,
            outcome.detail.as_deref(),
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        tracing::info!(
            event = %event.id,
            kind = %event.event_type,
            status = outcome.status,
            detail = outcome.detail.as_deref().unwrap_or(""),
            "Stripe event processed"
        );
        Ok(())
    }

    /// Marks the event skipped without changing anything else.
    async fn skip(&self, event: &StoredEvent, why: String) -> Result<(), HandlerError> {
        // Platform: a skipped event is mapped to no company, and only its own row is written
        // (`stripe_events`, which belongs to no company).
        match self.begin(event, Scope::Platform).await? {
            Some(tx) => self.complete(tx, event, Outcome::skipped(why)).await,
            None => Ok(()),
        }
    }

    fn email(
        &self,
        company: &str,
        to: &str,
        subject_id: String,
        message: EmailMessage,
    ) -> EmailJob {
        EmailJob {
            company_id: Some(company.to_string()),
            profile_id: None,
            to: to.to_string(),
            subject_id,
            message,
        }
    }

    async fn enqueue(&self, tx: &mut Tx<'_>, email: Option<EmailJob>) -> Result<(), HandlerError> {
        if let Some(email) = email {
            let job = email
                .to_job()
                .map_err(|e| HandlerError::permanent(e.to_string()))?;
            self.jobs.enqueue(tx, &job).await.map_err(job_error)?;
        }
        Ok(())
    }
}
