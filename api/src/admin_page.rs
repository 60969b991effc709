//! `/admin`: the operators' page. Static files (no outside scripts or fonts) kept in
//! `api/assets/admin/` and compiled in: the operator pastes an operator token, which stays in
//! this tab's sessionStorage; the page then calls the `/api/admin` routes with it, refreshes
//! every two seconds, and writes every value with `textContent`, so nothing a job carries can
//! run as markup. The CSP allows scripts and styles from this origin only, none inline.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

/// Scripts, styles and requests from this origin only; no inline code, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

const INDEX: &str = include_str!("../assets/admin/index.html");
const SCRIPT: &str = include_str!("../assets/admin/admin.js");
const STYLE: &str = include_str!("../assets/admin/admin.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/admin/admin.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/admin/admin.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

/// A compiled-in file with the page's security headers.
pub async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
