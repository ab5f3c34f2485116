//! Administration commands, run either directly on the database or through the running server.
//!
//! redb lets one process open the database. When `kefu admin ...` finds it held by a running
//! server, it sends the command over the server's control socket (`DATA_DIR/kefu.sock`, mode
//! 0600, so only the owner of the data directory can use it) and the server runs it. Either way
//! the same [`AdminCommand::execute`] does the work.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::base::field_error::FieldError;
use crate::chat::sensitive_words::SensitiveMode;
use crate::cluster::backend::Backend;
use crate::history::audit::{self, Actor};
use crate::history::backup::BackupError;
use crate::history::export::{ExportRequest, HistoryExport};
use crate::net::AppState;
use crate::people::agent_administration::AgentAdministration;
use crate::people::agent_store::AgentStore;
use crate::people::agents::AgentError;
use crate::people::agents::{self, NewAgent, Role};
use crate::sites::NewSite;
use crate::sites::SiteError;
use crate::sites::store::SiteStore;
use crate::storage::StorageError;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The control socket's file name in the data directory.
pub const SOCKET_FILE: &str = "kefu.sock";

/// Longest request line accepted on the control socket.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A new site, as `kefu admin create-site` takes it and the control socket carries it.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct SiteArgs {
    #[arg(long)]
    pub name: String,
    /// An origin allowed to embed the widget (repeatable); `*` allows any.
    #[arg(long = "origin")]
    pub origins: Vec<String>,
    /// Require signed identities from visitors who claim a user id.
    #[arg(long)]
    pub enforce_identity: bool,
    /// A word to mask or reject (repeatable).
    #[arg(long = "sensitive-word")]
    pub sensitive_words: Vec<String>,
    /// `mask` or `reject`.
    #[arg(long, default_value = "mask")]
    pub sensitive_mode: SensitiveMode,
    /// The first thing the widget says.
    #[arg(long)]
    #[serde(default)]
    pub welcome_text: Option<String>,
    /// Ask visitors for name, email and question before the chat.
    #[arg(long)]
    #[serde(default)]
    pub prechat_form: bool,
    /// Ask visitors to rate a conversation when it closes.
    #[arg(long)]
    #[serde(default)]
    pub satisfaction_rating: bool,
}

