//! The QUIC transport: the same frames, authentication, acks and resume as the WebSocket, with
//! each conversation on its own stream so a stalled conversation never delays another.
//!
//! A client opens one bidirectional *control* stream and sends `hello` on it; the server answers
//! `welcome` there and writes every frame outside a conversation's sequence (errors, events,
//! typing, read receipts, pong, goaway) on the control stream's send half. Each conversation's
//! sequenced frames (messages, acks, `replayed`, `reset`) travel on one unidirectional stream the
//! server opens on the first such frame. Every stream has its own writer task and bounded queue,
//! so flow control blocking one stream leaves the others flowing. Frames are length-prefixed
//! (`kefu_wire::framing`), in JSON or, when the client negotiated ALPN `kefu/1+proto`, Protobuf.
//! [`crate::net::session::Session`] runs the protocol exactly as for a WebSocket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;

use crate::base::config::Config;
use crate::base::rate_limit::RateLimiter;
use crate::chat::delivery::{ConnectionHandle, Role};
use crate::net::AppState;
use crate::net::framing::{self, FrameReader, FramingError};
use crate::net::protobuf::{self, ProtobufCache};
use crate::net::session::{CloseReason, Entry, Session};
use crate::net::tls::Certificates;
use crate::protocol::error_frame;
use crate::protocol::{self, ClientFrame, ErrorCode, ServerFrame, close_code};

/// The encodings and their ALPN names belong to the wire vocabulary, which clients share.
pub use kefu_wire::encoding::{ALPN_JSON, ALPN_PROTOBUF, Encoding};

/// Frames queued for one stream before the connection counts as a slow consumer (like the
/// WebSocket's outbound queue, but per stream, so one stalled conversation does not hold the rest).
const STREAM_QUEUE_FRAMES: usize = 256;

/// Frames read from the client's streams waiting for the session. Small: the session handles
/// frames one at a time, and a full queue makes the stream readers wait (QUIC flow control then
/// slows the client).
const INBOUND_QUEUE_FRAMES: usize = 32;

/// Bidirectional streams a client may have open at once (the control stream and a few for sends).
const MAX_CLIENT_BIDI_STREAMS: u32 = 8;

/// How long a closing connection waits for its streams to deliver their last frames (goaway).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound QUIC endpoint and the SHA-256 fingerprint of its certificate (hex), for pinning.
pub struct QuicListener {
    pub endpoint: quinn::Endpoint,
    pub fingerprint: String,
}

/// Binds the UDP socket with the HTTP port's certificates when kefu has TLS of its own (so a
/// SIGHUP reload or an ACME renewal reaches QUIC too), else the configured or self-signed one.
pub fn bind(
    config: &Config,
    address: SocketAddr,
    certificates: Option<Arc<Certificates>>,
) -> anyhow::Result<QuicListener> {
    let builder = rustls::ServerConfig::builder_with_provider(crate::net::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("configuring TLS 1.3")?
        .with_no_client_auth();
    let (mut tls, fingerprint) = match certificates {
        Some(certificates) => {
            // Pinning suits a self-signed certificate; a certificate from files or ACME is
            // checked against the client's roots, and changes on renewal.
            let fingerprint = certificates.current().map(|current| fingerprint(&current.cert[0]));
            (builder.with_cert_resolver(certificates), fingerprint.unwrap_or_else(|| "none".to_owned()))
        }
        None => {
            let (chain, key) = load_or_create_certificate(config)?;
            let fingerprint = fingerprint(&chain[0]);
            (builder.with_single_cert(chain, key).context("loading the QUIC certificate")?, fingerprint)
        }
    };
    tls.alpn_protocols = vec![ALPN_PROTOBUF.to_vec(), ALPN_JSON.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).context("configuring QUIC TLS")?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let limits = &config.limits;
    let window = (limits.max_frame_bytes + framing::PREFIX_BYTES) as u32;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CLIENT_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(window.saturating_mul(2)))
        .receive_window(VarInt::from_u32(window.saturating_mul(4)))
        .send_window(u64::from(window) * 4)
        .keep_alive_interval(Some(Duration::from_secs(limits.heartbeat_secs)))
        .max_idle_timeout(Some(
            VarInt::from_u64(limits.idle_timeout_secs * 1000)
                .map_err(|_| anyhow::anyhow!("limits.idle_timeout_secs is too large"))?
                .into(),
        ));
    server.transport_config(Arc::new(transport));
    let endpoint =
        quinn::Endpoint::server(server, address).with_context(|| format!("listening for QUIC on {address}"))?;
    Ok(QuicListener { endpoint, fingerprint })
}

