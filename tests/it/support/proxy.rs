//! Reverse proxies in front of test servers: Debian's nginx running one of the README's
//! example configurations (its placeholders filled in, a fresh self-signed certificate), and
//! clients that reach it over TLS from a chosen loopback address.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{Client, FRAME_TIMEOUT, http};

/// A WebSocket through a proxy: TLS over TCP.
pub type ProxiedStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// nginx running an example configuration on a free port; stopped on drop.
pub struct Nginx {
    child: std::process::Child,
    pub address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker before exiting (SIGKILL would orphan it).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

/// The nginx binary, if this machine has one.
pub fn nginx_binary() -> Option<&'static str> {
    ["nginx", "/usr/sbin/nginx"].into_iter().find(|binary| {
        std::process::Command::new(binary).arg("-v").output().is_ok_and(|output| output.status.success())
    })
}

/// Skips (returns `None`) when `binary` is not installed, unless `CI` is set.
pub fn installed(binary: Option<&'static str>, name: &str) -> Option<&'static str> {
    if binary.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed, and CI is set: the proxy tests must run");
        }
        eprintln!("skipped: {name} is not installed (apt-get install {name})");
    }
    binary
}

/// Starts nginx with `packaging/EXAMPLE`, its listen address, certificate and key placeholders
/// filled in and each of `upstreams` (placeholder, address) replaced. The listening socket is
/// made here and handed over (nginx's `NGINX` inherited-sockets variable), so clients can
/// connect at once: their connections wait in its queue until nginx is up. (nginx 1.22 crashes
/// with an inherited socket and `master_process off`, so it runs a master and one worker.)
pub fn start_nginx(binary: &str, example: &str, upstreams: &[(&str, SocketAddr)]) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(path("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(path("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();

    let file = format!("{}/packaging/{example}", env!("CARGO_MANIFEST_DIR"));
    let mut site = std::fs::read_to_string(&file).unwrap();
    let mut replacements = vec![
        ("listen 443 ssl;", format!("listen {address} ssl;")),
        ("/etc/ssl/certs/chat.example.com.pem", path("cert.pem")),
        ("/etc/ssl/private/chat.example.com.key", path("key.pem")),
    ];
    replacements.extend(upstreams.iter().map(|(placeholder, upstream)| (*placeholder, upstream.to_string())));
    for (placeholder, value) in replacements {
        assert!(site.contains(placeholder), "packaging/{example} no longer has {placeholder:?}");
        site = site.replace(placeholder, &value);
    }
    // As root, nginx would run as nobody, who cannot read the temporary directory.
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 { "user root;" } else { "" };
    let temp = path("temp");
    let main = format!(
        "{user}\ndaemon off;\nworker_processes 1;\npid {pid};\nerror_log {log} warn;\nevents {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {temp}/body;\n proxy_temp_path {temp}/proxy;\n\
         fastcgi_temp_path {temp}/fastcgi;\n uwsgi_temp_path {temp}/uwsgi;\n scgi_temp_path {temp}/scgi;\n{site}\n}}\n",
        pid = path("nginx.pid"),
        log = path("error.log"),
    );
    std::fs::create_dir(&temp).unwrap();
    std::fs::write(path("nginx.conf"), main).unwrap();

    let fd = listener.as_raw_fd();
    let mut command = std::process::Command::new(binary);
    command.args(["-p", &path(""), "-c", &path("nginx.conf"), "-e", &path("error.log")]).env("NGINX", "3;");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("starting nginx");

    drop(listener);
    Nginx { child, address, _dir: dir }
}

/// nginx running `packaging/nginx-cluster.conf` in front of three cluster nodes at `nodes`.
pub fn start_nginx_cluster(binary: &str, nodes: [SocketAddr; 3]) -> Nginx {
    let placeholders = ["10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080"];
    let upstreams: Vec<(&str, SocketAddr)> = placeholders.into_iter().zip(nodes).collect();
    start_nginx(binary, "nginx-cluster.conf", &upstreams)
}

/// Logs an agent in through the proxy at `proxy`; returns the token.
pub async fn login_through(proxy: SocketAddr, email: &str) -> String {
    let body = json!({"email": email, "password": super::PASSWORD});
    let login = post_json(proxy, "/api/v1/agent/login", body).await;
    login["token"].as_str().expect("the login succeeds").to_owned()
}

/// Accepts any server certificate: the test's proxy has a fresh self-signed one.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, signature, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, signature, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A WebSocket to `path` through the proxy at `proxy` (TLS, as `localhost`), from the loopback
/// address `source`.
pub async fn websocket_through(proxy: SocketAddr, source: &str, path: &str) -> WebSocketStream<ProxiedStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
    let stream = socket.connect(proxy).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, stream).await.unwrap();
    let url = format!("wss://localhost:{}{path}", proxy.port());
    let (socket, _) =
        tokio_tungstenite::client_async(url, stream).await.expect("the WebSocket connects through the proxy");
    socket
}

/// A protocol client through the proxy: `path` said hello to with `token`, welcomed.
pub async fn client_through_proxy(proxy: SocketAddr, source: &str, path: &str, token: &str) -> Client<ProxiedStream> {
    let mut socket = websocket_through(proxy, source, path).await;
    socket.send(Message::Text(json!({"type": "hello", "token": token}).to_string().into())).await.unwrap();
    loop {
        let frame = tokio::time::timeout(FRAME_TIMEOUT, socket.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = frame {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "welcome" {
                return Client { socket };
            }
        }
    }
}

/// Through the proxy at `proxy`: POSTs `body` as JSON to `path`; returns the JSON answer.
pub async fn post_json(proxy: SocketAddr, path: &str, body: Value) -> Value {
    let url = format!("https://localhost:{}{path}", proxy.port());
    client_through("127.0.0.1", proxy).post(url).json(&body).send().await.unwrap().json().await.unwrap()
}

/// An HTTP client from `source` that reaches the proxy at `proxy` as `https://localhost:PORT`.
pub fn client_through(source: &str, proxy: SocketAddr) -> reqwest::Client {
    let _ = http();
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .resolve("localhost", proxy)
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}