impl From<SiteArgs> for NewSite {
    fn from(site: SiteArgs) -> NewSite {
        NewSite {
            name: site.name,
            allowed_origins: site.origins,
            enforce_identity: site.enforce_identity,
            sensitive_words: site.sensitive_words,
            sensitive_mode: site.sensitive_mode,
            welcome_text: site.welcome_text,
            prechat_form: site.prechat_form,
            satisfaction_rating: site.satisfaction_rating,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminCommand {
    CreateSite(SiteArgs),
    CreateAgent {
        email: String,
        password: String,
        name: String,
        role: Role,
        sites: Vec<String>,
        capacity: u32,
    },
    ResetPassword {
        email: String,
        password: String,
    },
    /// Turns an agent's two-factor login off (a lost phone and lost recovery codes); their
    /// sessions end.
    ResetTwoFactor {
        email: String,
    },
    ListSites,
    ListAgents,
    /// Writes a consistent snapshot of the database to `path` (a new file).
    Backup {
        path: PathBuf,
    },
    /// Checks a snapshot of the database and reports what it holds.
    Check,
    /// Sets how many days a site keeps its history (`None`: forever).
    SetRetention {
        site: String,
        days: Option<u32>,
    },
}

/// Why an admin command failed; the socket and the CLI print it.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("no site with key {0}")]
    NoSuchSite(String),
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("encoding the answer failed: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl AdminCommand {
    /// The command's name, for logs (the arguments may hold a password).
    pub fn name(&self) -> &'static str {
        match self {
            AdminCommand::CreateSite(_) => "create_site",
            AdminCommand::CreateAgent { .. } => "create_agent",
            AdminCommand::ResetPassword { .. } => "reset_password",
            AdminCommand::ResetTwoFactor { .. } => "reset_two_factor",
            AdminCommand::ListSites => "list_sites",
            AdminCommand::ListAgents => "list_agents",
            AdminCommand::Backup { .. } => "backup",
            AdminCommand::Check => "check",
            AdminCommand::SetRetention { .. } => "set_retention",
        }
    }

    /// Runs the command; the answer is a JSON object of `key: value` lines for the CLI to print.
    pub async fn execute(self, store: &Backend) -> Result<Value, ControlError> {
        match self {
            AdminCommand::CreateSite(site) => {
                let site = SiteStore::create(store, site.into()).await?;
                audit::record(store, Actor::command_line(), "site.create", &site.key, format!("name {:?}", site.name))
                    .await;
                Ok(json!({ "site_key": site.key, "site_secret": site.secret }))
            }
            AdminCommand::CreateAgent { email, password, name, role, sites, capacity } => {
                let agent = agents::create(store, NewAgent { email, password, name, role, sites, capacity }).await?;
                let detail = format!("role {:?}, sites {:?}", agent.role, agent.sites);
                audit::record(store, Actor::command_line(), "agent.create", &agent.email, detail).await;
                Ok(json!({ "agent_id": agent.id, "email": agent.email }))
            }
            AdminCommand::ResetPassword { email, password } => {
                let agent = agents::reset_password(store, &email, &password).await?;
                let detail = "sessions ended".to_owned();
                audit::record(store, Actor::command_line(), "agent.reset_password", &agent.email, detail).await;
                Ok(json!({ "agent_id": agent.id, "password": "changed" }))
            }
            AdminCommand::ResetTwoFactor { email } => {
                let Some(agent) = store.get_by_email(&email).await? else {
                    return Err(AgentError::NotFound(email).into());
                };
                let agent = agents::remove_two_factor(store, agent.id, None, true).await?;
                let detail = "sessions ended".to_owned();
                audit::record(store, Actor::command_line(), "agent.reset_two_factor", &agent.email, detail).await;
                Ok(json!({ "agent_id": agent.id, "two_factor": "off" }))
            }
            AdminCommand::ListSites => {
                let sites = SiteStore::list(store).await?;
                let lines: Vec<String> = sites
                    .iter()
                    .map(|site| format!("{} {} origins={}", site.key, site.name, site.allowed_origins.join(",")))
                    .collect();
                Ok(json!({ "sites": lines }))
            }
            AdminCommand::ListAgents => {
                let agents = AgentAdministration::list(store).await?;
                let lines: Vec<String> = agents
                    .iter()
                    .map(|agent| {
                        format!("{} {} {:?} sites={}", agent.id, agent.email, agent.role, agent.sites.join(","))
                    })
                    .collect();
                Ok(json!({ "agents": lines }))
            }
            AdminCommand::Backup { path } => {
                let destination = path.clone();
                let summary = store
                    .appliance("a backup through kefu (back up PostgreSQL with its own tools)")?
                    .read(move |transaction| Ok(crate::history::backup::snapshot(transaction, &destination)))
                    .await??;
                Ok(json!({
                    "tables": summary.n_tables,
                    "day_shards": summary.n_day_shards,
                    "messages": summary.n_messages,
                    "records": summary.n_records,
                }))
            }
            AdminCommand::Check => {
                let store = store.appliance("kefu check (PostgreSQL checks its own data)")?;
                let report = crate::history::backup::check_running(store).await?;
                Ok(serde_json::to_value(report)?)
            }
            AdminCommand::SetRetention { site, days } => {
                if days == Some(0) {
                    return Err(
                        FieldError::new("days", "must be at least 1 (or omitted to keep history forever)").into()
                    );
                }
                let mut found = SiteStore::get(store, &site).await?.ok_or(ControlError::NoSuchSite(site))?;
                found.retention_days = days;
                let saved = SiteStore::save(store, found).await?;
                let detail = format!("retention_days: {days:?}");
                audit::record(store, Actor::command_line(), "site.update", &saved.key, detail).await;
                Ok(
                    json!({ "site": saved.key, "retention_days": days.map_or("forever".to_owned(), |days| days.to_string()) }),
                )
            }
        }
    }
}

pub fn socket_path_of(data_dir: &Path) -> Option<PathBuf> {
    Some(data_dir.join(SOCKET_FILE))
}

/// Serves the control socket until aborted.
#[cfg(unix)]
pub fn listen(app: AppState) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    let path = app.config.data_dir.join(SOCKET_FILE);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let app = app.clone();
            tokio::spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(reader.take(MAX_REQUEST_BYTES as u64));
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                if let Ok(command) = serde_json::from_str::<HistoryCommand>(&line) {
                    serve_history(&app, command, &mut writer).await;
                    return;
                }
                let answer = match serde_json::from_str::<AdminCommand>(&line) {
                    Ok(command) => {
                        tracing::info!(command = command.name(), "admin command over the control socket");
                        command.execute(&app.store).await.map_err(|error| error.to_string())
                    }
                    Err(error) => Err(format!("unreadable command: {error}")),
                };
                if answer.is_ok() {
                    // Sites may have changed: forget cached ones.
                    for site in SiteStore::list(&app.store).await.unwrap_or_default() {
                        app.sites.invalidate(&site.key);
                    }
                }
                let reply = match answer {
                    Ok(value) => json!({ "ok": value }),
                    Err(message) => json!({ "error": message }),
                };
                let _ = writer.write_all(format!("{reply}\n").as_bytes()).await;
            });
        }
    }))
}

