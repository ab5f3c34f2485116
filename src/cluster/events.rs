//! Committed messages published to NATS, so that every node can deliver them to its own
//! connections: the node whose group commit stored a message publishes it once, after the
//! commit, on `kefu.messages.<conversation id>`. A resend answered as a duplicate publishes
//! nothing. NATS (core) delivers at most once: a node that misses an event reads the gap from
//! PostgreSQL when its client resumes, so a lost event delays a delivery but never loses it.
//! A node follows every node's messages through [`subscribe`].
//!
//! Changes to conversations (taken, closed, rated, transferred, ...) and the leads they make are
//! published the same way, after their transaction's commit, as [`ConversationChange`] on
//! `kefu.conversations.<conversation id>`; [`subscribe_conversations`] follows them.

use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::chat::conversations::Conversation;
use crate::chat::delivery::{CommittedEvent, ConversationEvent};
use crate::chat::leads::{Lead, LeadEvent};
use crate::chat::messages::AttachmentRef;

/// The subject prefix of committed messages; a node subscribes to `kefu.messages.>`.
pub const MESSAGE_SUBJECT_PREFIX: &str = "kefu.messages";

/// A committed message as published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessageEvent {
    pub conversation_id: u64,
    pub seq: u64,
    pub created_at: i64,
    /// `SenderKind::code`: 1 visitor, 2 agent, 3 bot, 4 system.
    pub sender_kind: u8,
    pub sender_id: u64,
    pub sender_name: String,
    pub kind: String,
    pub internal: bool,
    pub client_id: String,
    pub text: String,
    #[serde(default)]
    pub attachment: Option<AttachmentRef>,
}

impl MessageEvent {
    /// The subject it is published on.
    pub fn subject(&self) -> String {
        format!("{MESSAGE_SUBJECT_PREFIX}.{}", self.conversation_id)
    }
}

/// The subject prefix of committed conversation changes; a node subscribes to
/// `kefu.conversations.>`.
pub const CONVERSATION_SUBJECT_PREFIX: &str = "kefu.conversations";

/// A committed change of a conversation, or a lead it made, as published: the conversation (or
/// lead) as it was committed, so a node delivers it without reading it back.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConversationChange {
    Conversation {
        #[serde(flatten)]
        event: ConversationEvent,
        conversation: Conversation,
    },
    Rated {
        conversation: Conversation,
    },
    Lead {
        event: LeadEvent,
        lead: Lead,
    },
}

impl ConversationChange {
    /// The conversation it is about.
    pub fn conversation_id(&self) -> u64 {
        match self {
            ConversationChange::Conversation { conversation, .. } | ConversationChange::Rated { conversation } => {
                conversation.id
            }
            ConversationChange::Lead { lead, .. } => lead.conversation_id,
        }
    }

    /// The subject it is published on.
    pub fn subject(&self) -> String {
        format!("{CONVERSATION_SUBJECT_PREFIX}.{}", self.conversation_id())
    }

    /// The event a node's delivery takes, as if its own writer had committed it.
    pub fn into_committed(self) -> CommittedEvent {
        match self {
            ConversationChange::Conversation { event, conversation } => {
                CommittedEvent::Conversation { event, conversation }
            }
            ConversationChange::Rated { conversation } => CommittedEvent::Rated { conversation },
            ConversationChange::Lead { event, lead } => CommittedEvent::Lead { event, lead },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("NATS: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// Connects to NATS (`nats://HOST:4222`).
pub async fn connect(url: &str) -> Result<async_nats::Client, EventsError> {
    Ok(async_nats::connect(url).await?)
}

/// Every node's committed messages from now on (`kefu.messages.>`), in each publisher's order:
/// what a node delivers to its own connections. A payload that is not an event is logged and
/// skipped. The stream ends when the connection is closed.
pub async fn subscribe(client: &async_nats::Client) -> Result<impl Stream<Item = MessageEvent> + use<>, EventsError> {
    subscribe_decoded(client, MESSAGE_SUBJECT_PREFIX).await
}

/// Every node's committed conversation changes from now on (`kefu.conversations.>`), as
/// [`subscribe`] does for messages.
pub async fn subscribe_conversations(
    client: &async_nats::Client,
) -> Result<impl Stream<Item = ConversationChange> + use<>, EventsError> {
    subscribe_decoded(client, CONVERSATION_SUBJECT_PREFIX).await
}

async fn subscribe_decoded<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    prefix: &str,
) -> Result<impl Stream<Item = T> + use<T>, EventsError> {
    let subscriber = client.subscribe(format!("{prefix}.>")).await?;
    Ok(subscriber.filter_map(|message| async move {
        match serde_json::from_slice::<T>(&message.payload) {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "a NATS message that is not a committed event was skipped");
                None
            }
        }
    }))
}

/// Publishes a batch's committed messages, in commit order; a failure is logged, not returned:
/// the messages are stored, and resume reads what a node missed.
pub async fn publish(client: &async_nats::Client, events: Vec<MessageEvent>) {
    for event in events {
        publish_one(client, event.subject(), &event).await;
    }
}

/// Publishes a transaction's committed conversation changes, in order, as [`publish`] does.
pub async fn publish_changes(client: &async_nats::Client, changes: Vec<ConversationChange>) {
    for change in changes {
        publish_one(client, change.subject(), &change).await;
    }
}

async fn publish_one(client: &async_nats::Client, subject: String, event: &impl Serialize) {
    let payload = match serde_json::to_vec(event) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::warn!(%error, %subject, "a committed event could not be encoded for NATS");
            return;
        }
    };
    if let Err(error) = client.publish(subject.clone(), payload.into()).await {
        tracing::warn!(%error, %subject, "a committed event was not published to NATS");
    }
}

/// The subject a node publishes a site's key on after committing a change to it, so every node
/// drops its decoded copy (`SiteDirectory::invalidate`).
pub const SITE_CHANGED_SUBJECT: &str = "kefu.sites.changed";

/// Tells every node that the site `key` changed; a failure is logged: that node reads the site
/// again only when its copy is dropped for another reason.
pub async fn publish_site_changed(client: &async_nats::Client, key: &str) {
    if let Err(error) = client.publish(SITE_CHANGED_SUBJECT, key.to_owned().into()).await {
        tracing::warn!(%error, site = key, "a site change was not published to NATS");
    }
}

/// Drops `directory`'s copy of each site another node (or this one) reports changed, until the
/// connection closes; returns once subscribed, so changes committed after it are seen.
pub async fn follow_site_changes(
    client: &async_nats::Client,
    directory: crate::sites::SiteDirectory,
) -> Result<tokio::task::JoinHandle<()>, EventsError> {
    let mut changes = client.subscribe(SITE_CHANGED_SUBJECT).await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = changes.next().await {
            match std::str::from_utf8(&message.payload) {
                Ok(key) => directory.invalidate(key),
                Err(_) => tracing::warn!("a site change whose key is not text was skipped"),
            }
        }
    }))
}
