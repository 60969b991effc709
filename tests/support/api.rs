//! Talking to a test deployment's HTTP API as a client would: answers as (status, JSON body),
//! signed webhook deliveries, session submissions and waits on what the API reports.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::multipart::Form;
use serde_json::Value;

/// The body of an unauthenticated `GET url` (a page, `/metrics`, the OpenAPI document).
pub async fn text_of(url: &str) -> String {
    let response = reqwest::get(url).await.expect("the server answers");
    response.text().await.expect("a text body")
}

/// The response's status and its JSON body (`Null` when the body is not JSON).
pub async fn status_and_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends `request` and answers its status and JSON body.
pub async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    status_and_json(request.send().await.expect("the API answers")).await
}

/// Sends `request` and answers its JSON body, whatever the status.
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json")
}

/// The `id` field of a JSON answer.
pub fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("id").to_string()
}

/// A webhook route and how its deliveries are signed.
pub struct Webhook {
    /// The route under the API's base URL, e.g. `/api/webhooks/stripe`.
    pub route: &'static str,
    /// The header the signature travels in.
    pub header: &'static str,
    /// The secret the sender signs with.
    pub secret: &'static str,
    /// The sender's signature scheme: (secret, unix time, body) to the header's value.
    pub sign: fn(&str, i64, &[u8]) -> String,
}

impl Webhook {
    /// Posts `body` as is, with the signature header when given.
    pub async fn deliver(
        &self,
        base: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{base}{}", self.route))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header(self.header, signature);
        }
        answer(request).await
    }

    /// Posts `event` signed with the configured secret, now.
    pub async fn deliver_signed(&self, base: &str, event: &Value) -> (StatusCode, Value) {
        let body = event.to_string();
        let now = chrono::Utc::now().timestamp();
        let signature = (self.sign)(self.secret, now, body.as_bytes());
        self.deliver(base, body.as_bytes(), Some(&signature)).await
    }
}

/// Submits a session (JSON) as `token`, optionally with an `Idempotency-Key`; checks it was
/// accepted and answers its id.
pub async fn submit_session(base: &str, token: &str, body: &Value, key: Option<&str>) -> String {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let (status, body) = answer(request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    id_of(&body)
}

/// Uploads a recording (a multipart `form`) as a new session of `token`'s profile.
pub async fn upload_session(base: &str, token: &str, form: Form) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .post(format!("{base}/api/sessions"))
            .bearer_auth(token)
            .multipart(form),
    )
    .await
}

/// Waits until `GET /api/sessions/{id}` as `token` says the session is ready.
pub async fn wait_until_ready(base: &str, token: &str, id: &str) {
    let url = format!("{base}/api/sessions/{id}");
    super::eventually("the session is ready", Duration::from_secs(30), || {
        let (url, token) = (url.clone(), token.to_string());
        async move {
            let (_, body) = answer(reqwest::Client::new().get(&url).bearer_auth(&token)).await;
            body["status"] == "ready"
        }
    })
    .await;
}

/// Opens `GET /api/sessions/{id}/events` (the session's status stream) as `token`, or with no
/// token at all.
pub async fn session_events(base: &str, id: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{base}/api/sessions/{id}/events"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("open the stream")
}
