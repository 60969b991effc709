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

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use voxline_domain::audit::{self, AuditEntry};
use voxline_domain::billing::{
    self, Decision, EVENT_APPLIED, EVENT_PENDING, EVENT_SKIPPED, Source, Stamp, StoredEvent,
    StripeEventJob, SubscriptionRow, SubscriptionState,
};
use voxline_domain::db::Scope;
use voxline_domain::{DbError, Tx};
use voxline_jobs::payloads::{
    EmailJob, EmailMessage, PaymentActionRequired, PaymentFailed, SubscriptionCancelled,
    TrialEnding,
};
use voxline_jobs::{ClaimedJob, HandlerError};

use super::{BillingWorker, IdOrObject, StripeSubscription, company_in};

const ACTOR: &str = "stripe";
const ACTOR_ROLE: &str = "webhook";

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

/// A date for people, e.g. "2026-12-01".
fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// Currencies Stripe counts in whole units (no cents).
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// An amount in Stripe's minor units for people: "$49.00", "€12.50", "1200 JPY".
pub fn money(minor: i64, currency: &str) -> String {
    let currency = currency.to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&currency.as_str()) {
        return format!("{minor} {}", currency.to_ascii_uppercase());
    }
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let amount = format!("{}.{:02}", abs / 100, abs % 100);
    match currency.as_str() {
        "usd" => format!("{sign}${amount}"),
        "eur" => format!("{sign}€{amount}"),
        "gbp" => format!("{sign}£{amount}"),
        other => format!("{sign}{amount} {}", other.to_ascii_uppercase()),
    }
}

impl BillingWorker {
    pub(crate) async fn apply_event(&self, job: ClaimedJob) -> Result<(), HandlerError> {
        let task: StripeEventJob = serde_json::from_value(job.payload).map_err(|e| {
            HandlerError::permanent(format!("bad billing.stripe_event payload: {e}"))
        })?;
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

    /// The company the customer pays for (see the module documentation), linking it on first
    /// sight.
    async fn company_for(
        &self,
        customer: &str,
        hint: Option<&str>,
        email: Option<&str>,
        event_id: &str,
    ) -> Result<String, HandlerError> {
        if let Some(linked) = billing::customer(&self.db, customer)
            .await
            .map_err(db_error)?
        {
            if let Some(hint) = hint
                && hint != linked.company_id
            {
                tracing::warn!(
                    customer,
                    linked = %linked.company_id,
                    hint,
                    event = event_id,
                    "Stripe customer names another company than the one it is linked to; keeping the link"
                );
            }
            if let Some(email) = email
                && linked.email.as_deref() != Some(email)
            {
                billing::set_customer_email(&self.db, &linked.company_id, customer, email)
                    .await
                    .map_err(db_error)?;
            }
            return Ok(linked.company_id);
        }
        let (company, email, source) = match (hint, &self.stripe) {
            (Some(hint), _) => (hint.to_string(), email.map(str::to_string), "event"),
            (None, Some(api)) => match api.customer(customer).await {
                Ok(Some(info)) => match info.company_id {
                    Some(company) => (
                        company,
                        email.map(str::to_string).or(info.email),
                        "customer metadata",
                    ),
                    None => {
                        return Err(HandlerError::retry(format!(
                            "Stripe customer {customer} has no company_id metadata and is not linked yet; waiting for its checkout.session.completed"
                        )));
                    }
                },
                Ok(None) => {
                    return Err(HandlerError::permanent(format!(
                        "Stripe customer {customer} does not exist (deleted?) and is not linked to a company"
                    )));
                }
                Err(e) => return Err(e.into_handler_error("retrieving the customer")),
            },
            (None, None) => {
                return Err(HandlerError::retry(format!(
                    "Stripe customer {customer} is not linked to a company yet (no company_id in the event, and stripe.secret_key is not set to ask Stripe)"
                )));
            }
        };
        let linked = billing::link_customer(&self.db, customer, &company, email.as_deref())
            .await
            .map_err(db_error)?;
        if linked.created {
            audit::append(
                &self.db,
                &AuditEntry {
                    actor: ACTOR,
                    actor_role: ACTOR_ROLE,
                    company_id: Some(&linked.company_id),
                    action: "billing.customer_linked",
                    target: customer,
                    details: json!({ "event_id": event_id, "source": source }),
                },
            )
            .await
            .map_err(db_error)?;
            tracing::info!(customer, company = %linked.company_id, source, "Stripe customer linked");
        }
        Ok(linked.company_id)
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
                .into_job()
                .map_err(|e| HandlerError::permanent(e.to_string()))?;
            self.jobs.enqueue(tx, &job).await.map_err(job_error)?;
        }
        Ok(())
    }

