//! A client's session on one connection, independent of the transport that carries it.
//!
//! The transport (WebSocket or QUIC) reads frames and hands their text to
//! [`Session::on_frame`], hands everything from the connection's outbound queue to
//! [`Session::on_outbound`], and writes whatever frames those produce. The session runs the
//! pipeline for a send (decode → validate → filter → persist; delivery and the ack follow the
//! commit) and keeps, per subscribed conversation, the last sequence written to the client so
//! that a replay and the live stream join without a gap or a duplicate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::base::secrets::{self, TokenDigest};
use crate::chat::conversation_store::ConversationStore;
use crate::chat::conversations::{AssignWhen, Conversation, ConversationError};
use crate::chat::delivery::{AgentRegistration, ConnectionHandle, Outbound, OutboundReceiver};
use crate::chat::message_store::MessageStore;
use crate::chat::messages::{self, AppendError, NewMessage, Target};
use crate::net::AppState;
use crate::people::agent_store::AgentStore;
use crate::people::agents::{self, Agent, Role as AgentRole};
use crate::people::principal::Principal;
use crate::people::visitor_store::VisitorStore;
use crate::people::visitors;
use crate::protocol::{
    self, ClientFrame, ConversationView, ErrorCode, Hello, ParticipantView, Presence, ResumePoint, ServerFrame,
    close_code, error_frame,
};
use crate::routing::RoutingEvent;
use crate::sites::store::SiteStore;
use crate::sites::{self, SiteRuntime};
use crate::storage::StorageError;

/// How often a connection forwards a typing indicator per conversation.
const TYPING_INTERVAL: Duration = Duration::from_secs(1);

/// Most conversations listed in a visitor's `welcome`.
const MAX_WELCOME_CONVERSATIONS: usize = 50;

/// Most conversations in one frame of an agent's opening list (`welcome`, then `conversations`
/// frames). A conversation is about 250 bytes of JSON, so a page stays far below the frame and
/// write-buffer limits however many conversations are open; one unpaged `welcome` with 1,500
/// open conversations overflowed the socket's write buffer and the connection was dropped.
pub const WELCOME_PAGE_CONVERSATIONS: usize = 100;

/// Most frames a connection takes from its queue before writing them in one flush.
pub const FLUSH_FRAMES: usize = 64;

/// Why a connection must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

impl CloseReason {
    pub fn new(code: u16, reason: impl Into<String>) -> CloseReason {
        CloseReason { code, reason: reason.into() }
    }

    /// The client read too slowly (its queue overflowed, or a write stalled): it resumes later.
    pub fn slow_consumer() -> CloseReason {
        CloseReason::new(close_code::SLOW_CONSUMER, "too slow; reconnect and resume")
    }

    /// Whether frames still waiting to be written are worth sending before this close: not to a
    /// slow consumer, which would not read them and only delays its close.
    pub fn flushes_pending(&self) -> bool {
        self.code != close_code::SLOW_CONSUMER
    }
}

/// What the transport learned before `hello`.
pub enum Entry {
    /// `/ws/visitor?site=KEY`, the origin already checked against the site; the peer's address
    /// and User-Agent feed the agents' live visitor list.
    Visitor { site: Arc<SiteRuntime>, peer: Option<std::net::IpAddr>, user_agent: String },
    /// `/ws/agent`, with the session cookie's token if the browser sent one.
    Agent { cookie_token: Option<String> },
}

/// Where a session puts the frames it produces. A transport that carries each conversation on its
/// own stream (QUIC) learns from [`FrameSink::push_sequenced`] which conversation a frame belongs
/// to; the WebSocket transport writes everything in order on one socket (`Vec<Bytes>`).
pub trait FrameSink: Send {
    /// A frame outside any conversation's sequence (welcome, errors, events, typing, pong).
    fn push(&mut self, frame: Bytes);
    /// A frame in a conversation's ordered stream: a message, an ack, `replayed` or `reset`.
    fn push_sequenced(&mut self, conversation_id: u64, frame: Bytes);
    /// Frames waiting to be written.
    fn n_frames(&self) -> usize;
}

impl FrameSink for Vec<Bytes> {
    fn push(&mut self, frame: Bytes) {
        Vec::push(self, frame);
    }

    fn n_frames(&self) -> usize {
        self.len()
    }

    fn push_sequenced(&mut self, _conversation_id: u64, frame: Bytes) {
        Vec::push(self, frame);
    }
}

/// Frames tagged with the conversation whose ordered stream they belong to (`None`: the control stream).
impl FrameSink for Vec<(Option<u64>, Bytes)> {
    fn push(&mut self, frame: Bytes) {
        Vec::push(self, (None, frame));
    }

