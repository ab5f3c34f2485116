//! `kefu migrate-to-postgres`: copies an appliance's history from its redb data directory into
//! the cluster schema, resumably, and verifies the copy by counts and checksums per table.
//!
//! It copies conversations, messages (into their day partitions) and client ids (each sender's
//! client id with its original acknowledgement), keeping every id, seq, time and text, so
//! `PostgresMessages` goes on where the appliance stopped; and the appliance's record tables
//! (sites, teams, agents and their sessions, visitors and their tokens, leads, settings, tokens,
//! the audit log, ...: [`records`]) row for row; and uploads, each record with its file's bytes
//! (a missing file leaves the record without bytes, as on the appliance). And the webhook
//! deliveries and emails, pending and done, as rows of the cluster's outbox ([`outboxes`]).
//! Derived tables are computed again rather than copied.
//!
//! The source is opened read-only (redb's shared lock: a running kefu holds the exclusive one,
//! and is refused), and read through one read transaction for the whole run, so the copy is of
//! one consistent state. Each batch is one PostgreSQL transaction that also moves the table's
//! cursor in `redb_copy_progress` (migration 2): a run killed at any point leaves either a whole
//! batch with its cursor or neither, and the next run goes on from the cursor, copying no row
//! twice. The same table records what the source held when the copy began (rows and checksum per
//! table), so a resumed run refuses a data directory that changed meanwhile.
//!
//! The checksum of a table is the sum (mod 2^128) of the first 16 bytes of each row's SHA-256
//! over its canonical JSON (the domain record: [`Conversation`], the key and [`MessageRecord`],
//! [`ClientIdRecord`]'s fields, a record table's key and value, an upload's record and the
//! SHA-256 of its bytes, read back from the stored chunks), so it does not depend on the order rows are read in. Both sides
//! compute it with the same code: PostgreSQL's rows are read back into the same records first.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, TryStreamExt};
use redb::{ReadOnlyDatabase, ReadTransaction, ReadableDatabase};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::base::clock;
use crate::chat::conversations::{self, Conversation};
use crate::chat::messages::{self, ClientIdRecord, MessageKey, MessageRecord};
use crate::chat::uploads::{self, Upload};
use crate::cluster::messages::{CONVERSATION_COLUMNS, MESSAGE_COLUMNS, conversation_of, message_of};
use crate::cluster::outbox::OutboxKind;
use crate::cluster::postgres::{self, PostgresError, describe};
use crate::cluster::uploads::{self as cluster_uploads, UPLOAD_COLUMNS, upload_of};
use crate::storage::{DATABASE_FILE, StorageError, commit_log, tables};
use outboxes::OutboxCopy;
pub use records::RecordTable;
use records::{KeyPart, RecordRow};

mod outboxes;
mod records;

/// The key of the advisory lock one copy holds on its target for the whole run ("kefu copy").
const COPY_LOCK: i64 = 0x6b65_6675_636f_7079;

/// Rows per transaction unless told otherwise: large enough that the commit (one WAL flush) is a
/// small part of a batch, small enough that a batch is a few MiB.
pub const DEFAULT_BATCH_ROWS: usize = 5_000;

/// The tables copied, in the order they are copied (a message's conversation comes first).
#[derive(Clone, Copy, Debug)]
pub enum CopiedTable {
    Conversations,
    Messages,
    ClientIds,
    /// One of the appliance's record tables (sites, agents, visitors, settings, ...).
    Records(&'static RecordTable),
    /// Uploads' records with their files from `DATA_DIR/uploads`, into `PostgresUploads`'
    /// tables (a content stored once per SHA-256, in chunks).
    Uploads,
    /// The appliance's webhook deliveries or emails, into the cluster's `outbox`.
    Outbox(OutboxKind),
}

impl PartialEq for CopiedTable {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for CopiedTable {}

impl CopiedTable {
    pub const ALL: [CopiedTable; 6 + records::ALL.len()] = {
        let mut all = [CopiedTable::Conversations; 6 + records::ALL.len()];
        all[1] = CopiedTable::Messages;
        all[2] = CopiedTable::ClientIds;
        let mut index = 0;
        while index < records::ALL.len() {
            all[3 + index] = CopiedTable::Records(records::ALL[index]);
            index += 1;
        }
        all[3 + records::ALL.len()] = CopiedTable::Uploads;
        all[4 + records::ALL.len()] = CopiedTable::Outbox(OutboxKind::Webhook);
        all[5 + records::ALL.len()] = CopiedTable::Outbox(OutboxKind::Email);
        all
    };

    /// Its name in PostgreSQL (and in the output).
    pub fn name(self) -> &'static str {
        match self {
            CopiedTable::Conversations => "conversations",
            CopiedTable::Messages => "messages",
            CopiedTable::ClientIds => "client_ids",
            CopiedTable::Records(table) => table.name,
            CopiedTable::Uploads => "uploads",
            CopiedTable::Outbox(OutboxKind::Webhook) => "webhook_deliveries",
            CopiedTable::Outbox(OutboxKind::Email) => "emails",
        }
    }

    /// The PostgreSQL table its rows go to.
    fn target(self) -> &'static str {
        match self {
            CopiedTable::Outbox(_) => "outbox",
            other => other.name(),
        }
    }

    /// Which of the target table's rows are this table's.
    fn target_filter(self) -> &'static str {
        match self {
            CopiedTable::Outbox(OutboxKind::Webhook) => " WHERE kind = 'webhook'",
            CopiedTable::Outbox(OutboxKind::Email) => " WHERE kind = 'email'",
            _ => "",
        }
    }

    fn columns(self) -> &'static [(&'static str, Column)] {
        use Column::*;
        match self {
            CopiedTable::Records(table) => table.columns,
            // Stored a file at a time (`store_batch`), not as columns.
            CopiedTable::Uploads => &[],
            CopiedTable::Outbox(_) => outboxes::COLUMNS,
            CopiedTable::Conversations => &[
                ("id", Int),
                ("site", Text),
                ("visitor_id", Int),
                ("status", Text),
                ("assigned_agent", Int),
                ("last_seq", Int),
                ("created_at", Int),
                ("updated_at", Int),
                ("closed_at", Int),
                ("last_day", Int4),
                ("first_response_at", Int),
                ("rating", Json),
                ("team", Int),
                ("bot_active", Bool),
            ],
            CopiedTable::Messages => &[
                ("conversation_id", Int),
                ("seq", Int),
                ("day", Day),
                ("lsn", Int),
                ("trace_id", Int),
                ("created_at", Int),
                ("sender_kind", Small),
                ("sender_id", Int),
                ("sender_name", Text),
                ("kind", Text),
                ("internal", Bool),
                ("client_id", Text),
                ("text", Text),
                ("attachment", Json),
                ("bot_source", Json),
                ("offline_message_id", Int),
            ],
            CopiedTable::ClientIds => &[
                ("sender_kind", Small),
                ("sender_id", Int),
                ("client_id", Text),
                ("conversation_id", Int),
                ("seq", Int),
                ("day", Day),
                ("created_at", Int),
            ],
        }
    }
}