/// Lowercase hex SHA-256 of a certificate's DER bytes.
pub fn fingerprint(certificate: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(certificate.as_ref()))
}

fn load_or_create_certificate(
    config: &Config,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert_path, key_path) = match (&config.quic_cert, &config.quic_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None) => {
            let directory = config.data_dir.join("quic");
            let paths = (directory.join("cert.pem"), directory.join("key.pem"));
            if !paths.0.exists() {
                create_self_signed(&directory, &paths.0, &paths.1)?;
            }
            paths
        }
        _ => anyhow::bail!("invalid configuration: quic_cert and quic_key must be given together"),
    };
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading quic_cert {}", cert_path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("quic_cert {} holds no certificate", cert_path.display());
    }
    let key =
        PrivateKeyDer::from_pem_file(&key_path).with_context(|| format!("reading quic_key {}", key_path.display()))?;
    Ok((chain, key))
}

fn create_self_signed(directory: &Path, cert_path: &PathBuf, key_path: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).context("making a self-signed certificate")?;
    let key_pem = certified.signing_key.serialize_pem();
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(key_path)
            .with_context(|| format!("writing {}", key_path.display()))?;
        file.write_all(key_pem.as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(key_path, key_pem)?;
    std::fs::write(cert_path, certified.cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
    Ok(())
}

/// Accepts QUIC connections until shutdown; each runs in a task owned by `app.tasks`.
pub async fn serve(endpoint: quinn::Endpoint, app: AppState) {
    let cache = Arc::new(ProtobufCache::default());
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = app.shutdown.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = app.connection_slots.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let task_app = app.clone();
        let cache = cache.clone();
        app.tasks.spawn(async move {
            if let Ok(connection) = incoming.await {
                serve_connection(connection, task_app, cache, permit).await;
            }
        });
    }
    // Connection tasks close their own connections with a reconnect hint; wait for them to go out.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT * 2, endpoint.wait_idle()).await;
}

/// The QUIC-only fields of `hello`: which kind of client this is (a WebSocket's path says it).
#[derive(Deserialize)]
struct QuicHello {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    site: Option<String>,
}

/// A frame read from one of the client's streams.
enum Inbound {
    Frame(Bytes),
    TooBig,
}

fn close(connection: &Connection, reason: &CloseReason) {
    connection.close(VarInt::from_u32(u32::from(reason.code)), reason.reason.as_bytes());
}