    fn push_sequenced(&mut self, conversation_id: u64, frame: Bytes) {
        Vec::push(self, (Some(conversation_id), frame));
    }

    fn n_frames(&self) -> usize {
        self.len()
    }
}

/// Where the client stands in one subscribed conversation.
struct Cursor {
    conversation_id: u64,
    /// Live frames at or below this sequence number are not written (the client has them, or
    /// was told about them in `welcome`, or a replay covered them).
    last_seq: u64,
    /// The highest sequence number this connection has written as a `message` (0 for none), so
    /// a second `resume` of the same conversation replays nothing twice. The sender's own `ack`
    /// does not count: a client may resume to get its own messages as `message` frames.
    written_through: u64,
}

impl Cursor {
    fn new(conversation_id: u64, last_seq: u64) -> Cursor {
        Cursor { conversation_id, last_seq, written_through: 0 }
    }
}

pub struct Session {
    app: AppState,
    principal: Principal,
    handle: ConnectionHandle,
    /// Site keys the connection is registered under for site-wide events (agents).
    agent_sites: Vec<String>,
    /// The login session an agent's connection was opened with (boxed: visitors have none), so
    /// a logout closes exactly its connections.
    agent_session: Option<Box<TokenDigest>>,
    cursors: Vec<Cursor>,
    /// Conversations the server subscribed this connection to (an assignment) whose messages so
    /// far it still has to send; [`Session::replay_subscribed`] sends them.
    pending_replays: Vec<u64>,
    typing_sent: Vec<(u64, Instant)>,
    /// The sites of conversations this staff connection has sent to (a conversation's site never
    /// changes), so a send to one of them checks access without a storage read.
    conversation_sites: Vec<(u64, String)>,
}

/// The most conversation sites a staff connection remembers; past this the oldest is forgotten.
const CONVERSATION_SITES_REMEMBERED: usize = 64;

impl Session {
    /// Authenticates `hello`, registers the connection, and returns the session with the frames
    /// to write first (`welcome`, then any replays).
    pub async fn start(
        app: AppState,
        entry: Entry,
        hello: Hello,
        handle: ConnectionHandle,
    ) -> Result<(Session, Vec<Bytes>), CloseReason> {
        Session::start_with(app, entry, hello, handle).await
    }

