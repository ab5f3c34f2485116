//! Logging: human-readable lines by default, JSON with `log.format = "json"`.
//! `RUST_LOG`, when set, overrides `log.level`. Colours only when stderr is a terminal: a file or
//! journald would otherwise keep the escape codes as text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::base::config::{LogConfig, LogFormat};

/// Installs the global subscriber; a second call (tests start many servers) is a no-op.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
