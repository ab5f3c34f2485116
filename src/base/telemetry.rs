//! Logging: human-readable lines by default, JSON with `log.format = "json"`.
//! `RUST_LOG`, when set, overrides `log.level`. Colours only when stderr is a terminal: a file or
//! journald would otherwise keep the escape codes as text.
//!
//! With `telemetry.otlp_endpoint` set, a second layer turns kefu's spans into OpenTelemetry spans
//! and exports them (`trace_export`). The two have filters of their own: the log's level does not
//! decide what is traced (the message stages are `debug` spans), and traces add nothing to the log.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::base::config::{LogConfig, LogFormat, TelemetryConfig};
use crate::base::trace_export;

/// Flushes exported traces when dropped (at the end of `kefu serve`).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber; a second call (tests start many servers) is a no-op.
pub fn init(config: &LogConfig) {
    let filter = log_filter(config);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// [`init`], with traces exported when `telemetry` says so. Without an endpoint it is exactly
/// [`init`]: no exporting layer, no per-layer filters.
pub fn init_with_telemetry(log: &LogConfig, telemetry: &TelemetryConfig) -> TelemetryGuard {
    let Some((provider, otel_layer)) = trace_export::layer::<Registry>(telemetry) else {
        init(log);
        return TelemetryGuard { provider: None };
    };
    let fmt_layer =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let fmt_layer: Box<dyn Layer<Registry> + Send + Sync> = match log.format {
        LogFormat::Text => fmt_layer.with_filter(log_filter(log)).boxed(),
        LogFormat::Json => fmt_layer.json().flatten_event(true).with_filter(log_filter(log)).boxed(),
    };
    // kefu's spans down to `debug` (the message stages), and warnings and errors inside them.
    let traced = FilterFn::new(|metadata| {
        let ours = metadata.target().starts_with("kefu");
        if metadata.is_span() {
            ours && *metadata.level() <= tracing::Level::DEBUG
        } else {
            ours && *metadata.level() <= tracing::Level::WARN
        }
    });
    let layers = vec![fmt_layer, otel_layer.with_filter(traced).boxed()];
    let installed = tracing_subscriber::registry().with(layers).try_init();
    if installed.is_ok() {
        trace_export::mark_enabled();
    }
    TelemetryGuard { provider: Some(provider) }
}

fn log_filter(config: &LogConfig) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level))
}
