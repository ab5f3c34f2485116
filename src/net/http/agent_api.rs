//! Agent login, logout and the current agent, with login attempts limited so that guessing is
//! slow but nobody can lock a user out.
//!
//! The rules (docs/protocol.md, "Agents"), each over a 15-minute window:
//! - failures are counted per (account, client address) and per client address; an address over
//!   `limits.login_attempts` failures for one account, or `limits.login_attempts_per_address` in
//!   all, gets 429;
//! - an address that has not failed for an account is never refused for that account, however
//!   many failures other addresses made: the owner logs in from their own address;
//! - guesses spread over many addresses are slowed by a per-account budget (a token bucket of
//!   `limits.login_attempts`, refilled over the window) that applies only to addresses that have
//!   already failed for the account, so each extra address buys one guess, not ten.
//!
//! An attempt is counted (reserved) before its password is hashed, so concurrent wrong passwords
//! cannot run more argon2 checks than the limit; a right password gives its reservation back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::SESSION_COOKIE;
use super::client_address::ClientAddress;
use super::error::ApiError;
use super::extract::{Json, OwnSession};
use crate::base::config::LimitsConfig;
use crate::net::AppState;
use crate::people::agent_administration::AgentAdministration;
use crate::people::agent_store::AgentStore;
use crate::people::agents::{self, Agent, AgentError, LoginStep, PasswordChecks, Role, SessionStage};

/// The window in which failed logins are counted.
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Failure counters kept before expired ones are dropped, so a spray of addresses and emails
/// cannot grow the map without bound.
const MAX_TRACKED_FAILURES: usize = 100_000;

/// What failures are counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FailureKey {
    /// One account (lowercased email) from one client address.
    AccountFromAddress(String, IpAddr),
    /// One client address, whatever the account.
    Address(IpAddr),
}

/// Failures (and attempts in flight) under one key since `started`.
#[derive(Clone, Copy, Debug)]
struct FailureCount {
    count: u32,
    started: Instant,
}

impl FailureCount {
    fn live(&self) -> bool {
        self.started.elapsed() < LOGIN_WINDOW
    }

    fn retry_after_secs(&self) -> u64 {
        LOGIN_WINDOW.saturating_sub(self.started.elapsed()).as_secs().max(1)
    }
}

/// Counts login attempts and failures, and holds the pool that password checks run in.
pub struct LoginLimiter {
    /// Failures per account from one address (`limits.login_attempts`).
    max_failures: u32,
    /// Failures per address over all accounts (`limits.login_attempts_per_address`).
    max_address_failures: u32,
    failures: parking_lot::Mutex<HashMap<FailureKey, FailureCount>>,
    /// Per account: attempts from addresses that already failed for it.
    account_budgets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// Bounds the argon2 checks running at once, process-wide.
    pub password_checks: PasswordChecks,
}

/// How a reserved login attempt ended, for [`LoginLimiter::settle`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum AttemptOutcome {
    LoggedIn,
    WrongPassword,
    /// Refused before the password could be judged (no check slot free, a storage error).
    NotChecked,
}

/// An attempt counted before its password is checked; [`LoginLimiter::settle`] keeps it as a
/// failure or gives it back. A login whose request is dropped before it settles stays counted as
/// a failure, so aborting requests buys no extra guesses.
struct Reservation {
    keys: [FailureKey; 2],
}