#[cfg(not(unix))]
pub fn listen(_app: AppState) -> std::io::Result<tokio::task::JoinHandle<()>> {
    Ok(tokio::spawn(async {}))
}

/// Sends a command to the server holding `data_dir`.
#[cfg(unix)]
pub async fn send_to_server(data_dir: &Path, command: &AdminCommand) -> anyhow::Result<Result<Value, String>> {
    use anyhow::Context;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let path = data_dir.join(SOCKET_FILE);
    let stream = tokio::net::UnixStream::connect(&path).await.with_context(|| {
        format!("the database is held by another process, and its control socket {} does not answer", path.display())
    })?;
    let (reader, mut writer) = stream.into_split();
    writer.write_all(format!("{}\n", serde_json::to_string(command)?).as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    let reply: Value = serde_json::from_str(&line).context("reading the server's answer")?;
    Ok(match (reply.get("ok"), reply.get("error")) {
        (Some(value), _) => Ok(value.clone()),
        (_, Some(error)) => Err(error.as_str().unwrap_or("unknown error").to_owned()),
        _ => Err("the server's answer has neither ok nor error".to_owned()),
    })
}

#[cfg(not(unix))]
pub async fn send_to_server(_data_dir: &Path, _command: &AdminCommand) -> anyhow::Result<Result<Value, String>> {
    anyhow::bail!("the database is held by a running server; stop it to run admin commands")
}

/// A history command; its JSON tag (`history`) keeps it apart from admin commands on the socket.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "history", rename_all = "snake_case")]
pub enum HistoryCommand {
    Export(ExportRequest),
    Retention { dry_run: bool },
    Reindex,
}

/// Serves one history command on the control socket.
pub async fn serve_history<W: AsyncWrite + Unpin>(app: &AppState, command: HistoryCommand, writer: &mut W) {
    let result = serve_history_inner(app, command, writer).await;
    if let Err(error) = result {
        tracing::warn!(%error, "control socket client went away");
    }
}

async fn serve_history_inner<W: AsyncWrite + Unpin>(
    app: &AppState,
    command: HistoryCommand,
    writer: &mut W,
) -> std::io::Result<()> {
    let answer = match command {
        HistoryCommand::Export(request) => {
            writer.write_all(b"{\"ok\":{\"stream\":true}}\n").await?;
            let mut receiver = app.store.start_export(request);
            let mut failure = None;
            while let Some(item) = receiver.recv().await {
                match item {
                    Ok(bytes) => {
                        writer.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
                        writer.write_all(&bytes).await?;
                    }
                    Err(error) => failure = Some(error.to_string()),
                }
            }
            writer.write_all(&0u32.to_be_bytes()).await?;
            match failure {
                Some(message) => json!({ "error": message }),
                None => json!({ "ok": {} }),
            }
        }
        HistoryCommand::Retention { dry_run } => {
            let run = async {
                let store = app.store.appliance("retention")?;
                crate::history::retention::run(store, app.search.index("retention")?, dry_run).await
            };
            match run.await {
                Ok(plan) => json!({ "ok": plan }),
                Err(error) => json!({ "error": error.to_string() }),
            }
        }
        HistoryCommand::Reindex => match app.search.index("a rebuild of the search index") {
            Err(error) => json!({ "error": error.to_string() }),
            Ok(index) => match index.reindex().await {
                Ok(report) => json!({ "ok": report }),
                Err(error) => json!({ "error": error.to_string() }),
            },
        },
    };
    writer.write_all(format!("{answer}\n").as_bytes()).await?;
    writer.flush().await
}
