//! History export: every message of a date range as CSV or JSON Lines, streamed.
//!
//! The exporter runs on the blocking pool. It reads the day shards in range oldest first, each in
//! chunks of [`EXPORT_CHUNK`] messages, each chunk in its own read transaction, encodes the chunk
//! and sends the bytes through a bounded channel to whoever writes them out (an HTTP body, the
//! control socket, a file). Memory stays constant whatever the range holds, and a reader that
//! goes away stops the export.
//!
//! Order: by UTC day, then conversation id, then sequence (the key order of the shards), so each
//! conversation's messages of a day are together and in order.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::chat::conversations;
use crate::chat::messages::{self, MessageKey, MessageRecord};
use crate::search::indexer::sender_kind_name;
use crate::storage::{StorageError, Store};

/// Messages read per read transaction.
pub const EXPORT_CHUNK: usize = 4_096;

/// Encoded chunks waiting to be written out. A few chunks keep the reader busy while the writer
/// sends, and bound the memory an export holds (about this many chunks of encoded text).
pub const EXPORT_QUEUE_CAPACITY: usize = 4;

/// The UTF-8 byte order mark, which makes spreadsheets read a CSV file as UTF-8.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

const CSV_HEADER: [&str; 12] = [
    "date",
    "conversation_id",
    "seq",
    "site",
    "visitor_id",
    "assigned_agent",
    "created_at",
    "sender_kind",
    "sender_id",
    "sender_name",
    "internal",
    "text",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

impl ExportFormat {
    pub fn parse(text: &str) -> Result<ExportFormat, String> {
        match text {
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" => Ok(ExportFormat::Jsonl),
            other => Err(format!("format: must be csv or jsonl, not {other:?}")),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson; charset=utf-8",
        }
    }
}

/// What to export.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportRequest {
    /// First and last UTC day, inclusive.
    pub from_day: u32,
    pub to_day: u32,
    pub site: Option<String>,
    /// Conversations assigned to this agent.
    pub agent: Option<u64>,
    /// The sites the caller may see; `None` for every site.
    pub visible_sites: Option<Vec<String>>,
    pub format: ExportFormat,
    /// Start a CSV with a UTF-8 byte order mark.
    pub bom: bool,
}

impl ExportRequest {
    /// Reads `YYYY-MM-DD` dates into a request, or says which field is wrong.
    pub fn dates(from: &str, to: &str) -> Result<(u32, u32), String> {
        let from_day = crate::base::clock::date_to_day(from)
            .ok_or_else(|| format!("from: {from:?} is not a date (YYYY-MM-DD)"))?;
        let to_day =
            crate::base::clock::date_to_day(to).ok_or_else(|| format!("to: {to:?} is not a date (YYYY-MM-DD)"))?;
        if to_day < from_day {
            return Err("to: must not be before from".into());
        }
        Ok((from_day, to_day))
    }
}

#[derive(Serialize)]
struct JsonRow<'a> {
    date: &'a str,
    conversation_id: u64,
    seq: u64,
    site: &'a str,
    visitor_id: u64,
    assigned_agent: Option<u64>,
    created_at: String,
    sender_kind: &'static str,
    sender_id: u64,
    sender_name: &'a str,
    internal: bool,
    text: &'a str,
}

/// What the exporter needs of a conversation.
#[derive(Clone)]
pub(crate) struct ConversationFacts {
    site: String,
    visitor_id: u64,
    assigned_agent: Option<u64>,
}

impl ConversationFacts {
    pub(crate) fn of(conversation: crate::chat::conversations::Conversation) -> ConversationFacts {
        ConversationFacts {
            site: conversation.site,
            visitor_id: conversation.visitor_id,
            assigned_agent: conversation.assigned_agent,
        }
    }
}

/// Where an export reads the history: the appliance's day shards, or a cluster's day partitions
/// (`cluster::history_export`); both encode with [`head`] and [`encode_chunk`].
pub trait HistoryExport: Send + Sync {
    /// Starts an export; its encoded bytes arrive on the returned channel, and an error, if one
    /// happens, as the last item.
    fn start_export(&self, request: ExportRequest) -> mpsc::Receiver<Result<Bytes, StorageError>>;
}

impl HistoryExport for Store {
    fn start_export(&self, request: ExportRequest) -> mpsc::Receiver<Result<Bytes, StorageError>> {
        start(self.clone(), request)
    }
}

/// Starts an export on the blocking pool; its encoded bytes arrive on the returned channel, and
/// an error, if one happens, as the last item.
pub fn start(store: Store, request: ExportRequest) -> mpsc::Receiver<Result<Bytes, StorageError>> {
    let (sender, receiver) = mpsc::channel(EXPORT_QUEUE_CAPACITY);
    tokio::task::spawn_blocking(move || {
        let mut send = |bytes: Vec<u8>| sender.blocking_send(Ok(Bytes::from(bytes))).is_ok();
        if let Err(error) = run(&store, &request, &mut send) {
            let _ = sender.blocking_send(Err(error));
        }
    });
    receiver
}

/// What an export starts with: a CSV's header line (after a byte order mark if asked for);
/// nothing for JSON Lines.
pub(crate) fn head(request: &ExportRequest) -> Result<Vec<u8>, StorageError> {
    let mut head = Vec::new();
    if request.format == ExportFormat::Csv {
        if request.bom {
            head.extend_from_slice(UTF8_BOM);
        }
        let mut writer = csv::Writer::from_writer(&mut head);
        writer.write_record(CSV_HEADER).map_err(csv_error)?;
        writer.flush()?;
    }
    Ok(head)
}

