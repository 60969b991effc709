//! OpenAI in one place: the async-openai client built from `[openai]`, the one circuit breaker
//! that transcription and chat share (one provider, one outage), and what a failed call means
//! for the job.
//!
//! Retrying is the job engine's business, not the client's: async-openai's default transport
//! retries 429s and 5xx three times with its own in-memory backoff, which would hide failures
//! from the circuit breaker and multiply every attempt the engine counts. So the client gets a
//! plain transport ([`transport`]) that sends each request once and hands a failed answer back
//! with its status, the provider's message and `Retry-After` (which async-openai's own error
//! type drops).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::{OPENAI_API_BASE, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use voxline_domain::config::OpenAiSettings;
use voxline_jobs::HandlerError;
use voxline_jobs::circuit::CircuitBreaker;

/// The provider's name in metrics (`voxline_provider_circuit_state{provider="openai"}`) and logs.
pub const PROVIDER: &str = "openai";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("openai.api_key cannot be sent as an HTTP header (it contains control characters)")]
    BadApiKey,
    #[error("building the OpenAI HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The OpenAI adapter: the client, the models to use, and the provider's circuit breaker.
/// Build it once per process and share it (`Arc`), so every caller sees one breaker.
pub struct OpenAi {
    client: Client<OpenAIConfig>,
    circuit: CircuitBreaker,
    pub transcription_model: String,
    pub chat_model: String,
    /// Whether a key is configured; LLM feedback is only asked for when it is.
    pub has_key: bool,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client: its configuration holds the API key.
        f.debug_struct("OpenAi")
            .field("transcription_model", &self.transcription_model)
            .field("chat_model", &self.chat_model)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    pub fn from_settings(settings: &OpenAiSettings) -> Result<Arc<OpenAi>, SetupError> {
        // async-openai builds its Authorization header with `parse().unwrap()`: refuse a key it
        // would panic on here, at start, instead of in every job.
        HeaderValue::from_str(&format!("Bearer {}", settings.api_key))
            .map_err(|_| SetupError::BadApiKey)?;
        // reqwest is built without a bundled crypto provider; ring is the process default
        // (installing it again is a harmless no-op, which is why the result is ignored).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()?;
        let base = match settings.base_url.trim().trim_end_matches('/') {
            "" => OPENAI_API_BASE,
            base => base,
        };
        // Organisation and project are set explicitly (empty) so OPENAI_* variables of the
        // environment never change where or as whom voxline calls.
        let config = OpenAIConfig::new()
            .with_api_key(settings.api_key.clone())
            .with_api_base(base)
            .with_org_id("")
            .with_project_id("");
        let client = Client::with_config(config)
            .with_http_client(http.clone())
            .with_http_service(transport(http));
        Ok(Arc::new(OpenAi {
            client,
            circuit: CircuitBreaker::new(
                PROVIDER,
                settings.circuit_threshold,
                Duration::from_millis(settings.circuit_cooldown_ms),
            ),
            transcription_model: settings.transcription_model.clone(),
            chat_model: settings.chat_model.clone(),
            has_key: !settings.api_key.is_empty(),
        }))
    }

    pub fn client(&self) -> &Client<OpenAIConfig> {
        &self.client
    }

    /// Sends one request through the circuit breaker. `request` is a lazy future (nothing goes
    /// out until it is polled), so while the circuit is open nothing is sent and the job
    /// snoozes; otherwise the outcome is recorded and a failure classified.
    pub async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, OpenAIError>>,
    ) -> Result<T, HandlerError> {
        if let Err(wait) = self.circuit.permit() {
            return Err(HandlerError::snooze("OpenAI circuit open", wait));
        }
        let mut outcome = self.circuit.call();
        match request.await {
            Ok(value) => {
                outcome.settle(false);
                Ok(value)
            }
            Err(error) => {
                let failure = classify(&error);
                outcome.settle(failure.is_outage());
                Err(failure.into())
            }
        }
    }
}

/// A non-success HTTP answer, with what async-openai's own error type leaves out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct HttpFailure {
    pub status: StatusCode,
    /// The provider's `error.message`, or the start of the body when it is not OpenAI's shape.
    pub message: String,
    /// `error.code`, else `error.type` (e.g. `insufficient_quota`).
    pub code: Option<String>,
    pub retry_after: Option<Duration>,
}

