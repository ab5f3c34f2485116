//! Storage: redb is the source of truth; this module owns the database handle.
//!
//! Reads run on the blocking pool through [`Store::read`], and see every write answered before
//! they were asked for ([`visibility`]). Every write goes through the single group-commit writer
//! thread ([`writer`]), which makes each batch of operations durable (through the [`commit_log`],
//! or a durable redb commit) and only then answers them, so an acknowledgement always follows
//! the fsync.

pub mod commit_log;
pub mod dedup;
pub mod outbox;
pub mod tables;
pub mod visibility;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};

use crate::base::config::StorageConfig;
pub use writer::{WriteContext, WriterState};

/// The version of the stored format; a file with another version is refused or migrated on open.
pub const SCHEMA_VERSION: u64 = 1;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "kefu.redb";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the database is in use by another kefu process (a running server holds {0})")]
    AlreadyOpen(PathBuf),
    #[error("the database was written by a newer kefu (format {found}, this build reads {SCHEMA_VERSION})")]
    NewerFormat { found: u64 },
    #[error("database error: {0}")]
    Redb(#[from] redb::Error),
    #[error("a stored record could not be decoded: {0}")]
    Corrupt(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the storage writer has stopped")]
    WriterStopped,
    #[error("a write operation panicked: {0}")]
    Panicked(String),
    /// Nothing of the operation was stored: its batch failed (another operation in it, the
    /// commit, or the commit log), the writer could not begin the batch, or it stopped first.
    #[error("the write was not stored: {0}")]
    NotStored(writer::WriteFailure),
    /// An error of a database server (cluster mode's PostgreSQL), with its message.
    #[error("database server: {0}")]
    Server(String),
    /// What only the appliance's storage serves so far, asked of a cluster node.
    #[error("{0} is not available in cluster mode yet")]
    ApplianceOnly(&'static str),
}

macro_rules! redb_error_into_storage_error {
    ($($error:ty),*) => {$(
        impl From<$error> for StorageError {
            fn from(error: $error) -> Self {
                StorageError::Redb(error.into())
            }
        }
    )*};
}
redb_error_into_storage_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Encodes an entity record as JSON.
pub fn encode_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("entity records always serialize")
}

/// Encodes an entity record as JSON into `buffer` (emptied first), so a caller that encodes many
/// records reuses one allocation.
pub fn encode_json_into<T: serde::Serialize>(value: &T, buffer: &mut Vec<u8>) {
    buffer.clear();
    serde_json::to_writer(&mut *buffer, value).expect("entity records always serialize");
}

/// Decodes an entity record stored as JSON.
pub fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|error| StorageError::Corrupt(error.to_string()))
}

/// Decodes a compact record stored with postcard.
pub fn decode_postcard<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|error| StorageError::Corrupt(error.to_string()))
}

/// Encodes a compact record with postcard.
pub fn encode_postcard<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Sized first, so the record is written into one allocation instead of a growing one.
    let size = postcard::experimental::serialized_size(value).expect("compact records always serialize");
    postcard::to_extend(value, Vec::with_capacity(size)).expect("compact records always serialize")
}

