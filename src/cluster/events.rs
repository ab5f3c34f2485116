//! Committed messages published to NATS, so that every node can deliver them to its own
//! connections: the node whose group commit stored a message publishes it once, after the
//! commit, on `kefu.messages.<conversation id>`. A resend answered as a duplicate publishes
//! nothing. NATS (core) delivers at most once: a node that misses an event reads the gap from
//! PostgreSQL when the conversation's next event reveals the gap ([`relay`]), or when its client
//! resumes, so a lost event delays a delivery but never loses it.
//!
//! Changes to conversations (taken, closed, rated, transferred, ...) and the leads they make are
//! published the same way, after their transaction's commit, as [`ConversationChange`] on
//! `kefu.conversations.<conversation id>`; [`follow`] takes both on one subscription, in the
//! order each node published them.
//!
//! A change to a site, to a site's knowledge-base entries or to its bot settings is announced by
//! the site's key on `kefu.sites.changed`, `kefu.knowledge_base.changed` or
//! `kefu.bot_settings.changed`; each node's follower drops its cached copy
//! ([`follow_site_changes`], [`follow_knowledge_base_changes`], [`follow_bot_settings_changes`]).

use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::chat::conversations::Conversation;
use crate::chat::delivery::{AccessEnded, CommittedEvent, ConversationEvent, RelayedBatch, VisitorErased};
use crate::chat::leads::{Lead, LeadEvent};
use crate::chat::message_store::MessageStore;
use crate::chat::messages::{AttachmentRef, MessageKind, MessageRecord};
use crate::chat::offline_messages::OfflineMessage;
use crate::cluster::sequence_gaps::{Next, SequenceGaps};
use crate::protocol::{ParticipantView, SenderKind};
use crate::storage::writer::Published;

/// The subject prefix of committed messages; a node subscribes to `kefu.messages.>`.
pub const MESSAGE_SUBJECT_PREFIX: &str = "kefu.messages";

/// A committed message as published: everything a node needs to deliver it.
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
    /// The conversation's site, whose agents' lists show the message.
    #[serde(default)]
    pub site: String,
    /// The day partition it is stored in.
    #[serde(default)]
    pub day: u32,
    #[serde(default)]
    pub lsn: u64,
    #[serde(default)]
    pub trace_id: u64,
    /// Whether the bot answers in the conversation, as of this message.
    #[serde(default)]
    pub bot_active: bool,
    /// The offline message it is the copy of, if it is one.
    #[serde(default)]
    pub offline_message_id: Option<u64>,
    /// Where a bot message came from (its answer's entry, a notice's action, ...).
    #[serde(default)]
    pub bot_source: Option<crate::protocol::BotSource>,
}

impl MessageEvent {
    /// The subject it is published on.
    pub fn subject(&self) -> String {
        format!("{MESSAGE_SUBJECT_PREFIX}.{}", self.conversation_id)
    }

    /// The event a node's delivery takes, as if its own writer had committed it; `None` (logged)
    /// for a sender kind or message kind this node does not know.
    pub fn into_committed(self) -> Option<CommittedEvent> {
        let sender_kind = [SenderKind::Visitor, SenderKind::Agent, SenderKind::Bot, SenderKind::System]
            .into_iter()
            .find(|kind| kind.code() == self.sender_kind);
        let kind = [MessageKind::Text, MessageKind::Image, MessageKind::File]
            .into_iter()
            .find(|kind| kind.as_str() == self.kind);
        let (Some(sender_kind), Some(kind)) = (sender_kind, kind) else {
            tracing::warn!(sender_kind = self.sender_kind, kind = %self.kind, "a message event of an unknown kind was skipped");
            return None;
        };
        let record = MessageRecord {
            lsn: self.lsn,
            trace_id: self.trace_id,
            created_at: self.created_at,
            sender_kind,
            sender_id: self.sender_id,
            sender_name: self.sender_name,
            kind,
            internal: self.internal,
            client_id: Some(self.client_id),
            text: self.text,
            attachment: self.attachment,
            bot_source: self.bot_source,
            offline_message_id: self.offline_message_id,
        };
        Some(CommittedEvent::Message {
            conversation_id: self.conversation_id,
            seq: self.seq,
            site: self.site,
            day: self.day,
            record: std::sync::Arc::new(record),
            origin: None,
            bot_active: self.bot_active,
        })
    }
}

