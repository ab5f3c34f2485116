//! Outbound HTTP (webhooks, LLM endpoints): one client setup with a pure-Rust DNS resolver (so a
//! static binary resolves names without the C library's NSS) and a guard that refuses private,
//! loopback, link-local and every other special-purpose address (the IANA IPv4 and IPv6
//! special-purpose registries) unless the caller allows them.
//!
//! The guard runs at connect time, inside the resolver, so it also covers every redirect; a URL
//! with a literal IP address never reaches the resolver and is checked before the request and on
//! each redirect.
//!
//! kefu's own command-line tools (`kefu healthcheck`, `kefu chat`) talk to the kefu they were
//! pointed at, usually on loopback, so their client has no guard (`kefu_client::http::tool_client`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest wait for a connection, whatever the request's own timeout.
const MAX_CONNECT_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Most redirects followed.
const MAX_REDIRECTS: usize = 5;

/// IPv4 ranges of the IANA IPv4 Special-Purpose Address Registry that are not globally
/// reachable, plus multicast (224.0.0.0/4, its own registry). Stricter than the registry in one
/// place: all of 192.0.0.0/24 is refused, including its two globally reachable /32s (NAT64
/// discovery and TURN anycast), which no webhook or model server uses.
///
/// A table rather than a crate: `std`'s `is_global` is unstable, and `ip_network` 0.4 (the crate
/// with an `is_global` for both families) treats IPv4-mapped IPv6 addresses and most of the IPv6
/// registry (64:ff9b:1::/48, 100::/64, 2001::/23, 3fff::/20, 5f00::/16) as global.
const SPECIAL_PURPOSE_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network" (RFC 791)
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private use (RFC 1918)
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space, carrier-grade NAT (RFC 6598)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback (RFC 1122)
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link local (RFC 3927)
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private use (RFC 1918)
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments (RFC 6890)
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation TEST-NET-1 (RFC 5737)
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // deprecated 6to4 relay anycast (RFC 7526)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private use (RFC 1918)
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking (RFC 2544)
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation TEST-NET-2 (RFC 5737)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation TEST-NET-3 (RFC 5737)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast (RFC 5771)
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved (RFC 1112), with the limited broadcast address
];

/// IPv6 ranges of the IANA IPv6 Special-Purpose Address Registry that are not globally
/// reachable, plus multicast (ff00::/8), the deprecated site-local and IPv4-compatible ranges,
/// and 6to4 (2002::/16, which embeds any IPv4 address). Stricter than the registry in one place:
/// all of 2001::/23 is refused, including its few globally reachable entries (AMT, AS112, ORCHIDv2).
/// IPv4-mapped (::ffff:0:0/96) and NAT64 (64:ff9b::/96) addresses are judged by the IPv4 address
/// they carry, in [`is_private`].
const SPECIAL_PURPOSE_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96), // unspecified, loopback, IPv4-compatible (RFC 4291)
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use IPv4/IPv6 translation (RFC 8215)
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only (RFC 6666)
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0), 64), // dummy prefix (RFC 9780)
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments, Teredo, benchmarking (RFC 2928)
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation (RFC 3849)
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16), // 6to4 (RFC 3056)
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation (RFC 9637)
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16), // segment routing SIDs (RFC 9602)
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local (RFC 4193)
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link local (RFC 4291)
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // deprecated site local (RFC 3879)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast (RFC 4291)
];

/// Whether an address is anything but a globally reachable unicast address: private, loopback,
/// link-local, multicast, documentation, benchmarking, reserved, or any other entry of the IANA
/// special-purpose registries (see [`SPECIAL_PURPOSE_V4`] and [`SPECIAL_PURPOSE_V6`]).
pub fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            SPECIAL_PURPOSE_V4.iter().any(|(network, prefix_len)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix_len)).unwrap_or(0);
                bits & mask == u32::from(*network) & mask
            })
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 (RFC 6052): the address reaches the IPv4 address in its last 32 bits.
                let [.., high, low] = segments;
                return is_private(IpAddr::V4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))));
            }
            let bits = u128::from(v6);
            SPECIAL_PURPOSE_V6.iter().any(|(network, prefix_len)| {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix_len)).unwrap_or(0);
                bits & mask == u128::from(*network) & mask
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error(
        "{0} is a private, loopback, link-local or other special-purpose address, which this destination may not use"
    )]
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

/// The addresses of a host the administrator configured (the SMTP server), from the same
/// pure-Rust resolver (`/etc/hosts`, then `/etc/resolv.conf`'s servers). No guard: such a
/// server is often on the local network. A literal address is returned as it is.
pub async fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(address) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(vec![address]);
    }
    let found = new_resolver()?.lookup_ip(host).await.map_err(|error| error.to_string())?;
    Ok(found.iter().collect())
}

/// The two clients of a sender whose destinations are public unless a setting allows a private
/// one (a webhook's `allow_private`, push's loopback endpoints): built once, picked per request.
#[derive(Clone)]
pub struct Clients {
    guarded: reqwest::Client,
    open: reqwest::Client,
}

impl Clients {
    pub fn new(timeout: Duration) -> Result<Clients, String> {
        Ok(Clients { guarded: client(timeout, false)?, open: client(timeout, true)? })
    }

    /// The client allowed private addresses when `allow_private`, else the guarded one.
    pub fn pick(&self, allow_private: bool) -> &reqwest::Client {
        if allow_private { &self.open } else { &self.guarded }
    }
}

/// A client for outbound requests with the private-address guard (unless `allow_private`).
pub fn client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client, String> {
    builder(timeout, allow_private)?.build().map_err(|error| error.to_string())
}

/// [`client`]'s settings, for a caller that adds its own (the ACME client its directory's CA):
/// the pure-Rust resolver (a static binary cannot rely on the C library's), the guard unless
/// `allow_private`, checked redirects, timeouts and kefu's user agent.
pub fn builder(timeout: Duration, allow_private: bool) -> Result<reqwest::ClientBuilder, String> {
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
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIME))
        .redirect(redirect)
        .dns_resolver(Arc::new(GuardedResolver { resolver, allow_private }))
        .user_agent(concat!("kefu/", env!("CARGO_PKG_VERSION"))))
}

/// The longest wait between two attempts of a retried outbound call.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The wait before attempt `attempts + 1` of a retried outbound call (webhooks, email, push):
/// exponential, capped, with ±50 % jitter.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(MAX_BACKOFF);
    exponential.mul_f64(rand::random_range(0.5..1.5))
}

/// The innermost cause, which says why (a refused private address, a timeout, a refused connection).
pub fn describe_error(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let base = Duration::from_secs(5);
        assert!(backoff(base, 1) <= Duration::from_millis(7500));
        assert!(backoff(base, 4) >= Duration::from_secs(20));
        assert!(backoff(base, 40) <= MAX_BACKOFF.mul_f64(1.5));
    }

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
            "192.0.2.2",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "192.0.0.170",
            "192.88.99.1",
            "224.0.0.251",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::7f00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "3fff::1",
            "5f00::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::101:101",
            "::ffff:1.1.1.1",
            "100.128.0.1",
            "2001:200::1",
        ] {
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
