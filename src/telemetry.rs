//! Logs and traces of the process: logs to stderr (filtered by `RUST_LOG`), and, when
//! `telemetry.otlp_endpoint` is set, spans to an OpenTelemetry collector over OTLP/HTTP
//! (protobuf). With it unset there is no exporter and no OpenTelemetry layer at all.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider};
use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use voxline_domain::config::TelemetrySettings;

/// How long one export may take (connection and answer), and so how long a shutdown waits for
/// a collector that does not answer.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry: cannot build the OTLP HTTP client: {0}")]
    Client(#[from] http_client::Error),
    #[error("telemetry: cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("telemetry: a tracing subscriber was already installed: {0}")]
    Installed(#[from] tracing_subscriber::util::TryInitError),
}

/// The exporting half of the process's tracing, kept to flush it at shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still waiting and stops the exporter. Call it outside the async
    /// runtime's worker threads, with the runtime still running: the batch processor is a task
    /// on that runtime, and this blocks until it has answered.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: the last spans could not be exported: {e}");
        }
    }
}

/// Installs the process's subscriber. Call it inside the tokio runtime's context (the batch
/// processor is spawned on it).
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let logs = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(logs);
    let (otel, provider) = match otlp(settings)? {
        Some((layer, provider)) => (Some(layer), Some(provider)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry { provider })
}

/// The OpenTelemetry layer and its provider, or `None` when telemetry is off. Its filter is its
/// own: what `RUST_LOG` keeps out of the logs is still traced (voxline's spans are at INFO).
fn otlp<S>(
    settings: &TelemetrySettings,
) -> Result<Option<(impl Layer<S> + use<S>, SdkTracerProvider)>, TelemetryError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(url) = settings.traces_url() else {
        return Ok(None);
    };
    // Our reqwest 0.13 (rustls, the process-wide ring provider): the exporter brings no HTTP
    // or TLS stack of its own.
    let client = http_client::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    // The async-runtime processor, since the client is async: the SDK's default processor
    // exports from a thread of its own, where an async client has no runtime to run on.
    let batches = BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(settings.export_delay_ms))
        .build();
    let processor = BatchSpanProcessor::builder(exporter, Tokio)
        .with_batch_config(batches)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("voxline"))
        .with_filter(LevelFilter::INFO);
    Ok(Some((layer, provider)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_no_endpoint_there_is_no_exporter_and_no_layer() {
        let built = otlp::<tracing_subscriber::Registry>(&TelemetrySettings::default())
            .expect("nothing to build");
        assert!(built.is_none());
    }
}
