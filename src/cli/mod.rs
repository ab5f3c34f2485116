//! The command line: `kefu serve`, `kefu admin ...`.

pub mod backup;
pub mod history;
pub mod migrate_to_postgres;
pub mod storage_bench;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::base::config::{Config, ConfigOverrides, LogOverrides};
use crate::net::control::{self, AdminCommand};
use crate::people::agents::Role;
use crate::storage::{StorageError, Store};

#[derive(Parser)]
#[command(name = "kefu", version, about = "Customer-service live chat in one binary")]
struct Cli {
    /// A kefu.toml to read (also KEFU_CONFIG).
    #[arg(long, global = true, env = "KEFU_CONFIG")]
    config: Option<PathBuf>,
    /// Where the data lives (overrides data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// HTTP and WebSocket listen address, such as 0.0.0.0:8080 (overrides http).
        #[arg(long)]
        http: Option<String>,
        /// `text` or `json` (overrides log.format).
        #[arg(long)]
        log_format: Option<String>,
        /// The /metrics listen address, or `off` (overrides metrics).
        #[arg(long)]
        metrics: Option<String>,
        /// QUIC listen address (UDP), such as 0.0.0.0:8443, or `off` (overrides quic).
        #[arg(long)]
        quic: Option<String>,
    },
    /// Chat from the terminal as a visitor or an agent, over QUIC or WebSocket.
    Chat {
        /// The site key.
        #[arg(long)]
        site: String,
        /// `quic://HOST:8443` or `ws://HOST:8080`.
        #[arg(long, default_value = "ws://localhost:8080")]
        url: String,
        /// kefu's HTTP address (for the session or login), such as http://HOST:8080; derived from a ws:// url.
        #[arg(long)]
        http: Option<String>,
        /// Chat as an agent (with --email); the password is read from KEFU_PASSWORD or asked for.
        #[arg(long, requires = "email")]
        agent: bool,
        #[arg(long)]
        email: Option<String>,
        /// The SHA-256 fingerprint of the QUIC certificate (printed by kefu serve).
        #[arg(long)]
        pin: Option<String>,
        /// Accept any QUIC certificate (trials on localhost only).
        #[arg(long)]
        insecure: bool,
        /// Use the Protobuf encoding over QUIC.
        #[arg(long)]
        protobuf: bool,
    },
    /// Manage sites and agents (works while the server runs).
    #[command(subcommand)]
    Admin(AdminArgs),
    /// Write one archive (tar) of a consistent database snapshot and the uploads to FILE (works
    /// while the server runs).
    Backup {
        /// The new backup file; an existing file is never overwritten.
        file: PathBuf,
    },
    /// Restore the database and uploads of the backup in FILE into an empty data directory (the
    /// server must be stopped).
    Restore {
        file: PathBuf,
        /// Restore into a data directory that is not empty, replacing its database (kept beside
        /// it as kefu.redb.before-restore) and the uploads the backup holds.
        #[arg(long)]
        force: bool,
    },
    /// Check the database's integrity and print what it holds; exits non-zero on damage or on
    /// attachments missing from the uploads directory.
    Check,
    /// Apply cluster mode's PostgreSQL migrations to the database at the URL and exit; prints the
    /// schema version (docs/cluster.md). Refuses a database whose schema is newer than this kefu.
    Migrate {
        /// The connection URL, such as postgresql://kefu@127.0.0.1:5432/kefu.
        #[arg(long, env = "KEFU_POSTGRES_URL")]
        postgres: String,
    },
    /// Copy a stopped kefu's conversations, messages and client ids from its data directory into
    /// cluster mode's PostgreSQL (migrations first), resumably, then verify the copy by counts and
    /// checksums per table; exits non-zero on any difference (docs/cluster.md).
    MigrateToPostgres(crate::cli::migrate_to_postgres::MigrateArgs),
    /// GET a URL and exit 0 on a 2xx answer (the container health check; no curl needed).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Export history as CSV or JSON Lines (works while the server runs).
    Export(crate::cli::history::ExportArgs),
    /// Remove history past each site's retention (works while the server runs).
    Retention {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Rebuild the search index from the database (works while the server runs).
    Reindex,
    /// Knowledge-base tools.
    #[command(subcommand)]
    Kb(KbArgs),
    /// Drive a kefu (or a baseline relay) with realistic traffic and print the figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `kefu bench MODE ...`: the load generator's modes (the kefu-bench crate, which drives a server
/// from outside) and `storage`, which measures the server's internals and so lives here.
#[derive(Subcommand, Debug)]
enum BenchCommand {
    #[command(flatten)]
    Load(kefu_bench::BenchCommand),
    /// History pages, searches, export and a full reindex over N messages stored in a data directory.
    Storage(storage_bench::BenchArgs),
}

#[derive(Subcommand)]
enum KbArgs {
    /// Measure the bot's matching on labelled messages: precision, recall and wrong answers per
    /// threshold, language and kind, and the precision–recall curve as an SVG.
    Eval(crate::bot::knowledge_base::eval::EvalArgs),
}

#[derive(Subcommand)]
enum AdminArgs {
    /// Create a site; prints its key and secret.
    CreateSite(crate::net::control::SiteArgs),
    /// Create an agent or admin.
    CreateAgent {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value = "")]
        name: String,
        /// `admin` or `agent`.
        #[arg(long, default_value = "agent")]
        role: Role,
        /// A site the agent serves (repeatable).
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Most conversations at once (defaults to routing.default_capacity).
        #[arg(long)]
        capacity: Option<u32>,
    },
    /// Set a new password for an agent (ends their sessions).
    ResetPassword {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
    },
    /// Turn an agent's two-factor login off, when they lost their phone and recovery codes
    /// (ends their sessions; where it is required, they enrol again at their next login).
    ResetTwoFactor {
        #[arg(long)]
        email: String,
    },
    ListSites,
    ListAgents,
    /// Set how many days a site keeps its history; omit --days to keep it forever.
    SetRetention {
        #[arg(long)]
        site: String,
        #[arg(long)]
        days: Option<u32>,
    },
}

