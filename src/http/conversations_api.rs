//! Conversations over HTTP: the agent's list of open conversations and history pages.

use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::Caller;
use crate::conversations;
use crate::messages;
use crate::principal::Principal;
use crate::protocol::{ConversationView, MessageView};
use crate::server::AppState;

/// Messages in a history page when the client does not say.
const DEFAULT_PAGE: usize = 50;
/// Most messages in one history page.
const MAX_PAGE: usize = 200;

#[derive(Deserialize)]
pub struct PageQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct MessagePage {
    conversation_id: u64,
    epoch: u64,
    last_seq: u64,
    messages: Vec<MessageView>,
    next_before: Option<u64>,
}

/// `GET /api/v1/conversations/{id}/messages?before=SEQ&limit=N`
pub async fn messages(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<u64>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<MessagePage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::Unprocessable(format!("limit: must be 1 to {MAX_PAGE}")));
    }
    let is_visitor = principal.is_visitor();
    let before = query.before;
    let found = app
        .store
        .read(move |transaction| {
            let Some(conversation) = conversations::get(transaction, conversation_id)?
                .filter(|conversation| principal.can_access(conversation))
            else {
                return Ok(None);
            };
            // Read one more than asked, to know whether an older page exists.
            let page = messages::page_before(transaction, conversation_id, before, limit + 1)?;
            Ok(Some((conversation, page)))
        })
        .await?;
    let (conversation, mut page) = found.ok_or_else(|| ApiError::NotFound("no such conversation".into()))?;
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
    Ok(axum::Json(MessagePage { conversation_id, epoch, last_seq: conversation.last_seq, messages, next_before }))
}

/// `GET /api/v1/conversations`: the open conversations of the agent's sites; with `state=`,
/// one page of a console list (see `console_api::list_by_state`).
pub async fn list(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<super::console_api::ListQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Principal::Agent(agent) = principal else {
        return Err(ApiError::Forbidden("agents only".into()));
    };
    if query.state.is_some() || query.cursor.is_some() || query.limit.is_some() {
        return Ok(axum::Json(super::console_api::list_by_state(app, agent, query).await?).into_response());
    }
    let open = app.store.read(conversations::list_open).await?;
    let epoch = app.store.epoch();
    let views: Vec<ConversationView> = open
        .iter()
        .filter(|conversation| agent.serves_site(&conversation.site))
        .map(|conversation| conversation.view(epoch))
        .collect();
    Ok(axum::Json(views).into_response())
}

#[derive(Deserialize)]
pub struct OfflineQuery {
    site: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/offline-messages?site=KEY`: what visitors left, newest first, for agents of the site.
pub async fn offline_messages(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<OfflineQuery>,
) -> Result<axum::Json<Vec<crate::offline_messages::OfflineMessage>>, ApiError> {
    let Principal::Agent(agent) = principal else {
        return Err(ApiError::Forbidden("agents only".into()));
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let site = query.site;
    let found = app
        .store
        .read(move |transaction| {
            crate::offline_messages::list(
                transaction,
                |key| agent.serves_site(key) && site.as_deref().is_none_or(|site| site == key),
                limit,
            )
        })
        .await?;
    Ok(axum::Json(found))
}
