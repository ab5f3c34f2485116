//! Visitors' thumbs up and down on the bot's answers, and the list of unhelpful ones that admins
//! read to improve the knowledge base.
//!
//! One record per answer (`bot_feedback_v1`, keyed by conversation and sequence), replaced when
//! the visitor changes their mind. The record keeps what the admin needs to act without opening
//! the conversation: the visitor's question before the answer, the answer, and the entry or model
//! it came from.
//!
//! The storage boundary is [`BotFeedbackStore`]: [`Store`] implements it here, the cluster's
//! PostgreSQL in `cluster::bot_feedback`; both make a record with [`describe`] and list with
//! [`newest_unhelpful`].

use std::future::Future;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::chat::conversations::{self, Conversation, ConversationError};
use crate::chat::messages::{self, MessageRecord};
use crate::protocol::{BotSource, SenderKind};
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// Most characters of the question and of the answer kept with a record.
const MAX_KEPT_CHARS: usize = 500;

/// How far back the visitor's question is looked for before the answer: a record is made from
/// the page of this many messages up to the answer.
pub const QUESTION_LOOKBACK: usize = 10;

/// A visitor's verdict on one bot answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Feedback {
    pub site: String,
    pub conversation_id: u64,
    pub seq: u64,
    pub helpful: bool,
    /// `kb` or `llm`.
    pub source: String,
    /// The entry whose answer it was (`kb` answers).
    pub entry_id: Option<u64>,
    /// The visitor's last message before the answer.
    pub question: String,
    pub answer: String,
    /// When the answer was sent: retention removes the record with the answer's day.
    #[serde(default)]
    pub answered_at: i64,
    pub created_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("no such conversation")]
    NoSuchConversation,
    #[error("no such message")]
    NoSuchMessage,
    /// Only answers from the knowledge base or a language model take feedback.
    #[error("seq: only the bot's answers take feedback")]
    NotAnAnswer,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<ConversationError> for FeedbackError {
    fn from(error: ConversationError) -> Self {
        match error {
            ConversationError::Storage(error) => FeedbackError::Storage(error),
            _ => FeedbackError::NoSuchConversation,
        }
    }
}

fn shortened(text: &str) -> String {
    text.chars().take(MAX_KEPT_CHARS).collect()
}

/// The record of a visitor's verdict on answer `seq` of `conversation`, from `page`, the
/// conversation's [`QUESTION_LOOKBACK`] messages up to the answer; the caller has checked that the
/// visitor may see the conversation.
pub fn describe(
    conversation: &Conversation,
    page: &[(u64, MessageRecord)],
    seq: u64,
    helpful: bool,
    now: i64,
) -> Result<Feedback, FeedbackError> {
    let Some((_, answer)) = page.iter().find(|(found, _)| *found == seq) else {
        return Err(FeedbackError::NoSuchMessage);
    };
    let (source, entry_id) = match (&answer.sender_kind, &answer.bot_source) {
        (SenderKind::Bot, Some(BotSource::Kb { entry_id })) => ("kb", Some(*entry_id)),
        (SenderKind::Bot, Some(BotSource::Llm { .. })) => ("llm", None),
        _ => return Err(FeedbackError::NotAnAnswer),
    };
    let question = page
        .iter()
        .rev()
        .filter(|(found, record)| *found < seq && record.sender_kind == SenderKind::Visitor && !record.internal)
        .map(|(_, record)| shortened(&record.text))
        .next()
        .unwrap_or_default();
    Ok(Feedback {
        site: conversation.site.clone(),
        conversation_id: conversation.id,
        seq,
        helpful,
        source: source.to_owned(),
        entry_id,
        question,
        answer: shortened(&answer.text),
        answered_at: answer.created_at,
        created_at: now,
    })
}

