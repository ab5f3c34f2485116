//! `kefu bench`: a load generator that drives a kefu (or a baseline relay) over the real
//! protocol and prints its inputs and results. One module per mode; see BENCHMARKS.md for
//! figures and bench/README.md for the baselines.
//!
//! The crate knows kefu only from outside, through the wire vocabulary (kefu-wire), the Rust
//! client (kefu-client) and the HTTP API; it runs inside the `kefu` binary, which it starts again
//! as the server under test and as its worker processes. `kefu bench storage` measures the
//! server's internals and so stays in the kefu crate (`src/cli/storage_bench.rs`).
//!
//! The coordinator (this process) starts the server under test, holds the agents, and spreads
//! visitors over worker processes ([`worker`]) bound to several 127.0.0.x source addresses.

pub mod agents;
pub mod client;
pub mod connections;
pub mod host_stalls;
pub mod ingest;
pub mod quic;
pub mod relay;
pub mod soak;
pub mod target;
pub mod worker;

use clap::{Args, Subcommand};

/// `kefu bench MODE ...`
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// N idle visitor WebSocket connections: server memory and fds per connection, connect rate.
    Connections(connections::ConnectionsArgs),
    /// Visitors and agents exchanging paced messages: latency both ways, CPU, memory.
    Relay(relay::RelayArgs),
    /// The highest durable (acknowledged-after-commit) message rate, with pipelined senders.
    Ingest(ingest::IngestArgs),
    /// Mixed traffic with restarts for a duration; checks every message was delivered once.
    Soak(soak::SoakArgs),
    /// QUIC visitor connections held, or visitor → agent latency over QUIC, against a kefu child.
    #[command(subcommand)]
    Quic(quic::QuicCommand),
    /// A visitor fleet for the coordinator (internal).
    #[command(hide = true)]
    Worker {
        /// The worker's spec, as JSON.
        spec: String,
    },
}

/// Which server the bench drives.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// A running server, such as http://127.0.0.1:8080 (default: start a kefu child on a
    /// temporary data directory).
    #[arg(long, conflicts_with = "target_cmd")]
    pub url: Option<String>,
    /// The running server's process id, for memory and CPU figures with --url.
    #[arg(long, requires = "url")]
    pub server_pid: Option<u32>,
    /// The site key visitors use with --url.
    #[arg(long, requires = "url")]
    pub site: Option<String>,
    /// An agent of that site as EMAIL:PASSWORD, with --url (repeatable).
    #[arg(long, requires = "url")]
    pub agent: Vec<String>,
    /// Start this baseline relay instead of kefu (`{port}` or $PORT gives its port); it must
    /// speak the bare protocol of bench/README.md.
    #[arg(long)]
    pub target_cmd: Option<String>,
    /// The --url server speaks the bare protocol (no HTTP API, any token).
    #[arg(long)]
    pub bare: bool,
    /// NAME=VALUE for the kefu child's environment, such as KEFU_STORAGE__COMMIT_MAX_BATCH=1024
    /// (repeatable).
    #[arg(long)]
    pub server_env: Vec<String>,
    /// Keep the kefu child's temporary data directory.
    #[arg(long)]
    pub keep_data: bool,
}

/// How the load generator spreads its visitors.
#[derive(Args, Debug, Clone)]
pub struct FleetArgs {
    /// Worker processes at least (more when visitors exceed 15,000 per process).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// 127.0.0.x source addresses to bind visitor sockets to (one per worker at most).
    #[arg(long, default_value_t = 4)]
    pub source_ips: usize,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Connections(args) => connections::run(args).await,
        BenchCommand::Relay(args) => relay::run(args).await,
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Soak(args) => soak::run(args).await,
        BenchCommand::Quic(command) => quic::run(command).await,
        BenchCommand::Worker { spec } => worker::run(&spec).await,
    }
}

/// Prints the machine the bench runs on.
pub fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cores} cores, {cpu}; load average {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}

/// Kibibytes as a short human figure.
pub fn kib(value: u64) -> String {
    if value >= 10 * 1024 { format!("{:.1} MiB", value as f64 / 1024.0) } else { format!("{value} KiB") }
}
