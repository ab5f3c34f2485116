//! Delivery: who is connected, what they are subscribed to, and the dispatcher that turns
//! committed events into frames on their outbound queues.
//!
//! The writer hands each committed batch to the dispatcher task, which handles events in commit
//! order. Each frame is encoded once and the bytes shared by every recipient. A connection's
//! outbound queue is bounded: when it is full the connection is marked overflowed and closes
//! itself with a resume code, so a slow reader never stalls the dispatcher or anyone else.
//!
//! The queue holds a buffer only while frames wait in it: an idle connection's queue is a few
//! words inside its [`ConnectionHandle`], which matters at tens of thousands of connections.
//!
//! **Invariant:** per conversation, frames reach a connection's queue in sequence order, because
//! one task dispatches every committed event in commit order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::base::secrets::TokenDigest;
use crate::chat::conversations::Conversation;
use crate::chat::messages::{Appended, MessageRecord, message_view};
use crate::protocol::{ActivityItem, ConversationView, ErrorCode, ParticipantView, ServerFrame, close_code};
use crate::routing::{Router, RoutingEvent};
use crate::search::Search;
use crate::storage::writer::Published;

/// Committed batches waiting for the dispatcher. Small: each holds a whole commit's events, and a
/// full queue makes the writer wait, which is the backpressure we want.
pub const COMMITTED_QUEUE_CAPACITY: usize = 64;

/// The events of one commit, in commit order.
pub struct CommittedBatch(pub Vec<CommittedEvent>);

/// Events another node of a cluster committed, relayed from NATS (`cluster::events::relay`): the
/// dispatcher delivers them to this node's connections (and, on a cluster node, to its routing,
/// which learns every node's conversations), since the bot and push notifications act once,
/// where the change was committed.
pub struct RelayedBatch(pub Vec<CommittedEvent>);

/// This node's own commits that reached its connections already, as another node's (a gap's read
/// in the relay brought them first): only the bot and push notifications still act on them.
pub struct ObservedBatch(pub Vec<CommittedEvent>);

/// Something that became durable and must reach the people concerned.
#[derive(Clone)]
pub enum CommittedEvent {
    Message {
        conversation_id: u64,
        seq: u64,
        /// The conversation's site, whose agents get an `activity` frame for their lists.
        site: String,
        /// The day shard the message is stored in (the conversation's day, which a message never
        /// moves back from, so not always the day of its own time).
        day: u32,
        record: Arc<MessageRecord>,
        origin: Option<ConnectionHandle>,
        /// Whether the bot answers in the conversation (as of this message), so the dispatcher
        /// hands the bot only the messages it acts on.
        bot_active: bool,
    },
    /// A resend of a stored message: only the sender hears about it again.
    Duplicate {
        appended: Appended,
        client_id: String,
        origin: Option<ConnectionHandle>,
    },
    Conversation {
        event: ConversationEvent,
        conversation: Conversation,
    },
    Read {
        conversation_id: u64,
        reader: ParticipantView,
        seq: u64,
    },
    /// A visitor left a message for when an agent is back (webhooks carry it).
    OfflineMessage(crate::chat::offline_messages::OfflineMessage),
    /// A lead was created, changed or erased: the site's agents get a `lead` frame.
    Lead {
        event: crate::chat::leads::LeadEvent,
        lead: crate::chat::leads::Lead,
    },
    /// A visitor rated a closed conversation (webhooks carry it).
    Rated {
        conversation: Conversation,
    },
    /// An agent's rights ended or changed: their live connections (of one session, or all) close.
    AccessEnded(AccessEnded),
    /// API tokens were revoked (one by an admin, or a deleted site's): their event subscriptions end.
    ApiTokensRevoked(Vec<u64>),
    /// A visitor's data was erased: their live connections close, and the widget starts afresh.
    VisitorErased(VisitorErased),
}

/// The visitor whose data was erased (`history::visitor_data`), between cluster nodes too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VisitorErased {
    pub visitor_id: u64,
}

