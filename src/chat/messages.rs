//! Messages: validation, the durable append with deduplication by client id, and reads of a
//! conversation's history from the day shards.
//!
//! Layout (docs/storage.md): one table per UTC day, keyed by (conversation, seq).
//! `conversation_days_v1` lists the days a conversation has messages in, so a history read opens
//! only those shards.

use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::chat::conversations::{self, ConversationStatus};
use crate::chat::delivery::{CommittedEvent, ConnectionHandle};
use crate::chat::sensitive_words::Filtered;
use crate::chat::uploads::{AttachmentKind, Upload};
use crate::chat::writes::ChatWrites;
use crate::protocol::{AttachmentView, BotSource, ErrorCode, MessageView, SenderKind, SenderView};
use crate::sites::{SiteDirectory, SiteRuntime};
use crate::storage::writer::Counter;
use crate::storage::{StorageError, WriteContext, decode_postcard, encode_postcard, tables};

/// Longest client id accepted.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// A stored message. The enum tag is the record's format version: records written before the
/// offline-form mark are `V1` and read as not from the offline form.
#[derive(Serialize, Deserialize)]
enum StoredMessage {
    V1(MessageRecordV1),
    V2(MessageRecord),
}

/// [`StoredMessage`] borrowing its record, for writing: it encodes to the same bytes. `V1` is
/// never written; it keeps `V2`'s tag.
#[derive(Serialize)]
enum StoredMessageRef<'a> {
    #[allow(dead_code)]
    V1(&'a MessageRecordV1),
    V2(&'a MessageRecord),
}

/// The first stored form of [`MessageRecord`], without `offline_message_id`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MessageRecordV1 {
    lsn: u64,
    trace_id: u64,
    created_at: i64,
    sender_kind: SenderKind,
    sender_id: u64,
    sender_name: String,
    kind: MessageKind,
    internal: bool,
    client_id: Option<String>,
    text: String,
    attachment: Option<AttachmentRef>,
    bot_source: Option<BotSource>,
}

impl From<MessageRecordV1> for MessageRecord {
    fn from(old: MessageRecordV1) -> MessageRecord {
        MessageRecord {
            lsn: old.lsn,
            trace_id: old.trace_id,
            created_at: old.created_at,
            sender_kind: old.sender_kind,
            sender_id: old.sender_id,
            sender_name: old.sender_name,
            kind: old.kind,
            internal: old.internal,
            client_id: old.client_id,
            text: old.text,
            attachment: old.attachment,
            bot_source: old.bot_source,
            offline_message_id: None,
        }
    }
}

/// A message as stored in its day shard; the key holds the conversation and sequence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The global commit order, for consumers that follow every message (the search index).
    pub lsn: u64,
    pub trace_id: u64,
    pub created_at: i64,
    pub sender_kind: SenderKind,
    pub sender_id: u64,
    pub sender_name: String,
    pub kind: MessageKind,
    pub internal: bool,
    pub client_id: Option<String>,
    pub text: String,
    pub attachment: Option<AttachmentRef>,
    /// For bot messages: the knowledge-base entry or model the text came from.
    pub bot_source: Option<BotSource>,
    /// For the visitor message an offline message became (`chat::offline_messages`): that
    /// offline message's id. Set only there, so notifications announce the offline message once
    /// and never mistake a client's own id for the mark.
    pub offline_message_id: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    Text,
    Image,
    File,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::File => "file",
        }
    }
}

/// The upload a message carries, copied into the record so history needs no second lookup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
}

/// The dedup record of a send: enough to answer a resend with the original acknowledgement.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AckRecord {
    conversation_id: u64,
    seq: u64,
    day: u32,
    created_at: i64,
}

pub fn message_view(conversation_id: u64, seq: u64, record: &MessageRecord, epoch: u64) -> MessageView {
    MessageView {
        conversation_id,
        epoch,
        seq,
        sender: SenderView { kind: record.sender_kind, id: record.sender_id, name: record.sender_name.clone() },
        kind: record.kind.as_str().to_owned(),
        text: record.text.clone(),
        created_at: record.created_at,
        client_id: record.client_id.clone(),
        internal: record.internal,
        attachment: record.attachment.as_ref().map(|attachment| AttachmentView {
            url: format!("/api/v1/uploads/{}", attachment.id),
            id: attachment.id.clone(),
            name: attachment.name.clone(),
            size: attachment.size,
            content_type: attachment.content_type.clone(),
        }),
        bot_source: record.bot_source.as_ref().map(BotSource::view),
    }
}

