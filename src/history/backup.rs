//! Backups, restores and integrity checks of the database file.
//!
//! A backup is a consistent snapshot: one read transaction of the running database, copied table
//! by table into a fresh redb file. It never copies the live file, whose pages a concurrent
//! commit may be rewriting. Restoring replaces the database of a stopped server with a backup and
//! gives it a new `epoch`, so clients that resume across the restore reload their history.
//! A check opens a copy of the file with redb's integrity check and reports counts, day shards and
//! the schema version.
//!
//! Every table must be listed in [`copy_fixed_tables`] (message day shards are found by name): a
//! snapshot of a database holding a table it does not know fails rather than dropping data.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{
    Database, Key, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, Value, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::storage::{self, DATABASE_FILE, SCHEMA_VERSION, StorageError, commit_log, tables};

/// The file the database had before the last restore, kept beside it.
pub const BEFORE_RESTORE_FILE: &str = "kefu.redb.before-restore";

/// Where a commit log that could not be replayed into the replaced database is kept.
pub const BEFORE_RESTORE_LOG_FILE: &str = "kefu.wal.before-restore";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; choose a new file name")]
    Exists(PathBuf),
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("the server is running (it holds {0}); stop it before restoring")]
    ServerRunning(PathBuf),
    #[error("table {0} is not known to the backup; add it to backup::copy_fixed_tables")]
    UnknownTable(String),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("the backup was written by a newer kefu (format {found}, this build reads {SCHEMA_VERSION})")]
    NewerFormat { found: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

macro_rules! redb_error_into_backup_error {
    ($($error:ty),*) => {$(
        impl From<$error> for BackupError {
            fn from(error: $error) -> Self {
                BackupError::Storage(StorageError::Redb(error.into()))
            }
        }
    )*};
}
redb_error_into_backup_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What a snapshot holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub n_tables: usize,
    pub n_day_shards: usize,
    pub n_messages: u64,
    pub n_records: u64,
}

/// Copies everything `source` sees into a new redb file at `destination`.
pub fn snapshot(source: &ReadTransaction, destination: &Path) -> Result<SnapshotSummary, BackupError> {
    if destination.exists() {
        return Err(BackupError::Exists(destination.to_owned()));
    }
    let copied = (|| {
        let database = Database::create(destination)?;
        let transaction = database.begin_write()?;
        let mut summary = SnapshotSummary::default();
        let mut copied = copy_fixed_tables(source, &transaction)?;
        for handle in source.list_tables()? {
            let name = handle.name().to_owned();
            if copied.contains_key(&name) {
                continue;
            }
            if tables::message_shard_day(&name).is_none() {
                return Err(BackupError::UnknownTable(name));
            }
            let n = copy_table(source, &transaction, tables::message_shard(&name))?;
            summary.n_day_shards += 1;
            summary.n_messages += n;
            copied.insert(name, n);
        }
        transaction.commit()?;
        summary.n_tables = copied.len();
        summary.n_records = copied.values().sum();
        Ok(summary)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(destination);
    }
    copied
}

/// Copies every table that is not a message shard; returns each table's name and record count.
fn copy_fixed_tables(
    source: &ReadTransaction,
    destination: &WriteTransaction,
) -> Result<BTreeMap<String, u64>, BackupError> {
    let mut copied = BTreeMap::new();
    macro_rules! copy_each {
        ($($table:ident),*) => {$(
            copied.insert(tables::$table.name().to_owned(), copy_table(source, destination, tables::$table)?);
        )*};
    }
    tables::with_fixed_tables!(copy_each);
    Ok(copied)
}

/// Copies one table; a table missing from `source` copies nothing.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    source: &ReadTransaction,
    destination: &WriteTransaction,
    definition: TableDefinition<K, V>,
) -> Result<u64, BackupError> {
    let from: ReadOnlyTable<K, V> = match source.open_table(definition) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let mut to = destination.open_table(definition)?;
    let mut n = 0;
    for entry in from.iter()? {
        let (key, value) = entry?;
        to.insert(key.value(), value.value())?;
        n += 1;
    }
    Ok(n)
}

/// What `kefu restore` did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreSummary {
    pub epoch: u64,
    pub previous: Option<PathBuf>,
}

