//! kefu's own TLS from certificate files: HTTPS and WSS on the HTTP port, the same certificate
//! on QUIC, and SIGHUP swapping the certificate for new connections while an open WebSocket
//! stays up (a bad new file keeps the old certificate); HTTP/2 over TLS (ALPN) beside HTTP/1.1
//! and its WebSockets; the plain-HTTP listener that redirects to HTTPS (`tls.redirect_http`).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kefu_client::{Encoding, Trust};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;

use crate::crash::{admin, kefu};

const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `localhost` written to `cert.pem`/`key.pem` in `dir`.
fn write_certificate(dir: &Path) -> CertificateDer<'static> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    certified.cert.der().clone()
}

/// A running `kefu serve` with TLS, and its log lines.
struct TlsServer {
    child: Child,
    address: String,
    quic: std::net::SocketAddr,
    /// The plain-HTTP redirect listener, when `tls.redirect_http` is set.
    redirect: Option<std::net::SocketAddr>,
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl TlsServer {
    /// Waits for a log line containing `text` (and returns it).
    async fn logged(&mut self, text: &str) -> String {
        loop {
            let line = tokio::time::timeout(FRAME_TIMEOUT, self.log.recv()).await.unwrap().expect("kefu logs");
            if line.contains(text) {
                return line;
            }
        }
    }
}

/// Starts `kefu serve` with `tls.cert`/`tls.key` from `dir`.
async fn serve_tls(dir: &Path) -> TlsServer {
    serve_tls_with(dir, &[]).await
}

/// Starts `kefu serve` with `tls.cert`/`tls.key` from `dir` and more environment settings.
async fn serve_tls_with(dir: &Path, settings: &[(&str, &str)]) -> TlsServer {
    let mut command = kefu();
    command.envs(settings.iter().copied());
    command
        .args(["serve", "--data-dir", dir.join("data").to_str().unwrap(), "--http", "127.0.0.1:0"])
        .env("KEFU_TLS__CERT", dir.join("cert.pem"))
        .env("KEFU_TLS__KEY", dir.join("key.pem"))
        .env("RUST_LOG", "info")
        .env("KEFU_LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("kefu starts");
    let (log_sender, log) = tokio::sync::mpsc::unbounded_channel();
    let mut log_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = log_lines.next_line().await {
            let _ = log_sender.send(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut quic, mut redirect) = (None, None);
    let address = loop {
        let line = lines.next_line().await.unwrap().expect("kefu prints its address");
        if let Some(rest) = line.strip_prefix("quic=") {
            quic = Some(rest.split_once(' ').unwrap().0.parse().unwrap());
        }
        if let Some(rest) = line.strip_prefix("redirect http=") {
            redirect = Some(rest.parse().unwrap());
        }
        if let Some(address) = line.strip_prefix("listening http=") {
            break address.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    TlsServer { child, address, quic: quic.expect("kefu prints its QUIC address"), redirect, log }
}

/// The TLS client setup of `connect`, offering these ALPN protocols.
fn client_config_offering(root: &CertificateDer<'static>, protocols: &[&[u8]]) -> rustls::ClientConfig {
    let mut config = client_config(root);
    config.alpn_protocols = protocols.iter().map(|protocol| protocol.to_vec()).collect();
    config
}

fn client_config(root: &CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A TLS connection to `address` as `localhost` trusting only `root`; fails if kefu serves
/// another certificate.
async fn connect(
    address: &str,
    root: &CertificateDer<'static>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(root)));
    connector.connect(ServerName::try_from("localhost").unwrap(), stream).await
}

fn https_client(root: &CertificateDer<'static>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(root).unwrap()])
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap()
}

/// A visitor WebSocket over TLS (WSS), said hello to; returns it after `welcome`.
async fn wss_visitor(
    address: &str,
    root: &CertificateDer<'static>,
    site: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let stream = connect(address, root).await.expect("the TLS handshake succeeds");
    let port = address.rsplit_once(':').unwrap().1;
    let url = format!("wss://localhost:{port}/ws/visitor?site={site}");
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await.expect("the WebSocket connects");
    socket.send(Message::Text(json!({"type": "hello", "token": token}).to_string().into())).await.unwrap();
    expect_frame(&mut socket, "welcome").await;
    socket
}

async fn expect_frame<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>, kind: &str) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::time::timeout(FRAME_TIMEOUT, socket.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = frame {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == kind {
                return frame;
            }
        }
    }
}

/// Whether a QUIC client pinning `certificate` completes a handshake with kefu.
async fn quic_accepts(quic: std::net::SocketAddr, certificate: &CertificateDer<'static>) -> bool {
    let fingerprint = kefu::net::quic::fingerprint(certificate);
    let config = kefu_client::quic_client_config(&Trust::Pin(fingerprint), Encoding::Json).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let connected = endpoint.connect(quic, "localhost").unwrap().await;
    connected.is_ok()
}

fn hangup(child: &Child) {
    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: kill only sends a signal to the child we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

/// Waits until new TLS connections to `address` are served the certificate `root` vouches for.
async fn wait_for_certificate(address: &str, root: &CertificateDer<'static>) {
    for _ in 0..100 {
        if connect(address, root).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kefu never served the new certificate");
}

#[tokio::test]
async fn https_and_wss_serve_the_files_and_sighup_swaps_them_for_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_certificate(dir.path());
    let data_dir = dir.path().join("data");
    let site = admin(&data_dir, &["create-site", "--name", "Shop", "--origin", "*"]).await["site_key"].clone();
    let mut server = serve_tls(dir.path()).await;
    let (address, quic) = (server.address.clone(), server.quic);
    let port = address.rsplit_once(':').unwrap().1.to_owned();

    // HTTPS on the HTTP port; plain HTTP there is no longer answered.
    let https = https_client(&first);
    let health = https.get(format!("https://localhost:{port}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(crate::support::http().get(format!("http://{address}/healthz")).send().await.is_err());
    let session: Value = https
        .post(format!("https://localhost:{port}/api/v1/visitor/session"))
        .json(&json!({"site": site}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().unwrap().to_owned();
    assert!(quic_accepts(quic, &first).await, "QUIC serves the HTTP port's certificate");

    // WSS: a visitor chats over TLS, and keeps its socket across the reload.
    let mut old_socket = wss_visitor(&address, &first, &site, &token).await;
    old_socket
        .send(Message::Text(json!({"type": "send", "client_id": "c1", "text": "before"}).to_string().into()))
        .await
        .unwrap();
    expect_frame(&mut old_socket, "ack").await;

    let second = write_certificate(dir.path());
    hangup(&server.child);
    server.logged("reloaded the TLS certificate").await;
    wait_for_certificate(&address, &second).await;
    assert!(connect(&address, &first).await.is_err(), "new connections get the new certificate");
    assert!(quic_accepts(quic, &second).await, "QUIC serves the reloaded certificate");
    old_socket
        .send(Message::Text(json!({"type": "send", "client_id": "c2", "text": "after"}).to_string().into()))
        .await
        .unwrap();
    let ack = expect_frame(&mut old_socket, "ack").await;
    assert_eq!(ack["client_id"], "c2", "the WebSocket opened before the reload is still up");
    let mut new_socket = wss_visitor(&address, &second, &site, &token).await;

    // A broken file (a key that is not the certificate's) keeps the certificate in use.
    let third = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), third.cert.pem()).unwrap();
    hangup(&server.child);
    let line = server.logged("was not loaded").await;
    assert!(line.contains("does not fit the certificate"), "{line}");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    hangup(&server.child);
    let line = server.logged("was not loaded").await;
    assert!(line.contains("holds no certificate"), "{line}");
    let stream = connect(&address, &second).await;
    assert!(stream.is_ok(), "a bad file keeps the old certificate: {:?}", stream.err());
    new_socket
        .send(Message::Text(json!({"type": "send", "client_id": "c3", "text": "still"}).to_string().into()))
        .await
        .unwrap();
    expect_frame(&mut new_socket, "ack").await;
    assert!(server.child.try_wait().unwrap().is_none(), "kefu still runs");
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_missing_or_mismatched_certificate_stops_start_up_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), other.serialize_pem()).unwrap();
    let run = |key: &str| {
        let mut command = kefu();
        command
            .args(["serve", "--data-dir", dir.path().join("data").to_str().unwrap(), "--http", "127.0.0.1:0"])
            .env("KEFU_TLS__CERT", dir.path().join("cert.pem"))
            .env("KEFU_TLS__KEY", dir.path().join(key))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let output = run("key.pem").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("does not fit the certificate"), "{stderr}");
    let output = run("missing.pem").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

#[tokio::test]
async fn sighup_without_tls_leaves_the_server_running() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = crate::crash::serve(dir.path()).await;
    hangup(&child);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = crate::support::http().get(format!("http://{address}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP did not stop kefu");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn https_speaks_http2_to_clients_that_offer_it_and_websockets_stay_on_http1() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_certificate(dir.path());
    let data_dir = dir.path().join("data");
    let site = admin(&data_dir, &["create-site", "--name", "Shop", "--origin", "*"]).await["site_key"].clone();
    let server = serve_tls(dir.path()).await;
    let port = server.address.rsplit_once(':').unwrap().1.to_owned();

    // ALPN picks h2 when the client offers it, http/1.1 when that is all it offers.
    for (offered, expected) in
        [(vec![&b"h2"[..], &b"http/1.1"[..]], &b"h2"[..]), (vec![&b"http/1.1"[..]], &b"http/1.1"[..])]
    {
        let stream = tokio::net::TcpStream::connect(&server.address).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config_offering(&root, &offered)));
        let stream = connector.connect(ServerName::try_from("localhost").unwrap(), stream).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(expected));
    }

    // A client speaking HTTP/2 gets answers over HTTP/2, several requests on one connection.
    let https = https_client(&root);
    let session = https
        .post(format!("https://localhost:{port}/api/v1/visitor/session"))
        .json(&json!({"site": site}))
        .send()
        .await
        .unwrap();
    assert_eq!(session.version(), reqwest::Version::HTTP_2);
    assert_eq!(session.status(), 200);
    let token = session.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let health = https.get(format!("https://localhost:{port}/healthz")).send().await.unwrap();
    assert_eq!((health.version(), health.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    let widget = https.get(format!("https://localhost:{port}/widget.js")).send().await.unwrap();
    assert_eq!(widget.version(), reqwest::Version::HTTP_2);

    // A browser opens its WebSocket on a connection offering only http/1.1; it chats as before.
    let stream = tokio::net::TcpStream::connect(&server.address).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config_offering(&root, &[b"http/1.1"])));
    let stream = connector.connect(ServerName::try_from("localhost").unwrap(), stream).await.unwrap();
    let url = format!("wss://localhost:{port}/ws/visitor?site={site}");
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await.expect("the WebSocket connects");
    socket.send(Message::Text(json!({"type": "hello", "token": token}).to_string().into())).await.unwrap();
    expect_frame(&mut socket, "welcome").await;
    socket
        .send(Message::Text(json!({"type": "send", "client_id": "c1", "text": "over h1"}).to_string().into()))
        .await
        .unwrap();
    expect_frame(&mut socket, "ack").await;
}

#[tokio::test]
async fn plain_http_is_redirected_to_the_configured_https_name_whatever_the_host_header() {
    let dir = tempfile::tempdir().unwrap();
    write_certificate(dir.path());
    let server = serve_tls_with(
        dir.path(),
        &[("KEFU_TLS__REDIRECT_HTTP", "127.0.0.1:0"), ("KEFU_PUBLIC_URL", "https://chat.example.test:8443")],
    )
    .await;
    let redirect = server.redirect.expect("kefu prints the redirect address");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let location = |host: Option<&'static str>, path: &'static str| {
        let client = client.clone();
        async move {
            let mut request = client.get(format!("http://{redirect}{path}"));
            if let Some(host) = host {
                request = request.header("host", host);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 308, "{path}");
            response.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    // The configured name keeps its path and query, on the public URL's port.
    assert_eq!(
        location(Some("chat.example.test"), "/console/?tab=chats").await,
        "https://chat.example.test:8443/console/?tab=chats"
    );
    assert_eq!(location(Some("CHAT.example.test:80"), "/a/b").await, "https://chat.example.test:8443/a/b");
    // Any other Host (another site, an address, none usable) goes to the configured name.
    assert_eq!(location(Some("evil.example"), "/login").await, "https://chat.example.test:8443/login");
    assert_eq!(location(Some("127.0.0.1"), "/").await, "https://chat.example.test:8443/");
    assert_eq!(location(None, "//evil.example/x").await, "https://chat.example.test:8443//evil.example/x");
    // A POST is redirected with its method kept (308), and /healthz answers in plain HTTP.
    let posted = client.post(format!("http://{redirect}/api/v1/visitor/session")).send().await.unwrap();
    assert_eq!(posted.status(), 308);
    let health = client.get(format!("http://{redirect}/healthz")).send().await.unwrap();
    assert_eq!((health.status().as_u16(), health.text().await.unwrap()), (200, "ok".to_owned()));
}

#[tokio::test]
async fn a_redirect_listener_without_tls_or_a_name_to_redirect_to_stops_start_up_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    write_certificate(dir.path());
    let run = |settings: &[(&str, &str)]| {
        let mut command = kefu();
        command
            .args(["serve", "--data-dir", dir.path().join("data").to_str().unwrap(), "--http", "127.0.0.1:0"])
            .env("KEFU_TLS__REDIRECT_HTTP", "127.0.0.1:0")
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let with_files = [("KEFU_TLS__CERT", cert.to_str().unwrap()), ("KEFU_TLS__KEY", key.to_str().unwrap())];
    for (settings, expected) in
        [(&[][..], "tls.redirect_http needs TLS"), (&with_files[..], "tls.redirect_http needs public_url")]
    {
        let output = run(settings).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "{stderr}");
    }
    // A plain-http public URL names no HTTPS host either.
    let mut settings = with_files.to_vec();
    settings.push(("KEFU_PUBLIC_URL", "http://chat.example.test"));
    let output = run(&settings).output().await.unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("tls.redirect_http needs public_url"));
    let output = run(&[("KEFU_TLS__REDIRECT_HTTP", "chat.example.test:80")]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("0.0.0.0:80"), "a bad address names an example: {stderr}");
}
