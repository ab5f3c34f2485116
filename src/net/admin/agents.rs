//! Admin pages for agents: list and create, edit (role, capacity, sites, teams, disabled), and
//! reset a password or two-factor login; require two-factor login for everyone.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::form::FieldErrors;
use super::{AdminPost, AdminUser, Directory, Layout, Notice, directory, done, internal_error, not_found, render};
use crate::net::AppState;
use crate::people::agent_store::AgentStore;
use crate::people::agents::{self, Agent, AgentChanges, AgentError, NewAgent, Role};
use crate::people::team_store::TeamStore;
use crate::people::teams::{Team, TeamError};
use crate::routing::RoutingEvent;
use crate::sites::Site;

/// The new-agent form as typed.
#[derive(Default)]
pub struct NewAgentForm {
    pub email: String,
    pub name: String,
    pub role: String,
    pub capacity: String,
    pub sites: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin/agents.html")]
struct AgentsPage {
    layout: Layout,
    agents: Vec<Agent>,
    sites: Vec<Site>,
    form: NewAgentForm,
    errors: FieldErrors,
    /// The password of the agent just created, shown once.
    created: Option<(String, String)>,
    /// Whether every agent must log in with a second factor.
    two_factor_required: bool,
}

/// Whether the installation requires two-factor login, for the agents page.
async fn two_factor_required(app: &AppState) -> Result<bool, Response> {
    app.store.two_factor_required().await.map_err(internal_error)
}

/// The edit form as typed.
pub struct AgentForm {
    pub name: String,
    pub role: String,
    pub capacity: String,
    pub sites: Vec<String>,
    pub teams: Vec<String>,
    pub disabled: bool,
    pub email_notifications_off: bool,
}

#[derive(Template)]
#[template(path = "admin/agent_form.html")]
struct AgentPage {
    layout: Layout,
    agent: Agent,
    form: AgentForm,
    errors: FieldErrors,
    sites: Vec<Site>,
    teams: Vec<Team>,
    /// A password just set, shown once.
    new_password: Option<String>,
}

fn role_of(text: &str, errors: &mut FieldErrors) -> Role {
    text.parse().unwrap_or_else(|message: String| {
        errors.add("role", message);
        Role::Agent
    })
}

fn capacity_of(text: &str, errors: &mut FieldErrors) -> u32 {
    match text.trim().parse::<u32>() {
        Ok(capacity) if (1..=agents::MAX_CAPACITY).contains(&capacity) => capacity,
        _ => {
            errors.add("capacity", format!("a whole number from 1 to {}", agents::MAX_CAPACITY));
            1
        }
    }
}

/// `GET /admin/agents`
pub async fn list(State(app): State<AppState>, admin: AdminUser, Query(notice): Query<Notice>) -> Response {
    let directory = match directory(&app).await {
        Ok(directory) => directory,
        Err(response) => return response,
    };
    let form = NewAgentForm {
        role: "agent".into(),
        capacity: app.config.routing.default_capacity.to_string(),
        ..NewAgentForm::default()
    };
    let two_factor_required = match two_factor_required(&app).await {
        Ok(required) => required,
        Err(response) => return response,
    };
    render(
        StatusCode::OK,
        &AgentsPage {
            layout: admin.layout("agents", notice.take()),
            agents: directory.agents,
            sites: directory.sites,
            form,
            errors: FieldErrors::default(),
            created: None,
            two_factor_required,
        },
    )
}

/// `POST /admin/agents`: creates an agent with a generated password, shown once.
pub async fn create(State(app): State<AppState>, post: AdminPost) -> Response {
    let form = NewAgentForm {
        email: post.form.text("email").trim().to_owned(),
        name: post.form.text("name").trim().to_owned(),
        role: post.form.text("role"),
        capacity: post.form.text("capacity"),
        sites: post.form.all("sites"),
    };
    let mut errors = FieldErrors::default();
    let role = role_of(&form.role, &mut errors);
    let capacity = capacity_of(&form.capacity, &mut errors);
    let password = crate::base::secrets::new_password();
    let mut created = None;
    if errors.is_empty() {
        let new_agent = NewAgent {
            email: form.email.clone(),
            name: form.name.clone(),
            password: password.clone(),
            role,
            sites: form.sites.clone(),
            capacity,
        };
        match agents::create(&app.store, new_agent).await {
            Ok(agent) => {
                post.admin
                    .audit(
                        &app,
                        "agent.create",
                        &agent.email,
                        format!("role {:?}, sites {:?}", agent.role, agent.sites),
                    )
                    .await;
                created = Some((agent.email, password));
            }
            Err(AgentError::DuplicateEmail(email)) => errors.add("email", format!("{email} already has an account")),
            Err(AgentError::Invalid(error)) => errors.add_error(error),
            Err(error) => return internal_error(error),
        }
    }
    let directory = match directory(&app).await {
        Ok(directory) => directory,
        Err(response) => return response,
    };
    let two_factor_required = match two_factor_required(&app).await {
        Ok(required) => required,
        Err(response) => return response,
    };
    let status = if errors.is_empty() { StatusCode::CREATED } else { StatusCode::UNPROCESSABLE_ENTITY };
    let form = if created.is_some() {
        NewAgentForm {
            role: "agent".into(),
            capacity: app.config.routing.default_capacity.to_string(),
            ..NewAgentForm::default()
        }
    } else {
        form
    };
    render(
        status,
        &AgentsPage {
            layout: post.admin.layout("agents", None),
            agents: directory.agents,
            sites: directory.sites,
            form,
            errors,
            created,
            two_factor_required,
        },
    )
}

fn edit_page(
    admin: &AdminUser,
    notice: Option<String>,
    agent: Agent,
    form: AgentForm,
    errors: FieldErrors,
    directory: Directory,
    new_password: Option<String>,
) -> AgentPage {
    AgentPage {
        layout: admin.layout("agents", notice),
        agent,
        form,
        errors,
        sites: directory.sites,
        teams: directory.teams,
        new_password,
    }
}

fn form_of(agent: &Agent, teams: &[Team]) -> AgentForm {
    AgentForm {
        name: agent.name.clone(),
        role: if agent.role == Role::Admin { "admin" } else { "agent" }.to_owned(),
        capacity: agent.capacity.to_string(),
        sites: agent.sites.clone(),
        teams: teams.iter().filter(|team| team.members.contains(&agent.id)).map(|team| team.id.to_string()).collect(),
        disabled: agent.disabled,
        email_notifications_off: agent.email_notifications_off,
    }
}

/// `GET /admin/agents/{id}`
pub async fn edit_form(
    State(app): State<AppState>,
    admin: AdminUser,
    Path(id): Path<u64>,
    Query(notice): Query<Notice>,
) -> Response {
    let directory = match directory(&app).await {
        Ok(directory) => directory,
        Err(response) => return response,
    };
    let Some(agent) = directory.agents.iter().find(|agent| agent.id == id).cloned() else {
        return not_found(admin.lang, admin.t().noun_agent);
    };
    let form = form_of(&agent, &directory.teams);
    render(StatusCode::OK, &edit_page(&admin, notice.take(), agent, form, FieldErrors::default(), directory, None))
}

/// `POST /admin/agents/{id}`
pub async fn save(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    let directory = match directory(&app).await {
        Ok(directory) => directory,
        Err(response) => return response,
    };
    let Some(before) = directory.agents.iter().find(|agent| agent.id == id).cloned() else {
        return not_found(post.admin.lang, post.admin.t().noun_agent);
    };
    let form = AgentForm {
        name: post.form.text("name"),
        role: post.form.text("role"),
        capacity: post.form.text("capacity"),
        sites: post.form.all("sites"),
        teams: post.form.all("teams"),
        disabled: post.form.checked("disabled"),
        email_notifications_off: !post.form.checked("email_notifications"),
    };
    let mut errors = FieldErrors::default();
    let role = role_of(&form.role, &mut errors);
    let capacity = capacity_of(&form.capacity, &mut errors);
    let team_ids: Vec<u64> = form.teams.iter().filter_map(|team| team.parse().ok()).collect();
    if team_ids.len() != form.teams.len() {
        errors.add("teams", "choose teams from the list");
    }
    let invalid = |errors: FieldErrors, form: AgentForm, directory: Directory| {
        let page = edit_page(&post.admin, None, before.clone(), form, errors, directory, None);
        render(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    if !errors.is_empty() {
        return invalid(errors, form, directory);
    }
    let changes = AgentChanges {
        name: form.name.clone(),
        role,
        capacity,
        sites: form.sites.clone(),
        disabled: form.disabled,
        email_notifications_off: form.email_notifications_off,
    };
    let agent = match agents::update(&app.store, id, changes).await {
        Ok(agent) => agent,
        Err(AgentError::Invalid(error)) => {
            errors.add_error(error);
            return invalid(errors, form, directory);
        }
        Err(AgentError::NotFound(_)) => return not_found(post.admin.lang, post.admin.t().noun_agent),
        Err(error) => return internal_error(error),
    };
    let changed_teams = match app.store.set_agent_teams(id, team_ids).await {
        Ok(changed) => changed,
        Err(TeamError::Invalid(error)) => {
            errors.add("teams", error.message);
            return invalid(errors, form, directory);
        }
        Err(error) => return internal_error(error),
    };
    for team in changed_teams {
        app.router.send(RoutingEvent::TeamChanged { team }).await;
    }
    app.router.send(RoutingEvent::AgentChanged { agent: agent.clone() }).await;
    let detail = format!(
        "name {:?}, role {:?}, capacity {}, sites {:?}, disabled {}, email notifications {}",
        agent.name, agent.role, agent.capacity, agent.sites, agent.disabled, !agent.email_notifications_off
    );
    post.admin.audit(&app, if agent.disabled { "agent.disable" } else { "agent.update" }, &agent.email, detail).await;
    done(&format!("/admin/agents/{id}"), post.admin.t().saved)
}

/// `POST /admin/agents/{id}/password`: sets the typed password, or generates one; shown once.
pub async fn reset_password(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    let directory = match directory(&app).await {
        Ok(directory) => directory,
        Err(response) => return response,
    };
    let Some(agent) = directory.agents.iter().find(|agent| agent.id == id).cloned() else {
        return not_found(post.admin.lang, post.admin.t().noun_agent);
    };
    let typed = post.form.text("password");
    let password = if typed.is_empty() { crate::base::secrets::new_password() } else { typed };
    let form = form_of(&agent, &directory.teams);
    match agents::reset_password(&app.store, &agent.email, &password).await {
        Ok(_) => {}
        Err(AgentError::Invalid(error)) => {
            let mut errors = FieldErrors::default();
            errors.add_error(error);
            let page = edit_page(&post.admin, None, agent, form, errors, directory, None);
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
        Err(error) => return internal_error(error),
    }
    post.admin.audit(&app, "agent.reset_password", &agent.email, "sessions ended".into()).await;
    let notice = Some(post.admin.t().password_changed.to_owned());
    let page = edit_page(&post.admin, notice, agent, form, FieldErrors::default(), directory, Some(password));
    render(StatusCode::OK, &page)
}

/// `POST /admin/agents/{id}/two-factor/reset`: turns the agent's two-factor login off (a lost
/// phone); their sessions end, and where it is required they enrol again at their next login.
pub async fn reset_two_factor(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    match agents::remove_two_factor(&app.store, id, None, true).await {
        Ok(agent) => {
            post.admin.audit(&app, "agent.reset_two_factor", &agent.email, "sessions ended".into()).await;
            done(&format!("/admin/agents/{id}"), post.admin.t().two_factor_reset_done)
        }
        Err(AgentError::NotFound(_)) => not_found(post.admin.lang, post.admin.t().noun_agent),
        Err(error) => internal_error(error),
    }
}

/// `POST /admin/two-factor`: whether every agent must log in with a second factor.
pub async fn require_two_factor(State(app): State<AppState>, post: AdminPost) -> Response {
    let on = post.form.checked("required");
    match agents::require_two_factor(&app.store, &post.admin.agent, on).await {
        Ok(()) => {
            post.admin.audit(&app, "settings.require_two_factor", "installation", format!("required {on}")).await;
            let t = post.admin.t();
            let notice = if on { t.two_factor_required_done } else { t.two_factor_not_required_done };
            done("/admin/agents", notice)
        }
        Err(AgentError::Invalid(error)) => {
            let message = super::texts::field_message(post.admin.lang, &error.message);
            done("/admin/agents", &super::texts::fill(post.admin.t().not_changed, &[("why", &message)]))
        }
        Err(error) => internal_error(error),
    }
}
