//! One visitor's data on the cluster's PostgreSQL, for its export and erasure:
//! [`PostgresMessages`] implements `VisitorDataStore`. The export gathers what the appliance's
//! `visitor_data::collect` does (the visitor, every conversation with all its messages, offline
//! messages, leads and the attachments' records) from the shared tables; `visitor_data::export`
//! then reads the attachments' bytes through `UploadStore` and writes the same archive on both
//! backends. The erasure removes in one transaction, under the visitor's row lock, what the
//! appliance's `visitor_data::erase` does (their open conversation closed first): conversations,
//! messages (and with them their search entries), client ids, read positions, the bot's feedback,
//! attachments, offline messages, leads, the outbox's webhook deliveries and emails about them
//! (decided by `webhooks::payload_concerns` and `email::concerns_address`), tokens, identities,
//! a block and the record. Nothing is sent about it: the close and the erasure are published to
//! the nodes (which close the visitor's connections), not to webhooks or email.

use std::collections::HashSet;

use tokio_postgres::Transaction;

use crate::base::clock;
use crate::chat::delivery::VisitorErased;
use crate::chat::message_store::MessageStore;
use crate::chat::messages::message_view;
use crate::cluster::backend::MessageSearch;
use crate::cluster::conversations::{Published, announce, locked, save};
use crate::cluster::events::{ConversationChange, NodeEvent};
use crate::cluster::messages::{CONVERSATION_COLUMNS, PostgresMessages, conversation_of};
use crate::cluster::outbox::{EmailAbout, OutboxContent, WebhookAbout};
use crate::cluster::postgres::{PostgresError, database, record_where, records_where};
use crate::cluster::uploads::{UPLOAD_COLUMNS, upload_of};
use crate::history::visitor_data::{
    ConversationData, ErasureReport, VisitorData, VisitorDataError, VisitorDataStore, belongs_to,
};
use crate::people::visitors::Visitor;
use crate::protocol::SenderKind;
use crate::storage::StorageError;

impl VisitorDataStore for PostgresMessages {
    async fn visitor_data(&self, visitor_id: u64, epoch: u64) -> Result<Option<VisitorData>, StorageError> {
        let Ok(key) = i64::try_from(visitor_id) else { return Ok(None) };
        let client = self.readers.client().await?;
        let statement = "SELECT record::text FROM visitors WHERE id = $1";
        let Some(visitor): Option<Visitor> = record_where(&*client, "visitor", statement, &[&key]).await? else {
            return Ok(None);
        };
        let rows = client
            .query(
                &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE visitor_id = $1 ORDER BY id"),
                &[&key],
            )
            .await
            .map_err(PostgresError::from)?;
        let mut conversations = Vec::with_capacity(rows.len());
        for row in &rows {
            let conversation = conversation_of(row)?;
            let messages = self
                .page_after(conversation.id, 0, usize::MAX)
                .await?
                .iter()
                .map(|(seq, record)| message_view(conversation.id, *seq, record, epoch))
                .collect();
            conversations.push(ConversationData { conversation, messages });
        }
        let conversation_ids: Vec<i64> = conversations.iter().map(|data| data.conversation.id as i64).collect();
        let statement =
            "SELECT record::text FROM offline_messages WHERE (record->>'visitor_id')::bigint = $1 ORDER BY id";
        let offline_messages = records_where(&*client, "offline message", statement, &[&key]).await?;
        let statement = "SELECT record::text FROM leads WHERE (record->>'visitor_id')::bigint = $1 ORDER BY id";
        let leads = records_where(&*client, "lead", statement, &[&key]).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads
                     WHERE conversation_id = ANY($1) OR (uploader_kind = $2 AND uploader_id = $3) ORDER BY id"
                ),
                &[&conversation_ids, &i16::from(SenderKind::Visitor.code()), &key],
            )
            .await
            .map_err(PostgresError::from)?;
        let ids: HashSet<u64> = conversations.iter().map(|data| data.conversation.id).collect();
        let mut attachments = Vec::new();
        for row in &rows {
            let (upload, _) = upload_of(row)?;
            if belongs_to(&upload, visitor_id, &ids) {
                attachments.push(upload);
            }
        }
        Ok(Some(VisitorData { visitor, conversations, offline_messages, leads, attachments }))
    }

    async fn erase_visitor(&self, visitor_id: u64, _search: &MessageSearch) -> Result<ErasureReport, VisitorDataError> {
        let Ok(key) = i64::try_from(visitor_id) else { return Err(VisitorDataError::NotFound) };
        let (report, published) = self
            .writers
            .run(async |transaction| -> Result<_, VisitorDataError> {
                let statement = "SELECT record::text FROM visitors WHERE id = $1 FOR UPDATE";
                let Some(visitor): Option<Visitor> = record_where(transaction, "visitor", statement, &[&key]).await?
                else {
                    return Err(VisitorDataError::NotFound);
                };
                let mut published = Published::default();
                let report = erase_in(transaction, &visitor, &mut published).await?;
                Ok((report, published))
            })
            .await?;
        self.outlet.announce(published).await;
        Ok(report)
    }
}