/// Whose live connections close, and why (see [`crate::people::agents`]: every use case that ends or
/// changes an agent's rights publishes one, whichever transport called it). As JSON between
/// cluster nodes, the session's digest is a list of its 32 bytes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AccessEnded {
    pub agent_id: u64,
    /// Only the connections opened with this session; `None` for all of the agent's.
    pub session: Option<TokenDigest>,
    pub reason: AccessEndReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessEndReason {
    LoggedOut,
    PasswordChanged,
    Disabled,
    /// Role or sites changed: reconnect to get the new rights.
    RightsChanged,
    /// Two-factor login was reset or became required: log in again (and enrol).
    TwoFactorChanged,
}

impl AccessEndReason {
    /// The close code and the message of the error frame sent before the close.
    fn close(self) -> (u16, &'static str) {
        match self {
            AccessEndReason::LoggedOut => (close_code::UNAUTHENTICATED, "you logged out"),
            AccessEndReason::PasswordChanged => {
                (close_code::UNAUTHENTICATED, "your password was changed; log in again")
            }
            AccessEndReason::Disabled => (close_code::FORBIDDEN, "your account was disabled"),
            AccessEndReason::RightsChanged => (close_code::RESTARTING, "your account changed; reconnect"),
            AccessEndReason::TwoFactorChanged => {
                (close_code::UNAUTHENTICATED, "your two-factor login changed; log in again")
            }
        }
    }
}

/// What happened to a conversation; as JSON (between cluster nodes) `{"event": "assigned",
/// "previous": 3}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConversationEvent {
    Created,
    Assigned {
        previous: Option<u64>,
    },
    Closed {
        previous: Option<u64>,
    },
    /// Back in the queue after a transfer to a team.
    Queued {
        previous: Option<u64>,
    },
    /// A closed conversation opened again, assigned to the agent who reopened it.
    Reopened,
    /// The visitor asked for a human: the bot stopped and the conversation joins the queue.
    HandedOff,
}

impl ConversationEvent {
    fn name(self) -> &'static str {
        match self {
            ConversationEvent::Created => "created",
            ConversationEvent::Assigned { .. } => "assigned",
            ConversationEvent::Closed { .. } => "closed",
            ConversationEvent::Queued { .. } => "queued",
            ConversationEvent::Reopened => "reopened",
            ConversationEvent::HandedOff => "handed_off",
        }
    }
}

/// What the dispatcher (or another connection) puts on a connection's queue.
#[derive(Debug)]
pub enum Outbound {
    /// A frame with a place in a conversation's sequence (a message or the sender's ack);
    /// the connection writes it only if it is newer than what it has already written.
    Sequenced { conversation_id: u64, seq: u64, frame: Bytes },
    /// The sender's own `ack`: it has a place in the sequence like a message, but the
    /// connection was not sent the `message` itself (a later `resume` may ask for it).
    Ack { conversation_id: u64, seq: u64, frame: Bytes },
    /// Any other frame.
    Frame(Bytes),
    /// The server subscribed the connection to a conversation whose messages up to `last_seq`
    /// the connection has not been sent.
    Subscribed { conversation_id: u64, last_seq: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Visitor,
    Agent,
}

/// A connection as others see it: where to put its frames.
#[derive(Clone, Debug)]
pub struct ConnectionHandle {
    inner: Arc<ConnectionShared>,
}

#[derive(Debug)]
struct ConnectionShared {
    id: u64,
    role: Role,
    /// Frames waiting for the connection's task; at most `capacity`. Its buffer is released
    /// whenever the task empties it.
    queue: Mutex<VecDeque<Outbound>>,
    capacity: usize,
    /// Wakes the connection's task when a frame is queued.
    queued: Notify,
    /// Set when the connection's task stopped reading; frames pushed after that are dropped.
    receiver_gone: AtomicBool,
    /// Set when a frame could not be queued; the connection then closes with `SLOW_CONSUMER`.
    overflowed: AtomicBool,
    /// A close code someone else asked for (a block closes the visitor's connections); 0 for none.
    close_requested: AtomicU16,
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// The reading end of a connection's outbound queue, owned by the connection's task.
pub struct OutboundReceiver {
    shared: Arc<ConnectionShared>,
}

impl OutboundReceiver {
    /// The next queued item, waiting until there is one.
    pub async fn recv(&mut self) -> Outbound {
        loop {
            if let Some(outbound) = self.try_recv() {
                return outbound;
            }
            // A push between `try_recv` and here leaves a permit, so `notified` returns at once.
            self.shared.queued.notified().await;
        }
    }

