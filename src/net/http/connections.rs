//! Accepting HTTP connections: the accept loop that hands each TCP connection to hyper with the
//! router, a header-read timeout, caps on concurrent plain HTTP connections (in all and per
//! client address), back-off when accepting fails, and the file-descriptor budget they fit in.
//!
//! A connection counts as plain HTTP until it is upgraded to a WebSocket; from then on it is a
//! WebSocket connection, capped by `limits.max_connections` (the `connection_slots` semaphore),
//! so one address may hold many more WebSockets than HTTP connections.
//!
//! With `tls` configured every connection first makes a TLS handshake (within the header-read
//! timeout), in its own task so a slow handshake never holds the accept loop; requests on it
//! carry [`ServedOverTls`]. A TLS client that negotiates `h2` (ALPN) is served HTTP/2, any other
//! HTTP/1.1; WebSockets stay on HTTP/1.1 (kefu does not offer RFC 8441's extended CONNECT, so
//! browsers open their WebSockets on an HTTP/1.1 connection). Plain connections are HTTP/1.1.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::base::config::{LimitsConfig, TrustedProxies};

/// File descriptors kept for everything that is not a client connection: the database and its
/// commit log, the search index, the log, the control, metrics and QUIC sockets, outgoing
/// webhook and LLM connections, and the runtime's own.
pub const FILE_DESCRIPTOR_RESERVE: usize = 256;

/// The first wait after accepting a connection failed (say, out of file descriptors).
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(50);

/// The longest wait between accept attempts while accepting keeps failing.
const ACCEPT_BACKOFF_MOST: Duration = Duration::from_secs(1);

/// How long shutdown waits for HTTP requests in progress to finish.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The answer to a connection over its address's cap, written before closing it.
const TOO_MANY_CONNECTIONS_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 92\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many connections from this address\"}}";

/// Marks a request that reached kefu over its own TLS, so the client used https.
#[derive(Clone, Copy, Debug)]
pub struct ServedOverTls;

/// What the accept loop needs besides the listener and the router.
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// Most concurrent plain HTTP connections.
    pub max_http_connections: usize,
    /// Most concurrent plain HTTP connections from one address.
    pub max_http_connections_per_ip: usize,
    /// How long a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Proxies, which carry many clients' requests, count only under the total.
    pub trusted_proxies: TrustedProxies,
}

