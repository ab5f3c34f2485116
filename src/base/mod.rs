//! Process-wide foundations every layer may use: configuration, time, secrets, the allocator,
//! file modes, CSV cells, the language of outgoing messages, the guarded outbound HTTP client, logging, traces (export and W3C
//! `traceparent`), metrics and systemd.
//! Nothing here imports another kefu module outside `base`.

pub mod allocator;
pub mod clock;
pub mod config;
pub mod csv_cells;
pub mod field_error;
pub mod file_modes;
pub mod language;
pub mod metrics;
pub mod outbound;
pub mod rate_limit;
pub mod secrets;
pub mod systemd;
pub mod telemetry;
pub mod trace_context;
pub mod trace_export;
