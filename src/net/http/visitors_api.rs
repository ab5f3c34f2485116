//! Visitors as the console sees them: the live list, profiles and their attributes, a visitor's
//! conversations, blocking (by record or address), and the check that refuses a blocked address.
//!
//! An agent sees only visitors of the sites they serve (anything else answers 404, so ids cannot
//! be probed); an API token sees only its site and gets 403 for anything of another.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Caller, Json, agent_only, require_site, staff_only};
use crate::chat::conversation_store::ConversationStore;
use crate::chat::message_store::MessageStore;
use crate::history::visitor_data::{self, ErasureReport, VisitorDataError, VisitorDataStore};
use crate::net::AppState;
use crate::people::blocking::{self, BlockError, BlockStore};
use crate::people::principal::Principal;
use crate::people::visitor_store::VisitorStore;
use crate::people::visitors::{self, Visitor};
use crate::protocol::ConversationView;
use crate::protocol::OnlineVisitorView;
use crate::protocol::PageView;

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
    if app.store.is_ip_blocked(&site, &address).await? {
        return Err(ApiError::Forbidden("blocked: this address may not chat on this site".into()));
    }
    Ok(())
}

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
    pub(crate) id: u64,
    pub(crate) site: String,
    pub(crate) name: String,
    pub(crate) email: Option<String>,
    /// The business's user id, bound by a signed (verified) claim.
    pub(crate) user_id: Option<String>,
    /// A user id the visitor claimed without a signature: a label, not proof of who they are.
    pub(crate) unverified_user_id: Option<String>,
    #[schema(value_type = Object)]
    pub(crate) attributes: BTreeMap<String, serde_json::Value>,
    pub(crate) blocked: bool,
    pub(crate) n_sessions: u64,
    pub(crate) returning: bool,
    #[schema(value_type = Option<Object>)]
    pub(crate) last_page: Option<PageView>,
    pub(crate) created_at: i64,
    pub(crate) last_seen_at: i64,
    /// Present while the visitor is online.
    #[schema(value_type = Option<Object>)]
    pub(crate) online: Option<OnlineVisitorView>,
}

pub(super) async fn served_visitor(app: &AppState, caller: &Principal, visitor_id: u64) -> Result<Visitor, ApiError> {
    let visitor = VisitorStore::get(&app.store, visitor_id).await?;
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
    let visitor = VisitorStore::update_attributes(&app.store, visitor_id, changes).await?;
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
    let mut found = ConversationStore::of_visitor(&app.store, visitor_id).await?;
    found.reverse();
    let epoch = MessageStore::epoch(&app.store);
    Ok(axum::Json(found.iter().map(|conversation| conversation.view(epoch)).collect()))
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
    app.store.set_visitor_blocked(visitor_id, true, ip.clone()).await?;
    blocking::disconnect(&app.hub, &app.online_visitors, &visitor.site, visitor_id, ip.as_deref());
    let by = caller.sender();
    tracing::info!(visitor_id, by_kind = ?by.kind, by_id = by.id, by_ip = ip.is_some(), "visitor blocked");
    Ok(axum::Json(BlockAnswer { visitor_id, blocked: true, ip }))
}

/// Who may export or erase a visitor's data: an admin, or an API token of the visitor's site
/// (a read-only token may export only); other agents get 403, a visitor of another site 403
/// for a token, and an unknown visitor 404.
async fn data_controller(
    app: &AppState,
    principal: Principal,
    visitor_id: u64,
) -> Result<(Principal, Visitor), ApiError> {
    let caller = match principal {
        Principal::Agent(agent) if agent.role == crate::people::agents::Role::Admin => Principal::Agent(agent),
        Principal::ApiToken(token) => Principal::ApiToken(token),
        _ => return Err(ApiError::Forbidden("admins only".into())),
    };
    let visitor = served_visitor(app, &caller, visitor_id).await?;
    Ok((caller, visitor))
}

/// `GET /api/v1/visitors/{id}/data`: everything kefu holds about the visitor, as a tar archive
/// (`visitor.json` and the attachments' files).
#[utoipa::path(get, path = "/api/v1/visitors/{id}/data", tag = "visitors",
    params(("id" = u64, Path, description = "The visitor's id")),
    responses(
        (status = 200, description = "The archive: visitor.json and attachments/ID", content_type = "application/x-tar", body = Vec<u8>),
        super::openapi::CommonErrors))]
pub async fn export_visitor_data(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(visitor_id): Path<u64>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let (caller, _) = data_controller(&app, principal, visitor_id).await?;
    let epoch = MessageStore::epoch(&app.store);
    let archive = visitor_data::export(&app.store, visitor_id, epoch).await.map_err(|error| match error {
        VisitorDataError::NotFound => ApiError::NotFound("no such visitor".into()),
        VisitorDataError::Storage(error) => error.into(),
        VisitorDataError::Archive(error) => ApiError::Internal(error.to_string()),
    })?;
    let archive = archive.ok_or_else(|| ApiError::NotFound("no such visitor".into()))?;
    crate::history::audit::record(
        &app.store,
        &caller,
        "visitor.export",
        &format!("visitor #{visitor_id}"),
        String::new(),
    )
    .await;
    let disposition = format!("attachment; filename=\"kefu-visitor-{visitor_id}.tar\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        archive,
    )
        .into_response())
}

/// `DELETE /api/v1/visitors/{id}/data`: erases the visitor's messages, attachments, offline
/// messages, leads, search entries, webhook deliveries and record. The audit log keeps the
/// visitor's id and the counts, nothing else.
#[utoipa::path(delete, path = "/api/v1/visitors/{id}/data", tag = "visitors",
    params(("id" = u64, Path, description = "The visitor's id")),
    responses((status = 200, description = "What was erased", body = ErasureReport), super::openapi::CommonErrors))]
pub async fn erase_visitor_data(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(visitor_id): Path<u64>,
) -> Result<axum::Json<ErasureReport>, ApiError> {
    let (caller, _) = data_controller(&app, principal, visitor_id).await?;
    let report = app.store.erase_visitor(visitor_id, &app.search).await.map_err(|error| match error {
        VisitorDataError::NotFound => ApiError::NotFound("no such visitor".into()),
        VisitorDataError::Storage(error) => error.into(),
        VisitorDataError::Archive(error) => ApiError::Internal(error.to_string()),
    })?;
    crate::history::audit::record(
        &app.store,
        &caller,
        "visitor.erase",
        &format!("visitor #{visitor_id}"),
        report.audit_detail(),
    )
    .await;
    Ok(axum::Json(report))
}
