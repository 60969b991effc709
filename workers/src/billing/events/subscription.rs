//! `customer.subscription.created|updated|deleted|trial_will_end`: the subscription written
//! under the order rule of `voxline_domain::billing`, its audit entry, and the "subscription
//! cancelled" and "trial ending" emails.

use serde_json::{Value, json};
use voxline_domain::Tx;
use voxline_domain::billing::{
    self, Decision, EVENT_APPLIED, Source, Stamp, StoredEvent, SubscriptionRow, SubscriptionState,
};
use voxline_domain::db::Scope;
use voxline_jobs::HandlerError;
use voxline_jobs::payloads::{EmailMessage, SubscriptionCancelled, TrialEnding};

use super::format::day;
use super::{Outcome, audit_entry, db_error};
use crate::billing::{BillingWorker, StripeSubscription};

impl BillingWorker {
    pub(super) async fn subscription_event(
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
            &audit_entry(
                company,
                action,
                &after.id,
                json!({
                    "event_id": event.id,
                    "event_type": event.event_type,
                    "before": before.map(|b| &b.state),
                    "after": after,
                }),
            ),
        )
        .await
        .map_err(db_error)
    }
}
