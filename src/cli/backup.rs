//! `kefu backup`, `kefu restore` and `kefu check`: run by the server through its control socket
//! when one holds the database, or by this process when none does. A backup is one archive of
//! the database snapshot and the uploads (`history::archive`).

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
    let (snapshot, archive, uploads_of) = (staging.clone(), file.to_owned(), data_dir.clone());
    let archived =
        tokio::task::spawn_blocking(move || crate::history::archive::write_archive(&snapshot, &uploads_of, &archive))
            .await;
    let _ = std::fs::remove_file(&staging);
    let archived = archived?.with_context(|| format!("writing {}", file.display()))?;
    println!("backup={}", file.display());
    crate::cli::print_answer(&summary);
    println!("uploads={}", archived.n_uploads);
    println!("upload_bytes={}", archived.upload_bytes);
    for id in &archived.missing_uploads {
        eprintln!("kefu: warning: upload {id} was removed while the backup was written; it is not in the backup");
    }
    Ok(())
}

/// `kefu restore FILE [--force]`: an archive (database and uploads) or, as written before
/// archives, a bare database file.
pub async fn run_restore(config: &Config, file: &Path, force: bool) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    if !file.exists() {
        return Err(BackupError::Missing(file.to_owned()).into());
    }
    if !force && !crate::history::archive::is_empty_directory(&data_dir) {
        anyhow::bail!(
            "the data directory {} is not empty; restore into an empty one, or pass --force to replace its database",
            data_dir.display()
        );
    }
    let backup = file.to_owned();
    let (summary, n_uploads) = tokio::task::spawn_blocking(move || {
        if crate::history::archive::is_archive(&backup) {
            crate::history::archive::restore_archive(&data_dir, &backup)
                .map(|restored| (restored.database, Some(restored.n_uploads)))
        } else {
            restore(&data_dir, &backup).map(|summary| (summary, None))
        }
    })
    .await??;
    println!("restored={}", file.display());
    if let Some(n_uploads) = n_uploads {
        println!("uploads={n_uploads}");
    }
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
    if let Some(problem) = report.problem {
        anyhow::bail!("the database is damaged: {problem}");
    }
    if !report.missing_uploads.is_empty() {
        anyhow::bail!(
            "{} attachments are missing from {} (restore them from a backup)",
            report.missing_uploads.len(),
            config.data_dir.join(crate::chat::uploads::UPLOADS_DIR).display()
        );
    }
    Ok(())
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
    println!("missing_uploads={}", report.missing_uploads.len());
    for id in &report.missing_uploads {
        println!("missing_upload={id}");
    }
}
