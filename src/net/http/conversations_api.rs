//! Conversations over HTTP: lists, one conversation, history pages, and what agents and API
//! tokens do to a conversation (assign, close, send a message as an agent or as the bot).
//!
//! A message sent here takes the same path as one sent on a socket: the same checks
//! (`messages::validate_*`), the site's word filter (`messages::filter_for_site`), and one
//! writer operation (`messages::append`, or `BotConversations::append_bot` for the bot), so it is
//! deduplicated by `client_id`, delivered to subscribers and sent to webhooks like any other.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Caller, Json, OptionalJson, agent_only, outside_scope, require_site, staff_only};
use super::visitors_api::served_visitor;
use crate::bot::conversation_writes::BotConversations;
use crate::chat::conversation_actions::{self, TransferTarget};
use crate::chat::conversation_list::{ListCounts, ListRequest, ListState, Listed};
use crate::chat::conversation_store::ConversationStore;
use crate::chat::conversations::{AssignWhen, Conversation};
use crate::chat::message_store::MessageStore;
use crate::chat::messages::{self, AppendError, Appended, NewMessage, SendRefusal, Target};
use crate::chat::offline_messages::OfflineMessageStore;
use crate::net::AppState;
use crate::people::agent_store::AgentStore;
use crate::people::agents::{Agent, Role};
use crate::people::principal::Principal;
use crate::people::team_store::TeamStore;
use crate::protocol::{BotSource, ConversationView, ErrorCode, MessageView, SenderView};
use crate::{base::secrets, bot};

/// Messages in a history page when the client does not say.
const DEFAULT_PAGE: usize = 50;
/// Most messages in one history page.
const MAX_PAGE: usize = 200;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Messages with a sequence below this one (the `next_before` of the previous page);
    /// the newest when left out.
    pub(crate) before: Option<u64>,
    /// How many messages, 50 when left out; more than 200 is read as 200.
    #[param(minimum = 1, maximum = 200)]
    pub(crate) limit: Option<i64>,
}

/// One page of a conversation's history, oldest message first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    pub(crate) conversation_id: u64,
    pub(crate) epoch: u64,
    pub(crate) last_seq: u64,
    pub(crate) messages: Vec<MessageView>,
    /// Pass as `before` for the next older page; `null` at the start of the conversation.
    #[schema(required = true)]
    pub(crate) next_before: Option<u64>,
    /// The visitor has read the messages up to this sequence number (0: none), as `read` frames
    /// say live; so read receipts survive a reload.
    pub(crate) visitor_read_seq: u64,
    /// The furthest any agent has read.
    pub(crate) agents_read_seq: u64,
}

/// `GET /api/v1/conversations/{id}/messages?before=SEQ&limit=N`
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "messages",
    params(("id" = u64, Path, description = "The conversation's id"), PageQuery),
    responses((status = 200, description = "A page of messages, oldest first", body = MessagePage), super::openapi::CommonErrors))]
pub async fn messages(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<MessagePage>, ApiError> {
    let limit = page_limit(query.limit)?;
    let is_visitor = principal.is_visitor();
    let conversation = served_conversation(&app, &principal, conversation_id).await?;
    let before = query.before;
    // Read one more than asked, to know whether an older page exists.
    let mut page = app.store.page_before(conversation_id, before, limit + 1).await?;
    let read = ConversationStore::read_through(&app.store, conversation_id).await?;
    let has_older = page.len() > limit;
    if has_older {
        page.remove(0);
    }
    let epoch = app.store.epoch();
    let next_before = if has_older { page.first().map(|(seq, _)| *seq) } else { None };
    let messages = page
        .iter()
        .filter(|(_, record)| !(record.internal && is_visitor))
        .map(|(seq, record)| messages::message_view(conversation_id, *seq, record, epoch))
        .collect();
    Ok(axum::Json(MessagePage {
        conversation_id,
        epoch,
        last_seq: conversation.last_seq,
        messages,
        next_before,
        visitor_read_seq: read.visitor,
        agents_read_seq: read.agents,
    }))
}

/// The number of messages a history page holds: `limit` clamped to [`MAX_PAGE`], as the docs
/// promise "at most 200"; zero or a negative number is refused.
fn page_limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(limit) if limit < 1 => {
            Err(ApiError::Unprocessable(format!("limit: must be at least 1 (at most {MAX_PAGE} are sent)")))
        }
        Some(limit) => Ok(usize::try_from(limit).unwrap_or(MAX_PAGE).min(MAX_PAGE)),
    }
}

