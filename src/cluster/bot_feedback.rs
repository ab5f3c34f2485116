//! Visitors' feedback on the bot's answers on the cluster's PostgreSQL: [`PostgresMessages`]
//! implements the [`BotFeedbackStore`] boundary on the `bot_feedback` record table (migration 7),
//! each record made by the appliance's `feedback::describe` from the conversation and messages
//! it reads, and the unhelpful ones listed by `feedback::newest_unhelpful`.

use crate::bot::feedback::{self, BotFeedbackStore, Feedback, FeedbackError};
use crate::chat::message_store::MessageStore;
use crate::cluster::messages::PostgresMessages;
use crate::cluster::postgres::{self, database, record_text};
use crate::storage::StorageError;

impl BotFeedbackStore for PostgresMessages {
    async fn record(&self, conversation_id: u64, seq: u64, helpful: bool) -> Result<Feedback, FeedbackError> {
        let (Ok(conversation_key), Ok(seq_key)) = (i64::try_from(conversation_id), i64::try_from(seq)) else {
            return Err(FeedbackError::NoSuchMessage);
        };
        let now = crate::base::clock::now_millis();
        let Some(conversation) = MessageStore::conversation(self, conversation_id).await? else {
            return Err(FeedbackError::NoSuchConversation);
        };
        let page =
            MessageStore::page_before(self, conversation_id, Some(seq.saturating_add(1)), feedback::QUESTION_LOOKBACK)
                .await?;
        let recorded = feedback::describe(&conversation, &page, seq, helpful, now)?;
        let client = self.readers.client().await.map_err(StorageError::from)?;
        client
            .execute(
                "INSERT INTO bot_feedback (conversation_id, seq, record) VALUES ($1, $2, $3::text::jsonb)
                 ON CONFLICT (conversation_id, seq) DO UPDATE SET record = EXCLUDED.record",
                &[&conversation_key, &seq_key, &record_text(&recorded)],
            )
            .await
            .map_err(database)?;
        Ok(recorded)
    }

    async fn unhelpful(&self, site: &str, limit: usize) -> Result<Vec<Feedback>, StorageError> {
        let client = self.readers.client().await?;
        let statement = "SELECT record::text FROM bot_feedback
                         WHERE record->>'site' = $1 AND record->'helpful' = 'false'
                         ORDER BY conversation_id DESC, seq DESC";
        let records: Vec<Feedback> = postgres::records_where(&*client, "bot feedback", statement, &[&site]).await?;
        Ok(feedback::newest_unhelpful(records, site, limit))
    }
}
