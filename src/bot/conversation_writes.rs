//! The bot's writes to a conversation, as a storage boundary: an answer, stored only while the
//! conversation is open and the bot's, and the handoff to a human with its notice. [`Store`]
//! implements it with writer operations; the cluster's `PostgresMessages` with a transaction
//! that locks the conversation's row. Either way a takeover or handoff committed first wins.

use std::future::Future;

use crate::bot::HandoffOutcome;
use crate::chat::conversations::{Conversation, ConversationError, ConversationStatus};
use crate::chat::delivery::{CommittedEvent, ConversationEvent};
use crate::chat::message_store::MessageStore;
use crate::chat::messages::{self, AppendError, Appended, NewMessage, Target};
use crate::chat::writes::ChatWrites;
use crate::protocol::BotSource;
use crate::storage::{StorageError, Store, WriteContext};

pub trait BotConversations: MessageStore {
    /// Stores a bot message with where it came from, only while its conversation is open and
    /// bot-active (`None` when it is not).
    fn append_bot(
        &self,
        message: NewMessage,
        source: BotSource,
    ) -> impl Future<Output = Result<Option<Appended>, AppendError>> + Send;

    /// Stops the bot in a conversation and queues it for an agent, with `notice` from the bot
    /// (a notice whose `action` tells the widget what to offer), in one change.
    fn hand_off(
        &self,
        conversation_id: u64,
        notice: NewMessage,
        action: String,
    ) -> impl Future<Output = Result<HandoffOutcome, ConversationError>> + Send;

    /// Closes the conversation if, when its change is decided, only the bot has taken part in it
    /// and it has had no message for `limit_ms` as of `now` ([`idle_bot_only`]); whether it closed.
    fn close_if_idle(
        &self,
        conversation_id: u64,
        now: i64,
        limit_ms: i64,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;
}

/// Whether `conversation` is one only the bot took part in and has been idle past `limit_ms`.
pub fn idle_bot_only(conversation: &Conversation, now: i64, limit_ms: i64) -> bool {
    conversation.is_open() && conversation.bot_active && now - conversation.updated_at >= limit_ms
}

/// Whether the bot may still answer in `conversation`.
pub fn still_the_bots(conversation: &Conversation) -> bool {
    conversation.bot_active && conversation.is_open()
}

/// What a handoff does to `conversation` at `now`: `None` when humans already have it; a closed
/// one is refused.
pub fn hand_over(conversation: &mut Conversation, now: i64) -> Result<Option<ConversationEvent>, ConversationError> {
    if conversation.status == ConversationStatus::Closed {
        return Err(ConversationError::Closed);
    }
    if !conversation.bot_active {
        return Ok(None);
    }
    conversation.bot_active = false;
    conversation.updated_at = now;
    Ok(Some(ConversationEvent::HandedOff))
}

/// Appends a bot message inside a writer operation if its conversation is still bot-active and
/// open (`Ok(Ok(None))` when it is not).
pub fn append_if_bot_active(
    context: &mut WriteContext<'_>,
    new_message: NewMessage,
    source: BotSource,
) -> Result<Result<Option<Appended>, AppendError>, StorageError> {
    let Target::Conversation(conversation_id) = new_message.target else {
        return Ok(Err(AppendError::NotFound));
    };
    if !context.conversation(conversation_id)?.is_some_and(still_the_bots) {
        return Ok(Ok(None));
    }
    Ok(messages::append_with_source(context, new_message, Some(source))?.map(Some))
}

impl BotConversations for Store {
    async fn append_bot(&self, message: NewMessage, source: BotSource) -> Result<Option<Appended>, AppendError> {
        self.write(move |context| append_if_bot_active(context, message, source)).await
    }

    async fn hand_off(
        &self,
        conversation_id: u64,
        notice: NewMessage,
        action: String,
    ) -> Result<HandoffOutcome, ConversationError> {
        self.write(move |context| {
            let now = context.now;
            let Some(conversation) = context.conversation_mut(conversation_id)? else {
                return Ok(Err(ConversationError::NotFound));
            };
            let event = match hand_over(conversation, now) {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(Ok(HandoffOutcome::AlreadyHuman)),
                Err(error) => return Ok(Err(error)),
            };
            let conversation = conversation.clone();
            context.publish(CommittedEvent::Conversation { event, conversation });
            match messages::append_with_source(context, notice, Some(BotSource::Notice { action }))? {
                Ok(_) => Ok(Ok(HandoffOutcome::HandedOff)),
                Err(error) => Err(StorageError::Corrupt(format!("a handoff notice was refused: {error}"))),
            }
        })
        .await
    }

    async fn close_if_idle(&self, conversation_id: u64, now: i64, limit_ms: i64) -> Result<bool, StorageError> {
        self.write(move |context| {
            let still_idle = context
                .conversation(conversation_id)?
                .is_some_and(|conversation| idle_bot_only(conversation, now, limit_ms));
            if !still_idle {
                return Ok(Ok(false));
            }
            Ok(Ok::<bool, StorageError>(crate::chat::conversations::close_in(context, conversation_id)?.is_ok()))
        })
        .await
    }
}
