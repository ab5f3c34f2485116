//! The admin login form and logout (the session is the same as the console's, one cookie), and
//! "forgot password" for every agent: the request form and the page the emailed link opens.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::bot_texts::Lang;
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

/// The words of the password-reset pages.
struct ResetTexts {
    title: &'static str,
    ask_help: &'static str,
    email: &'static str,
    send_link: &'static str,
    sent: &'static str,
    new_password: &'static str,
    set_password: &'static str,
    done: &'static str,
    invalid: &'static str,
    too_many: &'static str,
    to_console: &'static str,
    to_admin: &'static str,
}

static RESET_EN: ResetTexts = ResetTexts {
    title: "Reset your password",
    ask_help: "Enter the email of your kefu account; we will send a link that sets a new password.",
    email: "Email",
    send_link: "Send the link",
    sent: "If an account uses this address, a link is on its way. It works once, for 30 minutes.",
    new_password: "New password (at least 8 characters)",
    set_password: "Set the password",
    done: "Your password is set, and every earlier session has ended. Log in with the new password.",
    invalid: "This link is not valid any more (used, expired or unknown). Ask for a new one.",
    too_many: "Too many requests; try again later.",
    to_console: "Agent console",
    to_admin: "Admin login",
};

static RESET_ZH: ResetTexts = ResetTexts {
    title: "重置密码",
    ask_help: "输入您 kefu 账号的邮箱，我们会发送一个设置新密码的链接。",
    email: "邮箱",
    send_link: "发送链接",
    sent: "如果有账号使用此邮箱，链接已在发送途中。链接只能使用一次，30 分钟内有效。",
    new_password: "新密码（至少 8 个字符）",
    set_password: "设置密码",
    done: "密码已设置，之前的所有登录都已结束。请用新密码登录。",
    invalid: "此链接已失效（已使用、已过期或不存在），请重新申请。",
    too_many: "请求过多，请稍后再试。",
    to_console: "客服工作台",
    to_admin: "管理后台登录",
};

#[derive(Template)]
#[template(path = "admin/password_reset.html")]
struct ResetPage {
    lang: Lang,
    t: &'static ResetTexts,
    /// Empty on the request form; the link's token on the new-password form.
    token: String,
    link_live: bool,
    message: String,
    error: String,
}

impl ResetPage {
    fn new(lang: Lang) -> ResetPage {
        let t = match lang {
            Lang::En => &RESET_EN,
            Lang::Zh => &RESET_ZH,
        };
        ResetPage { lang, t, token: String::new(), link_live: false, message: String::new(), error: String::new() }
    }
}

#[derive(Deserialize, Default)]
pub struct ResetQuery {
    #[serde(default)]
    token: String,
    lang: Option<String>,
}

/// `GET /admin/forgot-password`
pub async fn forgot_page(headers: HeaderMap, Query(query): Query<ResetQuery>) -> Response {
    render(StatusCode::OK, &ResetPage::new(Lang::pick(query.lang.as_deref(), &headers)))
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    lang: String,
}

/// `POST /admin/forgot-password`: the same answer whether the address is an agent's or not.
pub async fn forgot_submit(
    State(app): State<AppState>,
    client: crate::net::http::client_address::ClientAddress,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ForgotForm>,
) -> Response {
    let lang = Lang::pick(Some(form.lang.as_str()), &headers);
    let mut page = ResetPage::new(lang);
    if app.visitor_limits.password_reset(client.ip(), &form.email).is_err() {
        page.error = page.t.too_many.to_owned();
        return render(StatusCode::TOO_MANY_REQUESTS, &page);
    }
    let email_lang = match lang {
        Lang::En => crate::email::Lang::En,
        Lang::Zh => crate::email::Lang::Zh,
    };
    let base = match crate::email::notifications::public_url(&app.store).await {
        Ok(base) => base,
        Err(error) => return super::internal_error(error),
    };
    let reset_url = format!("{base}/admin/reset-password");
    if let Err(error) = crate::email::password_reset::request(&app.store, &form.email, &reset_url, email_lang).await {
        return super::internal_error(error);
    }
    page.message = page.t.sent.to_owned();
    render(StatusCode::OK, &page)
}

/// `GET /admin/reset-password?token=...`: the new-password form of a live link.
pub async fn reset_page(State(app): State<AppState>, headers: HeaderMap, Query(query): Query<ResetQuery>) -> Response {
    let mut page = ResetPage::new(Lang::pick(query.lang.as_deref(), &headers));
    page.link_live = match crate::email::password_reset::is_live(&app.store, &query.token).await {
        Ok(live) => live && !query.token.is_empty(),
        Err(error) => return super::internal_error(error),
    };
    page.token = if query.token.is_empty() { "-".to_owned() } else { query.token };
    if !page.link_live {
        page.error = page.t.invalid.to_owned();
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
    #[serde(default)]
    lang: String,
}

/// `POST /admin/reset-password`: sets the password once and ends every session of the agent.
pub async fn reset_submit(
    State(app): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ResetForm>,
) -> Response {
    use crate::email::password_reset::ResetError;
    let mut page = ResetPage::new(Lang::pick(Some(form.lang.as_str()), &headers));
    page.token = form.token.clone();
    match crate::email::password_reset::complete(&app.store, &form.token, &form.password).await {
        Ok(_) => {
            page.token = "-".to_owned();
            page.message = page.t.done.to_owned();
            render(StatusCode::OK, &page)
        }
        Err(ResetError::Agent(crate::people::agents::AgentError::Invalid(error))) => {
            page.link_live = true;
            page.error = error.to_string();
            render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(ResetError::InvalidLink) => {
            page.token = "-".to_owned();
            page.error = page.t.invalid.to_owned();
            render(StatusCode::GONE, &page)
        }
        Err(error) => super::internal_error(error),
    }
}