/// Where a new message goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// A known conversation. For a visitor, a closed one is followed by a new conversation.
    Conversation(u64),
    /// The visitor's open conversation on the site, or a new one.
    VisitorInbox { site: String, visitor_id: u64 },
}

/// A message on its way to storage, already validated and filtered.
pub struct NewMessage {
    pub target: Target,
    pub sender: SenderView,
    pub client_id: String,
    pub text: String,
    pub internal: bool,
    /// An upload of the sender's, already checked to be theirs.
    pub attachment: Option<Upload>,
    pub trace_id: u64,
    /// The connection that sent it, which gets the acknowledgement.
    pub origin: Option<ConnectionHandle>,
    /// The team a conversation this message starts waits for (the site's routing rules).
    pub route_to_team: Option<u64>,
    /// The offline message this visitor message is, when the offline form made it.
    pub offline_message_id: Option<u64>,
}

impl NewMessage {
    /// A plain text message: not internal, no attachment, no connection to acknowledge, no
    /// routing, trace id 0. Other fields are set with struct update syntax.
    pub fn text(target: Target, sender: SenderView, client_id: String, text: String) -> NewMessage {
        NewMessage {
            target,
            sender,
            client_id,
            text,
            internal: false,
            attachment: None,
            trace_id: 0,
            origin: None,
            route_to_team: None,
            offline_message_id: None,
        }
    }
}

/// The acknowledgement of a stored (or previously stored) message.
#[derive(Clone, Debug)]
pub struct Appended {
    pub conversation_id: u64,
    pub seq: u64,
    pub created_at: i64,
    pub text: String,
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("no such conversation")]
    NotFound,
    #[error("the conversation is closed")]
    Closed,
    #[error("attachment_id: the upload belongs to another conversation")]
    AttachmentElsewhere,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl AppendError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AppendError::NotFound => ErrorCode::NotFound,
            AppendError::AttachmentElsewhere => ErrorCode::InvalidField,
            AppendError::Closed => ErrorCode::ConversationClosed,
            AppendError::Storage(_) => ErrorCode::Internal,
        }
    }
}

/// Checks a client id: 1 to 64 printable ASCII characters.
pub fn validate_client_id(client_id: &str) -> Result<(), String> {
    if client_id.is_empty()
        || client_id.len() > MAX_CLIENT_ID_LEN
        || !client_id.bytes().all(|byte| byte.is_ascii_graphic())
    {
        return Err(format!("client_id: must be 1 to {MAX_CLIENT_ID_LEN} printable ASCII characters"));
    }
    Ok(())
}

/// Checks and trims a message text; a message with an attachment may have none.
pub fn validate_text(text: &str, max_chars: usize, has_attachment: bool) -> Result<String, String> {
    let trimmed = text.trim();
    let n_chars = trimmed.chars().count();
    let min_chars = if has_attachment { 0 } else { 1 };
    if n_chars < min_chars || n_chars > max_chars {
        return Err(format!("text: must be {min_chars} to {max_chars} characters"));
    }
    Ok(trimmed.to_owned())
}

/// Appends a message inside a writer operation: deduplicates by client id, finds or starts the
/// conversation, assigns the next sequence number, stores the message and publishes it.
pub fn append(
    context: &mut WriteContext<'_>,
    new_message: NewMessage,
) -> Result<Result<Appended, AppendError>, StorageError> {
    append_with_source(context, new_message, None)
}