async fn serve_connection(
    connection: Connection,
    app: AppState,
    cache: Arc<ProtobufCache>,
    permit: OwnedSemaphorePermit,
) {
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    let encoding = Encoding::of_alpn(alpn.as_deref());
    let limits = app.config.limits.clone();
    let max_frame = limits.max_frame_bytes;

    // The first bidirectional stream is the control stream; its first frame must be hello.
    let hello_deadline = tokio::time::Instant::now() + Duration::from_secs(limits.hello_timeout_secs);
    let accepted = tokio::select! {
        accepted = tokio::time::timeout_at(hello_deadline, connection.accept_bi()) => accepted,
        _ = app.shutdown.cancelled() => return close(&connection, &CloseReason::new(close_code::RESTARTING, "shutting down")),
    };
    let (control_send, control_recv) = match accepted {
        Err(_) => return close(&connection, &CloseReason::new(close_code::HELLO_TIMEOUT, "no hello in time")),
        Ok(Err(_)) => return,
        Ok(Ok(streams)) => streams,
    };
    let mut control_recv = framing::reader(control_recv, max_frame);
    let first = tokio::time::timeout_at(hello_deadline, framing::read_frame(&mut control_recv)).await;
    let first = match first {
        Err(_) => return close(&connection, &CloseReason::new(close_code::HELLO_TIMEOUT, "no hello in time")),
        Ok(Err(FramingError::TooBig)) => {
            return close(&connection, &CloseReason::new(close_code::TOO_BIG, "frame too large"));
        }
        Ok(Err(_)) | Ok(Ok(None)) => return,
        Ok(Ok(Some(frame))) => frame,
    };
    let (entry, hello) = match decode_hello(&app, encoding, &first).await {
        Ok(decoded) => decoded,
        Err(reason) => return close(&connection, &reason),
    };
    let role = match entry {
        Entry::Visitor { .. } => Role::Visitor,
        Entry::Agent { .. } => Role::Agent,
    };

    let (handle, mut outbound) = ConnectionHandle::new(role, limits.outbound_queue);
    let (mut session, first_frames) =
        match Session::start_with::<Vec<(Option<u64>, Bytes)>>(app.clone(), entry, hello, handle.clone()).await {
            Ok(started) => started,
            Err(reason) => return close(&connection, &reason),
        };

    let mut writers = Writers {
        connection: connection.clone(),
        encoding,
        cache,
        control: spawn_writer(async move { Some(control_send) }),
        conversations: HashMap::new(),
    };
    let mut out = first_frames;
    let (inbound_sender, mut inbound) = mpsc::channel::<Inbound>(INBOUND_QUEUE_FRAMES);
    let mut readers = JoinSet::new();
    readers.spawn(read_stream(control_recv, inbound_sender.clone()));
    let rate = RateLimiter::new(limits.frames_per_second, limits.frame_burst);

    let close_reason: Option<CloseReason> = loop {
        if let Err(reason) = writers.route(&mut out) {
            break Some(reason);
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => {
                out.push((None, ServerFrame::Goaway { reason: "shutdown", reconnect_after_ms: 1000 }.encode()));
                let _ = writers.route(&mut out);
                break Some(CloseReason::new(close_code::RESTARTING, "server restarting; reconnect and resume"));
            }
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    // Extra client streams carry frames only; answers go where they belong.
                    let mut send = send;
                    let _ = send.finish();
                    readers.spawn(read_stream(framing::reader(recv, max_frame), inbound_sender.clone()));
                }
                Err(_) => break None,
            },
            frame = inbound.recv() => match frame {
                Some(Inbound::Frame(frame)) => {
                    // Over the rate, the frame waits; the readers' bounded queue then holds the
                    // client back through QUIC flow control.
                    rate.pace().await;
                    match frame_text(encoding, &frame) {
                        Ok(text) => session.on_frame(&text, &mut out).await,
                        Err(error) => out.push((None, error_frame(error.code, &error.message, error.client_id.as_deref()))),
                    }
                }
                Some(Inbound::TooBig) => break Some(CloseReason::new(close_code::TOO_BIG, "frame too large")),
                None => break None,
            },
            queued = outbound.recv() => {
                if let Err(reason) = session.take_outbound(queued, &mut outbound, &handle, &mut out) {
                    if reason.flushes_pending() {
                        // The last frame (why) goes out, drained below, before the close.
                        let _ = writers.route(&mut out);
                    }
                    break Some(reason);
                }
                if session.has_pending_replays() {
                    session.replay_subscribed(&mut out).await;
                }
            }
        }
    };
    session.finish().await;
    readers.abort_all();
    if let Some(reason) = close_reason {
        if reason.flushes_pending() {
            // Let the last frames (a goaway, the reason for a close) reach the client before the
            // close discards unsent stream data; a slow consumer would not read them.
            writers.drain().await;
        }
        close(&connection, &reason);
    }
    drop(permit);
}