/// How a batch's rows reach PostgreSQL; docs/cluster.md has the measured rates of both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMethod {
    /// `COPY ... FROM STDIN` in text format.
    #[default]
    Copy,
    /// One `INSERT ... SELECT FROM unnest(arrays)` per batch, a parameter per column.
    Insert,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("there is no kefu database at {0} (a data directory holds kefu.redb)")]
    MissingDatabase(PathBuf),
    #[error(
        "a running kefu holds {0}; stop it first (redb lets one process open a database for writing), then run the copy again"
    )]
    ServerRunning(PathBuf),
    #[error(
        "{0} was not closed cleanly; start kefu on it once and stop it (it repairs the file and applies its commit log), then run the copy again"
    )]
    NotClosedCleanly(PathBuf),
    #[error(
        "the commit log {path} holds {records} acknowledged batches not yet in the database; run `kefu check --data-dir {data_dir}` (it applies them) or start and stop kefu once, then run the copy again"
    )]
    PendingLog { path: PathBuf, records: usize, data_dir: PathBuf },
    #[error("the database cannot be read: {0}")]
    Source(String),
    #[error("{0}; nothing was copied")]
    Unstorable(String),
    /// The tables, with their rows.
    #[error("the target already holds data this copy did not write ({0}); copy into an empty database")]
    ForeignData(String),
    #[error(
        "the target holds a copy of another data directory (epoch {found}; this one is epoch {expected}); copy into an empty database"
    )]
    OtherSource { found: u64, expected: u64 },
    #[error(
        "the data directory changed since the copy into this target began ({table}: {then_rows} rows then, {now_rows} now, or other contents); copy into an empty database"
    )]
    SourceChanged { table: &'static str, then_rows: u64, now_rows: u64 },
    #[error("the target's copy progress is damaged: {0}")]
    BadProgress(String),
    #[error("copying upload {id} failed: {detail}")]
    Upload { id: String, detail: String },
    #[error("another kefu migrate-to-postgres is copying into this database")]
    Busy,
    #[error("the target has no kefu schema yet (schema version 0): nothing to verify; run the copy first")]
    NoSchema,
    #[error("copying {table} failed: the target holds a row this copy did not write ({detail})")]
    Conflict { table: &'static str, detail: String },
    #[error(transparent)]
    Postgres(#[from] PostgresError),
}

impl From<tokio_postgres::Error> for CopyError {
    fn from(error: tokio_postgres::Error) -> Self {
        CopyError::Postgres(PostgresError::Database(error))
    }
}

impl From<StorageError> for CopyError {
    fn from(error: StorageError) -> Self {
        CopyError::Source(error.to_string())
    }
}

/// A table's row count and order-independent checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub rows: u64,
    sum: u128,
}

impl Tally {
    fn add(&mut self, canonical: &[u8]) {
        let digest = Sha256::digest(canonical);
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        self.rows += 1;
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
    }

    /// The checksum as 32 hex digits.
    pub fn checksum(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// Per table, in [`CopiedTable::ALL`]'s order.
pub type Summary = [Tally; CopiedTable::ALL.len()];

fn empty_summary() -> Summary {
    [Tally::default(); CopiedTable::ALL.len()]
}

/// One table's line of the verification.
#[derive(Clone, Debug)]
pub struct Verified {
    pub table: CopiedTable,
    pub source: Tally,
    pub target: Tally,
}

impl Verified {
    pub fn equal(&self) -> bool {
        self.source == self.target
    }
}

/// What a copy did, per table.
#[derive(Clone, Debug)]
pub struct Copied {
    pub table: CopiedTable,
    /// Rows this run copied.
    pub rows: u64,
    /// Rows an earlier, interrupted run had copied already.
    pub rows_before: u64,
    pub seconds: f64,
}

/// The appliance's data directory, opened read-only, with the one read transaction the whole
/// run reads through.
pub struct Source {
    /// Kept open: its shared lock keeps a kefu from opening the database for writing meanwhile.
    _database: ReadOnlyDatabase,
    transaction: Arc<ReadTransaction>,
    /// `meta_v1.epoch`: names this appliance's history.
    pub epoch: u64,
    data_dir: Arc<Path>,
}

impl Source {
    /// Opens the data directory read-only. Refuses one a running kefu holds, one not closed
    /// cleanly, and one whose commit log holds batches not yet in the database (reading it
    /// without them would miss acknowledged messages); writes nothing in any case.
    pub fn open(data_dir: &Path) -> Result<Source, CopyError> {
        let path = data_dir.join(DATABASE_FILE);
        if !path.is_file() {
            return Err(CopyError::MissingDatabase(data_dir.to_owned()));
        }
        let database = match ReadOnlyDatabase::open(&path) {
            Ok(database) => database,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(CopyError::ServerRunning(data_dir.to_owned())),
            Err(redb::DatabaseError::RepairAborted) => return Err(CopyError::NotClosedCleanly(path)),
            Err(error) => return Err(CopyError::Source(error.to_string())),
        };
        let transaction = database.begin_read().map_err(|error| CopyError::Source(error.to_string()))?;
        let records = commit_log::pending_records(&transaction, data_dir)?;
        if records > 0 {
            return Err(CopyError::PendingLog {
                path: commit_log::log_path(data_dir),
                records,
                data_dir: data_dir.to_owned(),
            });
        }
        let epoch = {
            let meta = transaction.open_table(tables::META).map_err(StorageError::from)?;
            meta.get("epoch").map_err(StorageError::from)?.map_or(0, |value| value.value())
        };
        Ok(Source { _database: database, transaction: Arc::new(transaction), epoch, data_dir: data_dir.into() })
    }

    /// Starts reading one batch of `table` after `after` on the blocking pool, with its rows'
    /// values for PostgreSQL, so the next batch is read while the current one is written.
    fn read_ahead(
        &self,
        table: CopiedTable,
        after: Option<CopyKey>,
        limit: usize,
    ) -> tokio::task::JoinHandle<Result<ReadAhead, CopyError>> {
        let transaction = self.transaction.clone();
        tokio::task::spawn_blocking(move || {
            let batch = read_batch(&transaction, table, after.as_ref(), limit)?;
            let cells = batch.rows.iter().map(SourceRow::cells).collect::<Result<Vec<_>, _>>()?;
            Ok((batch, cells))
        })
    }

    /// Counts and checksums every copied table, checking on the way that PostgreSQL can store
    /// each row (before anything is written).
    pub async fn summary(&self) -> Result<Summary, CopyError> {
        let (transaction, data_dir) = (self.transaction.clone(), self.data_dir.clone());
        tokio::task::spawn_blocking(move || {
            let mut summary = empty_summary();
            for (index, table) in CopiedTable::ALL.into_iter().enumerate() {
                let mut after = None;
                loop {
                    let mut batch = read_batch(&transaction, table, after.as_ref(), DEFAULT_BATCH_ROWS)?;
                    if batch.rows.is_empty() {
                        break;
                    }
                    for row in &mut batch.rows {
                        if let SourceRow::Upload(upload, sha256) = row {
                            *sha256 = file_sha256(&uploads::path_of(&data_dir, &upload.id))?;
                        }
                    }
                    for row in &batch.rows {
                        let canonical = row.canonical();
                        if json_has_nul(&canonical) {
                            return Err(CopyError::Unstorable(format!(
                                "{} {} contains the character U+0000, which PostgreSQL cannot store",
                                table.name(),
                                row.describe()
                            )));
                        }
                        row.cells()?;
                        summary[index].add(&canonical);
                    }
                    after = batch.last;
                }
            }
            Ok(summary)
        })
        .await
        .map_err(|error| CopyError::Source(error.to_string()))?
    }
}

/// Where a table's copy stands: the key of the last row copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(untagged)]
enum CopyKey {
    /// A conversation's, a delivery's or an email's id.
    Id(u64),
    Message(u32, u64, u64),
    ClientId(u8, u64, String),
    /// A record table's rows already copied, in key order (the source does not change during a
    /// copy: a resumed run checks its counts and checksums first).
    Rows {
        rows: u64,
    },
    Upload(String),
}

/// One row read from redb.
enum SourceRow {
    Conversation(Conversation),
    Message(MessageKey, MessageRecord),
    ClientId(ClientIdRecord),
    Record(RecordRow),
    /// An upload's record and the SHA-256 of its file (hex; none when the file is gone or empty),
    /// computed for the summary only.
    Upload(Upload, Option<String>),
    Outbox(OutboxCopy),
}

/// A batch read ahead, with its rows' values for PostgreSQL.
type ReadAhead = (Batch, Vec<Vec<Cell>>);

struct Batch {
    rows: Vec<SourceRow>,
    /// The key of the last row, where the next batch starts.
    last: Option<CopyKey>,
}

/// Uploads per batch: each brings its file, up to the upload limit.
const UPLOADS_PER_BATCH: usize = 64;

fn read_batch(
    transaction: &ReadTransaction,
    table: CopiedTable,
    after: Option<&CopyKey>,
    limit: usize,
) -> Result<Batch, CopyError> {
    let rows: Vec<SourceRow> = match table {
        CopiedTable::Records(records) => {
            let skip = match after {
                Some(CopyKey::Rows { rows }) => *rows,
                None => 0,
                Some(other) => return Err(CopyError::BadProgress(format!("{other:?} is not a count of rows"))),
            };
            let rows = (records.read)(transaction, skip, limit)?;
            let last = (!rows.is_empty()).then(|| CopyKey::Rows { rows: skip + rows.len() as u64 });
            return Ok(Batch { rows: rows.into_iter().map(SourceRow::Record).collect(), last });
        }
        CopiedTable::Outbox(kind) => {
            let after = match after {
                Some(CopyKey::Id(id)) => Some(*id),
                None => None,
                Some(other) => return Err(CopyError::BadProgress(format!("{other:?} is not an id"))),
            };
            outboxes::scan(transaction, kind, after, limit)?.into_iter().map(SourceRow::Outbox).collect()
        }
        CopiedTable::Uploads => {
            let after = match after {
                Some(CopyKey::Upload(id)) => Some(id.as_str()),
                None => None,
                Some(other) => return Err(CopyError::BadProgress(format!("{other:?} is not an upload id"))),
            };
            // The files are hashed only for the summary (`Source::summary`); the copy reads each
            // file once, as it stores it.
            let found = uploads::scan(transaction, after, limit.min(UPLOADS_PER_BATCH))?;
            found.into_iter().map(|upload| SourceRow::Upload(upload, None)).collect()
        }
        CopiedTable::Conversations => {
            let after = match after {
                Some(CopyKey::Id(id)) => Some(*id),
                None => None,
                Some(other) => return Err(CopyError::BadProgress(format!("{other:?} is not a conversation key"))),
            };
            conversations::scan(transaction, after, limit)?.into_iter().map(SourceRow::Conversation).collect()
        }
        CopiedTable::Messages => {
            let (first_day, after_key) = match after {
                Some(CopyKey::Message(day, conversation_id, seq)) => (*day, Some((*conversation_id, *seq))),
                None => (0, None),
                Some(other) => return Err(CopyError::BadProgress(format!("{other:?} is not a message key"))),
            };
            let mut rows = Vec::new();
            for day in messages::shard_days(transaction)?.into_iter().filter(|day| *day >= first_day) {
                let after_in_day = if day == first_day { after_key } else { None };
                let found = messages::scan_shard(transaction, day, after_in_day, limit - rows.len())?;
                rows.extend(found.into_iter().map(|(key, record)| SourceRow::Message(key, record)));
                if rows.len() >= limit {
                    break;
                }
            }
            rows
        }
        CopiedTable::ClientIds => {
            let after = match after {
                Some(CopyKey::ClientId(kind, sender, client_id)) => Some((*kind, *sender, client_id.clone())),
                None => None,
                Some(other) => return Err(CopyError::BadProgress(format!("{other:?} is not a client id key"))),
            };
            messages::scan_client_ids(transaction, after.as_ref(), limit)?
                .into_iter()
                .map(SourceRow::ClientId)
                .collect()
        }
    };
    let last = rows.last().and_then(SourceRow::key);
    Ok(Batch { rows, last })
}

/// A column's type, for both ways of loading.
#[derive(Clone, Copy)]
enum Column {
    Int,
    Int4,
    Small,
    Text,
    Bool,
    /// A UTC day number, stored as a `date`.
    Day,
    Json,
    /// A u64 stored as a `bigint` with the same bits.
    Bits,
    Bytes,
}

/// One value of a row on its way to PostgreSQL.
enum Cell {
    Int(Option<i64>),
    Small(i16),
    Text(Option<String>),
    Int4(i32),
    Bool(bool),
    Day(u32),
    Bytes(Vec<u8>),
}

fn signed(value: u64, what: &str) -> Result<i64, CopyError> {
    i64::try_from(value).map_err(|_| CopyError::Unstorable(format!("{what} {value} is beyond PostgreSQL's bigint")))
}

fn json_text<T: Serialize>(value: &Option<T>) -> Option<String> {
    value.as_ref().and_then(|value| serde_json::to_string(value).ok())
}

impl SourceRow {
    /// Where the next batch starts after this row; a record table's batch counts its rows instead.
    fn key(&self) -> Option<CopyKey> {
        Some(match self {
            SourceRow::Conversation(conversation) => CopyKey::Id(conversation.id),
            SourceRow::Message(key, _) => CopyKey::Message(key.day, key.conversation_id, key.seq),
            SourceRow::ClientId(record) => {
                CopyKey::ClientId(record.sender_kind, record.sender_id, record.client_id.clone())
            }
            SourceRow::Record(_) => return None,
            SourceRow::Upload(upload, _) => CopyKey::Upload(upload.id.clone()),
            SourceRow::Outbox(row) => CopyKey::Id(row.source_id),
        })
    }

    fn describe(&self) -> String {
        match self {
            SourceRow::Conversation(conversation) => format!("(conversation {})", conversation.id),
            SourceRow::Message(key, _) => format!("(conversation {}, seq {})", key.conversation_id, key.seq),
            SourceRow::ClientId(record) => {
                format!("(sender {}:{}, client id {:?})", record.sender_kind, record.sender_id, record.client_id)
            }
            SourceRow::Record(row) => {
                format!("(key {})", Value::from(row.key.iter().map(KeyPart::json).collect::<Vec<_>>()))
            }
            SourceRow::Upload(upload, _) => format!("(upload {})", upload.id),
            SourceRow::Outbox(row) => format!("({} {})", row.content.kind().as_str(), row.source_id),
        }
    }

    /// The row's canonical bytes, which its checksum hashes.
    fn canonical(&self) -> Vec<u8> {
        canonical_of(&CanonicalRow::from(self))
    }

    /// The row's values in [`CopiedTable::columns`] order.
    fn cells(&self) -> Result<Vec<Cell>, CopyError> {
        Ok(match self {
            SourceRow::Conversation(conversation) => vec![
                Cell::Int(Some(signed(conversation.id, "conversation id")?)),
                Cell::Text(Some(conversation.site.clone())),
                Cell::Int(Some(signed(conversation.visitor_id, "visitor id")?)),
                Cell::Text(Some(conversation.status.as_str().to_owned())),
                Cell::Int(conversation.assigned_agent.map(|id| signed(id, "agent id")).transpose()?),
                Cell::Int(Some(signed(conversation.last_seq, "seq")?)),
                Cell::Int(Some(conversation.created_at)),
                Cell::Int(Some(conversation.updated_at)),
                Cell::Int(conversation.closed_at),
                Cell::Int4(i32::try_from(conversation.last_day).map_err(|_| {
                    CopyError::Unstorable(format!("day {} is beyond PostgreSQL's integer", conversation.last_day))
                })?),
                Cell::Int(conversation.first_response_at),
                Cell::Text(json_text(&conversation.rating)),
                Cell::Int(conversation.team.map(|id| signed(id, "team id")).transpose()?),
                Cell::Bool(conversation.bot_active),
            ],
            SourceRow::Message(key, record) => vec![
                Cell::Int(Some(signed(key.conversation_id, "conversation id")?)),
                Cell::Int(Some(signed(key.seq, "seq")?)),
                Cell::Day(key.day),
                Cell::Int(Some(signed(record.lsn, "lsn")?)),
                // Trace ids use all 64 bits; stored as the same bits, as the group commit does.
                Cell::Int(Some(record.trace_id as i64)),
                Cell::Int(Some(record.created_at)),
                Cell::Small(i16::from(record.sender_kind.code())),
                Cell::Int(Some(signed(record.sender_id, "sender id")?)),
                Cell::Text(Some(record.sender_name.clone())),
                Cell::Text(Some(record.kind.as_str().to_owned())),
                Cell::Bool(record.internal),
                Cell::Text(record.client_id.clone()),
                Cell::Text(Some(record.text.clone())),
                Cell::Text(json_text(&record.attachment)),
                Cell::Text(json_text(&record.bot_source)),
                Cell::Int(record.offline_message_id.map(|id| signed(id, "offline message id")).transpose()?),
            ],
            SourceRow::ClientId(record) => vec![
                Cell::Small(i16::from(record.sender_kind)),
                Cell::Int(Some(signed(record.sender_id, "sender id")?)),
                Cell::Text(Some(record.client_id.clone())),
                Cell::Int(Some(signed(record.conversation_id, "conversation id")?)),
                Cell::Int(Some(signed(record.seq, "seq")?)),
                Cell::Day(record.day),
                Cell::Int(Some(record.created_at)),
            ],
            SourceRow::Record(row) => {
                let mut cells = Vec::with_capacity(row.key.len() + 1);
                for part in &row.key {
                    cells.push(match part {
                        KeyPart::Int(value) => Cell::Int(Some(signed(*value, "id")?)),
                        // A hash uses all 64 bits; stored as the same bits.
                        KeyPart::Bits(value) => Cell::Int(Some(*value as i64)),
                        KeyPart::Small(value) => Cell::Small(i16::from(*value)),
                        KeyPart::Text(text) => Cell::Text(Some(text.clone())),
                        KeyPart::Bytes(bytes) => Cell::Bytes(bytes.clone()),
                    });
                }
                cells.push(Cell::Text(Some(row.record.to_string())));
                cells
            }
            SourceRow::Upload(..) => Vec::new(),
            SourceRow::Outbox(row) => row.cells()?,
        })
    }
}

/// What a row's checksum covers, built the same way from a redb record and from a PostgreSQL
/// row read back into the same domain types.
#[derive(Serialize)]
enum CanonicalRow<'a> {
    Conversation(&'a Conversation),
    Message {
        day: u32,
        conversation_id: u64,
        seq: u64,
        record: &'a MessageRecord,
    },
    ClientId {
        sender_kind: u8,
        sender_id: u64,
        client_id: &'a str,
        conversation_id: u64,
        seq: u64,
        day: u32,
        created_at: i64,
    },
    Record {
        key: Vec<Value>,
        record: &'a Value,
    },
    Upload {
        record: &'a Upload,
        sha256: Option<&'a str>,
    },
    Outbox(&'a OutboxCopy),
}

impl<'a> From<&'a SourceRow> for CanonicalRow<'a> {
    fn from(row: &'a SourceRow) -> Self {
        match row {
            SourceRow::Conversation(conversation) => CanonicalRow::Conversation(conversation),
            SourceRow::Message(key, record) => {
                CanonicalRow::Message { day: key.day, conversation_id: key.conversation_id, seq: key.seq, record }
            }
            SourceRow::ClientId(record) => client_id_row(record),
            SourceRow::Record(row) => record_row(row),
            SourceRow::Upload(record, sha256) => CanonicalRow::Upload { record, sha256: sha256.as_deref() },
            SourceRow::Outbox(row) => CanonicalRow::Outbox(row),
        }
    }
}

fn client_id_row(record: &ClientIdRecord) -> CanonicalRow<'_> {
    CanonicalRow::ClientId {
        sender_kind: record.sender_kind,
        sender_id: record.sender_id,
        client_id: &record.client_id,
        conversation_id: record.conversation_id,
        seq: record.seq,
        day: record.day,
        created_at: record.created_at,
    }
}

/// The SHA-256 of a file in hex; none when it is missing or empty.
fn file_sha256(path: &Path) -> Result<Option<String>, CopyError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(CopyError::Source(format!("{}: {error}", path.display()))),
    };
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)
        .map_err(|error| CopyError::Source(format!("{}: {error}", path.display())))?;
    Ok((size > 0).then(|| hex::encode(hasher.finalize())))
}

