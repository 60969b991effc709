//! Secrets that the embedded default creates for itself, so the quick start needs no set-up.

use std::io::Write;
use std::path::PathBuf;

use crate::Settings;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("auth.jwt_secret: required with a postgres:// database (set VOXLINE_AUTH_JWT_SECRET)")]
    MissingJwtSecret,
    #[error("auth.jwt_secret: must be at least 32 characters")]
    WeakJwtSecret,
    #[error("JWT secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The HS256 secret: the configured one; or, on the embedded SQLite default, one created under
/// the data directory on first use (readable by this user only) and reused after.
pub fn jwt_secret(settings: &Settings) -> Result<String, SecretError> {
    let configured = settings.auth.jwt_secret.trim();
    if !configured.is_empty() {
        if configured.len() < 32 {
            return Err(SecretError::WeakJwtSecret);
        }
        return Ok(configured.to_string());
    }
    if settings.is_postgres() {
        return Err(SecretError::MissingJwtSecret);
    }
    let path = settings.data_dir.join("jwt_secret");
    let file_error = |source| SecretError::File {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= 32 => return Ok(secret.trim().to_string()),
        Ok(_) => return Err(SecretError::WeakJwtSecret),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(file_error(e)),
        Err(_) => {}
    }
    std::fs::create_dir_all(&settings.data_dir).map_err(file_error)?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes()).map_err(file_error)?;
            Ok(secret)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)
                .map_err(file_error)?
                .trim()
                .to_string())
        }
        Err(e) => Err(file_error(e)),
    }
}
