//! Configuration: embedded defaults < `kefu.toml` < `KEFU_*` environment < command-line flags.
//!
//! Every key has a default, so `kefu serve` needs no file. Loading fails with a message naming
//! the offending key, so a typo stops start-up instead of being silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The top-level keys and sections of [`Config`], for picking `KEFU_*` variables.
const TOP_LEVEL_KEYS: [&str; 20] = [
    "data_dir",
    "http",
    "trusted_proxies",
    "public_url",
    "storage",
    "limits",
    "routing",
    "webhooks",
    "push",
    "email",
    "log",
    "metrics",
    "quic",
    "quic_cert",
    "quic_key",
    "tls",
    "llm",
    "grpc",
    "telemetry",
    "cluster",
];

/// Everything kefu can be configured with. Field names are the keys of `kefu.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database and other state live.
    pub data_dir: PathBuf,
    /// The HTTP and WebSocket listen address (`localhost:PORT` means 127.0.0.1:PORT).
    #[serde(with = "http_address")]
    pub http: SocketAddr,
    /// Reverse proxies (addresses or CIDR ranges) whose `Forwarded` / `X-Forwarded-For` /
    /// `X-Forwarded-Proto` headers are believed; from any other peer they are ignored.
    pub trusted_proxies: TrustedProxies,
    /// The URL people reach kefu at (used in printed links); derived from `http` when absent.
    pub public_url: Option<String>,
    /// Where `/metrics` listens (Prometheus text format), or `off`.
    pub metrics: String,
    /// The QUIC listen address (UDP); `"off"` or empty turns QUIC off.
    #[serde(with = "optional_address")]
    pub quic: Option<SocketAddr>,
    /// A PEM certificate chain for QUIC; a self-signed one is made in the data directory when absent.
    pub quic_cert: Option<PathBuf>,
    /// The PEM private key of `quic_cert`.
    pub quic_key: Option<PathBuf>,
    /// HTTPS and WSS on the `http` port, from certificate files or ACME; off when empty.
    pub tls: TlsConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub routing: RoutingConfig,
    pub webhooks: WebhooksConfig,
    pub push: PushConfig,
    pub email: EmailConfig,
    pub log: LogConfig,
    pub llm: LlmConfig,
    pub grpc: GrpcConfig,
    pub telemetry: TelemetryConfig,
    pub cluster: ClusterConfig,
}

/// Where kefu keeps its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// One redb file in `data_dir` (the appliance).
    #[default]
    Redb,
    /// A PostgreSQL database shared by every node of a cluster (`storage.postgres_url`), with
    /// NATS between the nodes (`cluster.nats_url`).
    Postgres,
}

/// A node of a cluster (`storage.backend = "postgres"`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The NATS server that carries events between the nodes (`nats://HOST:PORT`).
    pub nats_url: String,
    /// This node's name, unique in the cluster (at most 200 bytes); the host name and the HTTP
    /// listen address when empty.
    pub node: String,
}

/// The storage and its group-commit writer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `redb` (the appliance: one file, nothing else to run) or `postgres` (a cluster node).
    pub backend: StorageBackend,
    /// The PostgreSQL connection URL of a cluster (`postgres://USER:PASSWORD@HOST:PORT/DB`).
    pub postgres_url: String,
    /// The most operations one commit takes.
    pub commit_max_batch: usize,
    /// How long the writer waits for more operations after the first of a batch, in microseconds.
    /// Zero commits as soon as the queue is drained: under load, batches form on their own
    /// while the previous commit is syncing.
    pub commit_max_delay_us: u64,
    /// How long a batch answered through the commit log may wait for the database commit that
    /// shows it to readers, in microseconds; a read waits for that commit and asks for it at
    /// once, so no read misses an answered write. Fewer database commits cost the writer less.
    /// Zero commits each batch before answering it.
    pub visibility_interval_us: u64,
    /// Memory for redb's page cache, in MiB. Reads past it come from the file (the OS page
    /// cache); a small server can lower it, a large history read often can raise it.
    pub cache_mib: usize,
    /// Makes a batch durable by appending it to the commit log (`kefu.wal`) instead of a
    /// durable redb commit; redb is made durable at checkpoints. Off: every commit is durable.
    pub commit_log: bool,
    /// Seconds between checkpoints under steady load (a lull of half a second brings one sooner).
    pub checkpoint_interval_secs: u64,
    /// A checkpoint is also made when the log has grown to this many MiB.
    pub checkpoint_log_mib: u64,
}

