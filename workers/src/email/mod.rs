//! The `email` worker: renders a template and delivers it, at most once per recipient,
//! template and subject, respecting preferences and the suppression list.

pub mod mailer;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use sha2::{Digest, Sha256};
use voxline_domain::notifications::{self, EmailRecord};
use voxline_domain::{Db, Settings};
use voxline_jobs::circuit::CircuitBreaker;
use voxline_jobs::payloads::EmailJob;
use voxline_jobs::{ClaimedJob, HandlerError, Handlers};

use mailer::{Mailer, SendError};
use templates::{Templates, kind_of};

pub struct EmailWorker {
    db: Db,
    mailer: Mailer,
    circuit: CircuitBreaker,
    templates: Templates,
    from: Mailbox,
}

/// The dedupe key of an email: the same recipient, template and subject give the same key.
pub fn dedupe_key(to: &str, template: &str, subject_id: &str) -> String {
    let digest = Sha256::digest(format!(
        "{}\n{template}\n{subject_id}",
        to.trim().to_ascii_lowercase()
    ));
    hex::encode(digest)
}

impl EmailWorker {
    pub fn new(db: Db, settings: &Settings) -> Result<Self, String> {
        Ok(EmailWorker {
            db,
            mailer: Mailer::from_settings(settings)?,
            circuit: CircuitBreaker::new(
                "smtp",
                settings.smtp.circuit_threshold,
                Duration::from_millis(settings.smtp.circuit_cooldown_ms),
            ),
            templates: Templates::new(&settings.email.public_base_url)
                .map_err(|e| format!("email templates: {e}"))?,
            from: settings
                .email
                .from
                .parse()
                .map_err(|e| format!("email.from: {e}"))?,
        })
    }

    pub fn register(self, handlers: Handlers) -> Handlers {
        let worker = Arc::new(self);
        handlers.add_worker(move |job: ClaimedJob, email: EmailJob| {
            let worker = worker.clone();
            async move { worker.handle(job, email).await }
        })
    }

    async fn handle(&self, job: ClaimedJob, email: EmailJob) -> Result<(), HandlerError> {
        // This attempt's lease fences the `sending` row: once it is gone (a crash, a time-out,
        // a rescue) the next attempt takes the row over instead of waiting for it.
        let holder = notifications::SendHolder {
            job: job.id.0,
            lease: job.lease,
        };
        let kind = kind_of(&email.message);
        let to: Mailbox = email.to.parse().map_err(|e| {
            HandlerError::permanent(format!("invalid recipient address \"{}\": {e}", email.to))
        })?;
        let key = dedupe_key(&email.to, kind.as_str(), &email.subject_id);
        let message_id = format!("<{}@voxline>", &key[..32]);
        let record = EmailRecord {
            dedupe_key: &key,
            company_id: email.company_id.as_deref(),
            profile_id: email.profile_id.as_deref(),
            recipient: &email.to,
            template: kind,
            subject_id: &email.subject_id,
            message_id: &message_id,
        };
        let db_error = |e: voxline_domain::DbError| HandlerError::retry(e.to_string());

        if let Err(existing) = notifications::claim_send(&self.db, &record, holder)
            .await
            .map_err(db_error)?
        {
            return match existing.status.as_str() {
                // Sent, suppressed, or dead for good: nothing more to do for this key.
                "sending" => Err(HandlerError::retry("another attempt is sending this email")),
                status => {
                    tracing::info!(dedupe = %key, status, "email already handled; not sending again");
                    Ok(())
                }
            };
        }
        if let Some(reason) = notifications::is_suppressed(&self.db, &email.to)
            .await
            .map_err(db_error)?
        {
            notifications::finish(&self.db, &record, "suppressed_address", Some(&reason))
                .await
                .map_err(db_error)?;
            return Ok(());
        }
        if !kind.is_mandatory()
            && let (Some(company), Some(profile)) = (&email.company_id, &email.profile_id)
        {
            let prefs = notifications::preferences(&self.db, company, profile)
                .await
                .map_err(db_error)?;
            if prefs.get(&kind) == Some(&false) {
                notifications::finish(&self.db, &record, "suppressed_preference", None)
                    .await
                    .map_err(db_error)?;
                return Ok(());
            }
        }

        let rendered = match self.templates.render(&email.message) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("rendering {kind}: {e}");
                notifications::finish(&self.db, &record, "failed", Some(&reason))
                    .await
                    .map_err(db_error)?;
                return Err(HandlerError::permanent(reason));
            }
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| HandlerError::permanent(format!("building the message: {e}")))?;

        if let Err(wait) = self.circuit.permit() {
            // The provider is down: give the claim back and wait without spending an attempt.
            notifications::finish(&self.db, &record, "failed", Some("SMTP circuit open"))
                .await
                .map_err(db_error)?;
            return Err(HandlerError::snooze("SMTP circuit open", wait));
        }
        let sent = self.mailer.send(message).await;
        match &sent {
            Err(SendError::Transient(_)) => self.circuit.record_failure(),
            // A permanent refusal is an answer: the server is up.
            Ok(()) | Err(SendError::Permanent(_)) => self.circuit.record_success(),
        }
        match sent {
            Ok(()) => {
                notifications::finish(&self.db, &record, "sent", None)
                    .await
                    .map_err(db_error)?;
                tracing::info!(dedupe = %key, %kind, "email sent");
                Ok(())
            }
            Err(SendError::Transient(reason)) => {
                notifications::finish(&self.db, &record, "failed", Some(&reason))
                    .await
                    .map_err(db_error)?;
                Err(HandlerError::retry(reason))
            }
            Err(SendError::Permanent(reason)) => {
                notifications::suppress(&self.db, &email.to, &reason)
                    .await
                    .map_err(db_error)?;
                notifications::finish(&self.db, &record, "failed", Some(&reason))
                    .await
                    .map_err(db_error)?;
                Err(HandlerError::permanent(reason))
            }
        }
    }
}
