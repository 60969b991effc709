//! A local HTTP server that speaks OpenAI's transcription and chat-completion wire formats,
//! so the real async-openai client is exercised in tests: `POST /v1/audio/transcriptions`
//! (multipart) and `POST /v1/chat/completions` (JSON). Each endpoint serves a script of
//! failures first, then its scripted answer; every request is recorded for assertions.
//!
//! (Plain HTTP/1.1 on tokio, one request per connection: the root package has no axum among
//! its dev-dependencies, and this is all the protocol the client needs.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";
pub const CHAT: &str = "/v1/chat/completions";
/// The key the test configuration gives voxline (see [`OpenAiMock::config`]).
pub const API_KEY: &str = "sk-test-voxline";

/// A scripted failed answer.
#[derive(Debug, Clone)]
pub enum Failure {
    /// A bare status with a non-JSON body, like a proxy's 500 or 502.
    Status(u16),
    /// OpenAI's error shape: `{"error": {"message", "type", "code"}}`.
    OpenAi {
        status: u16,
        message: String,
        kind: String,
        code: String,
    },
}

/// What the transcription endpoint answers once its failures are used up.
#[derive(Debug, Clone)]
pub enum Transcription {
    /// `verbose_json` with these `(start, end, text)` segments.
    Verbose(Vec<(f64, f64, String)>),
    /// Only `{"text": …}`, as a model without timestamps answers.
    TextOnly(String),
    /// `diarized_json` with these `(speaker, start, end, text)` segments, as
    /// `gpt-4o-transcribe-diarize` answers.
    Diarized(Vec<(String, f64, f64, String)>),
}

/// One request as the mock received it.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub model: Option<String>,
    /// The transcription's `response_format` field (a string), or the chat's object.
    pub response_format: Option<Value>,
    /// `timestamp_granularities[]` of a transcription request.
    pub timestamp_granularities: Vec<String>,
    /// `chunking_strategy` of a transcription request.
    pub chunking_strategy: Option<String>,
    pub file_name: Option<String>,
    pub file_size: Option<usize>,
    /// The chat request's `response_format.json_schema.name`.
    pub schema_name: Option<String>,
    /// The chat request's JSON body (`Null` for multipart).
    pub body: Value,
}

struct Script {
    transcription: Transcription,
    transcription_failures: VecDeque<Failure>,
    chat_content: String,
    chat_failures: VecDeque<Failure>,
    requests: Vec<Recorded>,
}

#[derive(Clone)]
pub struct OpenAiMock {
    /// Where voxline's `openai.base_url` points (`http://127.0.0.1:PORT/v1`).
    pub base_url: String,
    script: Arc<Mutex<Script>>,
}

impl OpenAiMock {
    pub async fn start() -> OpenAiMock {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        let script = Arc::new(Mutex::new(Script {
            transcription: Transcription::TextOnly(String::new()),
            transcription_failures: VecDeque::new(),
            chat_content: "{}".into(),
            chat_failures: VecDeque::new(),
            requests: Vec::new(),
        }));
        let served = script.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = served.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, script).await {
                        eprintln!("openai mock: {e}");
                    }
                });
            }
        });
        OpenAiMock {
            base_url: format!("http://{addr}/v1"),
            script,
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A TOML layer pointing voxline at this mock.
    pub fn config(&self) -> String {
        format!(
            "[openai]\napi_key = \"{API_KEY}\"\nbase_url = \"{}\"\ntimeout_ms = 10000\n",
            self.base_url
        )
    }

    pub fn transcribe_as(&self, answer: Transcription) {
        self.script().transcription = answer;
    }

    /// The chat completion's message content (the model's JSON, as text).
    pub fn answer_chat_with(&self, content: &Value) {
        self.script().chat_content = content.to_string();
    }

    /// These failures are served, in order, before the scripted transcription.
    pub fn fail_transcriptions(&self, failures: impl IntoIterator<Item = Failure>) {
        self.script().transcription_failures.extend(failures);
    }

    pub fn fail_chats(&self, failures: impl IntoIterator<Item = Failure>) {
        self.script().chat_failures.extend(failures);
    }

    /// The requests received on `path` ([`TRANSCRIPTIONS`] or [`CHAT`]), oldest first.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.script()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn serve(stream: TcpStream, script: Arc<Mutex<Script>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let request = read_request(&mut reader).await?;
    let (status, body) = answer(&request, &script);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Status",
    };
    let content_type = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain"
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let stream = reader.get_mut();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Request> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(|| bad("no method"))?.to_string();
    let path = parts.next().ok_or_else(|| bad("no path"))?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (k, v) = trimmed.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if let Some(length) = request.header("content-length") {
        let length: usize = length.parse().map_err(|_| bad("bad content-length"))?;
        request.body = vec![0; length];
        reader.read_exact(&mut request.body).await?;
    } else if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        // reqwest streams a multipart body whose file part has no known length as chunks.
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    reader.read_line(&mut line).await?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = request.body.len();
            request.body.resize(start + size, 0);
            reader.read_exact(&mut request.body[start..]).await?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).await?;
        }
    }
    Ok(request)
}

fn failure_body(failure: &Failure) -> (u16, String) {
    match failure {
        Failure::Status(status) => (*status, "upstream failure".into()),
        Failure::OpenAi {
            status,
            message,
            kind,
            code,
        } => (
            *status,
            json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
                .to_string(),
        ),
    }
}