/// Replaces the database in `data_dir` with the backup at `backup` (the server must be stopped).
/// The backup is checked first; the old file is kept as [`BEFORE_RESTORE_FILE`].
pub fn restore(data_dir: &Path, backup: &Path) -> Result<RestoreSummary, BackupError> {
    if !backup.exists() {
        return Err(BackupError::Missing(backup.to_owned()));
    }
    std::fs::create_dir_all(data_dir).map_err(StorageError::from)?;
    let live_path = data_dir.join(DATABASE_FILE);
    // Holding the live database open proves no server runs, and keeps one from starting.
    let live = if live_path.exists() {
        match Database::open(&live_path) {
            Ok(database) => {
                // The file kept as the one before the restore holds everything committed.
                if let Err(error) = commit_log::replay(&database, data_dir) {
                    tracing::warn!(%error, "the commit log does not replay into the current database");
                }
                Some(database)
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(BackupError::ServerRunning(live_path)),
            // A damaged live file is a reason to restore, not a reason to refuse.
            Err(error) => {
                tracing::warn!(%error, "the current database does not open; replacing it anyway");
                None
            }
        }
    } else {
        None
    };
    let live_epoch = live
        .as_ref()
        .and_then(|database| database.begin_read().ok())
        .and_then(|transaction| storage::read_meta(&transaction, "epoch").ok().flatten());

    let staging = data_dir.join(format!("{DATABASE_FILE}.restoring"));
    let _ = std::fs::remove_file(&staging);
    std::fs::copy(backup, &staging).map_err(StorageError::from)?;
    let prepared = prepare_restored(&staging, live_epoch);
    let epoch = match prepared {
        Ok(epoch) => epoch,
        Err(error) => {
            let _ = std::fs::remove_file(&staging);
            return Err(error);
        }
    };
    // A log left over (its database did not open, or it did not replay) belongs to the file set
    // aside, and must be gone before the restored file takes its place.
    let log = commit_log::log_path(data_dir);
    if std::fs::metadata(&log).is_ok_and(|metadata| metadata.len() > 0) {
        std::fs::rename(&log, data_dir.join(BEFORE_RESTORE_LOG_FILE)).map_err(StorageError::from)?;
    }
    let previous = if live_path.exists() {
        let previous = data_dir.join(BEFORE_RESTORE_FILE);
        std::fs::rename(&live_path, &previous).map_err(StorageError::from)?;
        Some(previous)
    } else {
        None
    };
    std::fs::rename(&staging, &live_path).map_err(StorageError::from)?;
    std::fs::File::open(data_dir).and_then(|directory| directory.sync_all()).map_err(StorageError::from)?;
    drop(live);
    Ok(RestoreSummary { epoch, previous })
}

/// Checks the staged copy of a backup and gives it a new epoch; returns the epoch.
fn prepare_restored(staging: &Path, live_epoch: Option<u64>) -> Result<u64, BackupError> {
    let report = check_file(staging);
    if let Some(problem) = report.problem {
        return Err(BackupError::Damaged(problem));
    }
    let database = Database::open(staging)?;
    let transaction = database.begin_write()?;
    let epoch = {
        let mut meta = transaction.open_table(tables::META)?;
        let found = meta.get("schema_version")?.map(|value| value.value());
        match found {
            Some(found) if found > SCHEMA_VERSION => return Err(BackupError::NewerFormat { found }),
            Some(_) => {}
            None => return Err(BackupError::Damaged("it has no schema_version; it is not a kefu backup".into())),
        }
        let old_epoch = meta.get("epoch")?.map(|value| value.value());
        let mut epoch = storage::new_epoch();
        while Some(epoch) == old_epoch || Some(epoch) == live_epoch {
            epoch = storage::new_epoch();
        }
        meta.insert("epoch", epoch)?;
        epoch
    };
    transaction.commit()?;
    Ok(epoch)
}

/// The outcome of an integrity check.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckReport {
    /// What is wrong, if anything; `None` means the file is intact.
    pub problem: Option<String>,
    pub schema_version: Option<u64>,
    pub epoch: Option<u64>,
    /// Records per table, message shards excluded.
    pub tables: BTreeMap<String, u64>,
    pub n_day_shards: usize,
    pub n_messages: u64,
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    /// Uploads the database references whose file is not in the uploads directory.
    #[serde(default)]
    pub missing_uploads: Vec<String>,
}

/// Runs redb's integrity check on the file at `path` (which may be repaired in place: pass a
/// copy) and counts what it holds.
pub fn check_file(path: &Path) -> CheckReport {
    match catch_unwind(AssertUnwindSafe(|| check_file_inner(path))) {
        Ok(Ok(report)) => report,
        Ok(Err(problem)) => CheckReport { problem: Some(problem), ..CheckReport::default() },
        Err(_) => CheckReport { problem: Some("reading the file failed (it is damaged)".into()), ..Default::default() },
    }
}

