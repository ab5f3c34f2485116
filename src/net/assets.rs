//! The web UI inside the binary: widget, H5 chat page, demo page and console, from `web/`.
//!
//! Files are embedded with rust-embed (read from disk in debug builds, so front-end edits show
//! without a rebuild) and served with an ETag, `Cache-Control: no-cache` and a strict
//! Content-Security-Policy. Pages may only be framed where they must be: the widget panel by the
//! site's allowed origins, everything else by nobody.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use serde::{Deserialize, Serialize};

use crate::net::AppState;
use crate::net::http::error::ApiError;

#[derive(RustEmbed)]
#[folder = "web/"]
#[exclude = "*.md"]
struct WebAssets;

/// The policy of kefu's pages; `{frame_ancestors}` is filled per page.
const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' data: blob:; style-src 'self'; \
script-src 'self'; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; object-src 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Serves the embedded file at `path`, or 404. `frame_ancestors` applies to HTML pages.
fn serve(path: &str, request_headers: &HeaderMap, frame_ancestors: &str) -> Response {
    let Some(file) = WebAssets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value == etag);
    let mut response =
        if fresh { StatusCode::NOT_MODIFIED.into_response() } else { file.data.into_owned().into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a valid header"));
    let policy = format!("{PAGE_CSP}; frame-ancestors {frame_ancestors}");
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_str(&policy).expect("the policy is ASCII"));
    response
}

/// Any embedded file by its path under `web/` (the router's fallback).
pub async fn static_file(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.is_empty() || path.split('/').any(|part| part == "..") {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    serve(path, &headers, "'none'")
}

/// `GET /widget.js`: the loader that host pages include.
pub async fn widget_loader(headers: HeaderMap) -> Response {
    serve("widget/loader.js", &headers, "'none'")
}

#[derive(Deserialize)]
pub struct PanelQuery {
    site: Option<String>,
}

/// `GET /widget/panel.html?site=KEY`: the chat panel inside the widget's iframe, which only the
/// site's allowed origins may frame.
pub async fn widget_panel(
    State(app): State<AppState>,
    Query(query): Query<PanelQuery>,
    headers: HeaderMap,
) -> Response {
    let site = match &query.site {
        Some(key) => app.sites.get(key).await.ok().flatten(),
        None => None,
    };
    let ancestors = match site {
        Some(site) if site.site.allowed_origins.iter().any(|origin| origin == "*") => "*".to_owned(),
        Some(site) => {
            let mut sources: Vec<String> = vec!["'self'".to_owned()];
            sources.extend(site.site.allowed_origins.iter().filter(|origin| is_csp_source(origin)).cloned());
            sources.join(" ")
        }
        None => "'self'".to_owned(),
    };
    serve("widget/panel.html", &headers, &ancestors)
}

/// Origins go into a header verbatim, so only plain `scheme://host[:port]` values are used.
fn is_csp_source(origin: &str) -> bool {
    (origin.starts_with("https://") || origin.starts_with("http://"))
        && origin.bytes().all(|byte| byte.is_ascii_alphanumeric() || b":/.-_[]".contains(&byte))
}

/// `GET /chat/{site}`: the same panel as a full page, for app WebViews and shareable links.
pub async fn chat_page(Path(_site): Path<String>, headers: HeaderMap) -> Response {
    serve("widget/panel.html", &headers, "'self'")
}

/// `GET /demo`: a sample shop page with the widget on it.
pub async fn demo_page(headers: HeaderMap) -> Response {
    serve("demo.html", &headers, "'self'")
}

/// `GET /console`: the agent console.
pub async fn console_page(headers: HeaderMap) -> Response {
    serve("console/index.html", &headers, "'none'")
}

/// `GET /console/sw.js`: the console's service worker, which shows push notifications. It may
/// control `/console` itself (the page is not under `/console/`, its default scope).
pub async fn console_service_worker(headers: HeaderMap) -> Response {
    let mut response = serve("console/sw.js", &headers, "'none'");
    response.headers_mut().insert("service-worker-allowed", HeaderValue::from_static("/console"));
    response
}

#[derive(Serialize)]
pub struct DemoSite {
    key: String,
}

/// `GET /api/v1/demo-site`: the site the demo page shows (the first one created).
pub async fn demo_site(State(app): State<AppState>) -> Result<axum::Json<DemoSite>, ApiError> {
    let sites = crate::sites::store::SiteStore::list(&app.store).await?;
    let first =
        sites.into_iter().min_by_key(|site| site.created_at).ok_or_else(|| ApiError::NotFound("no site yet".into()))?;
    Ok(axum::Json(DemoSite { key: first.key }))
}
