//! Slow and greedy HTTP clients: the header-read timeout, the caps on plain HTTP connections
//! (per address and in all), and that WebSockets are not counted under them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::support::TestServer;

/// The header-read timeout of these tests, in seconds.
const HEADER_TIMEOUT_SECS: u64 = 2;

/// The per-address cap of these tests.
const PER_ADDRESS: usize = 6;

fn tight_limits(config: &mut kefu::base::config::Config) {
    config.limits.max_http_connections = 64;
    config.limits.max_http_connections_per_ip = PER_ADDRESS;
    config.limits.header_read_timeout_secs = HEADER_TIMEOUT_SECS;
}

/// A TCP connection to `server` from the loopback address `source`.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0)).unwrap();
    socket.connect(server).await.expect("connecting")
}

/// `GET /healthz` from `source` on a new connection: the whole answer, or what came before the
/// connection closed.
async fn healthz_from(source: &str, server: SocketAddr) -> String {
    let mut stream = connect_from(source, server).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: kefu\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer to /healthz from {source} within 10 s");
    String::from_utf8_lossy(&answer).into_owned()
}

/// How a trickling connection ended.
#[derive(Debug)]
struct Ended {
    /// What the server sent (a 503 when the connection was over the cap, else nothing).
    answer: String,
    /// How long after connecting.
    after: Duration,
}

/// Opens a connection from 127.0.0.1 that sends a request head one byte every 100 ms and never
/// finishes it; reports how the connection ended.
fn trickle(server: SocketAddr, ended: mpsc::Sender<Ended>) {
    tokio::spawn(async move {
        let mut stream = connect_from("127.0.0.1", server).await;
        let started = Instant::now();
        let head = b"GET /healthz HTTP/1.1\r\nhost: kefu\r\nx-padding: ".iter().chain(std::iter::repeat(&b'a'));
        let mut head = head.copied();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 512];
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                read = stream.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                },
                _ = tick.tick() => {
                    let byte = [head.next().unwrap_or(b'a')];
                    if stream.write_all(&byte).await.is_err() {
                        // Closed by the server; read what it sent before closing.
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut answer)).await;
                        break;
                    }
                }
            }
        }
        let _ =
            ended.send(Ended { answer: String::from_utf8_lossy(&answer).into_owned(), after: started.elapsed() }).await;
    });
}

#[tokio::test]
async fn trickling_clients_are_capped_per_address_and_closed_after_the_header_timeout() {
    let server = TestServer::start_with(tight_limits).await;
    let n_tricklers = 4 * PER_ADDRESS;
    let (ended, mut endings) = mpsc::channel(n_tricklers);
    for _ in 0..n_tricklers {
        trickle(server.addr, ended.clone());
    }
    // The connections over the cap are answered 503 at once; once they all are, the server has
    // accepted every trickling connection.
    let mut refused = 0;
    while refused < n_tricklers - PER_ADDRESS {
        let ending = tokio::time::timeout(Duration::from_secs(10), endings.recv()).await.unwrap().unwrap();
        assert!(ending.answer.starts_with("HTTP/1.1 503"), "{ending:?}");
        assert!(ending.answer.contains("too_many_connections"), "{ending:?}");
        refused += 1;
    }

    // Another address is served while 127.0.0.1 is at its cap, and 127.0.0.1 itself is refused.
    let answer = healthz_from("127.0.0.2", server.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = healthz_from("127.0.0.1", server.addr).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

    // A connection that never sends a byte is closed after the timeout too.
    let mut silent = connect_from("127.0.0.3", server.addr).await;
    let mut nothing = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut nothing)).await;
    assert!(read.is_ok() && nothing.is_empty(), "a silent connection is closed without an answer");

    // The trickling connections under the cap are closed once the header timeout passes,
    // without an answer.
    for _ in 0..PER_ADDRESS {
        let ending = tokio::time::timeout(Duration::from_secs(15), endings.recv()).await.unwrap().unwrap();
        assert!(!ending.answer.starts_with("HTTP/1.1 503"), "{ending:?}");
        assert!(ending.after >= Duration::from_millis(HEADER_TIMEOUT_SECS * 1000 - 200), "{ending:?}");
    }
    let answer = healthz_from("127.0.0.1", server.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn websockets_are_not_counted_under_the_http_caps() {
    let server = TestServer::start_with(tight_limits).await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitors = Vec::new();
    for _ in 0..3 * PER_ADDRESS {
        visitors.push(server.visitor(&site, &token).await);
    }
    // Every upgraded connection is open, and plain HTTP from the same address still has room.
    for _ in 0..PER_ADDRESS {
        let answer = healthz_from("127.0.0.1", server.addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // And every WebSocket still works.
    for visitor in &mut visitors {
        visitor.send(serde_json::json!({"type": "ping"})).await;
        visitor.expect("pong").await;
    }
}
