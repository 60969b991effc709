//! `/app`: the page for the person being coached. Static files (no outside scripts or fonts)
//! kept in `api/assets/app/` and compiled in: the member pastes a member token, which stays in
//! this tab's sessionStorage; the page records (MediaRecorder) or picks a recording, submits it
//! to `POST /api/sessions`, follows the session's event stream, and shows the transcript with
//! its marks, the scored metrics, three inline-SVG charts and the past sessions. Every value
//! from the API is written with `textContent`, so nothing a transcript holds can run as markup.
//! It is served with the admin page's headers and CSP (one policy for both pages).

use axum::Router;
use axum::routing::get;

use crate::AppState;
use crate::admin_page::asset;

const INDEX: &str = include_str!("../assets/app/index.html");
const SCRIPT: &str = include_str!("../assets/app/app.js");
const STYLE: &str = include_str!("../assets/app/app.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/app/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/app/app.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}