fn record_row(row: &RecordRow) -> CanonicalRow<'_> {
    CanonicalRow::Record { key: row.key.iter().map(KeyPart::json).collect(), record: &row.record }
}

fn canonical_of(row: &CanonicalRow<'_>) -> Vec<u8> {
    // Serializing plain records to a Vec cannot fail; an empty row would show as a difference.
    serde_json::to_vec(row).unwrap_or_default()
}

/// Whether JSON text holds the escape of U+0000 (which PostgreSQL's text and jsonb refuse),
/// reading escapes in order so an escaped backslash followed by "u0000" is not taken for one.
fn json_has_nul(json: &[u8]) -> bool {
    let mut at = 0;
    while at < json.len() {
        if json[at] == b'\\' {
            if json.get(at + 1..at + 6) == Some(b"u0000".as_slice()) {
                return true;
            }
            at += 2;
        } else {
            at += 1;
        }
    }
    false
}

/// The progress row of one table, as stored.
struct Progress {
    table: CopiedTable,
    source_epoch: u64,
    source: Tally,
    last_key: Option<CopyKey>,
    rows_copied: u64,
    finished: bool,
}

/// Copies the source into the database at `client` (migrations applied first), going on from
/// where an earlier run stopped; returns what each table's copy did. `on_batch` is shown each
/// table's progress after every batch, with the table's rows in the source. The caller verifies
/// after.
pub async fn copy(
    source: &Source,
    source_summary: &Summary,
    client: &mut Client,
    batch_rows: usize,
    method: LoadMethod,
    on_batch: &mut (dyn FnMut(&Copied, u64) + Send),
) -> Result<Vec<Copied>, CopyError> {
    postgres::migrate(client).await?;
    let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&COPY_LOCK]).await?.get(0);
    if !locked {
        return Err(CopyError::Busy);
    }
    let outcome = copy_locked(source, source_summary, client, batch_rows.max(1), method, on_batch).await;
    // The lock ends with the session anyway; an error here changes nothing of the copy.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&COPY_LOCK]).await;
    outcome
}

