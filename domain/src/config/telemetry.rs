//! `[telemetry]`: where spans go. With `otlp_endpoint` empty (the default) nothing is exported
//! and no OpenTelemetry layer is installed, so tracing costs what plain logging does.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// The OTLP/HTTP path of the traces signal, added to the collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// The OpenTelemetry collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`
    /// (`/v1/traces` is added unless it is already there); empty = no traces.
    pub otlp_endpoint: String,
    /// `service.name` on every exported span.
    pub service_name: String,
    /// How long finished spans wait to be exported in a batch.
    pub export_delay_ms: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: String::new(),
            service_name: "voxline".into(),
            // OpenTelemetry's own default (OTEL_BSP_SCHEDULE_DELAY).
            export_delay_ms: 5_000,
        }
    }
}

impl TelemetrySettings {
    /// Where spans are posted, or `None` when telemetry is off.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.trim().trim_end_matches('/');
        if base.is_empty() {
            return None;
        }
        Some(if base.ends_with(TRACES_PATH) {
            base.to_string()
        } else {
            format!("{base}{TRACES_PATH}")
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(url) = self.traces_url() else {
            return Ok(());
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                format!(
                    "\"{}\" is not an http(s) URL like http://127.0.0.1:4318",
                    self.otlp_endpoint
                ),
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        if self.export_delay_ms == 0 {
            return Err(invalid("telemetry.export_delay_ms", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    #[test]
    fn telemetry_is_off_by_default() {
        let s = Settings::from_toml_overrides("").expect("defaults load");
        assert_eq!(s.telemetry.traces_url(), None);
        assert_eq!(s.telemetry.service_name, "voxline");
    }

    #[test]
    fn the_traces_path_is_added_to_the_collector_url_once() {
        for endpoint in [
            "http://collector:4318",
            "http://collector:4318/",
            "http://collector:4318/v1/traces",
        ] {
            let s = Settings::from_toml_overrides(&format!(
                "[telemetry]\notlp_endpoint = \"{endpoint}\""
            ))
            .expect("valid");
            assert_eq!(
                s.telemetry.traces_url().as_deref(),
                Some("http://collector:4318/v1/traces"),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn an_endpoint_that_is_not_http_names_the_key() {
        let err = Settings::from_toml_overrides("[telemetry]\notlp_endpoint = \"collector:4317\"")
            .unwrap_err();
        assert!(
            err.to_string().starts_with("telemetry.otlp_endpoint:"),
            "{err}"
        );
        let err = Settings::from_toml_overrides(
            "[telemetry]\notlp_endpoint = \"http://c:4318\"\nexport_delay_ms = 0",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("telemetry.export_delay_ms:"),
            "{err}"
        );
    }
}