    /// The next queued item, if there is one.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut queue = self.shared.queue.lock();
        let next = queue.pop_front();
        if queue.is_empty() && queue.capacity() > 0 {
            *queue = VecDeque::new();
        }
        next
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        let mut queue = self.shared.queue.lock();
        self.shared.receiver_gone.store(true, Ordering::Relaxed);
        *queue = VecDeque::new();
    }
}

impl ConnectionHandle {
    /// A new connection whose queue holds at most `capacity` items, and the queue's reading end.
    pub fn new(role: Role, capacity: usize) -> (ConnectionHandle, OutboundReceiver) {
        let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(ConnectionShared {
            id,
            role,
            queue: Mutex::new(VecDeque::new()),
            capacity,
            queued: Notify::new(),
            receiver_gone: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            close_requested: AtomicU16::new(0),
        });
        (ConnectionHandle { inner: shared.clone() }, OutboundReceiver { shared })
    }

    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub fn role(&self) -> Role {
        self.inner.role
    }

    /// Queues a frame without waiting; a full queue marks the connection overflowed. A frame for
    /// a connection whose task has ended is dropped.
    pub fn push(&self, outbound: Outbound) {
        let mut queue = self.inner.queue.lock();
        if self.inner.receiver_gone.load(Ordering::Relaxed) {
            return;
        }
        if queue.len() >= self.inner.capacity {
            drop(queue);
            self.inner.overflowed.store(true, Ordering::Relaxed);
            return;
        }
        queue.push_back(outbound);
        drop(queue);
        self.inner.queued.notify_one();
    }

    pub fn overflowed(&self) -> bool {
        self.inner.overflowed.load(Ordering::Relaxed)
    }

    /// Asks the connection to send `last_frame` and close with `code`.
    pub fn request_close(&self, code: u16, last_frame: Bytes) {
        self.inner.close_requested.store(code, Ordering::Relaxed);
        // The frame also wakes the connection task; a full queue closes it anyway.
        self.push(Outbound::Frame(last_frame));
    }

    /// The close code requested with [`ConnectionHandle::request_close`], if any.
    pub fn close_requested(&self) -> Option<u16> {
        Some(self.inner.close_requested.load(Ordering::Relaxed)).filter(|code| *code != 0)
    }

    /// Frames waiting on this connection's queue.
    pub fn n_queued(&self) -> usize {
        self.inner.queue.lock().len()
    }
}

impl PartialEq for ConnectionHandle {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}

/// How an agent connection is registered: the agent, the login session it was opened with, and
/// the sites whose events it gets.
#[derive(Clone, Copy)]
pub struct AgentRegistration<'a> {
    pub agent_id: u64,
    pub session: Option<&'a TokenDigest>,
    pub sites: &'a [String],
}

/// Registries of live connections.
#[derive(Default)]
pub struct Hub {
    conversations: DashMap<u64, Vec<ConnectionHandle>>,
    visitors: DashMap<u64, Vec<ConnectionHandle>>,
    agents: DashMap<u64, Vec<ConnectionHandle>>,
    site_agents: DashMap<String, Vec<ConnectionHandle>>,
    /// Visitor connections by site, for the site's status (`sites::status`).
    site_visitors: DashMap<String, Vec<ConnectionHandle>>,
    /// Agent connections by the login session they were opened with, so a logout closes them.
    agent_sessions: DashMap<TokenDigest, Vec<ConnectionHandle>>,
    /// Connections of every role, for shutdown.
    all: DashMap<u64, ConnectionHandle>,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    pub fn register_visitor(&self, visitor_id: u64, site: &str, handle: &ConnectionHandle) {
        push_unique(&mut self.visitors.entry(visitor_id).or_default(), handle);
        push_unique(&mut self.site_visitors.entry(site.to_owned()).or_default(), handle);
        self.all.insert(handle.id(), handle.clone());
    }

    pub fn register_agent(&self, agent: AgentRegistration<'_>, handle: &ConnectionHandle) {
        let AgentRegistration { agent_id, session, sites } = agent;
        push_unique(&mut self.agents.entry(agent_id).or_default(), handle);
        if let Some(session) = session {
            push_unique(&mut self.agent_sessions.entry(*session).or_default(), handle);
        }
        for site in sites {
            push_unique(&mut self.site_agents.entry(site.clone()).or_default(), handle);
        }
        self.all.insert(handle.id(), handle.clone());
    }