    async fn checkout_completed(
        &self,
        event: &StoredEvent,
        object: &Value,
    ) -> Result<(), HandlerError> {
        #[derive(Deserialize)]
        struct Details {
            #[serde(default)]
            email: Option<String>,
        }
        #[derive(Deserialize)]
        struct Checkout {
            id: String,
            #[serde(default)]
            customer: Option<IdOrObject>,
            #[serde(default)]
            subscription: Option<IdOrObject>,
            #[serde(default)]
            client_reference_id: Option<String>,
            #[serde(default)]
            metadata: Option<HashMap<String, Value>>,
            #[serde(default)]
            customer_details: Option<Details>,
            #[serde(default)]
            customer_email: Option<String>,
        }
        let session = Checkout::deserialize(object).map_err(|e| {
            HandlerError::permanent(format!(
                "{}: data.object is not a checkout session: {e}",
                event.id
            ))
        })?;
        let Some(customer) = session.customer.as_ref().map(IdOrObject::id) else {
            return self
                .skip(event, "the checkout session has no customer".into())
                .await;
        };
        let hint = company_in(session.metadata.as_ref()).or_else(|| {
            session
                .client_reference_id
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        });
        let email = session
            .customer_details
            .and_then(|d| d.email)
            .or(session.customer_email);
        let company = self
            .company_for(customer, hint.as_deref(), email.as_deref(), &event.id)
            .await?;
        let details = json!({
            "event_id": event.id,
            "checkout_session": session.id,
            "subscription": session.subscription.as_ref().map(IdOrObject::id),
        });
        let Some(mut tx) = self.begin(event, Scope::Company(&company)).await? else {
            return Ok(());
        };
        billing::audit(
            &mut tx,
            &AuditEntry {
                actor: ACTOR,
                actor_role: ACTOR_ROLE,
                company_id: Some(&company),
                action: "billing.checkout_completed",
                target: customer,
                details,
            },
        )
        .await
        .map_err(db_error)?;
        self.complete(tx, event, Outcome::applied()).await
    }