/// `GET /api/v1/conversations`: one page of the caller's conversations by state (see
/// `list_by_state`). An agent's request without parameters gets the plain array of
/// open conversations the console starts from.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations",
    params(ListQuery),
    responses((status = 200, description = "A page of conversations, newest first", body = ConversationList), super::openapi::CommonErrors))]
pub async fn list(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<ListQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let caller = staff_only(principal)?;
    let plain = query.state.is_none()
        && query.site.is_none()
        && query.agent_id.is_none()
        && query.cursor.is_none()
        && query.limit.is_none();
    let agent = match &caller {
        Principal::Agent(agent) if plain => agent.clone(),
        _ => return Ok(axum::Json(list_by_state(app, caller, query).await?).into_response()),
    };
    let open = ConversationStore::list_open(&app.store).await?;
    let epoch = app.store.epoch();
    let views: Vec<ConversationView> = open
        .iter()
        .filter(|conversation| agent.serves_site(&conversation.site))
        .map(|conversation| conversation.view(epoch))
        .collect();
    Ok(axum::Json(views).into_response())
}

/// `GET /api/v1/conversations/{id}`
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = u64, Path, description = "The conversation's id")),
    responses((status = 200, description = "The conversation", body = ConversationView), super::openapi::CommonErrors))]
pub async fn get(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
) -> Result<axum::Json<ConversationView>, ApiError> {
    let caller = staff_only(principal)?;
    let conversation = served_conversation(&app, &caller, conversation_id).await?;
    Ok(axum::Json(conversation.view(app.store.epoch())))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// An enabled agent who serves the conversation's site. Agents other than admins may only
    /// assign to themselves.
    pub(crate) agent_id: u64,
}

/// `POST /api/v1/conversations/{id}/assign` `{"agent_id": 3}`: gives an open conversation to an
/// agent (taking it over from whoever held it, and from the bot).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/assign", tag = "conversations",
    params(("id" = u64, Path, description = "The conversation's id")),
    request_body = AssignRequest,
    responses((status = 200, description = "The assigned conversation", body = ConversationView), super::openapi::CommonErrors))]
pub async fn assign(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
    Json(request): Json<AssignRequest>,
) -> Result<axum::Json<ConversationView>, ApiError> {
    let caller = staff_only(principal)?;
    let conversation = served_conversation(&app, &caller, conversation_id).await?;
    if let Principal::Agent(agent) = &caller
        && agent.id != request.agent_id
        && !caller.is_admin()
    {
        return Err(ApiError::Forbidden("agent_id: only admins assign conversations to others".into()));
    }
    check_holder(&caller, &conversation)?;
    agent_serving(&app, request.agent_id, &conversation.site, "agent_id").await?;
    let conversation =
        ConversationStore::assign(&app.store, conversation_id, request.agent_id, AssignWhen::Open).await?;
    Ok(axum::Json(conversation.view(app.store.epoch())))
}

/// `POST /api/v1/conversations/{id}/close`
#[utoipa::path(post, path = "/api/v1/conversations/{id}/close", tag = "conversations",
    params(("id" = u64, Path, description = "The conversation's id")),
    responses((status = 200, description = "The closed conversation", body = ConversationView), super::openapi::CommonErrors))]
