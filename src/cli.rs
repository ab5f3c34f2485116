//! The command line: `kefu serve`, `kefu admin ...`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::agents::Role;
use crate::config::{Config, ConfigOverrides, LogOverrides};
use crate::control::{self, AdminCommand};
use crate::sensitive_words::SensitiveMode;
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
    },
    /// Manage sites and agents (works while the server runs).
    #[command(subcommand)]
    Admin(AdminArgs),
    /// Drive a kefu (or a baseline relay) with realistic traffic and print the figures.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

#[derive(Subcommand)]
enum AdminArgs {
    /// Create a site; prints its key and secret.
    CreateSite {
        #[arg(long)]
        name: String,
        /// An origin allowed to embed the widget (repeatable); `*` allows any.
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Require signed identities from visitors who claim a user id.
        #[arg(long)]
        enforce_identity: bool,
        /// A word to mask or reject (repeatable).
        #[arg(long = "sensitive-word")]
        sensitive_words: Vec<String>,
        /// `mask` or `reject`.
        #[arg(long, default_value = "mask", value_parser = parse_mode)]
        sensitive_mode: SensitiveMode,
    },
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
    ListSites,
    ListAgents,
}

fn parse_mode(text: &str) -> Result<SensitiveMode, String> {
    match text {
        "mask" => Ok(SensitiveMode::Mask),
        "reject" => Ok(SensitiveMode::Reject),
        other => Err(format!("must be mask or reject, not {other:?}")),
    }
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { http, log_format } => {
            let overrides = ConfigOverrides {
                data_dir: cli.data_dir,
                http,
                log: log_format.map(|format| LogOverrides { format: Some(format) }),
            };
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            crate::telemetry::init(&config.log);
            let listener = tokio::net::TcpListener::bind(config.http)
                .await
                .with_context(|| format!("listening on {}", config.http))?;
            crate::server::run(config, listener, crate::server::termination_signal()).await
        }
        Command::Bench(command) => crate::bench::run(command).await,
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

fn admin_command(args: AdminArgs, config: &Config) -> AdminCommand {
    match args {
        AdminArgs::CreateSite { name, origins, enforce_identity, sensitive_words, sensitive_mode } => {
            AdminCommand::CreateSite { name, origins, enforce_identity, sensitive_words, sensitive_mode }
        }
        AdminArgs::CreateAgent { email, password, name, role, sites, capacity } => AdminCommand::CreateAgent {
            email,
            password,
            name,
            role,
            sites,
            capacity: capacity.unwrap_or(config.routing.default_capacity),
        },
        AdminArgs::ResetPassword { email, password } => AdminCommand::ResetPassword { email, password },
        AdminArgs::ListSites => AdminCommand::ListSites,
        AdminArgs::ListAgents => AdminCommand::ListAgents,
    }
}

/// Runs an admin command on the database directly, or through the server that holds it.
async fn run_admin(config: &Config, command: AdminCommand) -> anyhow::Result<Result<Value, String>> {
    let data_dir = config.data_dir.clone();
    let storage = config.storage.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open(&data_dir, &storage, None)).await?;
    match opened {
        Ok(store) => {
            let answer = command.execute(&store).await;
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

fn print_answer(value: &Value) {
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
