//! The OpenAPI document tells the truth: the walk below reads `/api/openapi.json` from the
//! running app and, for every operation it lists, sends a valid request and then the same
//! request with each input broken in turn — path ids (`%00`, `../x`, 10 kB, not a number),
//! query parameters (out of range, negative, huge, not a number, a bad enum value), headers
//! (`Idempotency-Key`, webhook signatures), the body (not JSON, the wrong content type, too
//! large, each field missing, null, of the wrong type, empty, too long, out of range, a bad enum
//! value) and the token (none, garbage, expired, the wrong role or company). Every answer must
//! be below 500, be one of the operation's documented statuses, and, for a refusal, carry the
//! error envelope `{"error": {"code", "message", "field"?}}` that the document references.
//! A refusal is required where the input breaks a constraint the document states (it would
//! otherwise promise less than the server checks, or more), and a success where a query value
//! sits on the edge of its documented range.
//!
//! Before any of that, the document itself is checked: the error envelope is a component and
//! every 4xx/5xx response references it, every `$ref` resolves, operationIds are unique, the
//! path parameters are exactly the path template's, and every request body has a schema.
//!
//! The same walk then runs with the database closed (a documented 503 with `Retry-After` from
//! every operation but `/healthz`) and with rate limits of one request a minute (a documented
//! 429 wherever one is listed). The inputs are a fixed list, so a run is repeatable; every
//! failure is printed in one table before the assertion. `VOXLINE_CONTRACT_LOG=FILE` writes
//! every (run, operation, input, status, code) line, `VOXLINE_CONTRACT_SPEC_OUT=FILE` the
//! document.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use support::{Backend, TestDb, start_api, token};
use voxline_api::auth::Role;

const STRIPE_SECRET: &str = "whsec_contract_0123456789";
const ELEVENLABS_SECRET: &str = "wsec_contract_0123456789";
/// Small, so an oversized body costs little; the ElevenLabs route keeps its own 5 MB.
const BODY_LIMIT: usize = 64 * 1024;
/// Larger than every route's body limit.
const OVERSIZED: usize = 5 * 1024 * 1024 + 1024;
const LONG: usize = 10 * 1024;

fn settings_layer(rate_limited: bool) -> String {
    let limit = u32::from(rate_limited);
    format!(
        "[http]\nbody_limit_bytes = {BODY_LIMIT}\n\
         [rate_limits]\nintake_per_profile = {limit}\nintake_per_ip = {limit}\nwebhooks_per_ip = {limit}\n\
         [stripe]\nwebhook_secret = \"{STRIPE_SECRET}\"\n\
         [elevenlabs]\nwebhook_secret = \"{ELEVENLABS_SECRET}\"\n"
    )
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP client: paths, headers and bodies go out exactly as written (no normalisation).

struct Http {
    client: Client<HttpConnector, Body>,
    authority: String,
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    content_type: String,
    retry_after: bool,
    body: Option<Value>,
    text: String,
}

impl Http {
    fn new(base: &str) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            authority: base.trim_start_matches("http://").to_string(),
        }
    }

    async fn send(&self, req: &Req) -> Result<Answer, String> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(format!("http://{}{}", self.authority, req.target));
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Body::from(req.body.clone()))
            .map_err(|e| format!("request not built: {e}"))?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| "no answer within 30 s".to_string())?
            .map_err(|e| format!("transport error: {e}"))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let content_type = header("content-type");
        let retry_after = !header("retry-after").is_empty();
        if content_type.starts_with("text/event-stream") {
            // A live stream does not end; its head is the answer.
            return Ok(Answer {
                status,
                content_type,
                retry_after,
                body: None,
                text: String::new(),
            });
        }
        let bytes = tokio::time::timeout(
            Duration::from_secs(30),
            axum::body::to_bytes(Body::new(response.into_body()), 16 * 1024 * 1024),
        )
        .await
        .map_err(|_| "body not read within 30 s".to_string())?
        .map_err(|e| format!("body not read: {e}"))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(Answer {
            status,
            content_type,
            retry_after,
            body: serde_json::from_slice(&bytes).ok(),
            text,
        })
    }
}

#[derive(Debug, Clone)]
struct Req {
    method: Method,
    /// Path and query, already encoded.
    target: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

/// What a case requires beyond "documented, below 500, errors in the envelope".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Documented,
    /// The input breaks a documented constraint: a 4xx.
    Refusal,
    /// The input is within the documented constraints and nothing else is off: a 2xx.
    Success,
}

struct Case {
    label: String,
    req: Req,
    expect: Expect,
}

// ---------------------------------------------------------------------------------------------
// Reading the document.

/// Follows `$ref`s to the schema they name.
fn resolve<'a>(spec: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
            return schema;
        };
        let name = r.trim_start_matches("#/components/schemas/");
        schema = &spec["components"]["schemas"][name];
    }
    schema
}

/// The concrete (non-null) schema and whether null is allowed.
fn concrete(spec: &Value, schema: &Value) -> (Value, bool) {
    let schema = resolve(spec, schema);
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let nullable = options
                .iter()
                .any(|o| resolve(spec, o).get("type") == Some(&json!("null")));
            if let Some(first) = options
                .iter()
                .find(|o| resolve(spec, o).get("type") != Some(&json!("null")))
            {
                let (inner, inner_null) = concrete(spec, first);
                return (inner, nullable || inner_null);
            }
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array)
        && let Some(first) = all.first()
    {
        return concrete(spec, first);
    }
    let mut out = schema.clone();
    let mut nullable = schema.get("nullable") == Some(&json!(true));
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        nullable |= types.contains(&json!("null"));
        if let Some(t) = types.iter().find(|t| *t != "null") {
            out["type"] = t.clone();
        }
    }
    if out.get("type").is_none() && out.get("enum").is_some() {
        out["type"] = json!("string");
    }
    if out.get("type").is_none() && out.get("properties").is_some() {
        out["type"] = json!("object");
    }
    // A schema without a type takes any value, null too.
    nullable |= out.get("type").is_none();
    (out, nullable)
}

/// Whether the schema offers several (non-null) shapes, so no one "wrong type" exists.
fn is_union(spec: &Value, schema: &Value) -> bool {
    let schema = resolve(spec, schema);
    ["oneOf", "anyOf"].iter().any(|key| {
        schema
            .get(*key)
            .and_then(Value::as_array)
            .is_some_and(|options| {
                options
                    .iter()
                    .filter(|o| resolve(spec, o).get("type") != Some(&json!("null")))
                    .count()
                    > 1
            })
    })
}