impl LoginLimiter {
    pub fn new(limits: &LimitsConfig) -> LoginLimiter {
        let max_failures = limits.login_attempts.max(1);
        let burst = NonZeroU32::new(max_failures).unwrap_or(NonZeroU32::MIN);
        let refill = LOGIN_WINDOW / max_failures;
        let quota = Quota::with_period(refill).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst);
        LoginLimiter {
            max_failures,
            max_address_failures: limits.login_attempts_per_address.max(1),
            failures: parking_lot::Mutex::new(HashMap::new()),
            account_budgets: RateLimiter::dashmap(quota),
            clock: DefaultClock::default(),
            password_checks: PasswordChecks::new(
                limits.password_checks_at_once,
                Duration::from_millis(limits.password_check_wait_ms),
            ),
        }
    }

    /// Counts an attempt on `account` from `address` before its password is checked, or says how
    /// many seconds to wait.
    fn reserve(&self, account: &str, address: IpAddr) -> Result<Reservation, u64> {
        let pair = FailureKey::AccountFromAddress(account.to_owned(), address);
        let whole_address = FailureKey::Address(address);
        let mut failures = self.failures.lock();
        if failures.len() > MAX_TRACKED_FAILURES {
            failures.retain(|_, count| count.live());
            self.account_budgets.retain_recent();
        }
        let current = |key: &FailureKey| failures.get(key).copied().filter(FailureCount::live);
        if let Some(count) = current(&pair).filter(|count| count.count >= self.max_failures) {
            return Err(count.retry_after_secs());
        }
        if let Some(count) = current(&whole_address).filter(|count| count.count >= self.max_address_failures) {
            return Err(count.retry_after_secs());
        }
        // Only an address that has failed (or has an attempt in flight) for this account spends
        // the account's budget: the owner's own address is never refused because of others.
        if current(&pair).is_some_and(|count| count.count > 0)
            && let Err(not_until) = self.account_budgets.check_key(&account.to_owned())
        {
            return Err(not_until.wait_time_from(self.clock.now()).as_secs().max(1));
        }
        for key in [&pair, &whole_address] {
            let count = failures.entry(key.clone()).or_insert(FailureCount { count: 0, started: Instant::now() });
            if !count.live() {
                *count = FailureCount { count: 0, started: Instant::now() };
            }
            count.count += 1;
        }
        Ok(Reservation { keys: [pair, whole_address] })
    }

    /// Ends a reserved attempt: a failure stays counted; a success clears the account's failures
    /// from this address and gives the reservation back; anything else gives it back.
    fn settle(&self, reservation: Reservation, outcome: AttemptOutcome) {
        if outcome == AttemptOutcome::WrongPassword {
            return;
        }
        let mut failures = self.failures.lock();
        let [pair, whole_address] = reservation.keys;
        if outcome == AttemptOutcome::LoggedIn {
            failures.remove(&pair);
        } else if let Some(count) = failures.get_mut(&pair) {
            count.count = count.count.saturating_sub(1);
        }
        if let Some(count) = failures.get_mut(&whole_address) {
            count.count = count.count.saturating_sub(1);
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
    /// Whether the agent logs in with a second factor.
    two_factor: bool,
    /// Where the agent's picture is (an initial-letter one when they set none); changes with it.
    avatar_url: String,
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
            two_factor: agent.two_factor,
            avatar_url: avatar_url(agent),
        }
    }
}

/// The URL of an agent's picture; the upload id in it makes a new picture a new URL.
pub fn avatar_url(agent: &Agent) -> String {
    format!("/api/v1/agents/{}/avatar?v={}", agent.id, agent.avatar.as_deref().unwrap_or("0"))
}

/// The answer to a login: a session (`token`, also set as the cookie), or what it still needs.
#[derive(Serialize)]
struct LoginResponse {
    /// `done`; `enrol` (the session may only enrol in two-factor login); or `code` (send the
    /// authenticator's code with `ticket` to `/api/v1/agent/login/code`).
    next: LoginStep,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<AgentView>,
}

/// Runs `check`, an attempt on `account` (a lowercased email) from `address`, under the login
/// limits: refused with 429 while the account or address is over them, and counted as a failure
/// when it fails on a wrong password or code. Logins, second factors, password changes and
/// turning two-factor login off all go through here, so each guess costs the same.
pub async fn limited<T>(
    app: &AppState,
    account: &str,
    address: IpAddr,
    check: impl std::future::Future<Output = Result<T, AgentError>>,
) -> Result<T, ApiError> {
    let limiter = &app.login_limiter;
    let reservation =
        limiter.reserve(account, address).map_err(|retry_after_secs| ApiError::TooManyRequests { retry_after_secs })?;
    let outcome = check.await;
    let attempt = match &outcome {
        Ok(_) => AttemptOutcome::LoggedIn,
        Err(AgentError::InvalidCredentials | AgentError::WrongCode) => AttemptOutcome::WrongPassword,
        Err(_) => AttemptOutcome::NotChecked,
    };
    limiter.settle(reservation, attempt);
    match outcome {
        Ok(value) => Ok(value),
        Err(AgentError::InvalidCredentials) => {
            tracing::info!(%address, "failed login");
            Err(ApiError::InvalidCredentials)
        }
        Err(AgentError::WrongCode) => {
            tracing::info!(%address, "wrong second factor");
            Err(ApiError::Unauthorized("wrong or already used code".into()))
        }
        Err(error) => Err(error.into()),
    }
}

