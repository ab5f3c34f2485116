//! Web Push for agents (RFC 8030, with RFC 8291 encryption and RFC 8292 VAPID): an agent whose
//! console is closed still hears about a new conversation, a visitor's message in one of their
//! conversations, or a new lead (an offline message), through the browser's push service and
//! the console's service worker (`web/console/sw.js`).
//!
//! The dispatcher hands committed events to [`PushInbox::observe`], which only `try_send`s to a
//! bounded queue, so the chat path never waits for a push. One task takes the queue in order,
//! picks the agents to tell (never one whose console is connected: they see it already), writes
//! the notification in each subscription's language, and sends it encrypted for that browser.
//! A push service's 404 or 410 means the subscription is gone, and it is removed; a failure
//! that may pass (no connection, 429, 5xx) is retried a few times with back-off; anything else
//! is logged and dropped. Pushes are not durable: a restart forgets the ones in flight, as
//! they are only a nudge to open the console, where everything is.

pub mod encryption;
pub mod subscriptions;
pub mod vapid;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::base::language::Lang;
use crate::base::outbound::Clients;
use crate::chat::delivery::{CommittedEvent, ConversationEvent, Hub};
use crate::chat::message_store::MessageStore;
use crate::people::agent_administration::AgentAdministration;
use crate::protocol::SenderKind;
use crate::sites::store::SiteStore;
use crate::storage::StorageError;
use subscriptions::{PushSubscriptionStore, Subscription};
use vapid::VapidKey;

/// Notices waiting to be planned. A burst beyond it (thousands of visitors writing in the same
/// instant) drops notices rather than slowing the dispatcher; a push is only a nudge.
const NOTICE_QUEUE_CAPACITY: usize = 1024;

/// Pushes sent at once.
const MAX_IN_FLIGHT: usize = 16;

/// Attempts of one push before it is given up.
pub const MAX_ATTEMPTS: u32 = 4;

/// How long a push service keeps a message for a browser that is offline: after an hour a
/// "new message" is old news, and the console shows it anyway.
const TIME_TO_LIVE_SECS: u32 = 3600;

/// Conversations remembered between their creation and their first visitor message (which
/// becomes the "new conversation" notice with its text); cleared when full.
const MAX_FRESH_CONVERSATIONS: usize = 10_000;

/// How often a cluster node looks again whether any subscription exists: another node may have
/// stored the first one.
const SUBSCRIBED_RECHECK: Duration = Duration::from_secs(2);

/// What pushes read: the subscriptions and the key, conversations, sites and agents. Both the
/// appliance's `Store` and a cluster node's storage are one.
pub trait PushStore:
    PushSubscriptionStore + MessageStore + SiteStore + AgentAdministration + Clone + Send + Sync + 'static
{
}

impl<S> PushStore for S where
    S: PushSubscriptionStore + MessageStore + SiteStore + AgentAdministration + Clone + Send + Sync + 'static
{
}

/// How pushes are sent; `config.push` in production.
#[derive(Clone, Debug)]
pub struct PushSettings {
    /// Lets subscriptions use plain http endpoints on loopback (a test's push service).
    pub allow_loopback_endpoints: bool,
    /// The wait before the first retry; it doubles with each attempt.
    pub retry_base: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// The VAPID `sub` claim: how a push service's operator reaches whoever runs this kefu.
    pub subject: String,
}

/// What the HTTP API needs: the public key, the endpoint rule, and the note that a subscription
/// exists.
#[derive(Clone)]
pub struct Push {
    key: VapidKey,
    allow_loopback_endpoints: bool,
    subscribed: Arc<AtomicBool>,
}

impl Push {
    /// The VAPID public key (base64url) browsers subscribe with.
    pub fn public_key(&self) -> &str {
        self.key.public_key()
    }

    pub fn allow_loopback_endpoints(&self) -> bool {
        self.allow_loopback_endpoints
    }

    /// Called before a subscription is stored: from then on committed events are turned into
    /// notices (until then nobody could be pushed to, so the worker reads nothing for them).
    fn note_subscribing(&self) {
        self.subscribed.store(true, Ordering::Relaxed);
    }
}

