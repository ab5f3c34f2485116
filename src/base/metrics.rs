//! Prometheus metrics: process-wide atomics, rendered in the text exposition format on their own
//! listener (`metrics = "127.0.0.1:9090"` by default, `"off"` disables it).
//!
//! Every series is a fixed field of [`Metrics`], so recording is one relaxed atomic add: no lock,
//! no map lookup and no allocation on the message path. Histograms have fixed buckets and store
//! per-bucket counts, made cumulative only when rendered. The registry is one `static`, because
//! the writer thread and the dispatcher record into it without holding the server's state, and
//! one process serves one database. Series that other parts of kefu will feed later (index lag,
//! bot and LLM calls, QUIC connections) are registered now at zero, so dashboards can be built
//! against stable names.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The process's metrics.
pub static METRICS: Metrics = Metrics::new();

/// Upper bounds of the latency buckets, in microseconds (0.1 ms to 5 s).
const LATENCY_BOUNDS_US: &[u64] =
    &[100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000];

/// Upper bounds of the batch-size buckets, in operations.
const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// The most buckets a histogram has, including `+Inf`.
const MAX_BUCKETS: usize = 16;

/// How a connection reaches kefu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Quic,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::WebSocket, Transport::Quic];

    fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Quic => "quic",
        }
    }
}

/// Who holds a connection, as the connection gauges label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Visitor,
    Agent,
}

const ROLES: [Peer; 2] = [Peer::Visitor, Peer::Agent];

fn role_label(role: Peer) -> &'static str {
    match role {
        Peer::Visitor => "visitor",
        Peer::Agent => "agent",
    }
}

fn role_index(role: Peer) -> usize {
    match role {
        Peer::Visitor => 0,
        Peer::Agent => 1,
    }
}

/// A counter that only goes up.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
pub struct Gauge(AtomicI64);

