//! Extractors that answer bad input in the API's own error shape: JSON bodies and the caller's
//! credentials.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::Method;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::{own_origin, session_cookie_token};
use crate::principal::Principal;
use crate::server::AppState;
use crate::{agents, secrets, visitors};

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

/// The authenticated caller: a visitor (bearer token) or an agent (bearer token or cookie).
///
/// A cookie-authenticated request that changes state must come from kefu's own origin, which
/// (with the SameSite cookie) is the CSRF protection of the JSON API.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let credentials = credentials(parts)
            .ok_or_else(|| ApiError::Unauthorized("log in or send Authorization: Bearer TOKEN".into()))?;
        if credentials.from_cookie && !matches!(parts.method, Method::GET | Method::HEAD) {
            let origin = parts.headers.get("origin").and_then(|value| value.to_str().ok());
            if origin.is_none_or(|origin| !origin.eq_ignore_ascii_case(&own_origin(&parts.headers))) {
                return Err(ApiError::Forbidden("cross-site request refused".into()));
            }
        }
        let principal = authenticate(app, &credentials.token).await?;
        principal.map(Caller).ok_or_else(|| ApiError::Unauthorized("unknown or expired token".into()))
    }
}

/// The caller as an admin, or 403.
pub fn admin_only(principal: Principal) -> Result<crate::agents::Agent, ApiError> {
    match principal {
        Principal::Agent(agent) if agent.role == crate::agents::Role::Admin => Ok(agent),
        _ => Err(ApiError::Forbidden("admins only".into())),
    }
}

/// The principal a token belongs to.
pub async fn authenticate(app: &AppState, token: &str) -> Result<Option<Principal>, ApiError> {
    let digest = secrets::token_digest(token);
    let now = crate::clock::now_millis();
    if token.starts_with(visitors::TOKEN_PREFIX) {
        let visitor = app.store.read(move |transaction| visitors::authenticate(transaction, &digest)).await?;
        return Ok(visitor.filter(|visitor| !visitor.blocked).map(Principal::Visitor));
    }
    if token.starts_with(agents::TOKEN_PREFIX) {
        let agent = app.store.read(move |transaction| agents::authenticate(transaction, &digest, now)).await?;
        return Ok(agent.map(Principal::Agent));
    }
    Ok(None)
}
