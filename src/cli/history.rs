//! The history commands of the CLI, `kefu export`, `kefu retention` and `kefu reindex`, run
//! directly on the data directory or, when a server holds the database, through its control
//! socket (src/control.rs): redb lets one process open the file, so the CLI never touches a
//! database a server has open; the server does the work and streams the answer back.
//!
//! Control socket framing of an export: after the request line the server answers one JSON
//! line (`{"ok":{"stream":true}}` or `{"error":...}`), then frames of `u32` big-endian length
//! plus bytes, then a zero length, then a final JSON line with the count or the error.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::base::config::Config;
use crate::history::export::{self, ExportRequest};
use crate::net::control::HistoryCommand;
use crate::search::Search;
use crate::storage::{StorageError, Store};

/// Runs a history command from the CLI. Export output goes to `output`; the answer of the
/// other commands is returned.
pub async fn run_cli(config: &Config, command: HistoryCommand, output: Box<dyn Write + Send>) -> anyhow::Result<Value> {
    let opened = super::open_database(config).await?;
    match opened {
        Ok(store) => {
            let answer = run_direct(&store, config, command, output).await;
            store.shutdown().await;
            answer
        }
        Err(StorageError::AlreadyOpen(_)) => {
            eprintln!("kefu: the server is running; sending the command to it");
            run_remote(&config.data_dir, command, output).await
        }
        Err(error) => Err(error).context("opening the database"),
    }
}

async fn run_direct(
    store: &Store,
    config: &Config,
    command: HistoryCommand,
    mut output: Box<dyn Write + Send>,
) -> anyhow::Result<Value> {
    match command {
        HistoryCommand::Export(request) => {
            let store = store.clone();
            let n_messages = tokio::task::spawn_blocking(move || {
                let mut failure = None;
                let exported = export::run(&store, &request, &mut |bytes| match output.write_all(&bytes) {
                    Ok(()) => true,
                    Err(error) => {
                        failure = Some(error);
                        false
                    }
                })?;
                output.flush()?;
                match failure {
                    Some(error) => Err(anyhow::Error::from(error).context("writing the export")),
                    None => Ok(exported),
                }
            })
            .await??;
            Ok(json!({ "messages": n_messages }))
        }
        HistoryCommand::Retention { dry_run } => {
            let search = open_search(store, config).await?;
            let plan = crate::history::retention::run(store, &search, dry_run).await;
            search.shutdown().await;
            Ok(serde_json::to_value(plan?)?)
        }
        HistoryCommand::Reindex => {
            let search = open_search(store, config).await?;
            let report = search.reindex().await;
            search.shutdown().await;
            Ok(serde_json::to_value(report?)?)
        }
    }
}

async fn open_search(store: &Store, config: &Config) -> anyhow::Result<Search> {
    let store = store.clone();
    let data_dir = config.data_dir.clone();
    tokio::task::spawn_blocking(move || Search::open(store, &data_dir)).await?.context("opening the search index")
}

#[cfg(unix)]
async fn run_remote(
    data_dir: &Path,
    command: HistoryCommand,
    mut output: Box<dyn Write + Send>,
) -> anyhow::Result<Value> {
    let path = data_dir.join(crate::net::control::SOCKET_FILE);
    let stream = tokio::net::UnixStream::connect(&path).await.with_context(|| {
        format!("the database is held by another process, and its control socket {} does not answer", path.display())
    })?;
    let (reader, mut writer) = stream.into_split();
    writer.write_all(format!("{}\n", serde_json::to_string(&command)?).as_bytes()).await?;
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut reply: Value = serde_json::from_str(&line).context("reading the server's answer")?;
    if matches!(command, HistoryCommand::Export(_)) && reply.get("ok").is_some() {
        let mut buffer = Vec::new();
        loop {
            let length = reader.read_u32().await.context("reading the export stream")? as usize;
            if length == 0 {
                break;
            }
            buffer.resize(length, 0);
            reader.read_exact(&mut buffer).await.context("reading the export stream")?;
            output.write_all(&buffer).context("writing the export")?;
        }
        output.flush()?;
        line.clear();
        reader.read_line(&mut line).await?;
        reply = serde_json::from_str(&line).context("reading the server's answer")?;
    }
    match (reply.get("ok"), reply.get("error")) {
        (Some(value), _) => Ok(value.clone()),
        (_, Some(error)) => anyhow::bail!("{}", error.as_str().unwrap_or("unknown error")),
        _ => anyhow::bail!("the server's answer has neither ok nor error"),
    }
}

#[cfg(not(unix))]
async fn run_remote(
    _data_dir: &Path,
    _command: HistoryCommand,
    _output: Box<dyn Write + Send>,
) -> anyhow::Result<Value> {
    anyhow::bail!("the database is held by a running server; stop it to run this command")
}

/// `kefu export --from DATE --to DATE [--site KEY] [--agent ID] --format csv|jsonl [--bom] [--output FILE]`
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// First UTC day, YYYY-MM-DD.
    #[arg(long)]
    pub from: String,
    /// Last UTC day, YYYY-MM-DD (inclusive).
    #[arg(long)]
    pub to: String,
    #[arg(long)]
    pub site: Option<String>,
    /// Only conversations assigned to this agent id.
    #[arg(long)]
    pub agent: Option<u64>,
    /// `csv` or `jsonl`.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Start the CSV with a UTF-8 byte order mark (for spreadsheets).
    #[arg(long)]
    pub bom: bool,
    /// Write here instead of standard output.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

pub async fn export_cli(config: &Config, args: ExportArgs) -> anyhow::Result<()> {
    let (from_day, to_day) = ExportRequest::dates(&args.from, &args.to).map_err(anyhow::Error::msg)?;
    let format = export::ExportFormat::parse(&args.format).map_err(anyhow::Error::msg)?;
    let request = ExportRequest {
        from_day,
        to_day,
        site: args.site,
        agent: args.agent,
        visible_sites: None,
        format,
        bom: args.bom,
    };
    let output: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let answer = run_cli(config, HistoryCommand::Export(request), output).await?;
    if let Some(n_messages) = answer.get("messages") {
        eprintln!("kefu: exported {n_messages} messages");
    }
    Ok(())
}
