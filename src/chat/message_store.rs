//! The message path's storage boundary: what the transports need to send and read messages,
//! in domain terms, so a second backend (PostgreSQL, for a cluster) implements these calls and
//! not redb's tables.
//!
//! [`Store`] implements it with the writer and the day shards; a transport asks for
//! `impl MessageStore` where it only sends and reads messages.

use std::future::Future;

use crate::chat::conversations::{self, Conversation};
use crate::chat::messages::{self, AppendError, Appended, MessageRecord, NewMessage};
use crate::storage::{StorageError, Store};

/// A conversation's messages: each with its sequence number, oldest first.
pub type Page = Vec<(u64, MessageRecord)>;

pub trait MessageStore: Send + Sync {
    /// Stores a message durably (deduplicated by its sender's client id) and publishes it for
    /// delivery once committed.
    fn append(&self, message: NewMessage) -> impl Future<Output = Result<Appended, AppendError>> + Send;

    /// Stores a message as [`MessageStore::append`] does, without waiting for its commit, so a
    /// connection can have many sends in flight: its acknowledgement reaches `message.origin`
    /// through delivery, in commit order; a refusal, or a failure to store it, goes to `refused`.
    /// Fails only when nothing was queued (the store is stopping).
    fn send(
        &self,
        message: NewMessage,
        refused: impl FnOnce(AppendError) + Clone + Send + 'static,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Up to `limit` messages with `seq < before` (the newest when `before` is `None`).
    fn page_before(
        &self,
        conversation_id: u64,
        before: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Page, StorageError>> + Send;

    /// Up to `limit` messages with `seq > after` (a resume's replay).
    fn page_after(
        &self,
        conversation_id: u64,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Page, StorageError>> + Send;

    /// One conversation, if it exists.
    fn conversation(
        &self,
        conversation_id: u64,
    ) -> impl Future<Output = Result<Option<Conversation>, StorageError>> + Send;

    /// The epoch that names this history: a client's positions hold only within it
    /// (docs/protocol.md, "Resume").
    fn epoch(&self) -> u64;

    /// The open conversations changed in the last `window_millis` (by the database's clock),
    /// each with its last seq and site: what a cluster node's relay compares with what it handed
    /// over, to find messages its NATS subscription missed (`cluster::events::relay`). The
    /// appliance delivers from its own writer, which misses nothing: it answers none.
    fn changed_within(
        &self,
        window_millis: i64,
    ) -> impl Future<Output = Result<Vec<ConversationPosition>, StorageError>> + Send {
        let _ = window_millis;
        std::future::ready(Ok(Vec::new()))
    }
}

/// Where a conversation's messages stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationPosition {
    pub conversation_id: u64,
    pub last_seq: u64,
    pub site: String,
}

impl MessageStore for Store {
    async fn append(&self, message: NewMessage) -> Result<Appended, AppendError> {
        self.write(move |context| messages::append(context, message)).await
    }

    async fn send(
        &self,
        message: NewMessage,
        refused: impl FnOnce(AppendError) + Clone + Send + 'static,
    ) -> Result<(), StorageError> {
        let on_abort = refused.clone();
        self.write_detached(
            move |context| {
                if let Err(error) = messages::append(context, message)? {
                    refused(error);
                }
                Ok(())
            },
            move |failure| on_abort(AppendError::Storage(StorageError::Server(failure.to_string()))),
        )
        .await
    }

    async fn page_before(&self, conversation_id: u64, before: Option<u64>, limit: usize) -> Result<Page, StorageError> {
        self.read(move |transaction| messages::page_before(transaction, conversation_id, before, limit)).await
    }

    async fn page_after(&self, conversation_id: u64, after: u64, limit: usize) -> Result<Page, StorageError> {
        self.read(move |transaction| messages::page_after(transaction, conversation_id, after, limit)).await
    }

    async fn conversation(&self, conversation_id: u64) -> Result<Option<Conversation>, StorageError> {
        self.read(move |transaction| conversations::get(transaction, conversation_id)).await
    }

    fn epoch(&self) -> u64 {
        Store::epoch(self)
    }
}
