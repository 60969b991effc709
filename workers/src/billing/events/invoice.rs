//! `invoice.paid|payment_failed|payment_action_required`: the newest invoice outcome on its
//! subscription, its audit entry, and the "payment failed" / "payment action required" emails.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};
use voxline_domain::billing::{self, StoredEvent};
use voxline_domain::db::Scope;
use voxline_jobs::HandlerError;
use voxline_jobs::payloads::{EmailMessage, PaymentActionRequired, PaymentFailed};

use super::format::money;
use super::{Outcome, audit_entry, db_error};
use crate::billing::{BillingWorker, IdOrObject, company_in};

impl BillingWorker {
    pub(super) async fn invoice_event(
        &self,
        event: &StoredEvent,
        object: &Value,
    ) -> Result<(), HandlerError> {
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
            &audit_entry(&company, action, &invoice.id, details),
        )
        .await
        .map_err(db_error)?;
        self.enqueue(&mut tx, email).await?;
        self.complete(tx, event, Outcome::applied()).await
    }
}
