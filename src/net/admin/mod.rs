//! The admin pages under `/admin`: server-rendered forms (askama templates in
//! `templates/admin/`) for sites, agents, teams, canned replies, the knowledge base and the bot,
//! blocked visitors, API tokens, webhooks, email, the audit log and reports.
//!
//! Only admins get in ([`AdminUser`]); anyone else gets the login page (no session) or 403
//! (a session that is not an admin's). Every form posts a CSRF token derived from the session
//! ([`AdminPost`]), and every change is written to the audit log.

mod agents;
mod api_tokens;
mod audit_log;
mod blocked;
mod canned_replies;
mod charts;
mod email;
mod form;
mod kb_eval;
mod knowledge_base;
mod login;
mod reports;
mod sites;
mod teams;
pub mod texts;
mod webhooks;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

pub use form::{AdminPost, FormData};
pub use texts::{Lang, Texts, fill};

use crate::base::secrets;
use crate::net::AppState;
use crate::net::http::extract::authenticate;
use crate::people::agents::{Agent, Role};
use crate::people::principal::Principal;

/// The policy of admin pages: no scripts but kefu's own, no framing, forms only to kefu.
const ADMIN_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
base-uri 'none'; form-action 'self'; object-src 'none'; frame-ancestors 'none'";

/// Declares the admin routes once: the router and the list the authorization tests walk.
macro_rules! admin_routes {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route that only admins may use, as (method, path).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        /// The admin pages (the login page included), merged into the server's router.
        pub fn router() -> axum::Router<AppState> {
            axum::Router::new()
                .route("/admin/login", axum::routing::get(login::page).post(login::submit))
                .route("/admin/language", axum::routing::get(language))
                .route("/admin/forgot-password", axum::routing::get(login::forgot_page).post(login::forgot_submit))
                .route("/admin/reset-password", axum::routing::get(login::reset_page).post(login::reset_submit))
                $(.route($path, admin_routes!(@method $method $handler)))*
        }
    };
    (@method GET $handler:path) => { axum::routing::get($handler) };
    (@method POST $handler:path) => { axum::routing::post($handler) };
}