/// Limits that protect the server from any one client.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest WebSocket frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Longest message text, in characters.
    pub max_text_chars: usize,
    /// Sustained frames per second per connection.
    pub frames_per_second: u32,
    /// Burst of frames per connection above the sustained rate.
    pub frame_burst: u32,
    /// Frames queued for one connection before it counts as a slow consumer and is closed.
    pub outbound_queue: usize,
    /// Seconds one write to a client may take; a client that reads nothing for that long counts
    /// as a slow consumer and is closed with 4008.
    pub write_timeout_secs: u64,
    /// Seconds a new connection has to send `hello`.
    pub hello_timeout_secs: u64,
    /// Seconds without any frame or pong before a connection is closed.
    pub idle_timeout_secs: u64,
    /// Seconds between server pings.
    pub heartbeat_secs: u64,
    /// Most concurrent WebSocket connections.
    pub max_connections: usize,
    /// Most messages replayed on resume before the client is told to reload instead.
    pub replay_limit: usize,
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest uploaded file, in bytes.
    pub max_upload_bytes: usize,
    /// Failed logins per account from one address in a 15-minute window before that address is
    /// refused for that account; also the per-account budget of guesses from addresses that failed.
    pub login_attempts: u32,
    /// Failed logins from one address, over all accounts, in a 15-minute window before it is refused.
    pub login_attempts_per_address: u32,
    /// Password checks (argon2) that run at once, process-wide; 0 sizes it from the core count (at most 4).
    pub password_checks_at_once: usize,
    /// Milliseconds a login waits for a free password check before it gets 429.
    pub password_check_wait_ms: u64,
    /// New visitor sessions (a visitor made, not a token resumed) per client address per hour.
    pub visitor_sessions_per_address_per_hour: u64,
    /// Visitor uploads per client address per hour.
    pub uploads_per_address_per_hour: u64,
    /// Uploads per visitor per hour.
    pub uploads_per_visitor_per_hour: u64,
    /// Bytes visitors may upload per client address per hour.
    pub upload_bytes_per_address_per_hour: u64,
    /// Bytes one visitor may upload per hour.
    pub upload_bytes_per_visitor_per_hour: u64,
    /// Offline messages per client address per hour.
    pub offline_messages_per_address_per_hour: u64,
    /// Offline messages per visitor per hour.
    pub offline_messages_per_visitor_per_hour: u64,
    /// Transcripts a visitor may ask to have emailed per hour.
    pub transcripts_per_visitor_per_hour: u64,
    /// "Forgot password" requests per client address per hour (and per account, a third of it).
    pub password_resets_per_address_per_hour: u64,
    /// Most bytes of uploads stored for one site (visitors' and agents'); 0 for no quota.
    pub upload_quota_bytes_per_site: u64,
    /// Seconds an upload that no message attached is kept before the hourly sweep removes it.
    pub unattached_upload_grace_secs: u64,
    /// Sustained requests per second per API token; more get 429 with `Retry-After`.
    pub api_requests_per_second: u32,
    /// Burst of requests per API token above the sustained rate.
    pub api_request_burst: u32,
    /// Most concurrent plain HTTP connections (a connection upgraded to a WebSocket counts
    /// under `max_connections` instead); further clients wait in the kernel's accept queue.
    pub max_http_connections: usize,
    /// Most concurrent plain HTTP connections from one client address (one /64 for IPv6);
    /// more are answered 503 and closed. Trusted proxies count only under the total.
    pub max_http_connections_per_ip: usize,
    /// Seconds a client has to send a request's headers (also how long an idle keep-alive
    /// connection stays open).
    pub header_read_timeout_secs: u64,
}

/// Assignment of conversations to agents.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Seconds after an agent's last connection closes before they count as offline.
    pub offline_grace_secs: u64,
    /// Concurrent conversations for an agent created without an explicit capacity.
    pub default_capacity: u32,
}

/// Sending webhooks.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The wait before the first retry, in milliseconds; it doubles with each attempt (at most an hour).
    pub retry_base_ms: u64,
    /// How long after its event a delivery is retried before it is marked failed, in seconds.
    pub give_up_after_secs: u64,
    /// How long one attempt may take, in seconds.
    pub timeout_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig { retry_base_ms: 5000, give_up_after_secs: 86_400, timeout_secs: 10 }
    }
}

