//! One visitor's data, for the requests the GDPR and PIPL give people: an export of everything
//! kefu holds about them, and its erasure.
//!
//! The export is a tar archive: `visitor.json` (the profile and attributes, every conversation
//! with its messages, offline messages, leads and the attachments' metadata) and each
//! attachment's file under `attachments/`. The erasure removes the same in one writer operation
//! (with the visitor's dedup records, read positions, bot feedback, tokens and identities, and
//! the webhook deliveries that carry any of it), committed durably so the commit log keeps no
//! copy; then it removes the attachments' files and the search index's entries. Callers record
//! it in the audit log with the counts only.

use std::collections::HashSet;

use futures_util::StreamExt;
use redb::{ReadTransaction, ReadableTable};
use serde::Serialize;

use crate::chat::conversations::{self, Conversation};
use crate::chat::delivery::{CommittedEvent, VisitorErased};
use crate::chat::leads::{self, Lead};
use crate::chat::messages;
use crate::chat::offline_messages::{self, OfflineMessage};
use crate::chat::upload_store::UploadStore;
use crate::chat::uploads::{self, Upload};
use crate::chat::writes::ChatWrites;
use crate::people::visitors::{self, Visitor};
use crate::protocol::{MessageView, SenderKind};
use crate::search::Search;
use crate::storage::{StorageError, Store, WriteContext, decode_json, tables};