/// Erases `visitor` in `transaction` (see the module's documentation); the events for the nodes
/// go to `published`.
async fn erase_in(
    transaction: &Transaction<'_>,
    visitor: &Visitor,
    published: &mut Published,
) -> Result<ErasureReport, StorageError> {
    let key = visitor.id as i64;
    let mut report = ErasureReport { visitor_id: visitor.id, ..ErasureReport::default() };
    let open = transaction
        .query_opt("SELECT id FROM conversations WHERE visitor_id = $1 AND status <> 'closed'", &[&key])
        .await
        .map_err(database)?;
    if let Some(open) = open {
        // Closed without the lead, the webhook or the email a close makes: they would be erased.
        let mut conversation =
            locked(transaction, crate::cluster::messages::unsigned(open.get(0))?).await.map_err(storage_of)?;
        let event = conversation.close_at(clock::now_millis()).map_err(storage_of)?;
        save(transaction, &conversation).await.map_err(storage_of)?;
        announce(published, ConversationChange::Conversation { event, conversation });
    }
    let ids: Vec<i64> = transaction
        .query("SELECT id FROM conversations WHERE visitor_id = $1", &[&key])
        .await
        .map_err(database)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let count = async |statement: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]| {
        transaction.execute(statement, params).await.map_err(database)
    };
    report.messages = count("DELETE FROM messages WHERE conversation_id = ANY($1)", &[&ids]).await?;
    let visitor_kind = i16::from(SenderKind::Visitor.code());
    count(
        "DELETE FROM client_ids WHERE (sender_kind = $2 AND sender_id = $3) OR conversation_id = ANY($1)",
        &[&ids, &visitor_kind, &key],
    )
    .await?;
    for table in ["read_positions", "bot_feedback", "missed_chat_reports", "lead_conversations"] {
        count(&format!("DELETE FROM {table} WHERE conversation_id = ANY($1)"), &[&ids]).await?;
    }
    let conversation_ids: HashSet<u64> = ids.iter().map(|id| *id as u64).collect();
    let rows = transaction
        .query(
            &format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads
                 WHERE conversation_id = ANY($1) OR (uploader_kind = $2 AND uploader_id = $3) FOR UPDATE"
            ),
            &[&ids, &visitor_kind, &key],
        )
        .await
        .map_err(database)?;
    for row in &rows {
        let (upload, _) = upload_of(row)?;
        if belongs_to(&upload, visitor.id, &conversation_ids) {
            crate::cluster::uploads::delete_in(transaction, &upload.id).await?;
            report.attachments += 1;
        }
    }
    report.offline_messages =
        count("DELETE FROM offline_messages WHERE (record->>'visitor_id')::bigint = $1", &[&key]).await?;
    report.leads = count("DELETE FROM leads WHERE (record->>'visitor_id')::bigint = $1", &[&key]).await?;
    let (webhook_deliveries, emails) = erase_outbox_rows(transaction, visitor, &conversation_ids).await?;
    (report.webhook_deliveries, report.emails) = (webhook_deliveries, emails);
    report.conversations = count("DELETE FROM conversations WHERE visitor_id = $1", &[&key]).await?;
    count("DELETE FROM visitor_tokens WHERE (record #>> '{}')::bigint = $1", &[&key]).await?;
    count("DELETE FROM visitor_identities WHERE (record #>> '{}')::bigint = $1", &[&key]).await?;
    count("DELETE FROM blocked_visitors WHERE visitor_id = $1", &[&key]).await?;
    count("DELETE FROM visitors WHERE id = $1", &[&key]).await?;
    published.push(NodeEvent::VisitorErased(VisitorErased { visitor_id: visitor.id }));
    Ok(report)
}

/// Deletes the outbox's webhook deliveries and emails about the visitor or their conversations,
/// sent or not; returns how many of each.
async fn erase_outbox_rows(
    transaction: &Transaction<'_>,
    visitor: &Visitor,
    conversation_ids: &HashSet<u64>,
) -> Result<(u64, u64), StorageError> {
    let address = visitor.email.as_deref().unwrap_or_default().trim().to_lowercase();
    // Read without locking: a sender holding a row meanwhile only delays its deletion below.
    let rows = transaction.query("SELECT id, content::text FROM outbox ORDER BY id", &[]).await.map_err(database)?;
    let (mut doomed, mut webhooks, mut emails) = (Vec::new(), 0, 0);
    for row in &rows {
        let content: OutboxContent = serde_json::from_str(row.get(1))
            .map_err(|error| PostgresError::Corrupt(format!("an outbox row: {error}")))?;
        let concerns = match &content {
            OutboxContent::Webhook { payload, about, .. } => {
                let about_them = match about {
                    Some(WebhookAbout::Message { conversation_id, .. }) => conversation_ids.contains(conversation_id),
                    Some(WebhookAbout::Conversation(conversation)) => conversation.visitor_id == visitor.id,
                    None => false,
                };
                let data = serde_json::from_str::<serde_json::Value>(payload).unwrap_or_default();
                about_them || crate::webhooks::payload_concerns(&data["data"], visitor.id, conversation_ids)
            }
            OutboxContent::Email { to_address, text, html, about, .. } => {
                let about_them = match about {
                    Some(EmailAbout::Answer { conversation_id, .. }) => conversation_ids.contains(conversation_id),
                    None => false,
                };
                about_them || crate::email::concerns_address(&address, to_address, text, html)
            }
        };
        if concerns {
            doomed.push(row.get::<_, i64>(0));
            match content {
                OutboxContent::Webhook { .. } => webhooks += 1,
                OutboxContent::Email { .. } => emails += 1,
            }
        }
    }
    transaction.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&doomed]).await.map_err(database)?;
    Ok((webhooks, emails))
}

/// A conversation's change that failed inside the erasure: its storage error (a refusal cannot
/// happen to an open conversation under its row lock).
fn storage_of(error: crate::chat::conversations::ConversationError) -> StorageError {
    match error {
        crate::chat::conversations::ConversationError::Storage(error) => error,
        other => StorageError::Corrupt(other.to_string()),
    }
}