async fn copy_locked(
    source: &Source,
    source_summary: &Summary,
    client: &mut Client,
    batch_rows: usize,
    method: LoadMethod,
    on_batch: &mut (dyn FnMut(&Copied, u64) + Send),
) -> Result<Vec<Copied>, CopyError> {
    let progress = begin_or_resume(source, source_summary, client).await?;
    let mut copied = Vec::new();
    for (mut progress, source_tally) in progress.into_iter().zip(source_summary) {
        let started = Instant::now();
        let rows_before = progress.rows_copied;
        if progress.finished {
            copied.push(Copied { table: progress.table, rows: 0, rows_before, seconds: 0.0 });
            continue;
        }
        let mut reading = source.read_ahead(progress.table, progress.last_key.clone(), batch_rows);
        while !progress.finished {
            let (batch, cells) = reading.await.map_err(|error| CopyError::Source(error.to_string()))??;
            let after = batch.last.clone().or_else(|| progress.last_key.clone());
            reading = source.read_ahead(progress.table, after, batch_rows);
            store_batch(client, &source.data_dir, &mut progress, batch, &cells, method).await?;
            let so_far = Copied {
                table: progress.table,
                rows: progress.rows_copied - rows_before,
                rows_before,
                seconds: started.elapsed().as_secs_f64(),
            };
            on_batch(&so_far, source_tally.rows);
            if progress.finished {
                copied.push(so_far);
            }
        }
    }
    // New ids on PostgreSQL continue the copied ones: each sequence moves past them (never back,
    // so running this again after nodes appended is harmless).
    client.batch_execute(&move_sequences_sql()).await?;
    Ok(copied)
}