pub fn main() -> anyhow::Result<()> {
    crate::base::allocator::configure();
    // Backups, restored databases and a database made by a command are private like the server's.
    crate::base::file_modes::restrict_new_files();
    let cli = Cli::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { http, log_format, metrics, quic } => {
            let overrides = ConfigOverrides {
                data_dir: cli.data_dir,
                http,
                quic,
                log: log_format.map(|format| LogOverrides { format: Some(format) }),
                metrics,
            };
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            let _telemetry = crate::base::telemetry::init_with_telemetry(&config.log, &config.telemetry);
            let listener = tokio::net::TcpListener::bind(config.http)
                .await
                .with_context(|| format!("listening on {}", config.http))?;
            crate::server::run(config, listener, crate::server::termination_signal()).await
        }
        Command::Backup { file } => {
            let config = Config::load(cli.config.as_deref(), &admin_overrides(cli.data_dir))?;
            backup::run_backup(&config, &file).await
        }
        Command::Restore { file, force } => {
            let config = Config::load(cli.config.as_deref(), &admin_overrides(cli.data_dir))?;
            backup::run_restore(&config, &file, force).await
        }
        Command::Check => {
            let config = Config::load(cli.config.as_deref(), &admin_overrides(cli.data_dir))?;
            backup::run_check(&config).await
        }
        Command::Migrate { postgres } => {
            let mut client = crate::cluster::postgres::connect(&postgres).await?;
            let report = crate::cluster::postgres::migrate(&mut client).await?;
            let applied: Vec<String> = report.applied.iter().map(i64::to_string).collect();
            println!("applied={}", applied.join(","));
            println!("schema_version={}", report.version);
            Ok(())
        }
        Command::MigrateToPostgres(args) => migrate_to_postgres::run(args).await,
        Command::Healthcheck { url } => crate::net::http::health::probe(&url).await,
        Command::Export(args) => {
            let config = Config::load(cli.config.as_deref(), &admin_overrides(cli.data_dir))?;
            crate::cli::history::export_cli(&config, args).await
        }
        Command::Retention { dry_run } => {
            let config = Config::load(cli.config.as_deref(), &admin_overrides(cli.data_dir))?;
            let command = crate::net::control::HistoryCommand::Retention { dry_run };
            let answer = crate::cli::history::run_cli(&config, command, Box::new(std::io::sink())).await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Command::Reindex => {
            let config = Config::load(cli.config.as_deref(), &admin_overrides(cli.data_dir))?;
            let command = crate::net::control::HistoryCommand::Reindex;
            let answer = crate::cli::history::run_cli(&config, command, Box::new(std::io::sink())).await?;
            println!("{answer}");
            Ok(())
        }
        Command::Chat { site, url, http, agent, email, pin, insecure, protobuf } => {
            let agent = if agent { email } else { None };
            kefu_client::chat::run(kefu_client::chat::ChatArgs { site, url, http, agent, pin, insecure, protobuf })
                .await
        }
        Command::Bench(BenchCommand::Load(command)) => kefu_bench::run(command).await,
        Command::Bench(BenchCommand::Storage(args)) => storage_bench::run(args).await,
        Command::Kb(KbArgs::Eval(args)) => {
            let store = match &args.site {
                Some(_) => {
                    let config = Config::load(cli.config.as_deref(), &admin_overrides(cli.data_dir))?;
                    Some(open_database(&config).await?.map_err(|error| match error {
                        StorageError::AlreadyOpen(_) => anyhow::anyhow!(
                            "the server holds the database: stop it, or evaluate against an entries file with --entries"
                        ),
                        other => anyhow::Error::new(other).context("opening the database"),
                    })?)
                }
                None => None,
            };
            crate::bot::knowledge_base::eval::run_cli(args, store).await
        }
        Command::Admin(args) => {
            let overrides = ConfigOverrides { data_dir: cli.data_dir, ..ConfigOverrides::default() };
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            let command = admin_command(args, &config);
            let answer = run_admin(&config, command).await?;
            match answer {
                Ok(value) => {
                    print_answer(&value);
                    Ok(())
                }
                Err(message) => anyhow::bail!("{message}"),
            }
        }
    }
}