/// The subject prefix of an agent's ended access (a logout through one node closes that
/// session's connections on every node): `kefu.agents.<agent id>`.
pub const AGENT_SUBJECT_PREFIX: &str = "kefu.agents";

/// What a node publishes after a commit, in commit order.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    Message(MessageEvent),
    Conversation(ConversationChange),
    AccessEnded(AccessEnded),
    VisitorErased(VisitorErased),
}

impl NodeEvent {
    fn subject(&self) -> String {
        match self {
            NodeEvent::Message(event) => event.subject(),
            NodeEvent::Conversation(change) => change.subject(),
            NodeEvent::AccessEnded(ended) => format!("{AGENT_SUBJECT_PREFIX}.{}", ended.agent_id),
            NodeEvent::VisitorErased(erased) => format!("{VISITOR_SUBJECT_PREFIX}.{}", erased.visitor_id),
        }
    }

    /// The event a node's delivery takes (see [`MessageEvent::into_committed`]).
    pub fn into_committed(self) -> Option<CommittedEvent> {
        match self {
            NodeEvent::Message(event) => event.into_committed(),
            NodeEvent::Conversation(change) => Some(change.into_committed()),
            NodeEvent::AccessEnded(ended) => Some(CommittedEvent::AccessEnded(ended)),
            NodeEvent::VisitorErased(erased) => Some(CommittedEvent::VisitorErased(erased)),
        }
    }
}

/// The subject prefix of erased visitors (`kefu.visitors.<id>`): every node closes their
/// connections.
pub const VISITOR_SUBJECT_PREFIX: &str = "kefu.visitors";

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
    /// A reader's position moved (a read receipt).
    Read {
        conversation_id: u64,
        reader: ParticipantView,
        seq: u64,
    },
    /// What a visitor left through the offline form (its copy in the conversation is a message).
    OfflineMessage {
        message: OfflineMessage,
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
            ConversationChange::Read { conversation_id, .. } => *conversation_id,
            ConversationChange::OfflineMessage { message } => message.conversation_id,
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
            ConversationChange::Read { conversation_id, reader, seq } => {
                CommittedEvent::Read { conversation_id, reader, seq }
            }
            ConversationChange::OfflineMessage { message } => CommittedEvent::OfflineMessage(message),
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

/// Connects to NATS (`nats://HOST:4222`). The connection does not receive what it publishes
/// itself: a node hears its own events from its [`Outlet`], with the connections that sent them.
pub async fn connect(url: &str) -> Result<async_nats::Client, EventsError> {
    Ok(async_nats::ConnectOptions::new().no_echo().connect(url).await?)
}

/// A node's own committed events, in commit order, for its relay (see [`relay`]): the messages
/// carry the connections that sent them, for their acknowledgements.
pub type LocalEvents = tokio::sync::mpsc::Sender<Vec<CommittedEvent>>;

/// The queue of [`LocalEvents`]: batches a relay has not taken yet.
pub const LOCAL_EVENTS_CAPACITY: usize = 1024;

/// Where a node's committed events go: to its own relay (so its connections hear them) and to
/// the other nodes over NATS, either or both.
#[derive(Clone, Debug, Default)]
pub struct Outlet {
    nats: Option<async_nats::Client>,
    local: Option<LocalEvents>,
}

impl Outlet {
    pub fn new(nats: Option<async_nats::Client>, local: Option<LocalEvents>) -> Outlet {
        Outlet { nats, local }
    }

    /// Whether this node's relay takes its own events (so building them is worth it).
    pub fn delivers_locally(&self) -> bool {
        self.local.is_some()
    }

    /// Sends what a transaction committed: `local` to this node's relay first, then `published`
    /// to the other nodes. False when this node's relay has stopped (its connections, and the
    /// senders waiting for acknowledgements, heard nothing); a lost publish is read as a gap.
    pub async fn send(&self, local: Vec<CommittedEvent>, published: Vec<NodeEvent>) -> bool {
        let mut delivered = true;
        if let Some(relay) = &self.local
            && !local.is_empty()
            && relay.send(local).await.is_err()
        {
            tracing::warn!("this node's relay has stopped; its own committed events were not delivered here");
            delivered = false;
        }
        if let Some(nats) = &self.nats {
            publish(nats, published).await;
        }
        delivered
    }

    /// Sends events that carry no connection: the same to this node and to the others.
    pub async fn announce(&self, events: Vec<NodeEvent>) {
        let local = match self.delivers_locally() {
            true => events.iter().cloned().filter_map(NodeEvent::into_committed).collect(),
            false => Vec::new(),
        };
        self.send(local, events).await;
    }
}

impl From<async_nats::Client> for Outlet {
    fn from(nats: async_nats::Client) -> Outlet {
        Outlet { nats: Some(nats), local: None }
    }
}

/// Every node's committed messages and conversation changes from now on, on one subscription
/// (`kefu.>`), so they come in the order each node published them (a conversation's `created`
/// before its first message): what a node delivers to its own connections. Payloads that are not
/// events, and other subjects (site changes), are skipped.
pub async fn follow(client: &async_nats::Client) -> Result<impl Stream<Item = NodeEvent> + use<>, EventsError> {
    let subscriber = client.subscribe("kefu.>").await?;
    Ok(subscriber.filter_map(|message| async move {
        let subject = message.subject.as_str();
        let decoded = if subject.starts_with(&format!("{MESSAGE_SUBJECT_PREFIX}.")) {
            serde_json::from_slice(&message.payload).map(NodeEvent::Message)
        } else if subject.starts_with(&format!("{CONVERSATION_SUBJECT_PREFIX}.")) {
            serde_json::from_slice(&message.payload).map(NodeEvent::Conversation)
        } else if subject.starts_with(&format!("{AGENT_SUBJECT_PREFIX}.")) {
            serde_json::from_slice(&message.payload).map(NodeEvent::AccessEnded)
        } else if subject.starts_with(&format!("{VISITOR_SUBJECT_PREFIX}.")) {
            serde_json::from_slice(&message.payload).map(NodeEvent::VisitorErased)
        } else {
            return None;
        };
        match decoded {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::warn!(%error, %subject, "a NATS message that is not a committed event was skipped");
                None
            }
        }
    }))
}