    /// Subscribes a connection to a conversation's frames. Returns false if it already was.
    pub fn subscribe(&self, conversation_id: u64, handle: &ConnectionHandle) -> bool {
        push_unique(&mut self.conversations.entry(conversation_id).or_default(), handle)
    }

    /// Removes a connection from every registry it is in; `visitor` is the visitor's id and site.
    pub fn unregister(
        &self,
        handle: &ConnectionHandle,
        visitor: Option<(u64, &str)>,
        agent: Option<AgentRegistration<'_>>,
        conversations: impl Iterator<Item = u64>,
    ) {
        for conversation_id in conversations {
            remove_from(&self.conversations, &conversation_id, handle);
        }
        if let Some((visitor_id, site)) = visitor {
            remove_from(&self.visitors, &visitor_id, handle);
            remove_from(&self.site_visitors, site, handle);
        }
        if let Some(AgentRegistration { agent_id, session, sites }) = agent {
            remove_from(&self.agents, &agent_id, handle);
            if let Some(session) = session {
                remove_from(&self.agent_sessions, session, handle);
            }
            for site in sites {
                remove_from(&self.site_agents, site, handle);
            }
        }
        self.all.remove(&handle.id());
    }

    pub fn unsubscribe(&self, conversation_id: u64, handle: &ConnectionHandle) {
        remove_from(&self.conversations, &conversation_id, handle);
    }

    /// Connections subscribed to a conversation (a snapshot).
    pub fn subscribers(&self, conversation_id: u64) -> Vec<ConnectionHandle> {
        self.conversations.get(&conversation_id).map(|entry| entry.clone()).unwrap_or_default()
    }

    pub fn visitor_connections(&self, visitor_id: u64) -> Vec<ConnectionHandle> {
        self.visitors.get(&visitor_id).map(|entry| entry.clone()).unwrap_or_default()
    }

    pub fn agent_connections(&self, agent_id: u64) -> Vec<ConnectionHandle> {
        self.agents.get(&agent_id).map(|entry| entry.clone()).unwrap_or_default()
    }

    /// Closes the connections an [`AccessEnded`] names, each after an error frame saying why.
    pub fn end_access(&self, ended: &AccessEnded) {
        let connections = match &ended.session {
            Some(session) => self.agent_sessions.get(session).map(|entry| entry.clone()).unwrap_or_default(),
            None => self.agent_connections(ended.agent_id),
        };
        let (code, message) = ended.reason.close();
        let frame = ServerFrame::Error { code: ErrorCode::Forbidden, message, client_id: None }.encode();
        for connection in connections {
            connection.request_close(code, frame.clone());
        }
    }

    /// Closes an erased visitor's live connections, after an error frame saying why; their token
    /// is gone, so the widget starts afresh.
    pub fn end_visitor(&self, erased: VisitorErased) {
        let frame = crate::protocol::error_frame(ErrorCode::Forbidden, "your data was erased", None);
        for connection in self.visitor_connections(erased.visitor_id) {
            connection.request_close(crate::protocol::close_code::UNAUTHENTICATED, frame.clone());
        }
    }

    pub fn site_agent_connections(&self, site: &str) -> Vec<ConnectionHandle> {
        self.site_agents.get(site).map(|entry| entry.clone()).unwrap_or_default()
    }

    pub fn all_connections(&self) -> Vec<ConnectionHandle> {
        self.all.iter().map(|entry| entry.value().clone()).collect()
    }

    /// Frames waiting on every connection's queue (for metrics; walks all connections).
    pub fn n_queued_frames(&self) -> usize {
        self.all.iter().map(|entry| entry.value().n_queued()).sum()
    }

    pub fn n_connections(&self) -> usize {
        self.all.len()
    }

    /// The sites with at least one visitor connected.
    pub fn sites_with_visitors(&self) -> Vec<String> {
        self.site_visitors.iter().filter(|entry| !entry.value().is_empty()).map(|entry| entry.key().clone()).collect()
    }