/// The dispatcher's side of the queue.
pub struct PushInbox {
    queue: mpsc::Sender<Notice>,
    /// Whether any subscription may exist: false only while none was stored at start or since.
    /// It is never set back to false, so a notice is dropped only when nobody could receive it;
    /// without it, the worker would read storage twice for every visitor message.
    subscribed: Arc<AtomicBool>,
}

/// What happened, as far as notifications care.
#[derive(Clone, Debug)]
enum Notice {
    /// A visitor started a conversation that waits for an agent.
    Created { conversation_id: u64 },
    /// A visitor who talked to the bot asked for an agent.
    HandedOff { conversation_id: u64, site: String },
    /// A visitor's message.
    VisitorMessage { conversation_id: u64, site: String, sender_name: String, text: String },
    /// A message left through the offline form.
    Lead { id: u64, site: String, name: String, email: String, text: String },
}

impl PushInbox {
    /// Queues what notifications act on in a committed event, without waiting.
    pub fn observe(&self, event: &CommittedEvent) {
        if !self.subscribed.load(Ordering::Relaxed) {
            return;
        }
        let notice = match event {
            // The offline form's message is announced once, as its lead.
            CommittedEvent::Message { conversation_id, site, record, bot_active: false, .. }
                if record.sender_kind == SenderKind::Visitor
                    && !record.internal
                    && record.offline_message_id.is_none() =>
            {
                Notice::VisitorMessage {
                    conversation_id: *conversation_id,
                    site: site.clone(),
                    sender_name: record.sender_name.clone(),
                    text: record.text.clone(),
                }
            }
            CommittedEvent::Conversation { event: ConversationEvent::Created, conversation }
                if !conversation.bot_active && conversation.assigned_agent.is_none() =>
            {
                Notice::Created { conversation_id: conversation.id }
            }
            CommittedEvent::Conversation { event: ConversationEvent::HandedOff, conversation } => {
                Notice::HandedOff { conversation_id: conversation.id, site: conversation.site.clone() }
            }
            CommittedEvent::OfflineMessage(message) => Notice::Lead {
                id: message.id,
                site: message.site.clone(),
                name: message.name.clone(),
                email: message.email.clone(),
                text: message.text.clone(),
            },
            _ => return,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(notice) {
            tracing::warn!("push queue full; notice dropped");
        }
    }
}

impl PushInbox {}

/// Loads (or makes) the VAPID key and starts the push task, owned by `tasks`. On a cluster
/// (`shared`), other nodes store subscriptions too: whether any exists is looked at again every
/// [`SUBSCRIBED_RECHECK`].
pub async fn start<S: PushStore>(
    store: S,
    hub: Arc<Hub>,
    router: crate::routing::Router,
    settings: PushSettings,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
    shared: bool,
) -> Result<(Push, PushInbox), StorageError> {
    let key = vapid::load_or_create(&store).await?;
    let subscribed = Arc::new(AtomicBool::new(store.any_subscription().await?));
    let (queue, notices) = mpsc::channel(NOTICE_QUEUE_CAPACITY);
    let push = Push {
        key: key.clone(),
        allow_loopback_endpoints: settings.allow_loopback_endpoints,
        subscribed: subscribed.clone(),
    };
    if shared {
        tasks.spawn(recheck_subscribed(store.clone(), subscribed.clone(), shutdown.clone()));
    }
    tasks.spawn(run(Sender { store, hub, router, key, settings: Arc::new(settings) }, notices, shutdown));
    Ok((push, PushInbox { queue, subscribed }))
}

/// Sets `subscribed` once any subscription exists, looking every [`SUBSCRIBED_RECHECK`].
async fn recheck_subscribed(store: impl PushStore, subscribed: Arc<AtomicBool>, shutdown: CancellationToken) {
    while !subscribed.load(Ordering::Relaxed) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SUBSCRIBED_RECHECK) => {}
        }
        match store.any_subscription().await {
            Ok(true) => subscribed.store(true, Ordering::Relaxed),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "looking for push subscriptions failed"),
        }
    }
}

