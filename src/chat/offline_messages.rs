//! Offline messages: what visitors leave, with a contact email, when no agent can answer.
//!
//! Each one also goes into the visitor's conversation (their open one, or a new one waiting in
//! the queue) as a visitor message, and becomes a lead of that conversation, so the agent who
//! follows it up answers where the widget shows the answer on the visitor's next visit.

use std::future::Future;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::chat::conversations;
use crate::chat::messages::{self, NewMessage, Target};
use crate::chat::writes::ChatWrites;
use crate::people::visitors::Visitor;
use crate::protocol::{SenderKind, SenderView};
use crate::storage::writer::Counter;
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

/// The client id of the visitor message an offline message becomes, before its id. The space
/// keeps it out of what clients may send (printable ASCII without spaces), so it never collides
/// with a send of the visitor's in deduplication. It is only an id: what marks the message as
/// the offline form's is its record's `offline_message_id` (before that mark, such messages had
/// `offline-` and the id, which a client may send too).
const OFFLINE_CLIENT_ID_PREFIX: &str = "offline ";

/// Longest offline message text, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OfflineMessage {
    pub id: u64,
    pub site: String,
    pub visitor_id: u64,
    /// The conversation it was written into (0 for messages stored before they were).
    #[serde(default)]
    pub conversation_id: u64,
    pub name: String,
    pub email: String,
    pub text: String,
    pub created_at: i64,
    /// The widget's language (`zh-CN`, `en`), for emails about the message.
    #[serde(default)]
    pub lang: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NewOfflineMessage {
    #[serde(default)]
    pub name: String,
    pub email: String,
    pub text: String,
    /// The widget's language.
    #[serde(default)]
    pub lang: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineMessageError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Checks a new message's fields; the message names what to fix.
pub fn validate(new_message: &NewOfflineMessage) -> Result<(), OfflineMessageError> {
    let email = new_message.email.trim();
    let plausible =
        email.len() <= 254 && email.split_once('@').is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
    if !plausible {
        return Err(OfflineMessageError::Invalid("email: an email address is required so we can answer".into()));
    }
    if new_message.name.chars().count() > 200 {
        return Err(OfflineMessageError::Invalid("name: at most 200 characters".into()));
    }
    let n_chars = new_message.text.trim().chars().count();
    if n_chars == 0 || n_chars > MAX_TEXT_CHARS {
        return Err(OfflineMessageError::Invalid(format!("text: must be 1 to {MAX_TEXT_CHARS} characters")));
    }
    Ok(())
}

/// The offline messages' storage boundary: leaving one, and the agents' list, so the cluster's
/// PostgreSQL (`cluster::offline_messages`) implements these calls and not redb's tables. Both
/// decide with [`validate`], [`OfflineMessage::new_at`], [`OfflineMessage::in_conversation`],
/// [`OfflineMessage::note_on`] and `leads::offline_lead`.
pub trait OfflineMessageStore: Send + Sync {
    /// Stores what a visitor left, in the same transaction: the message, its copy in the
    /// visitor's conversation (their open one, or a new one in the queue, without the bot), the
    /// address (and name, language) on the visitor, and its lead.
    fn leave(
        &self,
        site: &str,
        visitor_id: u64,
        new_message: NewOfflineMessage,
    ) -> impl Future<Output = Result<OfflineMessage, OfflineMessageError>> + Send;

    /// Up to `limit` offline messages of the sites `visible` accepts, newest first.
    fn list_offline(
        &self,
        visible: impl Fn(&str) -> bool + Send + 'static,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OfflineMessage>, StorageError>> + Send;
}

impl OfflineMessageStore for Store {
    async fn leave(
        &self,
        site: &str,
        visitor_id: u64,
        new_message: NewOfflineMessage,
    ) -> Result<OfflineMessage, OfflineMessageError> {
        validate(&new_message)?;
        let site = site.to_owned();
        self.write(move |context| {
            let id = context.next_id(Counter::OfflineMessage);
            let conversation_id = match conversations::open_conversation_of(context, visitor_id)? {
                Some(open) => open,
                None => conversations::create_for_offline_message(context, &site, visitor_id)?,
            };
            let message = OfflineMessage::new_at(id, site, visitor_id, conversation_id, new_message, context.now);
            let visitor = crate::people::visitors::get_for_update(context, visitor_id)?;
            if let Err(error) = messages::append(context, message.in_conversation(visitor.as_ref()))? {
                return Ok(Err(OfflineMessageError::Invalid(error.to_string())));
            }
            context
                .transaction
                .open_table(tables::OFFLINE_MESSAGES)?
                .insert(message.id, encode_json(&message).as_slice())?;
            if let Some(mut visitor) = visitor {
                message.note_on(&mut visitor);
                crate::people::visitors::put(context, &visitor)?;
            }
            context.publish(crate::chat::delivery::CommittedEvent::OfflineMessage(message.clone()));
            crate::chat::leads::record_offline_message(context, &message)?;
            Ok(Ok(message))
        })
        .await
    }

    async fn list_offline(
        &self,
        visible: impl Fn(&str) -> bool + Send + 'static,
        limit: usize,
    ) -> Result<Vec<OfflineMessage>, StorageError> {
        self.read(move |transaction| list(transaction, visible, limit)).await
    }
}

impl OfflineMessage {
    /// A checked new message as stored: trimmed, its language cut to 20 characters.
    pub fn new_at(
        id: u64,
        site: String,
        visitor_id: u64,
        conversation_id: u64,
        new_message: NewOfflineMessage,
        now: i64,
    ) -> OfflineMessage {
        OfflineMessage {
            id,
            site,
            visitor_id,
            conversation_id,
            name: new_message.name.trim().to_owned(),
            email: new_message.email.trim().to_owned(),
            text: new_message.text.trim().to_owned(),
            created_at: now,
            lang: new_message.lang.trim().chars().take(20).collect(),
        }
    }

    /// Its copy in the conversation, as the visitor's message (named as they signed it, or as
    /// the visitor is known). Marked as this offline message's, so notifications announce the
    /// offline message once rather than this message too.
    pub fn in_conversation(&self, visitor: Option<&Visitor>) -> NewMessage {
        let sender_name = match self.name.is_empty() {
            true => crate::people::visitors::display_name(visitor.unwrap_or(&Visitor::default())),
            false => self.name.clone(),
        };
        let sender = SenderView { kind: SenderKind::Visitor, id: self.visitor_id, name: sender_name };
        NewMessage {
            offline_message_id: Some(self.id),
            ..NewMessage::text(
                Target::Conversation(self.conversation_id),
                sender,
                format!("{OFFLINE_CLIENT_ID_PREFIX}{}", self.id),
                self.text.clone(),
            )
        }
    }

    /// The visitor is now a lead with an address: agents see who wrote, and answers to them can
    /// go by email, in their language.
    pub fn note_on(&self, visitor: &mut Visitor) {
        visitor.email = Some(self.email.clone());
        if visitor.name.as_deref().is_none_or(str::is_empty) && !self.name.is_empty() {
            visitor.name = Some(self.name.clone());
        }
        if !self.lang.is_empty() {
            visitor.lang = Some(self.lang.clone());
        }
    }
}

/// Every offline message of a visitor, oldest first.
pub fn of_visitor(transaction: &ReadTransaction, visitor_id: u64) -> Result<Vec<OfflineMessage>, StorageError> {
    let table = transaction.open_table(tables::OFFLINE_MESSAGES)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        let message: OfflineMessage = decode_json(entry?.1.value())?;
        if message.visitor_id == visitor_id {
            found.push(message);
        }
    }
    Ok(found)
}

/// Removes every offline message of a visitor (inside the erasure of their data); returns how many.
pub fn erase_of_visitor(context: &mut WriteContext<'_>, visitor_id: u64) -> Result<u64, StorageError> {
    let mut table = context.transaction.open_table(tables::OFFLINE_MESSAGES)?;
    let mut doomed = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let message: OfflineMessage = decode_json(value.value())?;
        if message.visitor_id == visitor_id {
            doomed.push(key.value());
        }
    }
    for id in &doomed {
        table.remove(*id)?;
    }
    Ok(doomed.len() as u64)
}

/// Offline messages of the given sites, newest first.
pub fn list(
    transaction: &ReadTransaction,
    visible: impl Fn(&str) -> bool,
    limit: usize,
) -> Result<Vec<OfflineMessage>, StorageError> {
    let table = transaction.open_table(tables::OFFLINE_MESSAGES)?;
    let mut found = Vec::new();
    for entry in table.iter()?.rev() {
        let message: OfflineMessage = decode_json(entry?.1.value())?;
        if visible(&message.site) {
            found.push(message);
            if found.len() >= limit {
                break;
            }
        }
    }
    Ok(found)
}
