//! The HTTP surface: JSON API under `/api/v1`, the WebSocket endpoints, health checks, and the
//! security headers every response carries.

pub mod account_api;
pub mod agent_api;
pub mod canned_replies_api;
pub mod client_address;
pub mod connections;
pub mod conversations_api;
pub mod error;
pub mod extract;
pub mod health;
pub mod history_api;
pub mod knowledge_base_api;
pub mod leads_api;
pub mod openapi;
pub mod push_api;
pub mod staff_api;
pub mod uploads_api;
pub mod visitor_api;
pub mod visitors_api;
pub mod webhooks_api;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum_extra::extract::CookieJar;

use crate::net::AppState;
use crate::net::assets;
use crate::net::websocket;

/// The name of the agent session cookie.
pub const SESSION_COOKIE: &str = "kefu_session";

/// The Content-Security-Policy of responses that do not set their own (API answers).
const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Every route kefu serves. The routes API tokens may use (most of the console's too) are in
/// `openapi::token_api`, with their OpenAPI document.
pub fn router(app: AppState) -> Router {
    let max_body = app.config.limits.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/widget.js", get(assets::widget_loader))
        .route("/widget/panel.html", get(assets::widget_panel))
        .route("/chat/{site}", get(assets::chat_page))
        .route("/demo", get(assets::demo_page))
        .route("/console", get(assets::console_page))
        .route("/api/v1/demo-site", get(assets::demo_site))
        .route("/readyz", get(health::readyz))
        .route("/ws/visitor", get(websocket::visitor_upgrade))
        .route("/ws/agent", get(websocket::agent_upgrade))
        .route("/api/v1/visitor/session", post(visitor_api::open_session))
        .route("/api/v1/sites/{key}/widget", get(visitor_api::widget_settings))
        .route("/api/v1/agent/login", post(agent_api::login))
        .route("/api/v1/agent/logout", post(agent_api::logout))
        .route("/api/v1/agent/me", get(agent_api::me))
        .route("/api/v1/push/key", get(push_api::key))
        .route(
            "/api/v1/push/subscriptions",
            get(push_api::list).post(push_api::subscribe).delete(push_api::unsubscribe),
        )
        .route("/console/sw.js", get(assets::console_service_worker))
        .route("/api/v1/agent/login/code", post(agent_api::login_code))
        .route("/api/v1/agent/password", post(account_api::change_password))
        .route("/api/v1/agent/two-factor/setup", post(account_api::begin_two_factor))
        .route("/api/v1/agent/two-factor/confirm", post(account_api::confirm_two_factor))
        .route("/api/v1/agent/two-factor/disable", post(account_api::disable_two_factor))
        .route(
            "/api/v1/agent/avatar",
            put(account_api::set_avatar)
                .delete(account_api::remove_avatar)
                .layer(DefaultBodyLimit::max(crate::people::avatars::MAX_AVATAR_BYTES)),
        )
        .route("/api/v1/agents/{id}/avatar", get(account_api::avatar))
        .route("/api/v1/conversations/{id}/rating", post(visitor_api::rate_conversation))
        .route("/api/v1/conversations/{id}/transcript", post(visitor_api::email_transcript))
        .route("/api/v1/conversations/{id}/messages/{seq}/feedback", post(knowledge_base_api::feedback))
        .route("/api/v1/conversations/{id}/queue", get(knowledge_base_api::queue_place))
        .route("/api/v1/visitor/offline-messages", post(visitor_api::leave_offline_message))
        .route("/api/v1/offline-messages", get(conversations_api::offline_messages))
        .route(
            "/api/v1/uploads",
            post(uploads_api::create).layer(DefaultBodyLimit::max(app.config.limits.max_upload_bytes)),
        )
        .route("/api/v1/uploads/{id}", get(uploads_api::fetch))
        .route("/api/v1/sites/{key}/webhooks", post(webhooks_api::create).get(webhooks_api::list))
        .route("/api/v1/webhooks/{id}", axum::routing::delete(webhooks_api::delete))
        .route("/api/v1/webhooks/{id}/deliveries", get(webhooks_api::deliveries))
        .route("/api/v1/webhook-deliveries/{id}/resend", post(webhooks_api::resend))
        .route("/api/v1/visitors/online", get(visitors_api::online_visitors))
        .route(
            "/api/v1/visitors/{id}/conversations",
            get(visitors_api::visitor_conversations).post(conversations_api::start_conversation),
        )
        .route(
            "/api/v1/canned-replies",
            get(canned_replies_api::list_canned_replies).post(canned_replies_api::create_canned_reply),
        )
        .route(
            "/api/v1/canned-replies/{id}",
            put(canned_replies_api::update_canned_reply).delete(canned_replies_api::delete_canned_reply),
        )
        // Admins only; listing teams is part of the token API.
        .route("/api/v1/teams", post(staff_api::create_team))
        .route(
            "/api/v1/sites/{key}/bot",
            get(knowledge_base_api::bot_settings).put(knowledge_base_api::save_bot_settings),
        )
        .merge(openapi::token_api_router())
        .merge(crate::net::admin::router())
        .fallback(assets::static_file)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(api_errors_as_json))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(app.clone(), client_address::resolve_client_address))
        .layer(middleware::from_fn(trace_calls))
        .with_state(app)
}

