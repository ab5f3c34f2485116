//! Leads over HTTP: the list with its filters and counts, one lead, its status, its assignee,
//! and a reply in the visitor's conversation. Agents and API tokens see the leads of the sites
//! they serve; every change is one call into `chat::leads`, which publishes the `lead` frame.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::conversations_api::{agent_serving, append_error, refusal, stored_view};
use super::error::ApiError;
use super::extract::{Caller, Json, require_site, staff_only};
use crate::base::secrets;
use crate::chat::lead_store::LeadStore;
use crate::chat::leads::{self, Lead, LeadCounts, LeadError, LeadFilter, LeadReply, LeadStatus};
use crate::chat::messages;
use crate::net::AppState;
use crate::people::principal::Principal;
use crate::protocol::{LeadView, MessageView};

impl From<LeadError> for ApiError {
    fn from(error: LeadError) -> Self {
        match error {
            LeadError::NotFound => ApiError::NotFound(error.to_string()),
            LeadError::Invalid(message) => ApiError::Unprocessable(message),
            LeadError::Conversation(error) => error.into(),
            LeadError::Append(error) => append_error(error),
            LeadError::Storage(error) => error.into(),
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeadQuery {
    /// Only leads of this status.
    #[param(pattern = "^(new|open|done)$")]
    status: Option<String>,
    /// Only this site's leads.
    site: Option<String>,
    /// Only leads assigned to this agent.
    assigned_agent: Option<u64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<u64>,
    /// 1 to 200; 50 when left out.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
}

/// A page of leads, newest first, with the counts per status of every lead the filters (but
/// `status` and `cursor`) match.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LeadList {
    leads: Vec<LeadView>,
    counts: LeadCounts,
    /// Pass as `cursor` for the next page; `null` at the end.
    #[schema(required = true)]
    next_cursor: Option<u64>,
}

/// `GET /api/v1/leads?status=new|open|done&site=&assigned_agent=&cursor=&limit=`
#[utoipa::path(get, path = "/api/v1/leads", tag = "leads",
    params(LeadQuery),
    responses((status = 200, description = "A page of leads, newest first", body = LeadList), super::openapi::CommonErrors))]
pub async fn list(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<LeadQuery>,
) -> Result<axum::Json<LeadList>, ApiError> {
    let caller = staff_only(principal)?;
    let status = query.status.as_deref().map(LeadStatus::parse).transpose()?;
    let limit = match query.limit {
        None => 50,
        Some(0) => return Err(ApiError::Unprocessable("limit: must be 1 to 200".into())),
        Some(limit) => limit.min(leads::MAX_PAGE),
    };
    let filter = LeadFilter {
        status,
        site: query.site.filter(|site| !site.is_empty()),
        assigned_agent: query.assigned_agent,
        before: query.cursor,
        limit,
    };
    let page = LeadStore::list_leads(&app.store, filter, move |site| caller.serves_site(site)).await?;
    Ok(axum::Json(LeadList {
        leads: page.leads.iter().map(Lead::view).collect(),
        counts: page.counts,
        next_cursor: page.next_cursor,
    }))
}

/// The lead, if the caller serves its site (404 for agents otherwise, 403 for tokens).
async fn served_lead(app: &AppState, caller: &Principal, lead_id: u64) -> Result<Lead, ApiError> {
    let lead = LeadStore::lead(&app.store, lead_id).await?;
    let lead = lead.ok_or_else(|| ApiError::NotFound("no such lead".into()))?;
    require_site(caller, &lead.site, "lead")?;
    Ok(lead)
}

/// `GET /api/v1/leads/{id}`
#[utoipa::path(get, path = "/api/v1/leads/{id}", tag = "leads",
    params(("id" = u64, Path, description = "The lead's id")),
    responses((status = 200, description = "The lead", body = LeadView), super::openapi::CommonErrors))]
pub async fn get(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(lead_id): Path<u64>,
) -> Result<axum::Json<LeadView>, ApiError> {
    let caller = staff_only(principal)?;
    Ok(axum::Json(served_lead(&app, &caller, lead_id).await?.view()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `new`, `open` or `done`.
    #[schema(pattern = "^(new|open|done)$")]
    status: String,
}

/// `POST /api/v1/leads/{id}/status` `{"status": "done"}`
#[utoipa::path(post, path = "/api/v1/leads/{id}/status", tag = "leads",
    params(("id" = u64, Path, description = "The lead's id")),
    request_body = StatusRequest,
    responses((status = 200, description = "The changed lead", body = LeadView), super::openapi::CommonErrors))]