    async fn subscription_event(
        &self,
        event: &StoredEvent,
        object: &Value,
    ) -> Result<(), HandlerError> {
        let remote = StripeSubscription::from_json(object).map_err(|e| {
            HandlerError::permanent(format!(
                "{}: data.object is not a subscription: {e}",
                event.id
            ))
        })?;
        let company = self
            .company_for(
                &remote.customer_id,
                remote.company_hint.as_deref(),
                None,
                &event.id,
            )
            .await?;
        let state = remote.state(&self.settings);
        let source = match event.event_type.as_str() {
            "customer.subscription.created" => Source::Created,
            "customer.subscription.deleted" => Source::Deleted,
            _ => Source::Updated,
        };
        let trial_will_end = event.event_type == "customer.subscription.trial_will_end";
        let address = billing::billing_address(&self.db, &company, Some(&state.customer_id))
            .await
            .map_err(db_error)?;
        if address.is_none() && (source == Source::Deleted || trial_will_end) {
            tracing::warn!(company = %company, event = %event.id, "no billing address for this company; its email is not sent");
        }

        // Decided inside the transaction, on the locked row.
        let Some(mut tx) = self.begin(event, Scope::Company(&company)).await? else {
            return Ok(());
        };
        let before = billing::lock_subscription(&mut tx, &state.id)
            .await
            .map_err(db_error)?;
        let decision = billing::decide(
            before.as_ref().map(|b| (&b.stamp, b.state.status.as_str())),
            event.created,
            source,
            &state.status,
        );
        let stamp = Stamp {
            at: event.created,
            rank: source.rank(),
        };
        let outcome = match decision {
            Decision::Apply => {
                let written = billing::save_subscription(
                    &mut tx,
                    &company,
                    &state,
                    stamp,
                    Some(&event.id),
                    false,
                )
                .await
                .map_err(db_error)?;
                if written {
                    self.audit_change(&mut tx, &company, event, before.as_ref(), &state)
                        .await?;
                    Outcome::applied()
                } else {
                    Outcome::skipped("a newer state was written concurrently")
                }
            }
            Decision::Stale => Outcome::skipped(format!(
                "older than the stored state (event of {}, stored state of {})",
                event.created,
                before.as_ref().map(|b| b.stamp.at).unwrap_or_default()
            )),
            Decision::AfterCancel => Outcome::skipped(
                "the subscription is canceled, and Stripe never reopens a canceled subscription",
            ),
        };
        let applied = outcome.status == EVENT_APPLIED;
        let current_status = if applied {
            state.status.as_str()
        } else {
            before
                .as_ref()
                .map(|b| b.state.status.as_str())
                .unwrap_or("")
        };
        let plan = state
            .plan
            .clone()
            .unwrap_or_else(|| self.settings.billing.default_plan.clone());
        let email = match (&address, source) {
            (Some(to), Source::Deleted)
                if applied && before.as_ref().is_none_or(|b| b.state.status != "canceled") =>
            {
                // Access lasts until the period end when it was canceled at the period's end.
                let ends_at = state
                    .current_period_end
                    .filter(|end| *end > event.created && state.cancel_at_period_end)
                    .map(day);
                Some(self.email(
                    &company,
                    to,
                    format!("subscription:{}:cancelled", state.id),
                    EmailMessage::SubscriptionCancelled(SubscriptionCancelled { plan, ends_at }),
                ))
            }
            (Some(to), _) if trial_will_end && current_status == "trialing" => {
                state.trial_end.map(|end| {
                    self.email(
                        &company,
                        to,
                        format!("subscription:{}:trial_end:{}", state.id, end.timestamp()),
                        EmailMessage::TrialEnding(TrialEnding {
                            plan,
                            trial_end: day(end),
                        }),
                    )
                })
            }
            _ => None,
        };
        self.enqueue(&mut tx, email).await?;
        self.complete(tx, event, outcome).await
    }

    /// Audits a subscription write that changed something (a new row, or different fields).
    async fn audit_change(
        &self,
        tx: &mut Tx<'_>,
        company: &str,
        event: &StoredEvent,
        before: Option<&SubscriptionRow>,
        after: &SubscriptionState,
    ) -> Result<(), HandlerError> {
        if before.is_some_and(|b| &b.state == after && b.company_id == company) {
            return Ok(());
        }
        let action = match (before, after.status.as_str()) {
            (None, _) => "billing.subscription_created",
            (Some(b), "canceled") if b.state.status != "canceled" => {
                "billing.subscription_canceled"
            }
            _ => "billing.subscription_updated",
        };
        billing::audit(
            tx,
            &AuditEntry {
                actor: ACTOR,
                actor_role: ACTOR_ROLE,
                company_id: Some(company),
                action,
                target: &after.id,
                details: json!({
                    "event_id": event.id,
                    "event_type": event.event_type,
                    "before": before.map(|b| &b.state),
                    "after": after,
                }),
            },
        )
        .await
        .map_err(db_error)
    }