/// Everything a push needs, shared by the planner and the sends.
#[derive(Clone)]
struct Sender<S> {
    store: S,
    hub: Arc<Hub>,
    /// Which agents are present through other nodes of a cluster.
    router: crate::routing::Router,
    key: VapidKey,
    settings: Arc<PushSettings>,
}

/// Which notification a push carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    NewConversation,
    HandedOff,
    NewMessage,
    NewLead,
}

/// A notification to write for some agents.
struct Planned {
    kind: Kind,
    site: String,
    /// The conversation it opens, or the lead's id.
    subject_id: u64,
    /// Who wrote, when it says.
    from: String,
    text: String,
    /// One agent (a message in their conversation), or `None` for every agent of the site.
    agent: Option<u64>,
}

/// The payload the service worker shows.
#[derive(Debug, Serialize)]
struct Payload {
    title: String,
    body: String,
    /// Where a click takes the agent.
    url: String,
    /// Notifications with the same tag replace each other (one per conversation).
    tag: String,
}

impl Planned {
    fn payload(&self, language: Lang, site_name: &str) -> Payload {
        let chinese = language == Lang::Zh;
        let text = if self.text.trim().is_empty() {
            if chinese { "[附件]".to_owned() } else { "[attachment]".to_owned() }
        } else {
            shorten(&self.text)
        };
        let with_sender = |text: String| if self.from.is_empty() { text } else { format!("{}: {text}", self.from) };
        let (title, body) = match (self.kind, chinese) {
            (Kind::NewConversation, false) => (format!("New conversation · {site_name}"), with_sender(text)),
            (Kind::NewConversation, true) => (format!("新会话 · {site_name}"), with_sender(text)),
            (Kind::HandedOff, false) => {
                (format!("New conversation · {site_name}"), "A visitor asks for an agent".to_owned())
            }
            (Kind::HandedOff, true) => (format!("新会话 · {site_name}"), "访客请求人工客服".to_owned()),
            (Kind::NewMessage, false) => (format!("New message · {site_name}"), with_sender(text)),
            (Kind::NewMessage, true) => (format!("新消息 · {site_name}"), with_sender(text)),
            (Kind::NewLead, false) => (format!("New offline message · {site_name}"), with_sender(text)),
            (Kind::NewLead, true) => (format!("新留言 · {site_name}"), with_sender(text)),
        };
        let (url, tag) = match self.kind {
            Kind::NewLead => ("/console".to_owned(), format!("kefu-lead-{}", self.subject_id)),
            _ => (format!("/console#conversation={}", self.subject_id), format!("kefu-{}", self.subject_id)),
        };
        Payload { title, body, url, tag }
    }

    /// The `Topic` header: a push service keeps only the newest undelivered message per topic.
    fn topic(&self) -> String {
        match self.kind {
            Kind::NewLead => format!("lead-{}", self.subject_id),
            _ => format!("conversation-{}", self.subject_id),
        }
    }

    /// The `Urgency` header (RFC 8030 section 5.3): a waiting visitor is worth waking a phone.
    fn urgency(&self) -> &'static str {
        match self.kind {
            Kind::NewLead => "normal",
            _ => "high",
        }
    }
}

/// The start of a message on one line, as the console's lists show it, marked when cut.
fn shorten(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let preview = crate::chat::delivery::preview(&text);
    if preview.len() < text.len() { format!("{preview}…") } else { text }
}

async fn run<S: PushStore>(sender: Sender<S>, mut notices: mpsc::Receiver<Notice>, shutdown: CancellationToken) {
    let clients = match Clients::new(sender.settings.timeout) {
        Ok(clients) => clients,
        Err(error) => {
            tracing::error!(%error, "push notifications are off: the HTTP client could not be built");
            return;
        }
    };
    let mut fresh: HashSet<u64> = HashSet::new();
    let mut in_flight: JoinSet<()> = JoinSet::new();
    loop {
        let notice = tokio::select! {
            _ = shutdown.cancelled() => break,
            notice = notices.recv() => match notice {
                Some(notice) => notice,
                None => break,
            },
        };
        while in_flight.try_join_next().is_some() {}
        let planned = match plan(&sender.store, notice, &mut fresh).await {
            Ok(Some(planned)) => planned,
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(%error, "planning a push failed");
                continue;
            }
        };
        let targets = match targets(&sender, &planned).await {
            Ok(targets) => targets,
            Err(error) => {
                tracing::error!(%error, "reading push subscriptions failed");
                continue;
            }
        };
        for (subscription, site_name) in targets {
            while in_flight.len() >= MAX_IN_FLIGHT {
                in_flight.join_next().await;
            }
            let payload = planned.payload(subscription.language, &site_name);
            let request = PushRequest { topic: planned.topic(), urgency: planned.urgency() };
            let (sender, clients, shutdown) = (sender.clone(), clients.clone(), shutdown.clone());
            in_flight.spawn(async move { deliver(&sender, &clients, subscription, payload, request, shutdown).await });
        }
    }
    in_flight.shutdown().await;
}

