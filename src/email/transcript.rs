//! Transcripts by email: a visitor asks for one from the widget ([`request`]), or a site sends
//! it when a conversation closes (`transcript_on_close`, in [`super::record_notifications`]).
//!
//! The outbox row names the conversation; the sender renders the history when it sends
//! ([`render`]), so the row is written in the same commit as its cause without reading every
//! message inside the writer, and the outbox keeps no copy of the chat.

use serde::{Deserialize, Serialize};

use super::content::{self, Lang, Line};
use super::{EmailKind, OutgoingEmail};
use crate::chat::conversations::Conversation;
use crate::chat::writes::ChatWrites;
use crate::protocol::SenderKind;
use crate::storage::{StorageError, Store, WriteContext};

/// Most messages a transcript carries (the newest ones).
const MAX_TRANSCRIPT_MESSAGES: usize = 1000;

/// What a transcript row will show when it is sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TranscriptOf {
    pub conversation_id: u64,
    /// `en` or `zh`.
    pub lang: String,
}

fn lang_code(lang: Lang) -> &'static str {
    match lang {
        Lang::En => "en",
        Lang::Zh => "zh",
    }
}

/// Queues the transcript of `conversation` to `address` inside a writer operation.
pub fn queue(
    context: &mut WriteContext<'_>,
    conversation: &Conversation,
    address: &str,
    name: &str,
    lang: Lang,
) -> Result<u64, StorageError> {
    let site = super::notifications::site(context, &conversation.site)?;
    let email = transcript_email(conversation, site.as_ref(), address, name, lang);
    let now = context.now;
    super::queue(context, email, now)
}

/// The transcript email of `conversation` to `address` as it is queued, on both backends: only
/// the subject; the sender renders the body from the history when it sends ([`render_from`]).
pub fn transcript_email(
    conversation: &Conversation,
    site: Option<&crate::sites::Site>,
    address: &str,
    name: &str,
    lang: Lang,
) -> OutgoingEmail {
    let site_name = site.map_or(conversation.site.as_str(), |site| site.name.as_str());
    let mut message = content::transcript(lang, site_name, Vec::new());
    message.text.clear();
    message.html.clear();
    OutgoingEmail {
        kind: EmailKind::Transcript,
        site: Some(conversation.site.clone()),
        to_address: address.to_owned(),
        to_name: name.to_owned(),
        message,
        unless_read: None,
        transcript_of: Some(TranscriptOf { conversation_id: conversation.id, lang: lang_code(lang).to_owned() }),
    }
}

/// The language of a transcript a visitor asked for: the one they asked in, else the site's
/// email language.
pub fn requested_lang(lang_tag: &str, site: Option<&crate::sites::Site>) -> Lang {
    Lang::first_of([lang_tag, site.map_or("", |site| site.email_language.as_str())])
}

/// Checks a visitor's request: a plausible address; the language tag cut to 20 characters.
pub fn checked_request(address: &str, lang_tag: &str) -> Result<(String, String), TranscriptError> {
    let address = address.trim().to_owned();
    if !super::plausible_address(&address) {
        return Err(TranscriptError::Invalid("an email address such as name@example.com is required".into()));
    }
    Ok((address, lang_tag.trim().chars().take(20).collect()))
}

/// Keeps the address a visitor asked a transcript at as their email, with their language when
/// given, for later answers.
pub fn remember_address(visitor: &mut crate::people::visitors::Visitor, address: &str, lang_tag: &str) {
    visitor.email = Some(address.to_owned());
    if !lang_tag.is_empty() {
        visitor.lang = Some(lang_tag.to_owned());
    }
}

/// Where a visitor's transcript requests are stored: the appliance's writer, or a cluster's
/// PostgreSQL (`cluster::email_notifications`).
pub trait TranscriptStore: Send + Sync {
    /// A visitor asks for the transcript of their conversation at `address` (remembered as
    /// their email, with their language, for later answers); another visitor's conversation is
    /// not found, and a refusal changes nothing.
    fn request_transcript(
        &self,
        conversation_id: u64,
        visitor_id: u64,
        address: &str,
        lang_tag: &str,
    ) -> impl std::future::Future<Output = Result<(), TranscriptError>> + Send;
}