#[derive(Debug, thiserror::Error)]
pub enum VisitorDataError {
    #[error("no such visitor")]
    NotFound,
    #[error("writing the archive failed: {0}")]
    Archive(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A conversation with all its messages, internal notes included (they are about the visitor).
#[derive(Serialize)]
pub struct ConversationData {
    #[serde(flatten)]
    pub conversation: Conversation,
    pub messages: Vec<MessageView>,
}

/// Everything kefu holds about one visitor: `visitor.json` in the archive.
#[derive(Serialize)]
pub struct VisitorData {
    pub visitor: Visitor,
    pub conversations: Vec<ConversationData>,
    pub offline_messages: Vec<OfflineMessage>,
    pub leads: Vec<Lead>,
    /// The attachments' metadata; each file is `attachments/ID` in the archive.
    pub attachments: Vec<Upload>,
}

/// Reads everything about a visitor; `None` if there is no such visitor.
pub fn collect(
    transaction: &ReadTransaction,
    visitor_id: u64,
    epoch: u64,
) -> Result<Option<VisitorData>, StorageError> {
    let Some(visitor) = visitors::get(transaction, visitor_id)? else {
        return Ok(None);
    };
    let mut conversations = Vec::new();
    for conversation in conversations::of_visitor(transaction, visitor_id)? {
        let messages = messages::page_after(transaction, conversation.id, 0, usize::MAX)?
            .iter()
            .map(|(seq, record)| messages::message_view(conversation.id, *seq, record, epoch))
            .collect();
        conversations.push(ConversationData { conversation, messages });
    }
    let conversation_ids: HashSet<u64> = conversations.iter().map(|data| data.conversation.id).collect();
    let mut attachments = Vec::new();
    for entry in transaction.open_table(tables::UPLOADS)?.iter()? {
        let upload: Upload = decode_json(entry?.1.value())?;
        if belongs_to(&upload, visitor_id, &conversation_ids) {
            attachments.push(upload);
        }
    }
    Ok(Some(VisitorData {
        visitor,
        conversations,
        offline_messages: offline_messages::of_visitor(transaction, visitor_id)?,
        leads: leads::of_visitor(transaction, visitor_id)?,
        attachments,
    }))
}

pub(crate) fn belongs_to(upload: &Upload, visitor_id: u64, conversation_ids: &HashSet<u64>) -> bool {
    upload.conversation_id.is_some_and(|id| conversation_ids.contains(&id))
        || (upload.uploader.kind == SenderKind::Visitor && upload.uploader.id == visitor_id)
}

/// Where a visitor's data is read for its export and erased: the appliance's redb, or a
/// cluster's PostgreSQL (`cluster::visitor_data`), which gather the same [`VisitorData`] and
/// erase the same things.
pub trait VisitorDataStore: Send + Sync {
    /// Everything kefu holds about a visitor (messages as views in `epoch`); `None` if there is
    /// no such visitor.
    fn visitor_data(
        &self,
        visitor_id: u64,
        epoch: u64,
    ) -> impl std::future::Future<Output = Result<Option<VisitorData>, StorageError>> + Send;

    /// Erases everything about a visitor, their messages' search entries included (`search`
    /// is the server's); publishes `VisitorErased`, which closes their live connections.
    fn erase_visitor(
        &self,
        visitor_id: u64,
        search: &crate::cluster::backend::MessageSearch,
    ) -> impl std::future::Future<Output = Result<ErasureReport, VisitorDataError>> + Send;
}

impl VisitorDataStore for Store {
    async fn visitor_data(&self, visitor_id: u64, epoch: u64) -> Result<Option<VisitorData>, StorageError> {
        self.read(move |transaction| collect(transaction, visitor_id, epoch)).await
    }

    async fn erase_visitor(
        &self,
        visitor_id: u64,
        search: &crate::cluster::backend::MessageSearch,
    ) -> Result<ErasureReport, VisitorDataError> {
        erase(self, search.index("a visitor's data erasure")?, visitor_id).await
    }
}

/// The export archive (tar) of a visitor: `None` if there is no such visitor. Attachments whose
/// bytes are gone are left out (their metadata stays in `visitor.json`).
pub async fn export(
    store: &(impl VisitorDataStore + UploadStore),
    visitor_id: u64,
    epoch: u64,
) -> Result<Option<Vec<u8>>, VisitorDataError> {
    let Some(data) = store.visitor_data(visitor_id, epoch).await? else { return Ok(None) };
    let mut files = Vec::new();
    for upload in &data.attachments {
        let Some(mut parts) = store.bytes(&upload.id).await? else { continue };
        let mut bytes = Vec::new();
        while let Some(part) = parts.next().await {
            bytes.extend_from_slice(&part?);
        }
        files.push((upload.id.clone(), bytes, upload.created_at));
    }
    Ok(Some(archive(&data, &files)?))
}

/// The archive of `data` with the attachments' `files` (id, bytes, time).
fn archive(data: &VisitorData, files: &[(String, Vec<u8>, i64)]) -> Result<Vec<u8>, VisitorDataError> {
    let mut builder = tar::Builder::new(Vec::new());
    let json = serde_json::to_vec_pretty(data).map_err(std::io::Error::other)?;
    append_file(&mut builder, "visitor.json", &json, data.visitor.last_seen_at)?;
    for (id, bytes, created_at) in files {
        append_file(&mut builder, &format!("attachments/{id}"), bytes, *created_at)?;
    }
    Ok(builder.into_inner()?)
}

fn append_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8], modified_ms: i64) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(modified_ms / 1000).unwrap_or(0));
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, bytes)
}

/// What an erasure removed, by kind: the audit log records these numbers and nothing else.
#[derive(Clone, Copy, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ErasureReport {
    pub visitor_id: u64,
    pub conversations: u64,
    pub messages: u64,
    pub attachments: u64,
    pub offline_messages: u64,
    pub leads: u64,
    pub webhook_deliveries: u64,
    pub emails: u64,
}

impl ErasureReport {
    /// The audit log's detail: counts only.
    pub fn audit_detail(&self) -> String {
        format!(
            "conversations {}, messages {}, attachments {}, offline messages {}, leads {}, webhook deliveries {}, emails {}",
            self.conversations,
            self.messages,
            self.attachments,
            self.offline_messages,
            self.leads,
            self.webhook_deliveries,
            self.emails
        )
    }
}