/// Turns a notice into a notification, or nothing (a message nobody is told about).
async fn plan(
    store: &impl PushStore,
    notice: Notice,
    fresh: &mut HashSet<u64>,
) -> Result<Option<Planned>, StorageError> {
    Ok(match notice {
        Notice::Created { conversation_id } => {
            if fresh.len() >= MAX_FRESH_CONVERSATIONS {
                fresh.clear();
            }
            fresh.insert(conversation_id);
            None
        }
        Notice::HandedOff { conversation_id, site } => Some(Planned {
            kind: Kind::HandedOff,
            site,
            subject_id: conversation_id,
            from: String::new(),
            text: String::new(),
            agent: None,
        }),
        Notice::VisitorMessage { conversation_id, site, sender_name, text } => {
            let planned =
                |kind, agent| Planned { kind, site, subject_id: conversation_id, from: sender_name, text, agent };
            if fresh.remove(&conversation_id) {
                Some(planned(Kind::NewConversation, None))
            } else {
                let conversation = store.conversation(conversation_id).await?;
                conversation
                    .and_then(|conversation| conversation.assigned_agent)
                    .map(|agent| planned(Kind::NewMessage, Some(agent)))
            }
        }
        Notice::Lead { id, site, name, email, text } => {
            let from = if name.trim().is_empty() { email } else { name };
            Some(Planned { kind: Kind::NewLead, site, subject_id: id, from, text, agent: None })
        }
    })
}

/// The subscriptions to push to, with the site's name: agents of the site (or the one agent),
/// enabled, and with no console connected (through any node).
async fn targets(
    sender: &Sender<impl PushStore>,
    planned: &Planned,
) -> Result<Vec<(Subscription, String)>, StorageError> {
    let (site, agent) = (planned.site.as_str(), planned.agent);
    let store = &sender.store;
    let site_name = SiteStore::get(store, site).await?.map_or_else(|| site.to_owned(), |found| found.name);
    let agents = match agent {
        Some(id) => crate::people::agent_store::AgentStore::get(store, id).await?.into_iter().collect(),
        None => AgentAdministration::list(store).await?,
    };
    let mut found = Vec::new();
    for agent in agents.into_iter().filter(|agent| !agent.disabled && agent.serves_site(site)) {
        // One whose console is connected sees it already: here, or through another node.
        if !sender.hub.agent_connections(agent.id).is_empty() || sender.router.present_elsewhere(agent.id) {
            continue;
        }
        for subscription in store.subscriptions_of(agent.id).await? {
            found.push((subscription, site_name.clone()));
        }
    }
    Ok(found)
}

/// The headers that differ per notification.
struct PushRequest {
    topic: String,
    urgency: &'static str,
}

/// How one attempt ended.
enum Attempt {
    Delivered,
    /// 404 or 410: the browser dropped the subscription.
    Gone,
    /// Worth another try later.
    Retry(String),
    /// Will not work however often it is tried.
    Failed(String),
}

