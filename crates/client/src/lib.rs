//! A client for native apps and tools: connects as a visitor or an agent over `ws://` or
//! `quic://`, sends messages that resolve when acknowledged, hands every other frame to the app,
//! keeps unsent messages in an offline queue, and reconnects with backoff and resume.
//!
//! The client keeps, per conversation, the last sequence it has seen, and names those in `hello`
//! after reconnecting, so the server replays what was missed. A message stays queued with its
//! client id until its `ack` arrives and is resent after each reconnect with the same id, so the
//! server stores it exactly once (docs/protocol.md, "Delivery guarantees").
//!
//! ```no_run
//! use kefu_client::{Client, ClientConfig, Event};
//!
//! # async fn run() -> Result<(), kefu_client::ClientError> {
//! // A visitor token comes from `POST /api/v1/visitor/session`.
//! let config = ClientConfig::visitor("quic://chat.example.com:8443", "SITE_KEY", "v1.TOKEN")
//!     .pin("3b5d...the certificate's SHA-256 as printed by kefu serve");
//! let mut client = Client::connect(config);
//! let ack = client.send(None, "Hello! Is anyone there?").await?;
//! println!("stored as #{} in conversation {}", ack.seq, ack.conversation_id);
//! while let Some(event) = client.next_event().await {
//!     if let Event::Frame(frame) = event {
//!         if frame["type"] == "message" {
//!             println!("{}: {}", frame["sender"]["name"], frame["text"]);
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod chat;
pub mod http;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub use kefu_wire::encoding::Encoding;
use kefu_wire::encoding::{ALPN_JSON, ALPN_PROTOBUF};
use kefu_wire::{framing, protobuf};

/// Commands from the app waiting for the connection task. Small: `send` waits for its ack anyway.
const COMMAND_QUEUE: usize = 64;

/// Events waiting for the app. When the app stops reading, the connection stops reading too, and
/// the server eventually drops it as a slow consumer (the client then resumes).
const EVENT_QUEUE: usize = 1024;

/// Largest frame the client accepts from the server.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Conversation streams the server may have open to this client at once (one per conversation
/// followed on the connection; an agent's console follows many).
const MAX_CONVERSATION_STREAMS: u32 = 10_000;

/// First wait before reconnecting; it doubles up to `ClientConfig::max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Who the client is.
#[derive(Clone, Debug)]
pub enum Credentials {
    Visitor { site: String, token: String },
    Agent { token: String },
}