fn type_of(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn num(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn len(schema: &Value, key: &str) -> Option<usize> {
    schema.get(key).and_then(Value::as_u64).map(|n| n as usize)
}

/// A value the schema accepts; `overrides` (by JSON pointer) put real values where a made-up
/// one cannot do (a role-play ticket).
fn valid(spec: &Value, schema: &Value, name: &str, ptr: &str, overrides: &Overrides) -> Value {
    if let Some(v) = overrides.get(ptr) {
        return v.clone();
    }
    let (schema, _) = concrete(spec, schema);
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    match type_of(&schema) {
        "string" => {
            let min = len(&schema, "minLength").unwrap_or(1);
            let max = len(&schema, "maxLength").unwrap_or(64);
            let mut s = format!("valid-{name}");
            while s.len() < min {
                s.push('x');
            }
            s.truncate(max.max(min));
            Value::String(s)
        }
        "integer" => json!(num(&schema, "minimum").unwrap_or(1.0).max(1.0) as i64),
        "number" => json!(num(&schema, "minimum").unwrap_or(0.0)),
        "boolean" => json!(true),
        "array" => {
            let n = len(&schema, "minItems").unwrap_or(1).max(1);
            let items = schema.get("items").cloned().unwrap_or(json!({}));
            Value::Array(
                (0..n)
                    .map(|i| valid(spec, &items, name, &format!("{ptr}/{i}"), overrides))
                    .collect(),
            )
        }
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, prop) in props {
                    out.insert(
                        key.clone(),
                        valid(spec, prop, key, &format!("{ptr}/{key}"), overrides),
                    );
                }
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

type Overrides = BTreeMap<String, Value>;

/// One broken field: where, what, and whether the document forbids it.
struct Mutation {
    ptr: String,
    /// None removes the field.
    value: Option<Value>,
    label: String,
    forbidden: bool,
}

/// The ways to break each field of `schema` (at `ptr`), recursing into objects and the first
/// item of arrays.
fn mutations(spec: &Value, schema: &Value, ptr: &str, required: bool, out: &mut Vec<Mutation>) {
    let union = is_union(spec, schema);
    let (schema, nullable) = concrete(spec, schema);
    let mut add = |value: Option<Value>, label: String, forbidden: bool| {
        out.push(Mutation {
            ptr: ptr.to_string(),
            value,
            label,
            forbidden,
        })
    };
    if !ptr.is_empty() {
        add(None, "missing".into(), required);
        add(Some(Value::Null), "null".into(), !nullable);
    }
    let kind = type_of(&schema).to_string();
    let wrong = match kind.as_str() {
        "string" => json!(12345),
        "integer" | "number" => json!("12"),
        "boolean" => json!("yes"),
        "array" => json!({ "not": "a list" }),
        "object" => json!(["not", "an", "object"]),
        _ => Value::Null,
    };
    if !wrong.is_null() {
        add(Some(wrong), "wrong type".into(), !union);
    }
    match kind.as_str() {
        "string" => {
            let min = len(&schema, "minLength");
            let max = len(&schema, "maxLength");
            let pattern = schema.get("pattern").is_some();
            let has_enum = schema.get("enum").is_some();
            add(
                Some(json!("")),
                "empty".into(),
                min.is_some_and(|m| m > 0) || has_enum,
            );
            if let Some(max) = max {
                add(
                    Some(json!("y".repeat(max + 1))),
                    format!("{} chars", max + 1),
                    true,
                );
            }
            add(
                Some(json!("z".repeat(LONG))),
                "10 kB".into(),
                max.is_some_and(|m| m < LONG) || has_enum,
            );
            add(Some(json!("nul\u{0}inside")), "NUL inside".into(), has_enum);
            add(
                Some(json!("   ")),
                "blank".into(),
                has_enum || (pattern && min.is_some_and(|m| m > 0)),
            );
            add(Some(json!("ünïcødé 🙂")), "unicode".into(), has_enum);
            if has_enum {
                add(Some(json!("bogus-value")), "bad enum".into(), true);
            }
        }
        "boolean" if schema.get("enum").is_some() => {
            add(
                Some(json!(false)),
                "false".into(),
                !schema["enum"]
                    .as_array()
                    .is_some_and(|e| e.contains(&json!(false))),
            );
        }
        "integer" | "number" => {
            let min = num(&schema, "minimum");
            let max = num(&schema, "maximum");
            if let Some(min) = min {
                add(Some(json!(min - 1.0)), format!("{}", min - 1.0), true);
            }
            if let Some(max) = max {
                add(Some(json!(max + 1.0)), format!("{}", max + 1.0), true);
            }
            add(Some(json!(-1)), "-1".into(), min.is_some_and(|m| m > -1.0));
            add(
                Some(json!(1e300)),
                "1e300".into(),
                max.is_some() || kind == "integer",
            );
            if kind == "integer" {
                add(Some(json!(1.5)), "1.5".into(), true);
            }
        }
        "array" => {
            let min = len(&schema, "minItems");
            add(
                Some(json!([])),
                "empty list".into(),
                min.is_some_and(|m| m > 0),
            );
            if let Some(items) = schema.get("items") {
                mutations(spec, items, &format!("{ptr}/0"), true, out);
            }
        }
        "object" => {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, prop) in props {
                    mutations(
                        spec,
                        prop,
                        &format!("{ptr}/{key}"),
                        required.contains(&key.as_str()),
                        out,
                    );
                }
            }
            if schema.get("additionalProperties") == Some(&json!(false)) {
                out.push(Mutation {
                    ptr: format!("{ptr}/unknown_property"),
                    value: Some(json!(true)),
                    label: "unknown property".into(),
                    forbidden: true,
                });
            }
        }
        _ => {}
    }
}

/// Sets (or with `None` removes) the value at a JSON pointer, creating nothing on the way.
fn set_at(root: &mut Value, ptr: &str, value: Option<Value>) {
    if ptr.is_empty() {
        *root = value.unwrap_or(Value::Null);
        return;
    }
    let (parent, last) = ptr.rsplit_once('/').unwrap_or(("", ptr));
    let Some(target) = root.pointer_mut(parent) else {
        return;
    };
    match (target, value) {
        (Value::Object(map), Some(v)) => {
            map.insert(last.to_string(), v);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(items), Some(v)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items[i] = v;
            }
        }
        (Value::Array(items), None) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Building the cases of one operation.

struct Operation {
    method: Method,
    path: String,
    op: Value,
}

impl Operation {
    fn params(&self, location: &str) -> Vec<Value> {
        self.op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["in"] == location).cloned().collect())
            .unwrap_or_default()
    }

    fn secured(&self) -> bool {
        self.op["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    }

    fn documented(&self) -> Vec<String> {
        self.op["responses"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn id(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Everything a valid request needs that the document cannot give: ids that exist, tokens.
struct Fixtures {
    session_id: String,
    job_id: i64,
    ticket: String,
    /// Unused tickets, one for each broken ElevenLabs delivery, so each reaches past the
    /// redelivery and used-ticket checks to the insert.
    spare_tickets: Vec<String>,
    tokens: BTreeMap<&'static str, String>,
}

const TICKET_PTR: &str =
    "/data/conversation_initiation_client_data/dynamic_variables/voxline_ticket";

impl Fixtures {
    /// Makes the `n`th broken delivery of a webhook a new one (its own event or conversation
    /// id, its own ticket), unless the breakage is in that very field.
    fn fresh(&self, op: &Operation, n: usize, broken: &str, instance: &mut Value) {
        let untouched = |ptr: &str| !broken.starts_with(ptr) && !ptr.starts_with(broken);
        match op.path.as_str() {
            "/api/webhooks/stripe" if untouched("/id") => {
                set_at(instance, "/id", Some(json!(format!("evt_contract_{n}"))));
            }
            "/api/webhooks/elevenlabs" => {
                if untouched("/data/conversation_id") {
                    set_at(
                        instance,
                        "/data/conversation_id",
                        Some(json!(format!("conv-contract-{n}"))),
                    );
                }
                if untouched(TICKET_PTR)
                    && let Some(ticket) = self.spare_tickets.get(n)
                {
                    set_at(instance, TICKET_PTR, Some(json!(ticket)));
                }
            }
            _ => {}
        }
    }
}

impl Fixtures {
    fn bearer(&self, who: &str) -> String {
        format!("Bearer {}", self.tokens[who])
    }

    /// The caller a valid request to this operation comes from.
    fn caller(&self, op: &Operation) -> &'static str {
        if op.path.starts_with("/api/admin") {
            "operator"
        } else {
            "member"
        }
    }

    fn path_value(&self, op: &Operation, param: &str) -> String {
        match (op.path.as_str(), param) {
            (p, "id") if p.starts_with("/api/sessions/") => self.session_id.clone(),
            (p, "id") if p.starts_with("/api/admin/jobs/") => self.job_id.to_string(),
            (_, "queue") => "email".into(),
            _ => "1".into(),
        }
    }

    fn overrides(&self, op: &Operation) -> Overrides {
        let mut o = Overrides::new();
        if op.path == "/api/webhooks/elevenlabs" {
            o.insert(TICKET_PTR.into(), json!(self.ticket));
            o.insert("/type".into(), json!("post_call_transcription"));
            o.insert("/data/transcript/0/role".into(), json!("user"));
        }
        if op.path == "/api/webhooks/stripe" {
            o.insert("/created".into(), json!(chrono::Utc::now().timestamp()));
        }
        if op.path == "/api/admin/jobs/bulk" {
            // A time range the route accepts: RFC 3339, `from` before `to`.
            let now = chrono::Utc::now();
            let hour = chrono::Duration::hours(1);
            o.insert("/filter/from".into(), json!((now - hour).to_rfc3339()));
            o.insert("/filter/to".into(), json!((now + hour).to_rfc3339()));
        }
        o
    }
}

fn encode_segment(raw: &str) -> String {
    let mut out = String::new();
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A request body and the headers that describe it.
#[derive(Clone)]
struct Payload {
    content_type: Option<String>,
    bytes: Vec<u8>,
}

/// One part of a multipart form.
#[derive(Clone)]
enum Part {
    Text(String),
    File {
        bytes: Vec<u8>,
        content_type: String,
        file_name: String,
    },
}

const BOUNDARY: &str = "contract-boundary-7d1f";

fn multipart(parts: &[(String, Part)]) -> Payload {
    let mut body = Vec::new();
    for (name, part) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(text) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(text.as_bytes());
            }
            Part::File {
                bytes,
                content_type,
                file_name,
            } => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(bytes);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    Payload {
        content_type: Some(format!("multipart/form-data; boundary={BOUNDARY}")),
        bytes: body,
    }
}

/// 0.1 s of 16 kHz mono silence as WAV.
fn wav() -> Vec<u8> {
    support::silent_wav(1600)
}

/// The inputs of one operation: path, query, headers and body, each valid unless a case breaks
/// it; `build` turns them into a request (signing webhook bodies as their provider would).
#[derive(Clone)]
struct Inputs {
    path: BTreeMap<String, String>,
    query: Vec<(String, String)>,
    headers: BTreeMap<String, Vec<u8>>,
    /// Header names a case set itself (not recomputed, e.g. a broken signature).
    fixed_headers: Vec<String>,
    authorization: Option<String>,
    payload: Option<Payload>,
}

fn build(op: &Operation, inputs: &Inputs) -> Req {
    let mut target = op.path.clone();
    for (name, value) in &inputs.path {
        target = target.replace(&format!("{{{name}}}"), value);
    }
    if !inputs.query.is_empty() {
        let q: Vec<String> = inputs
            .query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        target = format!("{target}?{}", q.join("&"));
    }
    let mut headers = Vec::new();
    if let Some(auth) = &inputs.authorization {
        headers.push((
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(auth).expect("auth header"),
        ));
    }
    let body = inputs
        .payload
        .as_ref()
        .map(|p| p.bytes.clone())
        .unwrap_or_default();
    if let Some(ct) = inputs.payload.as_ref().and_then(|p| p.content_type.clone()) {
        headers.push((
            HeaderName::from_static("content-type"),
            HeaderValue::from_str(&ct).expect("content type"),
        ));
    }
    let now = chrono::Utc::now().timestamp();
    for (name, value) in &inputs.headers {
        let lower = name.to_ascii_lowercase();
        let value = if inputs.fixed_headers.contains(name) {
            value.clone()
        } else if lower == "stripe-signature" {
            voxline_api::webhooks::stripe::signature_header(STRIPE_SECRET, now, &body).into_bytes()
        } else if lower == "elevenlabs-signature" {
            voxline_api::webhooks::elevenlabs::signature_header(ELEVENLABS_SECRET, now, &body)
                .into_bytes()
        } else {
            value.clone()
        };
        headers.push((
            HeaderName::from_bytes(lower.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(&value).expect("header value"),
        ));
    }
    Req {
        method: op.method.clone(),
        target,
        headers,
        body,
    }
}

/// The valid inputs of an operation.
fn baseline(spec: &Value, op: &Operation, fx: &Fixtures) -> Inputs {
    let path = op
        .params("path")
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let value = encode_segment(&fx.path_value(op, &name));
            (name, value)
        })
        .collect();
    let headers = op
        .params("header")
        .iter()
        .filter(|p| {
            p["required"] == true || p["name"].as_str().is_some_and(|n| n.ends_with("Signature"))
        })
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            (name, b"computed".to_vec())
        })
        .collect();
    let payload = body_shapes(spec, op, fx)
        .first()
        .map(BodyShape::valid_payload);
    Inputs {
        path,
        query: Vec::new(),
        headers,
        fixed_headers: Vec::new(),
        authorization: op.secured().then(|| fx.bearer(fx.caller(op))),
        payload,
    }
}

/// The request body the document describes: its content type, schema and a valid instance.
#[derive(Clone)]
struct BodyShape {
    content_type: String,
    schema: Value,
    valid: Value,
}

impl BodyShape {
    fn is_multipart(&self) -> bool {
        self.content_type.starts_with("multipart/")
    }

    fn payload(&self, instance: &Value) -> Payload {
        if self.is_multipart() {
            let parts: Vec<(String, Part)> = instance
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            let part = match v {
                                Value::String(s) if s == "$wav" => Part::File {
                                    bytes: wav(),
                                    content_type: "audio/wav".into(),
                                    file_name: "talk.wav".into(),
                                },
                                Value::String(s) if s == "$empty" => Part::File {
                                    bytes: Vec::new(),
                                    content_type: "audio/wav".into(),
                                    file_name: "talk.wav".into(),
                                },
                                Value::String(s) if s == "$text" => Part::File {
                                    bytes: b"this is not audio".to_vec(),
                                    content_type: "audio/wav".into(),
                                    file_name: "talk.wav".into(),
                                },
                                Value::String(s) if s == "$mismatch" => Part::File {
                                    bytes: wav(),
                                    content_type: "audio/mpeg".into(),
                                    file_name: "talk.mp3".into(),
                                },
                                Value::String(s) if s == "$pdf" => Part::File {
                                    bytes: b"%PDF-1.4".to_vec(),
                                    content_type: "application/pdf".into(),
                                    file_name: "slides.pdf".into(),
                                },
                                Value::String(s) => Part::Text(s.clone()),
                                other => Part::Text(other.to_string()),
                            };
                            (k.clone(), part)
                        })
                        .collect()
                })
                .unwrap_or_default();
            multipart(&parts)
        } else {
            Payload {
                content_type: Some(self.content_type.clone()),
                bytes: serde_json::to_vec(instance).expect("json"),
            }
        }
    }

    fn valid_payload(&self) -> Payload {
        self.payload(&self.valid)
    }
}