/// Erases everything about a visitor (see the module's documentation). Their open conversation
/// is closed first, so the consoles drop it.
pub async fn erase(store: &Store, search: &Search, visitor_id: u64) -> Result<ErasureReport, VisitorDataError> {
    let (report, upload_ids) = store
        .write(move |context| {
            if visitors::get_for_update(context, visitor_id)?.is_none() {
                return Ok(Err(VisitorDataError::NotFound));
            }
            Ok(Ok(erase_in(context, visitor_id)?))
        })
        .await?;
    let data_dir = store.data_dir().to_owned();
    tokio::task::spawn_blocking(move || {
        for id in upload_ids {
            if let Err(error) = std::fs::remove_file(uploads::path_of(&data_dir, &id))
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(%error, upload = %id, "removing an erased visitor's file failed");
            }
        }
    })
    .await
    .map_err(|error| StorageError::Panicked(error.to_string()))?;
    if let Err(error) = search.delete_visitor(visitor_id).await {
        // The messages are gone from storage, so a reindex (`kefu search reindex`) drops them too.
        tracing::error!(%error, visitor_id, "removing an erased visitor's messages from the index failed");
    }
    Ok(report)
}

fn erase_in(context: &mut WriteContext<'_>, visitor_id: u64) -> Result<(ErasureReport, Vec<String>), StorageError> {
    context.transaction.require_durable();
    let mut report = ErasureReport { visitor_id, ..ErasureReport::default() };
    if let Some(open) = conversations::open_conversation_of(context, visitor_id)? {
        if let Err(error) = conversations::close_in(context, open)? {
            tracing::warn!(%error, visitor_id, "closing an erased visitor's conversation failed");
        }
    }
    let conversation_ids: Vec<u64> = {
        let table = context.transaction.open_table(tables::VISITOR_CONVERSATIONS)?;
        let range = table.range((visitor_id, 0)..=(visitor_id, u64::MAX))?;
        range.map(|entry| Ok::<u64, StorageError>(entry?.0.value().1)).collect::<Result<_, _>>()?
    };
    for &conversation_id in &conversation_ids {
        report.messages += messages::erase_conversation(context, conversation_id)?;
        context.transaction.open_table(tables::READ_POSITIONS)?.retain(|key, _| key.0 != conversation_id)?;
        context.transaction.open_table(tables::BOT_FEEDBACK)?.retain(|key, _| key.0 != conversation_id)?;
        context.transaction.open_table(tables::OPEN_CONVERSATIONS)?.remove(conversation_id)?;
        context.transaction.open_table(tables::VISITOR_CONVERSATIONS)?.remove((visitor_id, conversation_id))?;
        context.remove_conversation(conversation_id)?;
        report.conversations += 1;
    }
    context.transaction.open_table(tables::VISITOR_OPEN_CONVERSATION)?.remove(visitor_id)?;
    messages::erase_dedup_records(context, SenderKind::Visitor, visitor_id)?;
    let conversation_ids: HashSet<u64> = conversation_ids.into_iter().collect();
    let mut upload_ids = Vec::new();
    {
        let mut table = context.transaction.open_table(tables::UPLOADS)?;
        for entry in table.iter()? {
            let upload: Upload = decode_json(entry?.1.value())?;
            if belongs_to(&upload, visitor_id, &conversation_ids) {
                upload_ids.push(upload.id);
            }
        }
        for id in &upload_ids {
            table.remove(id.as_str())?;
        }
    }
    report.attachments = upload_ids.len() as u64;
    report.offline_messages = offline_messages::erase_of_visitor(context, visitor_id)?;
    report.leads = leads::erase_of_visitor(context, visitor_id)?;
    report.webhook_deliveries = crate::webhooks::erase_deliveries_of(context, visitor_id, &conversation_ids)?;
    let address = crate::people::visitors::get_for_update(context, visitor_id)?.and_then(|visitor| visitor.email);
    report.emails = crate::email::erase_about(context, address.as_deref().unwrap_or_default())?;
    crate::people::visitors::remove(context, visitor_id)?;
    context.publish(CommittedEvent::VisitorErased(VisitorErased { visitor_id }));
    context.transaction.open_table(tables::VISITOR_TOKENS)?.retain(|_, id| id != visitor_id)?;
    context.transaction.open_table(tables::VISITOR_IDENTITIES)?.retain(|_, id| id != visitor_id)?;
    context.transaction.open_table(tables::BLOCKED_VISITORS)?.remove(visitor_id)?;
    Ok((report, upload_ids))
}