/// How a `quic://` client checks the server's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Accept only a certificate whose SHA-256 (hex, colons allowed) is this.
    Pin(String),
    /// Accept any certificate (trials on localhost only).
    Insecure,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `ws://HOST:PORT` (kefu's HTTP address) or `quic://HOST:PORT` (its QUIC address).
    pub url: String,
    pub credentials: Credentials,
    pub trust: Trust,
    /// QUIC only; WebSocket frames are JSON.
    pub encoding: Encoding,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl ClientConfig {
    pub fn visitor(url: &str, site: &str, token: &str) -> ClientConfig {
        Self::new(url, Credentials::Visitor { site: site.to_owned(), token: token.to_owned() })
    }

    pub fn agent(url: &str, token: &str) -> ClientConfig {
        Self::new(url, Credentials::Agent { token: token.to_owned() })
    }

    fn new(url: &str, credentials: Credentials) -> ClientConfig {
        ClientConfig {
            url: url.trim_end_matches('/').to_owned(),
            credentials,
            trust: Trust::Insecure,
            encoding: Encoding::Json,
            max_backoff: Duration::from_secs(10),
        }
    }

    /// Pins the server's certificate by its SHA-256 fingerprint (what `kefu serve` prints).
    pub fn pin(mut self, fingerprint: &str) -> ClientConfig {
        self.trust = Trust::Pin(fingerprint.to_owned());
        self
    }

    /// Accepts any certificate: for trying kefu on localhost only.
    pub fn insecure(mut self) -> ClientConfig {
        self.trust = Trust::Insecure;
        self
    }

    /// Uses the Protobuf encoding (QUIC only).
    pub fn protobuf(mut self) -> ClientConfig {
        self.encoding = Encoding::Protobuf;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the server refused the message: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the client has stopped")]
    Stopped,
    #[error("invalid url {0:?}: use ws://HOST:PORT or quic://HOST:PORT")]
    BadUrl(String),
    #[error("connecting failed: {0}")]
    Connect(String),
    #[error("the server closed the connection: {code} {reason}")]
    Closed { code: u16, reason: String },
}

/// A message's acknowledgement: it is durably stored.
#[derive(Clone, Debug, Deserialize)]
pub struct Ack {
    pub client_id: String,
    pub conversation_id: u64,
    pub seq: u64,
    pub epoch: u64,
    pub created_at: i64,
    pub duplicate: bool,
    pub text: String,
}

/// What the client tells the app.
#[derive(Debug)]
pub enum Event {
    /// Connected (again); the server's `welcome` frame.
    Connected(Value),
    /// A frame from the server other than `welcome` and acks of this client's sends.
    Frame(Value),
    /// The connection dropped; the client reconnects by itself unless the reason is final.
    Disconnected { reason: String, will_retry: bool },
}

enum Command {
    Send {
        client_id: String,
        conversation_id: Option<u64>,
        text: String,
        reply: oneshot::Sender<Result<Ack, ClientError>>,
    },
    Frame(Value),
}

/// A running client; dropping it disconnects.
pub struct Client {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Starts connecting in the background; events say when it is connected.
    pub fn connect(config: ClientConfig) -> Client {
        let (commands, command_receiver) = mpsc::channel(COMMAND_QUEUE);
        let (event_sender, events) = mpsc::channel(EVENT_QUEUE);
        let task = tokio::spawn(run(config, command_receiver, event_sender));
        Client { commands, events, task }
    }

    /// Sends a text message with a new client id; returns when it is acknowledged (after
    /// reconnecting as often as needed). A visitor may pass `None` for their open conversation.
    pub async fn send(&self, conversation_id: Option<u64>, text: &str) -> Result<Ack, ClientError> {
        self.send_with_id(&new_client_id(), conversation_id, text).await
    }

    /// Sends with a given client id (a resend of the same id returns the original ack).
    pub async fn send_with_id(
        &self,
        client_id: &str,
        conversation_id: Option<u64>,
        text: &str,
    ) -> Result<Ack, ClientError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Send { client_id: client_id.to_owned(), conversation_id, text: text.to_owned(), reply };
        self.commands.send(command).await.map_err(|_| ClientError::Stopped)?;
        answer.await.map_err(|_| ClientError::Stopped)?
    }

    /// Sends any other frame (`take`, `close`, `resume`, `typing`, `read`, `presence`) when connected.
    pub async fn send_frame(&self, frame: Value) -> Result<(), ClientError> {
        self.commands.send(Command::Frame(frame)).await.map_err(|_| ClientError::Stopped)
    }

    /// The next event; `None` once the client has stopped for good.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A random client id (32 hex digits).
pub fn new_client_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

struct Pending {
    client_id: String,
    conversation_id: Option<u64>,
    text: String,
    reply: Option<oneshot::Sender<Result<Ack, ClientError>>>,
}

impl Pending {
    fn frame(&self) -> Value {
        json!({"type": "send", "client_id": self.client_id, "conversation_id": self.conversation_id, "text": self.text})
    }
}

/// What the connection task remembers across connections.
#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    /// Per conversation: the last sequence seen and its epoch.
    cursors: HashMap<u64, (u64, u64)>,
}

impl State {
    fn hello(&self, credentials: &Credentials) -> Value {
        let resume: Vec<Value> = self
            .cursors
            .iter()
            .map(|(id, (last_seq, epoch))| json!({"conversation_id": id, "last_seq": last_seq, "epoch": epoch}))
            .collect();
        match credentials {
            Credentials::Visitor { site, token } => {
                json!({"type": "hello", "role": "visitor", "site": site, "token": token, "resume": resume})
            }
            Credentials::Agent { token } => json!({"type": "hello", "role": "agent", "token": token, "resume": resume}),
        }
    }

    fn saw(&mut self, conversation_id: u64, seq: u64, epoch: Option<u64>) {
        let cursor = self.cursors.entry(conversation_id).or_insert((0, epoch.unwrap_or(0)));
        cursor.0 = cursor.0.max(seq);
        if let Some(epoch) = epoch {
            cursor.1 = epoch;
        }
    }

    /// Updates cursors and the offline queue from a frame; true if the app should see it.
    fn on_frame(&mut self, frame: &Value) -> bool {
        let number = |key: &str| frame[key].as_u64();
        match frame["type"].as_str().unwrap_or_default() {
            "message" => {
                if let (Some(id), Some(seq)) = (number("conversation_id"), number("seq")) {
                    self.saw(id, seq, number("epoch"));
                }
                true
            }
            "replayed" | "reset" => {
                if let (Some(id), Some(seq)) = (number("conversation_id"), number("last_seq")) {
                    self.saw(id, seq, number("epoch"));
                }
                true
            }
            "ack" => {
                let Ok(ack) = serde_json::from_value::<Ack>(frame.clone()) else { return true };
                self.saw(ack.conversation_id, ack.seq, Some(ack.epoch));
                if let Some(position) = self.pending.iter().position(|pending| pending.client_id == ack.client_id) {
                    if let Some(mut pending) = self.pending.remove(position) {
                        if let Some(reply) = pending.reply.take() {
                            let _ = reply.send(Ok(ack));
                        }
                    }
                    return false;
                }
                true
            }
            "error" => {
                let code = frame["code"].as_str().unwrap_or_default();
                let retry_later = matches!(code, "internal" | "unavailable" | "rate_limited");
                if let (Some(client_id), false) = (frame["client_id"].as_str(), retry_later) {
                    if let Some(position) = self.pending.iter().position(|pending| pending.client_id == client_id) {
                        if let Some(mut pending) = self.pending.remove(position) {
                            if let Some(reply) = pending.reply.take() {
                                let _ = reply.send(Err(ClientError::Refused {
                                    code: code.to_owned(),
                                    message: frame["message"].as_str().unwrap_or_default().to_owned(),
                                }));
                            }
                        }
                        return false;
                    }
                }
                true
            }
            _ => true,
        }
    }
}

async fn run(config: ClientConfig, mut commands: mpsc::Receiver<Command>, events: mpsc::Sender<Event>) {
    let mut state = State::default();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let reason = match Link::connect(&config, &state.hello(&config.credentials)).await {
            Ok((mut link, welcome)) => {
                backoff = FIRST_BACKOFF;
                if events.send(Event::Connected(welcome)).await.is_err() {
                    return;
                }
                let mut resent = Ok(());
                for pending in &state.pending {
                    resent = link.send(&pending.frame()).await;
                    if resent.is_err() {
                        break;
                    }
                }
                match resent {
                    Err(error) => error,
                    Ok(()) => loop {
                        tokio::select! {
                            command = commands.recv() => match command {
                                None => return,
                                Some(Command::Send { client_id, conversation_id, text, reply }) => {
                                    let pending = Pending { client_id, conversation_id, text, reply: Some(reply) };
                                    let sent = link.send(&pending.frame()).await;
                                    state.pending.push_back(pending);
                                    if let Err(error) = sent {
                                        break error;
                                    }
                                }
                                Some(Command::Frame(frame)) => {
                                    if let Err(error) = link.send(&frame).await {
                                        break error;
                                    }
                                }
                            },
                            frame = link.recv() => match frame {
                                Ok(frame) => {
                                    if state.on_frame(&frame) && events.send(Event::Frame(frame)).await.is_err() {
                                        return;
                                    }
                                }
                                Err(error) => break error,
                            },
                        }
                    },
                }
            }
            Err(error) => error,
        };
        let final_close = matches!(reason, ClientError::Closed { code, .. } if matches!(code, 4000 | 4001 | 4003))
            || matches!(reason, ClientError::BadUrl(_));
        let _ = events.send(Event::Disconnected { reason: reason.to_string(), will_retry: !final_close }).await;
        if final_close {
            for mut pending in state.pending.drain(..) {
                if let Some(reply) = pending.reply.take() {
                    let _ = reply.send(Err(ClientError::Connect(reason.to_string())));
                }
            }
            return;
        }
        // Wait before reconnecting, queueing whatever the app sends meanwhile.
        let jitter = Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
        let wake = tokio::time::sleep(backoff + jitter);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Send { client_id, conversation_id, text, reply }) => {
                        state.pending.push_back(Pending { client_id, conversation_id, text, reply: Some(reply) });
                    }
                    Some(Command::Frame(_)) => {}
                },
            }
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// One connection, WebSocket or QUIC, seen as frames in and out.
struct Link {
    writer: LinkWriter,
    frames: mpsc::Receiver<Result<Value, ClientError>>,
    /// The tasks reading the connection's streams; they end with it.
    _readers: JoinSet<()>,
    /// Keeps the QUIC endpoint (its UDP socket) alive as long as the connection.
    _endpoint: Option<quinn::Endpoint>,
}

