//! A site's canned replies: listed for the console's reply menu, created, changed and deleted by
//! the agents of the site.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{Caller, Json, SiteQuery, admin_only, agent_only, existing_site};
use crate::chat::canned_replies::{CannedReply, CannedReplyError, CannedReplyStore};
use crate::history::audit;
use crate::net::AppState;

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
    Ok(axum::Json(CannedReplyStore::of_site(&app.store, &site).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedReplyRequest {
    site: String,
    shortcut: String,
    text: String,
}

/// `POST /api/v1/canned-replies` (admins)
pub async fn create_canned_reply(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Json(request): Json<CannedReplyRequest>,
) -> Result<(StatusCode, axum::Json<CannedReply>), ApiError> {
    let admin = admin_only(principal)?;
    existing_site(&app, &request.site).await?;
    let reply = CannedReplyStore::save(&app.store, None, request.site, &request.shortcut, &request.text).await?;
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
    let reply = CannedReplyStore::save(&app.store, Some(id), request.site, &request.shortcut, &request.text).await?;
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
    let reply = CannedReplyStore::canned_reply(&app.store, id).await?;
    let reply = reply.ok_or_else(|| ApiError::NotFound("no such canned reply".into()))?;
    let target = format!("{} /{}", reply.site, reply.shortcut);
    CannedReplyStore::delete(&app.store, id, reply.site).await?;
    audit::record(&app.store, &admin, "canned_reply.delete", &target, String::new()).await;
    Ok(StatusCode::NO_CONTENT)
}
