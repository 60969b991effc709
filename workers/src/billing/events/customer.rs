//! Whose event it is: the company a Stripe customer pays for, linked on first sight, and
//! `checkout.session.completed`, which names it.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};
use voxline_domain::audit;
use voxline_domain::billing::{self, StoredEvent};
use voxline_domain::db::Scope;
use voxline_jobs::HandlerError;

use super::{Outcome, audit_entry, db_error};
use crate::billing::{BillingWorker, IdOrObject, company_in};

impl BillingWorker {
    /// The company the customer pays for (see the module documentation), linking it on first
    /// sight.
    pub(super) async fn company_for(
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
                &audit_entry(
                    &linked.company_id,
                    "billing.customer_linked",
                    customer,
                    json!({ "event_id": event_id, "source": source }),
                ),
            )
            .await
            .map_err(db_error)?;
            tracing::info!(customer, company = %linked.company_id, source, "Stripe customer linked");
        }
        Ok(linked.company_id)
    }

    pub(super) async fn checkout_completed(
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
            &audit_entry(&company, "billing.checkout_completed", customer, details),
        )
        .await
        .map_err(db_error)?;
        self.complete(tx, event, Outcome::applied()).await
    }
}