admin_routes! {
    GET "/admin" => sites::home,
    POST "/admin/logout" => login::logout,
    GET "/admin/sites" => sites::list,
    GET "/admin/sites/new" => sites::new_form,
    POST "/admin/sites/new" => sites::create,
    GET "/admin/sites/{key}" => sites::edit_form,
    POST "/admin/sites/{key}" => sites::save,
    POST "/admin/sites/{key}/rotate-secret" => sites::rotate_secret,
    POST "/admin/sites/{key}/allow-origin" => sites::allow_origin,
    POST "/admin/sites/{key}/delete" => sites::delete,
    GET "/admin/agents" => agents::list,
    POST "/admin/agents" => agents::create,
    GET "/admin/agents/{id}" => agents::edit_form,
    POST "/admin/agents/{id}" => agents::save,
    POST "/admin/agents/{id}/password" => agents::reset_password,
    POST "/admin/agents/{id}/two-factor/reset" => agents::reset_two_factor,
    POST "/admin/two-factor" => agents::require_two_factor,
    GET "/admin/teams" => teams::list,
    POST "/admin/teams" => teams::create,
    GET "/admin/teams/{id}" => teams::edit_form,
    POST "/admin/teams/{id}" => teams::save,
    POST "/admin/teams/{id}/delete" => teams::delete,
    GET "/admin/canned-replies" => canned_replies::list,
    POST "/admin/canned-replies" => canned_replies::create,
    POST "/admin/canned-replies/{id}" => canned_replies::save,
    POST "/admin/canned-replies/{id}/delete" => canned_replies::delete,
    GET "/admin/blocked" => blocked::list,
    POST "/admin/blocked/visitors/{id}/unblock" => blocked::unblock_visitor,
    POST "/admin/blocked/addresses" => blocked::block_address,
    POST "/admin/blocked/addresses/unblock" => blocked::unblock_address,
    GET "/admin/audit" => audit_log::list,
    GET "/admin/webhooks" => webhooks::list,
    POST "/admin/webhooks" => webhooks::create,
    GET "/admin/webhooks/{id}" => webhooks::edit_form,
    POST "/admin/webhooks/{id}" => webhooks::save,
    POST "/admin/webhooks/{id}/delete" => webhooks::delete,
    POST "/admin/webhooks/{id}/deliveries/{delivery}/resend" => webhooks::resend,
    GET "/admin/api-tokens" => api_tokens::list,
    POST "/admin/api-tokens" => api_tokens::create,
    POST "/admin/api-tokens/{id}/revoke" => api_tokens::revoke,
    GET "/admin/knowledge-base" => knowledge_base::list,
    POST "/admin/knowledge-base/entries" => knowledge_base::create,
    GET "/admin/knowledge-base/entries/{id}" => knowledge_base::edit_form,
    POST "/admin/knowledge-base/entries/{id}" => knowledge_base::save,
    POST "/admin/knowledge-base/entries/{id}/delete" => knowledge_base::delete,
    POST "/admin/knowledge-base/import" => knowledge_base::import,
    GET "/admin/knowledge-base/export" => knowledge_base::export,
    GET "/admin/bot" => knowledge_base::settings,
    POST "/admin/bot" => knowledge_base::save_settings,
    GET "/admin/bot/eval" => kb_eval::form,
    POST "/admin/bot/eval" => kb_eval::run,
    GET "/admin/email" => email::settings_page,
    POST "/admin/email" => email::save,
    POST "/admin/email/test" => email::send_test,
    GET "/admin/reports" => reports::page,
    GET "/admin/reports/today.json" => reports::today_json,
    GET "/admin/reports/daily.csv" => reports::daily_csv,
    GET "/admin/reports/agents.csv" => reports::agents_csv,
    GET "/admin/reports/satisfaction.csv" => reports::satisfaction_csv,
}

/// What every admin page shows around its content.
pub struct Layout {
    pub admin_email: String,
    pub csrf: String,
    /// The navigation entry to highlight.
    pub section: &'static str,
    /// A one-line confirmation after a change (from `?done=`).
    pub notice: Option<String>,
    pub lang: Lang,
    pub t: &'static Texts,
    /// The page's path and query, where the language switch comes back to.
    pub path: String,
}

impl Layout {
    /// The navigation entries: (section, path, label).
    pub fn sections(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let t = self.t;
        vec![
            ("sites", "/admin/sites", t.nav_sites),
            ("agents", "/admin/agents", t.nav_agents),
            ("teams", "/admin/teams", t.nav_teams),
            ("canned", "/admin/canned-replies", t.nav_canned),
            ("kb", "/admin/knowledge-base", t.kb_title),
            ("bot", "/admin/bot", t.bot_title),
            ("blocked", "/admin/blocked", t.nav_blocked),
            ("api-tokens", "/admin/api-tokens", t.nav_api_tokens),
            ("webhooks", "/admin/webhooks", t.nav_webhooks),
            ("email", "/admin/email", t.nav_email),
            ("audit", "/admin/audit", t.nav_audit),
            ("reports", "/admin/reports", t.nav_reports),
        ]
    }

    pub fn is_current(&self, section: &str) -> bool {
        section == self.section
    }

    pub fn switch_url(&self) -> String {
        texts::switch_url(self.lang, &self.path)
    }

    /// The problem with `field`, in the page's language; empty if none.
    pub fn error(&self, errors: &form::FieldErrors, field: &str) -> String {
        texts::field_message(self.lang, errors.of(field))
    }
}

