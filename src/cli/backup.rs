//! `kefu backup`, `kefu restore` and `kefu check`: run by the server through its control socket
//! when one holds the database, or by this process when none does.

use std::path::Path;

use anyhow::Context;

use crate::base::config::Config;
use crate::history::backup::*;
use crate::net::control::AdminCommand;

/// `kefu backup FILE`: the server (or this process, when none runs) snapshots the database into
/// a file beside it, which is then moved to `file`.
pub async fn run_backup(config: &Config, file: &Path) -> anyhow::Result<()> {
    if file.exists() {
        anyhow::bail!("{} already exists; choose a new file name", file.display());
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let data_dir = std::path::absolute(&config.data_dir).context("resolving the data directory")?;
    let staging = data_dir.join(format!("kefu-backup-{}.redb.partial", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let answer = crate::cli::run_admin(config, AdminCommand::Backup { path: staging.clone() }).await?;
    let summary = match answer {
        Ok(summary) => summary,
        Err(message) => {
            let _ = std::fs::remove_file(&staging);
            anyhow::bail!("the backup failed: {message}");
        }
    };
    if std::fs::rename(&staging, file).is_err() {
        // Another file system: copy, then remove the staged file.
        let copied = std::fs::copy(&staging, file);
        let _ = std::fs::remove_file(&staging);
        copied.with_context(|| format!("writing {}", file.display()))?;
    }
    println!("backup={}", file.display());
    crate::cli::print_answer(&summary);
    Ok(())
}

/// `kefu restore FILE`.
pub async fn run_restore(config: &Config, file: &Path) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let backup = file.to_owned();
    let summary = tokio::task::spawn_blocking(move || restore(&data_dir, &backup)).await??;
    println!("restored={}", file.display());
    println!("epoch={}", summary.epoch);
    if let Some(previous) = summary.previous {
        println!("previous={}", previous.display());
    }
    Ok(())
}

/// `kefu check`: checks a stopped server's file directly, or asks the running server.
pub async fn run_check(config: &Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let checked = tokio::task::spawn_blocking(move || check_stopped(&data_dir)).await?;
    let report = match checked {
        Ok(report) => report,
        Err(BackupError::ServerRunning(_)) => {
            eprintln!("kefu: the server is running; checking a snapshot of its database");
            match crate::net::control::send_to_server(&config.data_dir, &AdminCommand::Check).await? {
                Ok(value) => serde_json::from_value(value).context("reading the server's report")?,
                Err(message) => anyhow::bail!("the check failed: {message}"),
            }
        }
        Err(error) => return Err(error.into()),
    };
    print_report(&report);
    warn_about_loose_modes(&config.data_dir);
    match report.problem {
        Some(problem) => anyhow::bail!("the database is damaged: {problem}"),
        None => Ok(()),
    }
}

/// Warns (on stderr) about files in the data directory that group or others may read.
fn warn_about_loose_modes(data_dir: &Path) {
    match crate::base::file_modes::find_loose_modes(data_dir) {
        Ok(loose) => {
            for entry in &loose {
                eprintln!(
                    "kefu: warning: {} has mode {:04o}; others may read kefu's data (chmod go-rwx, or start kefu, which tightens it)",
                    entry.path.display(),
                    entry.mode
                );
            }
            println!("loose_modes={}", loose.len());
        }
        Err(error) => eprintln!("kefu: warning: could not check the modes in {}: {error}", data_dir.display()),
    }
}

fn print_report(report: &CheckReport) {
    println!("intact={}", report.problem.is_none());
    let or_none = |value: Option<u64>| value.map(|value| value.to_string()).unwrap_or_else(|| "none".into());
    println!("schema_version={}", or_none(report.schema_version));
    println!("epoch={}", or_none(report.epoch));
    println!("day_shards={}", report.n_day_shards);
    println!("messages={}", report.n_messages);
    if let (Some(first), Some(last)) = (&report.first_day, &report.last_day) {
        println!("days={first}..{last}");
    }
    for (name, n) in &report.tables {
        println!("table.{name}={n}");
    }
}
