//! The agent console's HTTP API: the agent list with presence, conversation lists by state
//! with cursor pagination, the live visitor list and visitor profiles, agent-initiated chats,
//! transfer, reopen, block, canned replies and teams.
//!
//! Every handler checks the caller's sites: an agent sees and changes only what belongs to the
//! sites they serve, and anything else answers 404, so ids cannot be probed. The handlers that
//! API tokens may use take any staff caller (see `extract::staff_only`); a token sees only its
//! site and gets 403 for anything of another.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use redb::ReadableTableMetadata;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Caller, Json, OptionalJson, admin_only, agent_only, outside_scope, require_site, staff_only};
use crate::chat::canned_replies::{self, CannedReply, CannedReplyError};
use crate::chat::conversation_actions::{self, TransferTarget};
use crate::chat::conversations::{self, Conversation, ConversationStatus};
use crate::history::audit;
use crate::net::AppState;
use crate::people::agents::{self, Agent, Role};
use crate::people::blocking::{self, BlockError};
use crate::people::principal::Principal;
use crate::people::teams::{self, Team, TeamError};
use crate::people::visitor_presence::OnlineVisitorView;
use crate::people::visitors::{self, PageView, Visitor};
use crate::protocol::{ConversationView, Presence, SenderKind};
use crate::routing::RoutingEvent;
use crate::storage::{StorageError, decode_json, tables};

/// Conversations in a list page when the client does not say.
const DEFAULT_LIST_PAGE: usize = 50;
/// Most conversations in one list page.
const MAX_LIST_PAGE: usize = 200;
/// Most stored conversations one closed-list request looks at; the cursor continues from there.
const MAX_CLOSED_SCAN: usize = 20_000;

impl From<CannedReplyError> for ApiError {
    fn from(error: CannedReplyError) -> Self {
        match error {
            CannedReplyError::NotFound => ApiError::NotFound(error.to_string()),
            CannedReplyError::DuplicateShortcut(_) => ApiError::Conflict(error.to_string()),
            CannedReplyError::Invalid(message) => ApiError::Unprocessable(message),
            CannedReplyError::Storage(error) => error.into(),
        }
    }
}

impl From<TeamError> for ApiError {
    fn from(error: TeamError) -> Self {
        match error {
            TeamError::NotFound => ApiError::NotFound(error.to_string()),
            TeamError::Invalid(message) => ApiError::Unprocessable(message),
            TeamError::Storage(error) => error.into(),
        }
    }
}

impl From<BlockError> for ApiError {
    fn from(error: BlockError) -> Self {
        match error {
            BlockError::NotFound => ApiError::NotFound(error.to_string()),
            BlockError::Storage(error) => error.into(),
        }
    }
}