fn answer(request: &Request, script: &Mutex<Script>) -> (u16, String) {
    let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
    let mut recorded = Recorded {
        path: request.path.clone(),
        authorization: request.header("authorization").map(str::to_string),
        ..Recorded::default()
    };
    let reply = match (request.method.as_str(), request.path.as_str()) {
        ("POST", TRANSCRIPTIONS) => {
            let content_type = request.header("content-type").unwrap_or_default();
            for part in multipart(content_type, &request.body) {
                let text = String::from_utf8_lossy(&part.data).into_owned();
                match (part.name.as_str(), part.file_name) {
                    ("file", file_name) => {
                        recorded.file_name = file_name;
                        recorded.file_size = Some(part.data.len());
                    }
                    ("model", _) => recorded.model = Some(text),
                    ("response_format", _) => recorded.response_format = Some(Value::String(text)),
                    ("timestamp_granularities[]", _) => recorded.timestamp_granularities.push(text),
                    ("chunking_strategy", _) => recorded.chunking_strategy = Some(text),
                    _ => {}
                }
            }
            match script.transcription_failures.pop_front() {
                Some(failure) => failure_body(&failure),
                None => (200, transcription_body(&script.transcription)),
            }
        }
        ("POST", CHAT) => {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            recorded.model = body["model"].as_str().map(str::to_string);
            recorded.response_format = Some(body["response_format"].clone());
            recorded.schema_name = body["response_format"]["json_schema"]["name"]
                .as_str()
                .map(str::to_string);
            recorded.body = body;
            match script.chat_failures.pop_front() {
                Some(failure) => failure_body(&failure),
                None => (200, chat_body(&recorded, &script.chat_content)),
            }
        }
        _ => (
            404,
            json!({ "error": { "message": "no such route" } }).to_string(),
        ),
    };
    script.requests.push(recorded);
    reply
}

fn transcription_body(answer: &Transcription) -> String {
    match answer {
        Transcription::TextOnly(text) => json!({ "text": text }).to_string(),
        Transcription::Diarized(segments) => {
            let text: Vec<&str> = segments.iter().map(|(_, _, _, t)| t.as_str()).collect();
            let duration = segments.last().map(|(_, _, end, _)| *end).unwrap_or(0.0);
            let segments: Vec<Value> = segments
                .iter()
                .enumerate()
                .map(|(id, (speaker, start, end, text))| {
                    json!({
                        "type": "transcript.text.segment", "id": format!("seg_{id}"),
                        "start": start, "end": end, "text": text, "speaker": speaker
                    })
                })
                .collect();
            json!({
                "task": "transcribe", "duration": duration, "text": text.join(" "),
                "segments": segments,
                "usage": { "type": "duration", "seconds": duration.ceil() }
            })
            .to_string()
        }
        Transcription::Verbose(segments) => {
            let text: Vec<&str> = segments.iter().map(|(_, _, t)| t.as_str()).collect();
            let duration = segments.last().map(|(_, end, _)| *end).unwrap_or(0.0);
            let segments: Vec<Value> = segments
                .iter()
                .enumerate()
                .map(|(id, (start, end, text))| {
                    json!({
                        "id": id, "seek": 0, "start": start, "end": end, "text": format!(" {text}"),
                        "tokens": [50364], "temperature": 0.0, "avg_logprob": -0.2,
                        "compression_ratio": 1.1, "no_speech_prob": 0.01
                    })
                })
                .collect();
            json!({
                "task": "transcribe", "language": "english", "duration": duration,
                "text": text.join(" "), "segments": segments,
                "usage": { "type": "duration", "seconds": duration.ceil() }
            })
            .to_string()
        }
    }
}

fn chat_body(request: &Recorded, content: &str) -> String {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000u32,
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content, "refusal": null },
            "finish_reason": "stop"
        }],
        "usage": { "prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150 }
    })
    .to_string()
}

struct Part {
    name: String,
    file_name: Option<String>,
    data: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The parts of a `multipart/form-data` body (binary-safe).
fn multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let Some(boundary) = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
    else {
        return Vec::new();
    };
    let delimiter = format!("--{}", boundary.trim_matches('"')).into_bytes();
    let mut parts = Vec::new();
    let Some(mut at) = find(body, &delimiter, 0) else {
        return parts;
    };
    loop {
        let start = at + delimiter.len();
        if body.get(start..start + 2) == Some(b"--") {
            break;
        }
        let Some(next) = find(body, &delimiter, start) else {
            break;
        };
        // Between the delimiter's CRLF and the CRLF before the next delimiter.
        let raw = &body[(start + 2).min(next)..next.saturating_sub(2).max(start + 2)];
        if let Some(split) = find(raw, b"\r\n\r\n", 0) {
            let head = String::from_utf8_lossy(&raw[..split]).into_owned();
            let mut part = Part {
                name: String::new(),
                file_name: None,
                data: raw[split + 4..].to_vec(),
            };
            for line in head.lines() {
                if !line.to_ascii_lowercase().starts_with("content-disposition") {
                    continue;
                }
                for param in line.split(';').map(str::trim) {
                    if let Some(v) = param.strip_prefix("name=") {
                        part.name = v.trim_matches('"').to_string();
                    } else if let Some(v) = param.strip_prefix("filename=") {
                        part.file_name = Some(v.trim_matches('"').to_string());
                    }
                }
            }
            parts.push(part);
        }
        at = next;
    }
    parts
}