impl ConnectionSettings {
    pub fn from_config(limits: &LimitsConfig, trusted_proxies: &TrustedProxies) -> ConnectionSettings {
        ConnectionSettings {
            max_http_connections: limits.max_http_connections,
            max_http_connections_per_ip: limits.max_http_connections_per_ip,
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
            trusted_proxies: trusted_proxies.clone(),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and gives
/// requests in progress a short grace period. Upgraded connections (WebSockets) are not
/// waited for: they end through `shutdown` themselves. With `tls`, connections speak HTTPS.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    settings: ConnectionSettings,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let counts = Arc::new(HttpConnectionCounts::new(&settings));
    let builder = Builders::new(settings.header_read_timeout);
    let connections = TaskTracker::new();
    let mut backoff: Option<Duration> = None;
    loop {
        // At the total cap, new clients wait in the kernel's accept queue, which costs no
        // file descriptor, until a connection ends or is upgraded.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = counts.room() => {}
        }
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                if backoff.take().is_some() {
                    tracing::info!("accepting HTTP connections again");
                }
                accepted
            }
            Err(error) if is_one_connection_error(&error) => continue,
            Err(error) => {
                let wait = match backoff {
                    None => {
                        tracing::warn!(%error, "accepting an HTTP connection failed; backing off");
                        ACCEPT_BACKOFF_FIRST
                    }
                    Some(wait) => (wait * 2).min(ACCEPT_BACKOFF_MOST),
                };
                backoff = Some(wait);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        // Without TCP_NODELAY, a stream of small frames to one socket (an agent's) waits on
        // Nagle's algorithm and the peer's delayed ACK, about 40 ms per stall.
        let _ = stream.set_nodelay(true);
        let counted_per_address = !settings.trusted_proxies.contains(peer.ip());
        let Some(slot) = counts.admit(peer.ip(), counted_per_address) else {
            tracing::debug!(%peer, "too many HTTP connections from this address");
            refuse(stream);
            continue;
        };
        let header_read_timeout = settings.header_read_timeout;
        let (builder, router, shutdown, tls) = (builder.clone(), router.clone(), shutdown.clone(), tls.clone());
        connections.spawn(async move {
            // Dropped when the connection ends or hands its socket to a WebSocket.
            let _slot = slot;
            let Some(tls) = tls else {
                serve_until_done(&builder, stream, router, peer, None, header_read_timeout, shutdown).await;
                return;
            };
            let stream = match tokio::time::timeout(header_read_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "a TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let protocol = match stream.get_ref().1.alpn_protocol() {
                // An ACME validation only needs the handshake, which proved control of the name.
                Some(crate::net::tls::ACME_TLS_ALPN) => return,
                Some(crate::net::tls::HTTP2_ALPN) => Protocol::Http2,
                _ => Protocol::Http1,
            };
            serve_until_done(&builder, stream, router, peer, Some(protocol), header_read_timeout, shutdown).await;
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, connections.wait()).await.is_err() {
        tracing::warn!("HTTP requests did not finish in time");
    }
}

/// The HTTP version a TLS connection negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// hyper's connection builders, set up once for the accept loop.
#[derive(Clone)]
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(header_read_timeout: Duration) -> Builders {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // Pings find dead peers, which HTTP/2 multiplexes many requests over.
        http2.timer(TokioTimer::new()).keep_alive_interval(Some(HTTP2_KEEP_ALIVE)).keep_alive_timeout(HTTP2_KEEP_ALIVE);
        Builders { http1, http2 }
    }
}

/// Serves one connection until it ends, is upgraded, or is closed at shutdown (after the request
/// in progress, if any). `over_tls` is the protocol TLS negotiated, `None` for plain HTTP/1.1.
/// hyper's header-read timeout covers every HTTP/1.1 request head; this also closes a connection
/// that has sent no request within that time and is not reading one.
async fn serve_until_done<I>(
    builders: &Builders,
    stream: I,
    router: axum::Router,
    peer: std::net::SocketAddr,
    over_tls: Option<Protocol>,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = first_request.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(ConnectInfo(peer));
        if over_tls.is_some() {
            request.extensions_mut().insert(ServedOverTls);
        }
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    let io = TokioIo::new(stream);
    let watch = Watch { first_request, header_read_timeout, shutdown };
    if over_tls == Some(Protocol::Http2) {
        let connection = builders.http2.serve_connection(io, service);
        tokio::pin!(connection);
        watch.drive(connection, |connection| connection.graceful_shutdown()).await;
    } else {
        let connection = builders.http1.serve_connection(io, service).with_upgrades();
        tokio::pin!(connection);
        watch.drive(connection, |connection| connection.graceful_shutdown()).await;
    }
}

/// What a connection is watched for besides its own end: no first request in time, shutdown.
struct Watch {
    first_request: Arc<AtomicBool>,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
}

impl Watch {
    async fn drive<C>(self, mut connection: std::pin::Pin<&mut C>, graceful_shutdown: fn(std::pin::Pin<&mut C>))
    where
        C: std::future::Future<Output = Result<(), hyper::Error>>,
    {
        let deadline = tokio::time::sleep(self.header_read_timeout);
        tokio::pin!(deadline);
        let (mut deadline_passed, mut shutting_down) = (false, false);
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "an HTTP connection ended with an error");
                    }
                    return;
                }
                _ = &mut deadline, if !deadline_passed => {
                    deadline_passed = true;
                    if !self.first_request.load(Ordering::Relaxed) {
                        return;
                    }
                }
                _ = self.shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    graceful_shutdown(connection.as_mut());
                }
            }
        }
    }
}

/// Answers 503 (if the socket takes it at once) and closes.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(TOO_MANY_CONNECTIONS_RESPONSE);
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_one_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(error.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset)
}

/// The plain HTTP connections open now, in all and per client address.
struct HttpConnectionCounts {
    max_total: usize,
    max_per_address: usize,
    state: parking_lot::Mutex<CountState>,
    /// Woken when a connection ends or is upgraded, for an accept loop waiting at the cap.
    released: Notify,
}

#[derive(Default)]
struct CountState {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl HttpConnectionCounts {
    fn new(settings: &ConnectionSettings) -> HttpConnectionCounts {
        HttpConnectionCounts {
            max_total: settings.max_http_connections,
            max_per_address: settings.max_http_connections_per_ip,
            state: parking_lot::Mutex::new(CountState::default()),
            released: Notify::new(),
        }
    }

    /// Resolves when there is room under the total cap.
    async fn room(&self) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.state.lock().total < self.max_total {
                return;
            }
            released.await;
        }
    }

    /// Counts a new connection from `address`, unless that address is at its cap.
    fn admit(self: &Arc<Self>, address: IpAddr, counted_per_address: bool) -> Option<HttpConnectionSlot> {
        let key = counted_per_address.then(|| address_key(address));
        let mut state = self.state.lock();
        if let Some(key) = key {
            let count = state.per_address.entry(key).or_insert(0);
            if *count >= self.max_per_address {
                return None;
            }
            *count += 1;
        }
        state.total += 1;
        Some(HttpConnectionSlot { counts: self.clone(), key })
    }
}

