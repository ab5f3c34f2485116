//! The client's address and scheme, decided in one place.
//!
//! Behind a reverse proxy every TCP peer is the proxy, so the proxy's forwarding headers
//! (`Forwarded`, RFC 7239, or `X-Forwarded-For` and `X-Forwarded-Proto`) say who the client is.
//! They are believed only when the peer is one of `trusted_proxies`; from anyone else they are
//! ignored, since a client can send any header it likes. The [`resolve_client_address`] layer
//! runs first on every request: it stores the [`ClientAddress`] in the request and removes the
//! forwarding headers, leaving `X-Forwarded-Proto: https` only when the client's scheme really
//! was https, so `own_origin` and the Secure cookie flag can read that header as they always did.
//!
//! Invariant: no handler reads `ConnectInfo` or a forwarding header; the client address comes
//! from the [`ClientAddress`] extractor.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::base::config::TrustedProxies;
use crate::net::AppState;
use crate::net::http::error::ApiError;

/// Where a request came from: the client's address, and whether the client reached kefu over
/// https (which kefu's own TLS or a trusted proxy says). Use `ClientAddress(ip)`-style access through
/// [`ClientAddress::ip`] wherever a handler needs the client's IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client's IP address (IPv4-mapped IPv6 addresses are given as IPv4).
    pub ip: IpAddr,
    /// Whether the client used https, as a trusted proxy reported.
    pub https: bool,
}

impl ClientAddress {
    /// The client's IP address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The client of a request from `peer` with `headers`: the peer itself, unless the peer is
    /// a trusted proxy, in which case the nearest address in the forwarding chain that is not
    /// itself a trusted proxy.
    pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted_proxies: &TrustedProxies) -> ClientAddress {
        let peer_ip = peer.ip().to_canonical();
        let direct = ClientAddress { ip: peer_ip, https: false };
        if !trusted_proxies.contains(peer_ip) {
            return direct;
        }
        let forwarded = forwarded_elements(headers);
        if !forwarded.is_empty() {
            let chosen =
                nearest_untrusted(forwarded.iter().map(|element| element.for_node.as_deref()), trusted_proxies);
            return match chosen {
                Some((index, ip)) => {
                    let proto = forwarded[index].proto.clone().or_else(|| forwarded_proto(headers));
                    ClientAddress { ip, https: is_https(proto.as_deref()) }
                }
                None => direct,
            };
        }
        let forwarded_for: Vec<String> = header_list(headers, "x-forwarded-for");
        let https = is_https(forwarded_proto(headers).as_deref());
        match nearest_untrusted(forwarded_for.iter().map(|node| Some(node.as_str())), trusted_proxies) {
            Some((_, ip)) => ClientAddress { ip, https },
            // A trusted proxy that sends no `X-Forwarded-For` still says which scheme it serves.
            None => ClientAddress { ip: peer_ip, https },
        }
    }
}

/// Walks the forwarding chain from the nearest hop outwards and returns the first address that
/// is not a trusted proxy, with its index. An unreadable hop (`unknown`, an obfuscated name)
/// ends the walk at the last address read, since nothing beyond it can be trusted.
fn nearest_untrusted<'a>(
    nodes: impl DoubleEndedIterator<Item = Option<&'a str>> + ExactSizeIterator,
    trusted_proxies: &TrustedProxies,
) -> Option<(usize, IpAddr)> {
    let mut last_read = None;
    for (index, node) in nodes.enumerate().rev() {
        let Some(ip) = node.and_then(parse_node) else {
            return last_read;
        };
        last_read = Some((index, ip));
        if !trusted_proxies.contains(ip) {
            return last_read;
        }
    }
    last_read
}

/// One element of a `Forwarded` header: the `for` and `proto` parameters.
#[derive(Debug, Default)]
struct ForwardedElement {
    for_node: Option<String>,
    proto: Option<String>,
}

/// The elements of every `Forwarded` header, in order (RFC 7239 section 4).
fn forwarded_elements(headers: &HeaderMap) -> Vec<ForwardedElement> {
    let mut elements = Vec::new();
    for value in headers.get_all(header::FORWARDED) {
        let Ok(value) = value.to_str() else { continue };
        for element in split_outside_quotes(value, ',') {
            let mut parsed = ForwardedElement::default();
            for pair in split_outside_quotes(element, ';') {
                let Some((name, value)) = pair.split_once('=') else { continue };
                let value = value.trim().trim_matches('"').to_owned();
                match name.trim().to_ascii_lowercase().as_str() {
                    "for" => parsed.for_node = Some(value),
                    "proto" => parsed.proto = Some(value),
                    _ => {}
                }
            }
            elements.push(parsed);
        }
    }
    elements
}

