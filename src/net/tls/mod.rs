//! kefu's own TLS: HTTPS and WSS on the HTTP port, and the same certificate for QUIC.
//!
//! One [`Certificates`] holds the certificate in use behind a lock and answers every handshake
//! (it is rustls's certificate resolver), so swapping it changes what new connections get while
//! open ones keep the session they made. The certificate comes from files (`tls.cert`,
//! `tls.key`), read again on SIGHUP, or from ACME ([`acme`]), which also puts its TLS-ALPN-01
//! challenge certificates here. A file that fails to load on reload keeps the old certificate
//! and logs why. [`redirect`] is the optional plain-HTTP listener that sends browsers to HTTPS.

pub mod acme;
pub mod redirect;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::base::config::TlsConfig;

/// The ALPN protocol of an ACME TLS-ALPN-01 validation (RFC 8737); a connection that
/// negotiates it only proves control of a name and carries no HTTP.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the key in {key} does not fit the certificate in {cert}: {source}")]
    Key { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("configuring TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate every TLS handshake gets, swappable while connections are open.
#[derive(Debug, Default)]
pub struct Certificates {
    /// The certificate for HTTPS, WSS and QUIC; `None` only until ACME has obtained one.
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates by domain, present while an ACME order is validated.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Certificates {
    /// Replaces the certificate new handshakes get.
    pub fn set(&self, certified: CertifiedKey) {
        *self.current.write() = Some(Arc::new(certified));
    }

    /// The certificate in use (its chain's first entry is the leaf).
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().clone()
    }

    fn set_challenge(&self, domain: &str, certified: CertifiedKey) {
        self.challenges.write().insert(domain.to_ascii_lowercase(), Arc::new(certified));
    }

    fn clear_challenges(&self) {
        self.challenges.write().clear();
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validating = hello.alpn().is_some_and(|mut protocols| protocols.any(|protocol| protocol == ACME_TLS_ALPN));
        if validating {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.read().get(&name).cloned();
        }
        self.current()
    }
}

/// The crypto provider every TLS configuration here uses (ring, as QUIC and reqwest do).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and its key, checking that they belong together.
pub fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read { path: cert.to_owned(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Read { path: key.to_owned(), source })?;
    certified_key(chain, private_key).map_err(|source| TlsError::Key {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// A chain and its key as rustls serves them; fails when the key is unusable or not the leaf's.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, rustls::Error> {
    CertifiedKey::from_der(chain, key, &provider())
}

/// The certificates of the HTTP port: loaded from the files now, or from the ACME cache (if any
/// is there yet). `None` when TLS is off.
pub fn open(config: &TlsConfig, data_dir: &Path) -> anyhow::Result<Option<Arc<Certificates>>> {
    let certificates = Arc::new(Certificates::default());
    if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
        certificates.set(load_files(cert, key)?);
    } else if let Some(acme) = &config.acme {
        if let Some(cached) = acme::CertificateCache::new(acme, data_dir).load()? {
            certificates.set(cached.certified);
        }
    } else {
        return Ok(None);
    }
    Ok(Some(certificates))
}

/// The ALPN protocol of HTTP/2 over TLS (RFC 9113).
pub const HTTP2_ALPN: &[u8] = b"h2";

/// The rustls configuration of the HTTP port: HTTP/2 and HTTP/1.1, in the server's order of
/// preference, and, for ACME, the TLS-ALPN-01 protocol.
pub fn http_server_config(certificates: Arc<Certificates>) -> Result<rustls::ServerConfig, TlsError> {
    server_config(certificates, &[HTTP2_ALPN, b"http/1.1", ACME_TLS_ALPN])
}

/// The rustls configuration of the gRPC port: the same certificates, HTTP/2 only.
pub fn grpc_server_config(certificates: Arc<Certificates>) -> Result<rustls::ServerConfig, TlsError> {
    server_config(certificates, &[HTTP2_ALPN])
}

fn server_config(certificates: Arc<Certificates>, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

/// Reads the certificate files again on every SIGHUP until shutdown; a file that fails to load
/// keeps the certificate in use. Without files (no TLS, or ACME, which renews by itself) a
/// SIGHUP is only logged: it must not stop the server, as its default action would.
///
/// The handler is installed when this is called, not when the returned future first runs, so
/// a SIGHUP right after the server says it listens cannot meet the default action.
pub fn reload_on_hangup(
    config: TlsConfig,
    certificates: Option<Arc<Certificates>>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move { watch_hangups(config, certificates, shutdown, hangups).await }
}

async fn watch_hangups(
    config: TlsConfig,
    certificates: Option<Arc<Certificates>>,
    shutdown: CancellationToken,
    #[cfg(unix)] hangups: std::io::Result<tokio::signal::unix::Signal>,
) {
    let files = match (config.cert, config.key, certificates) {
        (Some(cert), Some(key), Some(certificates)) => Some((cert, key, certificates)),
        _ => None,
    };
    #[cfg(unix)]
    {
        let mut hangups = match hangups {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; the certificate will not be reloaded");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            let Some((cert, key, certificates)) = &files else {
                tracing::info!("SIGHUP: there are no certificate files to reload");
                continue;
            };
            let (cert, key) = (cert.clone(), key.clone());
            let loaded = tokio::task::spawn_blocking(move || load_files(&cert, &key)).await;
            match loaded {
                Ok(Ok(certified)) => {
                    certificates.set(certified);
                    tracing::info!("SIGHUP: reloaded the TLS certificate");
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "SIGHUP: the new TLS certificate was not loaded; still serving the old one")
                }
                Err(error) => tracing::error!(%error, "SIGHUP: reloading the TLS certificate failed"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = files;
        shutdown.cancelled().await;
    }
}

/// The end of a certificate's validity, in seconds since the Unix epoch; `None` when the
/// certificate cannot be read.
pub fn not_after(certificate: &[u8]) -> Option<i64> {
    validity(certificate).map(|(_, not_after)| not_after)
}

/// A certificate's validity (`tbsCertificate.validity`: notBefore, notAfter), in seconds since
/// the Unix epoch, read from its DER; `None` when the certificate cannot be read.
pub fn validity(certificate: &[u8]) -> Option<(i64, i64)> {
    let (certificate, _) = der_element(certificate, 0x30)?;
    let (mut tbs, _) = der_element(certificate, 0x30)?;
    // An explicit version ([0]) comes first when present.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    let (_serial, rest) = der_element(tbs, 0x02)?;
    let (_signature, rest) = der_element(rest, 0x30)?;
    let (_issuer, rest) = der_element(rest, 0x30)?;
    let (validity, _) = der_element(rest, 0x30)?;
    let (not_before, rest) = der_any_time(validity)?;
    let (not_after, _) = der_any_time(rest)?;
    Some((not_before, not_after))
}

/// The contents of the DER element at the start of `input` if its tag is `tag`, and what follows.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)? as usize;
    let (length, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n_bytes = first & 0x7f;
        if n_bytes == 0 || n_bytes > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n_bytes)?;
        (bytes.iter().fold(0usize, |length, byte| (length << 8) | *byte as usize), 2 + n_bytes)
    };
    let end = header.checked_add(length)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

/// A UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) as Unix seconds.
fn der_any_time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (text, rest, year_digits) = match input.first()? {
        0x17 => der_element(input, 0x17).map(|(text, rest)| (text, rest, 2))?,
        0x18 => der_element(input, 0x18).map(|(text, rest)| (text, rest, 4))?,
        _ => return None,
    };
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    if text.len() != year_digits + 10 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<i16>().ok();
    let mut year = number(0..year_digits)?;
    if year_digits == 2 {
        year += if year < 50 { 2000 } else { 1900 };
    }
    let at = |index: usize| number(year_digits + index..year_digits + index + 2);
    let time = jiff::civil::datetime(year, at(0)? as i8, at(2)? as i8, at(4)? as i8, at(6)? as i8, at(8)? as i8, 0);
    let timestamp = time.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some((timestamp.as_second(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_validity_is_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["example.test".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 4, 5);
        let certificate = params.self_signed(&key).unwrap();
        let expected = jiff::civil::date(2031, 4, 5).to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp();
        assert_eq!(not_after(certificate.der()), Some(expected.as_second()));
        // After 2049 the time is a GeneralizedTime.
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let certificate = params.self_signed(&key).unwrap();
        let expected = jiff::civil::date(2051, 1, 2).to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp();
        assert_eq!(not_after(certificate.der()), Some(expected.as_second()));
        assert_eq!(not_after(b"not a certificate"), None);
        assert_eq!(not_after(&certificate.der()[..40]), None);
    }
}