/// Web Push notifications to agents whose console is closed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// How a push service's operator reaches whoever runs this kefu (the VAPID `sub`): a
    /// `mailto:` or `https:` URL. Empty: `public_url`.
    pub contact: String,
    /// The wait before the first retry of a failed push, in milliseconds; it doubles with each
    /// of the few attempts.
    pub retry_base_ms: u64,
    /// How long one attempt may take, in seconds.
    pub timeout_secs: u64,
    /// Lets browsers subscribe with a plain http endpoint on a loopback address. Only for tests,
    /// which run their own push service there; real push services are https.
    pub allow_loopback_endpoints: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig { contact: String::new(), retry_base_ms: 2000, timeout_secs: 10, allow_loopback_endpoints: false }
    }
}

/// kefu's own TLS: certificate files (reloaded on SIGHUP) or certificates obtained over ACME.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// A PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Certificates obtained and renewed automatically instead of files.
    pub acme: Option<AcmeConfig>,
    /// A plain-HTTP listen address whose every request (but `/healthz`) is redirected to HTTPS
    /// with a 308; off when absent. Needs `public_url` or `acme` for the name to redirect to.
    #[serde(with = "optional_redirect_address")]
    pub redirect_http: Option<SocketAddr>,
}

impl TlsConfig {
    /// Whether the HTTP port speaks TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.acme.is_some()
    }
}

/// Obtaining certificates over ACME (RFC 8555), answering the TLS-ALPN-01 challenge on the
/// HTTP port itself, so no other port and no proxy is needed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The names the certificate is for; the HTTP port must be reachable at each on port 443.
    pub domains: Vec<String>,
    /// A contact address the certificate authority may write to about expiry or problems.
    pub email: Option<String>,
    /// The ACME directory of the certificate authority.
    pub directory_url: String,
    /// Where the account key and the certificate are kept; `acme` in the data directory when absent.
    pub cache_dir: Option<PathBuf>,
    /// An extra PEM root certificate to trust for the directory (a test authority such as pebble).
    pub directory_ca: Option<PathBuf>,
    /// A certificate is renewed when it expires within this many days.
    pub renew_before_days: u32,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            domains: Vec::new(),
            email: None,
            directory_url: "https://acme-v02.api.letsencrypt.org/directory".to_owned(),
            cache_dir: None,
            directory_ca: None,
            renew_before_days: 30,
        }
    }
}

/// Sending email over SMTP. The admin page's settings, once saved, override the server fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// The SMTP server; empty: no email is sent (rows wait in the outbox until one is set).
    pub host: String,
    pub port: u16,
    /// `starttls` (port 587), `tls` (implicit TLS, port 465) or `none` (a local relay only).
    pub security: String,
    pub username: String,
    pub password: String,
    /// The sender address of every email kefu sends.
    pub from_address: String,
    /// The sender name shown to recipients.
    pub from_name: String,
    /// The wait before the first retry, in milliseconds; it doubles with each attempt (at most an hour).
    pub retry_base_ms: u64,
    /// How long after it was queued an email is retried before it is marked failed, in seconds.
    pub give_up_after_secs: u64,
    /// How long one SMTP conversation may take, in seconds.
    pub timeout_secs: u64,
    /// Seconds a visitor waits with no agent reply before the site's agents get a missed-chat email.
    pub missed_chat_after_secs: u64,
    /// Seconds an agent's answer to a visitor who left their email waits before it is emailed;
    /// a visitor who reads it in the chat meanwhile gets no email.
    pub reply_delay_secs: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            host: String::new(),
            port: 587,
            security: "starttls".to_owned(),
            username: String::new(),
            password: String::new(),
            from_address: String::new(),
            from_name: "kefu".to_owned(),
            retry_base_ms: 5000,
            give_up_after_secs: 86_400,
            timeout_secs: 30,
            missed_chat_after_secs: 300,
            reply_delay_secs: 60,
        }
    }
}

