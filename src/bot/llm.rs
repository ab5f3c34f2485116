//! A client for any OpenAI-compatible chat-completions endpoint (a local Ollama or vLLM, or a
//! hosted API), used by the bot when no knowledge-base entry matches well enough.
//!
//! It asks for a streamed answer (`"stream": true`) and reads the server-sent events (`data:`
//! lines, each a JSON chunk with `choices[0].delta.content`, ended by `data: [DONE]`), handing
//! each piece to a callback as it arrives. A server that answers with one JSON document instead
//! (no streaming) works too: its `choices[0].message.content` is one piece.
//!
//! Three clocks bound an answer: the first piece must come within `first_token_timeout_ms`
//! (a model that never starts is given up on in seconds, not after the whole timeout), no gap
//! between pieces may be longer than that either (a stalled stream), and the whole answer must
//! come within `timeout_ms`. A stream that ends without its `[DONE]` is [`LlmError::Cut`]: what
//! came is not a complete answer and is never stored as one.
//!
//! [`choose`] asks the model, as a judge, which of a few knowledge-base entries answers a
//! message, with the answer constrained to a JSON object by a JSON schema.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Most bytes of one server-sent-event line, so a broken server cannot grow the buffer forever.
const MAX_SSE_LINE_BYTES: usize = 1024 * 1024;

/// Where and how to ask.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LlmSettings {
    /// The API's base URL, e.g. `http://127.0.0.1:11434/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer KEY` when not empty.
    pub api_key: String,
    /// How long a whole answer may take, from the request to the last piece.
    pub timeout_ms: u64,
    /// How long the first piece may take, and the longest gap between two pieces.
    pub first_token_timeout_ms: u64,
}

/// The first piece of an answer within this, unless a site sets its own.
pub const DEFAULT_FIRST_TOKEN_TIMEOUT_MS: u64 = 5_000;

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            base_url: String::new(),
            model: String::new(),
            api_key: String::new(),
            timeout_ms: 30_000,
            first_token_timeout_ms: DEFAULT_FIRST_TOKEN_TIMEOUT_MS,
        }
    }
}

/// One message of the prompt.
#[derive(Clone, Debug, Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the endpoint answered with status {0}")]
    Status(u16),
    #[error("the endpoint's answer could not be read: {0}")]
    Malformed(String),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("no first piece, or no next piece, within {0} ms")]
    Stalled(u64),
    #[error("the stream ended before its end marker")]
    Cut,
}

/// How long one LLM request may take in all; `complete` applies the site's own, shorter timeout.
const REQUEST_CEILING: Duration = Duration::from_secs(600);

/// Builds the HTTP client the bot shares: the outbound client of `outbound.rs` (pure-Rust DNS, so
/// the static binary resolves names), with its private-address guard unless `allow_private`
/// (`llm.allow_private_addresses`, for a local Ollama or vLLM).
pub fn http_client(allow_private: bool) -> reqwest::Client {
    crate::base::outbound::client(REQUEST_CEILING, allow_private).unwrap_or_else(|error| {
        tracing::error!(%error, "the outbound HTTP client could not be built; using the plain one");
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    })
}

/// Asks for an answer, calling `on_delta` with each piece as it arrives; returns the whole answer.
pub async fn complete(
    http: &reqwest::Client,
    settings: &LlmSettings,
    messages: &[ChatMessage],
    max_chars: usize,
    mut on_delta: impl FnMut(&str),
) -> Result<String, LlmError> {
    let timeout = Duration::from_millis(settings.timeout_ms);
    match tokio::time::timeout(timeout, ask(http, settings, messages, max_chars, &mut on_delta)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(LlmError::Timeout(settings.timeout_ms)),
    }
}