/// Publishes what a transaction committed, in commit order, each on its subject; a failure is
/// logged, not returned: it is stored, and resume reads what a node missed.
pub async fn publish(client: &async_nats::Client, events: Vec<NodeEvent>) {
    for event in events {
        let subject = event.subject();
        match event {
            NodeEvent::Message(event) => publish_one(client, subject, &event).await,
            NodeEvent::Conversation(change) => publish_one(client, subject, &change).await,
            NodeEvent::AccessEnded(ended) => publish_one(client, subject, &ended).await,
            NodeEvent::VisitorErased(erased) => publish_one(client, subject, &erased).await,
        }
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

/// Publishes a site's key on `subject` (`what` names the change in the log); a failure is
/// logged: the other nodes keep their copies until they drop them for another reason.
async fn publish_site_key(client: &async_nats::Client, subject: &'static str, what: &str, key: &str) {
    if let Err(error) = client.publish(subject, key.to_owned().into()).await {
        tracing::warn!(%error, site = key, "{what} was not published to NATS");
    }
}

/// Calls `changed` with each site key published on `subject` (`what` names the change in the
/// log), until the connection closes; returns once subscribed.
async fn follow_site_keys(
    client: &async_nats::Client,
    subject: &'static str,
    what: &'static str,
    changed: impl Fn(&str) + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, EventsError> {
    let mut changes = client.subscribe(subject).await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = changes.next().await {
            match std::str::from_utf8(&message.payload) {
                Ok(key) => changed(key),
                Err(_) => tracing::warn!("{what} whose site key is not text was skipped"),
            }
        }
    }))
}

/// The subject a node publishes a site's key on after committing a change to it, so every node
/// drops its decoded copy (`SiteDirectory::invalidate`).
pub const SITE_CHANGED_SUBJECT: &str = "kefu.sites.changed";

/// Tells every node that the site `key` changed; a failure is logged: that node reads the site
/// again only when its copy is dropped for another reason.
pub async fn publish_site_changed(client: &async_nats::Client, key: &str) {
    publish_site_key(client, SITE_CHANGED_SUBJECT, "a site change", key).await
}

/// Drops `directory`'s copy of each site another node reports changed (this node's own
/// change refreshed its copy already: its NATS connection does not hear itself), until the
/// connection closes; returns once subscribed, so changes committed after it are seen.
pub async fn follow_site_changes(
    client: &async_nats::Client,
    directory: crate::sites::SiteDirectory,
) -> Result<tokio::task::JoinHandle<()>, EventsError> {
    follow_site_keys(client, SITE_CHANGED_SUBJECT, "a site change", move |key| directory.invalidate(key)).await
}

