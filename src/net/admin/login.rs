//! The admin login form and logout. The session is the same as the console's (one cookie).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{AdminPost, render};
use crate::net::AppState;
use crate::net::http::agent_api::{attempt_login, expired_session_cookie, session_cookie};
use crate::net::http::error::ApiError;
use crate::people::agents::Role;

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    email: String,
    next: String,
    error: String,
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only paths inside the admin pages are followed after a login, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next) if next.starts_with("/admin") && !next.starts_with("//") && !next.contains('\\') => next.to_owned(),
        _ => "/admin".to_owned(),
    }
}

/// `GET /admin/login`
pub async fn page(Query(query): Query<LoginQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    render(StatusCode::OK, &LoginPage { email: String::new(), next, error: String::new() })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /admin/login`
pub async fn submit(
    State(app): State<AppState>,
    client: crate::net::http::client_address::ClientAddress,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let next = safe_next(Some(&form.next));
    let again = |status: StatusCode, error: String| {
        render(status, &LoginPage { email: form.email.clone(), next: next.clone(), error })
    };
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok())
        && !origin.eq_ignore_ascii_case(&crate::net::http::own_origin(&headers))
    {
        return again(StatusCode::FORBIDDEN, "This form was sent from another site.".into());
    }
    let (token, agent) = match attempt_login(&app, client.ip(), &form.email, &form.password).await {
        Ok(logged_in) => logged_in,
        Err(ApiError::TooManyRequests { retry_after_secs }) => {
            let minutes = retry_after_secs.div_ceil(60);
            return again(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed logins; try again in {minutes} min."),
            );
        }
        Err(ApiError::InvalidCredentials) => {
            return again(StatusCode::UNAUTHORIZED, "Wrong email or password.".into());
        }
        Err(error) => return error.into_response(),
    };
    if agent.role != Role::Admin {
        if let Err(error) = crate::people::agents::logout(&app.store, &token).await {
            tracing::error!(%error, "ending a refused admin login failed");
        }
        return again(StatusCode::FORBIDDEN, "This account is an agent's; the console is at /console.".into());
    }
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie(&token, &headers));
    response
}

/// `POST /admin/logout`
pub async fn logout(State(app): State<AppState>, headers: HeaderMap, _post: AdminPost) -> Response {
    if let Some(token) = crate::net::http::session_cookie_token(&headers)
        && let Err(error) = crate::people::agents::logout(&app.store, &token).await
    {
        return super::internal_error(error);
    }
    let mut response = Redirect::to("/admin/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, expired_session_cookie());
    response
}