fn body_shapes(spec: &Value, op: &Operation, fx: &Fixtures) -> Vec<BodyShape> {
    let Some(content) = op.op["requestBody"]["content"].as_object() else {
        return Vec::new();
    };
    content
        .iter()
        .map(|(ct, media)| {
            let schema = media.get("schema").cloned().unwrap_or(json!({}));
            let mut valid = valid(spec, &schema, "body", "", &fx.overrides(op));
            if ct.starts_with("multipart/")
                && let Some(props) = concrete(spec, &schema).0["properties"].as_object()
            {
                for (key, prop) in props {
                    let (p, _) = concrete(spec, prop);
                    if p["format"] == "binary" || p["contentMediaType"].is_string() {
                        valid[key] = json!("$wav");
                    }
                }
            }
            BodyShape {
                content_type: ct.clone(),
                schema,
                valid,
            }
        })
        .collect()
}

fn cases(spec: &Value, op: &Operation, fx: &Fixtures) -> Vec<Case> {
    let base = baseline(spec, op, fx);
    let mut out = Vec::new();
    let mut push = |label: String, inputs: &Inputs, expect: Expect| {
        out.push(Case {
            label,
            req: build(op, inputs),
            expect,
        });
    };
    push("valid".into(), &base, Expect::Documented);

    // The token.
    if op.secured() {
        let mut i = base.clone();
        i.authorization = None;
        push("no Authorization".into(), &i, Expect::Refusal);
        for (label, value) in [
            ("Bearer garbage", "Bearer not-a-jwt".to_string()),
            ("Basic scheme", "Basic dXNlcjpwYXNz".to_string()),
            ("Bearer empty", "Bearer ".to_string()),
            ("expired token", fx.bearer("expired")),
            ("token signed elsewhere", fx.bearer("foreign")),
        ] {
            i.authorization = Some(value);
            push(label.into(), &i, Expect::Refusal);
        }
        for who in ["member", "admin", "operator", "other_company"] {
            if who != fx.caller(op) {
                i.authorization = Some(fx.bearer(who));
                push(format!("caller {who}"), &i, Expect::Documented);
            }
        }
    }

    // Path parameters, one at a time; each value is sent percent-encoded as a segment.
    for param in op.params("path") {
        let name = param["name"].as_str().unwrap_or_default().to_string();
        let (schema, _) = concrete(spec, &param["schema"]);
        let integer = type_of(&schema) == "integer";
        let mut values: Vec<(String, String, bool)> = vec![
            ("NUL".into(), "%00".into(), integer),
            ("literal %00".into(), "%2500".into(), integer),
            ("../x".into(), encode_segment("../x"), integer),
            ("..".into(), "..".into(), integer),
            ("10 kB".into(), "a".repeat(LONG), integer),
            ("unicode".into(), encode_segment("ünï 🙂"), integer),
            ("bad UTF-8".into(), "%FF%FE".into(), true),
            ("space".into(), "a%20b".into(), integer),
            ("unknown".into(), "does-not-exist".into(), integer),
        ];
        if integer {
            values.extend([
                ("-1".into(), "-1".into(), false),
                ("0".into(), "0".into(), false),
                ("1.5".into(), "1.5".into(), true),
                ("i64 overflow".into(), "99999999999999999999".into(), true),
                ("max i64".into(), i64::MAX.to_string(), false),
            ]);
        }
        for (label, value, refuse) in values {
            let mut i = base.clone();
            i.path.insert(name.clone(), value);
            let expect = if refuse {
                Expect::Refusal
            } else {
                Expect::Documented
            };
            push(format!("path {name}={label}"), &i, expect);
        }
    }

    // Query parameters, one at a time.
    for param in op.params("query") {
        let name = param["name"].as_str().unwrap_or_default().to_string();
        let (schema, _) = concrete(spec, &param["schema"]);
        let min = num(&schema, "minimum");
        let max = num(&schema, "maximum");
        let mut values: Vec<(String, String, Expect)> = vec![
            ("empty".into(), String::new(), Expect::Documented),
            ("10 kB".into(), "q".repeat(LONG), Expect::Documented),
            ("NUL".into(), "a%00b".into(), Expect::Documented),
            ("../x".into(), "..%2Fx".into(), Expect::Documented),
            ("bad UTF-8".into(), "%FF%FE".into(), Expect::Documented),
            ("repeated".into(), format!("1&{name}=2"), Expect::Documented),
        ];
        match type_of(&schema) {
            "integer" | "number" => {
                let refuse = |v: f64| {
                    if min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m) {
                        Expect::Refusal
                    } else {
                        Expect::Documented
                    }
                };
                values.extend([
                    ("not a number".into(), "many".into(), Expect::Refusal),
                    ("1.5".into(), "1.5".into(), Expect::Refusal),
                    ("-1".into(), "-1".into(), refuse(-1.0)),
                    ("0".into(), "0".into(), refuse(0.0)),
                    (
                        "huge".into(),
                        "99999999999999999999".into(),
                        if max.is_some() {
                            Expect::Refusal
                        } else {
                            Expect::Documented
                        },
                    ),
                    ("2^32".into(), "4294967296".into(), refuse(4_294_967_296.0)),
                ]);
                if let Some(min) = min {
                    values.push((
                        format!("{}", min - 1.0),
                        format!("{}", min - 1.0),
                        Expect::Refusal,
                    ));
                    values.push((format!("minimum {min}"), format!("{min}"), Expect::Success));
                }
                if let Some(max) = max {
                    values.push((
                        format!("{}", max + 1.0),
                        format!("{}", max + 1.0),
                        Expect::Refusal,
                    ));
                    values.push((format!("maximum {max}"), format!("{max}"), Expect::Success));
                }
            }
            _ => {
                if let Some(options) = schema.get("enum").and_then(Value::as_array) {
                    values.push(("bad enum".into(), "bogus-value".into(), Expect::Refusal));
                    for option in options.iter().filter_map(Value::as_str) {
                        values.push((
                            format!("enum {option}"),
                            option.to_string(),
                            Expect::Success,
                        ));
                    }
                }
                if let Some(max) = len(&schema, "maxLength") {
                    values.push((
                        format!("{} chars", max + 1),
                        "q".repeat(max + 1),
                        Expect::Refusal,
                    ));
                }
            }
        }
        for (label, value, expect) in values {
            let mut i = base.clone();
            i.query = vec![(name.clone(), value)];
            push(format!("query {name}={label}"), &i, expect);
        }
    }

    // Header parameters.
    for param in op.params("header") {
        let name = param["name"].as_str().unwrap_or_default().to_string();
        let (schema, _) = concrete(spec, &param["schema"]);
        let min = len(&schema, "minLength");
        let max = len(&schema, "maxLength");
        let signature = name.ends_with("Signature");
        let mut values: Vec<(String, Option<Vec<u8>>, Expect)> = vec![
            ("empty".into(), Some(Vec::new()), Expect::Documented),
            ("blank".into(), Some(b"   ".to_vec()), Expect::Documented),
            ("10 kB".into(), Some(vec![b'k'; LONG]), Expect::Documented),
            (
                "non-ASCII bytes".into(),
                Some("clé-ünï".as_bytes().to_vec()),
                Expect::Documented,
            ),
            (
                "garbage".into(),
                Some(b"t=soon,v9=zz".to_vec()),
                Expect::Documented,
            ),
        ];
        if signature {
            values.push(("missing".into(), None, Expect::Refusal));
            for v in values.iter_mut() {
                v.2 = Expect::Refusal;
            }
            values.push((
                "old timestamp".into(),
                Some(b"t=1,v1=00,v0=00".to_vec()),
                Expect::Refusal,
            ));
        } else {
            values.push((
                "valid".into(),
                Some(b"contract-key-1".to_vec()),
                Expect::Documented,
            ));
            if let Some(max) = max {
                values.push((
                    format!("{} chars", max + 1),
                    Some(vec![b'k'; max + 1]),
                    Expect::Refusal,
                ));
                values.push((
                    format!("{max} chars"),
                    Some(vec![b'm'; max]),
                    Expect::Documented,
                ));
            }
            if min.is_some_and(|m| m > 0) {
                values[0].2 = Expect::Refusal;
            }
            if max.is_some_and(|m| m < LONG) {
                values[2].2 = Expect::Refusal;
            }
        }
        for (label, value, expect) in values {
            let mut i = base.clone();
            match value {
                Some(v) => {
                    i.headers.insert(name.clone(), v);
                    i.fixed_headers.push(name.clone());
                }
                None => {
                    i.headers.remove(&name);
                }
            }
            push(format!("header {name}={label}"), &i, expect);
        }
    }

    // The body: as a whole, then field by field, for each documented content type.
    let shapes = body_shapes(spec, op, fx);
    if let Some(first) = shapes.first() {
        let required = op.op["requestBody"]["required"] == true;
        // Webhooks read the signed raw body whatever its Content-Type: a wrong one is refused
        // only where the operation says so (415).
        let wrong_type = if op.documented().iter().any(|s| s == "415") {
            Expect::Refusal
        } else {
            Expect::Documented
        };
        let whole: Vec<(&str, Option<Payload>, Expect)> = vec![
            (
                "no body",
                None,
                if required {
                    Expect::Refusal
                } else {
                    Expect::Documented
                },
            ),
            (
                "empty JSON body",
                Some(Payload {
                    content_type: Some("application/json".into()),
                    bytes: Vec::new(),
                }),
                Expect::Refusal,
            ),
            (
                "not JSON",
                Some(Payload {
                    content_type: Some("application/json".into()),
                    bytes: b"{not json".to_vec(),
                }),
                Expect::Refusal,
            ),
            (
                "JSON list",
                Some(Payload {
                    content_type: Some("application/json".into()),
                    bytes: b"[1,2,3]".to_vec(),
                }),
                Expect::Refusal,
            ),
            (
                "JSON string",
                Some(Payload {
                    content_type: Some("application/json".into()),
                    bytes: b"\"text\"".to_vec(),
                }),
                Expect::Refusal,
            ),
            (
                "JSON null",
                Some(Payload {
                    content_type: Some("application/json".into()),
                    bytes: b"null".to_vec(),
                }),
                Expect::Refusal,
            ),
            (
                "deeply nested",
                Some(Payload {
                    content_type: Some("application/json".into()),
                    bytes: format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
                }),
                Expect::Refusal,
            ),
            (
                "text/plain",
                Some(Payload {
                    content_type: Some("text/plain".into()),
                    ..first.valid_payload()
                }),
                wrong_type,
            ),
            (
                "application/xml",
                Some(Payload {
                    content_type: Some("application/xml".into()),
                    bytes: b"<a/>".to_vec(),
                }),
                Expect::Refusal,
            ),
            (
                "no content type",
                Some(Payload {
                    content_type: None,
                    ..first.valid_payload()
                }),
                Expect::Documented,
            ),
            (
                "oversized",
                Some(Payload {
                    content_type: Some(first.content_type.clone()),
                    bytes: {
                        let mut b = b"{\"padding\":\"".to_vec();
                        b.resize(OVERSIZED, b'p');
                        b
                    },
                }),
                Expect::Refusal,
            ),
            (
                "multipart without boundary",
                Some(Payload {
                    content_type: Some("multipart/form-data".into()),
                    bytes: b"--x\r\n\r\n".to_vec(),
                }),
                Expect::Refusal,
            ),
            (
                "broken multipart",
                Some(Payload {
                    content_type: Some(format!("multipart/form-data; boundary={BOUNDARY}")),
                    bytes: format!("--{BOUNDARY}\r\nContent-Disposition: garbage\r\n\r\nx")
                        .into_bytes(),
                }),
                Expect::Refusal,
            ),
        ];
        for (label, payload, expect) in whole {
            let mut i = base.clone();
            i.payload = payload;
            push(format!("body {label}"), &i, expect);
        }
    }
    for shape in &shapes {
        let mut i = base.clone();
        i.payload = Some(shape.valid_payload());
        push(
            format!("body {} valid", shape.content_type),
            &i,
            Expect::Documented,
        );
        let mut list = Vec::new();
        mutations(spec, &shape.schema, "", true, &mut list);
        if shape.is_multipart() {
            // A form carries text and files only; types do not apply.
            list.retain(|m| m.label != "wrong type" && m.label != "null");
            for (key, prop) in concrete(spec, &shape.schema).0["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default()
            {
                let (p, _) = concrete(spec, &prop);
                if p["format"] == "binary" || p["contentMediaType"].is_string() {
                    list.retain(|m| !m.ptr.starts_with(&format!("/{key}")) || m.value.is_none());
                    for (label, marker) in [
                        ("empty file", "$empty"),
                        ("not audio", "$text"),
                        ("claims another type", "$mismatch"),
                        ("not an audio type", "$pdf"),
                    ] {
                        list.push(Mutation {
                            ptr: format!("/{key}"),
                            value: Some(json!(marker)),
                            label: label.into(),
                            forbidden: true,
                        });
                    }
                }
            }
        }
        for (n, m) in list.into_iter().enumerate() {
            let mut instance = shape.valid.clone();
            fx.fresh(op, n, &m.ptr, &mut instance);
            set_at(&mut instance, &m.ptr, m.value.clone());
            let mut i = base.clone();
            i.payload = Some(shape.payload(&instance));
            let expect = if m.forbidden {
                Expect::Refusal
            } else {
                Expect::Documented
            };
            let at = if m.ptr.is_empty() { "/" } else { &m.ptr };
            push(
                format!("body {} {at}={}", short(&shape.content_type), m.label),
                &i,
                expect,
            );
        }
    }
    out
}