    /// Sends a frame to every visitor connection of a site; `frame` is encoded only if there is one.
    pub fn broadcast_to_site_visitors(&self, site: &str, frame: impl FnOnce() -> Bytes) {
        if let Some(connections) = self.site_visitors.get(site).filter(|connections| !connections.is_empty()) {
            let frame = frame();
            for connection in connections.iter() {
                connection.push(Outbound::Frame(frame.clone()));
            }
        }
    }

    /// Sends a frame to every agent connection of a site; `frame` is encoded only if there is one.
    pub fn broadcast_to_site_agents(&self, site: &str, frame: impl FnOnce() -> Bytes) {
        if let Some(connections) = self.site_agents.get(site).filter(|connections| !connections.is_empty()) {
            let frame = frame();
            for connection in connections.iter() {
                connection.push(Outbound::Frame(frame.clone()));
            }
        }
    }
}

fn push_unique(list: &mut Vec<ConnectionHandle>, handle: &ConnectionHandle) -> bool {
    if list.iter().any(|existing| existing == handle) {
        return false;
    }
    list.push(handle.clone());
    true
}

fn remove_from<K, Q>(map: &DashMap<K, Vec<ConnectionHandle>>, key: &Q, handle: &ConnectionHandle)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let now_empty = match map.get_mut(key) {
        Some(mut list) => {
            list.retain(|existing| existing != handle);
            list.is_empty()
        }
        None => false,
    };
    if now_empty {
        map.remove_if(key, |_, list| list.is_empty());
    }
}

/// The shortest time between two `activity` frames to a site's agents. A quiet site's message
/// goes out at once; on a busy one the items of the commits in between wait for the next frame,
/// so an agent gets at most ten a second however many commits there are.
const ACTIVITY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Most items in one `activity` frame; more go out in several frames back to back. An item is at
/// most about 450 bytes of JSON, so a frame stays far below a connection's write buffer limit.
const ACTIVITY_MAX_ITEMS: usize = 100;

/// Consumes committed batches until the writer stops.
/// Committed messages are also offered to the search indexer (without waiting), and the gRPC
/// feed's events handed to its listeners (without waiting).
#[allow(clippy::too_many_arguments)]
pub async fn run_dispatcher(
    mut committed: mpsc::Receiver<Published>,
    hub: Arc<Hub>,
    router: Router,
    bot: crate::bot::BotInbox,
    push: crate::push::PushInbox,
    epoch: u64,
    search: Option<Search>,
    feed: crate::webhooks::feed::Listeners,
    route_relayed: bool,
) {
    let mut activity = SiteActivity::default();
    let mut last_broadcast: Option<tokio::time::Instant> = None;
    loop {
        // With items waiting, wait for the next batch only until their frame is due.
        let due = last_broadcast.filter(|_| !activity.is_empty()).map(|at| at + ACTIVITY_INTERVAL);
        let received = match due {
            Some(due) => tokio::time::timeout_at(due, committed.recv()).await.ok(),
            None => Some(committed.recv().await),
        };
        match received {
            Some(None) => break,
            Some(Some(published)) => match published.downcast::<CommittedBatch>() {
                Ok(batch) => {
                    for event in batch.0 {
                        bot.observe(&event);
                        push.observe(&event);
                        if let (Some(search), CommittedEvent::Message { conversation_id, seq, day, record, .. }) =
                            (&search, &event)
                        {
                            search.offer(*conversation_id, *seq, *day, record.clone());
                        }
                        if let CommittedEvent::ApiTokensRevoked(tokens) = &event {
                            feed.end_tokens(tokens);
                        }
                        if let Some(routing_event) = dispatch(&hub, epoch, event, &mut activity) {
                            router.send(routing_event).await;
                        }
                    }
                }
                // The gRPC feed's events of the same commit (published only while gRPC is on).
                Err(published) => match published.downcast::<crate::webhooks::feed::FeedBatch>() {
                    Ok(events) => feed.publish(*events),
                    Err(published) => match published.downcast::<RelayedBatch>() {
                        Ok(batch) => {
                            for event in batch.0 {
                                if let Some(routing_event) = dispatch(&hub, epoch, event, &mut activity) {
                                    if route_relayed {
                                        router.send(routing_event).await;
                                    }
                                }
                            }
                        }
                        Err(published) => match published.downcast::<ObservedBatch>() {
                            Ok(batch) => {
                                for event in batch.0 {
                                    bot.observe(&event);
                                    push.observe(&event);
                                }
                            }
                            Err(_) => tracing::error!("the dispatcher received something it does not know"),
                        },
                    },
                },
            },
            None => {}
        }
        let now = tokio::time::Instant::now();
        if !activity.is_empty() && last_broadcast.is_none_or(|at| now >= at + ACTIVITY_INTERVAL) {
            activity.broadcast(&hub);
            last_broadcast = Some(now);
        }
    }
    activity.broadcast(&hub);
    tracing::debug!("dispatcher stopped");
}

