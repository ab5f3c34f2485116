//! Traces exported to an OpenTelemetry collector over OTLP/HTTP (`telemetry.otlp_endpoint`).
//!
//! kefu's `tracing` spans become OpenTelemetry spans (tracing-opentelemetry). A message's trace is
//! named by the `trace_id` it already carries through the logs: its OpenTelemetry trace id is that
//! number (zero-padded to 128 bits, so `trace_id=5` in a log is trace `000…005`), and its root span
//! (`message`) has the same number as its span id. So a stage that runs later, on another thread
//! or after a restart (persistence in the writer, delivery in the dispatcher, the bot, a webhook
//! from the outbox), joins the trace knowing nothing but the `trace_id` field of its span: see
//! [`MessageTracer`]. Sampling is decided from the trace id alone, so every stage of a message
//! agrees without being told.
//!
//! Export never costs the message path a wait: a span that ends is offered to a bounded queue
//! (`try_send`) and dropped when it is full; one thread of its own posts batches to the collector
//! and counts what it exported and what it dropped in `/metrics`. With no endpoint configured
//! none of this is installed, and the message path's spans (level `debug`) are disabled callsites.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use opentelemetry::trace::{
    Link, SpanBuilder, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample,
    SpanData, SpanExporter, SpanProcessor,
};

use crate::base::config::TelemetryConfig;
use crate::base::metrics::METRICS;

/// Spans waiting for export. About two seconds of a busy server's messages (seven spans each);
/// past it spans are dropped and counted, so an unreachable collector never holds memory or time.
pub const QUEUE_CAPACITY: usize = 4096;

/// The most spans one export request carries.
const MAX_BATCH: usize = 512;

/// How long spans wait for a fuller batch before they are sent anyway.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);

/// The longest one export request may take; the queue fills (and drops) meanwhile.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of a message's root span; see [`message_span`].
pub const MESSAGE_SPAN: &str = "message";

/// The span field that names the message a span belongs to.
const TRACE_ID_FIELD: &str = "trace_id";

/// Whether spans are exported (set once, when the exporting layer is installed).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A message's root span: every stage of the message is its child. Level `debug`, like the
/// stages, so it costs nothing when traces are not exported (and logging is at `info`).
pub fn message_span(trace_id: u64) -> tracing::Span {
    tracing::debug_span!("message", trace_id)
}

/// The OpenTelemetry trace id of the message with `trace_id`.
pub fn message_trace_id(trace_id: u64) -> TraceId {
    TraceId::from(u128::from(trace_id))
}

/// The span id of the root span of the message with `trace_id`.
fn message_root_span_id(trace_id: u64) -> SpanId {
    SpanId::from_bytes(trace_id.to_be_bytes())
}

/// Whether a trace is sampled at `ratio`: from the low 63 bits of its id (message trace ids have
/// 63 random bits), so every stage of a message decides the same way.
fn sampled(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let low = (u128::from_be_bytes(trace_id.to_bytes()) as u64) & (u64::MAX >> 1);
    (low as f64) < ratio * (1u64 << 63) as f64
}

/// Samples a trace at the configured ratio from its id, or follows the parent's decision (a
/// caller's `traceparent`, or the message's root).
#[derive(Clone, Debug)]
struct RatioSampler {
    ratio: f64,
}

impl ShouldSample for RatioSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context.map(|context| context.span().span_context().clone()).filter(SpanContext::is_valid);
        let (keep, trace_state) = match parent {
            Some(parent) => (parent.is_sampled(), parent.trace_state().clone()),
            None => (sampled(self.ratio, trace_id), TraceState::default()),
        };
        let decision = if keep { SamplingDecision::RecordAndSample } else { SamplingDecision::Drop };
        SamplingResult { decision, attributes: Vec::new(), trace_state }
    }
}

thread_local! {
    /// The ids the next span built on this thread gets, set by [`MessageTracer`] just before it
    /// asks the SDK (which takes ids only from its generator) to build a message's root span.
    static CHOSEN_IDS: Cell<(Option<TraceId>, Option<SpanId>)> = const { Cell::new((None, None)) };
}

/// Random ids, except where [`MessageTracer`] chose them.
#[derive(Debug, Default)]
struct ChosenOrRandomIds {
    random: RandomIdGenerator,
}