fn short(content_type: &str) -> &str {
    content_type.split('/').nth(1).unwrap_or(content_type)
}

// ---------------------------------------------------------------------------------------------
// Checking an answer against the document.

/// The component every documented error response must reference: a schema whose one required
/// property is `error`.
fn error_component(spec: &Value) -> Option<String> {
    spec["components"]["schemas"]
        .as_object()?
        .iter()
        .find(|(_, s)| {
            s["required"] == json!(["error"])
                && s["properties"].as_object().is_some_and(|p| p.len() == 1)
        })
        .map(|(name, _)| format!("#/components/schemas/{name}"))
}

/// What is wrong with an error body, if anything: `{"error": {"code", "message", "field"?}}`.
fn envelope_problem(answer: &Answer) -> Option<String> {
    if !answer.content_type.starts_with("application/json") {
        return Some(format!("content type {:?}", answer.content_type));
    }
    let Some(body) = &answer.body else {
        return Some(format!("body is not JSON: {:.80}", answer.text));
    };
    let Some(outer) = body.as_object() else {
        return Some("body is not an object".into());
    };
    if outer.len() != 1 || !outer.contains_key("error") {
        return Some(format!("keys {:?}", outer.keys().collect::<Vec<_>>()));
    }
    let Some(error) = outer["error"].as_object() else {
        return Some("error is not an object".into());
    };
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if code.is_empty() {
        return Some("error.code is not a non-empty string".into());
    }
    if !error.get("message").is_some_and(Value::is_string) {
        return Some("error.message is not a string".into());
    }
    if error.get("field").is_some_and(|f| !f.is_string()) {
        return Some("error.field is not a string".into());
    }
    if let Some(extra) = error
        .keys()
        .find(|k| !["code", "message", "field"].contains(&k.as_str()))
    {
        return Some(format!("unexpected error.{extra}"));
    }
    None
}

