//! The plain-HTTP listener of a kefu that serves HTTPS itself (`tls.redirect_http`): every
//! request gets a 308 to the same path and query over HTTPS, but `/healthz`, which answers in
//! plain HTTP so a probe needs no certificate.
//!
//! The redirect only ever names a host kefu serves HTTPS for ([`Config::https_names`]:
//! `public_url`'s host, then `tls.acme.domains`). A request whose `Host` is one of them goes to
//! that name; any other `Host` (missing, an address, a name kefu does not serve) goes to the main
//! name, so a forged `Host` cannot send a browser, or a cache in front, to another site.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::base::config::Config;

/// Where redirected requests go: the names HTTPS is served for and its port.
#[derive(Debug)]
pub struct RedirectTarget {
    /// Lowercase host names, the main one first; never empty.
    names: Vec<String>,
    port: u16,
}

impl RedirectTarget {
    /// The target for `config`; `None` when it names no host (configuration checks refuse
    /// `tls.redirect_http` then).
    pub fn from_config(config: &Config) -> Option<RedirectTarget> {
        let names = config.https_names();
        (!names.is_empty()).then(|| RedirectTarget { names, port: config.https_port() })
    }

    /// The `Location` for a request with this `Host` header to `path_and_query`.
    pub fn location(&self, host: Option<&str>, path_and_query: &str) -> String {
        let asked = host.map(host_name).unwrap_or_default();
        let name = self.names.iter().find(|name| **name == asked).unwrap_or(&self.names[0]);
        let path = if path_and_query.starts_with('/') { path_and_query } else { "/" };
        if self.port == 443 { format!("https://{name}{path}") } else { format!("https://{name}:{}{path}", self.port) }
    }
}

/// The name in a `Host` header: lowercase, without the port or a final dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        // A bracketed IPv6 address keeps its colons; it is never one of the names anyway.
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The redirect listener's routes.
pub fn router(target: RedirectTarget) -> axum::Router {
    let target = Arc::new(target);
    axum::Router::new().route("/healthz", get(crate::net::http::health::healthz)).fallback(
        move |headers: HeaderMap, uri: Uri| {
            let target = target.clone();
            async move { redirect(&target, &headers, &uri) }
        },
    )
}

fn redirect(target: &RedirectTarget, headers: &HeaderMap, uri: &Uri) -> Response {
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok());
    let path = uri.path_and_query().map(|path| path.as_str()).unwrap_or("/");
    match HeaderValue::from_str(&target.location(host, path)) {
        Ok(location) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response(),
        // Only a configured name that is not a valid header could get here.
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(names: &[&str], port: u16) -> RedirectTarget {
        RedirectTarget { names: names.iter().map(|name| name.to_string()).collect(), port }
    }

    #[test]
    fn the_redirect_keeps_a_served_name_and_replaces_any_other() {
        let target = target(&["chat.example.com", "kefu.example.org"], 443);
        assert_eq!(target.location(Some("chat.example.com"), "/a?b=1"), "https://chat.example.com/a?b=1");
        assert_eq!(target.location(Some("KEFU.example.org.:80"), "/x"), "https://kefu.example.org/x");
        assert_eq!(target.location(Some("evil.example"), "/x"), "https://chat.example.com/x");
        assert_eq!(target.location(Some("[::1]:80"), "/"), "https://chat.example.com/");
        assert_eq!(target.location(None, "//evil.example/"), "https://chat.example.com//evil.example/");
        assert_eq!(target.location(Some("chat.example.com"), "*"), "https://chat.example.com/");
        let other_port = self::target(&["chat.example.com"], 8443);
        assert_eq!(other_port.location(Some("chat.example.com:80"), "/"), "https://chat.example.com:8443/");
    }
}