type WsSink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    WsMessage,
>;

enum LinkWriter {
    WebSocket(WsSink),
    Quic { connection: quinn::Connection, control: quinn::SendStream, encoding: Encoding },
}

impl Link {
    /// Connects, sends `hello` and waits for `welcome`.
    async fn connect(config: &ClientConfig, hello: &Value) -> Result<(Link, Value), ClientError> {
        let mut link = if let Some(rest) = config.url.strip_prefix("ws://") {
            Link::connect_websocket(rest, &config.credentials).await?
        } else if let Some(rest) = config.url.strip_prefix("quic://") {
            Link::connect_quic(rest, &config.trust, config.encoding).await?
        } else {
            return Err(ClientError::BadUrl(config.url.clone()));
        };
        link.send(hello).await?;
        let welcome = tokio::time::timeout(Duration::from_secs(30), link.recv())
            .await
            .map_err(|_| ClientError::Connect("no welcome in time".into()))??;
        if welcome["type"] != "welcome" {
            return Err(ClientError::Connect(format!("expected welcome, got {welcome}")));
        }
        Ok((link, welcome))
    }

    async fn connect_websocket(host: &str, credentials: &Credentials) -> Result<Link, ClientError> {
        let url = match credentials {
            Credentials::Visitor { site, .. } => format!("ws://{host}/ws/visitor?site={site}"),
            Credentials::Agent { .. } => format!("ws://{host}/ws/agent"),
        };
        let (socket, _) =
            tokio_tungstenite::connect_async(url).await.map_err(|error| ClientError::Connect(error.to_string()))?;
        let (sink, mut stream) = socket.split();
        let (sender, frames) = mpsc::channel(EVENT_QUEUE);
        let mut readers = JoinSet::new();
        readers.spawn(async move {
            while let Some(message) = stream.next().await {
                let item = match message {
                    Ok(WsMessage::Text(text)) => serde_json::from_str::<Value>(&text)
                        .map_err(|error| ClientError::Connect(format!("the server sent a bad frame: {error}"))),
                    Ok(WsMessage::Close(frame)) => Err(match frame {
                        Some(frame) => {
                            ClientError::Closed { code: frame.code.into(), reason: frame.reason.to_string() }
                        }
                        None => ClientError::Closed { code: 1005, reason: String::new() },
                    }),
                    Ok(_) => continue,
                    Err(error) => Err(ClientError::Connect(error.to_string())),
                };
                let last = item.is_err();
                if sender.send(item).await.is_err() || last {
                    return;
                }
            }
            let _ = sender.send(Err(ClientError::Connect("the connection ended".into()))).await;
        });
        Ok(Link { writer: LinkWriter::WebSocket(sink), frames, _readers: readers, _endpoint: None })
    }

