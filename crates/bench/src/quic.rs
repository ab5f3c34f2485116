//! `kefu bench quic`: QUIC against a kefu child process (`kefu serve` of this same binary, on a
//! temporary data directory); see BENCHMARKS.md for the figures and docs/bench-log/2026-11-27.md,
//! "QUIC", for the runs.
//!
//! - `kefu bench quic connections N`: opens N QUIC visitor connections (each with `hello` answered
//!   by `welcome`) from this process to the server, holds them, and reads the server's VmRSS from
//!   /proc before and after to report memory per connection.
//! - `kefu bench quic relay VISITORS SECONDS RATE`: VISITORS visitors on QUIC send RATE messages
//!   per second in total for SECONDS to one agent on QUIC; reports visitor → agent latency (send to
//!   receipt, durable: every message is committed before it is delivered).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use kefu_client::{Client, ClientConfig, Encoding, Event, Trust};
use kefu_wire::framing;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

/// Handshakes in flight at once while connecting, so the UDP buffers keep up.
const CONNECT_CONCURRENCY: usize = 256;

/// Attempts per connection before it counts as not held.
const CONNECT_ATTEMPTS: usize = 3;

/// Visitor sessions created over HTTP at once.
const SESSION_CONCURRENCY: usize = 256;

/// How long the relay's agent may take to connect, and then to be assigned every conversation.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one HTTP request to the server may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The kefu child under test.
struct Server {
    child: Child,
    http: String,
    quic: String,
    fingerprint: String,
    site: String,
    data_dir: tempfile::TempDir,
    admin_password: String,
}

/// `kefu bench quic MODE ...`
#[derive(Subcommand, Debug)]
pub enum QuicCommand {
    /// N QUIC visitor connections held: server memory per connection, connect rate.
    Connections {
        /// Connections to open.
        #[arg(default_value_t = 50_000)]
        connections: usize,
    },
    /// Visitors on QUIC sending paced messages to one agent on QUIC: visitor → agent latency.
    Relay {
        /// Visitors, each with its own connection and conversation.
        #[arg(default_value_t = 100)]
        visitors: usize,
        /// How long the visitors send.
        #[arg(default_value_t = 10)]
        seconds: u64,
        /// Messages per second from all visitors together.
        #[arg(default_value_t = 1000)]
        rate: u64,
    },
}

pub async fn run(command: QuicCommand) -> anyhow::Result<()> {
    super::print_machine();
    match command {
        QuicCommand::Connections { connections: n } => connections(n).await,
        QuicCommand::Relay { visitors, seconds, rate } => {
            if visitors == 0 || seconds == 0 || rate == 0 {
                bail!("visitors, seconds and rate must each be at least 1");
            }
            relay(visitors, seconds, rate).await
        }
    }
}

/// The server under test is this same binary.
fn kefu_bin() -> anyhow::Result<std::path::PathBuf> {
    std::env::current_exe().context("finding the kefu binary")
}

async fn start_server() -> anyhow::Result<Server> {
    let data_dir = tempfile::tempdir()?;
    let program = kefu_bin()?;
    let mut child = Command::new(&program)
        .args(["serve", "--data-dir", data_dir.path().to_str().context("a UTF-8 path")?])
        .args(["--http", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
        .env("KEFU_LIMITS__MAX_CONNECTIONS", "200000")
        .env("KEFU_LIMITS__FRAMES_PER_SECOND", "100000")
        .env("KEFU_LIMITS__FRAME_BURST", "100000")
        .env("KEFU_LIMITS__IDLE_TIMEOUT_SECS", "300")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let (mut quic, mut fingerprint, mut site, mut admin_password) = (None, None, None, None);
    let http = loop {
        let line = lines.next_line().await?.context("kefu ended before listening")?;
        if let Some(rest) = line.strip_prefix("quic=") {
            let (address, tail) = rest.split_once(' ').context("a quic line")?;
            quic = Some(address.to_owned());
            fingerprint = tail.strip_prefix("certificate sha256=").map(str::to_owned);
        } else if let Some(key) = line.trim().strip_prefix("default site key: ") {
            site = Some(key.to_owned());
        } else if let Some(password) = line.trim().strip_prefix("password: ") {
            admin_password = Some(password.to_owned());
        } else if let Some(address) = line.strip_prefix("listening http=") {
            break format!("http://{address}");
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        child,
        http,
        quic: format!("quic://{}", quic.context("no quic line")?),
        fingerprint: fingerprint.context("no fingerprint")?,
        site: site.context("no site key")?,
        data_dir,
        admin_password: admin_password.context("no admin password")?,
    })
}

fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("a number")?.parse()?)
}

