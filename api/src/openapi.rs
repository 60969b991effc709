//! The OpenAPI document (utoipa), served at `/api/openapi.json`, and a small docs page at
//! `/docs` that renders it with no outside scripts (it works offline).
//!
//! The document is a contract (`tests/contract.rs` walks every operation with broken inputs):
//! request schemas state their required fields and constraints, and every status a route can
//! answer is listed — its own in its annotation, the shared ones added by [`responses`].

mod responses;

use std::sync::Arc;

use axum::Json;
use axum::response::Html;
use axum::routing::get;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{
    AppState, admin, admin_console, billing, health, me, notifications, session_events, sessions,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "voxline", description = "Intake, jobs and operators API of voxline."),
    modifiers(&BearerAuth),
    tags((name = "health"), (name = "operators", description = "Queue inspection and job actions (operator role)"),
         (name = "notifications", description = "Email preferences of the caller"),
         (name = "sessions", description = "Practice sessions and their feedback"),
         (name = "me", description = "The caller's own data: export and erasure (GDPR)"),
         (name = "billing", description = "The caller's company's plan, subscription and usage"),
         (name = "webhooks", description = "Provider webhooks (ElevenLabs, Stripe), authenticated by their signatures"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The routes' document completed with the answers they share (see [`responses`]).
pub fn complete(mut doc: OpenApiDoc) -> OpenApiDoc {
    responses::complete(&mut doc);
    doc
}

/// Every documented route. Add new `/api` routes here, never with a bare `Router::route`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(admin::queues))
        .routes(routes!(admin::jobs))
        .routes(routes!(admin::job))
        .routes(routes!(admin::retry))
        .routes(routes!(admin::discard))
        .routes(routes!(admin::retry_dead))
        .routes(routes!(admin::audit_log))
        .routes(routes!(admin_console::bulk))
        .routes(routes!(admin_console::pause))
        .routes(routes!(admin_console::resume))
        .routes(routes!(admin_console::stats))
        .routes(routes!(sessions::create, sessions::list))
        .routes(routes!(sessions::get, sessions::delete))
        .routes(routes!(crate::roleplays::create))
        .routes(routes!(sessions::feedback))
        .routes(routes!(crate::transcript::get))
        // Signed by ElevenLabs, not JWT-authenticated; takes bodies up to 5 MB.
        .routes(crate::webhooks::elevenlabs::route())
        // Signed by Stripe, not JWT-authenticated.
        .routes(crate::webhooks::stripe::route())
        .routes(routes!(billing::subscription))
        .routes(routes!(billing::usage))
        .routes(routes!(session_events::events))
        .routes(routes!(
            notifications::get_preferences,
            notifications::put_preferences
        ))
        .routes(routes!(me::export))
        .routes(routes!(me::erase))
}

pub fn docs_router(spec: Arc<OpenApiDoc>) -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/api/openapi.json",
            get(move || async move { Json(spec.as_ref().clone()) }),
        )
        .route(
            "/docs",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'",
                    )],
                    Html(DOCS_PAGE),
                )
            }),
        )
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voxline API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem}
code{background:#f3f3f3;padding:0 .3em}.op{border-top:1px solid #ddd;padding:.6rem 0}
.m{display:inline-block;min-width:4.5rem;font-weight:600;text-transform:uppercase}</style></head>
<body><h1>voxline API</h1><p>The machine-readable document is <a href="/api/openapi.json">/api/openapi.json</a>.
Every <code>/api</code> route needs <code>Authorization: Bearer &lt;JWT&gt;</code>.</p><div id="ops"></div>
<script>
fetch('/api/openapi.json').then(r => r.json()).then(spec => {
  const root = document.getElementById('ops');
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const div = document.createElement('div'); div.className = 'op';
      const m = document.createElement('span'); m.className = 'm'; m.textContent = method;
      const p = document.createElement('code'); p.textContent = path;
      const d = document.createElement('p'); d.textContent = op.description || op.summary || '';
      const codes = document.createElement('p'); codes.textContent = 'responses: ' + Object.keys(op.responses || {}).join(', ');
      div.append(m, p, d, codes); root.append(div);
    }
  }
});
</script></body></html>"#;