/// The site's most recent unhelpful answers among `records` (given newest key first), newest
/// first, at most `limit`.
pub fn newest_unhelpful(records: impl IntoIterator<Item = Feedback>, site: &str, limit: usize) -> Vec<Feedback> {
    let mut found: Vec<Feedback> =
        records.into_iter().filter(|feedback| feedback.site == site && !feedback.helpful).collect();
    found.sort_by_key(|feedback| std::cmp::Reverse(feedback.created_at));
    found.truncate(limit);
    found
}

/// The feedback's storage boundary.
pub trait BotFeedbackStore: Send + Sync {
    /// Records (or replaces) the visitor's verdict on answer `seq` of `conversation_id`; the
    /// caller has checked that the visitor may see the conversation.
    fn record(
        &self,
        conversation_id: u64,
        seq: u64,
        helpful: bool,
    ) -> impl Future<Output = Result<Feedback, FeedbackError>> + Send;

    /// The site's most recent unhelpful answers, newest first, at most `limit`.
    fn unhelpful(&self, site: &str, limit: usize) -> impl Future<Output = Result<Vec<Feedback>, StorageError>> + Send;
}

impl BotFeedbackStore for Store {
    async fn record(&self, conversation_id: u64, seq: u64, helpful: bool) -> Result<Feedback, FeedbackError> {
        let now = crate::base::clock::now_millis();
        let feedback = self
            .read(move |transaction| {
                let Some(conversation) = conversations::get(transaction, conversation_id)? else {
                    return Ok(Err(FeedbackError::NoSuchConversation));
                };
                let page = messages::page_before(
                    transaction,
                    conversation_id,
                    Some(seq.saturating_add(1)),
                    QUESTION_LOOKBACK,
                )?;
                Ok(describe(&conversation, &page, seq, helpful, now))
            })
            .await??;
        let stored = feedback.clone();
        self.write(move |context| {
            let mut table = context.transaction.open_table(tables::BOT_FEEDBACK)?;
            table.insert((conversation_id, seq), encode_json(&stored).as_slice())?;
            Ok(Ok::<(), FeedbackError>(()))
        })
        .await?;
        Ok(feedback)
    }

    async fn unhelpful(&self, site: &str, limit: usize) -> Result<Vec<Feedback>, StorageError> {
        let site = site.to_owned();
        self.read(move |transaction| unhelpful(transaction, &site, limit)).await
    }
}

/// The site's most recent unhelpful answers, newest first, at most `limit`.
fn unhelpful(transaction: &ReadTransaction, site: &str, limit: usize) -> Result<Vec<Feedback>, StorageError> {
    let table = transaction.open_table(tables::BOT_FEEDBACK)?;
    let mut records = Vec::new();
    for row in table.iter()?.rev() {
        records.push(decode_json::<Feedback>(row?.1.value())?);
    }
    Ok(newest_unhelpful(records, site, limit))
}

/// Removes the records whose answer retention removed: those for which `expired(site, day of
/// the answer)` holds. They keep the visitor's question and the answer, so they must not outlive
/// the history they copy.
pub async fn remove_expired(
    store: &Store,
    expired: impl Fn(&str, u32) -> bool + Send + 'static,
) -> Result<usize, StorageError> {
    let keys: Vec<(u64, u64)> = store
        .read(move |transaction| {
            let table = transaction.open_table(tables::BOT_FEEDBACK)?;
            let mut keys = Vec::new();
            for row in table.iter()? {
                let (key, value) = row?;
                let feedback: Feedback = decode_json(value.value())?;
                if expired(&feedback.site, crate::base::clock::day_of(feedback.answered_at)) {
                    keys.push(key.value());
                }
            }
            Ok(keys)
        })
        .await?;
    let n_removed = keys.len();
    if n_removed > 0 {
        store
            .write(move |context| {
                let mut table = context.transaction.open_table(tables::BOT_FEEDBACK)?;
                for key in &keys {
                    table.remove(*key)?;
                }
                Ok(Ok::<(), StorageError>(()))
            })
            .await?;
    }
    Ok(n_removed)
}