#[derive(Deserialize)]
struct WrappedError {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl HttpFailure {
    pub fn from_parts(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> HttpFailure {
        let (message, code) = match serde_json::from_slice::<WrappedError>(body) {
            Ok(w) => {
                let code = match w.error.code {
                    Some(serde_json::Value::String(c)) => Some(c),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => w.error.kind,
                };
                (w.error.message, code)
            }
            Err(_) => (excerpt(&String::from_utf8_lossy(body)), None),
        };
        let message = if message.trim().is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no message")
                .to_string()
        } else {
            message
        };
        HttpFailure {
            status,
            message,
            code,
            retry_after: retry_after(headers),
        }
    }
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// `retry-after-ms` (OpenAI's own, more precise) or `Retry-After` in seconds. The HTTP-date
/// form is not used by OpenAI and is ignored (the queue's backoff applies then).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

/// The transport async-openai sends through: each request once, a non-success answer turned
/// into an [`HttpFailure`] (boxed into `OpenAIError::Boxed`, the middleware's error channel).
fn transport(
    http: reqwest::Client,
) -> impl tower::Service<
    HttpRequestFactory,
    Response = reqwest::Response,
    Error = OpenAIError,
    Future = impl Future<Output = Result<reqwest::Response, OpenAIError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |factory: HttpRequestFactory| {
        let http = http.clone();
        async move {
            let request = factory.build().await?;
            let response = http.execute(request).await?;
            if response.status().is_success() {
                return Ok(response);
            }
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Err(OpenAIError::Boxed(Box::new(HttpFailure::from_parts(
                status, &headers, &body,
            ))))
        }
    })
}

/// What a failed call means.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth trying again later (rate limit, server error, time-out, connection); counts
    /// towards the circuit breaker.
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The provider answered and will answer the same again (bad key, bad request, file too
    /// large): the job is dead, with the provider's message.
    Refused { message: String },
    /// Answered, but not in a shape we can read: retried (an answer may be cut short), and not
    /// an outage.
    Unreadable { message: String },
}

impl Failure {
    /// Whether this failure says the provider is unavailable (counts towards the breaker).
    pub fn is_outage(&self) -> bool {
        matches!(self, Failure::Transient { .. })
    }
}

impl From<Failure> for HandlerError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Transient {
                message,
                retry_after: Some(after),
            } => HandlerError::retry_after(message, after),
            Failure::Transient { message, .. } | Failure::Unreadable { message } => {
                HandlerError::retry(message)
            }
            Failure::Refused { message } => HandlerError::permanent(message),
        }
    }
}

