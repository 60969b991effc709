//! Lingering close: a refusal must reach a client that is still sending its body.
//!
//! Many answers come before the body has been read: 401 for a missing token, 413 once a body
//! passes its limit, 415 for a wrong content type. hyper then closes the connection with the
//! rest of the body unread, the kernel answers the client's next bytes with a reset, and the
//! client (reqwest, curl, a provider's webhook sender) reports "broken pipe" instead of the
//! JSON error — the refusal is lost. Like nginx's `lingering_close`, this layer reads and
//! discards what is left of the body before the answer goes out, so the client finishes
//! writing and then reads the answer. The discarding is bounded in bytes and time, never
//! buffered, so a client that sends without end is still cut off.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// At most this much of an unread body is discarded (a little over the largest upload limit
/// a deployment is expected to configure); past it the connection is closed as before.
pub const MAX_DISCARD_BYTES: usize = 64 * 1024 * 1024;
/// And for at most this long, so a slow sender cannot hold the answer back.
pub const MAX_DISCARD_TIME: Duration = Duration::from_secs(10);

/// The middleware: runs the request, then discards whatever the handler left of its body.
pub async fn discard_unread_body(request: Request, next: Next) -> Response {
    // Most requests (every GET) have no body: nothing to share or wait for.
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let shared = SharedBody::new(body);
    let response = next
        .run(Request::from_parts(parts, Body::new(shared.clone())))
        .await;
    if !http_body::Body::is_end_stream(&shared) {
        let _ = tokio::time::timeout(MAX_DISCARD_TIME, discard(shared)).await;
    }
    response
}

async fn discard(mut body: SharedBody) {
    let mut discarded = 0usize;
    while discarded < MAX_DISCARD_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                discarded += frame.data_ref().map_or(0, Bytes::len);
            }
            // The end, or a client that went away: nothing more to wait for.
            Some(Err(_)) | None => return,
        }
    }
}

/// A request body the handler and this layer both hold: the handler reads it as usual and
/// drops its handle when done; this layer reads what is left.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Body>>);

impl SharedBody {
    fn new(body: Body) -> Self {
        SharedBody(Arc::new(Mutex::new(body)))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Body) -> T) -> T {
        // A poisoned lock only means a handler panicked mid-read; the body itself is intact.
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut inner)
    }
}

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.with(|body| Pin::new(body).poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.with(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.with(|body| body.size_hint())
    }
}
