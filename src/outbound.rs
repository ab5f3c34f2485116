//! Outbound HTTP (webhooks, LLM endpoints): one client setup with a pure-Rust DNS resolver (so a
//! static binary resolves names without the C library's NSS) and a guard that refuses private,
//! loopback and link-local addresses unless the caller allows them.
//!
//! The guard runs at connect time, inside the resolver, so it also covers every redirect; a URL
//! with a literal IP address never reaches the resolver and is checked before the request and on
//! each redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest wait for a connection, whatever the request's own timeout.
const MAX_CONNECT_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Most redirects followed.
const MAX_REDIRECTS: usize = 5;

/// Whether an address is inside kefu's network neighbourhood rather than on the internet.
pub fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xC0) == 64 // 100.64.0.0/10, carrier-grade NAT
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xFE00) == 0xFC00 // unique local fc00::/7
                || (v6.segments()[0] & 0xFFC0) == 0xFE80 // link-local fe80::/10
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("{0} is a private, loopback or link-local address, which this destination may not use")]
    PrivateAddress(String),
    #[error("not an http(s) URL: {0}")]
    BadUrl(String),
}

/// Checks a URL's scheme, and its host when it is a literal address.
pub fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), OutboundError> {
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(OutboundError::BadUrl(url.to_string()));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(OutboundError::BadUrl(url.to_string())),
    };
    match literal {
        Some(address) if !allow_private && is_private(address) => {
            Err(OutboundError::PrivateAddress(address.to_string()))
        }
        _ => Ok(()),
    }
}

/// Resolves names with hickory and drops private addresses unless allowed.
struct GuardedResolver {
    resolver: Arc<TokioResolver>,
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.resolver.clone();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found = resolver.lookup_ip(name.as_str()).await?;
            let addresses: Vec<SocketAddr> = found.iter().map(|address| SocketAddr::new(address, 0)).collect();
            let allowed: Vec<SocketAddr> =
                addresses.iter().copied().filter(|address| allow_private || !is_private(address.ip())).collect();
            if allowed.is_empty() {
                let refused = addresses
                    .first()
                    .map(|address| address.ip().to_string())
                    .unwrap_or_else(|| name.as_str().to_owned());
                return Err(
                    Box::new(OutboundError::PrivateAddress(refused)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A resolver from the system's configuration. Each client gets its own: a resolver belongs to the
/// async runtime it was made in.
fn new_resolver() -> Result<Arc<TokioResolver>, String> {
    let builder = TokioResolver::builder_tokio().map_err(|error| error.to_string())?;
    builder.build().map(Arc::new).map_err(|error| error.to_string())
}

/// A client for outbound requests with the private-address guard (unless `allow_private`).
pub fn client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client, String> {
    // rustls needs a process-wide crypto provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resolver = new_resolver()?;
    let redirect = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        match check_url(attempt.url(), allow_private) {
            Ok(()) => attempt.follow(),
            Err(error) => attempt.error(error),
        }
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIME))
        .redirect(redirect)
        .dns_resolver(Arc::new(GuardedResolver { resolver, allow_private }))
        .user_agent(concat!("kefu/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_addresses_are_checked_before_any_request() {
        let check = |url: &str, allow: bool| check_url(&url.parse().unwrap(), allow).is_ok();
        assert!(!check("http://127.0.0.1:9/hook", false));
        assert!(check("http://127.0.0.1:9/hook", true));
        assert!(!check("http://[::1]/hook", false));
        assert!(check("https://hooks.example.com/x", false));
        assert!(!check("ftp://hooks.example.com/x", false));
    }

    #[tokio::test]
    async fn localhost_resolves_for_destinations_that_allow_private_addresses() {
        let resolver = GuardedResolver { resolver: new_resolver().unwrap(), allow_private: true };
        let found: Vec<SocketAddr> = resolver.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(found.iter().any(|address| address.ip().is_loopback()), "{found:?}");
        let guarded = GuardedResolver { resolver: new_resolver().unwrap(), allow_private: false };
        assert!(guarded.resolve("localhost".parse().unwrap()).await.is_err());
    }
}
