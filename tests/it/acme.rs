//! ACME against Debian's `pebble` test authority, started here: kefu obtains a certificate over
//! TLS-ALPN-01 answered on its own HTTP port (pebble validates for real, connecting to
//! `localhost` on that port), caches the account and certificate privately, serves the cached
//! certificate after a restart, and renews one that is due.
//!
//! Without the pebble binary the tests say so loudly and pass, except in CI (`CI` set), where
//! they fail: .ci/run installs pebble.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kefu::base::config::AcmeConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::process::Child;
use tokio::sync::oneshot;

use crate::support::test_config;

/// How long pebble may take to validate and issue (it validates at once with PEBBLE_VA_NOSLEEP).
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// The pebble binary, or `None` (with a loud message) when it is missing outside CI.
fn pebble_binary() -> Option<PathBuf> {
    for candidate in ["/usr/bin/pebble", "/usr/local/bin/pebble", "/usr/sbin/pebble"] {
        if Path::new(candidate).exists() {
            return Some(PathBuf::from(candidate));
        }
    }
    assert!(std::env::var_os("CI").is_none(), "pebble is missing in CI; .ci/run installs it (apt-get install pebble)");
    eprintln!("\n*** SKIPPED: the ACME tests need pebble (apt-get install pebble) ***\n");
    None
}

/// A port free now on 127.0.0.1 (pebble takes its ports from a file, not from port 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running pebble, killed when dropped.
struct Pebble {
    _child: Child,
    directory_url: String,
    /// Its management interface, which hands out the root it issues under.
    management: String,
    /// The root that signs pebble's own HTTPS certificate (`tls.acme.directory_ca`).
    directory_ca: PathBuf,
}

/// Starts pebble with a certificate of our own making for its HTTPS, validating TLS-ALPN-01 on
/// `tls_port`; waits until it answers.
async fn start_pebble(binary: &Path, dir: &Path, tls_port: u16) -> Pebble {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "kefu test pebble CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let directory_ca = dir.join("pebble-ca.pem");
    std::fs::write(&directory_ca, ca.pem()).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), leaf_key.serialize_pem()).unwrap();
    let (listen, management) = (free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{listen}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": dir.join("pebble-cert.pem"),
        "privateKey": dir.join("pebble-key.pem"),
        "httpPort": free_port(),
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let child = tokio::process::Command::new(binary)
        .arg("-config")
        .arg(dir.join("pebble.json"))
        // Validate at once instead of after a random wait of up to 15 s; still validate for real.
        .env("PEBBLE_VA_NOSLEEP", "1")
        // Every nonce is accepted, so the test does not depend on retrying refused ones.
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("pebble starts");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", listen)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Pebble {
        _child: child,
        directory_url: format!("https://127.0.0.1:{listen}/dir"),
        management: format!("https://127.0.0.1:{management}"),
        directory_ca,
    }
}

impl Pebble {
    /// The root pebble issues certificates under.
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(&self.directory_ca).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .build()
            .unwrap();
        let pem = client.get(format!("{}/roots/0", self.management)).send().await.unwrap().bytes().await.unwrap();
        rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap()
    }
}

/// kefu in this process on `listener` with `tls.acme` pointing at pebble.
struct AcmeKefu {
    running: kefu::server::Running,
    stop: oneshot::Sender<()>,
}

async fn start_kefu(data_dir: &Path, listener: tokio::net::TcpListener, pebble: &Pebble) -> AcmeKefu {
    let mut config = test_config(data_dir);
    config.tls.acme = Some(AcmeConfig {
        domains: vec!["localhost".to_owned()],
        email: Some("admin@example.com".to_owned()),
        directory_url: pebble.directory_url.clone(),
        directory_ca: Some(pebble.directory_ca.clone()),
        ..AcmeConfig::default()
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let running = kefu::server::start(config, listener, async move {
        let _ = stopped.await;
    })
    .await
    .expect("kefu starts");
    AcmeKefu { running, stop }
}

impl AcmeKefu {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.running.wait().await.unwrap();
    }
}

/// The certificate kefu serves at `address` as `localhost`, if it is one `root` vouches for.
async fn served_under(
    address: std::net::SocketAddr,
    root: &CertificateDer<'static>,
) -> Option<CertificateDer<'static>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = connector.connect(ServerName::try_from("localhost").unwrap(), stream).await.ok()?;
    stream.get_ref().1.peer_certificates().map(|chain| chain[0].clone().into_owned())
}

/// Waits until kefu serves a certificate issued under `root`.
async fn wait_for_issued(address: std::net::SocketAddr, root: &CertificateDer<'static>) -> CertificateDer<'static> {
    let deadline = tokio::time::Instant::now() + ISSUE_TIMEOUT;
    loop {
        if let Some(certificate) = served_under(address, root).await {
            return certificate;
        }
        assert!(tokio::time::Instant::now() < deadline, "kefu got no certificate from pebble in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn kefu_obtains_a_certificate_over_tls_alpn_caches_it_and_renews_one_that_is_due() {
    let Some(binary) = pebble_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let pebble = start_pebble(&binary, dir.path(), address.port()).await;
    let root = pebble.issuing_root().await;

    // First start: no certificate yet; kefu orders one and pebble validates on kefu's port.
    let kefu = start_kefu(&data_dir, listener, &pebble).await;
    let issued = wait_for_issued(address, &root).await;
    let response = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&root).unwrap()])
        .build()
        .unwrap()
        .get(format!("https://localhost:{}/healthz", address.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "HTTPS works with the issued certificate");
    let cache = data_dir.join("acme");
    for file in ["account.json", "certificate.pem", "certificate-key.pem"] {
        #[cfg(unix)]
        assert_eq!(mode(&cache.join(file)), 0o600, "{file} is private");
    }
    let account = std::fs::read(cache.join("account.json")).unwrap();
    kefu.stop().await;

    // A restart serves the cached certificate at once, on the same account.
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let kefu = start_kefu(&data_dir, listener, &pebble).await;
    assert_eq!(served_under(address, &root).await, Some(issued.clone()), "the cached certificate is served");
    kefu.stop().await;

    // A cached certificate that expires within renew_before_days is served meanwhile and renewed.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let today = rcgen::date_time_ymd(i32::from(today.year()), today.month() as u8, today.day() as u8);
    params.not_before = today - Duration::from_secs(60 * 86_400);
    params.not_after = today + Duration::from_secs(2 * 86_400);
    let expiring = params.self_signed(&key).unwrap();
    std::fs::write(cache.join("certificate.pem"), expiring.pem()).unwrap();
    std::fs::write(cache.join("certificate-key.pem"), key.serialize_pem()).unwrap();
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let kefu = start_kefu(&data_dir, listener, &pebble).await;
    let renewed = wait_for_issued(address, &root).await;
    assert_ne!(renewed, issued);
    let cached = std::fs::read(cache.join("certificate.pem")).unwrap();
    let cached: CertificateDer = rustls::pki_types::pem::PemObject::from_pem_slice(&cached).unwrap();
    assert_eq!(cached, renewed, "the renewed certificate is cached");
    assert_eq!(std::fs::read(cache.join("account.json")).unwrap(), account, "the account is reused");
    kefu.stop().await;
}
