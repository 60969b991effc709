//! Where emails go: an SMTP server (lettre's pooled async transport) or, on the embedded
//! default, one `.eml` file per message under `<data_dir>/outbox`.
//!
//! The outbox file is named after the message's Message-ID (derived from its dedupe key) and
//! written whole, then renamed into place: a process killed mid-write leaves at most a hidden
//! temporary file, never a truncated `.eml`, and a resend after a crash replaces the same file
//! instead of adding a second copy. (lettre's file transport writes `<uuid>.eml` in place, so a
//! crash could leave an empty message and a resend a duplicate.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest, Sha256};
use voxline_domain::Settings;

pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// The outbox directory.
    Outbox(PathBuf),
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
            return Ok(Mailer::Outbox(dir));
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
            Mailer::Outbox(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || write_to_outbox(&dir, &message))
                    .await
                    .map_err(|e| SendError::Transient(format!("writing to the outbox: {e}")))?
                    .map_err(|e| SendError::Transient(format!("writing to the outbox: {e}")))
            }
        }
    }
}

/// Writes `message` to `<dir>/<name>.eml` atomically: a temporary file, synced, then renamed.
/// The name is a digest of the Message-ID, so a resend of the same message replaces it.
fn write_to_outbox(dir: &Path, message: &Message) -> std::io::Result<()> {
    let name = match message.headers().get_raw("Message-ID") {
        Some(id) => hex::encode(&Sha256::digest(id.as_bytes())[..16]),
        None => hex::encode(rand::random::<[u8; 16]>()),
    };
    let temporary = dir.join(format!(".{name}.eml.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&message.formatted())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, dir.join(format!("{name}.eml")))?;
    // The rename itself survives a crash once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

fn classify(error: SmtpError) -> SendError {
    if error.is_permanent() {
        SendError::Permanent(error.to_string())
    } else {
        // Transient replies (4xx) and everything short of a reply (refused, reset, time-out).
        SendError::Transient(error.to_string())
    }
}
