//! ElevenLabs' signed conversation URL (`GET /v1/convai/conversation/get-signed-url`), asked
//! for when a role-play starts, so the client never holds the ElevenLabs API key.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;
use voxline_domain::config::ElevenLabsSettings;

use crate::error::ApiError;

const DEFAULT_BASE_URL: &str = "https://api.elevenlabs.io";
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct SignedUrl {
    signed_url: String,
}

/// The signed URL for `config.agent_id`, or `None` when no API key or agent is configured.
pub async fn fetch(config: &ElevenLabsSettings) -> Result<Option<String>, ApiError> {
    if config.api_key.is_empty() || config.agent_id.is_empty() {
        return Ok(None);
    }
    let base = match config.base_url.trim_end_matches('/') {
        "" => DEFAULT_BASE_URL,
        base => base,
    };
    let failed = |reason: String| {
        tracing::warn!(%reason, "ElevenLabs signed URL request failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "elevenlabs_unavailable",
            format!("ElevenLabs did not give a signed conversation URL: {reason}"),
        )
    };
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/v1/convai/conversation/get-signed-url"),
        &[("agent_id", config.agent_id.as_str())],
    )
    .map_err(|e| failed(format!("elevenlabs.base_url is not a URL: {e}")))?;
    let response = reqwest::Client::new()
        .get(url)
        .header("xi-api-key", &config.api_key)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!("it answered {status}")));
    }
    let body: SignedUrl = response
        .json()
        .await
        .map_err(|e| failed(format!("unreadable answer: {e}")))?;
    Ok(Some(body.signed_url))
}