/// Each sequence that gives new ids on PostgreSQL, the table and column whose copied values it
/// must pass, and the appliance's counter of them (`appliance_meta`), when it has one.
const SEQUENCES: &[(&str, &str, &str, Option<&str>)] = &[
    ("conversation_ids", "conversations", "id", None),
    ("message_lsns", "messages", "lsn", None),
    ("visitor_ids", "visitors", "id", Some("next_visitor_id")),
    ("team_ids", "teams", "id", None),
    ("lead_ids", "leads", "id", Some("next_lead_id")),
    ("canned_reply_ids", "canned_replies", "id", None),
    ("audit_ids", "audit_log", "id", None),
    ("api_token_ids", "api_tokens", "id", None),
    ("kb_entry_ids", "kb_entries", "id", Some("next_kb_entry_id")),
    ("offline_message_ids", "offline_messages", "id", Some("next_offline_message_id")),
    ("agent_ids", "agents", "id", Some("next_agent_id")),
];

/// The statements that move every sequence of [`SEQUENCES`] past the copied values.
fn move_sequences_sql() -> String {
    SEQUENCES
        .iter()
        .map(|(sequence, table, column, counter)| {
            let counter = counter.map_or(String::new(), |name| {
                format!("(SELECT (record #>> '{{}}')::bigint FROM appliance_meta WHERE name = '{name}'), ")
            });
            format!(
                "SELECT setval('{sequence}', greatest(coalesce((SELECT max({column}) FROM {table}), 0) + 1, {counter}\
                 (SELECT last_value + is_called::int FROM {sequence})), false);\n"
            )
        })
        .collect()
}

