//! What chat operations keep in the storage writer (a [`WriterExtension`]): decoded
//! conversations between batches, so a message does not decode and re-encode its conversation,
//! and the events a batch publishes for delivery once it is durable.
//!
//! Operations reach both through [`ChatWrites`], implemented for the writer's [`WriteContext`].

use std::collections::{HashMap, HashSet};

use redb::ReadableTable;

use crate::chat::conversations::Conversation;
use crate::chat::delivery::{CommittedBatch, CommittedEvent};
use crate::storage::commit_log::LoggedTransaction;
use crate::storage::writer::{Published, WriteContext, WriterExtension};
use crate::storage::{StorageError, decode_json, encode_json_into, tables};

/// Conversations kept decoded in the writer; past this the clean ones are dropped after a commit.
const CONVERSATION_CACHE_LIMIT: usize = 100_000;

#[derive(Default)]
pub struct ChatWriterState {
    conversations: HashMap<u64, Conversation>,
    /// Conversations changed in this batch; written once at its end.
    dirty_conversations: HashSet<u64>,
    /// What this batch published so far, in order.
    events: Vec<CommittedEvent>,
    /// The encoding of the conversation being written, reused across conversations and batches.
    encoded: Vec<u8>,
}

impl WriterExtension for ChatWriterState {
    fn flush(&mut self, transaction: &LoggedTransaction<'_>) -> Result<(), StorageError> {
        if !self.dirty_conversations.is_empty() {
            let mut table = transaction.open_table(tables::CONVERSATIONS)?;
            for id in self.dirty_conversations.drain() {
                if let Some(conversation) = self.conversations.get(&id) {
                    encode_json_into(conversation, &mut self.encoded);
                    table.insert(id, self.encoded.as_slice())?;
                }
            }
        }
        Ok(())
    }

    fn trim(&mut self) {
        if self.conversations.len() > CONVERSATION_CACHE_LIMIT {
            self.conversations.clear();
        }
    }

    fn take_published(&mut self) -> Option<Published> {
        match self.events.is_empty() {
            true => None,
            false => Some(Box::new(CommittedBatch(std::mem::take(&mut self.events)))),
        }
    }
}

/// Chat's operations on the writer's context.
pub trait ChatWrites {
    /// Publishes `event` for delivery once the batch is committed.
    fn publish(&mut self, event: CommittedEvent);
    /// The events this batch has published so far.
    fn published(&mut self) -> &[CommittedEvent];
    /// A conversation, from the cache or the database.
    fn conversation(&mut self, id: u64) -> Result<Option<&Conversation>, StorageError>;
    /// A conversation to change; it is written back at the end of the batch.
    fn conversation_mut(&mut self, id: u64) -> Result<Option<&mut Conversation>, StorageError>;
    /// Stores a new conversation (written at the end of the batch).
    fn insert_conversation(&mut self, conversation: Conversation);
    /// Deletes a conversation's record, and drops it from the cache so the end of the batch
    /// does not write it back.
    fn remove_conversation(&mut self, id: u64) -> Result<(), StorageError>;
    /// The conversations this batch changed or created, as they will be written.
    fn changed_conversations(&mut self) -> Vec<Conversation>;
}

impl ChatWrites for WriteContext<'_> {
    fn publish(&mut self, event: CommittedEvent) {
        self.extension::<ChatWriterState>().events.push(event);
    }

    fn published(&mut self) -> &[CommittedEvent] {
        &self.extension::<ChatWriterState>().events
    }

    fn conversation(&mut self, id: u64) -> Result<Option<&Conversation>, StorageError> {
        load_conversation(self, id)?;
        Ok(self.extension::<ChatWriterState>().conversations.get(&id))
    }

    fn conversation_mut(&mut self, id: u64) -> Result<Option<&mut Conversation>, StorageError> {
        load_conversation(self, id)?;
        let state = self.extension::<ChatWriterState>();
        if state.conversations.contains_key(&id) {
            state.dirty_conversations.insert(id);
        }
        Ok(state.conversations.get_mut(&id))
    }

    fn insert_conversation(&mut self, conversation: Conversation) {
        let state = self.extension::<ChatWriterState>();
        state.dirty_conversations.insert(conversation.id);
        state.conversations.insert(conversation.id, conversation);
    }

    fn remove_conversation(&mut self, id: u64) -> Result<(), StorageError> {
        let state = self.extension::<ChatWriterState>();
        state.dirty_conversations.remove(&id);
        state.conversations.remove(&id);
        self.transaction.open_table(tables::CONVERSATIONS)?.remove(id)?;
        Ok(())
    }

    fn changed_conversations(&mut self) -> Vec<Conversation> {
        let state = self.extension::<ChatWriterState>();
        state.dirty_conversations.iter().filter_map(|id| state.conversations.get(id).cloned()).collect()
    }
}

fn load_conversation(context: &mut WriteContext<'_>, id: u64) -> Result<(), StorageError> {
    if context.extension::<ChatWriterState>().conversations.contains_key(&id) {
        return Ok(());
    }
    let table = context.transaction.open_table(tables::CONVERSATIONS)?;
    let found = table.get(id)?.map(|value| decode_json::<Conversation>(value.value())).transpose()?;
    drop(table);
    if let Some(conversation) = found {
        context.extension::<ChatWriterState>().conversations.insert(id, conversation);
    }
    Ok(())
}