/// Runs each request in a span of the caller's trace (its `traceparent`) when traces are
/// exported (`telemetry.otlp_endpoint`); otherwise passes the request straight on.
async fn trace_calls(request: Request, next: Next) -> Response {
    if !crate::base::trace_export::enabled() {
        return next.run(request).await;
    }
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|path| path.as_str().to_owned());
    let span = crate::base::trace_context::incoming_call(
        "http",
        request.method().as_str(),
        route.as_deref().unwrap_or_default(),
        request.headers(),
    );
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(DEFAULT_CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("strict-origin-when-cross-origin"));
    response
}

/// Errors answered in plain text by axum itself (a malformed path or query value, an unknown API
/// route, a wrong method) get the API's one JSON error shape under `/api/`.
async fn api_errors_as_json(request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    let is_plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|value| value.to_str().is_ok_and(|value| value.starts_with("text/plain")));
    if !is_api || !status.is_client_error() || !is_plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.unwrap_or_default();
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("request refused").to_lowercase(),
        text => text.to_owned(),
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_field",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        _ => "bad_request",
    };
    let mut json =
        (status, axum::Json(serde_json::json!({ "error": { "code": code, "message": message } }))).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

/// kefu's own origin as the browser sees it, from the `Host` header. The scheme is https only
/// when a trusted proxy said so (`client_address` removes `X-Forwarded-Proto` otherwise).
pub fn own_origin(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("localhost");
    let scheme = headers.get("x-forwarded-proto").and_then(|value| value.to_str().ok()).unwrap_or("http");
    format!("{scheme}://{host}")
}

/// The agent session token in the request's cookie, if any.
pub fn session_cookie_token(headers: &HeaderMap) -> Option<String> {
    CookieJar::from_headers(headers).get(SESSION_COOKIE).map(|cookie| cookie.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(cookie_headers: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for value in cookie_headers {
            headers.append(header::COOKIE, HeaderValue::from_str(value).expect("a valid header"));
        }
        session_cookie_token(&headers)
    }

    #[test]
    fn the_session_token_is_found_among_other_cookies() {
        assert_eq!(token(&["kefu_session=abc"]), Some("abc".to_owned()));
        assert_eq!(token(&["theme=dark; kefu_session=a.b-c_d;lang=en"]), Some("a.b-c_d".to_owned()));
        assert_eq!(token(&["theme=dark", "kefu_session=abc"]), Some("abc".to_owned()));
        assert_eq!(token(&["kefu_session_old=abc; other=kefu_session"]), None);
        assert_eq!(token(&[]), None);
    }
}
