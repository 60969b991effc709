//! Where emails go: an SMTP server (lettre's pooled async transport) or, on the embedded
//! default, one `.eml` file per message under `<data_dir>/outbox`.

use std::time::Duration;

use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use voxline_domain::Settings;

pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(AsyncFileTransport<Tokio1Executor>),
}

/// Why a send failed, as the engine needs to know it.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// 4xx, connection refused, time-out: try again later.
    #[error("{0}")]
    Transient(String),
    /// 5xx: the server refused for good (e.g. 550 mailbox unavailable).
    #[error("{0}")]
    Permanent(String),
}

impl Mailer {
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let url = settings.smtp.url.trim();
        if url.is_empty() {
            let dir = settings.data_dir.join("outbox");
            std::fs::create_dir_all(&dir).map_err(|e| {
                format!(
                    "smtp.url is empty and the outbox {} cannot be created: {e}",
                    dir.display()
                )
            })?;
            return Ok(Mailer::Outbox(AsyncFileTransport::new(dir)));
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("smtp.url: {e}"))?
            .timeout(Some(Duration::from_millis(settings.smtp.timeout_ms)))
            .build();
        Ok(Mailer::Smtp(transport))
    }

    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Mailer::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(classify),
            Mailer::Outbox(outbox) => outbox
                .send(message)
                .await
                .map(drop)
                .map_err(|e| SendError::Transient(format!("writing to the outbox: {e}"))),
        }
    }
}

fn classify(error: SmtpError) -> SendError {
    if error.is_permanent() {
        SendError::Permanent(error.to_string())
    } else {
        // Transient replies (4xx) and everything short of a reply (refused, reset, time-out).
        SendError::Transient(error.to_string())
    }
}