/// The subject a node publishes a site's key on after committing a change to one of its teams
/// (created, renamed, members changed, deleted), so every node's router reads the teams again.
pub const TEAMS_CHANGED_SUBJECT: &str = "kefu.teams.changed";

/// Tells every node that a team of the site `key` changed; a failure is logged: that node's
/// router routes with the teams it had until the next change reaches it.
pub async fn publish_teams_changed(client: &async_nats::Client, key: &str) {
    publish_site_key(client, TEAMS_CHANGED_SUBJECT, "a team change", key).await
}

/// Gives `router` every team again, read through `teams`, when another node reports a team
/// changed (this node's own changes reach its router directly), until the connection closes;
/// changes arriving while a read is under way make one more read, so the last one wins.
pub async fn follow_team_changes(
    client: &async_nats::Client,
    teams: impl crate::people::team_store::TeamStore + 'static,
    router: crate::routing::Router,
) -> Result<tokio::task::JoinHandle<()>, EventsError> {
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let reader = changed.clone();
    tokio::spawn(async move {
        loop {
            reader.notified().await;
            match teams.list().await {
                Ok(teams) => router.send(crate::routing::RoutingEvent::TeamsReplaced { teams }).await,
                Err(error) => tracing::warn!(%error, "teams changed on another node could not be read"),
            }
        }
    });
    follow_site_keys(client, TEAMS_CHANGED_SUBJECT, "a team change", move |_| changed.notify_one()).await
}

/// The subject a node publishes a site's key on after committing a change to its knowledge-base
/// entries, so every node drops the site's match index (`KnowledgeBase::forget`).
pub const KNOWLEDGE_BASE_CHANGED_SUBJECT: &str = "kefu.knowledge_base.changed";

/// Tells every node that the knowledge base of the site `key` changed; a failure is logged: that
/// node answers from its index until it is dropped for another reason.
pub async fn publish_knowledge_base_changed(client: &async_nats::Client, key: &str) {
    publish_site_key(client, KNOWLEDGE_BASE_CHANGED_SUBJECT, "a knowledge-base change", key).await
}

/// Drops `knowledge`'s match index of each site another node reports changed (this node's own
/// change refreshed its copy already: its NATS connection does not hear itself),
/// until the connection closes; returns once subscribed, so changes committed after it are seen.
pub async fn follow_knowledge_base_changes(
    client: &async_nats::Client,
    knowledge: crate::bot::knowledge_base::KnowledgeBase,
) -> Result<tokio::task::JoinHandle<()>, EventsError> {
    follow_site_keys(client, KNOWLEDGE_BASE_CHANGED_SUBJECT, "a knowledge-base change", move |key| {
        knowledge.forget(key)
    })
    .await
}

/// The subject a node publishes a site's key on after committing a change to its bot settings,
/// so every node drops its copy (`SiteSettings::forget`).
pub const BOT_SETTINGS_CHANGED_SUBJECT: &str = "kefu.bot_settings.changed";

/// Tells every node that the bot settings of the site `key` changed; a failure is logged: that
/// node keeps its copy until it is dropped for another reason.
pub async fn publish_bot_settings_changed(client: &async_nats::Client, key: &str) {
    publish_site_key(client, BOT_SETTINGS_CHANGED_SUBJECT, "a bot settings change", key).await
}

/// Drops `settings`' copy of each site another node reports changed (this node's own
/// change refreshed its copy already: its NATS connection does not hear itself), until the
/// connection closes; returns once subscribed, so changes committed after it are seen.
pub async fn follow_bot_settings_changes(
    client: &async_nats::Client,
    settings: crate::bot::settings::SiteSettings,
) -> Result<tokio::task::JoinHandle<()>, EventsError> {
    follow_site_keys(client, BOT_SETTINGS_CHANGED_SUBJECT, "a bot settings change", move |key| settings.forget(key))
        .await
}

/// The most messages of one gap the relay reads at once; a client's resume reads the rest.
pub const GAP_READ_LIMIT: usize = 1_000;