/// The `activity` items waiting for the next frame, by site: each site's agents get one frame
/// for all the messages since the last, rather than one per message (a busy site's agents
/// would otherwise get a frame for every message of every conversation).
#[derive(Default)]
struct SiteActivity {
    sites: Vec<(String, Vec<ActivityItem>)>,
}

impl SiteActivity {
    fn add(&mut self, site: String, item: ActivityItem) {
        match self.sites.iter_mut().find(|(known, _)| *known == site) {
            Some((_, items)) => items.push(item),
            None => self.sites.push((site, vec![item])),
        }
    }

    fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// Sends each site's waiting items to its agents, and empties the list.
    fn broadcast(&mut self, hub: &Hub) {
        for (site, items) in self.sites.drain(..) {
            for chunk in items.chunks(ACTIVITY_MAX_ITEMS) {
                hub.broadcast_to_site_agents(&site, || ServerFrame::Activity { items: chunk }.encode());
            }
        }
    }
}

/// Delivers one committed event to the connections it concerns and adds a message's item to the
/// batch's `activity`; returns what routing must hear.
fn dispatch(hub: &Hub, epoch: u64, event: CommittedEvent, activity: &mut SiteActivity) -> Option<RoutingEvent> {
    match event {
        CommittedEvent::Message { conversation_id, seq, site, record, origin, .. } => {
            let _deliver_span =
                tracing::debug_span!(parent: None, "deliver", trace_id = record.trace_id, conversation_id, seq)
                    .entered();
            activity.add(
                site,
                ActivityItem {
                    conversation_id,
                    seq,
                    sender_kind: record.sender_kind,
                    internal: record.internal,
                    preview: preview(&record.text).to_owned(),
                    created_at: record.created_at,
                },
            );
            // Encoded once, when the first subscriber other than the sender needs it.
            let mut message_frame: Option<Bytes> = None;
            let ack = origin.as_ref().map(|_| {
                ServerFrame::Ack {
                    client_id: record.client_id.as_deref().unwrap_or_default(),
                    conversation_id,
                    seq,
                    epoch,
                    created_at: record.created_at,
                    duplicate: false,
                    text: &record.text,
                }
                .encode()
            });
            let mut origin_reached = false;
            if let Some(subscribers) = hub.conversations.get(&conversation_id) {
                for connection in subscribers.iter() {
                    if Some(connection) == origin.as_ref() {
                        origin_reached = true;
                        let frame = ack.clone().expect("an origin always has an ack");
                        connection.push(Outbound::Ack { conversation_id, seq, frame });
                    } else if !(record.internal && connection.role() == Role::Visitor) {
                        let frame = message_frame
                            .get_or_insert_with(|| {
                                ServerFrame::Message(&message_view(conversation_id, seq, &record, epoch)).encode()
                            })
                            .clone();
                        connection.push(Outbound::Sequenced { conversation_id, seq, frame });
                    }
                }
            }
            if let (Some(origin), Some(ack), false) = (&origin, ack, origin_reached) {
                origin.push(Outbound::Ack { conversation_id, seq, frame: ack });
            }
            crate::base::metrics::METRICS.messages.inc();
            crate::base::metrics::METRICS.delivery_latency.observe(
                u64::try_from(crate::base::clock::now_millis().saturating_sub(record.created_at)).unwrap_or(0) * 1000,
            );
            tracing::debug!(trace_id = record.trace_id, conversation_id, seq, "message delivered");
        }
        CommittedEvent::Duplicate { appended, client_id, origin } => {
            if let Some(origin) = origin {
                let frame = ServerFrame::Ack {
                    client_id: &client_id,
                    conversation_id: appended.conversation_id,
                    seq: appended.seq,
                    epoch,
                    created_at: appended.created_at,
                    duplicate: true,
                    text: &appended.text,
                }
                .encode();
                origin.push(Outbound::Frame(frame));
            }
        }
        CommittedEvent::Conversation { event, conversation } => {
            let view: ConversationView = conversation.view(epoch);
            let frame = ServerFrame::Conversation { event: event.name(), conversation: &view }.encode();
            // The event first, then the subscription: a connection subscribed to a conversation
            // with messages replays them, and its client should know the conversation by then.
            for connection in hub.visitor_connections(conversation.visitor_id) {
                connection.push(Outbound::Frame(frame.clone()));
            }
            hub.broadcast_to_site_agents(&conversation.site, || frame);
            match event {
                ConversationEvent::Created => {
                    for connection in hub.visitor_connections(conversation.visitor_id) {
                        if hub.subscribe(conversation.id, &connection) {
                            connection.push(Outbound::Subscribed {
                                conversation_id: conversation.id,
                                last_seq: conversation.last_seq,
                            });
                        }
                    }
                    // An agent who started the conversation follows it from the start.
                    if let Some(agent_id) = conversation.assigned_agent {
                        subscribe_agent(hub, agent_id, &conversation);
                    }
                }
                ConversationEvent::Reopened => {
                    if let Some(agent_id) = conversation.assigned_agent {
                        subscribe_agent(hub, agent_id, &conversation);
                    }
                }
                ConversationEvent::Queued { .. } => {}
                ConversationEvent::Assigned { .. } => {
                    if let Some(agent_id) = conversation.assigned_agent {
                        subscribe_agent(hub, agent_id, &conversation);
                    }
                }
                ConversationEvent::Closed { .. } | ConversationEvent::HandedOff => {}
            }
            return Some(RoutingEvent::Conversation { event, conversation });
        }
        CommittedEvent::OfflineMessage(_) | CommittedEvent::Rated { .. } | CommittedEvent::ApiTokensRevoked(_) => {}
        CommittedEvent::Lead { event, lead } => {
            let view = lead.view();
            hub.broadcast_to_site_agents(&lead.site, || {
                ServerFrame::Lead { event: event.name(), lead: &view }.encode()
            });
        }
        CommittedEvent::AccessEnded(ended) => hub.end_access(&ended),
        CommittedEvent::VisitorErased(erased) => hub.end_visitor(erased),
        CommittedEvent::Read { conversation_id, reader, seq } => {
            let frame = ServerFrame::Read { conversation_id, reader, seq }.encode();
            for connection in hub.subscribers(conversation_id) {
                connection.push(Outbound::Frame(frame.clone()));
            }
        }
    }
    None
}