/// Sorts an async-openai error into [`Failure`]s.
pub fn classify(error: &OpenAIError) -> Failure {
    match error {
        OpenAIError::Boxed(inner) => match inner.downcast_ref::<HttpFailure>() {
            Some(http) => classify_http(http),
            None => Failure::Transient {
                message: format!("OpenAI transport: {inner}"),
                retry_after: None,
            },
        },
        OpenAIError::ApiError(api) => classify_http(&HttpFailure {
            status: api.status_code,
            message: api.api_error.message.clone(),
            code: api
                .api_error
                .code
                .clone()
                .or_else(|| api.api_error.r#type.clone()),
            retry_after: None,
        }),
        OpenAIError::Reqwest(e) if e.is_builder() => Failure::Refused {
            message: format!("OpenAI request could not be built: {e}"),
        },
        OpenAIError::Reqwest(e) => Failure::Transient {
            message: if e.is_timeout() {
                format!("OpenAI did not answer in time: {e}")
            } else {
                format!("OpenAI could not be reached: {e}")
            },
            retry_after: None,
        },
        OpenAIError::JSONDeserialize(e, _) => Failure::Unreadable {
            message: format!("OpenAI's answer could not be read: {e}"),
        },
        OpenAIError::StreamError(e) => Failure::Transient {
            message: format!("OpenAI stream failed: {e}"),
            retry_after: None,
        },
        OpenAIError::InvalidArgument(m) => Failure::Refused {
            message: format!("OpenAI request is invalid: {m}"),
        },
        OpenAIError::FileSaveError(m) | OpenAIError::FileReadError(m) => Failure::Refused {
            message: format!("OpenAI request file: {m}"),
        },
    }
}

fn classify_http(f: &HttpFailure) -> Failure {
    let described = format!("OpenAI answered {}: {}", f.status, f.message);
    let status = f.status.as_u16();
    // A 429 for an exhausted quota is not a rate limit: waiting minutes will not bring
    // credit back (OpenAI documents it as "check your plan and billing details").
    let quota = status == 429 && f.code.as_deref() == Some("insufficient_quota");
    match status {
        _ if quota => Failure::Refused { message: described },
        408 | 409 | 429 | 500..=599 => Failure::Transient {
            message: described,
            retry_after: f.retry_after,
        },
        // 400, 401, 403, 404, 413, 422 and any other refusal: the same request gets the same
        // answer.
        _ => Failure::Refused { message: described },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16, body: &str, headers: &[(&'static str, &str)]) -> Failure {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        let status = StatusCode::from_u16(status).expect("status");
        classify_http(&HttpFailure::from_parts(status, &map, body.as_bytes()))
    }

    const OPENAI_401: &str = r#"{"error":{"message":"Incorrect API key provided: sk-bad.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;

    #[test]
    fn rate_limits_and_server_errors_are_transient_and_keep_retry_after() {
        assert_eq!(
            failure(
                429,
                r#"{"error":{"message":"slow down","type":"requests"}}"#,
                &[("retry-after", "7")]
            ),
            Failure::Transient {
                message: "OpenAI answered 429 Too Many Requests: slow down".into(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
        assert_eq!(
            failure(
                503,
                "<html>bad gateway</html>",
                &[("retry-after-ms", "1500"), ("retry-after", "9")]
            ),
            Failure::Transient {
                message: "OpenAI answered 503 Service Unavailable: <html>bad gateway</html>".into(),
                retry_after: Some(Duration::from_millis(1500)),
            }
        );
        for status in [408, 500, 502, 504] {
            assert!(failure(status, "", &[]).is_outage(), "{status}");
        }
    }

    #[test]
    fn refusals_are_permanent_and_carry_the_providers_message() {
        for status in [400, 401, 403, 404, 413, 422] {
            let f = failure(status, OPENAI_401, &[]);
            assert!(!f.is_outage(), "{status}");
            let Failure::Refused { message } = f else {
                panic!("{status} should be refused");
            };
            assert!(
                message.contains("Incorrect API key provided: sk-bad."),
                "{message}"
            );
        }
    }

    #[test]
    fn an_exhausted_quota_is_refused_not_retried() {
        let body = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert!(matches!(failure(429, body, &[]), Failure::Refused { .. }));
    }

    #[test]
    fn a_retry_after_date_or_garbage_is_ignored() {
        assert_eq!(
            failure(429, "", &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            Failure::Transient {
                message: "OpenAI answered 429 Too Many Requests: Too Many Requests".into(),
                retry_after: None
            }
        );
    }

    #[test]
    fn a_failure_becomes_the_matching_handler_error() {
        assert_eq!(
            HandlerError::from(failure(401, OPENAI_401, &[])),
            HandlerError::permanent(
                "OpenAI answered 401 Unauthorized: Incorrect API key provided: sk-bad."
            )
        );
        assert_eq!(
            HandlerError::from(failure(429, "", &[("retry-after", "2")])),
            HandlerError::retry_after(
                "OpenAI answered 429 Too Many Requests: Too Many Requests",
                Duration::from_secs(2)
            )
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_opens_the_circuit_at_the_threshold() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let settings = OpenAiSettings {
            api_key: "sk-test".into(),
            base_url: format!("http://127.0.0.1:{port}/v1"),
            transcription_model: "whisper-1".into(),
            chat_model: "gpt-4o-mini".into(),
            timeout_ms: 2000,
            circuit_threshold: 2,
            circuit_cooldown_ms: 60_000,
        };
        let openai = OpenAi::from_settings(&settings).expect("client");
        let list = || async {
            // Any request will do: nobody listens on the port.
            openai
                .client()
                .chat()
                .create(Default::default())
                .await
                .map(drop)
        };
        for _ in 0..2 {
            let e = openai.call(list()).await.expect_err("refused");
            assert!(
                matches!(&e, HandlerError::Retryable { message, .. } if message.contains("could not be reached")),
                "{e:?}"
            );
        }
        let e = openai.call(list()).await.expect_err("open");
        assert!(matches!(e, HandlerError::Snooze { .. }), "{e:?}");
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_refused_at_start() {
        let settings = OpenAiSettings {
            api_key: "sk-\nbad".into(),
            base_url: String::new(),
            transcription_model: "whisper-1".into(),
            chat_model: "gpt-4o-mini".into(),
            timeout_ms: 1000,
            circuit_threshold: 5,
            circuit_cooldown_ms: 1000,
        };
        assert!(matches!(
            OpenAi::from_settings(&settings),
            Err(SetupError::BadApiKey)
        ));
    }
}
