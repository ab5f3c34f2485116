//! `kefu bench storage`: fills a data directory with messages through the real writer path, then
//! measures a history page, a search, an export, a full index build and a report. It prints its inputs
//! and results; BENCHMARKS.md records them. It measures the server's internals (the writer, the
//! search index, the export), so it lives in the kefu crate beside the command line rather than in
//! the load generator (kefu-bench), which knows the server only from outside.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::base::config::StorageConfig;
use crate::chat::messages::{self, NewMessage, Target};
use crate::history::export::{self, ExportFormat, ExportRequest};
use crate::history::reports::{self, ReportFilter};
use crate::protocol::{SenderKind, SenderView};
use crate::search::{Search, SearchRequest};
use crate::sites::{self, NewSite};
use crate::storage::{Store, read_meta};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The data directory to fill (reused if it already holds enough messages).
    #[arg(long)]
    pub dir: PathBuf,
    /// Messages to store.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Spread over this many past UTC days.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Messages per conversation (60, so a history page of 50 is full).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub per_conversation: u64,
    /// Timed samples of each read measurement.
    #[arg(long, default_value_t = 2_000)]
    pub samples: usize,
    /// Fills without keeping the daily report figures, then counts them once before the
    /// reports: the fill rate against a run without this flag is what keeping them costs.
    #[arg(long)]
    pub without_daily_figures: bool,
}

/// Messages appended per writer operation while filling.
const FILL_CHUNK: u64 = 2_000;

const WORDS: [&str; 24] = [
    "refund", "order", "shipping", "delivery", "invoice", "password", "account", "discount", "coupon", "broken",
    "exchange", "payment", "address", "tracking", "warranty", "please", "thanks", "hello", "when", "will", "help",
    "where", "my", "the",
];
const PHRASES: [&str; 12] = [
    "我要退款",
    "订单什么时候发货",
    "快递到哪里了",
    "发票怎么开",
    "密码忘记了",
    "优惠券不能用",
    "商品坏了",
    "换货流程",
    "支付失败",
    "修改地址",
    "保修期多久",
    "谢谢您的帮助",
];
const QUERIES: [&str; 12] = [
    "refund",
    "退款",
    "发货",
    "invoice",
    "tracking number",
    "快递",
    "password",
    "优惠券",
    "broken",
    "支付失败",
    "warranty",
    "地址",
];

fn text(rng: &mut StdRng) -> String {
    let mut text = String::new();
    for _ in 0..rng.random_range(3..10) {
        if rng.random_bool(0.3) {
            text.push_str(PHRASES[rng.random_range(0..PHRASES.len())]);
        } else {
            text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        }
        text.push(' ');
    }
    text.push_str(&rng.random_range(0..100_000u32).to_string());
    text
}

fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples.get(index).copied().unwrap_or_default()
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(0)
}

