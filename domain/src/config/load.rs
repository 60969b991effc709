//! Loading: `config/default.toml` (compiled in), then the file named by `VOXLINE_CONFIG`, then
//! `VOXLINE_*` environment variables, extracted into [`Settings`] and validated.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};

use super::{ConfigError, Settings, invalid};

/// The embedded default configuration, so the binary runs with no files beside it.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Fixed environment variable names (without the `VOXLINE_` prefix, lower-cased) → config keys.
pub const FIXED_ENV_KEYS: &[(&str, &str)] = &[
    ("http_addr", "http.addr"),
    ("database_url", "database.url"),
    ("database_app_password", "database.app_password"),
    ("redis_url", "redis.url"),
    ("data_dir", "data_dir"),
    ("auth_jwt_secret", "auth.jwt_secret"),
    ("openai_api_key", "openai.api_key"),
    ("openai_base_url", "openai.base_url"),
    ("elevenlabs_webhook_secret", "elevenlabs.webhook_secret"),
    ("stripe_secret_key", "stripe.secret_key"),
    ("stripe_webhook_secret", "stripe.webhook_secret"),
    ("stripe_base_url", "stripe.base_url"),
    ("smtp_url", "smtp.url"),
];

impl Settings {
    /// Loads default.toml, then `VOXLINE_CONFIG`, then the environment, and validates the result.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("VOXLINE_CONFIG").map(PathBuf::from);
        Self::load_from(file.as_deref(), true)
    }

    /// As [`Settings::load`], with the override file given and the environment optional
    /// (tests build settings without touching the process environment).
    pub fn load_from(file: Option<&Path>, with_env: bool) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "VOXLINE_CONFIG",
                    format!("file {} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        if with_env {
            figment = figment.merge(env_provider());
        }
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Parses settings from TOML text layered over the defaults (for tests and tools).
    pub fn from_toml_overrides(toml: &str) -> Result<Self, ConfigError> {
        Self::from_toml_layers(&[toml])
    }

    /// Like [`Settings::from_toml_overrides`] with several layers, later ones winning.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Self, ConfigError> {
        let figment = layers
            .iter()
            .fold(Figment::from(Toml::string(DEFAULT_TOML)), |f, layer| {
                f.merge(Toml::string(layer))
            });
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(settings)
    }
}

/// `VOXLINE_*` variables: the fixed names map to their keys, `A__B` maps to `a.b`.
fn env_provider() -> Env {
    Env::prefixed("VOXLINE_")
        .ignore(&["CONFIG"])
        .map(|key| {
            let lower = key.as_str().to_ascii_lowercase();
            match FIXED_ENV_KEYS.iter().find(|(env, _)| *env == lower) {
                Some((_, path)) => (*path).into(),
                None => lower.replace("__", ".").into(),
            }
        })
        .lowercase(false)
}

fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if path.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("{path}: {}{origin}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    #[test]
    fn the_embedded_default_is_sqlite_under_the_data_dir() {
        let s = Settings::from_toml_overrides("").expect("defaults load");
        assert!(!s.is_postgres());
        assert_eq!(s.database_url(), "sqlite://data/voxline.db?mode=rwc");
        assert_eq!(s.http.addr, "127.0.0.1:8080");
        assert!(s.queue_names().contains(&"email".to_string()));
    }

    #[test]
    fn a_wrongly_typed_value_names_the_key() {
        let err =
            Settings::from_toml_overrides("[engine]\npoll_interval_ms = \"soon\"").unwrap_err();
        assert!(
            err.to_string().starts_with("engine.poll_interval_ms:"),
            "{err}"
        );
    }
}
