//! The appliance's record tables as migration 7 holds them: one PostgreSQL table per redb table
//! of domain records (sites, agents, visitors, settings, ...), its key as typed columns and its
//! value as `record jsonb`, read from redb a batch at a time for the copy.
//!
//! Derived tables are not among them: the conversations' indexes (made by the cluster schema's
//! own indexes), report figures, the knowledge base's per-site index and embeddings are computed
//! again from what is copied; outboxes, the gRPC event feed and password resets are transient.

use redb::{ReadTransaction, ReadableTable};
use serde_json::Value;

use super::{Column, CopyError};
use crate::storage::{StorageError, tables};

/// One part of a record's key.
#[derive(Clone, Debug)]
pub(super) enum KeyPart {
    /// An id, stored as a `bigint` (refused above its range).
    Int(u64),
    /// A u64 hash, stored as a `bigint` with the same bits.
    Bits(u64),
    Small(u8),
    Text(String),
    /// A SHA-256 digest, stored as `bytea`.
    Bytes(Vec<u8>),
}

impl KeyPart {
    /// The part as it appears in the canonical row (bytes in hex).
    pub(super) fn json(&self) -> Value {
        match self {
            KeyPart::Int(value) | KeyPart::Bits(value) => Value::from(*value),
            KeyPart::Small(value) => Value::from(*value),
            KeyPart::Text(text) => Value::from(text.as_str()),
            KeyPart::Bytes(bytes) => Value::from(hex::encode(bytes)),
        }
    }
}

/// A row of a record table: its key's parts, in the table's key column order, and its value.
#[derive(Debug)]
pub(super) struct RecordRow {
    pub key: Vec<KeyPart>,
    pub record: Value,
}

type ReadRows = fn(&ReadTransaction, u64, usize) -> Result<Vec<RecordRow>, StorageError>;

/// A redb table copied as a PostgreSQL table of the same name.
pub struct RecordTable {
    /// The PostgreSQL table.
    pub name: &'static str,
    /// Its columns: the key's, then `record` (jsonb).
    pub(super) columns: &'static [(&'static str, Column)],
    /// Reads up to `limit` rows in key order after skipping the first `skip`.
    pub(super) read: ReadRows,
}

impl std::fmt::Debug for RecordTable {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name)
    }
}

fn json(value: &[u8]) -> Result<Value, StorageError> {
    serde_json::from_slice(value).map_err(|error| StorageError::Corrupt(error.to_string()))
}

/// Defines a [`RecordTable`] constant: its PostgreSQL name and key columns, the redb table, and
/// how an entry (`key`, `value`, as redb returns them) becomes a [`RecordRow`].
macro_rules! record_table {
    ($constant:ident, $name:literal, $redb:ident, [$(($column:literal, $kind:ident)),+],
     |$key:pat_param, $value:pat_param| ($parts:expr, $record:expr)) => {
        pub const $constant: RecordTable = RecordTable {
            name: $name,
            columns: &[$(($column, Column::$kind),)+ ("record", Column::Json)],
            read: {
                fn read(transaction: &ReadTransaction, skip: u64, limit: usize) -> Result<Vec<RecordRow>, StorageError> {
                    let table = match transaction.open_table(tables::$redb) {
                        Ok(table) => table,
                        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                        Err(error) => return Err(error.into()),
                    };
                    let mut rows = Vec::new();
                    for entry in table.iter()?.skip(skip as usize).take(limit) {
                        let (key, value) = entry?;
                        let ($key, $value) = (key.value(), value.value());
                        rows.push(RecordRow { key: $parts, record: $record });
                    }
                    Ok(rows)
                }
                read
            },
        };
    };
}

use KeyPart::{Bits, Bytes, Int, Small, Text};