/// [`append`] for a bot message, which records where its text came from.
pub fn append_with_source(
    context: &mut WriteContext<'_>,
    new_message: NewMessage,
    bot_source: Option<BotSource>,
) -> Result<Result<Appended, AppendError>, StorageError> {
    // A stage of the message's trace (crate::base::trace_export), on the writer thread.
    let _persist_span = tracing::debug_span!(parent: None, "persist", trace_id = new_message.trace_id).entered();
    let dedup_key = (new_message.sender.kind.code(), new_message.sender.id, new_message.client_id.as_str());
    if context.dedup().may_contain(dedup_key) {
        let previous =
            context.transaction.open_table(tables::CLIENT_IDS)?.get(dedup_key)?.map(|value| value.value().to_vec());
        if let Some(previous) = previous {
            let ack: AckRecord = decode_postcard(&previous)?;
            let text =
                read_one(context, ack.conversation_id, ack.day, ack.seq)?.map(|record| record.text).unwrap_or_default();
            let appended = Appended {
                conversation_id: ack.conversation_id,
                seq: ack.seq,
                created_at: ack.created_at,
                text,
                duplicate: true,
            };
            tracing::debug!(
                trace_id = new_message.trace_id,
                conversation_id = ack.conversation_id,
                seq = ack.seq,
                "duplicate send answered"
            );
            context.publish(CommittedEvent::Duplicate {
                appended: appended.clone(),
                client_id: new_message.client_id,
                origin: new_message.origin,
            });
            return Ok(Ok(appended));
        }
    }

    if let Some(upload) = &new_message.attachment {
        let expected = match &new_message.target {
            Target::Conversation(id) => Some(*id),
            Target::VisitorInbox { visitor_id, .. } => conversations::open_conversation_of(context, *visitor_id)?,
        };
        if upload.conversation_id.is_some() && upload.conversation_id != expected {
            return Ok(Err(AppendError::AttachmentElsewhere));
        }
    }
    let conversation_id = match resolve_target(context, &new_message)? {
        Ok(id) => id,
        Err(error) => return Ok(Err(error)),
    };
    let now = context.now;
    let lsn = context.next_id(Counter::Lsn);
    let conversation = context.conversation_mut(conversation_id)?.expect("the target conversation was just resolved");
    conversation.last_seq += 1;
    conversation.updated_at = now;
    conversation.last_day = conversation.last_day.max(crate::base::clock::day_of(now));
    let first_reply = new_message.sender.kind == SenderKind::Agent
        && !new_message.internal
        && conversation.first_response_at.is_none();
    if first_reply {
        conversation.first_response_at = Some(now);
    }
    let seq = conversation.last_seq;
    let day = conversation.last_day;
    let site = conversation.site.clone();
    let bot_active = conversation.bot_active;

    let kind = match new_message.attachment.as_ref().map(|upload| upload.kind) {
        None => MessageKind::Text,
        Some(AttachmentKind::Image) => MessageKind::Image,
        Some(AttachmentKind::File) => MessageKind::File,
    };
    let attachment = match new_message.attachment {
        Some(mut upload) => {
            let attachment = AttachmentRef {
                id: upload.id.clone(),
                name: upload.name.clone(),
                size: upload.size,
                content_type: upload.content_type.clone(),
            };
            if upload.conversation_id.is_none() || !upload.attached {
                upload.conversation_id = Some(upload.conversation_id.unwrap_or(conversation_id));
                upload.attached = true;
                context
                    .transaction
                    .open_table(tables::UPLOADS)?
                    .insert(upload.id.as_str(), crate::storage::encode_json(&upload).as_slice())?;
            }
            Some(attachment)
        }
        None => None,
    };
    let record = MessageRecord {
        lsn,
        trace_id: new_message.trace_id,
        created_at: now,
        sender_kind: new_message.sender.kind,
        sender_id: new_message.sender.id,
        sender_name: new_message.sender.name,
        kind,
        internal: new_message.internal,
        client_id: Some(new_message.client_id.clone()),
        text: new_message.text,
        attachment,
        bot_source,
        offline_message_id: new_message.offline_message_id,
    };
    let shard_name = tables::message_shard_name(day);
    context
        .transaction
        .open_table(tables::message_shard(&shard_name))?
        .insert((conversation_id, seq), encode_postcard(&StoredMessageRef::V2(&record)).as_slice())?;
    context.note_conversation_day(conversation_id, day)?;
    let ack = AckRecord { conversation_id, seq, day, created_at: now };
    context.transaction.open_table(tables::CLIENT_IDS)?.insert(dedup_key, encode_postcard(&ack).as_slice())?;
    context.dedup().record(dedup_key);
    tracing::debug!(trace_id = record.trace_id, conversation_id, seq, "message persisted");

    let appended = Appended { conversation_id, seq, created_at: now, text: record.text.clone(), duplicate: false };
    context.publish(CommittedEvent::Message {
        conversation_id,
        seq,
        site,
        day,
        record: Arc::new(record),
        origin: new_message.origin,
        bot_active,
    });
    if first_reply {
        crate::chat::leads::note_first_reply(context, conversation_id, new_message.sender.id)?;
    }
    Ok(Ok(appended))
}

