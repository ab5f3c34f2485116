//! Visitor-facing HTTP: opening a visitor session and the widget's public site settings.

use crate::email::transcript::TranscriptStore;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::error::ApiError;
use super::extract::{Caller, Json};
use crate::chat::conversation_store::ConversationStore;
use crate::chat::message_store::MessageStore;
use crate::chat::offline_messages::{self, NewOfflineMessage, OfflineMessage, OfflineMessageStore};
use crate::net::AppState;
use crate::people::principal::Principal;
use crate::people::visitor_store::VisitorStore;
use crate::people::visitors::SessionRequest;
use crate::protocol::ConversationView;

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
    /// Whether an agent serving the site is online (the same as `status` says when open).
    agents_online: bool,
    open_now: bool,
    /// One status the widget shows (the `site_status` frame keeps it live).
    status: crate::protocol::SiteStatusView,
    /// The largest file a visitor may send, in bytes (the widget says so before uploading).
    max_upload_bytes: usize,
    prechat_form: bool,
    satisfaction_rating: bool,
    enforce_identity: bool,
    /// The site's bot answers new conversations: the widget lets visitors write to it even when
    /// no agent is online, and shows the offline form only when the bot hands off to nobody.
    bot: bool,
}

async fn public_site(app: &AppState, site: &crate::sites::Site) -> Result<PublicSite, ApiError> {
    let bot = app.bot.settings(&site.key).await?.enabled;
    Ok(PublicSite {
        key: site.key.clone(),
        name: site.name.clone(),
        welcome_text: site.welcome_text.clone(),
        color: site.color.clone(),
        position: site.position.clone(),
        agents_online: app.router.site_has_online_agent(&site.key),
        open_now: site.business_hours.is_open(jiff::Timestamp::now()),
        status: crate::sites::status::current(site, &app.router),
        max_upload_bytes: app.config.limits.max_upload_bytes,
        prechat_form: site.prechat_form,
        satisfaction_rating: site.satisfaction_rating,
        enforce_identity: site.enforce_identity,
        bot,
    })
}

/// `POST /api/v1/visitor/session`
pub async fn open_session(
    State(app): State<AppState>,
    client: super::client_address::ClientAddress,
    headers: HeaderMap,
    Json(request): Json<SessionRequest>,
) -> Result<axum::Json<SessionResponse>, ApiError> {
    if request.site.trim().is_empty() {
        return Err(ApiError::Unprocessable("site: required (the site key from the embed snippet)".into()));
    }
    let site = app.sites.get(&request.site).await?.ok_or_else(|| ApiError::NotFound("no such site".into()))?;
    let origin = headers.get("origin").and_then(|value| value.to_str().ok());
    if !site.site.allows_origin(origin, &super::own_origin(&headers)) {
        return Err(refuse_origin(&app, &site.site.key, origin.unwrap_or_default()));
    }
    super::visitors_api::refuse_blocked_address(&app, &site.site.key, client.ip()).await?;
    let client_ip = client.ip();
    if !app.store.token_is_live(&site.site.key, request.token.as_deref()).await? {
        app.visitor_limits.new_session(client_ip)?;
    }
    let opened = VisitorStore::open_session(&app.store, &site.site, request).await?;
    let visitor_id = opened.visitor.id;
    let known = ConversationStore::of_visitor(&app.store, visitor_id).await?;
    let epoch = app.store.epoch();
    Ok(axum::Json(SessionResponse {
        visitor_id,
        token: opened.token,
        epoch,
        site: public_site(&app, &site.site).await?,
        conversations: known.iter().map(|conversation| conversation.view(epoch)).collect(),
    }))
}

/// Records and logs (rate-limited) a request from an origin the site does not allow, and returns
/// the error to answer it with.
pub fn refuse_origin(app: &AppState, site_key: &str, origin: &str) -> ApiError {
    if app.refused_origins.record(site_key, origin) {
        tracing::warn!(
            site = %site_key,
            origin = %origin,
            "refused a page of an origin the site does not allow (allow it on the site's admin page)"
        );
    }
    ApiError::OriginNotAllowed
}