fn subscribe_agent(hub: &Hub, agent_id: u64, conversation: &Conversation) {
    for connection in hub.agent_connections(agent_id) {
        if hub.subscribe(conversation.id, &connection) {
            connection.push(Outbound::Subscribed { conversation_id: conversation.id, last_seq: conversation.last_seq });
        }
    }
}

/// Characters of a message shown in the agents' conversation lists.
const PREVIEW_CHARS: usize = 80;

pub fn preview(text: &str) -> &str {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Outbound {
        Outbound::Frame(Bytes::from_static(text.as_bytes()))
    }

    fn text_of(outbound: Outbound) -> Bytes {
        match outbound {
            Outbound::Frame(bytes) => bytes,
            other => panic!("not a plain frame: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_queue_delivers_in_order_and_wakes_its_reader() {
        let (handle, mut receiver) = ConnectionHandle::new(Role::Visitor, 4);
        let reader = tokio::spawn(async move { text_of(receiver.recv().await) });
        tokio::task::yield_now().await;
        handle.push(frame("first"));
        assert_eq!(reader.await.unwrap(), "first");

        let (handle, mut receiver) = ConnectionHandle::new(Role::Agent, 4);
        handle.push(frame("a"));
        handle.push(frame("b"));
        assert_eq!(handle.n_queued(), 2);
        assert_eq!(text_of(receiver.recv().await), "a");
        assert_eq!(text_of(receiver.try_recv().unwrap()), "b");
        assert!(receiver.try_recv().is_none());
        assert_eq!(handle.n_queued(), 0);
    }

    #[test]
    fn waiting_activity_gives_each_site_one_frame_in_store_order() {
        let hub = Hub::new();
        let (shop_agent, mut shop_queue) = ConnectionHandle::new(Role::Agent, 8);
        let (other_agent, mut other_queue) = ConnectionHandle::new(Role::Agent, 8);
        hub.register_agent(AgentRegistration { agent_id: 1, session: None, sites: &["shop".to_owned()] }, &shop_agent);
        hub.register_agent(
            AgentRegistration { agent_id: 2, session: None, sites: &["other".to_owned()] },
            &other_agent,
        );
        let item = |conversation_id, seq| ActivityItem {
            conversation_id,
            seq,
            sender_kind: crate::protocol::SenderKind::Visitor,
            internal: false,
            preview: format!("m{seq}"),
            created_at: 0,
        };
        let mut activity = SiteActivity::default();
        activity.add("shop".into(), item(1, 1));
        activity.add("other".into(), item(2, 1));
        activity.add("shop".into(), item(3, 1));
        activity.add("shop".into(), item(1, 2));
        activity.add("nobody".into(), item(4, 1));
        activity.broadcast(&hub);
        assert!(activity.is_empty());

        let shop: serde_json::Value = serde_json::from_slice(&text_of(shop_queue.try_recv().unwrap())).unwrap();
        let seen: Vec<(u64, u64)> = shop["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| (item["conversation_id"].as_u64().unwrap(), item["seq"].as_u64().unwrap()))
            .collect();
        assert_eq!(shop["type"], "activity");
        assert_eq!(seen, [(1, 1), (3, 1), (1, 2)]);
        assert!(shop_queue.try_recv().is_none(), "one frame for all waiting items");
        let other: serde_json::Value = serde_json::from_slice(&text_of(other_queue.try_recv().unwrap())).unwrap();
        assert_eq!(other["items"].as_array().unwrap().len(), 1);
        assert!(other_queue.try_recv().is_none());
    }

    #[test]
    fn many_waiting_items_are_split_into_frames_of_at_most_a_hundred() {
        let hub = Hub::new();
        let (agent, mut queue) = ConnectionHandle::new(Role::Agent, 8);
        hub.register_agent(AgentRegistration { agent_id: 1, session: None, sites: &["shop".to_owned()] }, &agent);
        let mut activity = SiteActivity::default();
        for seq in 1..=250 {
            activity.add(
                "shop".into(),
                ActivityItem {
                    conversation_id: 1,
                    seq,
                    sender_kind: crate::protocol::SenderKind::Visitor,
                    internal: false,
                    preview: "é".repeat(80),
                    created_at: 0,
                },
            );
        }
        activity.broadcast(&hub);
        let mut sizes = Vec::new();
        let mut seqs = Vec::new();
        while let Some(outbound) = queue.try_recv() {
            let frame: serde_json::Value = serde_json::from_slice(&text_of(outbound)).unwrap();
            let items = frame["items"].as_array().unwrap();
            sizes.push(items.len());
            seqs.extend(items.iter().map(|item| item["seq"].as_u64().unwrap()));
        }
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(seqs, (1..=250).collect::<Vec<u64>>());
    }

    #[test]
    fn a_full_queue_marks_the_connection_overflowed_and_keeps_what_it_holds() {
        let (handle, mut receiver) = ConnectionHandle::new(Role::Visitor, 2);
        handle.push(frame("1"));
        handle.push(frame("2"));
        assert!(!handle.overflowed());
        handle.push(frame("3"));
        assert!(handle.overflowed());
        assert_eq!(text_of(receiver.try_recv().unwrap()), "1");
        assert_eq!(text_of(receiver.try_recv().unwrap()), "2");
        assert!(receiver.try_recv().is_none());
    }

    #[test]
    fn an_emptied_queue_holds_no_buffer_and_a_closed_one_takes_nothing() {
        let (handle, mut receiver) = ConnectionHandle::new(Role::Visitor, 8);
        handle.push(frame("1"));
        assert!(handle.inner.queue.lock().capacity() > 0);
        receiver.try_recv().unwrap();
        assert_eq!(handle.inner.queue.lock().capacity(), 0);
        handle.push(frame("2"));
        drop(receiver);
        handle.push(frame("3"));
        assert_eq!(handle.n_queued(), 0);
        assert!(!handle.overflowed());
    }
}