impl IdGenerator for ChosenOrRandomIds {
    fn new_trace_id(&self) -> TraceId {
        let (trace_id, span_id) = CHOSEN_IDS.get();
        CHOSEN_IDS.set((None, span_id));
        trace_id.unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        let (trace_id, span_id) = CHOSEN_IDS.get();
        CHOSEN_IDS.set((trace_id, None));
        span_id.unwrap_or_else(|| self.random.new_span_id())
    }
}

/// The tracer behind tracing-opentelemetry: the SDK's, with the message rules.
///
/// - A `message` span with a `trace_id` field is the message's root: trace id and span id from
///   `trace_id`. Started inside another span (a REST or gRPC call), it links to that span instead
///   of joining the caller's trace, so the trace id stays the message's.
/// - Any other span with a `trace_id` field and no parent in this thread (a stage running on the
///   writer thread, in the dispatcher, the bot or the webhook sender) becomes a child of that root.
#[derive(Clone, Debug)]
pub struct MessageTracer {
    inner: SdkTracer,
    ratio: f64,
}

impl MessageTracer {
    fn message_parent(&self, trace_id: u64) -> Context {
        let trace = message_trace_id(trace_id);
        let flags = if sampled(self.ratio, trace) { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let root = SpanContext::new(trace, message_root_span_id(trace_id), flags, false, TraceState::default());
        Context::new().with_remote_span_context(root)
    }
}

/// The `trace_id` field of a span being built, if it names a message.
fn trace_id_of(builder: &SpanBuilder) -> Option<u64> {
    let attributes = builder.attributes.as_ref()?;
    attributes.iter().find(|attribute| attribute.key.as_str() == TRACE_ID_FIELD).and_then(|attribute| match &attribute
        .value
    {
        Value::I64(value) => u64::try_from(*value).ok(),
        Value::String(text) => text.as_str().parse().ok(),
        _ => None,
    })
}

impl Tracer for MessageTracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, mut builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        let Some(trace_id) = trace_id_of(&builder).filter(|trace_id| *trace_id != 0) else {
            return self.inner.build_with_context(builder, parent_cx);
        };
        let parent = parent_cx.span().span_context().clone();
        if builder.name == MESSAGE_SPAN {
            if parent.is_valid() {
                builder.links.get_or_insert_with(Vec::new).push(Link::with_context(parent));
            }
            CHOSEN_IDS.set((Some(message_trace_id(trace_id)), Some(message_root_span_id(trace_id))));
            let span = self.inner.build_with_context(builder, &Context::new());
            CHOSEN_IDS.set((None, None));
            return span;
        }
        if parent.is_valid() {
            return self.inner.build_with_context(builder, parent_cx);
        }
        self.inner.build_with_context(builder, &self.message_parent(trace_id))
    }
}

/// What the export thread receives.
enum Queued {
    Span(Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(SyncSender<()>),
}

/// Offers ended spans to the export thread without ever waiting.
#[derive(Debug)]
struct QueueingProcessor {
    queue: SyncSender<Queued>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Queued")
    }
}

impl SpanProcessor for QueueingProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(Queued::Span(Box::new(span)))
        {
            METRICS.trace_spans_dropped_queue_full.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (answer, answered) = mpsc::sync_channel(1);
        self.queue.send(Queued::Flush(answer)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answered.recv_timeout(EXPORT_TIMEOUT * 2).map_err(|_| OTelSdkError::Timeout(EXPORT_TIMEOUT * 2))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.force_flush()
    }
}

/// Builds the exporting pipeline for `config`; the caller installs the returned layer.
fn pipeline(config: &TelemetryConfig) -> Result<(SdkTracerProvider, MessageTracer), String> {
    let endpoint = traces_url(&config.otlp_endpoint);
    let (queue, queued) = mpsc::sync_channel(QUEUE_CAPACITY);
    let resource = Resource::builder().with_service_name(config.service_name.trim().to_owned()).build();
    let (built, build_result) = mpsc::sync_channel(1);
    let thread_resource = resource.clone();
    std::thread::Builder::new()
        .name("kefu-trace-export".into())
        .spawn(move || export_thread(endpoint, thread_resource, queued, built))
        .map_err(|error| error.to_string())?;
    build_result.recv().map_err(|_| "the trace export thread stopped".to_owned())??;
    let ratio = config.sample_ratio.clamp(0.0, 1.0);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(QueueingProcessor { queue })
        .with_sampler(RatioSampler { ratio })
        .with_id_generator(ChosenOrRandomIds::default())
        .with_resource(resource)
        .build();
    let tracer = MessageTracer { inner: provider.tracer("kefu"), ratio };
    Ok((provider, tracer))
}