/// Delivers every node's committed events to this node's connections: this node's own from
/// `local` (its [`Outlet`]'s queue, the senders' acknowledgements with them), the others' from
/// [`follow`]; each goes to the node's dispatcher as a `RelayedBatch`, in the order it came,
/// each conversation's messages in sequence order: a gap (a lost or late event,
/// [`SequenceGaps`]) is read from `messages` and handed over first, a repeat dropped (but for the
/// acknowledgement its sender may wait for). Returns once
/// subscribed; the task ends when the NATS connection closes or the dispatcher stops (it holds
/// the dispatcher's queue only while it hands an event over, so a stopping node is not kept
/// waiting).
pub async fn relay<M: MessageStore + 'static>(
    client: &async_nats::Client,
    mut local: tokio::sync::mpsc::Receiver<Vec<CommittedEvent>>,
    dispatcher: tokio::sync::mpsc::WeakSender<Published>,
    messages: std::sync::Arc<M>,
) -> Result<tokio::task::JoinHandle<()>, EventsError> {
    let mut others = Box::pin(follow(client).await?);
    Ok(tokio::spawn(async move {
        let mut gaps = SequenceGaps::default();
        let mut local_open = true;
        let mut sweeps = tokio::time::interval(SWEEP_INTERVAL);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (events, committed_here) = tokio::select! {
                biased;
                // First, so a steady stream of events cannot put it off; it is ready once a sweep
                // interval.
                _ = sweeps.tick() => (sweep(messages.as_ref(), &mut gaps).await, false),
                batch = local.recv(), if local_open => match batch {
                    Some(batch) => (batch, true),
                    None => {
                        local_open = false;
                        continue;
                    }
                },
                event = others.next() => match event.map(NodeEvent::into_committed) {
                    None => break,
                    Some(Some(event)) => (vec![event], false),
                    Some(None) => continue,
                },
            };
            let mut handed = HandOver::default();
            for event in events {
                match gaps.next(&event) {
                    Next::Drop if committed_here => {
                        // Delivered already from a gap's read, as another node's: its sender's
                        // acknowledgement, and the bot and push still act on it here.
                        handed.observed.push(event.clone());
                        handed.extend(acknowledgement_only(event), true);
                    }
                    Next::Drop => handed.extend(acknowledgement_only(event), false),
                    Next::Deliver => handed.push(event, committed_here),
                    Next::FillThenDeliver { conversation_id, after, before } => {
                        let site = site_of(&event).unwrap_or_default().to_owned();
                        handed.extend(read_gap(messages.as_ref(), conversation_id, after, before, site).await, false);
                        handed.push(event, committed_here);
                    }
                }
            }
            let Some(dispatcher) = dispatcher.upgrade() else { break };
            if handed.send_to(&dispatcher).await.is_err() {
                break;
            }
        }
    }))
}

/// What the relay hands the dispatcher for one batch, in order: runs of this node's own commits
/// (a `CommittedBatch`: the bot, push notifications and routing act on them here, where they
/// were committed) and of other nodes' (a `RelayedBatch`: delivered to connections only).
#[derive(Default)]
struct HandOver {
    runs: Vec<(bool, Vec<CommittedEvent>)>,
    /// This node's own commits delivered already from a gap's read, for the bot and push.
    observed: Vec<CommittedEvent>,
}

impl HandOver {
    fn push(&mut self, event: CommittedEvent, committed_here: bool) {
        match self.runs.last_mut() {
            Some((here, run)) if *here == committed_here => run.push(event),
            _ => self.runs.push((committed_here, vec![event])),
        }
    }

    fn extend(&mut self, events: impl IntoIterator<Item = CommittedEvent>, committed_here: bool) {
        for event in events {
            self.push(event, committed_here);
        }
    }

    async fn send_to(self, dispatcher: &tokio::sync::mpsc::Sender<Published>) -> Result<(), ()> {
        for (committed_here, events) in self.runs {
            let published: Published = if committed_here {
                Box::new(crate::chat::delivery::CommittedBatch(events))
            } else {
                Box::new(RelayedBatch(events))
            };
            dispatcher.send(published).await.map_err(drop)?;
        }
        if !self.observed.is_empty() {
            dispatcher.send(Box::new(crate::chat::delivery::ObservedBatch(self.observed))).await.map_err(drop)?;
        }
        Ok(())
    }
}

