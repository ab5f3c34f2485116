//! Agents and teams as the console and integrations list them: the agent list with presence, and
//! a site's teams.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Caller, Json, SiteQuery, admin_only, existing_site, require_site, staff_only};
use crate::history::audit;
use crate::net::AppState;
use crate::people::agent_administration::AgentAdministration;
use crate::people::agents::Role;
use crate::people::team_store::TeamStore;
use crate::people::teams::{Team, TeamError};
use crate::protocol::Presence;
use crate::routing::RoutingEvent;

impl From<TeamError> for ApiError {
    fn from(error: TeamError) -> Self {
        match error {
            TeamError::NotFound => ApiError::NotFound(error.to_string()),
            TeamError::Invalid(error) => ApiError::Unprocessable(error.to_string()),
            TeamError::Storage(error) => error.into(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AgentListed {
    id: u64,
    name: String,
    email: String,
    role: Role,
    sites: Vec<String>,
    presence: Presence,
    /// The agent's picture (an initial-letter one when they set none).
    avatar_url: String,
}

/// `GET /api/v1/agents`: the agents who share a site with the caller, with their presence.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents and teams",
    responses((status = 200, description = "The agents of the token's site (admins serve every site)", body = Vec<AgentListed>), super::openapi::CommonErrors))]
pub async fn list_agents(
    State(app): State<AppState>,
    Caller(principal): Caller,
) -> Result<axum::Json<Vec<AgentListed>>, ApiError> {
    let caller = staff_only(principal)?;
    let all = AgentAdministration::list(&app.store).await?;
    let listed = all
        .into_iter()
        .filter(|agent| !agent.disabled)
        .filter(|agent| {
            caller.is_admin() || agent.role == Role::Admin || agent.sites.iter().any(|site| caller.serves_site(site))
        })
        .map(|agent| AgentListed {
            presence: app.router.presence_of(agent.id),
            avatar_url: super::agent_api::avatar_url(&agent),
            id: agent.id,
            name: agent.name,
            email: agent.email,
            role: agent.role,
            sites: agent.sites,
        })
        .collect();
    Ok(axum::Json(listed))
}

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
    let all = TeamStore::list(&app.store).await?;
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
    let team = TeamStore::create(&app.store, request.site, &request.name, request.members).await?;
    app.router.send(RoutingEvent::TeamChanged { team: team.clone() }).await;
    let detail = format!("site {}, members {:?}", team.site, team.members);
    audit::record(&app.store, &admin, "team.create", &team.name, detail).await;
    Ok((StatusCode::CREATED, axum::Json(team)))
}