impl Gauge {
    const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed integer bucket bounds, rendered divided by `divisor` (microseconds
/// become seconds).
pub struct Histogram {
    bounds: &'static [u64],
    divisor: f64,
    /// Observations per bucket (not cumulative); the last used slot is `+Inf`.
    buckets: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    const fn new(bounds: &'static [u64], divisor: f64) -> Histogram {
        assert!(bounds.len() < MAX_BUCKETS);
        Histogram {
            bounds,
            divisor,
            buckets: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a duration in microseconds (for the latency histograms).
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (index, bound) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[index].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / self.divisor);
        }
        cumulative += self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Ordering::Relaxed) as f64 / self.divisor);
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

/// Every series kefu exports.
pub struct Metrics {
    /// Open connections, by transport and role.
    connections: [[Gauge; 2]; 2],
    /// Messages durably stored and dispatched (`rate()` of it is messages per second).
    pub messages: Counter,
    /// From a message's commit batch starting to its frames being queued for every recipient.
    pub delivery_latency: Histogram,
    /// From a write operation entering the writer's queue to its commit being durable; a send's
    /// acknowledgement is queued right after.
    pub ack_latency: Histogram,
    /// Operations per group commit.
    pub commit_batch_size: Histogram,
    /// Time to run and make durable one batch.
    pub commit_duration: Histogram,
    /// Batches aborted by a storage error.
    pub commits_aborted: Counter,
    /// Checkpoints: durable database commits that emptied the commit log.
    pub checkpoints: Counter,
    /// Committed batches waiting for the dispatcher, as last seen by the writer.
    pub dispatch_queue: Gauge,
    /// Entries the search index has not indexed yet (fed by the search index).
    pub index_lag: Gauge,
    /// Bot answers from the knowledge base (fed by the bot).
    pub bot_answers: Counter,
    /// Requests to the LLM endpoint (fed by the bot).
    pub llm_requests: Counter,
    /// Failed requests to the LLM endpoint (fed by the bot).
    pub llm_errors: Counter,
    /// Spans sent to the OpenTelemetry collector (`telemetry.otlp_endpoint`).
    pub trace_spans_exported: Counter,
    /// Spans dropped because the export queue was full (the collector is slow or away).
    pub trace_spans_dropped_queue_full: Counter,
    /// Spans dropped because the collector did not take them (unreachable, or it refused).
    pub trace_spans_dropped_export_failed: Counter,
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            connections: [[Gauge::new(), Gauge::new()], [Gauge::new(), Gauge::new()]],
            messages: Counter::new(),
            delivery_latency: Histogram::new(LATENCY_BOUNDS_US, 1e6),
            ack_latency: Histogram::new(LATENCY_BOUNDS_US, 1e6),
            commit_batch_size: Histogram::new(BATCH_BOUNDS, 1.0),
            commit_duration: Histogram::new(LATENCY_BOUNDS_US, 1e6),
            commits_aborted: Counter::new(),
            checkpoints: Counter::new(),
            dispatch_queue: Gauge::new(),
            index_lag: Gauge::new(),
            bot_answers: Counter::new(),
            llm_requests: Counter::new(),
            llm_errors: Counter::new(),
            trace_spans_exported: Counter::new(),
            trace_spans_dropped_queue_full: Counter::new(),
            trace_spans_dropped_export_failed: Counter::new(),
        }
    }

    fn connection_gauge(&self, transport: Transport, role: Peer) -> &Gauge {
        let transport_index = match transport {
            Transport::WebSocket => 0,
            Transport::Quic => 1,
        };
        &self.connections[transport_index][role_index(role)]
    }

    /// Counts an open connection until the returned guard is dropped.
    pub fn connection_opened(&'static self, transport: Transport, role: Peer) -> ConnectionGuard {
        let gauge = self.connection_gauge(transport, role);
        gauge.add(1);
        ConnectionGuard { gauge }
    }

    /// The text exposition of every series; `live` holds the values read at scrape time.
    pub fn render(&self, live: &LiveValues) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str("# HELP kefu_connections Open client connections.\n# TYPE kefu_connections gauge\n");
        for transport in Transport::ALL {
            for role in ROLES {
                let _ = writeln!(
                    out,
                    "kefu_connections{{transport=\"{}\",role=\"{}\"}} {}",
                    transport.label(),
                    role_label(role),
                    self.connection_gauge(transport, role).get()
                );
            }
        }
        counter(&mut out, "kefu_messages_total", "Messages durably stored and dispatched.", self.messages.get());
        self.delivery_latency.render(
            &mut out,
            "kefu_delivery_latency_seconds",
            "From a message's commit batch starting to its frames being queued for every recipient.",
        );
        self.ack_latency.render(
            &mut out,
            "kefu_ack_latency_seconds",
            "From a write entering the writer queue to its durable commit (acknowledgement follows).",
        );
        self.commit_batch_size.render(&mut out, "kefu_commit_batch_size", "Write operations per group commit.");
        self.commit_duration.render(
            &mut out,
            "kefu_commit_duration_seconds",
            "Time to run and make durable one group-commit batch.",
        );
        counter(
            &mut out,
            "kefu_commits_aborted_total",
            "Group-commit batches aborted by a storage error.",
            self.commits_aborted.get(),
        );
        counter(
            &mut out,
            "kefu_checkpoints_total",
            "Durable database commits that emptied the commit log.",
            self.checkpoints.get(),
        );
        out.push_str("# HELP kefu_queue_length Items waiting in a bounded queue.\n# TYPE kefu_queue_length gauge\n");
        let _ = writeln!(out, "kefu_queue_length{{queue=\"writer\"}} {}", live.writer_queue);
        let _ = writeln!(out, "kefu_queue_length{{queue=\"dispatch\"}} {}", self.dispatch_queue.get());
        let _ = writeln!(out, "kefu_queue_length{{queue=\"outbound\"}} {}", live.outbound_queued);
        gauge(
            &mut out,
            "kefu_index_lag_messages",
            "Stored messages the search index has not indexed yet.",
            self.index_lag.get(),
        );
        counter(&mut out, "kefu_bot_answers_total", "Bot answers from the knowledge base.", self.bot_answers.get());
        counter(&mut out, "kefu_llm_requests_total", "Requests to the LLM endpoint.", self.llm_requests.get());
        counter(&mut out, "kefu_llm_errors_total", "Failed requests to the LLM endpoint.", self.llm_errors.get());
        counter(
            &mut out,
            "kefu_trace_spans_exported_total",
            "Spans sent to the OpenTelemetry collector.",
            self.trace_spans_exported.get(),
        );
        out.push_str(
            "# HELP kefu_trace_spans_dropped_total Spans not exported: the queue was full or the collector failed.\n\
             # TYPE kefu_trace_spans_dropped_total counter\n",
        );
        let _ = writeln!(
            out,
            "kefu_trace_spans_dropped_total{{reason=\"queue_full\"}} {}",
            self.trace_spans_dropped_queue_full.get()
        );
        let _ = writeln!(
            out,
            "kefu_trace_spans_dropped_total{{reason=\"export_failed\"}} {}",
            self.trace_spans_dropped_export_failed.get()
        );
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// Decrements its connection gauge when dropped.
pub struct ConnectionGuard {
    gauge: &'static Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.add(-1);
    }
}

/// Values computed when scraped rather than recorded as they change.
#[derive(Default)]
pub struct LiveValues {
    pub writer_queue: usize,
    pub outbound_queued: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_in_seconds() {
        let histogram = Histogram::new(LATENCY_BOUNDS_US, 1e6);
        histogram.observe(50);
        histogram.observe(1_500);
        histogram.observe(10_000_000);
        let mut out = String::new();
        histogram.render(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.002\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
    }
}