/// What is left of a message delivered already (a gap's read brought it first): the
/// acknowledgement its sender waits for, if it has one, as a resend's (the message is stored and
/// delivered; nothing else is sent again).
fn acknowledgement_only(event: CommittedEvent) -> Option<CommittedEvent> {
    let CommittedEvent::Message { conversation_id, seq, record, origin: Some(origin), .. } = event else {
        return None;
    };
    let appended = crate::chat::messages::Appended {
        conversation_id,
        seq,
        created_at: record.created_at,
        text: record.text.clone(),
        duplicate: true,
    };
    Some(CommittedEvent::Duplicate {
        appended,
        client_id: record.client_id.clone().unwrap_or_default(),
        origin: Some(origin),
    })
}

/// The site of a message or a conversation's change.
fn site_of(event: &CommittedEvent) -> Option<&str> {
    match event {
        CommittedEvent::Message { site, .. } => Some(site),
        CommittedEvent::Conversation { conversation, .. } | CommittedEvent::Rated { conversation } => {
            Some(&conversation.site)
        }
        _ => None,
    }
}

/// How often a relay compares the open conversations' positions in PostgreSQL with what it
/// handed over ([`SequenceGaps::sweep`]): a lost event that no later one reveals is delivered
/// two to three sweeps after its commit.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// How far back a sweep looks at conversations' changes: far longer than an event takes to
/// cross NATS, so a missed message is in the window of the sweeps that find it.
const SWEEP_WINDOW_MILLIS: i64 = 30_000;

/// The messages of the open conversations changed lately that NATS lost, read from PostgreSQL.
async fn sweep(messages: &impl MessageStore, gaps: &mut SequenceGaps) -> Vec<CommittedEvent> {
    if gaps.is_empty() {
        return Vec::new();
    }
    let positions = match messages.changed_within(SWEEP_WINDOW_MILLIS).await {
        Ok(positions) => positions,
        Err(error) => {
            tracing::warn!(%error, "the relay could not compare conversations' positions");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for missing in gaps.sweep(positions) {
        tracing::info!(
            conversation_id = missing.conversation_id,
            after = missing.after,
            "messages NATS missed are read from PostgreSQL"
        );
        found.extend(read_gap(messages, missing.conversation_id, missing.after, missing.before, missing.site).await);
    }
    found
}

/// The committed messages with `after < seq < before`, as events; none (logged) when the read
/// fails: the client's resume reads them then.
async fn read_gap(
    messages: &impl MessageStore,
    conversation_id: u64,
    after: u64,
    before: u64,
    site: String,
) -> Vec<CommittedEvent> {
    let wanted = usize::try_from(before - after - 1).unwrap_or(usize::MAX).min(GAP_READ_LIMIT);
    match messages.page_after(conversation_id, after, wanted).await {
        Ok(page) => page
            .into_iter()
            .filter(|(seq, _)| *seq < before)
            .map(|(seq, record)| CommittedEvent::Message {
                conversation_id,
                seq,
                site: site.clone(),
                day: crate::base::clock::day_of(record.created_at),
                record: std::sync::Arc::new(record),
                origin: None,
                bot_active: false,
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, conversation_id, after, before, "a gap in a conversation's relayed messages could not be read");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::delivery::{CommittedBatch, ObservedBatch};
    use crate::cluster::sequence_gaps::tests::message;

    fn seqs(events: &[CommittedEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|event| match event {
                CommittedEvent::Message { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_hand_over_keeps_the_order_and_says_whose_each_run_is() {
        let mut handed = HandOver::default();
        handed.push(message(1, 1), true);
        handed.push(message(1, 2), true);
        handed.extend([message(2, 1)], false);
        handed.push(message(1, 3), true);
        handed.observed.push(message(1, 4));
        let (sender, mut receiver) = tokio::sync::mpsc::channel(8);
        handed.send_to(&sender).await.unwrap();
        drop(sender);
        let mut runs = Vec::new();
        while let Some(published) = receiver.recv().await {
            let published = match published.downcast::<CommittedBatch>() {
                Ok(batch) => {
                    runs.push(("committed here", seqs(&batch.0)));
                    continue;
                }
                Err(published) => published,
            };
            let published = match published.downcast::<RelayedBatch>() {
                Ok(batch) => {
                    runs.push(("relayed", seqs(&batch.0)));
                    continue;
                }
                Err(published) => published,
            };
            let Ok(batch) = published.downcast::<ObservedBatch>() else { panic!("only the three kinds") };
            runs.push(("observed", seqs(&batch.0)));
        }
        let expected =
            [("committed here", vec![1, 2]), ("relayed", vec![1]), ("committed here", vec![3]), ("observed", vec![4])];
        assert_eq!(runs, expected);
    }
}
