//! The span of each HTTP request (tower-http's `TraceLayer` with our own span): a `server`
//! span named after its route, with the method, route and status as OpenTelemetry's HTTP
//! conventions name them. A request that carries a W3C `traceparent` continues that trace.

use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Request, Response};
use tower_http::trace::{DefaultOnResponse, MakeSpan, OnResponse};
use tracing::Span;
use tracing::field::Empty;
use voxline_domain::trace_context;

/// Makes the request's span. The router applies the layer after routing, so the matched
/// route (`/api/sessions/{id}`, not the id itself) is known; an unmatched request has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let method = request.method();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let name = match route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        };
        // The `otel.*` fields last: log lines inside the request show this span's fields in
        // this order, and those only repeat the others for the exporter.
        let span = tracing::info_span!(
            "request",
            http.request.method = %method,
            http.route = route,
            url.path = request.uri().path(),
            http.response.status_code = Empty,
            otel.name = name,
            otel.kind = "server",
            otel.status_code = Empty,
        );
        if let Some(parent) = header(request.headers(), "traceparent") {
            trace_context::set_parent(&span, parent, header(request.headers(), "tracestate"));
        }
        span
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Records the status on the request's span (a 5xx marks it as an error, as the HTTP
/// conventions say for servers), then logs the response as tower-http does by default.
#[derive(Debug, Clone, Default)]
pub struct RecordStatus(DefaultOnResponse);

impl<B> OnResponse<B> for RecordStatus {
    fn on_response(self, response: &Response<B>, latency: Duration, span: &Span) {
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        self.0.on_response(response, latency, span);
    }
}