/// `GET /admin/language?lang=zh&next=/admin/reports`: remembers the chosen language in a cookie
/// and goes back to the page (any visitor may: it only sets their own preference).
pub async fn language(axum::extract::Query(query): axum::extract::Query<LanguageQuery>) -> Response {
    let next = login::safe_next(Some(&query.next));
    let mut response = Redirect::to(&next).into_response();
    if let Some(lang) = Lang::parse(&query.lang) {
        response.headers_mut().insert(header::SET_COOKIE, lang.cookie());
    }
    response
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct LanguageQuery {
    lang: String,
    next: String,
}

/// An admin, authenticated by session cookie or bearer token.
pub struct AdminUser {
    pub agent: Agent,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// The language of the pages this admin sees.
    pub lang: Lang,
    /// The path and query of the request, for the language switch.
    pub path: String,
}

impl AdminUser {
    pub fn layout(&self, section: &'static str, notice: Option<String>) -> Layout {
        Layout {
            admin_email: self.agent.email.clone(),
            csrf: self.csrf.clone(),
            section,
            notice,
            lang: self.lang,
            t: self.lang.texts(),
            path: self.path.clone(),
        }
    }

    /// The catalogue of this admin's language.
    pub fn t(&self) -> &'static Texts {
        self.lang.texts()
    }

    /// Appends an audit entry for a change this admin made.
    pub async fn audit(&self, app: &AppState, action: &str, target: &str, detail: String) {
        crate::history::audit::record(&app.store, &self.agent, action, target, detail).await;
    }
}

/// The CSRF token of a session: a MAC of a fixed label under the session token, so it needs no
/// storage, survives restarts, and cannot be made without the cookie.
pub fn csrf_token(session_token: &str) -> String {
    secrets::hmac_sha256_hex(session_token.as_bytes(), b"kefu admin form")
}

/// Why a request does not reach an admin page.
pub enum AdminDenied {
    /// No session: a page sends the browser to the login form.
    Login {
        next: String,
    },
    /// No session on a form post or other change.
    Unauthorized(Lang),
    /// A session that is not an admin's, or a form without a valid CSRF token: the message in
    /// the request's language.
    Forbidden(Lang, &'static str),
    Internal,
}

impl IntoResponse for AdminDenied {
    fn into_response(self) -> Response {
        match self {
            AdminDenied::Login { next } => {
                let next = url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>();
                Redirect::to(&format!("/admin/login?next={next}")).into_response()
            }
            AdminDenied::Unauthorized(lang) => {
                let t = lang.texts();
                message_page(lang, StatusCode::UNAUTHORIZED, t.log_in_first, t.log_in_to_change)
            }
            AdminDenied::Forbidden(lang, message) => {
                message_page(lang, StatusCode::FORBIDDEN, lang.texts().not_allowed, message)
            }
            // Where it happens the language is not at hand: both languages.
            AdminDenied::Internal => {
                let (en, zh) = (Lang::En.texts(), Lang::Zh.texts());
                message_page(
                    Lang::En,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("{} · {}", en.went_wrong, zh.went_wrong),
                    &format!("{} {}", en.went_wrong_detail, zh.went_wrong_detail),
                )
            }
        }
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = AdminDenied;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|token| token.trim().to_owned());
        let token = bearer.or_else(|| crate::net::http::session_cookie_token(&parts.headers));
        let principal = match &token {
            Some(token) => authenticate(app, token).await.map_err(|_| AdminDenied::Internal)?,
            None => None,
        };
        let lang = Lang::of_request(&parts.headers);
        match (principal, token) {
            (Some(Principal::Agent(agent)), Some(token)) if agent.role == Role::Admin => {
                // A page drawn for a form post (a refused form) switches language back to a page
                // that can be fetched: the one the form was on, else the section's list.
                let path = if matches!(parts.method, Method::GET | Method::HEAD) {
                    parts.uri.path_and_query().map_or("/admin", |path| path.as_str()).to_owned()
                } else {
                    page_of_post(&parts.headers, parts.uri.path())
                };
                Ok(AdminUser { agent, csrf: csrf_token(&token), lang, path })
            }
            (Some(_), _) => Err(AdminDenied::Forbidden(lang, lang.texts().only_admins)),
            (None, _) if matches!(parts.method, Method::GET | Method::HEAD) => {
                let next = parts.uri.path_and_query().map_or("/admin", |path| path.as_str()).to_owned();
                Err(AdminDenied::Login { next })
            }
            (None, _) => Err(AdminDenied::Unauthorized(lang)),
        }
    }
}

