//! kefu behind a reverse proxy: forwarding headers are believed from `trusted_proxies` only.
//!
//! The proxy tests run Debian's nginx with `packaging/nginx.conf` and Caddy with
//! `packaging/Caddyfile` (the README's examples), their placeholders filled in, in front of a
//! test server; without the proxy a test is skipped, unless the `CI` environment variable is set.

use std::net::{IpAddr, SocketAddr};

use kefu::sites::{NewSite, Site};
use serde_json::{Value, json};

use crate::support::proxy::{self, ProxiedStream};
use crate::support::{Client, TestServer, http};

fn trust_loopback_proxy(config: &mut kefu::base::config::Config) {
    config.trusted_proxies = kefu::base::config::TrustedProxies(vec!["127.0.0.1/32".parse().unwrap()]);
}

async fn open_site(server: &TestServer) -> Site {
    server
        .create_site_with(NewSite { name: "Shop".into(), allowed_origins: vec!["*".into()], ..NewSite::default() })
        .await
}

/// A client whose connections come from the loopback address `source`.
fn client_from(source: &str) -> reqwest::Client {
    let _ = http();
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

async fn open_session(
    client: &reqwest::Client,
    base: &str,
    site: &Site,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client.post(format!("{base}/api/v1/visitor/session")).json(&json!({"site": site.key}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn login_cookie(client: &reqwest::Client, base: &str, email: &str, headers: &[(&str, &str)]) -> String {
    let mut request = client
        .post(format!("{base}/api/v1/agent/login"))
        .json(&json!({"email": email, "password": crate::support::PASSWORD}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["set-cookie"].to_str().unwrap().to_owned()
}

async fn online_ips(server: &TestServer, token: &str) -> Vec<String> {
    let (_, online) = crate::support::call(server, "GET", "/api/v1/visitors/online", token, None).await;
    online.as_array().unwrap().iter().map(|visitor| visitor["ip"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // 127.0.0.1 is trusted; the client below connects from 127.0.0.2, which is not.
    let server = TestServer::start_with(trust_loopback_proxy).await;
    let site = open_site(&server).await;
    let admin = server.admin_token("admin@example.com").await;
    let base = format!("http://{}", server.addr);
    let untrusted = client_from("127.0.0.2");
    let spoof =
        [("x-forwarded-for", "127.0.0.9"), ("x-forwarded-proto", "https"), ("forwarded", "for=127.0.0.9;proto=https")];

    let cookie = login_cookie(&untrusted, &base, "admin@example.com", &spoof).await;
    assert!(!cookie.contains("Secure"), "{cookie}");

    kefu::people::blocking::BlockStore::block_address(server.store(), site.key.clone(), "127.0.0.2".into())
        .await
        .unwrap();
    let response = open_session(&untrusted, &base, &site, &spoof).await;
    assert_eq!(response.status(), 403, "the real address is blocked, whatever the headers say");
    kefu::people::blocking::BlockStore::unblock_address(server.store(), site.key.clone(), "127.0.0.2".into())
        .await
        .unwrap();
    kefu::people::blocking::BlockStore::block_address(server.store(), site.key.clone(), "127.0.0.9".into())
        .await
        .unwrap();
    let response = open_session(&untrusted, &base, &site, &spoof).await;
    assert_eq!(response.status(), 200, "a claimed address does not get the client blocked either");

    // The same headers from the trusted peer are believed.
    let trusted = client_from("127.0.0.1");
    let response = open_session(&trusted, &base, &site, &spoof).await;
    assert_eq!(response.status(), 403);
    let cookie = login_cookie(&trusted, &base, "admin@example.com", &spoof).await;
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(online_ips(&server, &admin).await.is_empty());
}

#[test]
fn the_readme_shows_the_tested_proxy_configurations() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (file, language) in [("nginx.conf", "nginx"), ("Caddyfile", "caddy")] {
        let path = format!("{}/packaging/{file}", env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(path).unwrap();
        assert!(
            readme.contains(&format!("```{language}\n{example}```")),
            "README.md must show packaging/{file} as it is"
        );
    }
}

/// A visitor's connection through the proxy at `proxy` from `source`, said hello to with `token`.
async fn visitor_through(proxy: SocketAddr, source: &str, site: &Site, token: &str) -> Client<ProxiedStream> {
    proxy::client_through_proxy(proxy, source, &format!("/ws/visitor?site={}", site.key), token).await
}

/// Behind the proxy at `proxy` (in front of `server`), clients are told apart by address.
async fn check_clients_are_told_apart_behind(proxy: SocketAddr, server: &TestServer) {
    let site = open_site(server).await;
    let admin = server.admin_token("admin@example.com").await;
    let base = format!("https://localhost:{}", proxy.port());
    let (alice, bob) = (proxy::client_through("127.0.0.2", proxy), proxy::client_through("127.0.0.3", proxy));

    // A login through the proxy, which says https, sets a Secure cookie.
    let cookie = login_cookie(&alice, &base, "admin@example.com", &[]).await;
    assert!(cookie.contains("; Secure"), "{cookie}");

    // The console's visitor list shows each visitor's own address, not the proxy's, even when
    // the visitor sends an X-Forwarded-For of its own.
    let response = open_session(&alice, &base, &site, &[("x-forwarded-for", "127.0.0.9")]).await;
    assert_eq!(response.status(), 200);
    let alice_token = response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let _alice_socket = visitor_through(proxy, "127.0.0.2", &site, &alice_token).await;
    let response = open_session(&bob, &base, &site, &[]).await;
    assert_eq!(response.status(), 200);
    let bob_token = response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let _bob_socket = visitor_through(proxy, "127.0.0.3", &site, &bob_token).await;
    let mut ips = online_ips(server, &admin).await;
    ips.sort();
    assert_eq!(ips, ["127.0.0.2", "127.0.0.3"]);

    // Blocking one forwarded address blocks that visitor only.
    kefu::people::blocking::BlockStore::block_address(server.store(), site.key.clone(), "127.0.0.2".into())
        .await
        .unwrap();
    assert_eq!(open_session(&alice, &base, &site, &[]).await.status(), 403);
    assert_eq!(open_session(&bob, &base, &site, &[]).await.status(), 200);
}

#[tokio::test]
async fn behind_nginx_clients_are_told_apart_by_their_forwarded_address() {
    let Some(binary) = proxy::installed(proxy::nginx_binary(), "nginx") else { return };
    let server = TestServer::start_with(trust_loopback_proxy).await;
    let nginx = proxy::start_nginx(binary, "nginx.conf", &[("127.0.0.1:8080", server.addr)]);
    check_clients_are_told_apart_behind(nginx.address, &server).await;
}

/// Caddy running `packaging/Caddyfile` on a free port in front of `upstream`; stopped on drop.
struct Caddy {
    child: std::process::Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Caddy with the example Caddyfile, its site name replaced by `https://localhost:PORT`
/// with an internal certificate; returns once Caddy says the certificate is ready.
fn start_caddy(upstream: SocketAddr) -> Caddy {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // A free port: Caddy binds it itself, so this listener is closed first.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/Caddyfile")).unwrap();
    let mut site = example.clone();
    for (placeholder, value) in [
        ("chat.example.com {", format!("https://localhost:{} {{\n\ttls internal", address.port())),
        ("reverse_proxy 127.0.0.1:8080", format!("reverse_proxy {upstream}")),
    ] {
        assert!(site.contains(placeholder), "packaging/Caddyfile no longer has {placeholder:?}");
        site = site.replace(placeholder, &value);
    }
    let storage = dir.path().join("storage");
    let caddyfile = format!(
        "{{\n\tadmin off\n\tskip_install_trust\n\tauto_https disable_redirects\n\tstorage file_system {}\n}}\n\n{site}",
        storage.display()
    );
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, caddyfile).unwrap();
    let mut child = std::process::Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config", path.to_str().unwrap()])
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting caddy");
    // Caddy logs (on stderr) when the certificate is ready; the listener is bound before that.
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        match log.next() {
            Some(Ok(line)) if line.contains("certificate obtained successfully") => break,
            Some(Ok(line)) => seen.push(line),
            _ => panic!("caddy stopped before its certificate was ready:\n{}", seen.join("\n")),
        }
    }
    // Keep reading, so Caddy never blocks on a full pipe.
    std::thread::spawn(move || log.for_each(drop));
    Caddy { child, address, _dir: dir }
}

fn caddy_binary() -> Option<&'static str> {
    std::process::Command::new("caddy")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success())
        .then_some("caddy")
}

#[tokio::test]
async fn behind_caddy_clients_are_told_apart_by_their_forwarded_address() {
    if proxy::installed(caddy_binary(), "caddy").is_none() {
        return;
    }
    let server = TestServer::start_with(trust_loopback_proxy).await;
    let upstream = server.addr;
    let caddy = tokio::task::spawn_blocking(move || start_caddy(upstream)).await.unwrap();
    check_clients_are_told_apart_behind(caddy.address, &server).await;
}
