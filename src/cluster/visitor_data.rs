//! One visitor's data on the cluster's PostgreSQL, for its export: [`PostgresMessages`]
//! implements `VisitorDataStore` and gathers what the appliance's `visitor_data::collect` does
//! (the visitor, every conversation with all its messages, offline messages, leads and the
//! attachments' records) from the shared tables; `visitor_data::export` then reads the
//! attachments' bytes through `UploadStore` and writes the same archive on both backends.

use std::collections::HashSet;

use crate::chat::message_store::MessageStore;
use crate::chat::messages::message_view;
use crate::cluster::messages::{CONVERSATION_COLUMNS, PostgresMessages, conversation_of};
use crate::cluster::postgres::{PostgresError, record_where, records_where};
use crate::cluster::uploads::{UPLOAD_COLUMNS, upload_of};
use crate::history::visitor_data::{ConversationData, VisitorData, VisitorDataStore, belongs_to};
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
}