pub async fn close(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
) -> Result<axum::Json<ConversationView>, ApiError> {
    let caller = staff_only(principal)?;
    served_conversation(&app, &caller, conversation_id).await?;
    let conversation = ConversationStore::close(&app.store, conversation_id).await?;
    Ok(axum::Json(conversation.view(app.store.epoch())))
}

/// Who a message sent over HTTP is from.
#[derive(Clone, Copy, Default, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SendAs {
    /// An agent: the calling agent, or the one an API token names in `agent_id`.
    #[default]
    Agent,
    /// The site's bot; only while the conversation is bot-active.
    Bot,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    /// The message: not only spaces, at most `limits.max_text_chars` characters (4,000 by default).
    #[schema(min_length = 1, pattern = r"\S")]
    pub(crate) text: String,
    /// Makes a retry safe: the same `client_id` from the same sender answers the first message.
    /// A random one is made when left out. 1 to 64 printable ASCII characters.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub(crate) client_id: Option<String>,
    #[serde(default, rename = "as")]
    #[schema(rename = "as")]
    pub(crate) send_as: SendAs,
    /// The agent a token sends as (`as: agent`); an agent calling sends as themselves.
    pub(crate) agent_id: Option<u64>,
    /// An internal note, which visitors never see (agents only).
    #[serde(default)]
    pub(crate) internal: bool,
}

/// `POST /api/v1/conversations/{id}/messages` `{"text": "...", "as": "agent", "agent_id": 3}`
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "messages",
    params(("id" = u64, Path, description = "The conversation's id")),
    request_body = SendMessageRequest,
    responses(
        (status = 201, description = "The stored message", body = MessageView),
        (status = 200, description = "A retry: the message first stored with this client_id", body = MessageView),
        super::openapi::CommonErrors))]
pub async fn send_message(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
    Json(request): Json<SendMessageRequest>,
) -> Result<(StatusCode, axum::Json<MessageView>), ApiError> {
    let caller = staff_only(principal)?;
    let trace_id = secrets::new_trace_id();
    // The message's trace, linked to the call's (crate::base::trace_export).
    let _message_span = crate::base::trace_export::message_span(trace_id);
    let client_id = request.client_id.unwrap_or_else(|| format!("api-{}", secrets::new_hex_id(12)));
    messages::validate_client_id(&client_id).map_err(ApiError::Unprocessable)?;
    let text = messages::validate_text(&request.text, app.config.limits.max_text_chars, false)
        .map_err(ApiError::Unprocessable)?;
    let conversation = served_conversation(&app, &caller, conversation_id).await?;
    let (_, text) = messages::filter_for_site(&app.sites, &conversation.site, text, trace_id).await.map_err(refusal)?;
    let new_message = |sender: SenderView, internal: bool| NewMessage {
        target: Target::Conversation(conversation_id),
        sender,
        client_id: client_id.clone(),
        text: text.clone(),
        internal,
        attachment: None,
        trace_id,
        origin: None,
        route_to_team: None,
        offline_message_id: None,
    };
    let appended = match request.send_as {
        SendAs::Agent => {
            let sender = match (&caller, request.agent_id) {
                (Principal::Agent(agent), None) => Principal::Agent(agent.clone()).sender(),
                (Principal::Agent(agent), Some(agent_id)) if agent_id == agent.id => caller.sender(),
                (Principal::Agent(_), Some(_)) => {
                    return Err(ApiError::Forbidden("agent_id: agents send only as themselves".into()));
                }
                (_, None) => return Err(ApiError::Unprocessable("agent_id: required to send as an agent".into())),
                (_, Some(agent_id)) => {
                    let agent = agent_serving(&app, agent_id, &conversation.site, "agent_id").await?;
                    Principal::Agent(agent).sender()
                }
            };
            let message = new_message(sender, request.internal);
            app.store.append(message).await.map_err(append_error)?
        }
        SendAs::Bot => {
            if request.internal || request.agent_id.is_some() {
                return Err(ApiError::Unprocessable("internal and agent_id: not for bot messages".into()));
            }
            let settings = app.bot.settings(&conversation.site).await?;
            let source =
                BotSource::Api { token_id: if let Principal::ApiToken(token) = &caller { token.id } else { 0 } };
            let message = new_message(bot::bot_sender(&settings), false);
            let stored = app.store.append_bot(message, source).await.map_err(append_error)?;
            stored.ok_or_else(|| ApiError::Conflict("the bot does not answer this conversation".into()))?
        }
    };
    tracing::debug!(trace_id, conversation_id, seq = appended.seq, "message sent over HTTP");
    let view = stored_view(&app, &appended).await?;
    let status = if appended.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, axum::Json(view)))
}