/// Traces exported to an OpenTelemetry collector over OTLP (src/base/trace_export.rs).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Where traces go: the base URL of an OTLP/HTTP receiver (`http://127.0.0.1:4318`; spans are
    /// posted to `/v1/traces` under it). Empty: nothing is exported and no span is recorded.
    pub otlp_endpoint: String,
    /// The share of messages (and calls) traced, from 0.0 (none) to 1.0 (all). A caller's
    /// `traceparent` decides for its own calls.
    pub sample_ratio: f64,
    /// The `service.name` the spans carry.
    pub service_name: String,
}

impl TelemetryConfig {
    /// Whether spans are exported at all.
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { otlp_endpoint: String::new(), sample_ratio: 1.0, service_name: "kefu".to_owned() }
    }
}

/// The gRPC API for integrations (src/net/grpc/).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// The gRPC listen address (TCP, HTTP/2; over TLS when `tls` is set); `"off"` or empty turns gRPC off.
    #[serde(with = "optional_address")]
    pub listen: Option<SocketAddr>,
    /// How long the events of `Subscribe` are kept for subscribers to resume from, in hours.
    pub event_retention_hours: u64,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig { listen: None, event_retention_hours: 168 }
    }
}

/// The bot's language-model endpoints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Lets a site's `llm.base_url` reach private, loopback and other special-purpose addresses
    /// (a model server on this machine or the local network). Off: the same guard as webhooks.
    pub allow_private_addresses: bool,
}

/// Logging.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `kefu=debug,info`.
    pub level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./kefu-data"),
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            trusted_proxies: TrustedProxies::default(),
            public_url: None,
            metrics: "127.0.0.1:9090".to_owned(),
            quic: Some(SocketAddr::from(([0, 0, 0, 0], 8443))),
            quic_cert: None,
            quic_key: None,
            tls: TlsConfig::default(),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            routing: RoutingConfig::default(),
            webhooks: WebhooksConfig::default(),
            push: PushConfig::default(),
            grpc: GrpcConfig::default(),
            email: EmailConfig::default(),
            log: LogConfig::default(),
            llm: LlmConfig::default(),
            telemetry: TelemetryConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Redb,
            postgres_url: String::new(),
            commit_max_batch: 16_384,
            commit_max_delay_us: 0,
            visibility_interval_us: 10_000,
            cache_mib: 256,
            commit_log: true,
            checkpoint_interval_secs: 30,
            checkpoint_log_mib: 64,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 64 * 1024,
            max_text_chars: 4000,
            frames_per_second: 20,
            frame_burst: 40,
            outbound_queue: 512,
            write_timeout_secs: 10,
            hello_timeout_secs: 10,
            idle_timeout_secs: 75,
            heartbeat_secs: 30,
            max_connections: 50_000,
            replay_limit: 500,
            max_body_bytes: 1024 * 1024,
            max_upload_bytes: 10 * 1024 * 1024,
            login_attempts: 10,
            login_attempts_per_address: 30,
            password_checks_at_once: 0,
            password_check_wait_ms: 10_000,
            visitor_sessions_per_address_per_hour: 300,
            uploads_per_address_per_hour: 200,
            uploads_per_visitor_per_hour: 60,
            upload_bytes_per_address_per_hour: 1024 * 1024 * 1024,
            upload_bytes_per_visitor_per_hour: 200 * 1024 * 1024,
            offline_messages_per_address_per_hour: 30,
            offline_messages_per_visitor_per_hour: 10,
            transcripts_per_visitor_per_hour: 3,
            password_resets_per_address_per_hour: 9,
            upload_quota_bytes_per_site: 10 * 1024 * 1024 * 1024,
            unattached_upload_grace_secs: 86_400,
            api_requests_per_second: 20,
            api_request_burst: 60,
            max_http_connections: 512,
            max_http_connections_per_ip: 128,
            header_read_timeout_secs: 10,
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig { offline_grace_secs: 30, default_capacity: 5 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// A listen address: an IP address and port, or `localhost:PORT` (127.0.0.1, the address people
/// mean by it; no other host name is looked up, since a listener binds one address).
pub fn parse_listen_address(text: &str, example: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let localhost_port = text.strip_prefix("localhost:").and_then(|port| port.parse::<u16>().ok());
    match localhost_port {
        Some(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        None => Err(format!(
            "{text:?} is not an address such as {example} or localhost:{port} (an IP address and a port; host names other than localhost are not looked up)",
            port = example.rsplit(':').next().unwrap_or_default()
        )),
    }
}

/// `http = "0.0.0.0:8080"` (or `localhost:8080`).
mod http_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(address: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(address)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_listen_address(&text, "0.0.0.0:8080").map_err(serde::de::Error::custom)
    }
}

/// `quic = "0.0.0.0:8443"`, or `"off"` / `""` for no QUIC listener.
mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(address: &Option<SocketAddr>, serializer: S) -> Result<S::Ok, S::Error> {
        match address {
            Some(address) => serializer.collect_str(address),
            None => serializer.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
        deserialize_with_example(deserializer, "0.0.0.0:8443")
    }

    /// An address, or `None` for `"off"` or empty; a bad one is refused naming `example`.
    pub fn deserialize_with_example<'de, D: Deserializer<'de>>(
        deserializer: D,
        example: &str,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        super::parse_listen_address(text, example)
            .map(Some)
            .map_err(|message| serde::de::Error::custom(format!("{message}, or \"off\"")))
    }
}

/// `tls.redirect_http = "0.0.0.0:80"`, or `"off"`.
mod optional_redirect_address {
    use std::net::SocketAddr;

    use serde::Deserializer;

    pub use super::optional_address::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
        super::optional_address::deserialize_with_example(deserializer, "0.0.0.0:80")
    }
}

