//! Visitor-facing HTTP: opening a visitor session and the widget's public site settings.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;

use super::error::ApiError;
use super::extract::Json;
use crate::conversations;
use crate::protocol::ConversationView;
use crate::server::AppState;
use crate::visitors::{self, SessionRequest};

#[derive(Serialize)]
pub struct SessionResponse {
    visitor_id: u64,
    token: String,
    epoch: u64,
    site: PublicSite,
    conversations: Vec<ConversationView>,
}

/// What any visitor may know about a site.
#[derive(Serialize)]
pub struct PublicSite {
    key: String,
    name: String,
    welcome_text: String,
    color: String,
    position: String,
    agents_online: bool,
    open_now: bool,
    prechat_form: bool,
    satisfaction_rating: bool,
    enforce_identity: bool,
}

fn public_site(app: &AppState, site: &crate::sites::Site) -> PublicSite {
    PublicSite {
        key: site.key.clone(),
        name: site.name.clone(),
        welcome_text: site.welcome_text.clone(),
        color: site.color.clone(),
        position: site.position.clone(),
        agents_online: !app.hub.site_agent_connections(&site.key).is_empty(),
        open_now: true,
        prechat_form: site.prechat_form,
        satisfaction_rating: site.satisfaction_rating,
        enforce_identity: site.enforce_identity,
    }
}

/// `POST /api/v1/visitor/session`
pub async fn open_session(
    State(app): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Json(request): Json<SessionRequest>,
) -> Result<axum::Json<SessionResponse>, ApiError> {
    let site = app.sites.get(&request.site).await?.ok_or_else(|| ApiError::NotFound("no such site".into()))?;
    let origin = headers.get("origin").and_then(|value| value.to_str().ok());
    if !site.site.allows_origin(origin, &super::own_origin(&headers)) {
        return Err(ApiError::OriginNotAllowed);
    }
    super::console_api::refuse_blocked_address(&app, &site.site.key, peer.ip()).await?;
    let opened = visitors::open_session(&app.store, &site.site, request).await?;
    let visitor_id = opened.visitor.id;
    let known = app.store.read(move |transaction| conversations::of_visitor(transaction, visitor_id)).await?;
    let epoch = app.store.epoch();
    Ok(axum::Json(SessionResponse {
        visitor_id,
        token: opened.token,
        epoch,
        site: public_site(&app, &site.site),
        conversations: known.iter().map(|conversation| conversation.view(epoch)).collect(),
    }))
}

/// `GET /api/v1/sites/{key}/widget`
pub async fn widget_settings(
    State(app): State<AppState>,
    Path(key): Path<String>,
) -> Result<axum::Json<PublicSite>, ApiError> {
    let site = app.sites.get(&key).await?.ok_or_else(|| ApiError::NotFound("no such site".into()))?;
    Ok(axum::Json(public_site(&app, &site.site)))
}
