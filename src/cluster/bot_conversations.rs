//! The bot's writes on PostgreSQL (`BotConversations`): an answer appended only while the
//! conversation's locked row says it is open and the bot's, and the handoff with its notice, in
//! one transaction each, decided by the same functions as the appliance's writer.

use crate::base::clock;
use crate::bot::HandoffOutcome;
use crate::bot::conversation_writes::{self, BotConversations};
use crate::chat::conversations::ConversationError;
use crate::chat::messages::{AppendError, Appended, NewMessage, Target};
use crate::cluster::conversations::{announce, close_locked, locked, save};
use crate::cluster::events::ConversationChange;
use crate::cluster::messages::{self, PostgresMessages};
use crate::protocol::BotSource;
use crate::storage::StorageError;

impl BotConversations for PostgresMessages {
    async fn append_bot(&self, message: NewMessage, source: BotSource) -> Result<Option<Appended>, AppendError> {
        let Target::Conversation(conversation_id) = message.target else {
            return Err(AppendError::NotFound);
        };
        self.change_and_publish(async |transaction, published| {
            let conversation = match locked(transaction, conversation_id).await {
                Ok(conversation) => conversation,
                Err(ConversationError::NotFound) => return Err(AppendError::NotFound),
                Err(ConversationError::Storage(error)) => return Err(AppendError::Storage(error)),
                Err(error) => return Err(AppendError::Storage(StorageError::Server(error.to_string()))),
            };
            if !conversation_writes::still_the_bots(&conversation) {
                return Ok(None);
            }
            let (appended, stored) = messages::append_with_source_in(transaction, message, Some(source)).await?;
            published.extend(stored);
            Ok(Some(appended))
        })
        .await
    }

    async fn hand_off(
        &self,
        conversation_id: u64,
        notice: NewMessage,
        action: String,
    ) -> Result<HandoffOutcome, ConversationError> {
        self.change_and_publish(async |transaction, published| {
            let mut conversation = locked(transaction, conversation_id).await?;
            let Some(event) = conversation_writes::hand_over(&mut conversation, clock::now_millis())? else {
                return Ok(HandoffOutcome::AlreadyHuman);
            };
            save(transaction, &conversation).await?;
            announce(published, ConversationChange::Conversation { event, conversation });
            let (_, stored) = messages::append_with_source_in(transaction, notice, Some(BotSource::Notice { action }))
                .await
                .map_err(|error| StorageError::Corrupt(format!("a handoff notice was refused: {error}")))?;
            published.extend(stored);
            Ok(HandoffOutcome::HandedOff)
        })
        .await
    }

    async fn close_if_idle(&self, conversation_id: u64, now: i64, limit_ms: i64) -> Result<bool, StorageError> {
        let closed = self
            .change_and_publish(async |transaction, published| {
                let mut conversation = locked(transaction, conversation_id).await?;
                if !conversation_writes::idle_bot_only(&conversation, now, limit_ms) {
                    return Ok(false);
                }
                close_locked(transaction, &mut conversation, published).await?;
                Ok(true)
            })
            .await;
        match closed {
            Ok(closed) => Ok(closed),
            Err(ConversationError::NotFound) => Ok(false),
            Err(ConversationError::Storage(error)) => Err(error),
            Err(error) => Err(StorageError::Server(error.to_string())),
        }
    }
}