/// Starts a copy into an empty target, or checks that the target's copy in progress is of this
/// very source as it was when the copy began; returns each table's progress.
async fn begin_or_resume(source: &Source, summary: &Summary, client: &mut Client) -> Result<Vec<Progress>, CopyError> {
    let mut progress = read_progress(client).await?;
    // A table without a progress row is begun: all of them on a first run, and on a target
    // copied by an older kefu, the tables it did not know.
    let missing: Vec<(CopiedTable, &Tally)> = CopiedTable::ALL
        .into_iter()
        .zip(summary)
        .filter(|(table, _)| progress.iter().all(|row| row.table != *table))
        .collect();
    if !missing.is_empty() {
        let transaction = client.transaction().await?;
        let mut foreign = Vec::new();
        for (table, _) in &missing {
            let rows: i64 = transaction
                .query_one(&format!("SELECT count(*) FROM {}{}", table.target(), table.target_filter()), &[])
                .await?
                .get(0);
            if rows > 0 {
                foreign.push(format!("{}: {rows}", table.name()));
            }
        }
        if !foreign.is_empty() {
            return Err(CopyError::ForeignData(foreign.join(", ")));
        }
        for (table, tally) in missing {
            transaction
                .execute(
                    "INSERT INTO redb_copy_progress (table_name, source_epoch, source_rows, source_checksum)
                     VALUES ($1, $2, $3, $4)",
                    &[&table.name(), &(source.epoch as i64), &(tally.rows as i64), &tally.checksum()],
                )
                .await?;
        }
        transaction.commit().await?;
        progress = read_progress(client).await?;
    }
    if progress.len() != CopiedTable::ALL.len() {
        return Err(CopyError::BadProgress(format!("{} tables in redb_copy_progress", progress.len())));
    }
    for (row, tally) in progress.iter().zip(summary) {
        if row.source_epoch != source.epoch {
            return Err(CopyError::OtherSource { found: row.source_epoch, expected: source.epoch });
        }
        if row.source != *tally {
            return Err(CopyError::SourceChanged {
                table: row.table.name(),
                then_rows: row.source.rows,
                now_rows: tally.rows,
            });
        }
    }
    Ok(progress)
}

/// The progress rows, in [`CopiedTable::ALL`]'s order.
async fn read_progress(client: &Client) -> Result<Vec<Progress>, CopyError> {
    let rows = client
        .query(
            "SELECT table_name, source_epoch, source_rows, source_checksum, last_key::text, rows_copied,
                    finished_at IS NOT NULL
             FROM redb_copy_progress",
            &[],
        )
        .await?;
    let mut progress = Vec::new();
    for table in CopiedTable::ALL {
        let Some(row) = rows.iter().find(|row| row.get::<_, &str>(0) == table.name()) else {
            continue;
        };
        let last_key: Option<String> = row.get(4);
        let last_key = last_key
            .map(|text| serde_json::from_str(&text).map_err(|error| CopyError::BadProgress(error.to_string())))
            .transpose()?;
        let source_checksum: String = row.get(3);
        progress.push(Progress {
            table,
            source_epoch: row.get::<_, i64>(1) as u64,
            source: Tally { rows: row.get::<_, i64>(2) as u64, sum: parse_checksum(&source_checksum)? },
            last_key,
            rows_copied: row.get::<_, i64>(5) as u64,
            finished: row.get(6),
        });
    }
    Ok(progress)
}

fn parse_checksum(text: &str) -> Result<u128, CopyError> {
    u128::from_str_radix(text, 16).map_err(|_| CopyError::BadProgress(format!("checksum {text:?}")))
}

/// Stores one batch and moves the cursor in the same transaction; an empty batch marks the
/// table finished.
async fn store_batch(
    client: &mut Client,
    data_dir: &Path,
    progress: &mut Progress,
    batch: Batch,
    rows: &[Vec<Cell>],
    method: LoadMethod,
) -> Result<(), CopyError> {
    let table = progress.table;
    let transaction = client.transaction().await?;
    let n_rows = batch.rows.len() as i64;
    if !batch.rows.is_empty() {
        if table == CopiedTable::Messages {
            let mut days: Vec<i32> = batch
                .rows
                .iter()
                .filter_map(|row| if let SourceRow::Message(key, _) = row { Some(key.day as i32) } else { None })
                .collect();
            days.dedup();
            transaction
                .execute("SELECT kefu_create_message_partition(day) FROM unnest($1::int[]) AS day", &[&days])
                .await?;
        }
        let loaded = match method {
            _ if table == CopiedTable::Uploads => {
                store_uploads(&transaction, data_dir, &batch.rows).await?;
                Ok(0)
            }
            LoadMethod::Copy => load_by_copy(&transaction, table, rows).await,
            LoadMethod::Insert => load_by_insert(&transaction, table, rows).await,
        };
        if let Err(error) = loaded {
            if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                return Err(CopyError::Conflict { table: table.name(), detail: describe(&error) });
            }
            return Err(error.into());
        }
    }
    let last_key = batch.last.clone().or_else(|| progress.last_key.clone());
    let last_key_text = last_key.as_ref().map(|key| serde_json::to_string(key).unwrap_or_default());
    let finished = batch.rows.is_empty();
    let updated = transaction
        .execute(
            "UPDATE redb_copy_progress
             SET last_key = $2::text::jsonb, rows_copied = rows_copied + $3,
                 finished_at = CASE WHEN $4 THEN now() END
             WHERE table_name = $1 AND rows_copied = $5",
            &[&table.name(), &last_key_text, &n_rows, &finished, &(progress.rows_copied as i64)],
        )
        .await?;
    if updated != 1 {
        return Err(CopyError::Busy);
    }
    transaction.commit().await?;
    progress.last_key = last_key;
    progress.rows_copied += n_rows as u64;
    progress.finished = finished;
    Ok(())
}

