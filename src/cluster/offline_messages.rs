//! Offline messages on the cluster's PostgreSQL: [`PostgresMessages`] implements the
//! [`OfflineMessageStore`] over the `offline_messages` record table (migration 7; ids from
//! migration 15's sequence). Leaving one is one transaction, as on the appliance: the visitor's
//! row locked first (one visitor's offline messages in turn), their open conversation (or a new
//! one in the queue, without the bot; or the one a send through another node just started), the copy in it appended with the group commit's function,
//! the record, the address on the visitor, and its lead; the events go out after the commit,
//! in the appliance's order (the conversation's, the message, the offline message, the lead).

use tokio_postgres::Transaction;

use crate::base::clock;
use crate::chat::conversations::{Conversation, ConversationError};
use crate::chat::leads;
use crate::chat::messages::AppendError;
use crate::chat::offline_messages::{
    self, NewOfflineMessage, OfflineMessage, OfflineMessageError, OfflineMessageStore,
};
use crate::cluster::conversations::{announce, insert_conversation, insert_lead};
use crate::cluster::events::ConversationChange;
use crate::cluster::messages::{PostgresMessages, append_in};
use crate::cluster::postgres::{database, record_of, record_text, records_where};
use crate::people::visitors::Visitor;
use crate::storage::StorageError;

/// Offline messages read per query while listing.
const LIST_PAGE: i64 = 500;

impl OfflineMessageStore for PostgresMessages {
    async fn leave(
        &self,
        site: &str,
        visitor_id: u64,
        new_message: NewOfflineMessage,
    ) -> Result<OfflineMessage, OfflineMessageError> {
        offline_messages::validate(&new_message)?;
        let site = site.to_owned();
        let visitor_key =
            i64::try_from(visitor_id).map_err(|_| OfflineMessageError::Invalid(format!("no visitor {visitor_id}")))?;
        self.change_and_publish(async |transaction, published| -> Result<_, OfflineMessageError> {
            let now = clock::now_millis();
            let visitor: Option<Visitor> = transaction
                .query_opt("SELECT record::text FROM visitors WHERE id = $1 FOR UPDATE", &[&visitor_key])
                .await
                .map_err(database)?
                .map(|row| record_of("visitor", row.get(0)))
                .transpose()?;
            let conversation_id = match open_conversation_of(transaction, visitor_key).await? {
                Some(open) => open,
                None => {
                    let queued = Conversation::new_at(&site, visitor_id, None, None, false, now);
                    match insert_conversation(transaction, queued, published).await.map_err(storage_of)? {
                        Some(started) => started.id,
                        // A send of the visitor's through another node started one meanwhile.
                        None => open_conversation_of(transaction, visitor_key).await?.ok_or_else(|| {
                            StorageError::Server("the visitor's open conversation closed meanwhile; try again".into())
                        })?,
                    }
                }
            };
            let id: i64 =
                transaction.query_one("SELECT nextval('offline_message_ids')", &[]).await.map_err(database)?.get(0);
            let message = OfflineMessage::new_at(id as u64, site, visitor_id, conversation_id, new_message, now);
            let (copy, events) = append_in(transaction, message.in_conversation(visitor.as_ref())).await.map_err(
                |error| match error {
                    AppendError::Storage(error) => OfflineMessageError::Storage(error),
                    refusal => OfflineMessageError::Invalid(refusal.to_string()),
                },
            )?;
            published.extend(events);
            // The mark `kefu_append_batch` does not write (it reads what every send has).
            transaction
                .execute(
                    "UPDATE messages SET offline_message_id = $1 WHERE conversation_id = $2 AND seq = $3",
                    &[&id, &(copy.conversation_id as i64), &(copy.seq as i64)],
                )
                .await
                .map_err(database)?;
            transaction
                .execute(
                    "INSERT INTO offline_messages (id, record) VALUES ($1, $2::text::jsonb)",
                    &[&id, &record_text(&message)],
                )
                .await
                .map_err(database)?;
            if let Some(mut visitor) = visitor {
                message.note_on(&mut visitor);
                transaction
                    .execute(
                        "UPDATE visitors SET record = $2::text::jsonb WHERE id = $1",
                        &[&visitor_key, &record_text(&visitor)],
                    )
                    .await
                    .map_err(database)?;
            }
            announce(published, ConversationChange::OfflineMessage { message: message.clone() });
            insert_lead(transaction, leads::offline_lead(&message), now, published).await?;
            Ok(message)
        })
        .await
    }

    async fn list_offline(
        &self,
        visible: impl Fn(&str) -> bool + Send + 'static,
        limit: usize,
    ) -> Result<Vec<OfflineMessage>, StorageError> {
        let client = self.readers.client().await?;
        let mut found = Vec::new();
        let mut before = i64::MAX;
        // Newest first, a page at a time, until `limit` visible ones (the appliance's scan).
        loop {
            let page: Vec<OfflineMessage> = records_where(
                &*client,
                "offline message",
                "SELECT record::text FROM offline_messages WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&before, &LIST_PAGE],
            )
            .await?;
            let Some(last) = page.last() else { return Ok(found) };
            before = last.id as i64;
            let full_page = page.len() as i64 == LIST_PAGE;
            found.extend(page.into_iter().filter(|message| visible(&message.site)));
            if found.len() >= limit || !full_page {
                found.truncate(limit);
                return Ok(found);
            }
        }
    }
}

/// The visitor's open conversation, locked for the message about to go into it.
async fn open_conversation_of(transaction: &Transaction<'_>, visitor_key: i64) -> Result<Option<u64>, StorageError> {
    let row = transaction
        .query_opt(
            "SELECT id FROM conversations WHERE visitor_id = $1 AND status <> 'closed' FOR UPDATE",
            &[&visitor_key],
        )
        .await
        .map_err(database)?;
    Ok(row.map(|row| row.get::<_, i64>(0) as u64))
}

/// A conversation that could not be started, as a storage error (only the database refuses it).
fn storage_of(error: ConversationError) -> StorageError {
    match error {
        ConversationError::Storage(error) => error,
        other => StorageError::Corrupt(other.to_string()),
    }
}