/// The stored message an acknowledgement points to, as clients see it.
pub(super) async fn stored_view(app: &AppState, appended: &Appended) -> Result<MessageView, ApiError> {
    let (conversation_id, seq) = (appended.conversation_id, appended.seq);
    let found = app.store.page_after(conversation_id, seq - 1, 1).await?;
    let (seq, record) = found
        .into_iter()
        .find(|(found_seq, _)| *found_seq == seq)
        .ok_or_else(|| ApiError::Internal(format!("message {conversation_id}/{seq} vanished after its commit")))?;
    Ok(messages::message_view(conversation_id, seq, &record, app.store.epoch()))
}

pub(super) fn refusal(refusal: SendRefusal) -> ApiError {
    match refusal.code {
        ErrorCode::NotFound => ApiError::NotFound(refusal.message.into()),
        ErrorCode::RejectedContent => ApiError::Unprocessable(refusal.message.into()),
        _ => ApiError::Internal(refusal.message.into()),
    }
}

pub(super) fn append_error(error: AppendError) -> ApiError {
    match error {
        AppendError::NotFound => ApiError::NotFound(error.to_string()),
        AppendError::Closed => ApiError::Conflict(error.to_string()),
        AppendError::AttachmentElsewhere => ApiError::Unprocessable(error.to_string()),
        AppendError::Storage(error) => error.into(),
    }
}

/// `GET /api/v1/offline-messages?site=KEY`: what visitors left, newest first, for agents of the site.
pub async fn offline_messages(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<OfflineQuery>,
) -> Result<axum::Json<Vec<crate::chat::offline_messages::OfflineMessage>>, ApiError> {
    let agent = agent_only(principal)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let site = query.site;
    let visible = move |key: &str| agent.serves_site(key) && site.as_deref().is_none_or(|site| site == key);
    let found = OfflineMessageStore::list_offline(&app.store, visible, limit).await?;
    Ok(axum::Json(found))
}

#[derive(Deserialize)]
pub struct OfflineQuery {
    site: Option<String>,
    limit: Option<usize>,
}

/// Conversations in a list page when the client does not say.
const DEFAULT_LIST_PAGE: usize = 50;

/// Most conversations in one list page.
const MAX_LIST_PAGE: usize = 200;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `queued`, `open` (the default: queued and assigned), `closed`, or `mine` (agents only).
    #[param(pattern = "^(queued|open|closed|mine)$")]
    pub state: Option<String>,
    /// Only this site's conversations.
    pub site: Option<String>,
    /// Only conversations assigned to this agent.
    pub agent_id: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<u64>,
    /// 1 to 200; 50 when left out.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// A conversation in a console list: its view plus what the list draws.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListedConversation {
    #[serde(flatten)]
    pub(crate) conversation: ConversationView,
    pub(crate) team: Option<u64>,
    pub(crate) visitor_name: String,
    /// The highest sequence the calling agent has read; absent for API tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) read_seq: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConversationList {
    pub(crate) conversations: Vec<ListedConversation>,
    /// Pass as `cursor` for the next page; `null` at the end.
    #[schema(required = true)]
    pub(crate) next_cursor: Option<u64>,
    pub(crate) counts: ListCounts,
}