/// Decodes the first frame: it must be a `hello` naming a role (and a known site for visitors).
async fn decode_hello(
    app: &AppState,
    encoding: Encoding,
    frame: &Bytes,
) -> Result<(Entry, protocol::Hello), CloseReason> {
    let bad_hello = |message: String| CloseReason::new(close_code::BAD_HELLO, message);
    let text = frame_text(encoding, frame).map_err(|error| bad_hello(error.message))?;
    let hello = match protocol::decode_client_frame(&text) {
        Ok(ClientFrame::Hello(hello)) => hello,
        Ok(_) => return Err(bad_hello("the first frame must be hello".into())),
        Err(error) => return Err(bad_hello(error.message)),
    };
    let fields: QuicHello = serde_json::from_str(&text).map_err(|error| bad_hello(format!("hello: {error}")))?;
    let entry = match fields.role.as_deref() {
        Some("agent") => Entry::Agent { cookie_token: None },
        Some("visitor") => {
            let key = fields.site.ok_or_else(|| bad_hello("hello: site is required for visitors".into()))?;
            let site = app
                .sites
                .get(&key)
                .await
                .map_err(|_| CloseReason::new(close_code::INTERNAL, "internal error"))?
                .ok_or_else(|| bad_hello("hello: no such site".into()))?;
            Entry::Visitor { site, peer: None, user_agent: "native app (QUIC)".to_owned() }
        }
        _ => return Err(bad_hello("hello: role must be \"visitor\" or \"agent\"".into())),
    };
    Ok((entry, hello))
}

/// A client frame as the JSON text the session decodes.
fn frame_text(encoding: Encoding, frame: &Bytes) -> Result<String, protocol::DecodeError> {
    match encoding {
        Encoding::Json => String::from_utf8(frame.to_vec()).map_err(|_| protocol::DecodeError {
            code: ErrorCode::BadJson,
            message: "a frame must be UTF-8 JSON".into(),
            client_id: None,
        }),
        Encoding::Protobuf => protobuf::client_frame_to_json(frame),
    }
}

async fn read_stream(mut recv: FrameReader<RecvStream>, inbound: mpsc::Sender<Inbound>) {
    loop {
        match framing::read_frame(&mut recv).await {
            Ok(Some(frame)) => {
                if inbound.send(Inbound::Frame(frame)).await.is_err() {
                    return;
                }
            }
            Err(FramingError::TooBig) => {
                let _ = inbound.send(Inbound::TooBig).await;
                return;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// One stream's writer: a bounded queue and the task that drains it.
struct StreamWriter {
    queue: mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_writer<F>(open: F) -> StreamWriter
where
    F: std::future::Future<Output = Option<SendStream>> + Send + 'static,
{
    let (queue, mut frames) = mpsc::channel::<Bytes>(STREAM_QUEUE_FRAMES);
    let task = tokio::spawn(async move {
        let Some(mut send) = open.await else { return };
        while let Some(frame) = frames.recv().await {
            let mut chunks = [framing::prefix(frame.len()), frame];
            if send.write_all_chunks(&mut chunks).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, send.stopped()).await;
    });
    StreamWriter { queue, task }
}

/// The connection's streams: control, and one per conversation that has had a sequenced frame.
struct Writers {
    connection: Connection,
    encoding: Encoding,
    cache: Arc<ProtobufCache>,
    control: StreamWriter,
    conversations: HashMap<u64, StreamWriter>,
}

impl Writers {
    /// Queues every frame on its stream, emptying `out`. A full stream queue means the client
    /// stopped reading that stream: the connection closes as a slow consumer (it resumes later).
    fn route(&mut self, out: &mut Vec<(Option<u64>, Bytes)>) -> Result<(), CloseReason> {
        for (conversation_id, frame) in out.drain(..) {
            let frame = match self.encoding {
                Encoding::Json => frame,
                Encoding::Protobuf => match self.cache.encode(&frame) {
                    Ok(encoded) => encoded,
                    Err(error) => {
                        tracing::error!(%error, "a server frame has no Protobuf form");
                        continue;
                    }
                },
            };
            let writer = match conversation_id {
                None => &self.control,
                Some(conversation_id) => match self.conversations.entry(conversation_id) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        // Opening a stream waits only when the client's stream limit is reached;
                        // the writer task opens it, so routing never waits.
                        let connection = self.connection.clone();
                        entry.insert(spawn_writer(async move { connection.open_uni().await.ok() }))
                    }
                },
            };
            if writer.queue.try_send(frame).is_err() {
                return Err(CloseReason::slow_consumer());
            }
        }
        Ok(())
    }

    /// Ends every stream and waits (bounded) until the client has received what was written.
    async fn drain(self) {
        let Writers { control, conversations, .. } = self;
        let mut tasks = vec![control.task];
        tasks.extend(conversations.into_values().map(|writer| writer.task));
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, futures_util::future::join_all(tasks)).await;
    }
}