    /// [`Session::start`] for a transport that routes frames by conversation (see [`FrameSink`]).
    pub async fn start_with<O: FrameSink + Default>(
        app: AppState,
        entry: Entry,
        hello: Hello,
        handle: ConnectionHandle,
    ) -> Result<(Session, O), CloseReason> {
        let seen_from = match &entry {
            Entry::Visitor { peer, user_agent, .. } => Some((*peer, user_agent.clone())),
            Entry::Agent { .. } => None,
        };
        let (principal, agent_session) = authenticate(&app, entry, hello.token.as_deref()).await?;
        let store = app.store.clone();
        let mut session = Session {
            app: app.clone(),
            principal,
            handle,
            agent_sites: Vec::new(),
            agent_session: agent_session.map(Box::new),
            cursors: Vec::new(),
            pending_replays: Vec::new(),
            typing_sent: Vec::new(),
            conversation_sites: Vec::new(),
        };
        let internal_error = |error: StorageError| {
            tracing::error!(%error, "starting a session failed");
            CloseReason::new(close_code::INTERNAL, "internal error")
        };

        // Register and subscribe before reading the state the client is told about, so nothing
        // committed in between is missed (see docs/delivery.md).
        let conversations: Vec<Conversation> = match &session.principal {
            Principal::Visitor(visitor) => {
                app.hub.register_visitor(visitor.id, &visitor.site, &session.handle);
                let (peer, user_agent) = seen_from.unwrap_or_default();
                app.online_visitors.connected(&app.hub, visitor, peer, &user_agent);
                let visitor_id = visitor.id;
                let known = ConversationStore::of_visitor(&store, visitor_id).await.map_err(internal_error)?;
                for conversation in &known {
                    app.hub.subscribe(conversation.id, &session.handle);
                }
                ConversationStore::of_visitor(&store, visitor_id).await.map_err(internal_error)?
            }
            Principal::Agent(agent) => {
                session.agent_sites = match agent.role {
                    AgentRole::Admin => SiteStore::list(&store)
                        .await
                        .map_err(internal_error)?
                        .into_iter()
                        .map(|site| site.key)
                        .collect(),
                    AgentRole::Agent => agent.sites.clone(),
                };
                app.hub.register_agent(session.agent_registration().expect("an agent session"), &session.handle);
                // A logout, password change or disabling that committed after the token was
                // checked and before the registration found no connection to close: check again.
                if let Some(digest) = session.agent_session.as_deref().copied() {
                    let now = crate::base::clock::now_millis();
                    let still_valid = AgentStore::authenticate(&store, &digest, now)
                        .await
                        .map_err(internal_error)?
                        .is_some_and(|current| current.role == agent.role && current.sites == agent.sites);
                    if !still_valid {
                        app.hub.unregister(&session.handle, None, session.agent_registration(), std::iter::empty());
                        return Err(CloseReason::new(close_code::UNAUTHENTICATED, "unknown or expired token"));
                    }
                }
                let open_served = async || -> Result<Vec<Conversation>, CloseReason> {
                    let open = ConversationStore::list_open(&store).await.map_err(internal_error)?;
                    Ok(open.into_iter().filter(|conversation| agent.serves_site(&conversation.site)).collect())
                };
                let known = open_served().await?;
                let agent_id = session.agent_id().expect("an agent session");
                for conversation in known.iter().filter(|conversation| conversation.assigned_agent == Some(agent_id)) {
                    app.hub.subscribe(conversation.id, &session.handle);
                }
                open_served().await?
            }
            // A socket never authenticates with an API token (see `authenticate` below).
            Principal::ApiToken(_) => Vec::new(),
        };
        let agent_id = session.agent_id();
        for conversation in &conversations {
            let subscribed = session.principal.is_visitor()
                || conversation.assigned_agent.is_some() && conversation.assigned_agent == agent_id;
            if subscribed {
                session.cursors.push(Cursor::new(conversation.id, conversation.last_seq));
            }
        }

        let epoch = store.epoch();
        let skip = conversations.len().saturating_sub(if session.principal.is_visitor() {
            MAX_WELCOME_CONVERSATIONS
        } else {
            usize::MAX
        });
        let views: Vec<ConversationView> =
            conversations.iter().skip(skip).map(|conversation| conversation.view(epoch)).collect();
        let mut pages = views.chunks(WELCOME_PAGE_CONVERSATIONS);
        let first_page = pages.next().unwrap_or_default();
        let (role, visitor_id, agent_id) = match &session.principal {
            Principal::Visitor(visitor) => ("visitor", Some(visitor.id), None),
            Principal::Agent(agent) => ("agent", None, Some(agent.id)),
            Principal::ApiToken(_) => ("api", None, None),
        };
        let limits = &app.config.limits;
        let mut frames = O::default();
        frames.push(
            ServerFrame::Welcome {
                protocol: protocol::PROTOCOL_VERSION,
                role,
                visitor_id,
                agent_id,
                epoch,
                heartbeat_secs: limits.heartbeat_secs,
                max_text_chars: limits.max_text_chars,
                conversations: first_page,
                more_conversations: views.len() > first_page.len(),
            }
            .encode(),
        );
        let mut pages = pages.peekable();
        while let Some(page) = pages.next() {
            frames.push(ServerFrame::Conversations { conversations: page, more: pages.peek().is_some() }.encode());
        }
        // Registered already, so a change from here on reaches the queue behind this frame.
        if let Principal::Visitor(visitor) = &session.principal {
            if let Ok(Some(site)) = app.sites.get(&visitor.site).await {
                let status = sites::status::current(&site.site, &app.router);
                frames.push(ServerFrame::SiteStatus(&status).encode());
            }
        }
        for point in hello.resume {
            session.resume(point, &mut frames).await;
        }
        if let Principal::Agent(agent) = &session.principal {
            app.router.send(RoutingEvent::AgentConnected { agent: agent.clone() }).await;
        }
        tracing::debug!(connection_id = session.handle.id(), role, "session started");
        Ok((session, frames))
    }

