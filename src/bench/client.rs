//! The load generator's side of the protocol: a small keep-alive HTTP/1.1 client, WebSocket
//! connections bound to a chosen source address, the frames the bench reads, and latency
//! summaries.
//!
//! The bench speaks the real protocol (docs/protocol.md) against kefu, or its "bare" subset
//! against the baseline relays (bench/README.md): no HTTP, any token, `hello` → `welcome`,
//! `send` → `ack`, and a `message` frame to the other side.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
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

/// A keep-alive HTTP/1.1 connection for the JSON API.
pub struct Http {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http { addr, stream: None }
    }

    /// One request; returns the status and the body. Reconnects once if the kept connection
    /// was closed by the server.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let reused = self.stream.is_some();
        match tokio::time::timeout(ANSWER_TIMEOUT, self.try_request(method, path, token, content_type, body)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) if reused => {
                self.stream = None;
                tokio::time::timeout(ANSWER_TIMEOUT, self.try_request(method, path, token, content_type, body))
                    .await
                    .context("no HTTP answer in time")?
            }
            Ok(Err(error)) => {
                self.stream = None;
                Err(error)
            }
            Err(_) => {
                self.stream = None;
                bail!("no HTTP answer in time")
            }
        }
    }

    async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            self.stream = Some(BufReader::new(tcp_connect(self.addr, None).await.context("connecting")?));
        }
        let Some(stream) = self.stream.as_mut() else { bail!("no connection") };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.get_mut().write_all(&request).await?;

        let mut header_bytes = Vec::with_capacity(512);
        loop {
            let byte = stream.read_u8().await?;
            header_bytes.push(byte);
            if header_bytes.ends_with(b"\r\n\r\n") {
                break;
            }
            if header_bytes.len() > 64 * 1024 {
                bail!("HTTP headers too long");
            }
        }
        let header = String::from_utf8_lossy(&header_bytes);
        let mut lines = header.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .context("a malformed HTTP status line")?;
        let mut length = None;
        let mut close = false;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "content-length" {
                    length = value.parse::<usize>().ok();
                } else if name == "connection" && value.eq_ignore_ascii_case("close") {
                    close = true;
                } else if name == "transfer-encoding" {
                    bail!("chunked HTTP answers are not supported by the bench client");
                }
            }
        }
        let mut body = Vec::new();
        match length {
            Some(length) => {
                body.resize(length, 0);
                stream.read_exact(&mut body).await?;
            }
            None => {
                stream.read_to_end(&mut body).await?;
                close = true;
            }
        }
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }

    /// A JSON request that must succeed (2xx).
    pub async fn json(&mut self, method: &str, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<Value> {
        let (status, answer) =
            self.request(method, path, token, "application/json", body.to_string().as_bytes()).await?;
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
pub async fn visitor_session(http: &mut Http, site: &str, token: Option<&str>) -> anyhow::Result<(String, Value)> {
    let mut body = json!({ "site": site });
    if let Some(token) = token {
        body["token"] = json!(token);
    }
    let answer = http.json("POST", "/api/v1/visitor/session", None, &body).await?;
    let token = answer["token"].as_str().context("a session without a token")?.to_owned();
    Ok((token, answer["conversations"].clone()))
}

/// Logs an agent in; returns the agent token.
pub async fn agent_login(http: &mut Http, email: &str, password: &str) -> anyhow::Result<String> {
    let answer =
        http.json("POST", "/api/v1/agent/login", None, &json!({ "email": email, "password": password })).await?;
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