fn resolve_target(
    context: &mut WriteContext<'_>,
    new_message: &NewMessage,
) -> Result<Result<u64, AppendError>, StorageError> {
    let is_visitor = new_message.sender.kind == SenderKind::Visitor;
    match &new_message.target {
        Target::Conversation(id) => {
            let Some(conversation) = context.conversation(*id)? else {
                return Ok(Err(AppendError::NotFound));
            };
            if conversation.status != ConversationStatus::Closed {
                return Ok(Ok(*id));
            }
            if !is_visitor {
                return Ok(Err(AppendError::Closed));
            }
            let (site, visitor_id) = (conversation.site.clone(), conversation.visitor_id);
            inbox(context, &site, visitor_id, new_message.route_to_team).map(Ok)
        }
        Target::VisitorInbox { site, visitor_id } => {
            inbox(context, site, *visitor_id, new_message.route_to_team).map(Ok)
        }
    }
}

fn inbox(context: &mut WriteContext<'_>, site: &str, visitor_id: u64, team: Option<u64>) -> Result<u64, StorageError> {
    match conversations::open_conversation_of(context, visitor_id)? {
        Some(id) => Ok(id),
        None => conversations::create_for_visitor(context, site, visitor_id, team),
    }
}

fn read_one(
    context: &WriteContext<'_>,
    conversation_id: u64,
    day: u32,
    seq: u64,
) -> Result<Option<MessageRecord>, StorageError> {
    let shard_name = tables::message_shard_name(day);
    let table = context.transaction.open_table(tables::message_shard(&shard_name))?;
    let found = table.get((conversation_id, seq))?.map(|value| decode_record(value.value())).transpose()?;
    Ok(found)
}

pub fn decode_record(bytes: &[u8]) -> Result<MessageRecord, StorageError> {
    match decode_postcard::<StoredMessage>(bytes)? {
        StoredMessage::V1(record) => Ok(record.into()),
        StoredMessage::V2(record) => Ok(record),
    }
}

/// The days holding messages of a conversation, oldest first.
fn days_of(transaction: &ReadTransaction, conversation_id: u64) -> Result<Vec<u32>, StorageError> {
    let table = transaction.open_table(tables::CONVERSATION_DAYS)?;
    table.range((conversation_id, 0)..=(conversation_id, u32::MAX))?.map(|entry| Ok(entry?.0.value().1)).collect()
}

/// A message shard opened for reading.
type ShardReader = redb::ReadOnlyTable<(u64, u64), &'static [u8]>;

