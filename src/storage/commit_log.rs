//! The commit log: a write-ahead log in front of redb, so a batch is durable after one
//! sequential append and `fdatasync` instead of a durable redb commit of every page it touched.
//!
//! The writer records every table write of a batch (table, key bytes, value bytes or a removal)
//! through [`LoggedTransaction`], appends the batch as one record to `DATA_DIR/kefu.wal`, syncs
//! it, and only then commits the batch to redb with `Durability::None`: readers see it at once,
//! and redb keeps its pages in memory. In a lull, or every so often under load, a checkpoint
//! commits with `Durability::Immediate`, which makes everything before it durable in redb, and
//! the log is emptied. A batch that does something the log cannot replay (dropping a table) is
//! committed durably too.
//!
//! Each record carries the database epoch and a sequence number; every durable commit writes
//! the last sequence to `meta_v1.log_sequence`. Opening the database ([`replay`]) applies the
//! records newer than the durable `log_sequence` in one durable commit, then empties the log: the
//! state is exactly the one of the last record synced before a crash. (A table created by a
//! logged batch without any rows is not in the log; every reader treats a missing table as empty.)
//!
//! When the log file fails (a write, a sync, cutting off a failed record), the writer stops
//! using it: every batch commits durably until a checkpoint has emptied the file again.
//!
//! **Invariant:** a record is synced before its batch is committed to redb or answered, and the
//! log holds every logged batch since the last durable commit, in commit order.

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use redb::{
    AccessGuard, Database, Key, Range, ReadableTable, ReadableTableMetadata, TableDefinition, TableError, TableHandle,
    TableStats, Value, WriteTransaction,
};

use super::{StorageError, tables};

/// The log file inside the data directory.
pub const LOG_FILE: &str = "kefu.wal";

/// The empty file a checkpoint renames over [`LOG_FILE`] to empty the log (see [`CommitLog::cut`]);
/// one left by a crash before its rename is removed when the log opens.
const FRESH_LOG_FILE: &str = "kefu.wal.fresh";

/// The format of a record's payload; a record of another format is refused.
const RECORD_FORMAT: u8 = 1;

/// Bytes before a record's payload: its length and its CRC-32.
const RECORD_HEADER_BYTES: usize = 8;

/// Bytes of a payload before its writes: the format, the epoch and the sequence.
const PAYLOAD_PREFIX_BYTES: usize = 17;

/// The `meta_v1` key holding the sequence of the last logged batch in the database.
pub const SEQUENCE_KEY: &str = "log_sequence";

const INSERT: u8 = 0;
const REMOVE: u8 = 1;

/// A table's key and value types, with their number in a record. Only tables whose types
/// implement it can be opened in a [`LoggedTransaction`].
pub trait LoggedTypes {
    const NUMBER: u8;
}

/// The key and value types a logged write may have. A number, once given, never changes
/// meaning (records on disk carry it): new types get new numbers at the end.
macro_rules! logged_types {
    ($($number:literal => ($key:ty, $value:ty)),* $(,)?) => {
        $(impl LoggedTypes for ($key, $value) {
            const NUMBER: u8 = $number;
        })*

        fn apply_write(
            transaction: &WriteTransaction,
            types: u8,
            table: &str,
            key: &[u8],
            value: Option<&[u8]>,
        ) -> Result<(), StorageError> {
            match types {
                $($number => apply::<$key, $value>(transaction, table, key, value),)*
                other => Err(StorageError::Corrupt(format!("the commit log names an unknown table type {other}"))),
            }
        }
    };
}