async fn visitor_tokens(server: &Server, n: usize) -> anyhow::Result<Vec<String>> {
    let http = kefu_client::http::tool_client(HTTP_TIMEOUT)?;
    let url = format!("{}/api/v1/visitor/session", server.http);
    let limit = Arc::new(Semaphore::new(SESSION_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (http, url, site, limit) = (http.clone(), url.clone(), server.site.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let body: Value = http.post(url).json(&json!({"site": site})).send().await?.json().await?;
            body["token"].as_str().map(str::to_owned).context("a token")
        });
    }
    let mut tokens = Vec::with_capacity(n);
    while let Some(token) = tasks.join_next().await {
        tokens.push(token??);
    }
    Ok(tokens)
}

/// A raw QUIC visitor connection: hello on the control stream, welcome back.
async fn connect_visitor(
    endpoint: &quinn::Endpoint,
    address: std::net::SocketAddr,
    site: &str,
    token: &str,
) -> anyhow::Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
    let connection = endpoint.connect(address, "localhost")?.await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let hello = json!({"type": "hello", "role": "visitor", "site": site, "token": token}).to_string();
    send.write_all(&framing::prefix(hello.len())).await?;
    send.write_all(hello.as_bytes()).await?;
    let mut frames = framing::reader(&mut recv, 1 << 20);
    let welcome = framing::read_frame(&mut frames).await?.context("no welcome")?;
    let welcome: Value = serde_json::from_slice(&welcome)?;
    if welcome["type"] != "welcome" {
        bail!("expected welcome, got {welcome}");
    }
    Ok((connection, send, recv))
}

