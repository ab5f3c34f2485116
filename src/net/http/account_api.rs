//! An agent's own account from the console's profile menu: their password, their two-factor
//! login and their picture; and every agent's picture, which the console and the widget show.
//!
//! Each check of a password or code goes through the login limits (`agent_api::limited`), so a
//! stolen session cannot guess the password faster than the login form allows.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::agent_api::{AgentView, limited};
use super::client_address::ClientAddress;
use super::error::ApiError;
use super::extract::{Json, OwnSession};
use crate::chat::upload_store::UploadStore;
use crate::history::audit;
use crate::net::AppState;
use crate::people::agent_store::AgentStore;
use crate::people::agents;
use crate::people::avatars::{self, AvatarError};
use crate::people::two_factor::{self, TwoFactorError};

impl From<TwoFactorError> for ApiError {
    fn from(error: TwoFactorError) -> Self {
        match error {
            TwoFactorError::AlreadyOn | TwoFactorError::Off => ApiError::Conflict(error.to_string()),
            TwoFactorError::NoSetup | TwoFactorError::WrongCode | TwoFactorError::Invalid(_) => {
                ApiError::Unprocessable(error.to_string())
            }
            TwoFactorError::Required => ApiError::Forbidden(error.to_string()),
            TwoFactorError::NotFound => ApiError::NotFound(error.to_string()),
            TwoFactorError::Storage(error) => error.into(),
        }
    }
}

impl From<AvatarError> for ApiError {
    fn from(error: AvatarError) -> Self {
        match error {
            AvatarError::NotAnImage => ApiError::UnsupportedMediaType(error.to_string()),
            AvatarError::NotFound => ApiError::NotFound(error.to_string()),
            AvatarError::Upload(error) => error.into(),
            AvatarError::Storage(error) => error.into(),
        }
    }
}

#[derive(Deserialize)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /api/v1/agent/password`: changes the agent's own password; their other sessions end.
pub async fn change_password(
    State(app): State<AppState>,
    client: ClientAddress,
    session: OwnSession,
    Json(change): Json<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let session = session.full()?;
    let checks = &app.login_limiter.password_checks;
    let change = agents::change_password(
        &app.store,
        checks,
        &session.agent,
        session.digest,
        &change.current_password,
        &change.new_password,
    );
    limited(&app, &session.agent.email, client.ip(), change).await.map_err(|error| match error {
        ApiError::InvalidCredentials => ApiError::Unprocessable("current_password: wrong password".into()),
        other => other,
    })?;
    audit::record(
        &app.store,
        &session.agent,
        "agent.change_password",
        &session.agent.email,
        "other sessions ended".into(),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/agent/two-factor/setup`: a new secret to scan, waiting for its first code.
pub async fn begin_two_factor(
    State(app): State<AppState>,
    session: OwnSession,
) -> Result<axum::Json<two_factor::Setup>, ApiError> {
    Ok(axum::Json(two_factor::begin_setup(&app.store, session.agent.id, &session.agent.email).await?))
}

#[derive(Deserialize)]
pub struct CodeBody {
    code: String,
}

#[derive(Serialize)]
pub struct RecoveryCodes {
    /// Single-use codes for when the phone is lost; shown only now.
    recovery_codes: Vec<String>,
}

/// `POST /api/v1/agent/two-factor/confirm`: turns two-factor login on with the first code.
pub async fn confirm_two_factor(
    State(app): State<AppState>,
    client: ClientAddress,
    session: OwnSession,
    Json(body): Json<CodeBody>,
) -> Result<axum::Json<RecoveryCodes>, ApiError> {
    let confirm = agents::confirm_two_factor(&app.store, session.agent.id, session.digest, &body.code);
    let recovery_codes = limited(&app, &session.agent.email, client.ip(), confirm).await?;
    audit::record(&app.store, &session.agent, "agent.two_factor_on", &session.agent.email, String::new()).await;
    Ok(axum::Json(RecoveryCodes { recovery_codes }))
}

#[derive(Deserialize)]
pub struct PasswordBody {
    password: String,
}

/// `POST /api/v1/agent/two-factor/disable`: turns the agent's two-factor login off, with their
/// password; refused where the installation requires it.
pub async fn disable_two_factor(
    State(app): State<AppState>,
    client: ClientAddress,
    session: OwnSession,
    Json(body): Json<PasswordBody>,
) -> Result<axum::Json<AgentView>, ApiError> {
    let session = session.full()?;
    let checks = &app.login_limiter.password_checks;
    let check = agents::disable_own_two_factor(&app.store, checks, &session.agent, session.digest, &body.password);
    let agent = limited(&app, &session.agent.email, client.ip(), check).await.map_err(|error| match error {
        ApiError::InvalidCredentials => ApiError::Unprocessable("password: wrong password".into()),
        other => other,
    })?;
    audit::record(&app.store, &agent, "agent.two_factor_off", &agent.email, "other sessions ended".into()).await;
    Ok(axum::Json(AgentView::from(&agent)))
}

/// `PUT /api/v1/agent/avatar` with the image as the body: the agent's new picture.
pub async fn set_avatar(
    State(app): State<AppState>,
    session: OwnSession,
    body: Bytes,
) -> Result<axum::Json<AgentView>, ApiError> {
    let session = session.full()?;
    let agent = avatars::set(&app.store, &app.upload_quota, session.agent.id, body).await?;
    Ok(axum::Json(AgentView::from(&agent)))
}

/// `DELETE /api/v1/agent/avatar`: back to the initial-letter picture.
pub async fn remove_avatar(
    State(app): State<AppState>,
    session: OwnSession,
) -> Result<axum::Json<AgentView>, ApiError> {
    let session = session.full()?;
    let agent = avatars::remove(&app.store, &app.upload_quota, session.agent.id).await?;
    Ok(axum::Json(AgentView::from(&agent)))
}

/// Colours of initial-letter pictures, picked by agent id; each keeps white text readable.
const INITIAL_COLOURS: [&str; 6] = ["#2563eb", "#059669", "#d97706", "#dc2626", "#7c3aed", "#0891b2"];

/// `GET /api/v1/agents/{id}/avatar`: the agent's picture, or one with their initial. Public, like
/// the names visitors see on agents' messages: the widget shows it without credentials.
pub async fn avatar(State(app): State<AppState>, Path(id): Path<u64>) -> Result<Response, ApiError> {
    let Some(agent) = app.store.get(id).await? else {
        return Err(ApiError::NotFound("no such agent".into()));
    };
    let (content_type, bytes) = match &agent.avatar {
        Some(upload_id) => {
            let upload = UploadStore::upload(&app.store, upload_id).await?;
            let Some(upload) = upload else {
                return Err(ApiError::NotFound("no such avatar".into()));
            };
            (upload.content_type, super::uploads_api::read_file(&app, &upload.id).await?)
        }
        None => {
            let colour = INITIAL_COLOURS[(agent.id % INITIAL_COLOURS.len() as u64) as usize];
            // The initial is a letter or digit (never markup), so it goes in as it is.
            let svg = format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 64 64\"><circle cx=\"32\" cy=\"32\" r=\"32\" \
                 fill=\"{colour}\"/><text x=\"32\" y=\"42\" font-size=\"30\" text-anchor=\"middle\" fill=\"#fff\" \
                 font-family=\"sans-serif\">{}</text></svg>",
                avatars::initial(&agent.name)
            );
            ("image/svg+xml".to_owned(), svg.into_bytes())
        }
    };
    // The URLs kefu hands out carry the picture's id, so a new picture is a new URL.
    Ok(super::uploads_api::file_response(bytes, &content_type, "public, max-age=300"))
}