/// Refuses a visitor session or socket from an address blocked on the site.
pub async fn refuse_blocked_address(app: &AppState, site: &str, ip: IpAddr) -> Result<(), ApiError> {
    let (site, address) = (site.to_owned(), ip.to_string());
    if app.store.read(move |transaction| blocking::is_ip_blocked(transaction, &site, &address)).await? {
        return Err(ApiError::Forbidden("blocked: this address may not chat on this site".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Agents

#[derive(Serialize, utoipa::ToSchema)]
pub struct AgentListed {
    id: u64,
    name: String,
    email: String,
    role: Role,
    sites: Vec<String>,
    presence: Presence,
}

/// `GET /api/v1/agents`: the agents who share a site with the caller, with their presence.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents and teams",
    responses((status = 200, description = "The agents of the token's site (admins serve every site)", body = Vec<AgentListed>), super::openapi::CommonErrors))]
pub async fn list_agents(
    State(app): State<AppState>,
    Caller(principal): Caller,
) -> Result<axum::Json<Vec<AgentListed>>, ApiError> {
    let caller = staff_only(principal)?;
    let all = app.store.read(agents::list).await?;
    let listed = all
        .into_iter()
        .filter(|agent| !agent.disabled)
        .filter(|agent| {
            caller.is_admin() || agent.role == Role::Admin || agent.sites.iter().any(|site| caller.serves_site(site))
        })
        .map(|agent| AgentListed {
            presence: app.router.presence_of(agent.id),
            id: agent.id,
            name: agent.name,
            email: agent.email,
            role: agent.role,
            sites: agent.sites,
        })
        .collect();
    Ok(axum::Json(listed))
}

// ---------------------------------------------------------------------------------------------
// Conversation lists

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum ListState {
    Queued,
    Mine,
    Open,
    Closed,
}

/// A conversation in a console list: its view plus what the list draws.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListedConversation {
    #[serde(flatten)]
    conversation: ConversationView,
    team: Option<u64>,
    visitor_name: String,
    /// The highest sequence the calling agent has read; absent for API tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    read_seq: Option<u64>,
}

/// Open conversations of the caller's sites (of `site` when given), by list.
#[derive(Serialize, Default, utoipa::ToSchema)]
pub struct ListCounts {
    queued: usize,
    mine: usize,
    open: usize,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConversationList {
    conversations: Vec<ListedConversation>,
    /// Pass as `cursor` for the next page; `null` at the end.
    #[schema(required = true)]
    next_cursor: Option<u64>,
    counts: ListCounts,
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
    let cursor = query.cursor.unwrap_or(u64::MAX);
    let (site_filter, agent_filter) = (query.site, query.agent_id);
    let found = app
        .store
        .read(move |transaction| {
            let in_scope = |conversation: &Conversation| {
                caller.serves_site(&conversation.site)
                    && site_filter.as_deref().is_none_or(|site| site == conversation.site)
                    && agent_filter.is_none_or(|agent_id| conversation.assigned_agent == Some(agent_id))
            };
            let open: Vec<Conversation> = conversations::list_open(transaction)?.into_iter().filter(in_scope).collect();
            let mine = |conversation: &Conversation| {
                caller_agent_id.is_some() && conversation.assigned_agent == caller_agent_id
            };
            let counts = ListCounts {
                queued: open.iter().filter(|c| c.status == ConversationStatus::Queued).count(),
                mine: open.iter().filter(|c| mine(c)).count(),
                open: open.len(),
            };
            let (mut page, next_cursor) = if state == ListState::Closed {
                closed_page(transaction, &in_scope, cursor, limit)?
            } else {
                let mut chosen: Vec<Conversation> = open
                    .into_iter()
                    .filter(|c| c.id < cursor)
                    .filter(|c| match state {
                        ListState::Queued => c.status == ConversationStatus::Queued,
                        ListState::Mine => mine(c),
                        _ => true,
                    })
                    .collect();
                chosen.sort_by_key(|conversation| std::cmp::Reverse(conversation.id));
                let more = chosen.len() > limit;
                chosen.truncate(limit);
                let next = if more { chosen.last().map(|c| c.id) } else { None };
                (chosen, next)
            };
            let positions = transaction.open_table(tables::READ_POSITIONS)?;
            let visitor_table = transaction.open_table(tables::VISITORS)?;
            let mut listed = Vec::with_capacity(page.len());
            for conversation in page.drain(..) {
                let read_seq = match caller_agent_id {
                    Some(agent_id) => Some(
                        positions
                            .get((conversation.id, SenderKind::Agent.code(), agent_id))?
                            .map(|value| value.value())
                            .unwrap_or(0),
                    ),
                    None => None,
                };
                let visitor: Option<Visitor> =
                    visitor_table.get(conversation.visitor_id)?.map(|value| decode_json(value.value())).transpose()?;
                listed.push((conversation, read_seq, visitor.map(|visitor| visitors::display_name(&visitor))));
            }
            Ok((listed, next_cursor, counts))
        })
        .await;
    let (listed, next_cursor, counts) = found?;
    let epoch = app.store.epoch();
    let conversations = listed
        .into_iter()
        .map(|(conversation, read_seq, visitor_name)| ListedConversation {
            team: conversation.team,
            visitor_name: visitor_name.unwrap_or_else(|| format!("Visitor #{}", conversation.visitor_id)),
            read_seq,
            conversation: conversation.view(epoch),
        })
        .collect();
    Ok(ConversationList { conversations, next_cursor, counts })
}

/// Closed conversations `in_scope` with ids below `cursor`, newest first.
fn closed_page(
    transaction: &redb::ReadTransaction,
    in_scope: &dyn Fn(&Conversation) -> bool,
    cursor: u64,
    limit: usize,
) -> Result<(Vec<Conversation>, Option<u64>), StorageError> {
    let table = transaction.open_table(tables::CONVERSATIONS)?;
    let mut found = Vec::new();
    let mut n_scanned = 0;
    let mut last_scanned = None;
    for entry in table.range(..cursor)?.rev() {
        let (key, value) = entry?;
        n_scanned += 1;
        last_scanned = Some(key.value());
        let conversation: Conversation = decode_json(value.value())?;
        if conversation.status == ConversationStatus::Closed && in_scope(&conversation) {
            found.push(conversation);
            if found.len() > limit {
                break;
            }
        }
        if n_scanned >= MAX_CLOSED_SCAN {
            break;
        }
    }
    if found.len() > limit {
        found.truncate(limit);
        let next = found.last().map(|c| c.id);
        return Ok((found, next));
    }
    // Stopped by the scan limit with more rows below: continue from the last row looked at.
    let more_below = n_scanned >= MAX_CLOSED_SCAN && last_scanned.is_some_and(|id| id > 1) && table.len()? > 0;
    Ok((found, if more_below { last_scanned } else { None }))
}

// ---------------------------------------------------------------------------------------------
// Visitors

/// `GET /api/v1/visitors/online`: visitors on the caller's sites right now.
pub async fn online_visitors(
    State(app): State<AppState>,
    Caller(principal): Caller,
) -> Result<axum::Json<Vec<OnlineVisitorView>>, ApiError> {
    let agent = agent_only(principal)?;
    Ok(axum::Json(app.online_visitors.list(|site| agent.serves_site(site))))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VisitorProfile {
    id: u64,
    site: String,
    name: String,
    email: Option<String>,
    /// The business's user id, bound by a signed (verified) claim.
    user_id: Option<String>,
    /// A user id the visitor claimed without a signature: a label, not proof of who they are.
    unverified_user_id: Option<String>,
    #[schema(value_type = Object)]
    attributes: BTreeMap<String, serde_json::Value>,
    blocked: bool,
    n_sessions: u64,
    returning: bool,
    #[schema(value_type = Option<Object>)]
    last_page: Option<PageView>,
    created_at: i64,
    last_seen_at: i64,
    /// Present while the visitor is online.
    #[schema(value_type = Option<Object>)]
    online: Option<OnlineVisitorView>,
}

async fn served_visitor(app: &AppState, caller: &Principal, visitor_id: u64) -> Result<Visitor, ApiError> {
    let visitor = app.store.read(move |transaction| visitors::get(transaction, visitor_id)).await?;
    let visitor = visitor.ok_or_else(|| ApiError::NotFound("no such visitor".into()))?;
    require_site(caller, &visitor.site, "visitor")?;
    Ok(visitor)
}

/// `GET /api/v1/visitors/{id}`: profile, attributes and whether the visitor is online.
#[utoipa::path(get, path = "/api/v1/visitors/{id}", tag = "visitors",
    params(("id" = u64, Path, description = "The visitor's id")),
    responses((status = 200, description = "The visitor's profile", body = VisitorProfile), super::openapi::CommonErrors))]
pub async fn visitor_profile(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(visitor_id): Path<u64>,
) -> Result<axum::Json<VisitorProfile>, ApiError> {
    let caller = staff_only(principal)?;
    let visitor = served_visitor(&app, &caller, visitor_id).await?;
    Ok(axum::Json(profile_of(&app, visitor)))
}

fn profile_of(app: &AppState, visitor: Visitor) -> VisitorProfile {
    VisitorProfile {
        name: visitors::display_name(&visitor),
        online: app.online_visitors.get(visitor.id),
        id: visitor.id,
        site: visitor.site,
        email: visitor.email,
        user_id: visitor.user_id,
        unverified_user_id: visitor.unverified_user_id,
        attributes: visitor.attributes,
        blocked: visitor.blocked,
        n_sessions: visitor.n_sessions,
        returning: visitor.n_sessions > 1,
        last_page: visitor.last_page,
        created_at: visitor.created_at,
        last_seen_at: visitor.last_seen_at,
    }
}

/// `PATCH /api/v1/visitors/{id}/attributes` `{"plan": "pro", "old_key": null}`: sets each key,
/// removes those given `null`, and keeps the rest.
#[utoipa::path(patch, path = "/api/v1/visitors/{id}/attributes", tag = "visitors",
    params(("id" = u64, Path, description = "The visitor's id")),
    request_body(content = Object, description = "Keys to set (JSON values) or remove (`null`)"),
    responses((status = 200, description = "The visitor's profile after the change", body = VisitorProfile), super::openapi::CommonErrors))]
