//! Benchmark: the durable message rate of the storage path alone, without sockets.
//!
//! Visitors keep a window of sends in flight through `Store::write` and `messages::append`, the
//! writer operation a WebSocket or QUIC send becomes; each send is answered after its batch's
//! commit-log record is synced, as a client's acknowledgement is. Nothing else runs: no frames are
//! decoded or encoded and no events are delivered, so the rate is what the writer (the one thread
//! every durable write passes through) sustains. `kefu bench ingest` measures the whole server.
//!
//! Run: `cargo bench --bench durable_ingest` (release profile). Inputs from the environment:
//! `VISITORS` (2,000), `WINDOW` (8 sends in flight per visitor), `SECONDS` (10), `DATA_DIR` (a
//! new temporary directory; a run on a directory an earlier run filled needs a new
//! `FIRST_VISITOR`, 1,000 by default, or its sends are answered as resends), `CHECKPOINT_LOG_MIB`
//! `CACHE_MIB` and `VISIBILITY_INTERVAL_US` (the defaults of `storage.checkpoint_log_mib`,
//! `storage.cache_mib` and `storage.visibility_interval_us`). Prints its inputs and results.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kefu::base::config::StorageConfig;
use kefu::chat::messages::{self, AppendError, NewMessage, Target};
use kefu::protocol::{SenderKind, SenderView};
use kefu::sites::{self, NewSite};
use kefu::storage::Store;

fn input(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// One visitor's sends, one after another; `window` of these run per visitor.
async fn send_until(store: Store, site: String, visitor_id: u64, lane: u64, deadline: Instant, acks: Arc<Acks>) {
    let mut sent = 0u64;
    while Instant::now() < deadline {
        sent += 1;
        let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "visitor".into() };
        let text = format!("hello, I have a question about my order {visitor_id}-{sent}");
        let target = Target::VisitorInbox { site: site.clone(), visitor_id };
        let new_message =
            NewMessage { trace_id: sent, ..NewMessage::text(target, sender, format!("{lane}-{sent}"), text) };
        let started = Instant::now();
        let appended: Result<_, AppendError> = store.write(move |context| messages::append(context, new_message)).await;
        appended.expect("the append is stored");
        acks.record(started.elapsed());
    }
}

/// Acknowledgements per second, and a latency sample of every one.
struct Acks {
    started: Instant,
    per_second: Vec<AtomicU64>,
    latencies_us: parking_lot::Mutex<Vec<u32>>,
}

impl Acks {
    fn record(&self, latency: Duration) {
        let second = self.started.elapsed().as_secs() as usize;
        if let Some(count) = self.per_second.get(second) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.latencies_us.lock().push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
    }
}

fn percentile(sorted: &[u32], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1);
    f64::from(sorted[index]) / 1000.0
}

fn main() -> anyhow::Result<()> {
    let visitors = input("VISITORS", 2_000);
    let window = input("WINDOW", 8).max(1);
    let seconds = input("SECONDS", 10).max(2);
    let first_visitor = input("FIRST_VISITOR", 1_000);
    let temporary = tempfile::tempdir()?;
    let data_dir = std::env::var_os("DATA_DIR").map(std::path::PathBuf::from).unwrap_or(temporary.path().to_owned());
    let defaults = StorageConfig::default();
    let config = StorageConfig {
        checkpoint_log_mib: input("CHECKPOINT_LOG_MIB", defaults.checkpoint_log_mib),
        cache_mib: input("CACHE_MIB", defaults.cache_mib as u64) as usize,
        visibility_interval_us: input("VISIBILITY_INTERVAL_US", defaults.visibility_interval_us),
        ..defaults
    };
    println!("mode: durable ingest through the storage path (no sockets)");
    println!(
        "inputs: visitors={visitors} window={window} seconds={seconds} data_dir={} commit_log={} \
         checkpoint_log_mib={} cache_mib={} visibility_interval_us={}",
        data_dir.display(),
        config.commit_log,
        config.checkpoint_log_mib,
        config.cache_mib,
        config.visibility_interval_us
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let store = Store::open(&data_dir, &config, kefu::server::writer_hooks(None))?;
        let site = sites::create(&store, NewSite { name: "bench".into(), ..NewSite::default() }).await?.key;
        let acks = Arc::new(Acks {
            started: Instant::now(),
            per_second: (0..seconds + 1).map(|_| AtomicU64::new(0)).collect(),
            latencies_us: parking_lot::Mutex::new(Vec::with_capacity(4_000_000)),
        });
        let deadline = acks.started + Duration::from_secs(seconds);
        let mut lanes = Vec::new();
        for visitor in 0..visitors {
            for lane in 0..window {
                let acks = acks.clone();
                let task = send_until(
                    store.clone(),
                    site.clone(),
                    first_visitor + visitor,
                    visitor * window + lane,
                    deadline,
                    acks,
                );
                lanes.push(tokio::spawn(task));
            }
        }
        for lane in lanes {
            lane.await?;
        }
        let per_second: Vec<u64> = acks.per_second.iter().map(|count| count.load(Ordering::Relaxed)).collect();
        // The first second is the ramp-up, the last partial one the wind-down.
        let steady = &per_second[1..seconds as usize];
        let steady_rate = steady.iter().sum::<u64>() as f64 / steady.len() as f64;
        let mut latencies = std::mem::take(&mut *acks.latencies_us.lock());
        latencies.sort_unstable();
        println!(
            "durable ingest: {steady_rate:.0} acks/s steady (mean over seconds 2..{seconds}), best second {}, {} acked",
            steady.iter().max().copied().unwrap_or(0),
            latencies.len()
        );
        println!("acks per second: {per_second:?}");
        println!(
            "ack latency: p50={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
            percentile(&latencies, 1.0)
        );
        store.shutdown().await;
        anyhow::Ok(())
    })
}
