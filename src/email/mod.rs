//! Email: kefu's messages to agents and visitors over SMTP, from a durable outbox.
//!
//! An email is a row of the outbox (`emails_v1`) written in the same commit as what causes it:
//! [`record_notifications`] runs inside the writer just before each commit (like the webhook
//! outbox) and turns the batch's events into rows, and use cases that email directly (a test
//! email, a password reset) write their row in their own operation. The [`sender`] task sends
//! due rows with retries and exponential backoff; a row is marked sent in a commit after the
//! SMTP server accepted it, so a restart resends only what was not accepted.
//!
//! [`settings`] holds the SMTP server (kefu.toml's `[email]`, overridden by what an admin saves)
//! and [`content`] the words of every email in English and Chinese, rendered by askama.

pub mod content;
pub mod notifications;
pub mod password_reset;
pub mod sender;
pub mod settings;
pub mod transcript;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::storage::writer::Counter;
use crate::storage::{StorageError, WriteContext, decode_json, encode_json, tables};

pub use content::Lang;
pub use notifications::record_notifications;

/// What an email is about; the admin page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    Test,
    OfflineMessage,
    MissedChat,
    Reply,
    Transcript,
    PasswordReset,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::Test => "test",
            EmailKind::OfflineMessage => "offline_message",
            EmailKind::MissedChat => "missed_chat",
            EmailKind::Reply => "reply",
            EmailKind::Transcript => "transcript",
            EmailKind::PasswordReset => "password_reset",
        }
    }

    /// Whether the body holds a secret (a reset link), erased once the email is sent or given up.
    pub fn is_secret(self) -> bool {
        self == EmailKind::PasswordReset
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailStatus {
    Pending,
    Sent,
    Failed,
    /// Not sent because it was no longer needed (the visitor read the answer in the chat).
    Skipped,
}

impl EmailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailStatus::Pending => "pending",
            EmailStatus::Sent => "sent",
            EmailStatus::Failed => "failed",
            EmailStatus::Skipped => "skipped",
        }
    }
}

/// One row of the outbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Email {
    pub id: u64,
    pub kind: EmailKind,
    /// The site it is about, if any.
    pub site: Option<String>,
    pub to_address: String,
    pub to_name: String,
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
    pub status: EmailStatus,
    pub attempts: u32,
    pub created_at: i64,
    pub next_attempt_at: Option<i64>,
    /// Why the last attempt failed (the SMTP server's answer or the connection error).
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
    /// Sent only if the visitor has not read this message in the chat by the time it is due.
    #[serde(default)]
    pub unless_read: Option<ReadCheck>,
    /// A transcript, rendered from the conversation's history when it is sent (the body stays
    /// empty in the outbox).
    #[serde(default)]
    pub transcript_of: Option<transcript::TranscriptOf>,
}

/// A message a visitor may read in the chat before its email goes out.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ReadCheck {
    pub conversation_id: u64,
    pub visitor_id: u64,
    pub seq: u64,
}

impl ReadCheck {
    /// Whether the visitor has read up to the message.
    pub fn is_read(&self, transaction: &ReadTransaction) -> Result<bool, StorageError> {
        let positions = transaction.open_table(tables::READ_POSITIONS)?;
        let key = (self.conversation_id, crate::protocol::SenderKind::Visitor.code(), self.visitor_id);
        Ok(positions.get(key)?.is_some_and(|read| read.value() >= self.seq))
    }
}

/// An email to queue: the recipient and the rendered message.
#[derive(Clone, Debug)]
pub struct OutgoingEmail {
    pub kind: EmailKind,
    pub site: Option<String>,
    pub to_address: String,
    pub to_name: String,
    pub message: content::Rendered,
    pub unless_read: Option<ReadCheck>,
    pub transcript_of: Option<transcript::TranscriptOf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error(transparent)]
    Invalid(#[from] crate::base::field_error::FieldError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Whether `address` looks like an email address (the SMTP server has the last word).
pub fn plausible_address(address: &str) -> bool {
    let address = address.trim();
    address.len() <= 254
        && !address.contains(char::is_whitespace)
        && address
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !host.contains('@'))
}

/// Whether an email goes to, or names, `address` (trimmed and in lower case): what the erasure
/// of a visitor's data removes, on both backends.
pub fn concerns_address(address: &str, to_address: &str, text: &str, html: &str) -> bool {
    let names = |text: &str| text.to_lowercase().contains(address);
    !address.is_empty() && (to_address.to_lowercase() == address || names(text) || names(html))
}

/// Deletes every email to `address` or that names it (an offline-message notice carries the
/// visitor's address), sent or not: the erasure of one visitor's data. Returns how many.
pub fn erase_about(context: &mut WriteContext<'_>, address: &str) -> Result<u64, StorageError> {
    let address = address.trim().to_lowercase();
    if address.is_empty() {
        return Ok(0);
    }
    let mut erased = Vec::new();
    {
        let table = context.transaction.open_table(tables::EMAILS)?;
        for entry in table.iter()? {
            let (id, value) = entry?;
            let email: Email = decode_json(value.value())?;
            if concerns_address(&address, &email.to_address, &email.text, &email.html) {
                erased.push(id.value());
            }
        }
    }
    let mut table = context.transaction.open_table(tables::EMAILS)?;
    for id in &erased {
        table.remove(id)?;
    }
    drop(table);
    context.transaction.open_table(tables::EMAIL_DUE)?.retain(|key, _| !erased.contains(&key.1))?;
    Ok(erased.len() as u64)
}

/// Writes `email` to the outbox inside a writer operation, due at `due_at`; returns its id.
pub fn queue(context: &mut WriteContext<'_>, email: OutgoingEmail, due_at: i64) -> Result<u64, StorageError> {
    let id = context.next_id(Counter::Email);
    let row = Email {
        id,
        kind: email.kind,
        site: email.site,
        to_address: email.to_address,
        to_name: email.to_name,
        subject: email.message.subject,
        text: email.message.text,
        html: email.message.html,
        status: EmailStatus::Pending,
        attempts: 0,
        created_at: context.now,
        next_attempt_at: Some(due_at),
        last_error: None,
        sent_at: None,
        unless_read: email.unless_read,
        transcript_of: email.transcript_of,
    };
    context.transaction.open_table(tables::EMAILS)?.insert(id, encode_json(&row).as_slice())?;
    crate::storage::outbox::move_due(&mut context.transaction.open_table(tables::EMAIL_DUE)?, id, None, Some(due_at))?;
    Ok(id)
}

pub fn get(transaction: &ReadTransaction, id: u64) -> Result<Option<Email>, StorageError> {
    transaction.open_table(tables::EMAILS)?.get(id)?.map(|value| decode_json(value.value())).transpose()
}

/// The newest emails of the outbox, newest first.
pub fn recent(transaction: &ReadTransaction, limit: usize) -> Result<Vec<Email>, StorageError> {
    let table = transaction.open_table(tables::EMAILS)?;
    let mut found = Vec::new();
    for entry in table.iter()?.rev().take(limit) {
        found.push(decode_json(entry?.1.value())?);
    }
    Ok(found)
}