logged_types! {
    0 => (&'static str, u64),
    1 => (&'static str, &'static [u8]),
    2 => (u64, &'static [u8]),
    3 => (&'static [u8; 32], &'static [u8]),
    4 => (&'static [u8; 32], u64),
    5 => ((&'static str, &'static str), u64),
    6 => ((u64, u64), ()),
    7 => (u64, u64),
    8 => (u64, &'static str),
    9 => ((u64, u32), ()),
    10 => ((u8, u64, &'static str), &'static [u8]),
    11 => ((u64, u8, u64), u64),
    12 => ((&'static str, u64), ()),
    13 => ((u64, u64), &'static [u8]),
    14 => ((&'static str, &'static str), i64),
    15 => (u64, i64),
    16 => ((u32, &'static str, u64, u64), &'static [u8]),
    17 => ((u32, &'static str, u64), u64),
    18 => ((&'static str, u64), &'static [u8]),
}

fn apply<K: Key + 'static, V: Value + 'static>(
    transaction: &WriteTransaction,
    table: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), StorageError> {
    let fits = |bytes: &[u8], width: Option<usize>| width.is_none_or(|width| width == bytes.len());
    if !fits(key, K::fixed_width()) || value.is_some_and(|value| !fits(value, V::fixed_width())) {
        return Err(StorageError::Corrupt(format!("a commit log write to {table} has the wrong width")));
    }
    let mut table = transaction.open_table(TableDefinition::<K, V>::new(table))?;
    // Decoding panics on bytes of the wrong shape; a record with a valid checksum has none
    // unless it was written by another build, which is refused rather than crashing every start.
    catch_unwind(AssertUnwindSafe(|| -> Result<(), redb::StorageError> {
        match value {
            Some(value) => drop(table.insert(K::from_bytes(key), V::from_bytes(value))?),
            None => drop(table.remove(K::from_bytes(key))?),
        }
        Ok(())
    }))
    .map_err(|_| StorageError::Corrupt("a commit log write does not decode".into()))??;
    Ok(())
}

/// A batch's write transaction, recording each write for the log.
///
/// A table opened in the batch stays open until the batch ends, so an operation that opens it
/// again (every message opens its day shard and `client_ids_v1`) finds it without redb's lookup
/// in its table of tables, and redb stages the table's root once per batch instead of once per
/// operation.
pub struct LoggedTransaction<'a> {
    transaction: &'a WriteTransaction,
    open_tables: RefCell<Vec<OpenTable>>,
    record: RefCell<Vec<u8>>,
    /// The batch did something the log cannot replay, so it must commit durably.
    unloggable: Cell<bool>,
}

/// A table kept open for the rest of a batch.
struct OpenTable {
    name: String,
    /// `TypeId` of the table's `(K, V)`.
    types: TypeId,
    /// The `redb::Table<'a, K, V>`, boxed, with its lifetime erased; `None` while closed
    /// (deleted, or about to be reopened with other types).
    table: Option<NonNull<dyn Erased>>,
    /// Where the [`LoggedTable`] that refers to it now was opened.
    lent_at: Option<&'static std::panic::Location<'static>>,
}

/// Any boxed table, so tables of different types share one list.
trait Erased {}
impl<T> Erased for T {}

impl<'a> LoggedTransaction<'a> {
    pub fn new(transaction: &'a WriteTransaction) -> Self {
        LoggedTransaction {
            transaction,
            open_tables: RefCell::new(Vec::new()),
            record: RefCell::new(Vec::new()),
            unloggable: Cell::new(false),
        }
    }

    /// Opens (or creates) a table whose writes are recorded. It is an error to open a table
    /// that is open already, as with redb.
    #[track_caller]
    pub fn open_table<'t, K: Key + 'static, V: Value + 'static>(
        &'t self,
        definition: TableDefinition<K, V>,
    ) -> Result<LoggedTable<'t, K, V>, TableError>
    where
        (K, V): LoggedTypes,
    {
        let types = TypeId::of::<(K, V)>();
        let mut open_tables = self.open_tables.borrow_mut();
        let index = match open_tables.iter().position(|open| open.name == definition.name()) {
            Some(index) => index,
            None => {
                open_tables.push(OpenTable { name: definition.name().to_owned(), types, table: None, lent_at: None });
                open_tables.len() - 1
            }
        };
        let open = &mut open_tables[index];
        if let Some(lent_at) = open.lent_at {
            return Err(TableError::TableAlreadyOpen(open.name.clone(), lent_at));
        }
        if open.types != types {
            // Closed here, redb reopens it below and reports the mismatch.
            close(open);
            open.types = types;
        }
        let table = match open.table {
            Some(table) => table,
            None => {
                let table: Box<dyn Erased + 'a> = Box::new(self.transaction.open_table(definition)?);
                // SAFETY: only the lifetime changes. The table is dropped by `close`, which
                // runs at the latest in `LoggedTransaction::drop`, while the transaction
                // (`'a`) is still borrowed.
                let table: Box<dyn Erased> = unsafe { std::mem::transmute(table) };
                let table = NonNull::from(Box::leak(table));
                open.table = Some(table);
                table
            }
        };
        open.lent_at = Some(std::panic::Location::caller());
        // SAFETY: the pointer is a live `redb::Table<'a, K, V>` (its `(K, V)` was checked above),
        // `'t` is shorter than `'a`, and `lent_at` gives the returned table the only reference
        // to it until it is dropped.
        let table = unsafe { &mut *table.cast::<redb::Table<'t, K, V>>().as_ptr() };
        Ok(LoggedTable { table, index, log: self })
    }

    /// Deletes a table. The log does not replay this, so the batch commits durably.
    pub fn delete_table<K: Key + 'static, V: Value + 'static>(
        &self,
        definition: TableDefinition<K, V>,
    ) -> Result<bool, TableError> {
        self.unloggable.set(true);
        if let Some(open) = self.open_tables.borrow_mut().iter_mut().find(|open| open.name == definition.name()) {
            if let Some(lent_at) = open.lent_at {
                return Err(TableError::TableAlreadyOpen(open.name.clone(), lent_at));
            }
            close(open);
        }
        self.transaction.delete_table(definition)
    }

    /// Makes the batch commit durably and empty the log, so no copy of what it removed stays
    /// in the log (the erasure of a visitor's data).
    pub fn require_durable(&self) {
        self.unloggable.set(true);
    }

    /// Whether the batch must commit durably instead of through the log.
    pub fn unloggable(&self) -> bool {
        self.unloggable.get()
    }

    /// The recorded writes, encoded; empties the record.
    pub fn take_writes(&self) -> Vec<u8> {
        std::mem::take(&mut self.record.borrow_mut())
    }

    /// Records a write to the open table at `table_index`.
    fn record(&self, types: u8, table_index: usize, key: &[u8], value: Option<&[u8]>) {
        let mut record = self.record.borrow_mut();
        record.push(if value.is_some() { INSERT } else { REMOVE });
        record.push(types);
        put_bytes(&mut record, self.open_tables.borrow()[table_index].name.as_bytes());
        put_bytes(&mut record, key);
        if let Some(value) = value {
            put_bytes(&mut record, value);
        }
    }
}

/// Drops a kept table, which gives its root back to the transaction.
fn close(open: &mut OpenTable) {
    if let Some(table) = open.table.take() {
        // SAFETY: the pointer came from `Box::leak` in `open_table` and is not in use.
        drop(unsafe { Box::from_raw(table.as_ptr()) });
    }
}

/// Closes the kept tables. Being a `Drop` also keeps the transaction borrowed until then.
impl Drop for LoggedTransaction<'_> {
    fn drop(&mut self) {
        for open in self.open_tables.get_mut() {
            close(open);
        }
    }
}

fn put_bytes(record: &mut Vec<u8>, bytes: &[u8]) {
    record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    record.extend_from_slice(bytes);
}

/// A table in a [`LoggedTransaction`]: reads as a redb table, and records every write.
pub struct LoggedTable<'t, K: Key + 'static, V: Value + 'static> {
    table: &'t mut redb::Table<'t, K, V>,
    /// Its place in the transaction's open tables.
    index: usize,
    log: &'t LoggedTransaction<'t>,
}

impl<K: Key + 'static, V: Value + 'static> Drop for LoggedTable<'_, K, V> {
    fn drop(&mut self) {
        // `open_table`, `delete_table` and `record` hold this borrow only inside themselves.
        self.log.open_tables.borrow_mut()[self.index].lent_at = None;
    }
}

impl<K: Key + 'static, V: Value + 'static> LoggedTable<'_, K, V>
where
    (K, V): LoggedTypes,
{
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl std::borrow::Borrow<K::SelfType<'k>>,
        value: impl std::borrow::Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        let (key, value) = (key.borrow(), value.borrow());
        let previous = self.table.insert(key, value)?;
        self.log.record(<(K, V)>::NUMBER, self.index, K::as_bytes(key).as_ref(), Some(V::as_bytes(value).as_ref()));
        Ok(previous)
    }

    pub fn remove<'k>(
        &mut self,
        key: impl std::borrow::Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        let key = key.borrow();
        let removed = self.table.remove(key)?;
        if removed.is_some() {
            self.log.record(<(K, V)>::NUMBER, self.index, K::as_bytes(key).as_ref(), None);
        }
        Ok(removed)
    }

    /// Removes every entry for which `keep` is false.
    pub fn retain<F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool>(
        &mut self,
        mut keep: F,
    ) -> Result<(), redb::StorageError> {
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        for entry in self.table.iter()? {
            let (key, value) = entry?;
            if !keep(key.value(), value.value()) {
                doomed.push(K::as_bytes(&key.value()).as_ref().to_vec());
            }
        }
        for key in doomed {
            self.remove(K::from_bytes(&key))?;
        }
        Ok(())
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTableMetadata for LoggedTable<'_, K, V> {
    fn stats(&self) -> Result<TableStats, redb::StorageError> {
        self.table.stats()
    }

    fn len(&self) -> Result<u64, redb::StorageError> {
        self.table.len()
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTable<K, V> for LoggedTable<'_, K, V> {
    fn get<'a>(
        &self,
        key: impl std::borrow::Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        self.table.get(key)
    }

    fn range<'a, KR>(&self, range: impl std::ops::RangeBounds<KR> + 'a) -> Result<Range<'_, K, V>, redb::StorageError>
    where
        KR: std::borrow::Borrow<K::SelfType<'a>> + 'a,
    {
        self.table.range(range)
    }

    fn first(&self) -> Result<Option<(AccessGuard<'_, K>, AccessGuard<'_, V>)>, redb::StorageError> {
        self.table.first()
    }

    fn last(&self) -> Result<Option<(AccessGuard<'_, K>, AccessGuard<'_, V>)>, redb::StorageError> {
        self.table.last()
    }
}

/// The open log file of a running writer.
pub struct CommitLog {
    file: File,
    data_dir: PathBuf,
    /// Bytes in the file, all of them whole records.
    len: u64,
    epoch: u64,
    /// The sequence of the last record written (or of the database, if none was).
    sequence: u64,
    /// The file failed; it may hold bytes that are not whole records, so nothing more may be
    /// appended until a checkpoint has emptied it.
    failed: bool,
}

impl CommitLog {
    /// Opens the log of `data_dir`, which [`replay`] has emptied.
    pub fn open(data_dir: &Path, epoch: u64, sequence: u64) -> Result<CommitLog, StorageError> {
        match std::fs::remove_file(data_dir.join(FRESH_LOG_FILE)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log_path(data_dir))?;
        // The file's directory entry must be durable too, or a power loss could take the file
        // with its synced records.
        File::open(data_dir)?.sync_all()?;
        let len = file.metadata()?.len();
        Ok(CommitLog { file, data_dir: data_dir.to_owned(), len, epoch, sequence, failed: false })
    }

    /// Bytes the log holds since the last checkpoint.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether batches may go through the log (it has not failed since its last emptying).
    pub fn is_usable(&self) -> bool {
        !self.failed
    }

    /// The sequence of the last record appended.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Appends one batch's writes as a record and syncs it. On failure the log is no longer
    /// usable until a checkpoint empties it.
    pub fn append(&mut self, writes: &[u8]) -> Result<(), StorageError> {
        let sequence = self.sequence + 1;
        // The record header (length, CRC-32), then the payload's prefix (format, epoch, sequence).
        let mut head = [0u8; RECORD_HEADER_BYTES + PAYLOAD_PREFIX_BYTES];
        let (header, prefix) = head.split_at_mut(RECORD_HEADER_BYTES);
        prefix[0] = RECORD_FORMAT;
        prefix[1..9].copy_from_slice(&self.epoch.to_le_bytes());
        prefix[9..].copy_from_slice(&sequence.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(prefix);
        hasher.update(writes);
        header[..4].copy_from_slice(&((PAYLOAD_PREFIX_BYTES + writes.len()) as u32).to_le_bytes());
        header[4..].copy_from_slice(&hasher.finalize().to_le_bytes());
        // The head and the writes go out in one system call without being copied together
        // (a batch's writes can be megabytes).
        let written = write_all_vectored(&mut self.file, &head, writes).and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            // The sequence stays taken: whatever part of the record reached the file is older
            // than the next durable commit, which therefore covers it.
            self.sequence = sequence;
            self.failed = true;
            return Err(error.into());
        }
        self.len += (head.len() + writes.len()) as u64;
        self.sequence = sequence;
        Ok(())
    }

    /// Empties the log after a durable commit made every record in it redundant.
    ///
    /// A new empty file is renamed over the log, and the old file is closed on a thread of its
    /// own: freeing a large file's blocks (what truncating it in place costs) takes tens of
    /// milliseconds that answers would otherwise wait for. A crash at any step leaves either the
    /// old file, whose records replay skips, or the new one. If the new file cannot take the
    /// log's place, the old one is truncated in place instead.
    pub fn cut(&mut self) -> Result<(), StorageError> {
        let fresh_path = self.data_dir.join(FRESH_LOG_FILE);
        // In append mode, as the log is opened: every write goes to the end.
        let fresh = std::fs::OpenOptions::new().create(true).append(true).open(&fresh_path).and_then(|file| {
            file.set_len(0)?;
            std::fs::rename(&fresh_path, log_path(&self.data_dir))?;
            Ok(file)
        });
        let fresh = match fresh {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(%error, "replacing the commit log with an empty file failed; truncating it in place");
                return self.truncate_in_place();
            }
        };
        close_in_background(std::mem::replace(&mut self.file, fresh));
        self.len = 0;
        // Records appended to the new file are acknowledged, so its name must be durable first.
        if let Err(error) = File::open(&self.data_dir).and_then(|directory| directory.sync_all()) {
            self.failed = true;
            return Err(error.into());
        }
        self.failed = false;
        Ok(())
    }

    fn truncate_in_place(&mut self) -> Result<(), StorageError> {
        let emptied = self.file.set_len(0).and_then(|()| self.file.sync_data());
        // Records left behind are older than the durable commit; replay skips them.
        self.len = self.file.metadata()?.len();
        emptied?;
        self.failed = false;
        Ok(())
    }
}

/// Closes a replaced log file on a short-lived thread, where the file system frees its blocks.
fn close_in_background(file: File) {
    // A thread that cannot start drops its closure, and so closes the file here.
    let _ = std::thread::Builder::new().name("kefu-log-close".to_owned()).spawn(move || drop(file));
}

/// Writes `head` then `body` with `writev`, finishing with plain writes if the file took less.
fn write_all_vectored(file: &mut File, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let written = file.write_vectored(&[std::io::IoSlice::new(head), std::io::IoSlice::new(body)])?;
    match written.checked_sub(head.len()) {
        None => {
            file.write_all(&head[written..])?;
            file.write_all(body)
        }
        Some(of_body) => file.write_all(&body[of_body..]),
    }
}

pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LOG_FILE)
}

/// One record read back from the log.
struct LoggedBatch<'a> {
    epoch: u64,
    sequence: u64,
    writes: &'a [u8],
}

/// Splits the log's bytes into records. The last record may be torn (a crash while appending
/// it): it is dropped, and its length returned with the records. A damaged record anywhere
/// else is an error, since records after it were acknowledged.
fn parse_records(bytes: &[u8]) -> Result<(Vec<LoggedBatch<'_>>, usize), StorageError> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) else { break };
        let len = u32::from_le_bytes(header[..4].try_into().expect("four bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("four bytes"));
        let start = at + RECORD_HEADER_BYTES;
        let Some(payload) = bytes.get(start..start + len) else { break };
        if len < PAYLOAD_PREFIX_BYTES || crc32fast::hash(payload) != crc {
            // The record the crash cut short, followed by nothing but zeros (the file grew before
            // its data was written).
            if bytes[start + len..].iter().all(|byte| *byte == 0) {
                break;
            }
            return Err(StorageError::Corrupt(format!(
                "the commit log is damaged at byte {at}, before {} more bytes of records; kefu will not start \
                 without them (move {LOG_FILE} away to start from the database alone)",
                bytes.len() - start - len
            )));
        }
        if payload[0] != RECORD_FORMAT {
            return Err(StorageError::Corrupt(format!(
                "the commit log has records of format {} (this build reads {RECORD_FORMAT}); run the kefu that wrote it",
                payload[0]
            )));
        }
        records.push(LoggedBatch {
            epoch: u64::from_le_bytes(payload[1..9].try_into().expect("eight bytes")),
            sequence: u64::from_le_bytes(payload[9..PAYLOAD_PREFIX_BYTES].try_into().expect("eight bytes")),
            writes: &payload[PAYLOAD_PREFIX_BYTES..],
        });
        at = start + len;
    }
    Ok((records, bytes.len() - at))
}

/// Applies one record's writes to `transaction`.
pub(super) fn apply_writes(transaction: &WriteTransaction, mut writes: &[u8]) -> Result<(), StorageError> {
    let damaged = || StorageError::Corrupt("a commit log record does not decode".into());
    fn take<'b>(writes: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
        let (taken, rest) = writes.split_at_checked(n)?;
        *writes = rest;
        Some(taken)
    }
    fn take_bytes<'b>(writes: &mut &'b [u8]) -> Option<&'b [u8]> {
        let len = u32::from_le_bytes(take(writes, 4)?.try_into().ok()?) as usize;
        take(writes, len)
    }
    while !writes.is_empty() {
        let head = take(&mut writes, 2).ok_or_else(damaged)?;
        let (operation, types) = (head[0], head[1]);
        let table = std::str::from_utf8(take_bytes(&mut writes).ok_or_else(damaged)?).map_err(|_| damaged())?;
        let key = take_bytes(&mut writes).ok_or_else(damaged)?;
        let value = match operation {
            INSERT => Some(take_bytes(&mut writes).ok_or_else(damaged)?),
            REMOVE => None,
            _ => return Err(damaged()),
        };
        apply_write(transaction, types, table, key, value)?;
    }
    Ok(())
}

