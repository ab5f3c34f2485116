//! `kefu bench relay`: N connected visitors and a set of online agents; visitors send timed
//! messages paced to an aggregate rate, agents answer some of them. Reports delivery latency
//! both ways, acknowledgement latency, the achieved rate, errors, and the server's CPU and
//! memory. Several `--rates` run one after another on the same connections, to find the
//! highest rate under a latency bound.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tokio::sync::watch;

use super::client::Summary;
use super::host_stalls::StallProbe;
use super::target::Target;
use super::worker::Fleet;
use super::{FleetArgs, TargetArgs, agents};

/// How long the bench waits for the server to assign every visitor's conversation.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Args, Debug)]
pub struct RelayArgs {
    /// Connected visitors.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub visitors: usize,
    /// Online agents.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Aggregate visitor message rates per second, one step each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub rates: Vec<f64>,
    /// Seconds per step.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Agents answer one visitor message in this many (0: never).
    #[arg(long, default_value_t = 10)]
    pub reply_every: u64,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    super::print_machine();
    let target = Target::open(&args.target, args.agents, args.visitors + args.agents).await?;
    println!("mode: relay; target: {}", target.description);
    println!(
        "inputs: visitors={} agents={} rates={:?}/s duration={}s per rate, agents answer 1 in {}",
        args.visitors,
        target.agents.len(),
        args.rates,
        args.duration,
        args.reply_every
    );
    if target.agents.is_empty() {
        bail!("relay needs agents (--agent EMAIL:PASSWORD with --url)");
    }
    let (stop, stop_watch) = watch::channel(false);
    let (stats, tasks) = agents::start(&target.endpoint, &target.agents, args.reply_every, stop_watch).await?;
    let mut fleet =
        Fleet::start(&target.endpoint, &target.site, args.visitors, args.fleet.workers, args.fleet.source_ips, true, 0)
            .await?;
    println!("load generator: {} client processes, {} source addresses", fleet.processes(), fleet.source_ips);
    println!("connected: {} ok, {} failed in {:.2}s", fleet.connected, fleet.failed, fleet.connect_seconds);
    if let Some(failure) = &fleet.first_failure {
        println!("first connect failure: {failure}");
    }
    let waiting = Instant::now();
    while stats.assigned.load(Ordering::Relaxed) < fleet.connected {
        if waiting.elapsed() > ASSIGN_TIMEOUT {
            bail!(
                "only {} of {} conversations were assigned to the bench's agents",
                stats.assigned.load(Ordering::Relaxed),
                fleet.connected
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("all {} conversations assigned to the agents", fleet.connected);

    for &rate in &args.rates {
        let before = target.sample();
        stats.measuring.store(true, Ordering::Relaxed);
        let received_before = stats.received.load(Ordering::Relaxed);
        let probe = StallProbe::start()?;
        let mut report = fleet.step(rate, args.duration).await?;
        let stalls = probe.finish();
        stats.measuring.store(false, Ordering::Relaxed);
        let after = target.sample();
        let (v2a_timed, mut agent_ack) = stats.take();
        let mut v2a: Vec<u32> = v2a_timed.iter().map(|&(_, latency)| latency).collect();
        let mut v2a_clear: Vec<u32> = v2a_timed
            .iter()
            .filter(|&&(sent, latency)| !stalls.overlaps(sent, sent + latency as u64))
            .map(|&(_, latency)| latency)
            .collect();
        let received = stats.received.load(Ordering::Relaxed) - received_before;
        println!("--- rate {rate}/s for {}s", args.duration);
        println!(
            "achieved: {:.0} msg/s acked, {} sent, {} acked, {} received by agents, {} visitor errors",
            report.acked as f64 / args.duration,
            report.sent,
            report.acked,
            received,
            report.errors
        );
        if let Some(error) = &report.first_error {
            println!("first visitor error: {error}");
        }
        println!("visitor → agent: {}", Summary::of(&mut v2a));
        println!(
            "  {} of them ({:.1}%) in flight during a host stall; the others: {}",
            v2a.len() - v2a_clear.len(),
            100.0 * (v2a.len() - v2a_clear.len()) as f64 / v2a.len().max(1) as f64,
            Summary::of(&mut v2a_clear)
        );
        println!("agent → visitor: {}", Summary::of(&mut report.a2v_us));
        println!("visitor ack:     {}", Summary::of(&mut report.ack_us));
        println!("agent ack:       {}", Summary::of(&mut agent_ack));
        println!("host stalls: {stalls}");
        if let (Some(before), Some(after)) = (before, after) {
            println!(
                "server: CPU {:.0}% of one core, VmRSS {} → {}, fds {}",
                after.cpu_percent_since(&before),
                super::kib(before.rss_kib),
                super::kib(after.rss_kib),
                after.fds
            );
        }
    }
    let errors = stats.errors.load(Ordering::Relaxed);
    println!("agent errors: {errors}");
    if let Some(error) = stats.first_error.lock().clone() {
        println!("first agent error: {error}");
    }
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    fleet.stop().await?;
    target.finish().await
}
