//! The admin login form and logout. The session is the same as the console's (one cookie).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{AdminPost, Lang, Texts, fill, render};
use crate::net::AppState;
use crate::net::http::agent_api::{attempt_login, expired_session_cookie, session_cookie};
use crate::net::http::error::ApiError;
use crate::people::agents::Role;

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    lang: Lang,
    t: &'static Texts,
    switch_url: String,
    email: String,
    next: String,
    error: String,
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only paths inside the admin pages are followed after a login, never another site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next) if next.starts_with("/admin") && !next.starts_with("//") && !next.contains('\\') => next.to_owned(),
        _ => "/admin".to_owned(),
    }
}

/// `GET /admin/login`
pub async fn page(lang: Lang, Query(query): Query<LoginQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    let path =
        format!("/admin/login?next={}", url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>());
    let switch_url = super::texts::switch_url(lang, &path);
    render(
        StatusCode::OK,
        &LoginPage { lang, t: lang.texts(), switch_url, email: String::new(), next, error: String::new() },
    )
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
    let lang = Lang::of_request(&headers);
    let t = lang.texts();
    let next = safe_next(Some(&form.next));
    let switch_url = super::texts::switch_url(lang, "/admin/login");
    let again = |status: StatusCode, error: String| {
        let page =
            LoginPage { lang, t, switch_url: switch_url.clone(), email: form.email.clone(), next: next.clone(), error };
        render(status, &page)
    };
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok())
        && !origin.eq_ignore_ascii_case(&crate::net::http::own_origin(&headers))
    {
        return again(StatusCode::FORBIDDEN, t.form_from_elsewhere.into());
    }
    let (token, agent) = match attempt_login(&app, client.ip(), &form.email, &form.password).await {
        Ok(logged_in) => logged_in,
        Err(ApiError::TooManyRequests { retry_after_secs }) => {
            let minutes = retry_after_secs.div_ceil(60);
            return again(StatusCode::TOO_MANY_REQUESTS, fill(t.too_many_logins, &[("minutes", &minutes)]));
        }
        Err(ApiError::InvalidCredentials) => {
            return again(StatusCode::UNAUTHORIZED, t.wrong_login.into());
        }
        Err(error) => return error.into_response(),
    };
    if agent.role != Role::Admin {
        if let Err(error) = crate::people::agents::logout(&app.store, &token).await {
            tracing::error!(%error, "ending a refused admin login failed");
        }
        return again(StatusCode::FORBIDDEN, t.agent_not_admin.into());
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