    async fn connect_quic(host: &str, trust: &Trust, encoding: Encoding) -> Result<Link, ClientError> {
        let address: SocketAddr = tokio::net::lookup_host(host)
            .await
            .map_err(|error| ClientError::Connect(format!("resolving {host}: {error}")))?
            .next()
            .ok_or_else(|| ClientError::Connect(format!("{host} has no address")))?;
        let bind: SocketAddr = if address.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("a valid address");
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|error| ClientError::Connect(error.to_string()))?;
        endpoint.set_default_client_config(quic_client_config(trust, encoding)?);
        let server_name = host.rsplit_once(':').map(|(name, _)| name).unwrap_or(host).trim_matches(['[', ']']);
        let server_name = if server_name.parse::<std::net::IpAddr>().is_ok() { "localhost" } else { server_name };
        let connection = endpoint
            .connect(address, server_name)
            .map_err(|error| ClientError::Connect(error.to_string()))?
            .await
            .map_err(|error| ClientError::Connect(error.to_string()))?;
        let (control, control_recv) =
            connection.open_bi().await.map_err(|error| ClientError::Connect(error.to_string()))?;
        let (sender, frames) = mpsc::channel(EVENT_QUEUE);
        let mut readers = JoinSet::new();
        readers.spawn(read_quic_stream(control_recv, sender.clone(), encoding));
        let accepting = connection.clone();
        readers.spawn(async move {
            let mut streams = JoinSet::new();
            loop {
                match accepting.accept_uni().await {
                    Ok(recv) => {
                        streams.spawn(read_quic_stream(recv, sender.clone(), encoding));
                    }
                    Err(error) => {
                        let error = match error {
                            quinn::ConnectionError::ApplicationClosed(close) => ClientError::Closed {
                                code: u16::try_from(close.error_code.into_inner()).unwrap_or(u16::MAX),
                                reason: String::from_utf8_lossy(&close.reason).into_owned(),
                            },
                            other => ClientError::Connect(other.to_string()),
                        };
                        // Frames already read on other streams go first.
                        while streams.join_next().await.is_some() {}
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                }
            }
        });
        Ok(Link {
            writer: LinkWriter::Quic { connection, control, encoding },
            frames,
            _readers: readers,
            _endpoint: Some(endpoint),
        })
    }