/// One counted connection; dropping it (when the connection ends or is upgraded) uncounts it.
struct HttpConnectionSlot {
    counts: Arc<HttpConnectionCounts>,
    key: Option<IpAddr>,
}

impl Drop for HttpConnectionSlot {
    fn drop(&mut self) {
        let mut state = self.counts.state.lock();
        state.total -= 1;
        if let Some(key) = self.key
            && let Some(count) = state.per_address.get_mut(&key)
        {
            *count -= 1;
            if *count == 0 {
                state.per_address.remove(&key);
            }
        }
        drop(state);
        self.counts.released.notify_one();
    }
}

/// The address a connection is counted under: IPv6 clients usually hold a whole /64.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(address) => {
            let prefix = u128::from(address) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        address => address,
    }
}

/// Raises the open-file limit to its hard limit and lowers the connection caps if they still
/// would not fit in it, with a warning naming what was lowered: connections beyond the limit
/// would fail to accept, and the database or index could fail to open a file.
pub fn fit_limits_to_file_descriptors(limits: &mut LimitsConfig) {
    if let Some(open_file_limit) = open_file_limit() {
        fit_limits_to_open_file_limit(limits, open_file_limit);
    }
}

/// [`fit_limits_to_file_descriptors`] for a given open-file limit.
fn fit_limits_to_open_file_limit(limits: &mut LimitsConfig, open_file_limit: usize) {
    let available = open_file_limit.saturating_sub(FILE_DESCRIPTOR_RESERVE);
    let wanted = limits.max_http_connections.saturating_add(limits.max_connections);
    if wanted <= available {
        return;
    }
    let max_http_connections = limits.max_http_connections.min(available / 4).max(1);
    let max_connections = limits.max_connections.min(available.saturating_sub(max_http_connections)).max(1);
    tracing::warn!(
        open_file_limit = available + FILE_DESCRIPTOR_RESERVE,
        reserved = FILE_DESCRIPTOR_RESERVE,
        max_http_connections.configured = limits.max_http_connections,
        max_http_connections.used = max_http_connections,
        max_connections.configured = limits.max_connections,
        max_connections.used = max_connections,
        "the connection limits do not fit in the open-file limit; lowered them (raise LimitNOFILE or ulimit -n)"
    );
    limits.max_http_connections = max_http_connections;
    limits.max_http_connections_per_ip = limits.max_http_connections_per_ip.min(max_http_connections);
    limits.max_connections = max_connections;
}

/// The soft open-file limit after raising it to the hard limit; `None` when it is unlimited or
/// cannot be read.
#[cfg(unix)]
fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and keeps no pointer to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(from = limit.rlim_cur, to = limit.rlim_max, "raised the open-file limit");
            limit.rlim_cur = limit.rlim_max;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    usize::try_from(limit.rlim_cur).ok()
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn the_defaults_leave_room_for_19_000_websockets_under_20_000_files() {
        let mut limits = LimitsConfig::default();
        fit_limits_to_open_file_limit(&mut limits, 20_000);
        assert_eq!(limits.max_http_connections, LimitsConfig::default().max_http_connections);
        assert!(limits.max_connections >= 19_000, "{}", limits.max_connections);
        assert!(limits.max_connections + limits.max_http_connections + FILE_DESCRIPTOR_RESERVE <= 20_000);

        let mut limits = LimitsConfig::default();
        fit_limits_to_open_file_limit(&mut limits, 1024);
        assert!(limits.max_connections + limits.max_http_connections + FILE_DESCRIPTOR_RESERVE <= 1024);
        assert!(limits.max_http_connections_per_ip <= limits.max_http_connections);

        let mut limits = LimitsConfig::default();
        fit_limits_to_open_file_limit(&mut limits, 1_000_000);
        assert_eq!(limits.max_connections, LimitsConfig::default().max_connections);
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(address_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_per_address_cap_refuses_and_a_dropped_slot_frees_room() {
        let settings = ConnectionSettings {
            max_http_connections: 10,
            max_http_connections_per_ip: 2,
            header_read_timeout: Duration::from_secs(1),
            trusted_proxies: TrustedProxies::default(),
        };
        let counts = Arc::new(HttpConnectionCounts::new(&settings));
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        let first = counts.admit(address, true).unwrap();
        let _second = counts.admit(address, true).unwrap();
        assert!(counts.admit(address, true).is_none());
        assert!(counts.admit(address, false).is_some(), "a trusted proxy counts only under the total");
        drop(first);
        assert!(counts.admit(address, true).is_some());
    }
}