fn report(name: &str, samples: &mut [Duration]) {
    let p50 = percentile(samples, 0.50);
    let p99 = percentile(samples, 0.99);
    println!("{name}: samples={} p50={:.3}ms p99={:.3}ms", samples.len(), ms(p50), ms(p99));
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    println!(
        "inputs: dir={} messages={} days={} per_conversation={} samples={} daily_figures={}",
        args.dir.display(),
        args.messages,
        args.days,
        args.per_conversation,
        args.samples,
        if args.without_daily_figures { "counted after the fill" } else { "kept by the writer" }
    );
    let storage = StorageConfig::default();
    let dir = args.dir.clone();
    let hooks = if args.without_daily_figures {
        crate::server::writer_hooks_without_daily_figures(None)
    } else {
        crate::server::writer_hooks(None)
    };
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, &storage, hooks)).await??;
    crate::history::daily_figures::migrate(&store).await?;
    let stored = store.read(|transaction| read_meta(transaction, "next_lsn")).await?.unwrap_or(1) - 1;
    let site_key = match store.read(sites::list).await?.into_iter().next() {
        Some(site) => site.key,
        None => sites::create(&store, NewSite { name: "bench".into(), ..NewSite::default() }).await?.key,
    };
    if stored < args.messages {
        fill(&store, &site_key, stored, &args).await?;
        if args.without_daily_figures {
            let started = Instant::now();
            crate::history::daily_figures::recount(&store).await?;
            println!("daily figures counted after the fill: time={:.2}s", started.elapsed().as_secs_f64());
        }
    } else {
        println!("fill: reusing {stored} stored messages");
    }
    let n_conversations =
        store.read(|transaction| read_meta(transaction, "next_conversation_id")).await?.unwrap_or(1) - 1;

    // History pages.
    let mut rng = StdRng::seed_from_u64(7);
    let mut samples = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let conversation_id = rng.random_range(1..=n_conversations.max(1));
        let started = Instant::now();
        let page = store.read_blocking(|transaction| messages::page_before(transaction, conversation_id, None, 50))?;
        samples.push(started.elapsed());
        std::hint::black_box(page);
    }
    report("history page (50 messages, newest)", &mut samples);

    // Full index build: the indexer catches up from an empty index.
    let index_dir = args.dir.join(crate::search::INDEX_DIR);
    let _ = std::fs::remove_dir_all(&index_dir);
    let started = Instant::now();
    let search = {
        let (store, dir) = (store.clone(), args.dir.clone());
        tokio::task::spawn_blocking(move || Search::open(store, &dir)).await??
    };
    search.wait_caught_up().await?;
    println!(
        "full index build (from empty, {} messages): {:.1}s",
        search.indexed_lsn(),
        started.elapsed().as_secs_f64()
    );

    // Searches.
    for (name, site) in
        [("search (admin, all sites, 20 hits)", None), ("search (agent, one site, 20 hits)", Some(&site_key))]
    {
        let mut samples = Vec::with_capacity(args.samples);
        for index in 0..args.samples {
            let request = SearchRequest {
                query: QUERIES[index % QUERIES.len()].to_owned(),
                visible_sites: site.map(|site| vec![site.clone()]),
                limit: 20,
                ..SearchRequest::default()
            };
            let search = search.clone();
            let started = Instant::now();
            let page = tokio::task::spawn_blocking(move || search.search_blocking(&request)).await??;
            samples.push(started.elapsed());
            std::hint::black_box(page);
        }
        report(name, &mut samples);
    }

    // Export of everything, CSV, counting bytes; RSS sampled while it runs.
    for format in [ExportFormat::Csv, ExportFormat::Jsonl] {
        let rss_before = rss_kib("VmRSS:");
        let peak = Arc::new(AtomicU64::new(rss_before));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib("VmRSS:"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let request = ExportRequest {
            from_day: 0,
            to_day: u32::MAX,
            site: None,
            agent: None,
            visible_sites: None,
            format,
            bom: false,
        };
        let export_store = store.clone();
        let started = Instant::now();
        let (n_messages, n_bytes) = tokio::task::spawn_blocking(move || {
            let mut n_bytes = 0u64;
            let n_messages = export::run(&export_store, &request, &mut |bytes| {
                n_bytes += bytes.len() as u64;
                true
            })?;
            Ok::<_, anyhow::Error>((n_messages, n_bytes))
        })
        .await??;
        let elapsed = started.elapsed();
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        println!(
            "export {format:?}: messages={n_messages} bytes={n_bytes} time={:.2}s rate={:.0} msg/s rss_before={}MiB rss_peak={}MiB",
            elapsed.as_secs_f64(),
            n_messages as f64 / elapsed.as_secs_f64(),
            rss_before / 1024,
            peak.load(Ordering::Relaxed) / 1024,
        );
    }

    // A report of every filled day, counted from every conversation and message, then read from
    // the daily figures; both must agree.
    let today = crate::base::clock::day_of(crate::base::clock::now_millis());
    let filter = ReportFilter { from_day: today.saturating_sub(args.days), to_day: today, site: None, team: None };
    let n_days = filter.n_days();
    let mut reports = Vec::new();
    for (name, compute) in
        [("from raw data", reports::compute_from_raw as fn(&_, &_) -> _), ("from daily figures", reports::compute)]
    {
        let filter = filter.clone();
        let started = Instant::now();
        let report = store.read(move |transaction| compute(transaction, &filter)).await?;
        println!(
            "report ({n_days} days, all sites, {name}): conversations={} agent_messages={} time={:.3}s",
            report.totals.created,
            report.agents.iter().map(|agent| agent.messages).sum::<u64>(),
            started.elapsed().as_secs_f64()
        );
        reports.push(report);
    }
    anyhow::ensure!(reports[0] == reports[1], "the daily figures disagree with the raw data");
    // A year: at most 366 rows per site, team and agent.
    let year = ReportFilter { from_day: today.saturating_sub(365), ..filter };
    let started = Instant::now();
    store.read(move |transaction| reports::compute(transaction, &year)).await?;
    println!("report (366 days, all sites, from daily figures): time={:.3}s", started.elapsed().as_secs_f64());
    // Recounting everything, as the one-time backfill does.
    let started = Instant::now();
    crate::history::daily_figures::recount(&store).await?;
    println!("daily figures counted again from raw data: time={:.2}s", started.elapsed().as_secs_f64());
    search.shutdown().await;
    store.shutdown().await;
    Ok(())
}