pub async fn set_status(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(lead_id): Path<u64>,
    Json(request): Json<StatusRequest>,
) -> Result<axum::Json<LeadView>, ApiError> {
    let caller = staff_only(principal)?;
    let status = LeadStatus::parse(&request.status)?;
    served_lead(&app, &caller, lead_id).await?;
    Ok(axum::Json(LeadStore::set_lead_status(&app.store, lead_id, status).await?.view()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadAssignRequest {
    /// An enabled agent who serves the lead's site; `null` to unassign.
    #[schema(required = true)]
    agent_id: Option<u64>,
}

/// `POST /api/v1/leads/{id}/assign` `{"agent_id": 3}`: gives the lead to an agent of its site
/// (oneself or another), or to nobody with `null`.
#[utoipa::path(post, path = "/api/v1/leads/{id}/assign", tag = "leads",
    params(("id" = u64, Path, description = "The lead's id")),
    request_body = LeadAssignRequest,
    responses((status = 200, description = "The changed lead", body = LeadView), super::openapi::CommonErrors))]
pub async fn assign(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(lead_id): Path<u64>,
    Json(request): Json<LeadAssignRequest>,
) -> Result<axum::Json<LeadView>, ApiError> {
    let caller = staff_only(principal)?;
    let lead = served_lead(&app, &caller, lead_id).await?;
    if let Some(agent_id) = request.agent_id {
        agent_serving(&app, agent_id, &lead.site, "agent_id").await?;
    }
    Ok(axum::Json(LeadStore::assign_lead(&app.store, lead_id, request.agent_id).await?.view()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadReplyRequest {
    /// The answer: not only spaces, at most `limits.max_text_chars` characters.
    #[schema(min_length = 1, pattern = r"\S")]
    text: String,
    /// Makes a retry safe, as for messages; a random one is made when left out.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    client_id: Option<String>,
    /// The agent a token answers as; an agent calling answers as themselves.
    agent_id: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LeadReplyAnswer {
    lead: LeadView,
    message: MessageView,
}

/// `POST /api/v1/leads/{id}/reply` `{"text": "..."}`: answers in the visitor's conversation
/// (reopened for the agent if it was closed); the lead becomes open and the agent's if it had
/// nobody.
#[utoipa::path(post, path = "/api/v1/leads/{id}/reply", tag = "leads",
    params(("id" = u64, Path, description = "The lead's id")),
    request_body = LeadReplyRequest,
    responses(
        (status = 201, description = "The reply, stored in the visitor's conversation, and the lead", body = LeadReplyAnswer),
        (status = 200, description = "A retry: the reply first stored with this client_id", body = LeadReplyAnswer),
        super::openapi::CommonErrors))]
pub async fn reply(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(lead_id): Path<u64>,
    Json(request): Json<LeadReplyRequest>,
) -> Result<(StatusCode, axum::Json<LeadReplyAnswer>), ApiError> {
    let caller = staff_only(principal)?;
    let trace_id = secrets::new_trace_id();
    // The message's trace, linked to the call's (crate::base::trace_export).
    let _message_span = crate::base::trace_export::message_span(trace_id);
    let client_id = request.client_id.unwrap_or_else(|| format!("lead-{}", secrets::new_hex_id(12)));
    messages::validate_client_id(&client_id).map_err(ApiError::Unprocessable)?;
    let text = messages::validate_text(&request.text, app.config.limits.max_text_chars, false)
        .map_err(ApiError::Unprocessable)?;
    let lead = served_lead(&app, &caller, lead_id).await?;
    let sender = match (&caller, request.agent_id) {
        (Principal::Agent(agent), None) => Principal::Agent(agent.clone()).sender(),
        (Principal::Agent(agent), Some(agent_id)) if agent_id == agent.id => caller.sender(),
        (Principal::Agent(_), Some(_)) => {
            return Err(ApiError::Forbidden("agent_id: agents answer only as themselves".into()));
        }
        (_, None) => return Err(ApiError::Unprocessable("agent_id: required to answer as an agent".into())),
        (_, Some(agent_id)) => Principal::Agent(agent_serving(&app, agent_id, &lead.site, "agent_id").await?).sender(),
    };
    let (_, text) = messages::filter_for_site(&app.sites, &lead.site, text, trace_id).await.map_err(refusal)?;
    let (lead, appended) =
        LeadStore::reply_to_lead(&app.store, lead_id, LeadReply { sender, client_id, text, trace_id }).await?;
    let message = stored_view(&app, &appended).await?;
    let status = if appended.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, axum::Json(LeadReplyAnswer { lead: lead.view(), message })))
}
