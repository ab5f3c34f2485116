//! Admin pages for teams: list and create per site, edit members, delete. Routing rules that
//! send conversations to teams are on each site's page.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::form::FieldErrors;
use super::{AdminPost, AdminUser, Directory, Layout, Notice, directory, done, internal_error, not_found, render};
use crate::net::AppState;
use crate::people::agents::Agent;
use crate::people::team_store::TeamStore;
use crate::people::teams::{Team, TeamError};
use crate::routing::RoutingEvent;
use crate::sites::Site;

/// A team's name and members as typed.
#[derive(Default)]
pub struct TeamForm {
    pub site: String,
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin/teams.html")]
struct TeamsPage {
    layout: Layout,
    teams: Vec<Team>,
    sites: Vec<Site>,
    agents: Vec<Agent>,
    form: TeamForm,
    errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "admin/team_form.html")]
struct TeamPage {
    layout: Layout,
    team: Team,
    agents: Vec<Agent>,
    form: TeamForm,
    errors: FieldErrors,
}

impl TeamsPage {
    fn agent_name(&self, id: &u64) -> String {
        self.agents.iter().find(|agent| agent.id == *id).map_or_else(|| format!("#{id}"), |agent| agent.name.clone())
    }

    fn site_name(&self, key: &str) -> String {
        self.sites.iter().find(|site| site.key == key).map_or_else(|| key.to_owned(), |site| site.name.clone())
    }
}

fn members_of(form: &TeamForm, errors: &mut FieldErrors) -> Vec<u64> {
    let members: Vec<u64> = form.members.iter().filter_map(|member| member.parse().ok()).collect();
    if members.len() != form.members.len() {
        errors.add("members", "choose members from the list");
    }
    members
}

fn team_error(error: TeamError, errors: &mut FieldErrors, admin: &AdminUser) -> Option<Response> {
    match error {
        TeamError::Invalid(error) => {
            errors.add_error(error);
            None
        }
        TeamError::NotFound => Some(not_found(admin.lang, admin.t().noun_team)),
        TeamError::Storage(error) => Some(internal_error(error)),
    }
}

/// `GET /admin/teams`
pub async fn list(State(app): State<AppState>, admin: AdminUser, Query(notice): Query<Notice>) -> Response {
    let Directory { teams, sites, agents } = match directory(&app).await.map(Directory::for_teams) {
        Ok(directory) => directory,
        Err(response) => return response,
    };
    let layout = admin.layout("teams", notice.take());
    let page = TeamsPage { layout, teams, sites, agents, form: TeamForm::default(), errors: FieldErrors::default() };
    render(StatusCode::OK, &page)
}

/// `POST /admin/teams`
pub async fn create(State(app): State<AppState>, post: AdminPost) -> Response {
    let form =
        TeamForm { site: post.form.text("site"), name: post.form.text("name"), members: post.form.all("members") };
    let mut errors = FieldErrors::default();
    let members = members_of(&form, &mut errors);
    let exists = matches!(app.sites.get(&form.site).await, Ok(Some(_)));
    if !exists {
        errors.add("site", "choose a site");
    }
    if errors.is_empty() {
        match TeamStore::create(&app.store, form.site.clone(), &form.name, members).await {
            Ok(team) => {
                app.router.send(RoutingEvent::TeamChanged { team: team.clone() }).await;
                let detail = format!("site {}, members {:?}", team.site, team.members);
                post.admin.audit(&app, "team.create", &team.name, detail).await;
                return done("/admin/teams", &super::fill(post.admin.t().team_created, &[("name", &team.name)]));
            }
            Err(error) => {
                if let Some(response) = team_error(error, &mut errors, &post.admin) {
                    return response;
                }
            }
        }
    }
    let Directory { teams, sites, agents } = match directory(&app).await.map(Directory::for_teams) {
        Ok(directory) => directory,
        Err(response) => return response,
    };
    let page = TeamsPage { layout: post.admin.layout("teams", None), teams, sites, agents, form, errors };
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// `GET /admin/teams/{id}`
pub async fn edit_form(
    State(app): State<AppState>,
    admin: AdminUser,
    Path(id): Path<u64>,
    Query(notice): Query<Notice>,
) -> Response {
    let Directory { teams, agents, .. } = match directory(&app).await.map(Directory::for_teams) {
        Ok(directory) => directory,
        Err(response) => return response,
    };
    let Some(team) = teams.into_iter().find(|team| team.id == id) else {
        return not_found(admin.lang, admin.t().noun_team);
    };
    let form = TeamForm {
        site: team.site.clone(),
        name: team.name.clone(),
        members: team.members.iter().map(u64::to_string).collect(),
    };
    let agents = agents.into_iter().filter(|agent| agent.serves_site(&team.site)).collect();
    let page =
        TeamPage { layout: admin.layout("teams", notice.take()), team, agents, form, errors: FieldErrors::default() };
    render(StatusCode::OK, &page)
}

/// `POST /admin/teams/{id}`
pub async fn save(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    let Directory { teams, agents, .. } = match directory(&app).await.map(Directory::for_teams) {
        Ok(directory) => directory,
        Err(response) => return response,
    };
    let Some(team) = teams.into_iter().find(|team| team.id == id) else {
        return not_found(post.admin.lang, post.admin.t().noun_team);
    };
    let form = TeamForm { site: team.site.clone(), name: post.form.text("name"), members: post.form.all("members") };
    let mut errors = FieldErrors::default();
    let members = members_of(&form, &mut errors);
    if errors.is_empty() {
        match TeamStore::update(&app.store, id, &form.name, members).await {
            Ok(saved) => {
                app.router.send(RoutingEvent::TeamChanged { team: saved.clone() }).await;
                let detail = format!("name {:?}, members {:?}", saved.name, saved.members);
                post.admin.audit(&app, "team.update", &team.name, detail).await;
                return done(&format!("/admin/teams/{id}"), post.admin.t().saved);
            }
            Err(error) => {
                if let Some(response) = team_error(error, &mut errors, &post.admin) {
                    return response;
                }
            }
        }
    }
    let agents = agents.into_iter().filter(|agent| agent.serves_site(&team.site)).collect();
    let page = TeamPage { layout: post.admin.layout("teams", None), team, agents, form, errors };
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// `POST /admin/teams/{id}/delete`
pub async fn delete(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    let team = match TeamStore::delete(&app.store, id).await {
        Ok(team) => team,
        Err(TeamError::NotFound) => return not_found(post.admin.lang, post.admin.t().noun_team),
        Err(error) => return internal_error(error),
    };
    app.sites.invalidate(&team.site);
    app.router.send(RoutingEvent::TeamDeleted { team_id: id }).await;
    post.admin.audit(&app, "team.delete", &team.name, format!("site {}", team.site)).await;
    done("/admin/teams", &super::fill(post.admin.t().team_deleted, &[("name", &team.name)]))
}