fn admin_overrides(data_dir: Option<PathBuf>) -> ConfigOverrides {
    ConfigOverrides { data_dir, ..ConfigOverrides::default() }
}

fn admin_command(args: AdminArgs, config: &Config) -> AdminCommand {
    match args {
        AdminArgs::CreateSite(site) => AdminCommand::CreateSite(site),
        AdminArgs::CreateAgent { email, password, name, role, sites, capacity } => AdminCommand::CreateAgent {
            email,
            password,
            name,
            role,
            sites,
            capacity: capacity.unwrap_or(config.routing.default_capacity),
        },
        AdminArgs::ResetPassword { email, password } => AdminCommand::ResetPassword { email, password },
        AdminArgs::ResetTwoFactor { email } => AdminCommand::ResetTwoFactor { email },
        AdminArgs::ListSites => AdminCommand::ListSites,
        AdminArgs::ListAgents => AdminCommand::ListAgents,
        AdminArgs::SetRetention { site, days } => AdminCommand::SetRetention { site, days },
    }
}

/// Opens the database for a command that runs without a server; `AlreadyOpen` when one holds it.
pub(crate) async fn open_database(config: &Config) -> anyhow::Result<Result<Store, StorageError>> {
    if config.storage.backend == crate::base::config::StorageBackend::Postgres {
        anyhow::bail!(
            "this command works on the appliance's database; a cluster node's data is in PostgreSQL (storage.backend = \"postgres\"): use the admin pages, or see docs/cluster.md"
        );
    }
    let data_dir = config.data_dir.clone();
    let storage = config.storage.clone();
    Ok(tokio::task::spawn_blocking(move || Store::open(&data_dir, &storage, crate::server::writer_hooks(None))).await?)
}

/// Runs an admin command on the database directly, or through the server that holds it (on a
/// cluster node, always through the node's server).
pub(crate) async fn run_admin(config: &Config, command: AdminCommand) -> anyhow::Result<Result<Value, String>> {
    if config.storage.backend == crate::base::config::StorageBackend::Postgres {
        return control::send_to_server(&config.data_dir, &command).await.context(
            "a cluster node runs admin commands through its server: start `kefu serve` with this config first",
        );
    }
    let opened = open_database(config).await?;
    match opened {
        Ok(store) => {
            let backend = crate::cluster::backend::Backend::from(store.clone());
            let answer = command.execute(&backend).await.map_err(|error| error.to_string());
            drop(backend);
            store.shutdown().await;
            Ok(answer)
        }
        Err(StorageError::AlreadyOpen(_)) => {
            eprintln!("kefu: the server is running; sending the command to it");
            control::send_to_server(&config.data_dir, &command).await
        }
        Err(error) => Err(error).context("opening the database"),
    }
}

pub(crate) fn print_answer(value: &Value) {
    let Some(object) = value.as_object() else {
        println!("{value}");
        return;
    };
    for (key, value) in object {
        match value {
            Value::String(text) => println!("{key}={text}"),
            Value::Array(lines) => {
                for line in lines {
                    println!("{}", line.as_str().map(str::to_owned).unwrap_or_else(|| line.to_string()));
                }
            }
            other => println!("{key}={other}"),
        }
    }
}
