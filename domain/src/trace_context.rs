//! The W3C trace context (`traceparent`, and `tracestate` where there is one) of voxline's
//! spans, as text: what a job stores at enqueue so its attempts join the enqueuer's trace, and
//! what an HTTP request brings to continue its caller's. The OpenTelemetry layer that gives
//! spans their ids is installed by the binary only when `telemetry.otlp_endpoint` is set;
//! without it no span has a valid context, so [`current`] is `None` and the setters do nothing.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The two W3C fields, as the propagator reads and writes them.
#[derive(Debug, Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// The `traceparent` of the current span, when it belongs to a trace.
pub fn current() -> Option<String> {
    of(&Span::current())
}

/// The `traceparent` of `span`, when it belongs to a trace.
pub fn of(span: &Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.traceparent
}

/// The remote context `traceparent` names, or `None` when it is not a valid one (a malformed
/// header or a damaged column is ignored: tracing never fails a request or a job).
fn remote(traceparent: &str, tracestate: Option<&str>) -> Option<opentelemetry::Context> {
    let carrier = Carrier {
        traceparent: Some(traceparent.to_owned()),
        tracestate: tracestate.map(str::to_owned),
    };
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the remote span `traceparent` names. Call it before the span is
/// first entered (its OpenTelemetry span starts then). False when the text is not a valid
/// traceparent or no OpenTelemetry layer is installed.
pub fn set_parent(span: &Span, traceparent: &str, tracestate: Option<&str>) -> bool {
    remote(traceparent, tracestate).is_some_and(|cx| span.set_parent(cx).is_ok())
}

/// Links `span` to the remote span `traceparent` names (a link, unlike a parent, can point
/// at any span, in this trace or another). False when the text is not a valid traceparent.
pub fn add_link(span: &Span, traceparent: &str) -> bool {
    let Some(cx) = remote(traceparent, None) else {
        return false;
    };
    span.add_link(cx.span().span_context().clone());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use tracing_subscriber::layer::SubscriberExt;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// Keeps the finished spans (the SDK's own in-memory exporter needs its `testing` feature,
    /// which brings metrics and logs along).
    #[derive(Debug, Clone, Default)]
    struct Kept(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().expect("not poisoned").extend(batch);
            Ok(())
        }
    }

    impl Kept {
        fn get_finished_spans(&self) -> Result<Vec<SpanData>, std::convert::Infallible> {
            Ok(self.0.lock().expect("not poisoned").clone())
        }
    }

    /// A subscriber with the OpenTelemetry layer, its spans kept in memory.
    fn traced() -> (impl tracing::Subscriber + Send + Sync, Kept) {
        let exporter = Kept::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        (tracing_subscriber::registry().with(layer), exporter)
    }

    #[test]
    fn without_the_opentelemetry_layer_no_span_has_a_context() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            assert!(!set_parent(&span, PARENT, None));
            let _entered = span.enter();
            assert_eq!(current(), None);
        });
        assert_eq!(current(), None, "nor with no subscriber at all");
    }

    #[test]
    fn a_span_continues_a_remote_trace_and_hands_it_on() {
        let (subscriber, exporter) = traced();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            assert!(set_parent(&span, PARENT, Some("vendor=1")));
            let _entered = span.enter();
            let mine = current().expect("a traceparent");
            assert!(
                mine.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
                "{mine}"
            );
            assert_ne!(mine, PARENT, "it names this span, not its parent");
        });
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 1);
        assert_eq!(
            spans[0].parent_span_id.to_string(),
            "b7ad6b7169203331",
            "the remote span is the parent"
        );
    }

    #[test]
    fn a_link_names_the_remote_span() {
        let (subscriber, exporter) = traced();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("job.attempt");
            assert!(add_link(&span, PARENT));
            drop(span.enter());
        });
        let spans = exporter.get_finished_spans().expect("spans");
        let links = &spans[0].links.links;
        assert_eq!(links.len(), 1);
        assert_eq!(
            links[0].span_context.span_id().to_string(),
            "b7ad6b7169203331"
        );
    }

    #[test]
    fn malformed_text_is_ignored() {
        let (subscriber, _exporter) = traced();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            for bad in [
                "",
                "00-zz-yy-01",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            ] {
                assert!(!set_parent(&span, bad, None), "{bad:?}");
                assert!(!add_link(&span, bad), "{bad:?}");
            }
        });
    }
}