/// Sends one push, with retries; removes the subscription when the push service says it is gone.
async fn deliver(
    sender: &Sender<impl PushStore>,
    clients: &Clients,
    subscription: Subscription,
    payload: Payload,
    request: PushRequest,
    shutdown: CancellationToken,
) {
    let agent_id = subscription.agent_id;
    for attempt in 1..=MAX_ATTEMPTS {
        match send_once(sender, clients, &subscription, &payload, &request).await {
            Attempt::Delivered => {
                tracing::debug!(agent_id, attempt, "push delivered");
                return;
            }
            Attempt::Gone => {
                tracing::info!(agent_id, "the push service dropped a subscription; removing it");
                let removed = sender.store.remove_subscription(agent_id, subscription.endpoint.clone()).await;
                if let Err(error) = removed.or_else(|error| match error {
                    subscriptions::SubscriptionError::NotFound => Ok(()),
                    other => Err(other),
                }) {
                    tracing::error!(%error, agent_id, "removing a dropped push subscription failed");
                }
                return;
            }
            Attempt::Failed(error) => {
                tracing::warn!(%error, agent_id, attempt, "push refused; not retried");
                return;
            }
            Attempt::Retry(error) if attempt == MAX_ATTEMPTS => {
                tracing::warn!(%error, agent_id, attempt, "push failed; giving up");
                return;
            }
            Attempt::Retry(error) => {
                tracing::info!(%error, agent_id, attempt, "push failed; retrying");
                let wait = crate::base::outbound::backoff(sender.settings.retry_base, attempt);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

async fn send_once(
    sender: &Sender<impl PushStore>,
    clients: &Clients,
    subscription: &Subscription,
    payload: &Payload,
    request: &PushRequest,
) -> Attempt {
    let allow_loopback = sender.settings.allow_loopback_endpoints;
    let url = match subscriptions::check_endpoint(&subscription.endpoint, allow_loopback) {
        Ok(url) => url,
        Err(error) => return Attempt::Failed(error.to_string()),
    };
    // Loopback endpoints (a test's push service) only when the setting allows them.
    let client = clients.pick(allow_loopback && subscriptions::is_loopback(&url));
    let (public_key, auth_secret) = match subscription.keys() {
        Ok(keys) => keys,
        Err(error) => return Attempt::Failed(error.to_string()),
    };
    let body = serde_json::to_vec(payload).expect("a payload always serializes");
    let body = match encryption::encrypt(&body, &public_key, &auth_secret) {
        Ok(body) => body,
        Err(error) => return Attempt::Failed(error.to_string()),
    };
    let now_secs = crate::base::clock::now_millis() / 1000;
    let response = client
        .post(url.clone())
        .header("authorization", sender.key.authorization(&url, &sender.settings.subject, now_secs))
        .header("content-encoding", "aes128gcm")
        .header("content-type", "application/octet-stream")
        .header("ttl", TIME_TO_LIVE_SECS.to_string())
        .header("urgency", request.urgency)
        .header("topic", &request.topic)
        .body(body)
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Attempt::Delivered,
                404 | 410 => Attempt::Gone,
                429 | 500..=599 => Attempt::Retry(format!("the push service answered {status}")),
                _ => Attempt::Failed(format!("the push service answered {status}")),
            }
        }
        Err(error) => Attempt::Retry(crate::base::outbound::describe_error(&error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(kind: Kind, text: &str) -> Planned {
        Planned { kind, site: "s".into(), subject_id: 7, from: "Ann".into(), text: text.into(), agent: None }
    }

    #[test]
    fn notifications_speak_the_subscription_language() {
        let english = planned(Kind::NewMessage, "Where is my order?").payload(Lang::En, "Shop");
        assert_eq!(english.title, "New message · Shop");
        assert_eq!(english.body, "Ann: Where is my order?");
        assert_eq!(english.url, "/console#conversation=7");
        assert_eq!(english.tag, "kefu-7");
        let chinese = planned(Kind::NewLead, "").payload(Lang::Zh, "商店");
        assert_eq!(chinese.title, "新留言 · 商店");
        assert_eq!(chinese.body, "Ann: [附件]");
        assert_eq!(chinese.url, "/console");
    }

    #[test]
    fn long_messages_are_cut_to_a_preview() {
        let long = "长".repeat(500);
        let body = planned(Kind::NewConversation, &long).payload(Lang::Zh, "s").body;
        assert_eq!(body, format!("Ann: {}…", crate::chat::delivery::preview(&long)));
        assert_eq!(shorten("a\n\n  b"), "a b");
    }
}