/// Stores each upload of `rows` with its file's bytes, read from `data_dir` a chunk at a time.
async fn store_uploads(
    transaction: &tokio_postgres::Transaction<'_>,
    data_dir: &Path,
    rows: &[SourceRow],
) -> Result<(), CopyError> {
    for row in rows {
        let SourceRow::Upload(upload, _) = row else { continue };
        let failed =
            |error: &dyn std::fmt::Display| CopyError::Upload { id: upload.id.clone(), detail: error.to_string() };
        // A file gone from the data directory leaves the record without bytes, as the summary
        // counted it (an empty file too: `import` stores no content for it).
        let mut file = match tokio::fs::File::open(uploads::path_of(data_dir, &upload.id)).await {
            Ok(file) => Some(file),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(failed(&error)),
        };
        cluster_uploads::import(transaction, upload, file.as_mut()).await.map_err(|error| failed(&error))?;
    }
    Ok(())
}

/// `COPY table (columns) FROM STDIN`, the rows in PostgreSQL's text format.
async fn load_by_copy(
    transaction: &tokio_postgres::Transaction<'_>,
    table: CopiedTable,
    rows: &[Vec<Cell>],
) -> Result<u64, tokio_postgres::Error> {
    let columns = table.columns();
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let mut text = String::with_capacity(rows.len() * 256);
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if index > 0 {
                text.push('\t');
            }
            copy_text(&mut text, cell);
        }
        text.push('\n');
    }
    let sink = transaction.copy_in(&format!("COPY {} ({}) FROM STDIN", table.target(), names.join(", "))).await?;
    futures_util::pin_mut!(sink);
    sink.send(Cursor::new(text.into_bytes())).await?;
    sink.as_mut().finish().await
}

/// One value in COPY's text format: `\N` for null, backslash escapes for the separators.
fn copy_text(out: &mut String, cell: &Cell) {
    use std::fmt::Write as _;
    match cell {
        Cell::Int(None) | Cell::Text(None) => out.push_str("\\N"),
        Cell::Int(Some(value)) => drop(write!(out, "{value}")),
        Cell::Small(value) => drop(write!(out, "{value}")),
        Cell::Int4(value) => drop(write!(out, "{value}")),
        Cell::Bool(value) => out.push(if *value { 't' } else { 'f' }),
        Cell::Day(day) => out.push_str(&clock::day_to_date(*day)),
        // bytea's hex input, its backslash escaped for COPY.
        Cell::Bytes(bytes) => {
            out.push_str("\\\\x");
            out.push_str(&hex::encode(bytes));
        }
        Cell::Text(Some(text)) => {
            for character in text.chars() {
                match character {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    other => out.push(other),
                }
            }
        }
    }
}

/// `INSERT INTO table (columns) SELECT ... FROM unnest($1, $2, ...)`: one array per column.
async fn load_by_insert(
    transaction: &tokio_postgres::Transaction<'_>,
    table: CopiedTable,
    rows: &[Vec<Cell>],
) -> Result<u64, tokio_postgres::Error> {
    let columns = table.columns();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(columns.len());
    let mut arguments = Vec::with_capacity(columns.len());
    let mut selected = Vec::with_capacity(columns.len());
    for (index, (name, column)) in columns.iter().enumerate() {
        let number = index + 1;
        let (array_type, select) = match column {
            Column::Int | Column::Bits => ("bigint[]", format!("c{number}")),
            Column::Bytes => ("bytea[]", format!("c{number}")),
            Column::Int4 => ("int[]", format!("c{number}")),
            Column::Small => ("smallint[]", format!("c{number}")),
            Column::Text => ("text[]", format!("c{number}")),
            Column::Bool => ("boolean[]", format!("c{number}")),
            Column::Day => ("int[]", format!("date '1970-01-01' + c{number}")),
            Column::Json => ("text[]", format!("c{number}::jsonb")),
        };
        arguments.push(format!("${number}::{array_type}"));
        selected.push(format!("{select} AS {name}"));
        params.push(column_array(rows, index, *column));
    }
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let aliases: Vec<String> = (1..=columns.len()).map(|number| format!("c{number}")).collect();
    let statement = format!(
        "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS t({})",
        table.target(),
        names.join(", "),
        selected.join(", "),
        arguments.join(", "),
        aliases.join(", ")
    );
    let references: Vec<&(dyn ToSql + Sync)> = params.iter().map(|param| &**param as &(dyn ToSql + Sync)).collect();
    transaction.execute(&statement, &references).await
}

/// The values of one column of `rows` as a typed array parameter.
fn column_array(rows: &[Vec<Cell>], index: usize, column: Column) -> Box<dyn ToSql + Sync + Send> {
    let cells = rows.iter().map(|row| &row[index]);
    match column {
        Column::Int | Column::Bits => {
            Box::new(cells.map(|cell| if let Cell::Int(value) = cell { *value } else { None }).collect::<Vec<_>>())
        }
        Column::Bytes => Box::new(
            cells
                .map(|cell| if let Cell::Bytes(bytes) = cell { Some(bytes.clone()) } else { None })
                .collect::<Vec<_>>(),
        ),
        Column::Int4 | Column::Day => Box::new(
            cells
                .map(|cell| match cell {
                    Cell::Int4(value) => *value,
                    // Days since 1970 fit an i32 until the year 5.8 million.
                    Cell::Day(day) => *day as i32,
                    _ => 0,
                })
                .collect::<Vec<i32>>(),
        ),
        Column::Small => {
            Box::new(cells.map(|cell| if let Cell::Small(value) = cell { *value } else { 0 }).collect::<Vec<i16>>())
        }
        Column::Text | Column::Json => Box::new(
            cells.map(|cell| if let Cell::Text(value) = cell { value.clone() } else { None }).collect::<Vec<_>>(),
        ),
        Column::Bool => Box::new(cells.map(|cell| matches!(cell, Cell::Bool(true))).collect::<Vec<bool>>()),
    }
}