record_table!(SITES, "sites", SITES, [("key", Text)], |key, value| (vec![Text(key.to_owned())], json(value)?));
record_table!(AGENTS, "agents", AGENTS, [("id", Int)], |id, value| (vec![Int(id)], json(value)?));
record_table!(AGENT_EMAILS, "agent_emails", AGENT_EMAILS, [("email", Text)], |email, id| (
    vec![Text(email.to_owned())],
    Value::from(id)
));
record_table!(AGENT_TWO_FACTOR, "agent_two_factor", AGENT_TWO_FACTOR, [("agent_id", Int)], |id, value| (
    vec![Int(id)],
    json(value)?
));
record_table!(AGENT_SESSIONS, "agent_sessions", AGENT_SESSIONS, [("digest", Bytes)], |digest, value| (
    vec![Bytes(digest.to_vec())],
    json(value)?
));
record_table!(VISITORS, "visitors", VISITORS, [("id", Int)], |id, value| (vec![Int(id)], json(value)?));
record_table!(VISITOR_TOKENS, "visitor_tokens", VISITOR_TOKENS, [("digest", Bytes)], |digest, id| (
    vec![Bytes(digest.to_vec())],
    Value::from(id)
));
record_table!(
    VISITOR_IDENTITIES,
    "visitor_identities",
    VISITOR_IDENTITIES,
    [("site", Text), ("external_id", Text)],
    |(site, external_id), id| (vec![Text(site.to_owned()), Text(external_id.to_owned())], Value::from(id))
);
record_table!(
    READ_POSITIONS,
    "read_positions",
    READ_POSITIONS,
    [("conversation_id", Int), ("reader_kind", Small), ("reader_id", Int)],
    |(conversation_id, kind, reader), seq| (vec![Int(conversation_id), Small(kind), Int(reader)], Value::from(seq))
);
record_table!(OFFLINE_MESSAGES, "offline_messages", OFFLINE_MESSAGES, [("id", Int)], |id, value| (
    vec![Int(id)],
    json(value)?
));
record_table!(LEADS, "leads", LEADS, [("id", Int)], |id, value| (vec![Int(id)], json(value)?));
record_table!(LEAD_CONVERSATIONS, "lead_conversations", LEAD_CONVERSATIONS, [("conversation_id", Int)], |id, lead| (
    vec![Int(id)],
    Value::from(lead)
));
record_table!(WEBHOOKS, "webhooks", WEBHOOKS, [("id", Text)], |id, value| (vec![Text(id.to_owned())], json(value)?));
record_table!(CANNED_REPLIES, "canned_replies", CANNED_REPLIES, [("id", Int)], |id, value| (
    vec![Int(id)],
    json(value)?
));
record_table!(TEAMS, "teams", TEAMS, [("id", Int)], |id, value| (vec![Int(id)], json(value)?));
record_table!(BLOCKED_IPS, "blocked_ips", BLOCKED_IPS, [("site", Text), ("address", Text)], |(site, address), at| (
    vec![Text(site.to_owned()), Text(address.to_owned())],
    Value::from(at)
));
record_table!(KB_ENTRIES, "kb_entries", KB_ENTRIES, [("id", Int)], |id, value| (vec![Int(id)], json(value)?));
record_table!(BOT_SETTINGS, "bot_settings", BOT_SETTINGS, [("site", Text)], |site, value| (
    vec![Text(site.to_owned())],
    json(value)?
));
record_table!(
    BOT_FEEDBACK,
    "bot_feedback",
    BOT_FEEDBACK,
    [("conversation_id", Int), ("seq", Int)],
    |(conversation_id, seq), value| (vec![Int(conversation_id), Int(seq)], json(value)?)
);
record_table!(AUDIT_LOG, "audit_log", AUDIT_LOG, [("id", Int)], |id, value| (vec![Int(id)], json(value)?));
record_table!(BLOCKED_VISITORS, "blocked_visitors", BLOCKED_VISITORS, [("visitor_id", Int)], |id, at| (
    vec![Int(id)],
    Value::from(at)
));
record_table!(API_TOKENS, "api_tokens", API_TOKENS, [("id", Int)], |id, value| (vec![Int(id)], json(value)?));
record_table!(API_TOKEN_DIGESTS, "api_token_digests", API_TOKEN_DIGESTS, [("digest", Bytes)], |digest, id| (
    vec![Bytes(digest.to_vec())],
    Value::from(id)
));
record_table!(PUSH_KEYS, "push_keys", PUSH_KEYS, [("name", Text)], |name, bytes| (
    vec![Text(name.to_owned())],
    Value::from(hex::encode(bytes))
));
record_table!(
    PUSH_SUBSCRIPTIONS,
    "push_subscriptions",
    PUSH_SUBSCRIPTIONS,
    [("agent_id", Int), ("endpoint_hash", Bits)],
    |(agent_id, endpoint_hash), value| (vec![Int(agent_id), Bits(endpoint_hash)], json(value)?)
);
record_table!(EMAIL_SETTINGS, "email_settings", EMAIL_SETTINGS, [("name", Text)], |name, value| (
    vec![Text(name.to_owned())],
    json(value)?
));
record_table!(REFUSED_ORIGINS, "refused_origins", REFUSED_ORIGINS, [("site", Text)], |site, value| (
    vec![Text(site.to_owned())],
    json(value)?
));
record_table!(APPLIANCE_META, "appliance_meta", META, [("name", Text)], |name, value| (
    vec![Text(name.to_owned())],
    Value::from(value)
));

