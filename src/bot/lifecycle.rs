//! The end of conversations only the bot took part in: after the site's `idle_close_minutes`
//! without a message they close by themselves.
//!
//! Such a conversation never waits in the agents' queue (routing leaves bot-active conversations
//! alone), so without this it would stay open for good, and every agent's `welcome` would carry
//! it. A conversation a human joined (a handoff or a `take` clears `bot_active`) is left to the
//! agents.
//!
//! The server (every cluster node) sweeps the open conversations every [`SWEEP_INTERVAL`]; each
//! close is one change that checks again, as it is decided, that the conversation is still the
//! bot's and still idle, so a message or a handoff committed in between always wins.

use std::time::Duration;

use crate::bot::Bot;
use crate::bot::conversation_writes::{BotConversations, idle_bot_only};
use crate::chat::conversation_store::ConversationStore;
use crate::chat::conversations::Conversation;
use crate::storage::StorageError;

/// How often open conversations are checked; idle ones close up to this late.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Closes every open conversation that only the bot took part in and that has had no message
/// for its site's `idle_close_minutes`, as of `now` (Unix ms); returns how many closed. Each
/// close is decided again in its own change ([`BotConversations::close_if_idle`]), so a message or
/// a handoff committed in between wins, and two cluster nodes sweeping at once close each once.
pub async fn close_idle(
    store: &(impl ConversationStore + BotConversations),
    bot: &Bot,
    now: i64,
) -> Result<usize, StorageError> {
    let candidates = store.list_open().await?.into_iter().filter(|conversation| conversation.bot_active);
    let mut closed = 0;
    for conversation in candidates {
        let settings = bot.settings(&conversation.site).await?;
        if settings.idle_close_minutes == 0 {
            continue;
        }
        let limit_ms = i64::from(settings.idle_close_minutes) * 60_000;
        if !idle_bot_only(&conversation, now, limit_ms) {
            continue;
        }
        if store.close_if_idle(conversation.id, now, limit_ms).await? {
            tracing::info!(conversation_id = conversation.id, "closed a bot-only conversation after inactivity");
            closed += 1;
        }
    }
    Ok(closed)
}

/// A conversation's place in its site's queue (1 is next), or `None` when it is not waiting for
/// an agent (the bot still has it, an agent has it, or it is closed). Conversations wait in the
/// order they were last changed, which for a handed-off one is the handoff.
pub fn queue_position(conversation: &Conversation, open: &[Conversation]) -> Option<usize> {
    let waiting = |candidate: &Conversation| {
        candidate.status == crate::chat::conversations::ConversationStatus::Queued
            && !candidate.bot_active
            && candidate.assigned_agent.is_none()
    };
    if !waiting(conversation) {
        return None;
    }
    let ahead = open
        .iter()
        .filter(|other| other.site == conversation.site && waiting(other))
        .filter(|other| (other.updated_at, other.id) < (conversation.updated_at, conversation.id))
        .count();
    Some(ahead + 1)
}
