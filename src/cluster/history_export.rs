//! The history export on the cluster's PostgreSQL: [`PostgresMessages`] implements
//! `HistoryExport` by reading the messages' day partitions oldest first, each in chunks of
//! `EXPORT_CHUNK` messages in key order (conversation, then seq: the partition's primary key),
//! with their conversations' facts, and encoding each chunk with the appliance's
//! `export::encode_chunk`. So both backends write the same bytes for the same history, and memory
//! stays bounded by the channel whatever the range holds.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::chat::messages::{MessageKey, MessageRecord};
use crate::cluster::messages::{CONVERSATION_COLUMNS, MESSAGE_COLUMNS, PostgresMessages, conversation_of, message_of};
use crate::cluster::postgres::{self, PostgresError, Readers};
use crate::history::export::{
    ConversationFacts, EXPORT_CHUNK, EXPORT_QUEUE_CAPACITY, ExportRequest, HistoryExport, encode_chunk, head,
};
use crate::storage::StorageError;

impl HistoryExport for PostgresMessages {
    fn start_export(&self, request: ExportRequest) -> mpsc::Receiver<Result<Bytes, StorageError>> {
        let (sender, receiver) = mpsc::channel(EXPORT_QUEUE_CAPACITY);
        let readers = self.readers.clone();
        tokio::spawn(async move {
            if let Err(error) = run(&readers, &request, &sender).await {
                let _ = sender.send(Err(error)).await;
            }
        });
        receiver
    }
}

/// Runs an export, sending each encoded chunk to `sender` until the range ends or the reader
/// goes away.
async fn run(
    readers: &Readers,
    request: &ExportRequest,
    sender: &mpsc::Sender<Result<Bytes, StorageError>>,
) -> Result<(), StorageError> {
    let head = head(request)?;
    if !head.is_empty() && sender.send(Ok(Bytes::from(head))).await.is_err() {
        return Ok(());
    }
    let client = readers.client().await?;
    let days: Vec<u32> = postgres::partition_days(&client)
        .await?
        .into_iter()
        .filter(|day| (request.from_day..=request.to_day).contains(day))
        .collect();
    drop(client);
    for day in days {
        let mut after = (0i64, 0i64);
        loop {
            let client = readers.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {MESSAGE_COLUMNS}, conversation_id FROM messages
                         WHERE day = date '1970-01-01' + $1::integer AND (conversation_id, seq) > ($2, $3)
                         ORDER BY conversation_id, seq LIMIT $4"
                    ),
                    &[&(day as i32), &after.0, &after.1, &(EXPORT_CHUNK as i64)],
                )
                .await
                .map_err(PostgresError::from)?;
            let mut chunk: Vec<(MessageKey, MessageRecord)> = Vec::with_capacity(rows.len());
            for row in &rows {
                let (seq, record) = message_of(row)?;
                let conversation_id: i64 = row.try_get(14).map_err(PostgresError::from)?;
                chunk.push((MessageKey { day, conversation_id: conversation_id as u64, seq }, record));
            }
            let Some((last, _)) = chunk.last() else {
                break;
            };
            after = (last.conversation_id as i64, last.seq as i64);
            let mut ids: Vec<i64> = chunk.iter().map(|(key, _)| key.conversation_id as i64).collect();
            ids.dedup();
            let mut facts: HashMap<u64, Option<ConversationFacts>> = ids.iter().map(|id| (*id as u64, None)).collect();
            let statement = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ANY($1)");
            for row in client.query(&statement, &[&ids]).await.map_err(PostgresError::from)? {
                let conversation = conversation_of(&row)?;
                facts.insert(conversation.id, Some(ConversationFacts::of(conversation)));
            }
            drop(client);
            let full = chunk.len() == EXPORT_CHUNK;
            let (encoded, _) = encode_chunk(request, &chunk, &facts)?;
            if !encoded.is_empty() && sender.send(Ok(Bytes::from(encoded))).await.is_err() {
                return Ok(());
            }
            if !full {
                break;
            }
        }
    }
    Ok(())
}