pub async fn update_visitor_attributes(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(visitor_id): Path<u64>,
    Json(changes): Json<BTreeMap<String, serde_json::Value>>,
) -> Result<axum::Json<VisitorProfile>, ApiError> {
    let caller = staff_only(principal)?;
    served_visitor(&app, &caller, visitor_id).await?;
    let visitor = visitors::update_attributes(&app.store, visitor_id, changes).await?;
    Ok(axum::Json(profile_of(&app, visitor)))
}

/// `GET /api/v1/visitors/{id}/conversations`: the visitor's conversations, newest first.
pub async fn visitor_conversations(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(visitor_id): Path<u64>,
) -> Result<axum::Json<Vec<ConversationView>>, ApiError> {
    let agent = Principal::Agent(agent_only(principal)?);
    served_visitor(&app, &agent, visitor_id).await?;
    let mut found = app.store.read(move |transaction| conversations::of_visitor(transaction, visitor_id)).await?;
    found.reverse();
    let epoch = app.store.epoch();
    Ok(axum::Json(found.iter().map(|conversation| conversation.view(epoch)).collect()))
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
    let conversation = conversation_actions::start_with_visitor(&app.store, visitor.site, visitor_id, agent.id).await?;
    Ok((StatusCode::CREATED, axum::Json(conversation.view(app.store.epoch()))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// Also block the visitor's current address on the site.
    #[serde(default)]
    ip: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BlockAnswer {
    visitor_id: u64,
    blocked: bool,
    ip: Option<String>,
}

/// `POST /api/v1/visitors/{id}/block` `{"ip": true}`: blocks the visitor (and their address).
#[utoipa::path(post, path = "/api/v1/visitors/{id}/block", tag = "visitors",
    params(("id" = u64, Path, description = "The visitor's id")),
    request_body = BlockRequest,
    responses((status = 200, description = "The visitor is blocked and disconnected", body = BlockAnswer), super::openapi::CommonErrors))]
pub async fn block_visitor(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(visitor_id): Path<u64>,
    Json(request): Json<BlockRequest>,
) -> Result<axum::Json<BlockAnswer>, ApiError> {
    let caller = staff_only(principal)?;
    let visitor = served_visitor(&app, &caller, visitor_id).await?;
    let ip = if request.ip {
        let online = app.online_visitors.get(visitor_id).filter(|online| !online.ip.is_empty());
        match online {
            Some(online) => Some(online.ip),
            None => {
                return Err(ApiError::Conflict("ip: the visitor's address is known only while they are online".into()));
            }
        }
    } else {
        None
    };
    blocking::block_visitor(&app.store, visitor_id, ip.clone()).await?;
    blocking::disconnect(&app.hub, &app.online_visitors, &visitor.site, visitor_id, ip.as_deref());
    let by = caller.sender();
    tracing::info!(visitor_id, by_kind = ?by.kind, by_id = by.id, by_ip = ip.is_some(), "visitor blocked");
    Ok(axum::Json(BlockAnswer { visitor_id, blocked: true, ip }))
}

// ---------------------------------------------------------------------------------------------
// Conversation actions

/// A conversation the caller may see: 404 when there is none, and see [`outside_scope`] when it
/// belongs to a site the caller does not serve.
pub async fn served_conversation(
    app: &AppState,
    caller: &Principal,
    conversation_id: u64,
) -> Result<Conversation, ApiError> {
    let conversation = app.store.read(move |transaction| conversations::get(transaction, conversation_id)).await?;
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
    let target = app.store.read(move |transaction| agents::get(transaction, agent_id)).await?;
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
            let team = app.store.read(move |transaction| teams::get(transaction, team_id)).await?;
            if team.is_none_or(|team| team.site != site) {
                return Err(ApiError::Unprocessable("team_id: no such team on this conversation's site".into()));
            }
            TransferTarget::Team(team_id)
        }
        _ => return Err(ApiError::Unprocessable("give exactly one of agent_id and team_id".into())),
    };
    let conversation =
        conversation_actions::transfer(&app.store, conversation_id, target, note, caller.sender()).await?;
    Ok(axum::Json(conversation.view(app.store.epoch())))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReopenRequest {
    /// Who gets the reopened conversation; an agent calling may leave it out to keep it.
    agent_id: Option<u64>,
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
    let conversation = conversation_actions::reopen(&app.store, conversation_id, agent_id).await?;
    Ok(axum::Json(conversation.view(app.store.epoch())))
}

