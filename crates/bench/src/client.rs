//! The load generator's side of the protocol: WebSocket connections bound to a chosen source
//! address (hand-written on tungstenite with small buffers: it is the measured hot path), the
//! JSON API over reqwest, the frames the bench reads, and latency summaries.
//!
//! The bench speaks the real protocol (docs/protocol.md) against kefu, or its "bare" subset
//! against the baseline relays (bench/README.md): no HTTP, any token, `hello` → `welcome`,
//! `send` → `ack`, and a `message` frame to the other side.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Client read buffer: the load generator holds up to ~19,000 sockets per process, so it must
/// not keep tungstenite's 128 KiB default per socket either.
const CLIENT_READ_BUFFER_BYTES: usize = 4096;

/// How long the bench waits for one answer (welcome, HTTP response) before counting an error.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Microseconds since the Unix epoch: the timestamp put in message texts, comparable across
/// the bench's processes on one machine.
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_micros() as u64).unwrap_or(0)
}

/// The text of a timed message: `t` and the send instant in microseconds.
pub fn timed_text() -> String {
    format!("t{}", now_micros())
}

/// Microseconds since the instant in a timed text, if the text is one.
pub fn latency_of(text: &str) -> Option<u32> {
    sent_and_latency(text).map(|(_, latency)| latency)
}

/// The send instant in a timed text and the microseconds since, if the text is one.
pub fn sent_and_latency(text: &str) -> Option<(u64, u32)> {
    let sent: u64 = text.strip_prefix('t')?.parse().ok()?;
    Some((sent, now_micros().saturating_sub(sent).min(u32::MAX as u64) as u32))
}

/// The fields of server frames the bench looks at; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Frame {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub conversation_id: Option<u64>,
    pub seq: Option<u64>,
    pub epoch: Option<u64>,
    pub last_seq: Option<u64>,
    pub client_id: Option<String>,
    pub duplicate: Option<bool>,
    pub event: Option<String>,
    pub conversation: Option<ConversationRef>,
    pub sender: Option<SenderRef>,
    pub agent_id: Option<u64>,
    pub visitor_id: Option<u64>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub conversations: Vec<ConversationRef>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct ConversationRef {
    pub id: u64,
    pub assigned_agent: Option<u64>,
    pub status: String,
    pub last_seq: u64,
    pub epoch: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SenderRef {
    pub kind: String,
    pub id: u64,
}

/// Where the bench connects: the server's address and what it speaks.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The protocol subset of the baseline relays (bench/README.md): no HTTP, any token.
    pub bare: bool,
}

/// Opens a TCP connection from `source` (port chosen by the kernel) to `addr`.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a WebSocket to `path` and exchanges `hello` for `welcome`.
pub async fn ws_connect(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    path: &str,
    hello: Value,
) -> anyhow::Result<(Ws, Frame)> {
    let stream = tcp_connect(endpoint.addr, source).await.context("connecting")?;
    let url = format!("ws://{}{path}", endpoint.addr);
    let config = WebSocketConfig::default()
        .read_buffer_size(CLIENT_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("the WebSocket handshake")?;
    ws.send(Message::text(hello.to_string())).await.context("sending hello")?;
    let welcome = tokio::time::timeout(ANSWER_TIMEOUT, next_frame(&mut ws))
        .await
        .context("no welcome in time")??
        .context("closed before welcome")?;
    if welcome.kind != "welcome" {
        bail!("expected welcome, got {} {:?}", welcome.kind, welcome.message);
    }
    Ok((ws, welcome))
}

/// Frames no bench looks at, skipped before parsing: every agent of a site gets an `activity`
/// frame per message of the site, and parsing them all would load the load generator more than
/// the server. Server frames start with their type.
const UNREAD_FRAMES: [&str; 3] = [r#"{"type":"activity""#, r#"{"type":"visitor""#, r#"{"type":"typing""#];

/// The next text frame the bench reads, decoded; `None` when the socket closed.
pub async fn next_frame(ws: &mut Ws) -> anyhow::Result<Option<Frame>> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(Message::Text(text))) => {
                if UNREAD_FRAMES.iter().any(|prefix| text.starts_with(prefix)) {
                    continue;
                }
                return serde_json::from_str(&text).map(Some).context("a frame that is not JSON");
            }
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(_)) => continue,
        }
    }
}

/// Sends one JSON frame.
pub async fn send_frame(ws: &mut Ws, frame: &Value) -> anyhow::Result<()> {
    ws.send(Message::text(frame.to_string())).await.context("sending a frame")
}

/// Queues one JSON frame; it is written when the socket is flushed (or its buffer fills).
pub async fn queue_frame(ws: &mut Ws, frame: &Value) -> anyhow::Result<()> {
    ws.feed(Message::text(frame.to_string())).await.context("sending a frame")
}

/// The JSON API over HTTP: reqwest with keep-alive connections, which clones share (a clone is a
/// handle on the same connection pool; the connections close when the last one is dropped).
#[derive(Clone)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(addr: SocketAddr) -> anyhow::Result<Http> {
        let client = kefu_client::http::tool_client(ANSWER_TIMEOUT).context("setting up the HTTP client")?;
        Ok(Http { base: format!("http://{addr}"), client })
    }

    /// One request; returns the status and the body, whatever the status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut request =
            self.client.request(method, format!("{}{path}", self.base)).header(CONTENT_TYPE, content_type).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?))
    }

    /// A JSON request that must succeed (2xx); `None` sends no body.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let (status, answer) = self.request(method.clone(), path, token, "application/json", body).await?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {}", String::from_utf8_lossy(&answer));
        }
        if answer.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer).with_context(|| format!("{method} {path}: an answer that is not JSON"))
    }
}

/// A visitor session: `(visitor token, conversations)`.
pub async fn visitor_session(http: &Http, site: &str, token: Option<&str>) -> anyhow::Result<(String, Value)> {
    let mut body = json!({ "site": site });
    if let Some(token) = token {
        body["token"] = json!(token);
    }
    let answer = http.json(Method::POST, "/api/v1/visitor/session", None, Some(&body)).await?;
    let token = answer["token"].as_str().context("a session without a token")?.to_owned();
    Ok((token, answer["conversations"].clone()))
}

/// Logs an agent in; returns the agent token.
pub async fn agent_login(http: &Http, email: &str, password: &str) -> anyhow::Result<String> {
    let body = json!({ "email": email, "password": password });
    let answer = http.json(Method::POST, "/api/v1/agent/login", None, Some(&body)).await?;
    Ok(answer["token"].as_str().context("a login without a token")?.to_owned())
}

/// Percentiles of a set of latencies in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
}

impl Summary {
    pub fn of(samples: &mut [u32]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let at = |quantile: f64| samples[((samples.len() as f64 * quantile) as usize).min(samples.len() - 1)];
        Summary {
            count: samples.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[samples.len() - 1],
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |micros: u32| micros as f64 / 1000.0;
        write!(
            out,
            "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
            self.count,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}