async fn connections(n: usize) -> anyhow::Result<()> {
    let server = start_server().await?;
    let pid = server.child.id().context("a pid")?;
    println!("quic-connections: connections={n} server={} pid={pid}", server.quic);
    let started = Instant::now();
    let tokens = visitor_tokens(&server, n).await?;
    println!("  visitor sessions created: {} in {:.1}s", tokens.len(), started.elapsed().as_secs_f64());
    let rss_before = vm_rss_kib(pid)?;

    let address: std::net::SocketAddr = server.quic.trim_start_matches("quic://").parse()?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let mut config = kefu_client::quic_client_config(&Trust::Pin(server.fingerprint.clone()), Encoding::Json)?;
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(20)));
    transport.max_idle_timeout(Some(Duration::from_secs(300).try_into()?));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);

    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for token in tokens {
        let (endpoint, limit, site, failures) =
            (endpoint.clone(), limit.clone(), server.site.clone(), failures.clone());
        tasks.spawn(async move {
            // A failed attempt is retried, as a real client reconnects; failures counts attempts.
            for _ in 0..CONNECT_ATTEMPTS {
                let permit = limit.clone().acquire_owned().await.ok()?;
                let connected = connect_visitor(&endpoint, address, &site, &token).await;
                drop(permit);
                match connected {
                    Ok(held) => return Some(held),
                    Err(error) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("  a connection attempt failed: {error:#}");
                        }
                    }
                }
            }
            None
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(connection) = tasks.join_next().await {
        if let Some(connection) = connection? {
            held.push(connection);
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the server settle (handshake buffers freed, tasks parked) before reading its memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = vm_rss_kib(pid)?;
    let alive = held.iter().filter(|(connection, _, _)| connection.close_reason().is_none()).count();
    println!(
        "  connected: {} of {n} in {connect_secs:.1}s ({:.0}/s), failed attempts (retried) {}",
        held.len(),
        held.len() as f64 / connect_secs,
        failures.load(Ordering::Relaxed)
    );
    println!("  still open after settling: {alive}");
    println!("  server VmRSS: before {rss_before} KiB, after {rss_after} KiB");
    println!(
        "  server memory per QUIC connection: {:.1} KiB",
        (rss_after.saturating_sub(rss_before)) as f64 / held.len().max(1) as f64
    );
    drop(held);
    drop(server.data_dir);
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn relay(n_visitors: usize, seconds: u64, rate: u64) -> anyhow::Result<()> {
    let server = start_server().await?;
    println!(
        "quic-relay: visitors={n_visitors} seconds={seconds} rate={rate}/s server={} (durable: acked after commit)",
        server.quic
    );
    // An agent with room for every conversation, created through the running server.
    let output = Command::new(kefu_bin()?)
        .args(["admin", "create-agent", "--email", "bench@kefu.local", "--password", "bench password 1"])
        .args(["--site", &server.site, "--capacity", &(n_visitors * 2).to_string()])
        .args(["--data-dir", server.data_dir.path().to_str().context("a UTF-8 path")?])
        .output()
        .await?;
    if !output.status.success() {
        bail!("creating the agent failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let _ = &server.admin_password;
    let http = kefu_client::http::tool_client(HTTP_TIMEOUT)?;
    let login: Value = http
        .post(format!("{}/api/v1/agent/login", server.http))
        .json(&json!({"email": "bench@kefu.local", "password": "bench password 1"}))
        .send()
        .await?
        .json()
        .await?;
    let agent_token = login["token"].as_str().context("an agent token")?;
    let mut agent = Client::connect(ClientConfig::agent(&server.quic, agent_token).pin(&server.fingerprint));
    let setup_deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    loop {
        match tokio::time::timeout_at(setup_deadline, agent.next_event()).await {
            Ok(Some(Event::Connected(_))) => break,
            Ok(Some(_)) => {}
            Ok(None) => bail!("the agent's connection ended before it was welcomed"),
            Err(_) => bail!("the agent was not connected in time"),
        }
    }

    // Every visitor opens a conversation; the agent is assigned all of them.
    let tokens = visitor_tokens(&server, n_visitors).await?;
    let mut visitors = Vec::new();
    let mut conversations = Vec::new();
    for token in &tokens {
        let visitor =
            Client::connect(ClientConfig::visitor(&server.quic, &server.site, token).pin(&server.fingerprint));
        let ack = visitor.send(None, "hello").await?;
        conversations.push(ack.conversation_id);
        visitors.push(visitor);
    }
    let mut assigned = 0;
    let setup_deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    while assigned < n_visitors {
        match tokio::time::timeout_at(setup_deadline, agent.next_event()).await {
            Ok(Some(Event::Frame(frame))) if frame["type"] == "conversation" && frame["event"] == "assigned" => {
                assigned += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the agent's connection ended while conversations were assigned"),
            Err(_) => bail!("{assigned} of {n_visitors} conversations were assigned in time"),
        }
    }

    let base = Instant::now();
    let per_visitor_interval = Duration::from_secs_f64(n_visitors as f64 / rate as f64);
    let total = rate * seconds;
    let per_visitor = total / n_visitors as u64;
    let mut senders = tokio::task::JoinSet::new();
    for (visitor, conversation_id) in visitors.into_iter().zip(conversations) {
        senders.spawn(async move {
            let mut ticker = tokio::time::interval(per_visitor_interval);
            for n in 0..per_visitor {
                ticker.tick().await;
                let sent_at = base.elapsed().as_nanos();
                if visitor
                    .send_with_id(&format!("{conversation_id}-{n}"), Some(conversation_id), &format!("t={sent_at}"))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            visitor
        });
    }
    let expected = per_visitor * n_visitors as u64;
    let mut latencies = Vec::with_capacity(expected as usize);
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds * 3 + 30);
    while (latencies.len() as u64) < expected {
        let event = tokio::time::timeout_at(deadline, agent.next_event()).await;
        let Ok(Some(event)) = event else { break };
        if let Event::Frame(frame) = event {
            if frame["type"] != "message" {
                continue;
            }
            let Some(sent_at) =
                frame["text"].as_str().and_then(|text| text.strip_prefix("t=")).and_then(|n| n.parse::<u128>().ok())
            else {
                continue;
            };
            *seen.entry(frame["conversation_id"].as_u64().unwrap_or_default()).or_default() += 1;
            let now = base.elapsed().as_nanos();
            latencies.push(Duration::from_nanos(now.saturating_sub(sent_at) as u64));
        }
    }
    let elapsed = base.elapsed().as_secs_f64();
    while senders.join_next().await.is_some() {}
    latencies.sort();
    println!(
        "  messages received by the agent: {} of {expected} in {elapsed:.1}s ({:.0}/s)",
        latencies.len(),
        latencies.len() as f64 / elapsed
    );
    for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        println!("  latency {name}: {:.2} ms", percentile(&latencies, p).as_secs_f64() * 1000.0);
    }
    Ok(())
}