/// `trusted_proxies = ["10.0.0.0/8", "192.0.2.7"]`: CIDR ranges, or single addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Whether `address` is one of the trusted proxies.
    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|range| range.contains(&address))
    }
}

impl Serialize for TrustedProxies {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        let ranges = texts
            .iter()
            .map(|text| {
                let text = text.trim();
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|range| range.trunc())
                    .map_err(|_| {
                        serde::de::Error::custom(format!(
                            "{text:?} is not an address or CIDR range such as 10.0.0.0/8 or ::1"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies(ranges))
    }
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConfigOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quic: Option<String>,
}

/// The flags are a configuration layer of their own, named in errors as what the user typed
/// (not as a Rust type, which is how a plain `Serialized` provider names itself).
impl figment::Provider for ConfigOverrides {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("command-line flags")
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Serialized::defaults(self).data()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LogOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl Config {
    /// Loads the layers in order; `file` is read only if given (a missing file given explicitly is an error).
    pub fn load(file: Option<&Path>, overrides: &ConfigOverrides) -> anyhow::Result<Config> {
        Self::load_with_env(file, overrides, Env::prefixed("KEFU_").split("__"))
    }

    fn load_with_env(file: Option<&Path>, overrides: &ConfigOverrides, env: Env) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only variables naming one of kefu's keys (or sections) are read, so unrelated
        // KEFU_* variables in the environment do not stop start-up; a wrong key inside a
        // section (KEFU_LIMITS__TYPO) still does. KEFU_CONFIG names the file and is not a key.
        let env = env.filter(|key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            TOP_LEVEL_KEYS.iter().any(|known| known.eq_ignore_ascii_case(top))
        });
        figment = figment.merge(env).merge(overrides.clone());
        let config: Config = figment.extract().map_err(|error| {
            let messages: Vec<String> = error.into_iter().map(|error| describe_config_error(&error)).collect();
            anyhow::anyhow!("invalid configuration: {}", messages.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let limits = &self.limits;
        let checks: [(&str, bool); 11] = [
            ("limits.max_http_connections", limits.max_http_connections >= 1),
            ("limits.max_http_connections_per_ip", limits.max_http_connections_per_ip >= 1),
            ("limits.header_read_timeout_secs", limits.header_read_timeout_secs >= 1),
            ("limits.max_frame_bytes", limits.max_frame_bytes >= 1024),
            ("limits.max_text_chars", limits.max_text_chars >= 1),
            ("limits.frames_per_second", limits.frames_per_second >= 1),
            ("limits.outbound_queue", limits.outbound_queue >= 16),
            ("limits.write_timeout_secs", limits.write_timeout_secs >= 1),
            ("limits.heartbeat_secs", limits.heartbeat_secs >= 1 && limits.heartbeat_secs < limits.idle_timeout_secs),
            ("storage.commit_max_batch", self.storage.commit_max_batch >= 1),
            ("routing.default_capacity", self.routing.default_capacity >= 1),
        ];
        if self.metrics != "off" && self.metrics.parse::<SocketAddr>().is_err() {
            anyhow::bail!("invalid configuration: metrics must be an address such as 127.0.0.1:9090, or off");
        }
        let telemetry = &self.telemetry;
        if !(0.0..=1.0).contains(&telemetry.sample_ratio) {
            anyhow::bail!("invalid configuration: telemetry.sample_ratio must be from 0.0 to 1.0");
        }
        if telemetry.enabled() {
            let endpoint = telemetry.otlp_endpoint.trim();
            let url = reqwest::Url::parse(endpoint).map_err(|error| {
                anyhow::anyhow!(
                    "invalid configuration: telemetry.otlp_endpoint {endpoint:?} is not a URL such as http://127.0.0.1:4318 ({error})"
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                anyhow::bail!(
                    "invalid configuration: telemetry.otlp_endpoint must be an http(s) URL such as http://127.0.0.1:4318"
                );
            }
            if telemetry.service_name.trim().is_empty() {
                anyhow::bail!("invalid configuration: telemetry.service_name must not be empty");
            }
        }
        if self.storage.backend == StorageBackend::Postgres {
            let url = self.storage.postgres_url.trim();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                anyhow::bail!(
                    "invalid configuration: storage.backend = \"postgres\" needs storage.postgres_url, a URL such as postgres://kefu:PASSWORD@127.0.0.1:5432/kefu"
                );
            }
            if !self.cluster.nats_url.trim().starts_with("nats://") {
                anyhow::bail!(
                    "invalid configuration: storage.backend = \"postgres\" needs cluster.nats_url, a URL such as nats://127.0.0.1:4222"
                );
            }
        }
        let tls = &self.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            anyhow::bail!("invalid configuration: tls.cert and tls.key must be given together");
        }
        if let Some(acme) = &tls.acme {
            if tls.cert.is_some() {
                anyhow::bail!("invalid configuration: give either tls.cert and tls.key or tls.acme, not both");
            }
            if acme.domains.is_empty() || acme.domains.iter().any(|domain| domain.trim().is_empty()) {
                anyhow::bail!("invalid configuration: tls.acme.domains must list at least one domain name");
            }
            if acme.renew_before_days == 0 {
                anyhow::bail!(
                    "invalid configuration: tls.acme.renew_before_days is out of range (see packaging/kefu.toml)"
                );
            }
        }
        if let Some(address) = tls.redirect_http {
            if !tls.enabled() {
                anyhow::bail!("invalid configuration: tls.redirect_http needs TLS (tls.cert and tls.key, or tls.acme)");
            }
            // Port 0 (any free port, as in tests) cannot clash.
            if address.port() != 0 && address == self.http {
                anyhow::bail!("invalid configuration: tls.redirect_http must differ from http, which serves HTTPS");
            }
            if self.https_names().is_empty() {
                anyhow::bail!(
                    "invalid configuration: tls.redirect_http needs public_url (an https:// URL with a host name) or tls.acme, to know the name to redirect to"
                );
            }
        }
        for (key, valid) in checks {
            if !valid {
                anyhow::bail!("invalid configuration: {key} is out of range (see packaging/kefu.toml)");
            }
        }
        Ok(())
    }

    /// The metrics listen address; `None` when metrics are off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.parse().ok()
    }

    /// The host names HTTPS is served for, lowercase, the main one first: `public_url`'s host
    /// (when it is an `https://` URL), then `tls.acme.domains`. Empty when neither is set.
    pub fn https_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let public = self.public_url.as_deref().and_then(|url| url::Url::parse(url).ok());
        if let Some(host) = public.as_ref().filter(|url| url.scheme() == "https").and_then(|url| url.host_str()) {
            names.push(host.to_ascii_lowercase());
        }
        for domain in self.tls.acme.iter().flat_map(|acme| &acme.domains) {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if !domain.is_empty() && !names.contains(&domain) {
                names.push(domain);
            }
        }
        names
    }

    /// The port browsers reach HTTPS on: `public_url`'s (443 unless it names one) when it is
    /// an `https://` URL, else the `http` port (kefu serves HTTPS there).
    pub fn https_port(&self) -> u16 {
        self.public_url
            .as_deref()
            .and_then(|url| url::Url::parse(url).ok())
            .filter(|url| url.scheme() == "https")
            .and_then(|url| url.port_or_known_default())
            .unwrap_or(self.http.port())
    }

    /// The base URL printed in links.
    pub fn public_url(&self) -> String {
        self.public_url_at(self.http)
    }

    /// The base URL printed in links, for a server bound at `bound` (its real port when the
    /// configured one is 0): `public_url`, else the address itself, `localhost` for an
    /// unspecified one.
    pub fn public_url_at(&self, bound: SocketAddr) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let scheme = if self.tls.enabled() { "https" } else { "http" };
        if bound.ip().is_unspecified() {
            format!("{scheme}://localhost:{}", bound.port())
        } else {
            format!("{scheme}://{bound}")
        }
    }
}

fn describe_config_error(error: &figment::Error) -> String {
    let key = if error.path.is_empty() { "(top level)".to_owned() } else { error.path.join(".") };
    let source = error.metadata.as_ref().map(|metadata| metadata.name.to_string()).unwrap_or_default();
    if source.is_empty() {
        format!("key `{key}`: {}", error.kind)
    } else {
        format!("key `{key}` (from {source}): {}", error.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)]
    fn layers_apply_in_order_and_errors_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "kefu.toml",
                "http = \"127.0.0.1:9000\"\ndata_dir = \"from-file\"\n[limits]\nreplay_limit = 7\n",
            )?;
            jail.set_env("KEFU_DATA_DIR", "from-env");
            let overrides = ConfigOverrides { http: Some("127.0.0.1:9100".into()), ..Default::default() };
            let config = Config::load(Some(Path::new("kefu.toml")), &overrides).map_err(|e| e.to_string())?;
            assert_eq!(config.http.port(), 9100);
            assert_eq!(config.data_dir, PathBuf::from("from-env"));
            assert_eq!(config.limits.replay_limit, 7);

            jail.set_env("KEFU_LIMITS__REPLAY_LIMIT", "many");
            let error = Config::load(None, &ConfigOverrides::default()).unwrap_err().to_string();
            assert!(error.contains("limits.replay_limit"), "{error}");

            jail.set_env("KEFU_UNRELATED_TOOL_SETTING", "1");
            assert!(Config::load(None, &ConfigOverrides::default()).unwrap_err().to_string().contains("replay_limit"));
            jail.set_env("KEFU_LIMITS__REPLAY_LIMIT", "9");
            assert_eq!(
                Config::load(None, &ConfigOverrides::default()).map_err(|e| e.to_string())?.limits.replay_limit,
                9
            );

            jail.create_file("bad.toml", "htp = \"x\"\n")?;
            let error = Config::load(Some(Path::new("bad.toml")), &ConfigOverrides::default()).unwrap_err().to_string();
            assert!(error.contains("htp"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn localhost_means_the_loopback_address_and_a_bad_flag_is_named_as_a_flag() {
        figment::Jail::expect_with(|jail| {
            let overrides = ConfigOverrides { http: Some("localhost:8081".into()), ..Default::default() };
            let config = Config::load(None, &overrides).map_err(|e| e.to_string())?;
            assert_eq!(config.http, SocketAddr::from(([127, 0, 0, 1], 8081)));
            let overrides = ConfigOverrides { http: Some("shop.example:80".into()), ..Default::default() };
            let error = Config::load(None, &overrides).unwrap_err().to_string();
            assert!(error.contains("`http` (from command-line flags)"), "{error}");
            assert!(error.contains("0.0.0.0:8080") && !error.contains("ConfigOverrides"), "{error}");
            jail.set_env("KEFU_HTTP", "localhost:9");
            assert_eq!(Config::load(None, &ConfigOverrides::default()).map_err(|e| e.to_string())?.http.port(), 9);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn quic_is_on_by_default_and_turns_off_with_off_or_empty() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &ConfigOverrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.quic, Some(SocketAddr::from(([0, 0, 0, 0], 8443))));
            jail.set_env("KEFU_QUIC", "127.0.0.1:9443");
            let config = Config::load(None, &ConfigOverrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.quic, Some(SocketAddr::from(([127, 0, 0, 1], 9443))));
            for off in ["off", ""] {
                let overrides = ConfigOverrides { quic: Some(off.into()), ..Default::default() };
                let config = Config::load(None, &overrides).map_err(|e| e.to_string())?;
                assert_eq!(config.quic, None, "{off:?}");
            }
            jail.set_env("KEFU_QUIC", "nowhere");
            let error = Config::load(None, &ConfigOverrides::default()).unwrap_err().to_string();
            assert!(error.contains("quic"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn tls_takes_files_or_acme_and_refuses_half_or_both() {
        figment::Jail::expect_with(|jail| {
            let load = |text: &str| -> Result<Config, String> {
                std::fs::write("kefu.toml", text).map_err(|e| e.to_string())?;
                Config::load(Some(Path::new("kefu.toml")), &ConfigOverrides::default()).map_err(|e| e.to_string())
            };
            let _ = jail;
            let config = load("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n")?;
            assert!(config.tls.enabled());
            assert_eq!(config.public_url(), "https://localhost:8080");
            let config = load("[tls]\nacme = { domains = [\"chat.example.com\"], email = \"a@example.com\" }\n")?;
            let acme = config.tls.acme.unwrap();
            assert_eq!((acme.domains.len(), acme.renew_before_days), (1, 30));
            assert!(load("[tls]\ncert = \"c.pem\"\n").unwrap_err().contains("tls.cert and tls.key"));
            assert!(load("[tls]\nacme = { domains = [] }\n").unwrap_err().contains("tls.acme.domains"));
            let both = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nacme = { domains = [\"a.example\"] }\n";
            assert!(load(both).unwrap_err().contains("not both"));
            assert!(!Config::default().tls.enabled());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn telemetry_is_off_by_default_and_bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &ConfigOverrides::default()).map_err(|e| e.to_string())?;
            assert!(!config.telemetry.enabled());
            assert_eq!(config.telemetry.sample_ratio, 1.0);
            jail.set_env("KEFU_TELEMETRY__OTLP_ENDPOINT", "http://127.0.0.1:4318");
            jail.set_env("KEFU_TELEMETRY__SAMPLE_RATIO", "0.25");
            let config = Config::load(None, &ConfigOverrides::default()).map_err(|e| e.to_string())?;
            assert!(config.telemetry.enabled());
            assert_eq!(config.telemetry.sample_ratio, 0.25);
            jail.set_env("KEFU_TELEMETRY__SAMPLE_RATIO", "1.5");
            let error = Config::load(None, &ConfigOverrides::default()).unwrap_err().to_string();
            assert!(error.contains("telemetry.sample_ratio"), "{error}");
            jail.set_env("KEFU_TELEMETRY__SAMPLE_RATIO", "1");
            for bad in ["collector:4318", "ftp://127.0.0.1/x"] {
                jail.set_env("KEFU_TELEMETRY__OTLP_ENDPOINT", bad);
                let error = Config::load(None, &ConfigOverrides::default()).unwrap_err().to_string();
                assert!(error.contains("telemetry.otlp_endpoint"), "{bad}: {error}");
            }
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn the_example_config_file_holds_the_defaults() {
        figment::Jail::expect_with(|_| {
            let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/kefu.toml"));
            let config = Config::load(Some(example), &ConfigOverrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(serde_json::to_value(&config).unwrap(), serde_json::to_value(Config::default()).unwrap());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn trusted_proxies_take_ranges_and_addresses_and_a_bad_one_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("kefu.toml", "trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n")?;
            let config =
                Config::load(Some(Path::new("kefu.toml")), &ConfigOverrides::default()).map_err(|e| e.to_string())?;
            assert!(config.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
            assert!(config.trusted_proxies.contains("::ffff:192.0.2.7".parse().unwrap()));
            assert!(config.trusted_proxies.contains("2001:db8::9".parse().unwrap()));
            assert!(!config.trusted_proxies.contains("192.0.2.8".parse().unwrap()));
            jail.create_file("bad.toml", "trusted_proxies = [\"10.0.0.0/33\"]\n")?;
            let error = Config::load(Some(Path::new("bad.toml")), &ConfigOverrides::default()).unwrap_err().to_string();
            assert!(error.contains("trusted_proxies") && error.contains("10.0.0.0/33"), "{error}");

            jail.set_env("KEFU_TRUSTED_PROXIES", "[\"127.0.0.1\"]");
            let config =
                Config::load(Some(Path::new("kefu.toml")), &ConfigOverrides::default()).map_err(|e| e.to_string())?;
            assert!(config.trusted_proxies.contains("127.0.0.1".parse().unwrap()));
            assert!(!config.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
            Ok(())
        });
    }
}