/// The OTLP/HTTP traces URL under a base endpoint (kept as given when it already names it).
fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.ends_with("/v1/traces") { endpoint.to_owned() } else { format!("{endpoint}/v1/traces") }
}

/// Runs the exporter on its own thread and runtime, so export is independent of the server's
/// tasks and never shares their workers; reports once whether the exporter could be built.
fn export_thread(
    endpoint: String,
    resource: Resource,
    queued: Receiver<Queued>,
    built: SyncSender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = built.send(Err(error.to_string()));
            return;
        }
    };
    // The client's resolver belongs to the runtime it is made in, so it is made here. The collector
    // is the operator's own choice, usually on this machine or the local network.
    let exporter = runtime.block_on(async {
        let client = crate::base::outbound::client(EXPORT_TIMEOUT, true)?;
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|error| error.to_string())
    });
    let mut exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            let _ = built.send(Err(error));
            return;
        }
    };
    exporter.set_resource(&resource);
    let _ = built.send(Ok(()));
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut failing = false;
    let mut deadline = Instant::now() + EXPORT_INTERVAL;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (flush, stop) = match queued.recv_timeout(wait) {
            Ok(Queued::Span(span)) => {
                batch.push(*span);
                (None, false)
            }
            Ok(Queued::Flush(answer)) => (Some(answer), false),
            Err(RecvTimeoutError::Timeout) => (None, false),
            Err(RecvTimeoutError::Disconnected) => (None, true),
        };
        let due = Instant::now() >= deadline;
        if !batch.is_empty() && (batch.len() >= MAX_BATCH || due || flush.is_some() || stop) {
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
            let count = spans.len() as u64;
            match runtime.block_on(exporter.export(spans)) {
                Ok(()) => {
                    METRICS.trace_spans_exported.add(count);
                    if failing {
                        tracing::info!("traces reach the collector again");
                        failing = false;
                    }
                }
                Err(error) => {
                    METRICS.trace_spans_dropped_export_failed.add(count);
                    if !failing {
                        tracing::warn!(%error, "exporting traces failed; spans are dropped until the collector answers");
                        failing = true;
                    }
                }
            }
        }
        if due || batch.is_empty() {
            deadline = Instant::now() + EXPORT_INTERVAL;
        }
        if let Some(answer) = flush {
            let _ = answer.send(());
        }
        if stop {
            let _ = exporter.shutdown();
            return;
        }
    }
}

/// The exporting layer (and its provider, kept to flush at shutdown), or `None` when traces are
/// off or cannot be exported (said in the log; kefu runs on without them).
pub fn layer<S>(config: &TelemetryConfig) -> Option<(SdkTracerProvider, impl tracing_subscriber::Layer<S>)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if !config.enabled() {
        return None;
    }
    match pipeline(config) {
        Ok((provider, tracer)) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false);
            Some((provider, layer))
        }
        Err(error) => {
            eprintln!("kefu: traces are not exported: {error}");
            None
        }
    }
}

/// Marks traces as exported (once the layer is installed).
pub(crate) fn mark_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_keeps_the_configured_share_of_message_traces() {
        let n = 20_000u64;
        let kept = |ratio: f64| {
            (1..=n).filter(|i| sampled(ratio, message_trace_id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1))).count()
        };
        assert_eq!(kept(1.0), n as usize);
        assert_eq!(kept(0.0), 0);
        let quarter = kept(0.25) as f64 / n as f64;
        assert!((0.22..0.28).contains(&quarter), "{quarter}");
    }

    #[test]
    fn the_traces_url_is_under_the_endpoint() {
        assert_eq!(traces_url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("https://c.example/v1/traces"), "https://c.example/v1/traces");
    }

    #[test]
    fn a_message_trace_id_is_the_logged_number() {
        assert_eq!(message_trace_id(255).to_string(), "000000000000000000000000000000ff");
        assert_eq!(message_root_span_id(255).to_string(), "00000000000000ff");
    }
}