    async fn send(&mut self, frame: &Value) -> Result<(), ClientError> {
        let lost = |error: String| ClientError::Connect(error);
        match &mut self.writer {
            LinkWriter::WebSocket(sink) => {
                sink.send(WsMessage::Text(frame.to_string().into())).await.map_err(|error| lost(error.to_string()))
            }
            LinkWriter::Quic { control, encoding, .. } => {
                let bytes = match encoding {
                    Encoding::Json => Bytes::from(frame.to_string()),
                    Encoding::Protobuf => {
                        protobuf::client_frame_from_json(frame).map_err(|error| lost(error.to_string()))?
                    }
                };
                let mut chunks = [framing::prefix(bytes.len()), bytes];
                control.write_all_chunks(&mut chunks).await.map_err(|error| lost(error.to_string()))
            }
        }
    }

    async fn recv(&mut self) -> Result<Value, ClientError> {
        match self.frames.recv().await {
            Some(item) => item,
            None => Err(ClientError::Connect("the connection ended".into())),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let LinkWriter::Quic { connection, .. } = &self.writer {
            connection.close(quinn::VarInt::from_u32(1000), b"bye");
        }
    }
}

async fn read_quic_stream(
    recv: quinn::RecvStream,
    frames: mpsc::Sender<Result<Value, ClientError>>,
    encoding: Encoding,
) {
    let mut recv = framing::reader(recv, MAX_FRAME_BYTES);
    loop {
        let frame = match framing::read_frame(&mut recv).await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => return,
        };
        let value = match encoding {
            Encoding::Json => serde_json::from_slice::<Value>(&frame).map_err(|error| error.to_string()),
            Encoding::Protobuf => protobuf::server_frame_to_json(&frame).map_err(|error| error.to_string()),
        };
        let item = value.map_err(|error| ClientError::Connect(format!("the server sent a bad frame: {error}")));
        if frames.send(item).await.is_err() {
            return;
        }
    }
}

/// The quinn client configuration for kefu: TLS 1.3 with the given trust, ALPN per encoding.
pub fn quic_client_config(trust: &Trust, encoding: Encoding) -> Result<quinn::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pin = match trust {
        Trust::Pin(fingerprint) => Some(
            hex::decode(fingerprint.replace(':', "").trim().to_ascii_lowercase())
                .map_err(|_| ClientError::Connect("the pin must be a hex SHA-256".into()))?,
        ),
        Trust::Insecure => None,
    };
    let verifier = Arc::new(PinVerifier { pin, provider: provider.clone() });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| ClientError::Connect(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![match encoding {
        Encoding::Json => ALPN_JSON.to_vec(),
        Encoding::Protobuf => ALPN_PROTOBUF.to_vec(),
    }];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|error| ClientError::Connect(error.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(Duration::from_secs(15)))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_CONVERSATION_STREAMS));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Checks the server certificate's SHA-256 against a pin (or accepts any, without a pin); the
/// handshake signature is always verified, so the server must hold the certificate's key.
#[derive(Debug)]
struct PinVerifier {
    pin: Option<Vec<u8>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pin {
            Some(pin) if Sha256::digest(end_entity.as_ref()).as_slice() != pin.as_slice() => {
                Err(rustls::Error::General("the certificate does not match the pinned fingerprint".into()))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