/// Opens a shard for reading; a shard that does not exist (dropped by retention) reads as empty.
fn open_shard(transaction: &ReadTransaction, day: u32) -> Result<Option<ShardReader>, StorageError> {
    let name = tables::message_shard_name(day);
    match transaction.open_table(tables::message_shard(&name)) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Up to `limit` messages with `seq < before` (all when `before` is `None`), oldest first.
pub fn page_before(
    transaction: &ReadTransaction,
    conversation_id: u64,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<(u64, MessageRecord)>, StorageError> {
    let before = before.unwrap_or(u64::MAX);
    let mut newest_first = Vec::with_capacity(limit);
    for day in days_of(transaction, conversation_id)?.into_iter().rev() {
        let Some(shard) = open_shard(transaction, day)? else {
            continue;
        };
        for entry in shard.range((conversation_id, 0)..(conversation_id, before))?.rev() {
            if newest_first.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            newest_first.push((key.value().1, decode_record(value.value())?));
        }
        if newest_first.len() >= limit {
            break;
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// Up to `limit` messages with `seq > after`, oldest first (replay on resume).
pub fn page_after(
    transaction: &ReadTransaction,
    conversation_id: u64,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, MessageRecord)>, StorageError> {
    let mut found = Vec::new();
    for day in days_of(transaction, conversation_id)? {
        let Some(shard) = open_shard(transaction, day)? else {
            continue;
        };
        for entry in shard.range((conversation_id, after.saturating_add(1))..=(conversation_id, u64::MAX))? {
            if found.len() >= limit {
                return Ok(found);
            }
            let (key, value) = entry?;
            found.push((key.value().1, decode_record(value.value())?));
        }
    }
    Ok(found)
}

/// A message's place in storage: its shard day, conversation and sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MessageKey {
    pub day: u32,
    pub conversation_id: u64,
    pub seq: u64,
}

/// One message by its place in storage; `None` when it is gone (retention, erasure).
pub fn get(transaction: &ReadTransaction, key: MessageKey) -> Result<Option<MessageRecord>, StorageError> {
    let Some(shard) = open_shard(transaction, key.day)? else {
        return Ok(None);
    };
    shard.get((key.conversation_id, key.seq))?.map(|value| decode_record(value.value())).transpose()
}

/// The days that have a message shard, oldest first.
pub fn shard_days(transaction: &ReadTransaction) -> Result<Vec<u32>, StorageError> {
    let mut days: Vec<u32> = transaction
        .list_tables()?
        .filter_map(|handle| tables::message_shard_day(redb::TableHandle::name(&handle)))
        .collect();
    days.sort_unstable();
    Ok(days)
}

/// Up to `limit` messages of one day shard after `after` (a `(conversation, seq)` key), in key
/// order: by conversation, then sequence. A chunked reader calls it again with the last key it got.
pub fn scan_shard(
    transaction: &ReadTransaction,
    day: u32,
    after: Option<(u64, u64)>,
    limit: usize,
) -> Result<Vec<(MessageKey, MessageRecord)>, StorageError> {
    let Some(shard) = open_shard(transaction, day)? else {
        return Ok(Vec::new());
    };
    let range = match after {
        Some(key) => shard.range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))?,
        None => shard.range::<(u64, u64)>(..)?,
    };
    let mut found = Vec::with_capacity(limit.min(4096));
    for entry in range.take(limit) {
        let (key, value) = entry?;
        let (conversation_id, seq) = key.value();
        found.push((MessageKey { day, conversation_id, seq }, decode_record(value.value())?));
    }
    Ok(found)
}

/// Shows every message of one day shard to `visit` as (conversation id, record), in key order;
/// a day without a shard has none. For reads that need every message of a day once (reports),
/// without holding the day in memory.
pub fn visit_shard(
    transaction: &ReadTransaction,
    day: u32,
    mut visit: impl FnMut(u64, &MessageRecord),
) -> Result<(), StorageError> {
    let Some(shard) = open_shard(transaction, day)? else {
        return Ok(());
    };
    for entry in shard.iter()? {
        let (key, value) = entry?;
        visit(key.value().0, &decode_record(value.value())?);
    }
    Ok(())
}

/// The conversation and shard day a `client_ids_v1` value points to (retention removes the
/// records of dropped messages).
pub fn ack_location(bytes: &[u8]) -> Result<(u64, u32), StorageError> {
    let ack: AckRecord = decode_postcard(bytes)?;
    Ok((ack.conversation_id, ack.day))
}

/// One `client_ids_v1` entry: a sender's client id and the acknowledgement its first send got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdRecord {
    pub sender_kind: u8,
    pub sender_id: u64,
    pub client_id: String,
    pub conversation_id: u64,
    pub seq: u64,
    /// The day shard of the message.
    pub day: u32,
    pub created_at: i64,
}

impl ClientIdRecord {
    /// Its key in `client_ids_v1`, which orders [`scan_client_ids`].
    pub fn key(&self) -> (u8, u64, String) {
        (self.sender_kind, self.sender_id, self.client_id.clone())
    }
}

/// Up to `limit` entries of `client_ids_v1` after the key `after` (from the first when `None`),
/// in key order: a chunked reader calls it again with the last key it got.
pub fn scan_client_ids(
    transaction: &ReadTransaction,
    after: Option<&(u8, u64, String)>,
    limit: usize,
) -> Result<Vec<ClientIdRecord>, StorageError> {
    let table = transaction.open_table(tables::CLIENT_IDS)?;
    let range = match after {
        Some((kind, sender, client_id)) => table.range::<(u8, u64, &str)>((
            std::ops::Bound::Excluded((*kind, *sender, client_id.as_str())),
            std::ops::Bound::Unbounded,
        ))?,
        None => table.range::<(u8, u64, &str)>(..)?,
    };
    let mut found = Vec::with_capacity(limit.min(4096));
    for entry in range.take(limit) {
        let (key, value) = entry?;
        let (sender_kind, sender_id, client_id) = key.value();
        let ack: AckRecord = decode_postcard(value.value())?;
        found.push(ClientIdRecord {
            sender_kind,
            sender_id,
            client_id: client_id.to_owned(),
            conversation_id: ack.conversation_id,
            seq: ack.seq,
            day: ack.day,
            created_at: ack.created_at,
        });
    }
    Ok(found)
}

/// The days a conversation has messages in, read inside a writer operation, oldest first.
fn days_in_writer(context: &WriteContext<'_>, conversation_id: u64) -> Result<Vec<u32>, StorageError> {
    let table = context.transaction.open_table(tables::CONVERSATION_DAYS)?;
    let days = table.range((conversation_id, 0)..=(conversation_id, u32::MAX))?;
    days.map(|entry| Ok(entry?.0.value().1)).collect()
}

/// The text of the newest message the visitor wrote (not counting internal notes) in a
/// conversation, read inside a writer operation; `None` if the visitor wrote nothing.
pub fn last_visitor_text(context: &WriteContext<'_>, conversation_id: u64) -> Result<Option<String>, StorageError> {
    for day in days_in_writer(context, conversation_id)?.into_iter().rev() {
        let shard_name = tables::message_shard_name(day);
        let shard = context.transaction.open_table(tables::message_shard(&shard_name))?;
        for entry in shard.range((conversation_id, 0)..=(conversation_id, u64::MAX))?.rev() {
            let record = decode_record(entry?.1.value())?;
            if record.sender_kind == SenderKind::Visitor && !record.internal {
                return Ok(Some(record.text));
            }
        }
    }
    Ok(None)
}

/// Removes every message of a conversation and its list of days, inside a writer operation (the
/// erasure of a visitor's data); returns how many messages.
pub fn erase_conversation(context: &mut WriteContext<'_>, conversation_id: u64) -> Result<u64, StorageError> {
    let mut n_erased = 0;
    for day in days_in_writer(context, conversation_id)? {
        let shard_name = tables::message_shard_name(day);
        let mut shard = context.transaction.open_table(tables::message_shard(&shard_name))?;
        let seqs: Vec<u64> = shard
            .range((conversation_id, 0)..=(conversation_id, u64::MAX))?
            .map(|entry| Ok::<u64, StorageError>(entry?.0.value().1))
            .collect::<Result<_, _>>()?;
        for seq in &seqs {
            shard.remove((conversation_id, *seq))?;
        }
        n_erased += seqs.len() as u64;
        context.transaction.open_table(tables::CONVERSATION_DAYS)?.remove((conversation_id, day))?;
    }
    Ok(n_erased)
}

/// Removes the dedup records of everything one sender sent (the erasure of a visitor's data).
pub fn erase_dedup_records(
    context: &mut WriteContext<'_>,
    sender_kind: SenderKind,
    sender_id: u64,
) -> Result<(), StorageError> {
    let code = sender_kind.code();
    let mut table = context.transaction.open_table(tables::CLIENT_IDS)?;
    let keys: Vec<String> = table
        .range((code, sender_id, "")..(code, sender_id.saturating_add(1), ""))?
        .map(|entry| Ok::<String, StorageError>(entry?.0.value().2.to_owned()))
        .collect::<Result<_, _>>()?;
    for client_id in &keys {
        table.remove((code, sender_id, client_id.as_str()))?;
    }
    Ok(())
}

/// [`append`] with the message dated `created_at` instead of the batch's time: for tests and
/// benchmarks that need history on past days, and for imports. It goes through the same
/// writer path; only the clock differs. Other operations of the batch keep the batch's time.
pub fn append_at(
    context: &mut WriteContext<'_>,
    new_message: NewMessage,
    created_at: i64,
) -> Result<Result<Appended, AppendError>, StorageError> {
    let batch_time = std::mem::replace(&mut context.now, created_at);
    let outcome = append(context, new_message);
    context.now = batch_time;
    outcome
}

/// Why a message is refused before it reaches the writer.
#[derive(Debug)]
pub struct SendRefusal {
    pub code: ErrorCode,
    pub message: &'static str,
}

/// Applies the word filter of the conversation's site to a validated text: the site and the text
/// to store (masked where the site masks), or a refusal. Sockets and the HTTP API both send through
/// here, so a message is filtered the same way whichever way it comes.
pub async fn filter_for_site(
    sites: &SiteDirectory,
    site_key: &str,
    text: String,
    trace_id: u64,
) -> Result<(Arc<SiteRuntime>, String), SendRefusal> {
    let _filter_span = tracing::debug_span!(parent: None, "filter", trace_id);
    let site = match sites.get(site_key).await {
        Ok(Some(site)) => site,
        Ok(None) => {
            return Err(SendRefusal { code: ErrorCode::NotFound, message: "the conversation's site no longer exists" });
        }
        Err(error) => {
            tracing::error!(trace_id, %error, "loading a site failed");
            return Err(SendRefusal {
                code: ErrorCode::Internal,
                message: "internal error; retry with the same client_id",
            });
        }
    };
    let text = match site.filter.filter(&text) {
        Filtered::Clean => text,
        Filtered::Masked(masked) => masked,
        Filtered::Rejected => {
            tracing::debug!(trace_id, "send rejected by the word filter");
            return Err(SendRefusal {
                code: ErrorCode::RejectedContent,
                message: "the message contains words this site does not accept",
            });
        }
    };
    Ok((site, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_record_encodes_as_the_stored_one() {
        let record = MessageRecord {
            lsn: 7,
            trace_id: 9,
            created_at: 1_700_000_000_000,
            sender_kind: SenderKind::Visitor,
            sender_id: 3,
            sender_name: "Ana".into(),
            kind: MessageKind::Image,
            internal: false,
            client_id: Some("c-1".into()),
            text: "héllo".into(),
            attachment: Some(AttachmentRef {
                id: "u1".into(),
                name: "a.png".into(),
                size: 10,
                content_type: "image/png".into(),
            }),
            bot_source: None,
            offline_message_id: Some(4),
        };
        let borrowed = encode_postcard(&StoredMessageRef::V2(&record));
        assert_eq!(borrowed, postcard::to_allocvec(&StoredMessage::V2(record.clone())).unwrap());
        let decoded = decode_record(&borrowed).unwrap();
        assert_eq!((decoded.text.as_str(), decoded.offline_message_id), ("héllo", Some(4)));
    }

    #[test]
    fn a_record_stored_before_the_offline_mark_is_read_without_it() {
        let old = MessageRecordV1 {
            lsn: 1,
            trace_id: 0,
            created_at: 1_700_000_000_000,
            sender_kind: SenderKind::Visitor,
            sender_id: 3,
            sender_name: "Ana".into(),
            kind: MessageKind::Text,
            internal: false,
            client_id: Some("offline-1".into()),
            text: "call me".into(),
            attachment: None,
            bot_source: None,
        };
        let bytes = postcard::to_allocvec(&StoredMessage::V1(old)).unwrap();
        let decoded = decode_record(&bytes).unwrap();
        assert_eq!((decoded.text.as_str(), decoded.offline_message_id), ("call me", None));
    }
}