fn check_file_inner(path: &Path) -> Result<CheckReport, String> {
    let mut database = Database::builder()
        .set_check_integrity_on_open(true)
        .open(path)
        .map_err(|error| format!("the file does not open: {error}"))?;
    let mut report = CheckReport::default();
    match database.check_integrity() {
        Ok(true) => {}
        Ok(false) => {
            report.problem = Some("the file was inconsistent (it needed a repair after a crash)".into());
        }
        Err(error) => return Err(format!("the integrity check failed: {error}")),
    }
    let transaction = database.begin_read().map_err(|error| error.to_string())?;
    (|| -> Result<(), StorageError> {
        report.schema_version = storage::read_meta(&transaction, "schema_version")?;
        report.epoch = storage::read_meta(&transaction, "epoch")?;
        let mut days = Vec::new();
        for handle in transaction.list_tables()? {
            let n = transaction.open_untyped_table(handle.clone())?.len()?;
            match tables::message_shard_day(handle.name()) {
                Some(day) => {
                    days.push(day);
                    report.n_messages += n;
                }
                None => {
                    report.tables.insert(handle.name().to_owned(), n);
                }
            }
        }
        days.sort_unstable();
        report.n_day_shards = days.len();
        report.first_day = days.first().map(|day| crate::base::clock::day_to_date(*day).to_string());
        report.last_day = days.last().map(|day| crate::base::clock::day_to_date(*day).to_string());
        Ok(())
    })()
    .map_err(|error| format!("reading the file failed: {error}"))?;
    if report.problem.is_none() {
        match report.schema_version {
            None => report.problem = Some("no schema_version: this is not a kefu database".into()),
            Some(found) if found > SCHEMA_VERSION => {
                report.problem = Some(format!("format {found} is newer than this build reads ({SCHEMA_VERSION})"));
            }
            Some(_) => {}
        }
    }
    Ok(report)
}

/// [`check_file`], and the uploads of `data_dir` the file references that are missing.
fn check_file_and_uploads(path: &Path, data_dir: &Path) -> CheckReport {
    let mut report = check_file(path);
    if report.problem.is_none() {
        let missing = (|| -> Result<Vec<String>, BackupError> {
            let database = Database::open(path)?;
            let transaction = database.begin_read()?;
            Ok(crate::chat::uploads::missing_files(&transaction, data_dir)?)
        })();
        match missing {
            Ok(missing) => report.missing_uploads = missing,
            Err(error) => report.problem = Some(format!("listing the uploads failed: {error}")),
        }
    }
    report
}

/// Checks the database of a stopped server: opens it (proving no server holds it), applies its
/// commit log, copies the file while holding it, and checks the copy, so the check itself never
/// changes the original.
/// `Err(ServerRunning)` means the caller should ask the server instead.
pub fn check_stopped(data_dir: &Path) -> Result<CheckReport, BackupError> {
    let live_path = data_dir.join(DATABASE_FILE);
    if !live_path.exists() {
        return Err(BackupError::Missing(live_path));
    }
    let copy_path = data_dir.join(format!("{DATABASE_FILE}.check-{}", std::process::id()));
    let held = match catch_unwind(|| Database::open(&live_path)) {
        Ok(Ok(database)) => {
            // The copy checked holds the batches that so far are only in the commit log.
            if let Err(error) = commit_log::replay(&database, data_dir) {
                return Ok(CheckReport {
                    problem: Some(format!("the commit log does not replay: {error}")),
                    ..Default::default()
                });
            }
            Some(database)
        }
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => return Err(BackupError::ServerRunning(live_path)),
        // Damaged beyond opening: check a copy anyway, for the report.
        Ok(Err(_)) | Err(_) => None,
    };
    std::fs::copy(&live_path, &copy_path).map_err(StorageError::from)?;
    drop(held);
    let report = check_file_and_uploads(&copy_path, data_dir);
    let _ = std::fs::remove_file(&copy_path);
    Ok(report)
}

/// Checks the running database: snapshots it next to itself and checks the snapshot.
pub async fn check_running(store: &storage::Store) -> Result<CheckReport, BackupError> {
    let copy_path = store.data_dir().join(format!("{DATABASE_FILE}.check-{}", crate::base::secrets::new_trace_id()));
    let destination = copy_path.clone();
    let snapshotted = store
        .read(move |transaction| {
            snapshot(transaction, &destination).map_err(|error| StorageError::Corrupt(error.to_string()))
        })
        .await;
    if let Err(error) = snapshotted {
        let _ = std::fs::remove_file(&copy_path);
        return Ok(CheckReport {
            problem: Some(format!("reading the live database failed: {error}")),
            ..Default::default()
        });
    }
    let (path, data_dir) = (copy_path.clone(), store.data_dir().to_owned());
    let report = tokio::task::spawn_blocking(move || check_file_and_uploads(&path, &data_dir))
        .await
        .map_err(|error| StorageError::Panicked(error.to_string()))?;
    let _ = std::fs::remove_file(&copy_path);
    Ok(report)
}
