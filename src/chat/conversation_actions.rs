//! What an agent does to a conversation beyond taking and closing it: transfer it to another
//! agent or to a team (with an internal note), reopen it, and start one with a visitor who has
//! not written yet.
//!
//! Each is one writer operation that decides before it writes and publishes the conversation
//! event (and the note's message) after commit, like the operations in `conversations.rs`.

use crate::chat::conversations::{self, Conversation, ConversationError};
use crate::chat::delivery::CommittedEvent;
use crate::chat::messages::{self, NewMessage, Target};
use crate::chat::writes::ChatWrites;
use crate::protocol::SenderView;
use crate::storage::{StorageError, Store, WriteContext, tables};

/// Longest transfer note, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

pub use crate::chat::conversations::TransferTarget;

/// The internal note stored with a transfer.
pub fn transfer_note(conversation_id: u64, sender: SenderView, text: String) -> NewMessage {
    NewMessage {
        attachment: None,
        target: Target::Conversation(conversation_id),
        sender,
        client_id: format!("transfer-{}", crate::base::secrets::new_hex_id(12)),
        text,
        internal: true,
        trace_id: crate::base::secrets::new_trace_id(),
        origin: None,
        route_to_team: None,
        offline_message_id: None,
    }
}

/// Transfers an open conversation; `note` (already validated) becomes an internal note from
/// `sender` (the agent transferring, or an API token as the system).
/// The caller has checked that the target agent or team belongs to the conversation's site.
pub async fn transfer(
    store: &Store,
    conversation_id: u64,
    target: TransferTarget,
    note: Option<String>,
    sender: SenderView,
) -> Result<Conversation, ConversationError> {
    store
        .write(move |context| {
            let now = context.now;
            let Some(conversation) = context.conversation_mut(conversation_id)? else {
                return Ok(Err(ConversationError::NotFound));
            };
            let event = match conversation.transfer_to(target, now) {
                Ok(event) => event,
                Err(error) => return Ok(Err(error)),
            };
            let conversation = conversation.clone();
            context.publish(CommittedEvent::Conversation { event, conversation: conversation.clone() });
            if let Some(text) = note {
                let note = transfer_note(conversation_id, sender, text);
                if let Err(error) = messages::append(context, note)? {
                    return Ok(Err(ConversationError::Invalid(error.to_string())));
                }
            }
            let conversation = context.conversation(conversation_id)?.cloned().unwrap_or(conversation);
            Ok(Ok(conversation))
        })
        .await
}

/// Returns an open conversation that `agent_id` holds to the queue (routing, when the agent went
/// offline). Refused with `AlreadyAssigned` when another agent holds it by now, so a take that
/// committed first wins.
pub async fn release(store: &Store, conversation_id: u64, agent_id: u64) -> Result<Conversation, ConversationError> {
    store
        .write(move |context| {
            let now = context.now;
            let Some(conversation) = context.conversation_mut(conversation_id)? else {
                return Ok(Err(ConversationError::NotFound));
            };
            let event = match conversation.release_from(agent_id, now) {
                Ok(event) => event,
                Err(error) => return Ok(Err(error)),
            };
            let conversation = conversation.clone();
            context.publish(CommittedEvent::Conversation { event, conversation: conversation.clone() });
            Ok(Ok(conversation))
        })
        .await
}

/// Reopens a closed conversation; it stays with `agent_id` (the agent reopening it).
/// Refused when the visitor has another open conversation, since a visitor has at most one.
pub async fn reopen(store: &Store, conversation_id: u64, agent_id: u64) -> Result<Conversation, ConversationError> {
    store.write(move |context| reopen_in(context, conversation_id, agent_id)).await
}

/// [`reopen`] inside a writer operation.
pub fn reopen_in(
    context: &mut WriteContext<'_>,
    conversation_id: u64,
    agent_id: u64,
) -> Result<Result<Conversation, ConversationError>, StorageError> {
    let Some(mut conversation) = context.conversation(conversation_id)?.cloned() else {
        return Ok(Err(ConversationError::NotFound));
    };
    let event = match conversation.reopen_for(agent_id, context.now) {
        Ok(event) => event,
        Err(error) => return Ok(Err(error)),
    };
    let visitor_id = conversation.visitor_id;
    if conversations::open_conversation_of(context, visitor_id)?.is_some() {
        return Ok(Err(ConversationError::VisitorHasOpen));
    }
    context.transaction.open_table(tables::VISITOR_OPEN_CONVERSATION)?.insert(visitor_id, conversation_id)?;
    context.transaction.open_table(tables::OPEN_CONVERSATIONS)?.insert(conversation_id, conversation.site.as_str())?;
    *context.conversation_mut(conversation_id)?.expect("the conversation was just read") = conversation.clone();
    context.publish(CommittedEvent::Conversation { event, conversation: conversation.clone() });
    Ok(Ok(conversation))
}

/// Starts a conversation with a visitor, assigned to `agent_id` (an agent reaching out to a
/// visitor from the live visitor list). Refused when the visitor already has an open one.
pub async fn start_with_visitor(
    store: &Store,
    site: String,
    visitor_id: u64,
    agent_id: u64,
) -> Result<Conversation, ConversationError> {
    store
        .write(move |context| {
            if conversations::open_conversation_of(context, visitor_id)?.is_some() {
                return Ok(Err(ConversationError::VisitorHasOpen));
            }
            let id = conversations::create_with_holder(context, &site, visitor_id, agent_id)?;
            let conversation = context.conversation(id)?.cloned().expect("the conversation was just created");
            Ok(Ok(conversation))
        })
        .await
}