/// The handle every part of kefu shares. Cloning is cheap.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    /// The open database; readers open their own transactions on it.
    database: Arc<Database>,
    /// The queue into the writer thread.
    writer: writer::WriterHandle,
    /// Changes only when data is restored from a backup; clients resuming across it must reload.
    epoch: u64,
    data_dir: PathBuf,
    /// Reads run so far ([`Store::n_reads`]).
    n_reads: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (or creates) the database in `data_dir` and starts the writer thread.
    /// `hooks` adds the layers' steps before each commit and receives what batches publish.
    pub fn open(data_dir: &Path, config: &StorageConfig, hooks: writer::WriterHooks) -> Result<Store, StorageError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let database = Database::builder()
            .set_cache_size(config.cache_mib.max(1) * 1024 * 1024)
            .set_repair_callback(|session| crate::base::systemd::on_repair_progress(session.progress()))
            .create(&path)
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => StorageError::AlreadyOpen(path.clone()),
                other => other.into(),
            })?;
        let database = Arc::new(database);
        let replayed = commit_log::replay(&database, data_dir)?;
        let epoch = initialise(&database)?;
        let state = WriterState::load(&database)?;
        let log = match config.commit_log {
            true => Some(commit_log::CommitLog::open(data_dir, epoch, replayed.sequence)?),
            false => None,
        };
        let writer = writer::spawn(database.clone(), state, config.clone(), log, hooks)?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                database,
                writer,
                epoch,
                data_dir: data_dir.to_owned(),
                n_reads: Default::default(),
            }),
        })
    }

    /// The epoch of this database (see docs/protocol.md, "Resume").
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// How many reads ([`Store::read`], [`Store::read_blocking`]) ran since the store opened: what
    /// shows that idle parts of the server (a gRPC subscriber) read nothing.
    pub fn n_reads(&self) -> u64 {
        self.inner.n_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `read` in a read transaction on the blocking pool. The transaction sees every write
    /// answered before the call ([`visibility`]).
    pub async fn read<R, F>(&self, read: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<R, StorageError> + Send + 'static,
    {
        self.inner.n_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.writer.visibility.answered_visible().await;
        let database = self.inner.database.clone();
        tokio::task::spawn_blocking(move || {
            let transaction = database.begin_read()?;
            read(&transaction)
        })
        .await
        .map_err(|error| StorageError::Panicked(error.to_string()))?
    }

    /// Runs `read` in a read transaction on the calling thread (for blocking contexts only).
    pub fn read_blocking<R>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        self.inner.n_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.writer.visibility.wait_for_answered();
        let transaction = self.inner.database.begin_read()?;
        read(&transaction)
    }

    /// Queues `operation` for the writer and waits until its batch is durably committed.
    ///
    /// The operation returns `Ok(Err(domain error))` to refuse without writing, and must not
    /// write anything before it has decided to succeed (the batch it shares is committed whole).
    pub async fn write<R, E, F>(&self, operation: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&mut WriteContext<'_>) -> Result<Result<R, E>, StorageError> + Send + 'static,
    {
        self.inner.writer.submit(operation).await
    }

    /// Queues `operation` without waiting for its commit: its effects reach clients as events
    /// after the commit, and `on_abort` runs instead if it is not stored (its batch fails, or
    /// the writer stops before running it). Waits only for room in
    /// the writer's queue, so a connection can have many sends in flight.
    pub async fn write_detached<F, A>(&self, operation: F, on_abort: A) -> Result<(), StorageError>
    where
        F: FnOnce(&mut WriteContext<'_>) -> Result<(), StorageError> + Send + 'static,
        A: FnOnce(writer::WriteFailure) + Send + 'static,
    {
        self.inner.writer.submit_detached(operation, on_abort).await
    }

    /// Operations waiting for the writer (for metrics).
    pub fn writer_queue_len(&self) -> usize {
        self.inner.writer.queue_len()
    }

    /// Commits everything queued before the call and stops the writer. Operations queued behind
    /// the stop fail with `NotStored`, later writes with `WriterStopped`.
    pub async fn shutdown(&self) {
        self.inner.writer.shutdown().await;
    }
}

/// Creates the tables and meta records of a new database, or checks the format of an existing one.
/// Returns the database epoch.
fn initialise(database: &Database) -> Result<u64, StorageError> {
    let transaction = database.begin_write()?;
    let epoch = {
        let mut meta = transaction.open_table(tables::META)?;
        let version = meta.get("schema_version")?.map(|value| value.value());
        match version {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StorageError::NewerFormat { found });
            }
            Some(_) => {}
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
        }
        let epoch = meta.get("epoch")?.map(|value| value.value());
        match epoch {
            Some(epoch) => epoch,
            None => {
                let epoch = new_epoch();
                meta.insert("epoch", epoch)?;
                epoch
            }
        }
    };
    // Open every fixed table once so readers never meet a missing table.
    macro_rules! open_each {
        ($($table:ident),*) => {$(
            transaction.open_table(tables::$table)?;
        )*};
    }
    tables::with_fixed_tables!(open_each);
    transaction.commit()?;
    Ok(epoch)
}

/// A new epoch: a random number below 2^31, so every client language holds it exactly.
pub fn new_epoch() -> u64 {
    u64::from(rand::random::<u32>() >> 1).max(1)
}

/// Reads a counter from the meta table.
pub fn read_meta(transaction: &ReadTransaction, key: &str) -> Result<Option<u64>, StorageError> {
    let meta = transaction.open_table(tables::META)?;
    Ok(meta.get(key)?.map(|value| value.value()))
}