/// `GET /api/v1/conversations?state=queued|mine|open|closed&site=&agent_id=&cursor=ID&limit=N`,
/// newest first.
pub async fn list_by_state(app: AppState, caller: Principal, query: ListQuery) -> Result<ConversationList, ApiError> {
    let caller_agent_id = match &caller {
        Principal::Agent(agent) => Some(agent.id),
        _ => None,
    };
    let state = match query.state.as_deref() {
        Some("queued") => ListState::Queued,
        Some("mine") if caller_agent_id.is_some() => ListState::Mine,
        Some("mine") => return Err(ApiError::Unprocessable("state: mine is for agents; use agent_id".into())),
        None | Some("open") => ListState::Open,
        Some("closed") => ListState::Closed,
        _ => return Err(ApiError::Unprocessable("state: must be queued, mine, open or closed".into())),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIST_PAGE);
    if limit == 0 || limit > MAX_LIST_PAGE {
        return Err(ApiError::Unprocessable(format!("limit: must be 1 to {MAX_LIST_PAGE}")));
    }
    if let Some(site) = &query.site {
        require_site(&caller, site, "site")?;
    }
    let request = ListRequest {
        state,
        site: query.site,
        agent_id: query.agent_id,
        cursor: query.cursor.unwrap_or(u64::MAX),
        limit,
        caller_agent_id,
    };
    let page = ConversationStore::list_page(&app.store, request, move |site| caller.serves_site(site)).await?;
    let epoch = app.store.epoch();
    let conversations = page
        .listed
        .into_iter()
        .map(|Listed { conversation, read_seq, visitor_name }| ListedConversation {
            team: conversation.team,
            visitor_name: visitor_name.unwrap_or_else(|| format!("Visitor #{}", conversation.visitor_id)),
            read_seq,
            conversation: conversation.view(epoch),
        })
        .collect();
    Ok(ConversationList { conversations, next_cursor: page.next_cursor, counts: page.counts })
}

/// `POST /api/v1/visitors/{id}/conversations`: the caller starts a chat with the visitor.
pub async fn start_conversation(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(visitor_id): Path<u64>,
) -> Result<(StatusCode, axum::Json<ConversationView>), ApiError> {
    let agent = agent_only(principal)?;
    let visitor = served_visitor(&app, &Principal::Agent(agent.clone()), visitor_id).await?;
    if visitor.blocked {
        return Err(ApiError::Conflict("the visitor is blocked".into()));
    }
    let conversation = ConversationStore::start_with_visitor(&app.store, visitor.site, visitor_id, agent.id).await?;
    Ok((StatusCode::CREATED, axum::Json(conversation.view(app.store.epoch()))))
}

/// A conversation the caller may see: 404 when there is none, and see [`outside_scope`] when it
/// belongs to a site the caller does not serve.
pub async fn served_conversation(
    app: &AppState,
    caller: &Principal,
    conversation_id: u64,
) -> Result<Conversation, ApiError> {
    let conversation = app.store.conversation(conversation_id).await?;
    let conversation = conversation.ok_or_else(|| ApiError::NotFound("no such conversation".into()))?;
    if !caller.can_access(&conversation) {
        return Err(outside_scope(caller, "conversation"));
    }
    Ok(conversation)
}

/// Refuses an agent (not an admin) changing a conversation another agent holds; API tokens act
/// for the whole site.
pub fn check_holder(caller: &Principal, conversation: &Conversation) -> Result<(), ApiError> {
    if let Principal::Agent(agent) = caller
        && conversation.assigned_agent.is_some_and(|holder| holder != agent.id)
        && agent.role != Role::Admin
    {
        return Err(ApiError::Forbidden("another agent holds this conversation".into()));
    }
    Ok(())
}

