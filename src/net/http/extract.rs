//! Extractors that answer bad input in the API's own error shape: JSON bodies and the caller's
//! credentials.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::Method;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::{own_origin, session_cookie_token};
use crate::net::AppState;
use crate::people::agent_store::AgentStore;
use crate::people::agents::{Agent, Role, SessionStage};
use crate::people::api_tokens::ApiTokenStore;
use crate::people::api_tokens::{self, ApiToken};
use crate::people::principal::Principal;
use crate::people::visitor_store::VisitorStore;
use crate::{base::secrets, people::agents, people::visitors};

/// A JSON body; a malformed one gets a 400 or 422 that says what to fix.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(JsonRejection::JsonDataError(error)) => Err(ApiError::Unprocessable(error.body_text())),
            Err(JsonRejection::BytesRejection(error))
                if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::PayloadTooLarge("the request body is larger than the limit".into()))
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// A JSON body that may be left out entirely (no body, no content type); one that is sent must
/// be valid, as with [`Json`].
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let has_body = headers.contains_key(axum::http::header::CONTENT_TYPE)
            || headers.get(axum::http::header::CONTENT_LENGTH).is_some_and(|length| length.as_bytes() != b"0")
            || headers.contains_key(axum::http::header::TRANSFER_ENCODING);
        if !has_body {
            return Ok(OptionalJson(None));
        }
        Json::<T>::from_request(request, state).await.map(|Json(value)| OptionalJson(Some(value)))
    }
}

/// The bearer token of a request, or its session cookie.
pub struct Credentials {
    pub token: String,
    pub from_cookie: bool,
}

fn credentials(parts: &Parts) -> Option<Credentials> {
    let bearer = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    match bearer {
        Some(token) => Some(Credentials { token, from_cookie: false }),
        None => session_cookie_token(&parts.headers).map(|token| Credentials { token, from_cookie: true }),
    }
}

/// The authenticated caller: a visitor (bearer token), an agent (bearer token or cookie), or an
/// API token (bearer).
///
/// A cookie-authenticated request that changes state must come from kefu's own origin, which
/// (with the SameSite cookie) is the CSRF protection of the JSON API. An API token's request
/// also takes one from the token's request budget (429 with `Retry-After` when it is spent),
/// and a read-only token may only read.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let credentials = checked_credentials(parts)?;
        let principal = authenticate(app, &credentials.token).await?;
        let principal = principal.ok_or_else(|| ApiError::Unauthorized("unknown, expired or revoked token".into()))?;
        if let Principal::ApiToken(token) = &principal {
            admit_api_token(app, token, &parts.method)?;
        }
        Ok(Caller(principal))
    }
}

/// The request's credentials; a cookie-authenticated request that changes state must come from
/// kefu's own origin.
fn checked_credentials(parts: &Parts) -> Result<Credentials, ApiError> {
    let credentials = credentials(parts)
        .ok_or_else(|| ApiError::Unauthorized("log in or send Authorization: Bearer TOKEN".into()))?;
    if credentials.from_cookie && !matches!(parts.method, Method::GET | Method::HEAD) {
        let origin = parts.headers.get("origin").and_then(|value| value.to_str().ok());
        if origin.is_none_or(|origin| !origin.eq_ignore_ascii_case(&own_origin(&parts.headers))) {
            return Err(ApiError::Forbidden("cross-site request refused".into()));
        }
    }
    Ok(credentials)
}

/// An agent acting on their own account with their session: a full one, or one that may only
/// enrol in two-factor login (`stage` says which; handlers that need a full one check it). A
/// login still waiting for its code is not a session here either.
pub struct OwnSession {
    pub agent: Agent,
    pub stage: SessionStage,
    /// The session's token digest, so a change can keep this session and end the others.
    pub digest: secrets::TokenDigest,
    pub token: String,
}

impl OwnSession {
    /// The session, if it is a full one.
    pub fn full(self) -> Result<OwnSession, ApiError> {
        if self.stage == SessionStage::Full {
            Ok(self)
        } else {
            Err(ApiError::Forbidden("turn on two-factor login first".into()))
        }
    }
}