/// Splits at `separator`, except inside double quotes.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (index, character) in text.char_indices() {
        if character == '"' {
            quoted = !quoted;
        } else if character == separator && !quoted {
            parts.push(&text[start..index]);
            start = index + character.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A comma-separated header, over all its lines, in order.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|node| node.trim().to_owned())
        .collect()
}

/// The scheme the nearest proxy reported in `X-Forwarded-Proto`.
fn forwarded_proto(headers: &HeaderMap) -> Option<String> {
    header_list(headers, "x-forwarded-proto").pop()
}

fn is_https(proto: Option<&str>) -> bool {
    proto.is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, or
/// `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest
            .split_once(']')
            .and_then(|(address, _)| address.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical());
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    node.parse::<SocketAddr>().ok().map(|address| address.ip().to_canonical())
}

/// The headers through which a proxy describes its client.
const FORWARDING_HEADERS: [&str; 4] = ["forwarded", "x-forwarded-for", "x-forwarded-proto", "x-real-ip"];

/// The layer that resolves every request's [`ClientAddress`] (see the module documentation).
pub async fn resolve_client_address(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let mut client = ClientAddress::resolve(peer, request.headers(), &app.config.trusted_proxies);
        // A client that reached kefu's own TLS directly used https; a trusted proxy says for itself.
        let over_tls = request.extensions().get::<crate::net::http::connections::ServedOverTls>().is_some();
        if over_tls && !app.config.trusted_proxies.contains(peer.ip().to_canonical()) {
            client.https = true;
        }
        let headers = request.headers_mut();
        for name in FORWARDING_HEADERS {
            headers.remove(name);
        }
        if client.https {
            headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        }
        request.extensions_mut().insert(client);
    }
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClientAddress>()
            .copied()
            .ok_or_else(|| ApiError::Internal("the request has no client address (served without ConnectInfo)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies(ranges.iter().map(|range| range.parse().unwrap()).collect())
    }

    fn check(peer: &str, headers: &[(&str, &str)], trusted_proxies: &[&str], expected: (&str, bool)) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        let peer: SocketAddr = peer.parse().unwrap();
        let client = ClientAddress::resolve(peer, &map, &trusted(trusted_proxies));
        assert_eq!((client.ip, client.https), (expected.0.parse().unwrap(), expected.1), "{headers:?}");
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let spoofed = [("x-forwarded-for", "198.51.100.7"), ("x-forwarded-proto", "https")];
        check("203.0.113.5:4000", &spoofed, &[], ("203.0.113.5", false));
        check("203.0.113.5:4000", &spoofed, &["10.0.0.0/8"], ("203.0.113.5", false));
        check("203.0.113.5:4000", &[("forwarded", "for=198.51.100.7;proto=https")], &[], ("203.0.113.5", false));
    }

    #[test]
    fn x_forwarded_for_gives_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let trusted_proxies = ["10.0.0.0/8"];
        check("10.0.0.2:1", &[("x-forwarded-for", "198.51.100.7")], &trusted_proxies, ("198.51.100.7", false));
        // The client wrote the first entry itself; the proxy appended the real peer.
        let chain = [("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.9"), ("x-forwarded-proto", "https")];
        check("10.0.0.2:1", &chain, &trusted_proxies, ("198.51.100.7", true));
        let two_lines = [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "198.51.100.8")];
        check("10.0.0.2:1", &two_lines, &trusted_proxies, ("198.51.100.8", false));
        check("10.0.0.2:1", &[("x-forwarded-for", "10.0.0.3, 10.0.0.4")], &trusted_proxies, ("10.0.0.3", false));
        check("10.0.0.2:1", &[("x-forwarded-proto", "https")], &trusted_proxies, ("10.0.0.2", true));
        check("10.0.0.2:1", &[("x-forwarded-for", "garbage, 198.51.100.7")], &trusted_proxies, ("198.51.100.7", false));
        check("10.0.0.2:1", &[("x-forwarded-for", "[2001:db8::5]:80")], &trusted_proxies, ("2001:db8::5", false));
    }

    #[test]
    fn forwarded_is_read_per_rfc_7239_and_wins_over_x_forwarded_for() {
        let trusted_proxies = ["10.0.0.0/8", "::1/128"];
        let headers = [
            ("forwarded", "for=1.2.3.4;proto=http, for=\"[2001:db8:cafe::17]:4711\";proto=https"),
            ("forwarded", "for=10.0.0.8;proto=http"),
            ("x-forwarded-for", "198.51.100.9"),
        ];
        check("[::1]:5", &headers, &trusted_proxies, ("2001:db8:cafe::17", true));
        check("10.0.0.2:1", &[("forwarded", "for=unknown, for=10.0.0.8")], &trusted_proxies, ("10.0.0.8", false));
        check(
            "10.0.0.2:1",
            &[("forwarded", "For=\"192.0.2.60:8080\";Proto=HTTPS")],
            &trusted_proxies,
            ("192.0.2.60", true),
        );
    }
}