/// Encodes the messages of one chunk (of one day, in key order) that `request` selects; their
/// conversations' facts are in `facts` (`None`: the conversation is gone, its messages skipped).
/// Returns the bytes and how many messages they hold.
pub(crate) fn encode_chunk(
    request: &ExportRequest,
    chunk: &[(MessageKey, MessageRecord)],
    facts: &HashMap<u64, Option<ConversationFacts>>,
) -> Result<(Vec<u8>, u64), StorageError> {
    let mut n_encoded = 0;
    let mut encoded = Vec::with_capacity(chunk.len() * 128);
    let mut csv_writer = (request.format == ExportFormat::Csv).then(|| csv::Writer::from_writer(Vec::with_capacity(0)));
    for (key, record) in chunk {
        let Some(Some(conversation)) = facts.get(&key.conversation_id) else {
            continue;
        };
        if !selected(request, conversation) {
            continue;
        }
        n_encoded += 1;
        let date = crate::base::clock::day_to_date(key.day);
        match csv_writer.as_mut() {
            Some(writer) => write_csv(writer, &date, key, record, conversation)?,
            None => write_json(&mut encoded, &date, key, record, conversation),
        }
    }
    if let Some(writer) = csv_writer {
        encoded = writer.into_inner().map_err(|error| StorageError::Io(error.into_error()))?;
    }
    Ok((encoded, n_encoded))
}

/// Runs an export on the calling thread, handing each encoded chunk to `send`, which returns
/// false to stop. Returns the number of messages exported.
pub fn run(store: &Store, request: &ExportRequest, send: &mut dyn FnMut(Vec<u8>) -> bool) -> Result<u64, StorageError> {
    let head = head(request)?;
    if !head.is_empty() && !send(head) {
        return Ok(0);
    }
    let days = store.read_blocking(messages::shard_days)?;
    let mut n_exported = 0;
    for day in days.into_iter().filter(|day| (request.from_day..=request.to_day).contains(day)) {
        let mut after = None;
        loop {
            let (chunk, facts) = store.read_blocking(|transaction| {
                let chunk = messages::scan_shard(transaction, day, after, EXPORT_CHUNK)?;
                let mut facts: HashMap<u64, Option<ConversationFacts>> = HashMap::new();
                for (key, _) in &chunk {
                    if let std::collections::hash_map::Entry::Vacant(entry) = facts.entry(key.conversation_id) {
                        entry.insert(conversations::get(transaction, key.conversation_id)?.map(ConversationFacts::of));
                    }
                }
                Ok((chunk, facts))
            })?;
            let Some((last_key, _)) = chunk.last() else {
                break;
            };
            after = Some((last_key.conversation_id, last_key.seq));
            let full = chunk.len() == EXPORT_CHUNK;
            let (encoded, n_encoded) = encode_chunk(request, &chunk, &facts)?;
            n_exported += n_encoded;
            if !encoded.is_empty() && !send(encoded) {
                return Ok(n_exported);
            }
            if !full {
                break;
            }
        }
    }
    Ok(n_exported)
}

fn selected(request: &ExportRequest, conversation: &ConversationFacts) -> bool {
    request.visible_sites.as_ref().is_none_or(|sites| sites.contains(&conversation.site))
        && request.site.as_ref().is_none_or(|site| *site == conversation.site)
        && request.agent.is_none_or(|agent| conversation.assigned_agent == Some(agent))
}

fn timestamp(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis).map(|timestamp| timestamp.to_string()).unwrap_or_default()
}

fn csv_error(error: csv::Error) -> StorageError {
    StorageError::Io(std::io::Error::other(error.to_string()))
}

fn write_csv(
    writer: &mut csv::Writer<Vec<u8>>,
    date: &str,
    key: &MessageKey,
    record: &MessageRecord,
    conversation: &ConversationFacts,
) -> Result<(), StorageError> {
    let cells = [
        date,
        &key.conversation_id.to_string(),
        &key.seq.to_string(),
        conversation.site.as_str(),
        &conversation.visitor_id.to_string(),
        &conversation.assigned_agent.map(|agent| agent.to_string()).unwrap_or_default(),
        &timestamp(record.created_at),
        sender_kind_name(record.sender_kind),
        &record.sender_id.to_string(),
        record.sender_name.as_str(),
        if record.internal { "true" } else { "false" },
        record.text.as_str(),
    ];
    writer
        .write_record(cells.iter().map(|cell| crate::base::csv_cells::neutralize_formula(cell).into_owned()))
        .map_err(csv_error)
}

fn write_json(
    encoded: &mut Vec<u8>,
    date: &str,
    key: &MessageKey,
    record: &MessageRecord,
    conversation: &ConversationFacts,
) {
    let row = JsonRow {
        date,
        conversation_id: key.conversation_id,
        seq: key.seq,
        site: &conversation.site,
        visitor_id: conversation.visitor_id,
        assigned_agent: conversation.assigned_agent,
        created_at: timestamp(record.created_at),
        sender_kind: sender_kind_name(record.sender_kind),
        sender_id: record.sender_id,
        sender_name: &record.sender_name,
        internal: record.internal,
        text: &record.text,
    };
    serde_json::to_writer(&mut *encoded, &row).expect("an export row always serializes");
    encoded.push(b'\n');
}