    /// How this connection is registered as an agent's; `None` for visitors.
    fn agent_registration(&self) -> Option<AgentRegistration<'_>> {
        self.agent_id().map(|agent_id| AgentRegistration {
            agent_id,
            session: self.agent_session.as_deref(),
            sites: &self.agent_sites,
        })
    }

    fn agent_id(&self) -> Option<u64> {
        match &self.principal {
            Principal::Agent(agent) => Some(agent.id),
            Principal::Visitor(_) | Principal::ApiToken(_) => None,
        }
    }

    /// Handles one text frame from the client; frames to write go to `out`.
    pub async fn on_frame(&mut self, text: &str, out: &mut impl FrameSink) {
        let frame = match protocol::decode_client_frame(text) {
            Ok(frame) => frame,
            Err(error) => {
                out.push(error_frame(error.code, &error.message, error.client_id.as_deref()));
                return;
            }
        };
        match frame {
            ClientFrame::Hello(_) => out.push(error_frame(ErrorCode::UnknownType, "hello was already received", None)),
            ClientFrame::Send(send) => self.send(send, out).await,
            ClientFrame::Resume(point) => self.resume(point, out).await,
            ClientFrame::Typing { conversation_id, active } => self.typing(conversation_id, active, out),
            ClientFrame::Read { conversation_id, seq } => self.read(conversation_id, seq, out).await,
            ClientFrame::Take { conversation_id } => self.take_or_close(conversation_id, true, out).await,
            ClientFrame::Close { conversation_id } => self.take_or_close(conversation_id, false, out).await,
            ClientFrame::Presence { status } => self.presence(status, out).await,
            ClientFrame::PageView(page) => self.page_view(page, out),
            ClientFrame::Ping => out.push(ServerFrame::Pong.encode()),
            ClientFrame::Handoff { conversation_id } => {
                if let Some(frame) = on_handoff_frame(&self.app, &self.principal, conversation_id).await {
                    out.push(frame);
                }
            }
        }
    }

    /// Handles `first` from the connection's outbound queue and whatever else is queued, up to
    /// [`FLUSH_FRAMES`] frames to write in one flush. An overflowed queue closes the connection
    /// (the client reconnects and resumes), and so does a close someone requested
    /// ([`ConnectionHandle::request_close`]) once its last frame is in `out`; only in the second
    /// case is `out` worth writing before the close.
    pub fn take_outbound(
        &mut self,
        first: Outbound,
        queue: &mut OutboundReceiver,
        handle: &ConnectionHandle,
        out: &mut impl FrameSink,
    ) -> Result<(), CloseReason> {
        if handle.overflowed() {
            return Err(CloseReason::slow_consumer());
        }
        self.on_outbound(first, out);
        // A pending replay must be written before any live frame queued behind it.
        while out.n_frames() < FLUSH_FRAMES && self.pending_replays.is_empty() {
            match queue.try_recv() {
                Some(queued) => self.on_outbound(queued, out),
                None => break,
            }
        }
        if handle.overflowed() {
            return Err(CloseReason::slow_consumer());
        }
        match handle.close_requested() {
            // A block or an end of the agent's rights: the last frame (the reason) is in `out`.
            Some(code) => Err(CloseReason::new(code, "closed by the server")),
            None => Ok(()),
        }
    }

    /// Handles one item from the connection's outbound queue.
    pub fn on_outbound(&mut self, outbound: Outbound, out: &mut impl FrameSink) {
        match outbound {
            Outbound::Frame(frame) => out.push(frame),
            Outbound::Sequenced { conversation_id, seq, frame } => match self.cursor_mut(conversation_id) {
                Some(cursor) if seq <= cursor.last_seq => {}
                Some(cursor) => {
                    cursor.last_seq = seq;
                    cursor.written_through = seq;
                    out.push_sequenced(conversation_id, frame);
                }
                None => out.push_sequenced(conversation_id, frame),
            },
            // An ack is never dropped, even behind a replay that wrote its message: the sender
            // waits for it by client_id.
            Outbound::Ack { conversation_id, seq, frame } => {
                if let Some(cursor) = self.cursor_mut(conversation_id) {
                    cursor.last_seq = cursor.last_seq.max(seq);
                }
                out.push_sequenced(conversation_id, frame);
            }
            Outbound::Subscribed { conversation_id, last_seq } => {
                let known =
                    self.cursor_mut(conversation_id).is_some() || self.pending_replays.contains(&conversation_id);
                match (known, last_seq) {
                    (true, _) => {}
                    (false, 0) => self.cursors.push(Cursor::new(conversation_id, 0)),
                    // Assigned with messages already in it: send them before anything live.
                    (false, _) => self.pending_replays.push(conversation_id),
                }
            }
        }
    }

    /// Whether [`Session::replay_subscribed`] has something to send.
    pub fn has_pending_replays(&self) -> bool {
        !self.pending_replays.is_empty()
    }

    /// Sends the messages so far of conversations the server subscribed this connection to, each
    /// followed by `replayed` (or `reset`), exactly as a `resume` from 0 would.
    pub async fn replay_subscribed(&mut self, out: &mut impl FrameSink) {
        let epoch = self.app.store.epoch();
        for conversation_id in std::mem::take(&mut self.pending_replays) {
            self.resume(ResumePoint { conversation_id, last_seq: 0, epoch }, out).await;
        }
    }

    /// Unregisters the connection; called once when it ends.
    pub async fn finish(self) {
        let visitor = match &self.principal {
            Principal::Visitor(visitor) => Some((visitor.id, visitor.site.as_str())),
            Principal::Agent(_) | Principal::ApiToken(_) => None,
        };
        let visitor_id = visitor.map(|(visitor_id, _)| visitor_id);
        self.app.hub.unregister(
            &self.handle,
            visitor,
            self.agent_registration(),
            self.cursors.iter().map(|cursor| cursor.conversation_id),
        );
        if let Some(agent_id) = self.agent_id() {
            self.app.router.send(RoutingEvent::AgentDisconnected { agent_id }).await;
        }
        if let Some(visitor_id) = visitor_id {
            self.app.online_visitors.disconnected(&self.app.hub, visitor_id);
        }
    }

    fn page_view(&mut self, page: crate::protocol::PageView, out: &mut impl FrameSink) {
        let Principal::Visitor(visitor) = &self.principal else {
            return out.push(error_frame(ErrorCode::Forbidden, "only visitors report page views", None));
        };
        if let Err(message) = visitors::validate_page_view(&page) {
            return out.push(error_frame(ErrorCode::InvalidField, &message, None));
        }
        self.app.online_visitors.page_view(&self.app.hub, visitor.id, page);
    }

    fn cursor_mut(&mut self, conversation_id: u64) -> Option<&mut Cursor> {
        self.cursors.iter_mut().find(|cursor| cursor.conversation_id == conversation_id)
    }

    /// Loads a conversation this principal may access; `None` for missing and forbidden alike.
    async fn accessible_conversation(&self, conversation_id: u64) -> Result<Option<Conversation>, StorageError> {
        let conversation = self.app.store.conversation(conversation_id).await?;
        Ok(conversation.filter(|conversation| self.principal.can_access(conversation)))
    }

    /// The site of a conversation this principal may access, for a send; `None` for missing and
    /// forbidden alike. A visitor's own conversations and those a staff connection has sent to
    /// before (a conversation's site never changes) need no storage read; access is checked against
    /// the principal each time, and a conversation removed since is refused by the writer.
    async fn conversation_site(&mut self, conversation_id: u64) -> Result<Option<String>, StorageError> {
        if let Principal::Visitor(visitor) = &self.principal {
            if self.cursors.iter().any(|cursor| cursor.conversation_id == conversation_id) {
                return Ok(Some(visitor.site.clone()));
            }
            return Ok(self.accessible_conversation(conversation_id).await?.map(|conversation| conversation.site));
        }
        if let Some((_, site)) = self.conversation_sites.iter().find(|(id, _)| *id == conversation_id) {
            return Ok(self.principal.serves_site(site).then(|| site.clone()));
        }
        let Some(conversation) = self.accessible_conversation(conversation_id).await? else { return Ok(None) };
        if self.conversation_sites.len() >= CONVERSATION_SITES_REMEMBERED {
            self.conversation_sites.remove(0);
        }
        self.conversation_sites.push((conversation_id, conversation.site.clone()));
        Ok(Some(conversation.site))
    }

    async fn send<O: FrameSink>(&mut self, send: protocol::Send, out: &mut O) {
        let trace_id = secrets::new_trace_id();
        // The message's trace (exported only with `telemetry.otlp_endpoint`): its root, and the
        // stages of this function. Disabled `debug` spans otherwise, which cost nothing.
        let _message_span = crate::base::trace_export::message_span(trace_id);
        let decode_span = tracing::debug_span!(parent: None, "decode", trace_id);
        let client_id = send.client_id;
        let refuse =
            |out: &mut O, code: ErrorCode, message: &str| out.push(error_frame(code, message, Some(&client_id)));
        if let Err(message) = messages::validate_client_id(&client_id) {
            out.push(error_frame(ErrorCode::InvalidField, &message, None));
            return;
        }
        let attachment = match &send.attachment_id {
            Some(id) => match self.own_upload(id).await {
                Ok(Some(upload)) => Some(upload),
                Ok(None) => return refuse(out, ErrorCode::InvalidField, "attachment_id: no such upload of yours"),
                Err(error) => {
                    tracing::error!(trace_id, %error, "reading an upload failed");
                    return refuse(out, ErrorCode::Internal, "internal error; retry with the same client_id");
                }
            },
            None => None,
        };
        let text =
            match messages::validate_text(&send.text, self.app.config.limits.max_text_chars, attachment.is_some()) {
                Ok(text) => text,
                Err(message) => return refuse(out, ErrorCode::InvalidField, &message),
            };
        if send.internal && self.principal.is_visitor() {
            return refuse(out, ErrorCode::Forbidden, "internal: only agents write internal notes");
        }
        tracing::debug!(trace_id, connection_id = self.handle.id(), "send validated");
        drop(decode_span);

        // Find the conversation's site for the word filter; check access on the way.
        let (target, site_key) = match (&self.principal, send.conversation_id) {
            (Principal::Visitor(visitor), None) => {
                (Target::VisitorInbox { site: visitor.site.clone(), visitor_id: visitor.id }, visitor.site.clone())
            }
            (Principal::Agent(_) | Principal::ApiToken(_), None) => {
                return refuse(out, ErrorCode::InvalidField, "conversation_id: required for agents");
            }
            (_, Some(conversation_id)) => {
                let site = match self.conversation_site(conversation_id).await {
                    Ok(site) => site,
                    Err(error) => {
                        tracing::error!(trace_id, %error, "reading a conversation failed");
                        return refuse(out, ErrorCode::Internal, "internal error; retry with the same client_id");
                    }
                };
                match site {
                    Some(site) => (Target::Conversation(conversation_id), site),
                    None => return refuse(out, ErrorCode::NotFound, "no such conversation"),
                }
            }
        };
        let (site, text) = match messages::filter_for_site(&self.app.sites, &site_key, text, trace_id).await {
            Ok(filtered) => filtered,
            Err(refusal) => return refuse(out, refusal.code, refusal.message),
        };
        let route_span = tracing::debug_span!(parent: None, "route", trace_id);
        // Used only if this message starts a conversation.
        let route_to_team = if self.principal.is_visitor() && !site.routing.is_empty() {
            let category = match site.routing.needs_category() {
                true => self.app.bot.category_of(&site_key, &text).await,
                false => None,
            };
            site.routing.team_for(&text, category.as_deref())
        } else {
            None
        };
        drop(route_span);
        tracing::debug!(trace_id, "send filtered");

        let new_message = NewMessage {
            target,
            sender: self.principal.sender(),
            client_id: client_id.clone(),
            text,
            internal: send.internal,
            attachment,
            trace_id,
            origin: Some(self.handle.clone()),
            route_to_team,
            offline_message_id: None,
        };
        let origin = self.handle.clone();
        let refused = move |error: AppendError| {
            let text = match &error {
                AppendError::Storage(_) => "storing the message failed; retry with the same client_id".to_owned(),
                refusal => refusal.to_string(),
            };
            origin.push(Outbound::Frame(error_frame(error.code(), &text, Some(&client_id))));
        };
        let queued = MessageStore::send(&self.app.store, new_message, refused).await;
        if queued.is_err() {
            out.push(error_frame(
                ErrorCode::Unavailable,
                "the server is shutting down; resend after reconnecting",
                None,
            ));
        }
    }

    /// An upload made by this principal.
    async fn own_upload(&self, id: &str) -> Result<Option<crate::chat::uploads::Upload>, StorageError> {
        let sender = self.principal.sender();
        let upload = crate::chat::upload_store::UploadStore::upload(&self.app.store, id).await?;
        Ok(upload.filter(|upload| upload.uploader.kind == sender.kind && upload.uploader.id == sender.id))
    }

    async fn resume(&mut self, point: ResumePoint, out: &mut impl FrameSink) {
        let conversation_id = point.conversation_id;
        match self.accessible_conversation(conversation_id).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return out.push(error_frame(ErrorCode::NotFound, "no such conversation", None));
            }
            Err(error) => {
                tracing::error!(%error, "resume failed");
                return out.push(error_frame(ErrorCode::Internal, "internal error", None));
            }
        }
        // Subscribe first, then read: whatever commits after the read arrives on the queue.
        self.app.hub.subscribe(conversation_id, &self.handle);
        let epoch = self.app.store.epoch();
        let replay_limit = self.app.config.limits.replay_limit;
        let epoch_changed = point.epoch != epoch && point.last_seq > 0;
        // What this connection wrote already is never sent twice, whatever the client names.
        let written_through = self.cursor_mut(conversation_id).map_or(0, |cursor| cursor.written_through);
        let store = &self.app.store;
        let read = async {
            let conversation = MessageStore::conversation(store, conversation_id)
                .await?
                .ok_or_else(|| StorageError::Corrupt("conversation vanished".into()))?;
            let ahead = point.last_seq > conversation.last_seq;
            let from = point.last_seq.max(written_through);
            let too_far = conversation.last_seq.saturating_sub(from) > replay_limit as u64;
            // Messages committed after the conversation was read may come too: the connection's
            // cursor drops their live copies.
            let missed = if epoch_changed || too_far || ahead {
                Vec::new()
            } else {
                store.page_after(conversation_id, from, replay_limit).await?
            };
            Ok::<_, StorageError>((conversation, ahead, too_far, missed))
        }
        .await;
        let (conversation, ahead, too_far, missed) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, "resume read failed");
                return out.push(error_frame(ErrorCode::Internal, "internal error", None));
            }
        };
        let (last_written, reason) = if epoch_changed || too_far || ahead {
            // The client's position is unusable: it reloads history, and live frames after the
            // conversation's real last seq reach it (never withheld for a number it made up).
            let reason = if epoch_changed {
                "epoch_changed"
            } else if ahead {
                "ahead_of_server"
            } else {
                "too_far_behind"
            };
            if let Some(cursor) = self.cursor_mut(conversation_id) {
                cursor.last_seq = conversation.last_seq;
            }
            (conversation.last_seq, Some(reason))
        } else {
            let is_visitor = self.principal.is_visitor();
            for (seq, record) in &missed {
                if !(record.internal && is_visitor) {
                    out.push_sequenced(
                        conversation_id,
                        ServerFrame::Message(&messages::message_view(conversation_id, *seq, record, epoch)).encode(),
                    );
                }
            }
            let from = point.last_seq.max(written_through);
            (missed.last().map(|(seq, _)| *seq).unwrap_or(from).max(from), None)
        };
        // A reset wrote nothing: the client reloads history, and may still resume later.
        let written_through = if reason.is_none() { last_written } else { 0 };
        match self.cursor_mut(conversation_id) {
            Some(cursor) => {
                cursor.last_seq = cursor.last_seq.max(last_written);
                cursor.written_through = cursor.written_through.max(written_through);
            }
            None => self.cursors.push(Cursor { conversation_id, last_seq: last_written, written_through }),
        }
        let frame = match reason {
            Some(reason) => {
                ServerFrame::Reset { conversation_id, epoch, last_seq: conversation.last_seq, reason }.encode()
            }
            None => ServerFrame::Replayed { conversation_id, last_seq: last_written }.encode(),
        };
        out.push_sequenced(conversation_id, frame);
    }

    fn typing(&mut self, conversation_id: u64, active: bool, out: &mut impl FrameSink) {
        if self.cursor_mut(conversation_id).is_none() {
            return out.push(error_frame(
                ErrorCode::NotFound,
                "not subscribed to that conversation; resume it first",
                None,
            ));
        }
        let now = Instant::now();
        match self.typing_sent.iter_mut().find(|(id, _)| *id == conversation_id) {
            Some((_, sent_at)) if active && now.duration_since(*sent_at) < TYPING_INTERVAL => {
                return;
            }
            Some((_, sent_at)) => *sent_at = now,
            None => self.typing_sent.push((conversation_id, now)),
        }
        let sender = self.principal.sender();
        let frame = ServerFrame::Typing { conversation_id, sender: &sender, active }.encode();
        for connection in self.app.hub.subscribers(conversation_id) {
            if connection != self.handle {
                connection.push(Outbound::Frame(frame.clone()));
            }
        }
    }

    async fn read(&mut self, conversation_id: u64, seq: u64, out: &mut impl FrameSink) {
        if self.cursor_mut(conversation_id).is_none() {
            return out.push(error_frame(
                ErrorCode::NotFound,
                "not subscribed to that conversation; resume it first",
                None,
            ));
        }
        let sender = self.principal.sender();
        let reader = ParticipantView { kind: sender.kind, id: sender.id };
        if ConversationStore::mark_read(&self.app.store, conversation_id, reader, seq).await.is_err() {
            out.push(error_frame(ErrorCode::Unavailable, "the server is shutting down", None));
        }
    }

    async fn take_or_close(&mut self, conversation_id: u64, take: bool, out: &mut impl FrameSink) {
        let Principal::Agent(agent) = &self.principal else {
            return out.push(error_frame(ErrorCode::Forbidden, "only agents take or close conversations", None));
        };
        let agent: Agent = agent.clone();
        let conversation = match self.accessible_conversation(conversation_id).await {
            Ok(Some(conversation)) => conversation,
            Ok(None) => {
                return out.push(error_frame(ErrorCode::NotFound, "no such conversation", None));
            }
            Err(error) => {
                tracing::error!(%error, "reading a conversation failed");
                return out.push(error_frame(ErrorCode::Internal, "internal error", None));
            }
        };
        let held_by_other = conversation.assigned_agent.is_some_and(|holder| holder != agent.id);
        let result = if take {
            if held_by_other && agent.role != AgentRole::Admin {
                return out.push(error_frame(
                    ErrorCode::Forbidden,
                    "another agent holds this conversation; only admins take it over",
                    None,
                ));
            }
            ConversationStore::assign(&self.app.store, conversation_id, agent.id, AssignWhen::Open).await
        } else {
            ConversationStore::close(&self.app.store, conversation_id).await
        };
        match result {
            Ok(_) => {}
            Err(ConversationError::Storage(error)) => {
                tracing::error!(%error, "changing a conversation failed");
                out.push(error_frame(ErrorCode::Internal, "internal error", None));
            }
            Err(ConversationError::Closed) => {
                out.push(error_frame(ErrorCode::ConversationClosed, "the conversation is closed", None))
            }
            Err(error) => out.push(error_frame(ErrorCode::Forbidden, &error.to_string(), None)),
        }
    }

    async fn presence(&mut self, status: Presence, out: &mut impl FrameSink) {
        let Some(agent_id) = self.agent_id() else {
            return out.push(error_frame(ErrorCode::Forbidden, "only agents set presence", None));
        };
        if status == Presence::Offline {
            return out.push(error_frame(
                ErrorCode::InvalidField,
                "status: online or away (offline follows from disconnecting)",
                None,
            ));
        }
        self.app.router.send(RoutingEvent::Presence { agent_id, status }).await;
    }
}