impl TranscriptStore for Store {
    async fn request_transcript(
        &self,
        conversation_id: u64,
        visitor_id: u64,
        address: &str,
        lang_tag: &str,
    ) -> Result<(), TranscriptError> {
        request(self, conversation_id, visitor_id, address, lang_tag).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("no such conversation")]
    NotFound,
    #[error("email: {0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A visitor asks for the transcript of their conversation at `address` (remembered as their
/// email, with their language, for later answers).
async fn request(
    store: &Store,
    conversation_id: u64,
    visitor_id: u64,
    address: &str,
    lang_tag: &str,
) -> Result<(), TranscriptError> {
    let (address, lang_tag) = checked_request(address, lang_tag)?;
    store
        .write(move |context| {
            let Some(conversation) = context.conversation(conversation_id)?.cloned() else {
                return Ok(Err(TranscriptError::NotFound));
            };
            if conversation.visitor_id != visitor_id {
                return Ok(Err(TranscriptError::NotFound));
            }
            let Some(mut visitor) = crate::people::visitors::get_for_update(context, visitor_id)? else {
                return Ok(Err(TranscriptError::NotFound));
            };
            remember_address(&mut visitor, &address, &lang_tag);
            crate::people::visitors::put(context, &visitor)?;
            let site = super::notifications::site(context, &conversation.site)?;
            let lang = requested_lang(&lang_tag, site.as_ref());
            queue(context, &conversation, &address, visitor.name.as_deref().unwrap_or_default(), lang)?;
            Ok(Ok(()))
        })
        .await
}

/// The transcript's subject and parts, from the history as it is now (internal notes left out).
pub fn render(transaction: &redb::ReadTransaction, of: &TranscriptOf) -> Result<content::Rendered, StorageError> {
    let conversation = crate::chat::conversations::get(transaction, of.conversation_id)?;
    let site_name = match &conversation {
        Some(conversation) => {
            crate::sites::get(transaction, &conversation.site)?.map_or(conversation.site.clone(), |site| site.name)
        }
        None => String::new(),
    };
    let messages = crate::chat::messages::page_before(transaction, of.conversation_id, None, MAX_TRANSCRIPT_MESSAGES)?;
    Ok(render_from(of, &site_name, messages))
}

/// The same from any backend: the newest [`MAX_TRANSCRIPT_MESSAGES`] messages, oldest first.
pub async fn render_stored(
    messages: &impl crate::chat::message_store::MessageStore,
    sites: &impl crate::sites::store::SiteStore,
    of: &TranscriptOf,
) -> Result<content::Rendered, StorageError> {
    let site_name = match messages.conversation(of.conversation_id).await? {
        Some(conversation) => sites.get(&conversation.site).await?.map_or(conversation.site.clone(), |site| site.name),
        None => String::new(),
    };
    let page = messages.page_before(of.conversation_id, None, MAX_TRANSCRIPT_MESSAGES).await?;
    Ok(render_from(of, &site_name, page))
}

/// The transcript of `messages` (oldest first), in the language `of` names.
fn render_from(of: &TranscriptOf, site_name: &str, messages: crate::chat::message_store::Page) -> content::Rendered {
    let lang = Lang::from_tag(&of.lang).unwrap_or(Lang::En);
    let you = match lang {
        Lang::En => "You",
        Lang::Zh => "您",
    };
    let lines = messages
        .into_iter()
        .filter(|(_, record)| !record.internal)
        .map(|(_, record)| Line {
            who: if record.sender_kind == SenderKind::Visitor { you.to_owned() } else { record.sender_name.clone() },
            when: crate::base::clock::format_utc(record.created_at),
            text: message_text(&record),
        })
        .collect();
    content::transcript(lang, site_name, lines)
}

/// A message as an email quotes it: its text, and the name of its attachment.
pub(super) fn message_text(record: &crate::chat::messages::MessageRecord) -> String {
    match &record.attachment {
        Some(attachment) if record.text.is_empty() => format!("[{}]", attachment.name),
        Some(attachment) => format!("{}\n[{}]", record.text, attachment.name),
        None => record.text.clone(),
    }
}