/// How many records of the log at `data_dir` are not yet in the database `transaction` reads:
/// batches a kefu acknowledged and that [`replay`] would apply at the next open. For readers that
/// must not write the data directory (a read-only copy), which refuse rather than miss them.
pub fn pending_records(transaction: &redb::ReadTransaction, data_dir: &Path) -> Result<usize, StorageError> {
    let bytes = read_log(&log_path(data_dir))?;
    let (records, _torn_bytes) = parse_records(&bytes)?;
    let position = LogPosition::of(&transaction.open_table(tables::META)?)?;
    Ok(records.iter().filter(|record| !position.holds(record)).count())
}

/// The bytes of the log at `path`; none when it does not exist.
fn read_log(path: &Path) -> Result<Vec<u8>, StorageError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => drop(file.read_to_end(&mut bytes)?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    Ok(bytes)
}

/// Where the database stands against the log: its epoch and the sequence of the last record it
/// holds.
struct LogPosition {
    epoch: Option<u64>,
    sequence: u64,
}

impl LogPosition {
    fn of(meta: &impl ReadableTable<&'static str, u64>) -> Result<LogPosition, StorageError> {
        let epoch = meta.get("epoch")?.map(|value| value.value());
        let sequence = meta.get(SEQUENCE_KEY)?.map(|value| value.value()).unwrap_or(0);
        Ok(LogPosition { epoch, sequence })
    }