// ---------------------------------------------------------------------------------------------
// Canned replies

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiteQuery {
    /// One site's key.
    site: Option<String>,
}

/// `GET /api/v1/canned-replies?site=KEY`
pub async fn list_canned_replies(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<SiteQuery>,
) -> Result<axum::Json<Vec<CannedReply>>, ApiError> {
    let agent = agent_only(principal)?;
    let site = query.site.ok_or_else(|| ApiError::Unprocessable("site: required".into()))?;
    if !agent.serves_site(&site) {
        return Err(ApiError::NotFound("no such site".into()));
    }
    Ok(axum::Json(app.store.read(move |transaction| canned_replies::of_site(transaction, &site)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedReplyRequest {
    site: String,
    shortcut: String,
    text: String,
}

async fn existing_site(app: &AppState, site: &str) -> Result<(), ApiError> {
    if app.sites.get(site).await?.is_none() {
        return Err(ApiError::Unprocessable(format!("site {site:?}: no such site")));
    }
    Ok(())
}

/// `POST /api/v1/canned-replies` (admins)
pub async fn create_canned_reply(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Json(request): Json<CannedReplyRequest>,
) -> Result<(StatusCode, axum::Json<CannedReply>), ApiError> {
    let admin = admin_only(principal)?;
    existing_site(&app, &request.site).await?;
    let reply = canned_replies::save(&app.store, None, request.site, &request.shortcut, &request.text).await?;
    let target = format!("{} /{}", reply.site, reply.shortcut);
    audit::record(&app.store, &admin, "canned_reply.create", &target, reply.text.clone()).await;
    Ok((StatusCode::CREATED, axum::Json(reply)))
}

/// `PUT /api/v1/canned-replies/{id}` (admins)
pub async fn update_canned_reply(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<u64>,
    Json(request): Json<CannedReplyRequest>,
) -> Result<axum::Json<CannedReply>, ApiError> {
    let admin = admin_only(principal)?;
    existing_site(&app, &request.site).await?;
    let reply = canned_replies::save(&app.store, Some(id), request.site, &request.shortcut, &request.text).await?;
    let target = format!("{} /{}", reply.site, reply.shortcut);
    audit::record(&app.store, &admin, "canned_reply.update", &target, reply.text.clone()).await;
    Ok(axum::Json(reply))
}

/// `DELETE /api/v1/canned-replies/{id}` (admins)
pub async fn delete_canned_reply(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    let admin = admin_only(principal)?;
    let reply = app.store.read(move |transaction| canned_replies::get(transaction, id)).await?;
    let reply = reply.ok_or_else(|| ApiError::NotFound("no such canned reply".into()))?;
    let target = format!("{} /{}", reply.site, reply.shortcut);
    canned_replies::delete(&app.store, id, reply.site).await?;
    audit::record(&app.store, &admin, "canned_reply.delete", &target, String::new()).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Teams

/// `GET /api/v1/teams?site=KEY`: the teams of the caller's sites (one site when given).
#[utoipa::path(get, path = "/api/v1/teams", tag = "agents and teams",
    params(SiteQuery),
    responses((status = 200, description = "The teams, by id", body = Vec<Team>), super::openapi::CommonErrors))]
pub async fn list_teams(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<SiteQuery>,
) -> Result<axum::Json<Vec<Team>>, ApiError> {
    let caller = staff_only(principal)?;
    if let Some(site) = &query.site {
        require_site(&caller, site, "site")?;
    }
    let all = app.store.read(teams::list).await?;
    Ok(axum::Json(
        all.into_iter()
            .filter(|team| caller.serves_site(&team.site))
            .filter(|team| query.site.as_deref().is_none_or(|site| site == team.site))
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamRequest {
    site: String,
    name: String,
    #[serde(default)]
    members: Vec<u64>,
}

/// `POST /api/v1/teams` (admins)
pub async fn create_team(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Json(request): Json<TeamRequest>,
) -> Result<(StatusCode, axum::Json<Team>), ApiError> {
    let admin = admin_only(principal)?;
    existing_site(&app, &request.site).await?;
    let team = teams::create(&app.store, request.site, &request.name, request.members).await?;
    app.router.send(RoutingEvent::TeamChanged { team: team.clone() }).await;
    let detail = format!("site {}, members {:?}", team.site, team.members);
    audit::record(&app.store, &admin, "team.create", &team.name, detail).await;
    Ok((StatusCode::CREATED, axum::Json(team)))
}
