//! Agent login, logout and the current agent, with login attempts limited per account and per
//! address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::SESSION_COOKIE;
use super::client_address::ClientAddress;
use super::error::ApiError;
use super::extract::{Caller, Json};
use crate::agents::{self, Agent, AgentError, Role};
use crate::principal::Principal;
use crate::server::AppState;

/// The window in which failed logins are counted.
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Counts failed logins per account and per address.
pub struct LoginLimiter {
    max_failures: u32,
    failures: parking_lot::Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32) -> LoginLimiter {
        LoginLimiter { max_failures, failures: parking_lot::Mutex::new(HashMap::new()) }
    }

    /// Seconds to wait if any of `keys` is over the limit.
    fn blocked_for(&self, keys: &[String]) -> Option<u64> {
        let failures = self.failures.lock();
        keys.iter()
            .filter_map(|key| failures.get(key))
            .filter(|(count, started)| *count >= self.max_failures && started.elapsed() < LOGIN_WINDOW)
            .map(|(_, started)| (LOGIN_WINDOW - started.elapsed()).as_secs().max(1))
            .max()
    }

    fn record_failure(&self, keys: &[String]) {
        let mut failures = self.failures.lock();
        if failures.len() > 100_000 {
            failures.retain(|_, (_, started)| started.elapsed() < LOGIN_WINDOW);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= LOGIN_WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    fn record_success(&self, keys: &[String]) {
        let mut failures = self.failures.lock();
        for key in keys {
            failures.remove(key);
        }
    }
}

#[derive(Deserialize)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Serialize)]
pub struct AgentView {
    id: u64,
    email: String,
    name: String,
    role: Role,
    sites: Vec<String>,
    capacity: u32,
}

impl From<&Agent> for AgentView {
    fn from(agent: &Agent) -> Self {
        AgentView {
            id: agent.id,
            email: agent.email.clone(),
            name: agent.name.clone(),
            role: agent.role,
            sites: agent.sites.clone(),
            capacity: agent.capacity,
        }
    }
}

#[derive(Serialize)]
struct LoginResponse {
    token: String,
    agent: AgentView,
}

/// Checks a login against the failure limits and the password, and opens a session.
pub async fn attempt_login(
    app: &AppState,
    address: IpAddr,
    email: &str,
    password: &str,
) -> Result<(String, Agent), ApiError> {
    let keys = [format!("email:{}", email.trim().to_lowercase()), format!("ip:{address}")];
    if let Some(retry_after_secs) = app.login_limiter.blocked_for(&keys) {
        return Err(ApiError::TooManyRequests { retry_after_secs });
    }
    match agents::login(&app.store, email, password).await {
        Ok(logged_in) => {
            app.login_limiter.record_success(&keys);
            Ok(logged_in)
        }
        Err(AgentError::InvalidCredentials) => {
            app.login_limiter.record_failure(&keys);
            tracing::info!(%address, "failed login");
            Err(ApiError::InvalidCredentials)
        }
        Err(error) => Err(error.into()),
    }
}

/// The `Set-Cookie` value that carries a new session token; Secure when the client used https
/// (the `X-Forwarded-Proto` that `client_address` leaves only for a trusted proxy).
pub fn session_cookie(token: &str, request_headers: &HeaderMap) -> HeaderValue {
    let secure = request_headers.get("x-forwarded-proto").is_some_and(|proto| proto == "https");
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        agents::SESSION_LIFETIME_MILLIS / 1000,
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).expect("tokens are URL-safe")
}

/// The `Set-Cookie` value that ends the session cookie.
pub fn expired_session_cookie() -> HeaderValue {
    HeaderValue::from_static("kefu_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// `POST /api/v1/agent/login`
pub async fn login(
    State(app): State<AppState>,
    client: ClientAddress,
    headers: HeaderMap,
    Json(request): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let (token, agent) = attempt_login(&app, client.ip(), &request.email, &request.password).await?;
    let cookie = session_cookie(&token, &headers);
    let mut response = axum::Json(LoginResponse { token, agent: AgentView::from(&agent) }).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `POST /api/v1/agent/logout`
pub async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    Caller(principal): Caller,
) -> Result<Response, ApiError> {
    if !matches!(principal, Principal::Agent(_)) {
        return Err(ApiError::Forbidden("only agents log out".into()));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| super::session_cookie_token(&headers));
    if let Some(token) = token {
        agents::logout(&app.store, &token).await?;
    }
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, expired_session_cookie());
    Ok(response)
}

/// `GET /api/v1/agent/me`
pub async fn me(Caller(principal): Caller) -> Result<axum::Json<AgentView>, ApiError> {
    match principal {
        Principal::Agent(agent) => Ok(axum::Json(AgentView::from(&agent))),
        Principal::Visitor(_) | Principal::ApiToken(_) => Err(ApiError::Forbidden("agents only".into())),
    }
}