/// The body of a refused widget-settings request: kefu's error shape, plus the origin and the
/// site, which the loader prints in the console.
#[derive(Serialize)]
struct OriginRefusal<'a> {
    error: RefusalDetail<'a>,
    origin: &'a str,
    site: &'a str,
}

#[derive(Serialize)]
struct RefusalDetail<'a> {
    code: &'static str,
    message: &'a str,
}

/// `GET /api/v1/sites/{key}/widget`: read by the loader on the host page, so it answers with
/// CORS headers for the site's allowed origins. A refused origin gets a 403 that it may read
/// (naming the origin and the site), so the loader can say what is wrong instead of the
/// browser's bare CORS error.
pub async fn widget_settings(
    State(app): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    let site = app.sites.get(&key).await?.ok_or_else(|| ApiError::NotFound("no such site".into()))?;
    let origin = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok());
    let allowed = site.site.allows_origin(origin, &super::own_origin(&headers));
    let mut response = match origin {
        Some(origin) if !allowed => {
            let _ = refuse_origin(&app, &site.site.key, origin);
            let refusal = OriginRefusal {
                error: RefusalDetail {
                    code: "origin_not_allowed",
                    message: "this origin is not among the site's allowed origins",
                },
                origin,
                site: &site.site.key,
            };
            (StatusCode::FORBIDDEN, axum::Json(refusal)).into_response()
        }
        _ => axum::Json(public_site(&app, &site.site).await?).into_response(),
    };
    if let Some(value) = origin.and_then(|origin| HeaderValue::from_str(origin).ok()) {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
    Ok(response)
}

/// `POST /api/v1/visitor/offline-messages`: a message left when no agent can answer.
pub async fn leave_offline_message(
    State(app): State<AppState>,
    client: crate::net::http::client_address::ClientAddress,
    Caller(principal): Caller,
    Json(new_message): Json<NewOfflineMessage>,
) -> Result<(StatusCode, axum::Json<OfflineMessage>), ApiError> {
    let client_ip = client.ip();
    let Principal::Visitor(visitor) = principal else {
        return Err(ApiError::Forbidden("visitors only".into()));
    };
    offline_messages::validate(&new_message)?;
    app.visitor_limits.offline_message(client_ip, visitor.id)?;
    let message = OfflineMessageStore::leave(&app.store, &visitor.site, visitor.id, new_message).await?;
    Ok((StatusCode::CREATED, axum::Json(message)))
}

#[derive(serde::Deserialize)]
pub struct RatingRequest {
    score: u8,
    #[serde(default)]
    comment: String,
}

/// `POST /api/v1/conversations/{id}/rating`: the visitor rates a closed conversation, once.
pub async fn rate_conversation(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
    Json(rating): Json<RatingRequest>,
) -> Result<StatusCode, ApiError> {
    if !principal.is_visitor() {
        return Err(ApiError::Forbidden("visitors rate their own conversations".into()));
    }
    let conversation = MessageStore::conversation(&app.store, conversation_id).await?;
    if !conversation.is_some_and(|conversation| principal.can_access(&conversation)) {
        return Err(ApiError::NotFound("no such conversation".into()));
    }
    ConversationStore::rate(&app.store, conversation_id, rating.score, rating.comment).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
pub struct TranscriptRequest {
    email: String,
    /// The widget's language.
    #[serde(default)]
    lang: String,
}

/// `POST /api/v1/conversations/{id}/transcript`: emails the visitor the transcript of their
/// conversation (a few times an hour at most).
pub async fn email_transcript(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
    Json(request): Json<TranscriptRequest>,
) -> Result<StatusCode, ApiError> {
    let Principal::Visitor(visitor) = principal else {
        return Err(ApiError::Forbidden("visitors ask for their own transcripts".into()));
    };
    if !crate::email::plausible_address(&request.email) {
        return Err(ApiError::Unprocessable("email: an email address such as name@example.com is required".into()));
    }
    app.visitor_limits.transcript(visitor.id)?;
    TranscriptStore::request_transcript(&app.store, conversation_id, visitor.id, &request.email, &request.lang).await?;
    Ok(StatusCode::ACCEPTED)
}