    async fn invoice_event(&self, event: &StoredEvent, object: &Value) -> Result<(), HandlerError> {
        #[derive(Deserialize)]
        struct SubscriptionDetails {
            #[serde(default)]
            subscription: Option<IdOrObject>,
        }
        #[derive(Deserialize)]
        struct Parent {
            #[serde(default)]
            subscription_details: Option<SubscriptionDetails>,
        }
        #[derive(Deserialize)]
        struct Invoice {
            id: String,
            #[serde(default)]
            customer: Option<IdOrObject>,
            #[serde(default)]
            customer_email: Option<String>,
            // Before 2025-03-31 on the invoice; since then under parent.subscription_details.
            #[serde(default)]
            subscription: Option<IdOrObject>,
            #[serde(default)]
            parent: Option<Parent>,
            #[serde(default)]
            amount_due: Option<i64>,
            #[serde(default)]
            currency: Option<String>,
            #[serde(default)]
            hosted_invoice_url: Option<String>,
            #[serde(default)]
            attempt_count: Option<i64>,
            #[serde(default)]
            metadata: Option<HashMap<String, Value>>,
        }
        let invoice = Invoice::deserialize(object).map_err(|e| {
            HandlerError::permanent(format!("{}: data.object is not an invoice: {e}", event.id))
        })?;
        let Some(customer) = invoice.customer.as_ref().map(IdOrObject::id) else {
            return self.skip(event, "the invoice has no customer".into()).await;
        };
        let company = self
            .company_for(
                customer,
                company_in(invoice.metadata.as_ref()).as_deref(),
                invoice.customer_email.as_deref(),
                &event.id,
            )
            .await?;
        let subscription = invoice
            .subscription
            .as_ref()
            .or_else(|| {
                invoice
                    .parent
                    .as_ref()
                    .and_then(|p| p.subscription_details.as_ref())
                    .and_then(|d| d.subscription.as_ref())
            })
            .map(|s| s.id().to_string());
        let (status, action) = match event.event_type.as_str() {
            "invoice.paid" => ("paid", "billing.invoice_paid"),
            "invoice.payment_failed" => ("payment_failed", "billing.payment_failed"),
            _ => ("payment_action_required", "billing.payment_action_required"),
        };
        let address = match invoice.customer_email.clone() {
            Some(email) => Some(email),
            None => billing::billing_address(&self.db, &company, Some(customer))
                .await
                .map_err(db_error)?,
        };
        // One email per failed attempt (Stripe retries a failed payment several times); a
        // redelivered event is stopped earlier, by its id.
        let subject = |kind: &str| match invoice.attempt_count {
            Some(n) => format!("invoice:{}:{kind}:attempt:{n}", invoice.id),
            None => format!("invoice:{}:{kind}:{}", invoice.id, event.id),
        };
        let link = invoice.hosted_invoice_url.clone();
        let email = match (status, &address) {
            ("payment_failed", Some(to)) => Some(self.email(
                &company,
                to,
                subject("payment_failed"),
                EmailMessage::PaymentFailed(PaymentFailed {
                    invoice_id: invoice.id.clone(),
                    amount_due: money(
                        invoice.amount_due.unwrap_or(0),
                        invoice.currency.as_deref().unwrap_or("usd"),
                    ),
                    hosted_invoice_url: link,
                }),
            )),
            ("payment_action_required", Some(to)) => Some(self.email(
                &company,
                to,
                subject("payment_action_required"),
                EmailMessage::PaymentActionRequired(PaymentActionRequired {
                    invoice_id: invoice.id.clone(),
                    // Without Stripe's page, the customer's way to act is voxline's own.
                    hosted_invoice_url:
                        link.unwrap_or_else(|| self.settings.email.public_base_url.clone()),
                }),
            )),
            ("paid", _) => None,
            (_, None) => {
                tracing::warn!(company = %company, event = %event.id, "no billing address for this company; the payment email is not sent");
                None
            }
            _ => None,
        };
        let details = json!({
            "event_id": event.id,
            "invoice": invoice.id,
            "subscription": subscription,
            "amount_due": invoice.amount_due,
            "currency": invoice.currency,
            "attempt_count": invoice.attempt_count,
        });
        let Some(mut tx) = self.begin(event, Scope::Company(&company)).await? else {
            return Ok(());
        };
        if let Some(subscription) = &subscription {
            billing::record_invoice(&mut tx, subscription, &invoice.id, status, event.created)
                .await
                .map_err(db_error)?;
        }
        billing::audit(
            &mut tx,
            &AuditEntry {
                actor: ACTOR,
                actor_role: ACTOR_ROLE,
                company_id: Some(&company),
                action,
                target: &invoice.id,
                details,
            },
        )
        .await
        .map_err(db_error)?;
        self.enqueue(&mut tx, email).await?;
        self.complete(tx, event, Outcome::applied()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_people_write_them() {
        assert_eq!(money(4900, "usd"), "$49.00");
        assert_eq!(money(1250, "EUR"), "€12.50");
        assert_eq!(money(5, "gbp"), "£0.05");
        assert_eq!(money(1200, "jpy"), "1200 JPY");
        assert_eq!(money(999, "chf"), "9.99 CHF");
        assert_eq!(money(-150, "usd"), "-$1.50");
    }
}