/// Every record table, in the order they are copied.
pub const ALL: [&RecordTable; 28] = [
    &APPLIANCE_META,
    &SITES,
    &TEAMS,
    &AGENTS,
    &AGENT_EMAILS,
    &AGENT_TWO_FACTOR,
    &AGENT_SESSIONS,
    &VISITORS,
    &VISITOR_TOKENS,
    &VISITOR_IDENTITIES,
    &BLOCKED_VISITORS,
    &BLOCKED_IPS,
    &READ_POSITIONS,
    &OFFLINE_MESSAGES,
    &LEADS,
    &LEAD_CONVERSATIONS,
    &WEBHOOKS,
    &CANNED_REPLIES,
    &KB_ENTRIES,
    &BOT_SETTINGS,
    &BOT_FEEDBACK,
    &AUDIT_LOG,
    &API_TOKENS,
    &API_TOKEN_DIGESTS,
    &PUSH_KEYS,
    &PUSH_SUBSCRIPTIONS,
    &EMAIL_SETTINGS,
    &REFUSED_ORIGINS,
];

impl RecordRow {
    /// Reads a row back from PostgreSQL: the key columns, then `record::text`.
    pub(super) fn of_target(table: &RecordTable, row: &tokio_postgres::Row) -> Result<RecordRow, CopyError> {
        use crate::cluster::postgres::PostgresError;
        let corrupt = |what: String| CopyError::Postgres(PostgresError::Corrupt(what));
        let key_columns = &table.columns[..table.columns.len() - 1];
        let mut key = Vec::with_capacity(key_columns.len());
        for (index, (name, column)) in key_columns.iter().enumerate() {
            key.push(match column {
                Column::Int => {
                    let value: i64 = row.try_get(index).map_err(PostgresError::from)?;
                    Int(u64::try_from(value).map_err(|_| corrupt(format!("{}.{name} is negative", table.name)))?)
                }
                Column::Bits => Bits(row.try_get::<_, i64>(index).map_err(PostgresError::from)? as u64),
                Column::Small => {
                    let value: i16 = row.try_get(index).map_err(PostgresError::from)?;
                    Small(u8::try_from(value).map_err(|_| corrupt(format!("{}.{name} is {value}", table.name)))?)
                }
                Column::Bytes => Bytes(row.try_get(index).map_err(PostgresError::from)?),
                _ => Text(row.try_get(index).map_err(PostgresError::from)?),
            });
        }
        let text: &str = row.try_get(key_columns.len()).map_err(PostgresError::from)?;
        let record = serde_json::from_str(text).map_err(|error| corrupt(format!("{}.record: {error}", table.name)))?;
        Ok(RecordRow { key, record })
    }
}