/// An enabled agent who serves `site`, or 422 naming `field`.
pub async fn agent_serving(app: &AppState, agent_id: u64, site: &str, field: &str) -> Result<Agent, ApiError> {
    let target = AgentStore::get(&app.store, agent_id).await?;
    target
        .filter(|target| !target.disabled && target.serves_site(site))
        .ok_or_else(|| ApiError::Unprocessable(format!("{field}: no such agent serves this conversation's site")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    agent_id: Option<u64>,
    team_id: Option<u64>,
    note: Option<String>,
}

/// `POST /api/v1/conversations/{id}/transfer` `{"agent_id": 3}` or `{"team_id": 1}`, with an
/// optional `note` that becomes an internal note.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/transfer", tag = "conversations",
    params(("id" = u64, Path, description = "The conversation's id")),
    request_body = TransferRequest,
    responses((status = 200, description = "The transferred conversation", body = ConversationView), super::openapi::CommonErrors))]
pub async fn transfer(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
    Json(request): Json<TransferRequest>,
) -> Result<axum::Json<ConversationView>, ApiError> {
    let caller = staff_only(principal)?;
    let note = match request.note.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(note) if note.chars().count() > conversation_actions::MAX_NOTE_CHARS => {
            return Err(ApiError::Unprocessable(format!(
                "note: at most {} characters",
                conversation_actions::MAX_NOTE_CHARS
            )));
        }
        Some(note) => Some(note.to_owned()),
    };
    let conversation = served_conversation(&app, &caller, conversation_id).await?;
    check_holder(&caller, &conversation)?;
    let site = conversation.site.clone();
    let target = match (request.agent_id, request.team_id) {
        (Some(agent_id), None) => {
            agent_serving(&app, agent_id, &site, "agent_id").await?;
            TransferTarget::Agent(agent_id)
        }
        (None, Some(team_id)) => {
            let team = TeamStore::get(&app.store, team_id).await?;
            if team.is_none_or(|team| team.site != site) {
                return Err(ApiError::Unprocessable("team_id: no such team on this conversation's site".into()));
            }
            TransferTarget::Team(team_id)
        }
        _ => return Err(ApiError::Unprocessable("give exactly one of agent_id and team_id".into())),
    };
    let conversation = ConversationStore::transfer(&app.store, conversation_id, target, note, caller.sender()).await?;
    Ok(axum::Json(conversation.view(app.store.epoch())))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReopenRequest {
    /// Who gets the reopened conversation; an agent calling may leave it out to keep it.
    pub(crate) agent_id: Option<u64>,
}

/// `POST /api/v1/conversations/{id}/reopen` (optional `{"agent_id": 3}`): reopens a closed
/// conversation, assigned to the calling agent or the one named.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/reopen", tag = "conversations",
    params(("id" = u64, Path, description = "The conversation's id")),
    request_body(content = Option<ReopenRequest>, description = "Required for API tokens, which name the agent"),
    responses((status = 200, description = "The reopened conversation", body = ConversationView), super::openapi::CommonErrors))]
pub async fn reopen(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
    OptionalJson(request): OptionalJson<ReopenRequest>,
) -> Result<axum::Json<ConversationView>, ApiError> {
    let caller = staff_only(principal)?;
    let conversation = served_conversation(&app, &caller, conversation_id).await?;
    let agent_id = match (request.unwrap_or_default().agent_id, &caller) {
        (Some(agent_id), _) => agent_serving(&app, agent_id, &conversation.site, "agent_id").await?.id,
        (None, Principal::Agent(agent)) => agent.id,
        (None, _) => {
            return Err(ApiError::Unprocessable("agent_id: required: who gets the reopened conversation".into()));
        }
    };
    let conversation = ConversationStore::reopen(&app.store, conversation_id, agent_id).await?;
    Ok(axum::Json(conversation.view(app.store.epoch())))
}