/// What the document itself must say, whatever the server answers.
fn static_problems(spec: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let error_ref = error_component(spec);
    if error_ref.is_none() {
        out.push(("components".into(), "no error envelope component".into()));
    }
    let mut refs = Vec::new();
    collect_refs(spec, &mut refs);
    for r in refs {
        let name = r.trim_start_matches("#/components/schemas/");
        if spec["components"]["schemas"].get(name).is_none() {
            out.push(("components".into(), format!("dangling $ref {r}")));
        }
    }
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for op in operations(spec) {
        let id = op.id();
        match op.op["operationId"].as_str() {
            None => out.push((id.clone(), "no operationId".into())),
            Some(oid) => {
                if let Some(other) = ids.insert(oid.to_string(), id.clone()) {
                    out.push((id.clone(), format!("operationId {oid} is also {other}'s")));
                }
            }
        }
        // The path parameters are exactly the template's.
        let mut template: Vec<String> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_string)
            .collect();
        let mut declared: Vec<String> = op
            .params("path")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_string())
            .collect();
        template.sort();
        declared.sort();
        if template != declared {
            out.push((
                id.clone(),
                format!("path parameters {declared:?}, but the path has {template:?}"),
            ));
        }
        for p in op.params("path") {
            if p["required"] != true {
                out.push((
                    id.clone(),
                    format!("path parameter {} not required", p["name"]),
                ));
            }
        }
        // Every error response references the envelope.
        if let (Some(error_ref), Some(responses)) = (&error_ref, op.op["responses"].as_object()) {
            for (status, response) in responses {
                if status.parse::<u16>().is_ok_and(|s| s >= 400)
                    && response["content"]["application/json"]["schema"]["$ref"] != *error_ref
                {
                    out.push((
                        id.clone(),
                        format!("{status} does not reference {error_ref}"),
                    ));
                }
                if response["description"].as_str().is_none_or(str::is_empty) {
                    out.push((id.clone(), format!("{status} has no description")));
                }
            }
        }
        // A request body says what it holds.
        if let Some(content) = op.op["requestBody"]["content"].as_object() {
            for (ct, media) in content {
                let (schema, _) = concrete(spec, &media["schema"]);
                if schema.get("properties").is_none()
                    && schema.get("additionalProperties").is_none()
                {
                    out.push((id.clone(), format!("the {ct} body has no schema: {schema}")));
                }
            }
        }
    }
    out
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v.as_str() {
                    Some(r) if k == "$ref" => out.push(r.to_string()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

struct Failure {
    backend: String,
    operation: String,
    input: String,
    status: String,
    problem: String,
}

fn check(
    spec: &Value,
    error_ref: Option<&str>,
    op: &Operation,
    case: &Case,
    answer: &Answer,
) -> Vec<String> {
    let mut problems = Vec::new();
    let status = answer.status;
    let documented = op.documented();
    let range = format!("{}XX", status / 100);
    let doc_key = documented
        .iter()
        .find(|k| **k == status.to_string())
        .or_else(|| documented.iter().find(|k| **k == range))
        .or_else(|| documented.iter().find(|k| *k == "default"));
    if status >= 500 && status != 503 {
        problems.push(format!("server error: {:.120}", answer.text));
    }
    if doc_key.is_none() {
        problems.push(format!(
            "undocumented (documented: {}); {:.100}",
            documented.join(","),
            answer.text
        ));
    }
    if status >= 400 {
        if let Some(p) = envelope_problem(answer) {
            problems.push(format!("not the error envelope: {p}"));
        }
        if status == 429 || status == 503 {
            let code = answer
                .body
                .as_ref()
                .and_then(|b| b["error"]["code"].as_str())
                .unwrap_or_default();
            if !answer.retry_after && code != "not_configured" && code != "not_ready" {
                problems.push("no Retry-After".into());
            }
        }
        if let (Some(error_ref), Some(key)) = (error_ref, doc_key) {
            let schema = &op.op["responses"][key]["content"]["application/json"]["schema"];
            let response = resolve(spec, &op.op["responses"][key]);
            let schema = if schema.is_null() {
                &response["content"]["application/json"]["schema"]
            } else {
                schema
            };
            if schema["$ref"] != error_ref {
                problems.push(format!("documented {key} does not reference {error_ref}"));
            }
        }
    }
    match case.expect {
        Expect::Refusal if !(400..500).contains(&status) => {
            problems.push("a documented constraint was not enforced (expected a 4xx)".into())
        }
        Expect::Success if !(200..300).contains(&status) => problems.push(format!(
            "a value inside the documented range was refused: {:.120}",
            answer.text
        )),
        _ => {}
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The walk.

async fn spec_of(http: &Http) -> Value {
    let req = Req {
        method: Method::GET,
        target: "/api/openapi.json".into(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    let answer = http.send(&req).await.expect("the document is served");
    assert_eq!(answer.status, 200);
    let spec = answer.body.expect("the document is JSON");
    // For reading the document while working on it: VOXLINE_CONTRACT_SPEC_OUT=/tmp/spec.json.
    if let Some(out) = std::env::var_os("VOXLINE_CONTRACT_SPEC_OUT") {
        std::fs::write(out, serde_json::to_vec_pretty(&spec).unwrap()).expect("write the spec");
    }
    spec
}

fn operations(spec: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            ops.push(Operation {
                method,
                path: path.clone(),
                op: op.clone(),
            });
        }
    }
    // Deletions last, so the valid requests before them find what they look for.
    ops.sort_by_key(|o| (o.method == Method::DELETE, o.path.clone()));
    ops
}

async fn fixtures(http: &Http) -> Fixtures {
    let mut tokens = BTreeMap::new();
    tokens.insert("member", token("acme", "ann", Role::Member, 3600));
    tokens.insert("admin", token("acme", "ada", Role::Admin, 3600));
    tokens.insert("operator", token("platform", "olga", Role::Operator, 3600));
    tokens.insert("other_company", token("globex", "gus", Role::Member, 3600));
    tokens.insert("expired", token("acme", "ann", Role::Member, -3600));
    let foreign = {
        let now = chrono::Utc::now().timestamp();
        let claims = voxline_api::auth::Claims {
            sub: "ann".into(),
            company_id: "acme".into(),
            role: Role::Member,
            email: None,
            iat: now,
            exp: now + 3600,
        };
        voxline_api::auth::Keys::hs256("some-other-secret-some-other-secret")
            .mint(&claims)
            .expect("mint")
    };
    tokens.insert("foreign", foreign);
    let post = |target: &str, body: Value| Req {
        method: Method::POST,
        target: target.into(),
        headers: vec![
            (
                HeaderName::from_static("authorization"),
                HeaderValue::from_str(&format!("Bearer {}", tokens["member"])).unwrap(),
            ),
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ),
        ],
        body: serde_json::to_vec(&body).unwrap(),
    };
    let session = http
        .send(&post(
            "/api/sessions",
            json!({"title": "Discovery call", "kind": "sales", "transcript": [
                {"speaker": "partner", "start": 0.0, "end": 2.0, "text": "Hello there."},
                {"speaker": "user", "start": 2.5, "end": 5.0, "text": "What matters most to you?"}
            ]}),
        ))
        .await
        .expect("a session");
    assert_eq!(session.status, 202, "{}", session.text);
    let mut tickets = Vec::new();
    for _ in 0..80 {
        let roleplay = http
            .send(&post(
                "/api/roleplays",
                json!({"kind": "sales", "title": "Cold call"}),
            ))
            .await
            .expect("a role-play");
        assert_eq!(roleplay.status, 201, "{}", roleplay.text);
        let body = roleplay.body.unwrap();
        let ticket = body["dynamic_variables"]["voxline_ticket"]
            .as_str()
            .unwrap();
        tickets.push(ticket.to_string());
    }
    Fixtures {
        session_id: session.body.unwrap()["id"].as_str().unwrap().to_string(),
        job_id: 0,
        ticket: tickets.remove(0),
        spare_tickets: tickets,
        tokens,
    }
}

/// Sends every case of every operation; returns the failures.
/// What a walk sends and what it requires beyond the common checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every case of every operation, against a working deployment: nothing 5xx.
    Inputs,
    /// The valid request of each operation with the database closed: a 503 (but `/healthz`).
    DatabaseDown,
    /// The valid request of each operation three times under limits of one a minute: a 429
    /// wherever one is documented.
    RateLimited,
}

async fn walk(
    label: &str,
    http: &Http,
    spec: &Value,
    fx: &Fixtures,
    mode: Mode,
) -> (Vec<Failure>, usize) {
    let (only_valid, repeat) = match mode {
        Mode::Inputs => (false, 1),
        Mode::DatabaseDown => (true, 1),
        Mode::RateLimited => (true, 3),
    };
    let error_ref = error_component(spec);
    let mut failures = Vec::new();
    let mut sent = 0;
    // For reading every answer: VOXLINE_CONTRACT_LOG=/tmp/contract.log.
    let mut log = String::new();
    for op in operations(spec) {
        let mut all = cases(spec, &op, fx);
        if only_valid {
            all.truncate(1);
        }
        for case in all {
            let mut statuses = Vec::new();
            for _ in 0..repeat {
                sent += 1;
                let (status, problems) = match http.send(&case.req).await {
                    Ok(answer) if std::env::var_os("VOXLINE_CONTRACT_LOG").is_some() => {
                        let code = answer.body.as_ref().map(|b| b["error"]["code"].clone());
                        let _ = writeln!(
                            log,
                            "{label}\t{}\t{}\t{}\t{}",
                            op.id(),
                            case.label,
                            answer.status,
                            code.unwrap_or_default()
                        );
                        (
                            answer.status.to_string(),
                            check(spec, error_ref.as_deref(), &op, &case, &answer),
                        )
                    }
                    Ok(answer) => (
                        answer.status.to_string(),
                        check(spec, error_ref.as_deref(), &op, &case, &answer),
                    ),
                    Err(e) => ("-".to_string(), vec![e]),
                };
                let mut problems = problems;
                match mode {
                    Mode::Inputs if status.starts_with('5') => {
                        problems.push("a 5xx for an input with the database up".into())
                    }
                    Mode::DatabaseDown if op.path != "/healthz" && status != "503" => {
                        problems.push("not 503 with the database closed".into())
                    }
                    _ => {}
                }
                statuses.push(status.clone());
                for problem in problems {
                    failures.push(Failure {
                        backend: label.to_string(),
                        operation: op.id(),
                        input: case.label.clone(),
                        status: status.clone(),
                        problem,
                    });
                }
            }
            if mode == Mode::RateLimited
                && op.documented().iter().any(|s| s == "429")
                && !statuses.iter().any(|s| s == "429")
            {
                failures.push(Failure {
                    backend: label.to_string(),
                    operation: op.id(),
                    input: format!("{} x{repeat}", case.label),
                    status: statuses.join(","),
                    problem: "429 is documented but never answered over the limit".into(),
                });
            }
        }
    }
    if let Some(path) = std::env::var_os("VOXLINE_CONTRACT_LOG") {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the log");
        file.write_all(log.as_bytes()).expect("write the log");
    }
    (failures, sent)
}

fn table(failures: &[Failure]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<46} {:<48} {:<6} problem",
        "run", "operation", "input", "status"
    );
    for f in failures {
        let _ = writeln!(
            out,
            "{:<22} {:<46} {:<48} {:<6} {}",
            f.backend,
            f.operation,
            truncate(&f.input, 48),
            f.status,
            f.problem.replace('\n', " ")
        );
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

async fn every_operation_answers_as_documented(backend: Backend) {
    let layer = settings_layer(false);
    let Some(t) = TestDb::new(backend, &[&layer]).await else {
        return;
    };
    let base = start_api(&t).await;
    let http = Http::new(&base);
    let spec = spec_of(&http).await;
    let missing: Vec<Failure> = static_problems(&spec)
        .into_iter()
        .map(|(operation, problem)| Failure {
            backend: format!("{backend:?} document"),
            operation,
            input: "-".into(),
            status: "-".into(),
            problem,
        })
        .collect();
    let mut fx = fixtures(&http).await;
    fx.job_id = t
        .enqueue(voxline_jobs::NewJob::new(
            "email",
            "contract_probe",
            json!({"company_id": "acme"}),
        ))
        .await
        .0;
    let name = format!("{backend:?}");
    let (mut failures, mut sent) = walk(&name, &http, &spec, &fx, Mode::Inputs).await;
    failures.splice(0..0, missing);

    // The same operations with the database gone: 503s, documented, with Retry-After.
    t.db.close().await;
    let (down, n) = walk(
        &format!("{name} db closed"),
        &http,
        &spec,
        &fx,
        Mode::DatabaseDown,
    )
    .await;
    failures.extend(down);
    sent += n;

    eprintln!(
        "contract walk ({name}): {sent} requests, {} failures",
        failures.len()
    );
    if !failures.is_empty() {
        eprintln!("{}", table(&failures));
    }
    assert!(failures.is_empty(), "{} contract failures", failures.len());
}

on_both_databases!(every_operation_answers_as_documented);

/// With limits of one request a minute, the rate-limited routes answer 429 — documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_answers_are_documented() {
    let layer = settings_layer(true);
    let Some(t) = TestDb::new(Backend::Sqlite, &[&layer]).await else {
        return;
    };
    let base = start_api(&t).await;
    let http = Http::new(&base);
    let spec = spec_of(&http).await;
    let mut tokens = BTreeMap::new();
    for (who, company, profile, role) in [
        ("member", "acme", "ann", Role::Member),
        ("admin", "acme", "ada", Role::Admin),
        ("operator", "platform", "olga", Role::Operator),
        ("other_company", "globex", "gus", Role::Member),
        ("expired", "acme", "ann", Role::Member),
        ("foreign", "acme", "ann", Role::Member),
    ] {
        tokens.insert(who, token(company, profile, role, 3600));
    }
    let fx = Fixtures {
        session_id: "none".into(),
        job_id: 1,
        ticket: "not-a-ticket".into(),
        spare_tickets: Vec::new(),
        tokens,
    };
    let (failures, sent) = walk("rate limited", &http, &spec, &fx, Mode::RateLimited).await;
    eprintln!(
        "rate-limited walk: {sent} requests, {} failures",
        failures.len()
    );
    if !failures.is_empty() {
        eprintln!("{}", table(&failures));
    }
    assert!(failures.is_empty(), "{} contract failures", failures.len());
}

/// The walk itself: its generators make what the document describes.
#[test]
fn the_generators_follow_the_schema() {
    let spec = json!({"components": {"schemas": {
        "Seg": {"type": "object", "required": ["text"], "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": 5},
            "start": {"type": ["number", "null"], "minimum": 0}
        }}
    }}});
    let schema =
        json!({"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Seg"}});
    let v = valid(&spec, &schema, "body", "", &Overrides::new());
    assert_eq!(v, json!([{"start": 0.0, "text": "valid"}]));
    let mut list = Vec::new();
    mutations(&spec, &schema, "", true, &mut list);
    let find = |ptr: &str, label: &str| {
        list.iter()
            .find(|m| m.ptr == ptr && m.label == label)
            .unwrap_or_else(|| panic!("{ptr} {label}"))
            .forbidden
    };
    assert!(find("", "empty list"));
    assert!(find("/0/text", "missing"));
    assert!(find("/0/text", "6 chars"));
    assert!(!find("/0/start", "null"));
    assert!(find("/0/start", "-1"));
    let mut doc = v.clone();
    set_at(&mut doc, "/0/text", None);
    assert_eq!(doc, json!([{"start": 0.0}]));
    assert_eq!(encode_segment("../x"), "..%2Fx");
}
