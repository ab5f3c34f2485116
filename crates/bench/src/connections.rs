//! `kefu bench connections`: N idle visitor WebSockets; the server's memory and file
//! descriptors per connection, and the connect rate.

use std::time::Duration;

use clap::Args;

use super::target::Target;
use super::worker::Fleet;
use super::{FleetArgs, TargetArgs};

#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    /// Idle visitor connections to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub visitors: usize,
    /// Seconds to hold the connections before measuring again.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

pub async fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    super::print_machine();
    let target = Target::open(&args.target, 0, args.visitors).await?;
    println!("mode: connections; target: {}", target.description);
    println!("inputs: visitors={} hold={}s", args.visitors, args.hold);
    let before = target.sample();
    let fleet = Fleet::start(
        &target.endpoint,
        &target.site,
        args.visitors,
        args.fleet.workers,
        args.fleet.source_ips,
        false,
        0,
    )
    .await?;
    let connected_at = target.sample();
    println!("load generator: {} client processes, {} source addresses", fleet.processes(), fleet.source_ips);
    println!(
        "connected: {} ok, {} failed in {:.2}s ({:.0} connections/s, each a visitor session over HTTP and a WebSocket with hello)",
        fleet.connected,
        fleet.failed,
        fleet.connect_seconds,
        fleet.connected as f64 / fleet.connect_seconds.max(1e-9)
    );
    if let Some(failure) = &fleet.first_failure {
        println!("first connect failure: {failure}");
    }
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let held = target.sample();
    match (before, connected_at, held) {
        (Some(before), Some(connected_at), Some(held)) => {
            let n = fleet.connected.max(1) as f64;
            println!(
                "server memory: VmRSS {} before, {} connected, {} after holding {}s",
                super::kib(before.rss_kib),
                super::kib(connected_at.rss_kib),
                super::kib(held.rss_kib),
                args.hold
            );
            println!(
                "server memory per connection: {:.2} KiB (after holding: {:.2} KiB)",
                connected_at.rss_kib.saturating_sub(before.rss_kib) as f64 / n,
                held.rss_kib.saturating_sub(before.rss_kib) as f64 / n
            );
            println!(
                "server file descriptors: {} before, {} with the connections ({:.2} per connection)",
                before.fds,
                held.fds,
                held.fds.saturating_sub(before.fds) as f64 / n
            );
        }
        _ => println!("server memory: unknown (no server process id; pass --server-pid with --url)"),
    }
    fleet.stop().await?;
    target.finish().await
}