async fn ask(
    http: &reqwest::Client,
    settings: &LlmSettings,
    messages: &[ChatMessage],
    max_chars: usize,
    on_delta: &mut impl FnMut(&str),
) -> Result<String, LlmError> {
    let url = format!("{}/chat/completions", settings.base_url.trim_end_matches('/'));
    let mut request = crate::base::trace_context::with_traceparent(
        http.post(url).json(&json!({"model": settings.model, "messages": messages, "stream": true})),
    );
    if !settings.api_key.is_empty() {
        request = request.bearer_auth(&settings.api_key);
    }
    let gap = Duration::from_millis(settings.first_token_timeout_ms.max(1));
    let stalled = || LlmError::Stalled(settings.first_token_timeout_ms);
    let response = tokio::time::timeout(gap, request.send()).await.map_err(|_| stalled())??;
    if !response.status().is_success() {
        return Err(LlmError::Status(response.status().as_u16()));
    }
    let streamed = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    let mut answer = Answer { text: String::new(), n_chars: 0, max_chars };
    if !streamed {
        let body: Value = response.json().await?;
        let content = body
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))?;
        if let Some(piece) = answer.push(content) {
            on_delta(&piece);
        }
        return Ok(answer.text);
    }
    let mut body = response.bytes_stream();
    let mut line = Vec::new();
    while let Some(chunk) = tokio::time::timeout(gap, body.next()).await.map_err(|_| stalled())? {
        for byte in chunk? {
            if byte != b'\n' {
                if line.len() >= MAX_SSE_LINE_BYTES {
                    return Err(LlmError::Malformed("an event line is too long".into()));
                }
                line.push(byte);
                continue;
            }
            let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
            line.clear();
            let Some(data) = text.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                return Ok(answer.text);
            }
            let chunk: Value = serde_json::from_str(data).map_err(|error| LlmError::Malformed(error.to_string()))?;
            if chunk.get("error").is_some() {
                return Err(LlmError::Malformed("the stream reported an error".into()));
            }
            if let Some(piece) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) {
                if let Some(piece) = answer.push(piece) {
                    on_delta(&piece);
                }
            }
        }
    }
    // The connection ended without `[DONE]`: the answer may be missing its end.
    Err(LlmError::Cut)
}

/// Asks the model which of `options` (knowledge-base entries: question and answer) answers
/// `message`: `Some(index)` into `options`, or `None` for none of them. The answer is a JSON
/// object `{"choice": N}` (0 for none), constrained by a JSON schema; anything else is an error.
pub async fn choose(
    http: &reqwest::Client,
    settings: &LlmSettings,
    message: &str,
    options: &[(&str, &str)],
) -> Result<Option<usize>, LlmError> {
    let mut prompt = String::from(
        "A visitor wrote the message below. Which numbered knowledge-base entry answers it? Reply with JSON \
         {\"choice\": N}: the entry's number, or 0 when no entry answers the message itself (an entry about a \
         similar but different thing does not).\n\n",
    );
    for (number, (question, answer)) in options.iter().enumerate() {
        prompt.push_str(&format!("{}. Q: {question}\n   A: {answer}\n", number + 1));
    }
    prompt.push_str(&format!("\nVisitor's message: {message}"));
    let choices: Vec<usize> = (0..=options.len()).collect();
    let body = json!({
        "model": settings.model,
        "stream": false,
        "temperature": 0,
        "messages": [{"role": "user", "content": prompt}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "choice", "strict": true, "schema": {
            "type": "object",
            "properties": {"choice": {"type": "integer", "enum": choices}},
            "required": ["choice"],
            "additionalProperties": false
        }}}
    });
    let url = format!("{}/chat/completions", settings.base_url.trim_end_matches('/'));
    let mut request = crate::base::trace_context::with_traceparent(http.post(url).json(&body));
    if !settings.api_key.is_empty() {
        request = request.bearer_auth(&settings.api_key);
    }
    let limit = settings.first_token_timeout_ms.min(settings.timeout_ms).max(1);
    let asked = async {
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(LlmError::Status(response.status().as_u16()));
        }
        let body: Value = response.json().await?;
        let content = body
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))?;
        let verdict: Value =
            serde_json::from_str(content.trim()).map_err(|error| LlmError::Malformed(format!("not JSON: {error}")))?;
        match verdict.get("choice").and_then(Value::as_u64) {
            Some(0) => Ok(None),
            Some(choice) if (choice as usize) <= options.len() => Ok(Some(choice as usize - 1)),
            _ => Err(LlmError::Malformed(format!("no valid choice in {content}"))),
        }
    };
    tokio::time::timeout(Duration::from_millis(limit), asked).await.map_err(|_| LlmError::Timeout(limit))?
}

/// The answer so far, cut at `max_chars` (the longest message kefu stores).
struct Answer {
    text: String,
    n_chars: usize,
    max_chars: usize,
}

impl Answer {
    /// Appends a piece; returns what was kept of it, if anything.
    fn push(&mut self, piece: &str) -> Option<String> {
        let room = self.max_chars.saturating_sub(self.n_chars);
        let kept: String = piece.chars().take(room).collect();
        if kept.is_empty() {
            return None;
        }
        self.n_chars += kept.chars().count();
        self.text.push_str(&kept);
        Some(kept)
    }
}
