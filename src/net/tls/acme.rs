//! Certificates over ACME (RFC 8555) for a kefu reached directly, without a proxy.
//!
//! The challenge is TLS-ALPN-01 (RFC 8737), answered on the HTTP port itself: the certificate
//! authority connects to port 443 of each domain offering ALPN `acme-tls/1`, and
//! [`Certificates`] answers with a challenge certificate for that name. HTTP-01 would need port
//! 80 open besides, which a kefu serving HTTPS on 443 does not otherwise listen on; TLS-ALPN-01
//! needs nothing but the port kefu already serves.
//!
//! The account's credentials and the certificate with its key are kept in `cache_dir` (files
//! 0600, the directory 0700), so a restart reuses them instead of asking again (certificate
//! authorities limit how often one may). A certificate is renewed when it expires within
//! `renew_before_days`; a failed attempt is retried with a growing wait, the old certificate
//! served meanwhile.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http;
use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::{Certificates, certified_key, not_after};
use crate::base::config::AcmeConfig;

/// The first wait after a failed attempt to obtain a certificate; it doubles up to
/// [`RETRY_MOST`]. Certificate authorities limit failed validations per hour, so retries stay slow.
const RETRY_FIRST: Duration = Duration::from_secs(60);
const RETRY_MOST: Duration = Duration::from_secs(6 * 3600);

/// The longest sleep between checks of the certificate's expiry, so a clock change or a
/// suspended machine is noticed within a day at worst.
const CHECK_EVERY: Duration = Duration::from_secs(12 * 3600);

/// How long one ACME request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the authority may take to validate the challenges and to issue the certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a certificate could not be obtained or read from the cache.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("the ACME client: {0}")]
    Client(String),
    #[error("the authority offers no TLS-ALPN-01 challenge for {0}")]
    NoTlsAlpnChallenge(String),
    #[error("the authorization for {domain} is {status:?}")]
    Authorization { domain: String, status: AuthorizationStatus },
    #[error("the order is {0:?}, not ready, after its challenges")]
    Order(OrderStatus),
    #[error("making a key or a certificate request: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the issued certificate: {0}")]
    Issued(String),
}

/// A certificate read from the cache, with the end of its validity.
pub struct Cached {
    pub certified: CertifiedKey,
    /// Unix seconds.
    pub not_after: i64,
}

/// The files of `cache_dir`: the account and the current certificate with its key.
pub struct CertificateCache {
    directory: PathBuf,
}

impl CertificateCache {
    pub fn new(config: &AcmeConfig, data_dir: &Path) -> CertificateCache {
        CertificateCache { directory: config.cache_dir.clone().unwrap_or_else(|| data_dir.join("acme")) }
    }

    fn account_path(&self) -> PathBuf {
        self.directory.join("account.json")
    }

    /// The certificate chain, leaf first.
    pub fn certificate_path(&self) -> PathBuf {
        self.directory.join("certificate.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.directory.join("certificate-key.pem")
    }

    /// The cached certificate, if there is one; an unreadable one is an error, not a reason to
    /// ask the authority again.
    pub fn load(&self) -> Result<Option<Cached>, AcmeError> {
        let (cert_path, key_path) = (self.certificate_path(), self.key_path());
        if !cert_path.exists() || !key_path.exists() {
            return Ok(None);
        }
        let certified = super::load_files(&cert_path, &key_path)
            .map_err(|error| AcmeError::Cache { path: cert_path.clone(), message: error.to_string() })?;
        let not_after = not_after(&certified.cert[0])
            .ok_or_else(|| AcmeError::Cache { path: cert_path, message: "its expiry cannot be read".into() })?;
        Ok(Some(Cached { certified, not_after }))
    }

    fn load_account(&self) -> Result<Option<AccountCredentials>, AcmeError> {
        let path = self.account_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| AcmeError::Cache { path, message: error.to_string() }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AcmeError::File { path, source }),
        }
    }

    /// Writes `contents` to `path` through a temporary file, private to kefu's user.
    fn write(&self, path: &Path, contents: &[u8]) -> Result<(), AcmeError> {
        let file_error = |source| AcmeError::File { path: path.to_owned(), source };
        crate::base::file_modes::create_private_directory(&self.directory).map_err(file_error)?;
        let partial = path.with_extension("partial");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&partial).and_then(|mut file| {
            std::io::Write::write_all(&mut file, contents)?;
            file.sync_all()
        });
        written.and_then(|()| std::fs::rename(&partial, path)).map_err(file_error)
    }
}

