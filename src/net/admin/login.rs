//! The admin login form and logout (the session is the same as the console's, one cookie), and
//! "forgot password" for every agent: the request form and the page the emailed link opens.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{AdminPost, Lang, Texts, fill, render};
use crate::net::AppState;
use crate::net::http::agent_api::{LOGIN_EXPIRED, attempt_code, attempt_login, expired_session_cookie, session_cookie};
use crate::net::http::error::ApiError;
use crate::people::agents::{LoginStep, Role};

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    lang: Lang,
    t: &'static Texts,
    switch_url: String,
    email: String,
    next: String,
    error: String,
    /// Set when the password was right and the code of the authenticator app is asked for.
    ticket: String,
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
    let page = LoginPage {
        lang,
        t: lang.texts(),
        switch_url,
        email: String::new(),
        next,
        error: String::new(),
        ticket: String::new(),
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    /// The second step of a login with two-factor login on: the ticket of the first and the code.
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    code: String,
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
    let ask_code = |status: StatusCode, ticket: String, error: String| {
        let page = LoginPage {
            lang,
            t,
            switch_url: switch_url.clone(),
            email: form.email.clone(),
            next: next.clone(),
            error,
            ticket,
        };
        render(status, &page)
    };
    let again = |status: StatusCode, error: String| ask_code(status, String::new(), error);
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok())
        && !origin.eq_ignore_ascii_case(&crate::net::http::own_origin(&headers))
    {
        return again(StatusCode::FORBIDDEN, t.form_from_elsewhere.into());
    }
    let too_many = |retry_after_secs: u64| {
        let minutes = retry_after_secs.div_ceil(60);
        again(StatusCode::TOO_MANY_REQUESTS, fill(t.too_many_logins, &[("minutes", &minutes)]))
    };
    let (token, agent, step) = if form.ticket.is_empty() {
        match attempt_login(&app, client.ip(), &form.email, &form.password).await {
            Ok(logged_in) => logged_in,
            Err(ApiError::TooManyRequests { retry_after_secs }) => return too_many(retry_after_secs),
            Err(ApiError::InvalidCredentials) => {
                return again(StatusCode::UNAUTHORIZED, t.wrong_login.into());
            }
            Err(error) => return error.into_response(),
        }
    } else {
        match attempt_code(&app, client.ip(), &form.ticket, &form.code).await {
            Ok(agent) => (form.ticket.clone(), agent, LoginStep::Done),
            Err(ApiError::TooManyRequests { retry_after_secs }) => return too_many(retry_after_secs),
            Err(ApiError::Unauthorized(message)) if message == LOGIN_EXPIRED => {
                return again(StatusCode::UNAUTHORIZED, t.login_expired.into());
            }
            Err(ApiError::Unauthorized(_)) => {
                return ask_code(StatusCode::UNAUTHORIZED, form.ticket.clone(), t.wrong_code.into());
            }
            Err(error) => return error.into_response(),
        }
    };
    if step == LoginStep::Code {
        return ask_code(StatusCode::OK, token, String::new());
    }
    if agent.role != Role::Admin {
        if let Err(error) = crate::people::agents::logout(&app.store, &token).await {
            tracing::error!(%error, "ending a refused admin login failed");
        }
        return again(StatusCode::FORBIDDEN, t.agent_not_admin.into());
    }
    // An admin without two-factor login where it is required enrols in the console first.
    let target = if step == LoginStep::Enrol { "/console" } else { next.as_str() };
    let mut response = Redirect::to(target).into_response();
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

#[derive(Template)]
#[template(path = "admin/password_reset.html")]
struct ResetPage {
    lang: Lang,
    t: &'static Texts,
    /// Empty on the request form; the link's token on the new-password form.
    token: String,
    link_live: bool,
    message: String,
    error: String,
}

impl ResetPage {
    fn new(lang: Lang) -> ResetPage {
        ResetPage {
            lang,
            t: lang.texts(),
            token: String::new(),
            link_live: false,
            message: String::new(),
            error: String::new(),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct ResetQuery {
    #[serde(default)]
    token: String,
}

/// `GET /admin/forgot-password`
pub async fn forgot_page(headers: HeaderMap) -> Response {
    render(StatusCode::OK, &ResetPage::new(Lang::of_request(&headers)))
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

/// `POST /admin/forgot-password`: the same answer whether the address is an agent's or not.
pub async fn forgot_submit(
    State(app): State<AppState>,
    client: crate::net::http::client_address::ClientAddress,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ForgotForm>,
) -> Response {
    let lang = Lang::of_request(&headers);
    let mut page = ResetPage::new(lang);
    if app.visitor_limits.password_reset(client.ip(), &form.email).is_err() {
        page.error = page.t.reset_too_many.to_owned();
        return render(StatusCode::TOO_MANY_REQUESTS, &page);
    }
    let email_lang = crate::email::Lang::from(lang);
    let reset_url = format!("{}/admin/reset-password", app.public_url);
    if let Err(error) = crate::email::password_reset::request(&app.store, &form.email, &reset_url, email_lang).await {
        return super::internal_error(error);
    }
    page.message = page.t.reset_sent.to_owned();
    render(StatusCode::OK, &page)
}

/// `GET /admin/reset-password?token=...`: the new-password form of a live link.
pub async fn reset_page(State(app): State<AppState>, headers: HeaderMap, Query(query): Query<ResetQuery>) -> Response {
    let mut page = ResetPage::new(Lang::of_request(&headers));
    page.link_live = match crate::email::password_reset::is_live(&app.store, &query.token).await {
        Ok(live) => live && !query.token.is_empty(),
        Err(error) => return super::internal_error(error),
    };
    page.token = if query.token.is_empty() { "-".to_owned() } else { query.token };
    if !page.link_live {
        page.error = page.t.reset_invalid.to_owned();
        return render(StatusCode::GONE, &page);
    }
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

/// `POST /admin/reset-password`: sets the password once and ends every session of the agent.
pub async fn reset_submit(
    State(app): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ResetForm>,
) -> Response {
    use crate::email::password_reset::ResetError;
    let mut page = ResetPage::new(Lang::of_request(&headers));
    page.token = form.token.clone();
    match crate::email::password_reset::complete(&app.store, &form.token, &form.password).await {
        Ok(_) => {
            page.token = "-".to_owned();
            page.message = page.t.reset_done.to_owned();
            render(StatusCode::OK, &page)
        }
        Err(ResetError::Agent(crate::people::agents::AgentError::Invalid(error))) => {
            page.link_live = true;
            page.error = error.to_string();
            render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(ResetError::InvalidLink) => {
            page.token = "-".to_owned();
            page.error = page.t.reset_invalid.to_owned();
            render(StatusCode::GONE, &page)
        }
        Err(error) => super::internal_error(error),
    }
}