    /// Whether the database already holds `record` (a log record an earlier commit applied).
    fn holds(&self, record: &LoggedBatch<'_>) -> bool {
        Some(record.epoch) == self.epoch && record.sequence <= self.sequence
    }
}

/// What [`replay`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records applied to the database.
    pub records: usize,
    /// Bytes of a torn record at the end of the log, dropped.
    pub torn_bytes: usize,
    /// The database's log sequence afterwards.
    pub sequence: u64,
}

/// Brings the database up to the end of the log of `data_dir`, commits durably, and empties
/// the log. Every opener of a data directory calls it before anything else reads or writes.
pub fn replay(database: &Database, data_dir: &Path) -> Result<Replayed, StorageError> {
    let path = log_path(data_dir);
    let bytes = read_log(&path)?;
    let (records, torn_bytes) = parse_records(&bytes)?;
    let transaction = database.begin_write()?;
    let durable = LogPosition::of(&transaction.open_table(tables::META)?)?;
    let (epoch, mut sequence) = (durable.epoch, durable.sequence);
    let mut applied = 0;
    for record in &records {
        if durable.holds(record) {
            continue;
        }
        if Some(record.epoch) != epoch || record.sequence != sequence + 1 {
            return Err(StorageError::Corrupt(format!(
                "{} does not continue this database (the database is at sequence {sequence} of epoch {}, the log \
                 goes on with sequence {} of epoch {}); if kefu.redb was replaced by hand, move {LOG_FILE} away",
                path.display(),
                epoch.unwrap_or(0),
                record.sequence,
                record.epoch
            )));
        }
        apply_writes(&transaction, record.writes)?;
        sequence = record.sequence;
        applied += 1;
    }
    if applied > 0 {
        transaction.open_table(tables::META)?.insert(SEQUENCE_KEY, sequence)?;
        transaction.commit()?;
        tracing::info!(records = applied, sequence, torn_bytes, "commit log replayed");
    } else {
        transaction.abort()?;
    }
    if !bytes.is_empty() {
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.set_len(0)?;
        file.sync_all()?;
    }
    Ok(Replayed { records: applied, torn_bytes, sequence })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    const SHARD: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("messages_v1_2026-01-01");

    fn database(dir: &Path) -> Database {
        let database = Database::create(dir.join("kefu.redb")).unwrap();
        let transaction = database.begin_write().unwrap();
        transaction.open_table(tables::META).unwrap().insert("epoch", 7).unwrap();
        transaction.commit().unwrap();
        database
    }

    /// A new database of epoch 7 with an empty log, in a temporary directory.
    fn logged_store() -> (tempfile::TempDir, Database, CommitLog) {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path());
        let log = CommitLog::open(dir.path(), 7, 0).unwrap();
        (dir, database, log)
    }

    /// Runs `write` in a logged batch: the record is appended, then the batch commits without
    /// durability, as the writer does.
    fn logged_batch(database: &Database, log: &mut CommitLog, write: impl FnOnce(&LoggedTransaction<'_>)) {
        let mut transaction = database.begin_write().unwrap();
        transaction.set_durability(redb::Durability::None).unwrap();
        let logged = LoggedTransaction::new(&transaction);
        write(&logged);
        assert!(!logged.unloggable());
        log.append(&logged.take_writes()).unwrap();
        drop(logged);
        transaction.commit().unwrap();
    }

    /// What a crash of the process leaves of `dir`: redb's file as written so far (its last
    /// durable commit) and the log.
    fn as_after_a_crash(dir: &Path) -> tempfile::TempDir {
        let crashed = tempfile::tempdir().unwrap();
        std::fs::copy(dir.join("kefu.redb"), crashed.path().join("kefu.redb")).unwrap();
        std::fs::copy(log_path(dir), log_path(crashed.path())).unwrap();
        crashed
    }

    /// The database of `dir` as a start after a crash finds it, with its log replayed.
    fn replayed_after_a_crash(dir: &Path) -> (tempfile::TempDir, Database) {
        let crashed = as_after_a_crash(dir);
        let database = Database::create(crashed.path().join("kefu.redb")).unwrap();
        replay(&database, crashed.path()).unwrap();
        (crashed, database)
    }

    fn stored(database: &Database) -> Vec<((u64, u64), Vec<u8>)> {
        let transaction = database.begin_read().unwrap();
        let Ok(table) = transaction.open_table(SHARD) else { return Vec::new() };
        table.iter().unwrap().map(|entry| entry.unwrap()).map(|(k, v)| (k.value(), v.value().to_vec())).collect()
    }

    #[test]
    fn batches_committed_only_to_the_log_come_back_after_a_crash() {
        let (dir, database, mut log) = logged_store();
        logged_batch(&database, &mut log, |logged| {
            let mut shard = logged.open_table(SHARD).unwrap();
            shard.insert((1, 1), b"one".as_slice()).unwrap();
            shard.insert((1, 2), b"two".as_slice()).unwrap();
        });
        logged_batch(&database, &mut log, |logged| {
            let mut shard = logged.open_table(SHARD).unwrap();
            shard.remove((1, 1)).unwrap();
            shard.insert((2, 1), b"three".as_slice()).unwrap();
        });
        let expected = stored(&database);
        let dir = as_after_a_crash(dir.path());
        let database = Database::create(dir.path().join("kefu.redb")).unwrap();
        assert!(stored(&database).is_empty(), "nothing was committed durably");
        let replayed = replay(&database, dir.path()).unwrap();
        assert_eq!(replayed, Replayed { records: 2, torn_bytes: 0, sequence: 2 });
        assert_eq!(stored(&database), expected);
        assert_eq!(std::fs::metadata(log_path(dir.path())).unwrap().len(), 0, "the log is emptied");
        assert_eq!(replay(&database, dir.path()).unwrap().records, 0, "replaying again changes nothing");
    }

    /// Two logged batches and a crash: returns the data directory as a crash leaves it.
    fn crashed_after_two_batches() -> tempfile::TempDir {
        let (dir, database, mut log) = logged_store();
        for n in 1..=2 {
            logged_batch(&database, &mut log, |logged| {
                logged.open_table(SHARD).unwrap().insert((1, n), b"text".as_slice()).unwrap();
            });
        }
        as_after_a_crash(dir.path())
    }

    fn append_to_log(dir: &Path, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new().append(true).open(log_path(dir)).unwrap();
        file.write_all(bytes).unwrap();
    }

    #[test]
    fn a_record_torn_by_the_crash_is_dropped_and_the_rest_replayed() {
        let dir = crashed_after_two_batches();
        let whole = std::fs::read(log_path(dir.path())).unwrap();
        // A third record, cut off while it was being written (the two records are the same size).
        let record = &whole[whole.len() / 2..];
        append_to_log(dir.path(), &record[..20]);
        let database = Database::create(dir.path().join("kefu.redb")).unwrap();
        let replayed = replay(&database, dir.path()).unwrap();
        assert_eq!((replayed.records, replayed.sequence), (2, 2));
        assert_eq!(replayed.torn_bytes, 20);
        assert_eq!(stored(&database).len(), 2);
    }

    #[test]
    fn only_the_last_record_may_be_damaged() {
        let dir = crashed_after_two_batches();
        let whole = std::fs::read(log_path(dir.path())).unwrap();
        let mut bytes = whole.clone();
        bytes[whole.len() / 2 - 1] ^= 0xff;
        std::fs::write(log_path(dir.path()), &bytes).unwrap();
        let database = Database::create(dir.path().join("kefu.redb")).unwrap();
        let error = replay(&database, dir.path()).unwrap_err().to_string();
        assert!(error.contains("damaged at byte 0"), "{error}");
        assert!(stored(&database).is_empty());
        assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), bytes, "the log is left as it was");

        let mut bytes = whole.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        bytes.extend_from_slice(&[0; 100]);
        std::fs::write(log_path(dir.path()), &bytes).unwrap();
        let replayed = replay(&database, dir.path()).unwrap();
        assert_eq!(replayed.records, 1, "the record whose checksum fails is not applied");
        assert_eq!(stored(&database), vec![((1, 1), b"text".to_vec())]);
    }

    #[test]
    fn a_log_that_does_not_continue_the_database_is_refused_and_kept() {
        // A database replaced by hand (another epoch) under a log with batches.
        let dir = crashed_after_two_batches();
        std::fs::remove_file(dir.path().join("kefu.redb")).unwrap();
        let database = database(dir.path());
        let transaction = database.begin_write().unwrap();
        transaction.open_table(tables::META).unwrap().insert("epoch", 8).unwrap();
        transaction.commit().unwrap();
        let error = replay(&database, dir.path()).unwrap_err().to_string();
        assert!(error.contains("does not continue this database"), "{error}");
        assert!(stored(&database).is_empty());
        assert!(std::fs::metadata(log_path(dir.path())).unwrap().len() > 0, "the log is left for its owner");
    }

    #[test]
    fn records_the_database_already_holds_are_skipped() {
        let dir = crashed_after_two_batches();
        let database = Database::create(dir.path().join("kefu.redb")).unwrap();
        // A durable commit that covers the first record (a checkpoint whose log was not emptied).
        let transaction = database.begin_write().unwrap();
        transaction.open_table(SHARD).unwrap().insert((1, 1), b"text".as_slice()).unwrap();
        transaction.open_table(tables::META).unwrap().insert(SEQUENCE_KEY, 1).unwrap();
        transaction.commit().unwrap();
        let replayed = replay(&database, dir.path()).unwrap();
        assert_eq!((replayed.records, replayed.sequence), (1, 2));
        assert_eq!(stored(&database).len(), 2);
    }

    #[test]
    fn deleting_a_table_makes_the_batch_unloggable() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path());
        let transaction = database.begin_write().unwrap();
        let logged = LoggedTransaction::new(&transaction);
        logged.open_table(SHARD).unwrap().insert((1, 1), b"text".as_slice()).unwrap();
        assert!(!logged.unloggable());
        logged.delete_table(SHARD).unwrap();
        assert!(logged.unloggable());
    }

    #[test]
    fn a_table_stays_open_for_the_batch_and_is_lent_to_one_user_at_a_time() {
        let (dir, database, mut log) = logged_store();
        logged_batch(&database, &mut log, |logged| {
            let mut shard = logged.open_table(SHARD).unwrap();
            shard.insert((1, 1), b"one".as_slice()).unwrap();
            let again = logged.open_table(SHARD);
            assert!(matches!(again, Err(TableError::TableAlreadyOpen(..))), "a second user while the first holds it");
            drop(shard);
            let mut shard = logged.open_table(SHARD).unwrap();
            assert_eq!(shard.get((1, 1)).unwrap().unwrap().value(), b"one");
            shard.insert((1, 2), b"two".as_slice()).unwrap();
            drop(shard);
            let wrong_types: TableDefinition<u64, u64> = TableDefinition::new(SHARD.name());
            assert!(logged.open_table(wrong_types).is_err(), "the types of a kept table are checked");
            assert_eq!(logged.open_table(SHARD).unwrap().len().unwrap(), 2);
        });
        assert_eq!(stored(&database).len(), 2);
        let (_crashed, database) = replayed_after_a_crash(dir.path());
        assert_eq!(stored(&database).len(), 2, "both writes were logged under the kept table's name");
    }

    #[test]
    fn a_kept_table_can_be_deleted_and_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path());
        let transaction = database.begin_write().unwrap();
        let logged = LoggedTransaction::new(&transaction);
        let shard = logged.open_table(SHARD).unwrap();
        assert!(matches!(logged.delete_table(SHARD), Err(TableError::TableAlreadyOpen(..))));
        drop(shard);
        logged.open_table(SHARD).unwrap().insert((1, 1), b"one".as_slice()).unwrap();
        assert!(logged.delete_table(SHARD).unwrap());
        assert!(logged.open_table(SHARD).unwrap().is_empty().unwrap());
        drop(logged);
        transaction.commit().unwrap();
        assert!(stored(&database).is_empty());
    }

    #[test]
    fn retain_logs_each_removal() {
        let (dir, database, mut log) = logged_store();
        logged_batch(&database, &mut log, |logged| {
            let mut shard = logged.open_table(SHARD).unwrap();
            for n in 1..=4 {
                shard.insert((1, n), b"text".as_slice()).unwrap();
            }
        });
        logged_batch(&database, &mut log, |logged| {
            logged.open_table(SHARD).unwrap().retain(|(_, seq), _| seq % 2 == 0).unwrap();
        });
        let expected = stored(&database);
        assert_eq!(expected.iter().map(|(key, _)| key.1).collect::<Vec<_>>(), vec![2, 4]);
        let (_crashed, database) = replayed_after_a_crash(dir.path());
        assert_eq!(stored(&database), expected);
    }

    #[test]
    fn a_cut_after_a_durable_commit_empties_the_log_and_later_records_come_back_after_a_crash() {
        let (dir, database, mut log) = logged_store();
        logged_batch(&database, &mut log, |logged| {
            logged.open_table(SHARD).unwrap().insert((1, 1), b"before".as_slice()).unwrap();
        });
        // A checkpoint: a durable commit that records the log's sequence, then the cut.
        let transaction = database.begin_write().unwrap();
        transaction.open_table(tables::META).unwrap().insert(SEQUENCE_KEY, log.sequence()).unwrap();
        transaction.commit().unwrap();
        log.cut().unwrap();
        assert_eq!(std::fs::metadata(log_path(dir.path())).unwrap().len(), 0);
        assert!(!dir.path().join(FRESH_LOG_FILE).exists());
        logged_batch(&database, &mut log, |logged| {
            logged.open_table(SHARD).unwrap().insert((1, 2), b"after".as_slice()).unwrap();
        });
        let (_crashed, replayed) = replayed_after_a_crash(dir.path());
        assert_eq!(stored(&replayed), vec![((1, 1), b"before".to_vec()), ((1, 2), b"after".to_vec())]);
        assert_eq!(read_log(&log_path(dir.path())).unwrap().len() as u64, log.len());
    }

    #[test]
    fn an_empty_file_left_by_a_crash_during_a_cut_is_removed_when_the_log_opens() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FRESH_LOG_FILE), b"").unwrap();
        let _log = CommitLog::open(dir.path(), 7, 0).unwrap();
        assert!(!dir.path().join(FRESH_LOG_FILE).exists());
        assert!(log_path(dir.path()).exists());
    }

    #[test]
    fn damaged_logs_never_panic_and_never_apply_what_was_not_written() {
        use rand::{Rng, SeedableRng};
        let crashed = crashed_after_two_batches();
        let whole = std::fs::read(log_path(crashed.path())).unwrap();
        let written = [((1, 1), b"text".to_vec()), ((1, 2), b"text".to_vec())];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..300 {
            let mut bytes = whole.clone();
            match round % 3 {
                0 => {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
                1 => bytes.truncate(rng.random_range(0..bytes.len())),
                _ => {
                    let mut garbage = vec![0u8; rng.random_range(1..64)];
                    rng.fill(&mut garbage[..]);
                    bytes.extend_from_slice(&garbage);
                }
            }
            let dir = tempfile::tempdir().unwrap();
            std::fs::copy(crashed.path().join("kefu.redb"), dir.path().join("kefu.redb")).unwrap();
            std::fs::write(log_path(dir.path()), &bytes).unwrap();
            let database = Database::create(dir.path().join("kefu.redb")).unwrap();
            match replay(&database, dir.path()) {
                Ok(replayed) => assert_eq!(stored(&database), written[..replayed.records], "round {round}"),
                Err(_) => assert!(stored(&database).is_empty(), "round {round}"),
            }
        }
    }

    #[test]
    fn a_whole_record_of_writes_that_do_not_fit_their_table_is_refused() {
        let (dir, database, mut log) = logged_store();
        for (types, key) in [(13u8, b"abc".as_slice()), (0, b"\xff\xfe".as_slice()), (99, b"k".as_slice())] {
            let mut writes = vec![INSERT, types];
            put_bytes(&mut writes, SHARD.name().as_bytes());
            put_bytes(&mut writes, key);
            put_bytes(&mut writes, b"value");
            log.append(&writes).unwrap();
            let error = replay(&database, dir.path()).unwrap_err();
            assert!(matches!(error, StorageError::Corrupt(_)), "{error}");
            assert!(stored(&database).is_empty());
            log.cut().unwrap();
            log.sequence = 0;
        }
    }
}