/// Keeps a valid certificate in `certificates` until shutdown: obtains one when the cache has
/// none, and renews it `renew_before_days` before it expires.
pub async fn run(config: AcmeConfig, data_dir: PathBuf, certificates: Arc<Certificates>, shutdown: CancellationToken) {
    let cache = CertificateCache::new(&config, &data_dir);
    let mut retry = RETRY_FIRST;
    loop {
        let renew_at = certificates.current().and_then(|current| renewal_time(&current.cert[0], &config));
        let now = jiff::Timestamp::now().as_second();
        let wait = match renew_at {
            Some(renew_at) if renew_at > now => Duration::from_secs((renew_at - now) as u64).min(CHECK_EVERY),
            _ => match tokio::select! {
                _ = shutdown.cancelled() => return,
                obtained = obtain(&config, &cache, &certificates) => obtained,
            } {
                Ok(expires) => {
                    retry = RETRY_FIRST;
                    tracing::info!(domains = ?config.domains, expires, "ACME: obtained a certificate");
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, retry_in_secs = retry.as_secs(), "ACME: could not obtain a certificate");
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_MOST);
                    wait
                }
            },
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// When a certificate is due for renewal (Unix seconds): `renew_before_days` before it expires,
/// but never before two thirds of its lifetime, so a certificate shorter-lived than that window
/// is not renewed again at once.
fn renewal_time(certificate: &[u8], config: &AcmeConfig) -> Option<i64> {
    let (not_before, not_after) = super::validity(certificate)?;
    let renew_before = i64::from(config.renew_before_days) * 86_400;
    Some((not_after - renew_before).max(not_before + (not_after - not_before) * 2 / 3))
}

/// Orders a certificate for the configured domains, answers its challenges, stores it in the
/// cache and serves it; returns when it expires (Unix seconds).
pub async fn obtain(
    config: &AcmeConfig,
    cache: &CertificateCache,
    certificates: &Certificates,
) -> Result<i64, AcmeError> {
    let account = account(config, cache).await?;
    let identifiers: Vec<Identifier> = config.domains.iter().map(|domain| Identifier::Dns(domain.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let domain = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => return Err(AcmeError::Authorization { domain, status }),
        }
        let mut challenge = authorization
            .challenge(ChallengeType::TlsAlpn01)
            .ok_or_else(|| AcmeError::NoTlsAlpnChallenge(domain.clone()))?;
        let digest = challenge.key_authorization().digest();
        certificates.set_challenge(&domain, challenge_certificate(&domain, digest.as_ref())?);
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retries).await;
    certificates.clear_challenges();
    match status? {
        OrderStatus::Ready => {}
        status => return Err(AcmeError::Order(status)),
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(config.domains.clone())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let request = params.serialize_request(&key)?;
    order.finalize_csr(request.der()).await?;
    let chain_pem = order.poll_certificate(&retries).await?;

    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| AcmeError::Issued(error.to_string()))?;
    let private_key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .map_err(|error| AcmeError::Issued(error.to_string()))?;
    let certified = certified_key(chain, private_key).map_err(|error| AcmeError::Issued(error.to_string()))?;
    let expires = certified
        .cert
        .first()
        .and_then(|leaf| not_after(leaf))
        .ok_or_else(|| AcmeError::Issued("its expiry cannot be read".into()))?;
    cache.write(&cache.key_path(), key.serialize_pem().as_bytes())?;
    cache.write(&cache.certificate_path(), chain_pem.as_bytes())?;
    certificates.set(certified);
    Ok(expires)
}

/// The cached account, or a new one (saved at once).
async fn account(config: &AcmeConfig, cache: &CertificateCache) -> Result<Account, AcmeError> {
    let http = Box::new(ReqwestClient::new(config)?);
    if let Some(credentials) = cache.load_account()? {
        return Ok(Account::builder_with_http(http).from_credentials(credentials).await?);
    }
    let contact = config.email.as_ref().map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new_account = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) =
        Account::builder_with_http(http).create(&new_account, config.directory_url.clone(), None).await?;
    let json = serde_json::to_vec(&credentials).map_err(|error| AcmeError::Client(error.to_string()))?;
    cache.write(&cache.account_path(), &json)?;
    Ok(account)
}

/// The TLS-ALPN-01 certificate for `domain`: self-signed, naming only `domain`, carrying the
/// SHA-256 of the key authorization in the critical acmeIdentifier extension.
fn challenge_certificate(domain: &str, digest: &[u8]) -> Result<CertifiedKey, AcmeError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let certificate = params.self_signed(&key)?;
    let private_key =
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|error| AcmeError::Issued(error.to_owned()))?;
    // Not `certified_key`: its check that key and certificate match parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension. Both were made just above.
    let signing_key = super::provider()
        .key_provider
        .load_private_key(private_key)
        .map_err(|error| AcmeError::Issued(error.to_string()))?;
    Ok(CertifiedKey::new(vec![certificate.der().clone()], signing_key))
}

/// The ACME client's HTTP, over reqwest (already kefu's HTTP client), trusting the system's
/// roots plus `directory_ca` when given.
struct ReqwestClient(reqwest::Client);

impl ReqwestClient {
    fn new(config: &AcmeConfig) -> Result<ReqwestClient, AcmeError> {
        // Unguarded: the administrator chose the directory, which may be on their own network.
        let mut builder = crate::base::outbound::builder(REQUEST_TIMEOUT, true).map_err(AcmeError::Client)?;
        if let Some(path) = &config.directory_ca {
            let pem = std::fs::read(path).map_err(|source| AcmeError::File { path: path.clone(), source })?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|error| AcmeError::Cache { path: path.clone(), message: error.to_string() })?;
            builder = builder.tls_certs_merge(roots);
        }
        builder.build().map(ReqwestClient).map_err(|error| AcmeError::Client(error.to_string()))
    }
}

impl HttpClient for ReqwestClient {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // A request body is one small JWS document.
            let body = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX)
                .await
                .map_err(|error| instant_acme::Error::Other(Box::new(error)))?;
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|error| instant_acme::Error::Other(Box::new(error)))?;
            let mut head = http::Response::new(());
            *head.status_mut() = response.status();
            *head.headers_mut() = response.headers().clone();
            let body = response.bytes().await.map_err(|error| instant_acme::Error::Other(Box::new(error)))?;
            let (parts, ()) = head.into_parts();
            Ok(BytesResponse { parts, body: Box::new(body) })
        })
    }
}