async fn fill(store: &Store, site_key: &str, stored: u64, args: &BenchArgs) -> anyhow::Result<()> {
    let today = crate::base::clock::day_of(crate::base::clock::now_millis());
    let first_day = today.saturating_sub(args.days);
    let per_day = args.messages.div_ceil(u64::from(args.days.max(1)));
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(stored);
    let mut next = stored;
    while next < args.messages {
        let count = FILL_CHUNK.min(args.messages - next);
        let mut batch = Vec::with_capacity(count as usize);
        for index in next..next + count {
            batch.push((index, text(&mut rng)));
        }
        let site = site_key.to_owned();
        let per_conversation = args.per_conversation.max(1);
        store
            .write(move |context| {
                let mut conversation_id = 0;
                for (index, text) in batch {
                    let day = first_day + (index / per_day) as u32;
                    let at = i64::from(day) * crate::base::clock::MILLIS_PER_DAY + (index % per_day) as i64;
                    let position = index % per_conversation;
                    let visitor_id = 1_000_000 + index / per_conversation;
                    let (target, sender) = if position == 0 {
                        let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "visitor".into() };
                        (Target::VisitorInbox { site: site.clone(), visitor_id }, sender)
                    } else if position % 2 == 0 {
                        let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "visitor".into() };
                        (Target::Conversation(conversation_id), sender)
                    } else {
                        (
                            Target::Conversation(conversation_id),
                            SenderView { kind: SenderKind::Agent, id: 1, name: "agent".into() },
                        )
                    };
                    if position != 0 && conversation_id == 0 {
                        // A chunk starting mid-conversation: find it through the visitor's inbox.
                        let found = crate::chat::conversations::open_conversation_of(context, visitor_id)?;
                        conversation_id = found.unwrap_or_default();
                    }
                    let target = match target {
                        Target::Conversation(_) => Target::Conversation(conversation_id),
                        inbox => inbox,
                    };
                    let new_message =
                        NewMessage { trace_id: index, ..NewMessage::text(target, sender, format!("b{index}"), text) };
                    let appended = match messages::append_at(context, new_message, at)? {
                        Ok(appended) => appended,
                        Err(error) => return Ok(Err(anyhow::anyhow!("bench append failed: {error}"))),
                    };
                    conversation_id = appended.conversation_id;
                }
                Ok(Ok(()))
            })
            .await
            .context("filling")?;
        next += count;
        if next % 1_000_000 < FILL_CHUNK {
            println!("fill: {next} messages, {:.0} msg/s", (next - stored) as f64 / started.elapsed().as_secs_f64());
        }
    }
    println!(
        "fill: {} messages in {:.1}s ({:.0} msg/s)",
        next - stored,
        started.elapsed().as_secs_f64(),
        (next - stored) as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
