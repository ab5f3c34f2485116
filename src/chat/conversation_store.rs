//! The conversations' storage boundary: what agents, the visitor's rating and routing do to a
//! conversation (take, close, rate, transfer, release, reopen, start one with a visitor), in
//! domain terms, beside the message path it extends ([`MessageStore`], whose `conversation`
//! reads one). [`Store`] implements it with the writer operations of `conversations.rs` and
//! `conversation_actions.rs`; the cluster's `PostgresMessages` with PostgreSQL transactions.
//! Both decide each change with the same `Conversation` methods (`assign_to`, `close_at`, ...).

use std::future::Future;

use crate::chat::conversation_actions;
use crate::chat::conversation_list::{self, ListPage, ListRequest};
use crate::chat::conversations::{self, AssignWhen, Conversation, ConversationError, ReadThrough, TransferTarget};
use crate::chat::message_store::MessageStore;
use crate::protocol::{ParticipantView, SenderView};
use crate::storage::{StorageError, Store};

pub trait ConversationStore: MessageStore {
    /// A visitor's conversations, oldest first.
    fn of_visitor(&self, visitor_id: u64) -> impl Future<Output = Result<Vec<Conversation>, StorageError>> + Send;

    /// One page of a console list (queued, mine, open or closed) of the sites `serves` accepts,
    /// with the counts of the open ones, as `conversation_list` decides.
    fn list_page(
        &self,
        request: ListRequest,
        serves: impl Fn(&str) -> bool + Send + 'static,
    ) -> impl Future<Output = Result<ListPage, StorageError>> + Send;

    /// Every conversation that is not closed, by id.
    fn list_open(&self) -> impl Future<Output = Result<Vec<Conversation>, StorageError>> + Send;

    /// Assigns a conversation to an agent: routing (`AssignWhen::Queued`) or an agent taking it
    /// over (`AssignWhen::Open`).
    fn assign(
        &self,
        conversation_id: u64,
        agent_id: u64,
        when: AssignWhen,
    ) -> impl Future<Output = Result<Conversation, ConversationError>> + Send;

    /// Closes a conversation; one the visitor wrote in and nobody answered becomes a lead.
    fn close(&self, conversation_id: u64) -> impl Future<Output = Result<Conversation, ConversationError>> + Send;

    /// The visitor's rating of a closed conversation, once.
    fn rate(
        &self,
        conversation_id: u64,
        score: u8,
        comment: String,
    ) -> impl Future<Output = Result<Conversation, ConversationError>> + Send;

    /// Transfers an open conversation to an agent or a team; `note` (already checked) becomes an
    /// internal note from `sender`, stored with the transfer.
    fn transfer(
        &self,
        conversation_id: u64,
        target: TransferTarget,
        note: Option<String>,
        sender: SenderView,
    ) -> impl Future<Output = Result<Conversation, ConversationError>> + Send;

    /// Returns a conversation `agent_id` holds to the queue (routing, when the agent went offline).
    fn release(
        &self,
        conversation_id: u64,
        agent_id: u64,
    ) -> impl Future<Output = Result<Conversation, ConversationError>> + Send;

    /// Reopens a closed conversation for `agent_id`, unless its visitor has another open one.
    fn reopen(
        &self,
        conversation_id: u64,
        agent_id: u64,
    ) -> impl Future<Output = Result<Conversation, ConversationError>> + Send;

    /// Records that `reader` read the conversation through `seq` (never past its last message,
    /// never back); the `read` event follows once it is stored. Returns once the change is queued
    /// (the appliance's writer) or stored (PostgreSQL): a read position is a receipt, and one lost
    /// to a failure is shown at the reader's next read.
    fn mark_read(
        &self,
        conversation_id: u64,
        reader: ParticipantView,
        seq: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// How far the visitor and the agents have read a conversation.
    fn read_through(&self, conversation_id: u64) -> impl Future<Output = Result<ReadThrough, StorageError>> + Send;

    /// Starts a conversation with a visitor, assigned to `agent_id`, unless the visitor has an
    /// open one.
    fn start_with_visitor(
        &self,
        site: String,
        visitor_id: u64,
        agent_id: u64,
    ) -> impl Future<Output = Result<Conversation, ConversationError>> + Send;
}

impl ConversationStore for Store {
    async fn of_visitor(&self, visitor_id: u64) -> Result<Vec<Conversation>, StorageError> {
        self.read(move |transaction| conversations::of_visitor(transaction, visitor_id)).await
    }

    async fn list_page(
        &self,
        request: ListRequest,
        serves: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ListPage, StorageError> {
        self.read(move |transaction| conversation_list::read_page(transaction, &request, &serves)).await
    }

    async fn list_open(&self) -> Result<Vec<Conversation>, StorageError> {
        self.read(conversations::list_open).await
    }

    async fn assign(
        &self,
        conversation_id: u64,
        agent_id: u64,
        when: AssignWhen,
    ) -> Result<Conversation, ConversationError> {
        conversations::assign(self, conversation_id, agent_id, when).await
    }

    async fn close(&self, conversation_id: u64) -> Result<Conversation, ConversationError> {
        conversations::close(self, conversation_id).await
    }

    async fn rate(&self, conversation_id: u64, score: u8, comment: String) -> Result<Conversation, ConversationError> {
        conversations::rate(self, conversation_id, score, comment).await
    }

    async fn transfer(
        &self,
        conversation_id: u64,
        target: TransferTarget,
        note: Option<String>,
        sender: SenderView,
    ) -> Result<Conversation, ConversationError> {
        conversation_actions::transfer(self, conversation_id, target, note, sender).await
    }

    async fn release(&self, conversation_id: u64, agent_id: u64) -> Result<Conversation, ConversationError> {
        conversation_actions::release(self, conversation_id, agent_id).await
    }

    async fn reopen(&self, conversation_id: u64, agent_id: u64) -> Result<Conversation, ConversationError> {
        conversation_actions::reopen(self, conversation_id, agent_id).await
    }

    async fn mark_read(&self, conversation_id: u64, reader: ParticipantView, seq: u64) -> Result<(), StorageError> {
        self.write_detached(move |context| conversations::mark_read_in(context, conversation_id, reader, seq), |_| {})
            .await
    }

    async fn read_through(&self, conversation_id: u64) -> Result<ReadThrough, StorageError> {
        self.read(move |transaction| conversations::read_through(transaction, conversation_id)).await
    }

    async fn start_with_visitor(
        &self,
        site: String,
        visitor_id: u64,
        agent_id: u64,
    ) -> Result<Conversation, ConversationError> {
        conversation_actions::start_with_visitor(self, site, visitor_id, agent_id).await
    }
}