/// Checks a login against the failure limits and the password, and opens a session.
pub async fn attempt_login(
    app: &AppState,
    address: IpAddr,
    email: &str,
    password: &str,
) -> Result<(String, Agent, LoginStep), ApiError> {
    let account = email.trim().to_lowercase();
    limited(app, &account, address, agents::login(&app.store, &app.login_limiter.password_checks, email, password))
        .await
}

/// The answer to a code for a login that no longer waits for one (expired, or already done).
pub const LOGIN_EXPIRED: &str = "the login expired; enter your password again";

/// Gives a login waiting for its second factor the code, under the same limits as the password
/// (counted against the account); returns the now full session's token.
pub async fn attempt_code(app: &AppState, address: IpAddr, ticket: &str, code: &str) -> Result<Agent, ApiError> {
    let now = crate::base::clock::now_millis();
    let digest = crate::base::secrets::token_digest(ticket);
    let waiting = AgentStore::session_of(&app.store, &digest, now).await?;
    let Some((agent, SessionStage::AwaitingCode)) = waiting else {
        return Err(ApiError::Unauthorized(LOGIN_EXPIRED.into()));
    };
    limited(app, &agent.email, address, AgentAdministration::complete_login(&app.store, ticket, code)).await
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
    let (token, agent, next) = attempt_login(&app, client.ip(), &request.email, &request.password).await?;
    if next == LoginStep::Code {
        let answer = LoginResponse { next, token: None, ticket: Some(token), agent: None };
        return Ok(axum::Json(answer).into_response());
    }
    Ok(with_session(
        &token,
        &headers,
        LoginResponse { next, token: Some(token.clone()), ticket: None, agent: Some(AgentView::from(&agent)) },
    ))
}

fn with_session(token: &str, headers: &HeaderMap, answer: LoginResponse) -> Response {
    let cookie = session_cookie(token, headers);
    let mut response = axum::Json(answer).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

#[derive(Deserialize)]
pub struct CodeRequest {
    ticket: String,
    code: String,
}

/// `POST /api/v1/agent/login/code`: the second step of a login with two-factor login on.
pub async fn login_code(
    State(app): State<AppState>,
    client: ClientAddress,
    headers: HeaderMap,
    Json(request): Json<CodeRequest>,
) -> Result<Response, ApiError> {
    let agent = attempt_code(&app, client.ip(), &request.ticket, &request.code).await?;
    let answer = LoginResponse {
        next: LoginStep::Done,
        token: Some(request.ticket.clone()),
        ticket: None,
        agent: Some(AgentView::from(&agent)),
    };
    Ok(with_session(&request.ticket, &headers, answer))
}

/// `POST /api/v1/agent/logout`
pub async fn logout(State(app): State<AppState>, session: OwnSession) -> Result<Response, ApiError> {
    agents::logout(&app.store, &session.token).await?;
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, expired_session_cookie());
    Ok(response)
}

/// The current agent, and whether their session may only enrol in two-factor login.
#[derive(Serialize)]
pub struct MeView {
    #[serde(flatten)]
    agent: AgentView,
    /// The session may only enrol in two-factor login (the installation requires it).
    must_enrol: bool,
}

/// `GET /api/v1/agent/me`
pub async fn me(session: OwnSession) -> axum::Json<MeView> {
    axum::Json(MeView { agent: AgentView::from(&session.agent), must_enrol: session.stage == SessionStage::MustEnrol })
}