/// Every agent (by email), site (by name) and team (by site and name), for pages that pick
/// among them.
pub struct Directory {
    pub agents: Vec<Agent>,
    pub sites: Vec<crate::sites::Site>,
    pub teams: Vec<crate::people::teams::Team>,
}

impl Directory {
    /// Only the agents who can join a team (enabled ones), by name.
    pub fn for_teams(mut self) -> Directory {
        self.agents.retain(|agent| !agent.disabled);
        self.agents.sort_by_key(|agent| agent.name.to_lowercase());
        self
    }
}

pub async fn directory(app: &AppState) -> Result<Directory, Response> {
    use crate::people::agent_administration::AgentAdministration;
    use crate::people::team_store::TeamStore;
    use crate::sites::store::SiteStore;
    let mut agents = AgentAdministration::list(&app.store).await.map_err(internal_error)?;
    agents.sort_by(|a, b| a.email.cmp(&b.email));
    let mut teams = TeamStore::list(&app.store).await.map_err(internal_error)?;
    teams.sort_by(|a, b| (&a.site, a.name.to_lowercase()).cmp(&(&b.site, b.name.to_lowercase())));
    let mut sites = SiteStore::list(&app.store).await.map_err(internal_error)?;
    sites.sort_by_key(|site| site.name.to_lowercase());
    Ok(Directory { agents, sites, teams })
}

/// Renders an admin page with its security headers.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut response = (status, html).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(ADMIN_CSP));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            tracing::error!(%error, "rendering an admin page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "admin/message.html")]
struct MessagePage<'a> {
    lang: Lang,
    t: &'static Texts,
    title: &'a str,
    message: &'a str,
}

/// A page that only says something (an error, a refusal).
pub fn message_page(lang: Lang, status: StatusCode, title: &str, message: &str) -> Response {
    render(status, &MessagePage { lang, t: lang.texts(), title, message })
}

/// The answer to a failed storage read or write inside an admin page.
/// A storage failure as a page: 503 for what a cluster node does not serve yet, else
/// [`internal_error`].
pub fn storage_failure(error: crate::storage::StorageError) -> Response {
    match error {
        crate::storage::StorageError::ApplianceOnly(_) => {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
        }
        error => internal_error(error),
    }
}

pub fn internal_error(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "an admin page failed");
    AdminDenied::Internal.into_response()
}

/// Where a page drawn for a post to `posted` comes back to: the same-origin page that sent the
/// form (its `Referer`), else the first two segments of the posted path (`/admin/email`).
fn page_of_post(headers: &axum::http::HeaderMap, posted: &str) -> String {
    let referred = headers
        .get(axum::http::header::REFERER)
        .and_then(|value| value.to_str().ok())
        .and_then(|referer| url::Url::parse(referer).ok())
        .filter(|url| url.path().starts_with("/admin"))
        .map(|url| match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        });
    referred.unwrap_or_else(|| posted.split('/').take(3).collect::<Vec<_>>().join("/"))
}

/// Back to `path` after a change, with a notice for the next page.
pub fn done(path: &str, notice: &str) -> Response {
    let notice = url::form_urlencoded::byte_serialize(notice.as_bytes()).collect::<String>();
    let separator = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{separator}done={notice}")).into_response()
}

/// The `?done=` notice of a page, if any.
#[derive(serde::Deserialize, Default)]
pub struct Notice {
    done: Option<String>,
}

impl Notice {
    pub fn take(self) -> Option<String> {
        self.done.filter(|notice| !notice.is_empty()).map(|notice| notice.chars().take(200).collect())
    }
}

/// `404` for an id or key that does not exist; `what` is a noun of the catalogue.
pub fn not_found(lang: Lang, what: &str) -> Response {
    let t = lang.texts();
    message_page(lang, StatusCode::NOT_FOUND, t.not_found, &fill(t.no_such, &[("what", &what)]))
}