/// The principal a hello authenticates, and for an agent the login session it used.
async fn authenticate(
    app: &AppState,
    entry: Entry,
    token: Option<&str>,
) -> Result<(Principal, Option<TokenDigest>), CloseReason> {
    let unauthenticated = || CloseReason::new(close_code::UNAUTHENTICATED, "unknown or expired token");
    let now = crate::base::clock::now_millis();
    match entry {
        Entry::Visitor { site, .. } => {
            let token = token.filter(|token| token.starts_with(visitors::TOKEN_PREFIX)).ok_or_else(unauthenticated)?;
            let digest = secrets::token_digest(token);
            let visitor = VisitorStore::authenticate(&app.store, &digest)
                .await
                .map_err(|_| CloseReason::new(close_code::INTERNAL, "internal error"))?
                .filter(|visitor| visitor.site == site.site.key)
                .ok_or_else(unauthenticated)?;
            if visitor.blocked {
                return Err(CloseReason::new(close_code::FORBIDDEN, "blocked"));
            }
            Ok((Principal::Visitor(visitor), None))
        }
        Entry::Agent { cookie_token } => {
            let token = token
                .map(str::to_owned)
                .or(cookie_token)
                .filter(|token| token.starts_with(agents::TOKEN_PREFIX))
                .ok_or_else(unauthenticated)?;
            let digest = secrets::token_digest(&token);
            let agent = AgentStore::authenticate(&app.store, &digest, now)
                .await
                .map_err(|_| CloseReason::new(close_code::INTERNAL, "internal error"))?
                .ok_or_else(unauthenticated)?;
            Ok((Principal::Agent(agent), Some(digest)))
        }
    }
}