/// Counts and checksums the target's tables the way [`Source::summary`] does the source's,
/// reading every row back into the domain records.
pub async fn target_summary(client: &Client) -> Result<Summary, CopyError> {
    let version = postgres::schema_version(client).await?;
    if version == 0 {
        return Err(CopyError::NoSchema);
    }
    if version > postgres::known_version() {
        return Err(PostgresError::NewerSchema { found: version, known: postgres::known_version() }.into());
    }
    let mut summary = empty_summary();
    for (index, table) in CopiedTable::ALL.into_iter().enumerate() {
        let statement = match table {
            CopiedTable::Conversations => format!("SELECT {CONVERSATION_COLUMNS} FROM conversations"),
            CopiedTable::Messages => {
                format!("SELECT {MESSAGE_COLUMNS}, conversation_id, (day - date '1970-01-01') FROM messages")
            }
            CopiedTable::ClientIds => "SELECT sender_kind, sender_id, client_id, conversation_id, seq,
                                              (day - date '1970-01-01'), created_at
                                       FROM client_ids"
                .to_owned(),
            CopiedTable::Records(records) => {
                let keys: Vec<&str> =
                    records.columns.iter().map(|(name, _)| *name).filter(|name| *name != "record").collect();
                format!("SELECT {}, record::text FROM {}", keys.join(", "), records.name)
            }
            // The hash of the bytes as stored, chunk by chunk, not the one the copy recorded.
            CopiedTable::Uploads => format!(
                "SELECT {UPLOAD_COLUMNS},
                        (SELECT encode(sha256(string_agg(k.bytes, ''::bytea ORDER BY k.n)), 'hex')
                         FROM upload_chunks k WHERE k.content_id = uploads.content_id)
                 FROM uploads"
            ),
            CopiedTable::Outbox(_) => format!("{}{}", outboxes::SELECT, table.target_filter()),
        };
        let rows = client.query_raw(&statement, std::iter::empty::<&(dyn ToSql + Sync)>()).await?;
        futures_util::pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            summary[index].add(&canonical_of_target(table, &row)?);
        }
    }
    Ok(summary)
}

fn canonical_of_target(table: CopiedTable, row: &Row) -> Result<Vec<u8>, CopyError> {
    let unsigned =
        |value: i64| u64::try_from(value).map_err(|_| PostgresError::Corrupt(format!("negative id {value}")));
    let day = |value: Option<i32>| {
        value
            .and_then(|day| u32::try_from(day).ok())
            .ok_or_else(|| PostgresError::Corrupt(format!("day {value:?} before 1970 or missing")))
    };
    Ok(match table {
        CopiedTable::Conversations => canonical_of(&CanonicalRow::Conversation(&conversation_of(row)?)),
        CopiedTable::Messages => {
            let (seq, record) = message_of(row)?;
            let conversation_id = unsigned(row.try_get(14).map_err(PostgresError::from)?)?;
            let day = day(row.try_get(15).map_err(PostgresError::from)?)?;
            canonical_of(&CanonicalRow::Message { day, conversation_id, seq, record: &record })
        }
        CopiedTable::ClientIds => {
            let get = |index: usize| row.try_get::<_, i64>(index).map_err(PostgresError::from);
            let sender_kind: i16 = row.try_get(0).map_err(PostgresError::from)?;
            let record = ClientIdRecord {
                sender_kind: u8::try_from(sender_kind)
                    .map_err(|_| PostgresError::Corrupt(format!("sender kind {sender_kind}")))?,
                sender_id: unsigned(get(1)?)?,
                client_id: row.try_get(2).map_err(PostgresError::from)?,
                conversation_id: unsigned(get(3)?)?,
                seq: unsigned(get(4)?)?,
                day: day(row.try_get(5).map_err(PostgresError::from)?)?,
                created_at: get(6)?,
            };
            canonical_of(&client_id_row(&record))
        }
        CopiedTable::Records(records) => canonical_of(&record_row(&RecordRow::of_target(records, row)?)),
        CopiedTable::Outbox(_) => canonical_of(&CanonicalRow::Outbox(&OutboxCopy::of_target(row)?)),
        CopiedTable::Uploads => {
            let (record, _) = upload_of(row)?;
            let sha256: Option<String> = row.try_get(12).map_err(PostgresError::from)?;
            canonical_of(&CanonicalRow::Upload { record: &record, sha256: sha256.as_deref() })
        }
    })
}

/// Compares the source's summary with the target's, table by table.
pub fn compare(source: &Summary, target: &Summary) -> Vec<Verified> {
    CopiedTable::ALL
        .into_iter()
        .enumerate()
        .map(|(index, table)| Verified { table, source: source[index], target: target[index] })
        .collect()
}

/// Connects to the target (a URL that is not one is refused before anything is sent). The
/// session is marked as copying, so the copied conversations do not fire migration 17's webhook
/// trigger (and the messages go in with COPY, not the append function that writes theirs): their
/// events were the appliance's, delivered (or not) there.
pub async fn connect(url: &str) -> Result<Client, CopyError> {
    let client = postgres::connect(url).await?;
    client.batch_execute("SET kefu.copying = 'on'").await.map_err(PostgresError::from)?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_is_found_only_where_json_escapes_one() {
        assert!(json_has_nul(br#"{"text":"a\u0000b"}"#));
        assert!(!json_has_nul(br#"{"text":"a\\u0000b"}"#), "an escaped backslash, then the letters u0000");
        assert!(json_has_nul(br#"{"text":"a\\\u0000"}"#));
        assert!(!json_has_nul(r#"{"text":"你好"}"#.as_bytes()));
    }

    #[test]
    fn the_checksum_does_not_depend_on_the_order_of_rows() {
        let (mut forward, mut backward) = (Tally::default(), Tally::default());
        for row in ["a", "b", "c"] {
            forward.add(row.as_bytes());
        }
        for row in ["c", "b", "a"] {
            backward.add(row.as_bytes());
        }
        assert_eq!(forward, backward);
        let mut twice = Tally::default();
        for row in ["a", "a", "c"] {
            twice.add(row.as_bytes());
        }
        assert_ne!(twice.checksum(), forward.checksum());
    }

    #[test]
    fn copy_text_escapes_its_separators() {
        let mut out = String::new();
        copy_text(&mut out, &Cell::Text(Some("a\tb\nc\\d 你好".to_owned())));
        assert_eq!(out, "a\\tb\\nc\\\\d 你好");
    }
}
