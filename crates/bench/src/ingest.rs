//! `kefu bench ingest`: the highest durable message rate. Many visitors keep a window of
//! unacknowledged messages in flight; an ack comes only after the commit, so acks per second
//! is the durable rate.

use clap::Args;

use super::client::Summary;
use super::target::Target;
use super::worker::Fleet;
use super::{FleetArgs, TargetArgs};

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Sending visitors.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub visitors: usize,
    /// Unacknowledged messages each visitor keeps in flight (at most; it sends again, up to this
    /// many, once half of them are acknowledged).
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Seconds to send.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    super::print_machine();
    let target = Target::open(&args.target, 0, args.visitors).await?;
    println!("mode: ingest; target: {}", target.description);
    println!("inputs: visitors={} window={} duration={}s", args.visitors, args.window, args.duration);
    let mut fleet = Fleet::start(
        &target.endpoint,
        &target.site,
        args.visitors,
        args.fleet.workers,
        args.fleet.source_ips,
        true,
        args.window.max(1),
    )
    .await?;
    println!("load generator: {} client processes, {} source addresses", fleet.processes(), fleet.source_ips);
    println!("connected: {} ok, {} failed in {:.2}s", fleet.connected, fleet.failed, fleet.connect_seconds);
    let before = target.sample();
    let mut report = fleet.step(0.0, args.duration).await?;
    let after = target.sample();
    let whole: Vec<u64> = report.acks_per_second.clone();
    let acked_in_window: u64 = whole.iter().sum();
    let best = whole.iter().copied().max().unwrap_or(0);
    // The steady rate: the seconds after the first (ramp-up).
    let steady: Vec<u64> = whole.iter().skip(1).copied().collect();
    let steady_rate = if steady.is_empty() { 0.0 } else { steady.iter().sum::<u64>() as f64 / steady.len() as f64 };
    println!(
        "durable ingest: {:.0} acks/s steady (mean over seconds 2..{}), best second {best}, {acked_in_window} acked in {}s",
        steady_rate,
        whole.len(),
        args.duration
    );
    println!("acks per second: {whole:?}");
    println!("sent {}, acked {}, errors {}", report.sent, report.acked, report.errors);
    if let Some(error) = &report.first_error {
        println!("first error: {error}");
    }
    println!("ack latency: {}", Summary::of(&mut report.ack_us));
    if let (Some(before), Some(after)) = (before, after) {
        println!(
            "server: CPU {:.0}% of one core, VmRSS {} → {}",
            after.cpu_percent_since(&before),
            super::kib(before.rss_kib),
            super::kib(after.rss_kib)
        );
    }
    fleet.stop().await?;
    target.finish().await
}