impl FromRequestParts<AppState> for OwnSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let credentials = checked_credentials(parts)?;
        if !credentials.token.starts_with(agents::TOKEN_PREFIX) {
            return Err(ApiError::Forbidden("agents only".into()));
        }
        let digest = secrets::token_digest(&credentials.token);
        let now = crate::base::clock::now_millis();
        let session = AgentStore::session_of(&app.store, &digest, now).await?;
        match session {
            Some((agent, stage)) if stage != SessionStage::AwaitingCode => {
                Ok(OwnSession { agent, stage, digest, token: credentials.token })
            }
            _ => Err(ApiError::Unauthorized("unknown, expired or revoked token".into())),
        }
    }
}

/// The budget and read-only checks of an API token's request.
pub fn admit_api_token(app: &AppState, token: &ApiToken, method: &Method) -> Result<(), ApiError> {
    let admission = app.api_budgets.admit(token.id);
    if let Some(wait) = admission.retry_after {
        // Whole seconds, at least one: `Retry-After` has no fractions.
        return Err(ApiError::TooManyRequests { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 });
    }
    if admission.record_use {
        let (store, token_id) = (app.store.clone(), token.id);
        app.tasks.spawn(async move {
            if let Err(error) = ApiTokenStore::record_use(&store, token_id).await {
                tracing::warn!(%error, token_id, "recording an API token's use failed");
            }
        });
    }
    if token.read_only && !matches!(*method, Method::GET | Method::HEAD) {
        return Err(ApiError::Forbidden("this API token is read-only".into()));
    }
    Ok(())
}

/// The caller as an agent; visitors and API tokens get 403.
pub fn agent_only(principal: Principal) -> Result<Agent, ApiError> {
    match principal {
        Principal::Agent(agent) => Ok(agent),
        Principal::Visitor(_) | Principal::ApiToken(_) => Err(ApiError::Forbidden("agents only".into())),
    }
}

/// The caller as an admin; anyone else gets 403.
pub fn admin_only(principal: Principal) -> Result<Agent, ApiError> {
    match principal {
        Principal::Agent(agent) if agent.role == Role::Admin => Ok(agent),
        _ => Err(ApiError::Forbidden("admins only".into())),
    }
}

/// The caller as a site's staff: an agent or an API token; visitors get 403.
pub fn staff_only(principal: Principal) -> Result<Principal, ApiError> {
    match principal {
        Principal::Visitor(_) => Err(ApiError::Forbidden("agents only (or API tokens)".into())),
        staff => Ok(staff),
    }
}

/// The answer for something of a site the caller does not serve: 404 for agents, so ids cannot
/// be probed, and 403 for an API token, whose one site its holder knows.
pub fn outside_scope(principal: &Principal, what: &str) -> ApiError {
    match principal {
        Principal::ApiToken(token) => ApiError::Forbidden(format!("this API token is for site {} only", token.site)),
        _ => ApiError::NotFound(format!("no such {what}")),
    }
}

/// Checks that the caller serves `site` (see [`outside_scope`] for the refusal).
pub fn require_site(principal: &Principal, site: &str, what: &str) -> Result<(), ApiError> {
    if principal.serves_site(site) { Ok(()) } else { Err(outside_scope(principal, what)) }
}

/// The principal a token belongs to.
pub async fn authenticate(app: &AppState, token: &str) -> Result<Option<Principal>, ApiError> {
    let digest = secrets::token_digest(token);
    let now = crate::base::clock::now_millis();
    if token.starts_with(visitors::TOKEN_PREFIX) {
        let visitor = VisitorStore::authenticate(&app.store, &digest).await?;
        return Ok(visitor.filter(|visitor| !visitor.blocked).map(Principal::Visitor));
    }
    if token.starts_with(api_tokens::TOKEN_PREFIX) {
        let token = app.store.authenticate_token(&digest).await?;
        return Ok(token.map(Principal::ApiToken));
    }
    if token.starts_with(agents::TOKEN_PREFIX) {
        let agent = AgentStore::authenticate(&app.store, &digest, now).await?;
        return Ok(agent.map(Principal::Agent));
    }
    Ok(None)
}

/// A `?site=KEY` query parameter.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiteQuery {
    /// One site's key.
    pub site: Option<String>,
}

pub async fn existing_site(app: &AppState, site: &str) -> Result<(), ApiError> {
    if app.sites.get(site).await?.is_none() {
        return Err(ApiError::Unprocessable(format!("site {site:?}: no such site")));
    }
    Ok(())
}