/// Handles a `handoff` frame; returns the error frame to send back, if any.
async fn on_handoff_frame(app: &AppState, principal: &Principal, conversation_id: u64) -> Option<Bytes> {
    let error = |code, message: &str| Some(error_frame(code, message, None));
    if !principal.is_visitor() {
        return error(ErrorCode::Forbidden, "handoff: only visitors hand over to a human; agents use take");
    }
    let found = app.store.conversation(conversation_id).await;
    match found {
        Ok(Some(conversation)) if principal.can_access(&conversation) => {}
        Ok(_) => return error(ErrorCode::NotFound, "no such conversation"),
        Err(error) => {
            tracing::error!(conversation_id, %error, "reading a conversation failed");
            return Some(error_frame(ErrorCode::Internal, "internal error", None));
        }
    }
    match crate::bot::handoff(&app.bot, conversation_id).await {
        Ok(_) => None,
        Err(crate::chat::conversations::ConversationError::Closed) => {
            error(ErrorCode::ConversationClosed, "the conversation is closed")
        }
        Err(crate::chat::conversations::ConversationError::NotFound) => {
            error(ErrorCode::NotFound, "no such conversation")
        }
        Err(other) => {
            tracing::error!(conversation_id, error = %other, "handoff failed");
            error(ErrorCode::Internal, "internal error")
        }
    }
}
