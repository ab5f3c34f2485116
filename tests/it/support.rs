//! The test harness: a real server on a temporary data directory, and protocol clients; a
//! private PostgreSQL and nats-server for the cluster tests ([`postgres`], [`nats`]).

pub mod nats;
pub mod postgres;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kefu::base::config::Config;
use kefu::chat::sensitive_words::SensitiveMode;
use kefu::people::agents::{self, NewAgent, Role};
use kefu::server::{self, Running};
use kefu::sites::{NewSite, Site};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for an expected frame before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub const PASSWORD: &str = "correct horse battery";

/// A server running in this process on a temporary data directory; stops when dropped.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    /// The QUIC (UDP) address.
    pub quic_addr: std::net::SocketAddr,
    /// The SHA-256 fingerprint of the QUIC certificate.
    pub quic_fingerprint: String,
    pub dir: Arc<tempfile::TempDir>,
    running: Option<Running>,
    stop: Option<oneshot::Sender<()>>,
    tune: fn(&mut Config),
    /// The PostgreSQL and NATS URLs of a cluster node's storage; `None` for the appliance.
    cluster: Option<(String, String)>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with a configuration changed by `tune`.
    pub async fn start_with(tune: fn(&mut Config)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        Self::start_in(dir, tune).await
    }

    async fn start_in(dir: Arc<tempfile::TempDir>, tune: fn(&mut Config)) -> TestServer {
        Self::start_at(dir, tune, "127.0.0.1:0".parse().unwrap(), None, None).await
    }

    /// A node of a cluster on the PostgreSQL database at `postgres_url` and the NATS server at
    /// `nats_url`, with its own data directory (certificates, the control socket).
    pub async fn start_cluster_node(postgres_url: &str, nats_url: &str) -> TestServer {
        Self::start_cluster_node_at("127.0.0.1", postgres_url, nats_url).await
    }

    /// [`TestServer::start_cluster_node`] listening on the loopback address `ip`.
    pub async fn start_cluster_node_at(ip: &str, postgres_url: &str, nats_url: &str) -> TestServer {
        Self::start_cluster_node_with(|_| {}, ip, postgres_url, nats_url).await
    }

    /// [`TestServer::start_cluster_node_at`] with a configuration changed by `tune`.
    pub async fn start_cluster_node_with(
        tune: fn(&mut Config),
        ip: &str,
        postgres_url: &str,
        nats_url: &str,
    ) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        let cluster = Some((postgres_url.to_owned(), nats_url.to_owned()));
        let http = std::net::SocketAddr::new(ip.parse().unwrap(), 0);
        Self::start_at(dir, tune, http, None, cluster).await
    }

    async fn start_at(
        dir: Arc<tempfile::TempDir>,
        tune: fn(&mut Config),
        http: std::net::SocketAddr,
        quic: Option<std::net::SocketAddr>,
        cluster: Option<(String, String)>,
    ) -> TestServer {
        let mut config = test_config(dir.path());
        if quic.is_some() {
            config.quic = quic;
        }
        tune(&mut config);
        if let Some((postgres_url, nats_url)) = &cluster {
            config.storage.backend = kefu::base::config::StorageBackend::Postgres;
            config.storage.postgres_url = postgres_url.clone();
            config.cluster.nats_url = nats_url.clone();
        }
        let listener = tokio::net::TcpListener::bind(http).await.expect("binding the HTTP port");
        let (stop, stopped) = oneshot::channel::<()>();
        let running = server::start(config, listener, async move {
            let _ = stopped.await;
        })
        .await
        .expect("the server starts");
        TestServer {
            addr: running.local_addr,
            quic_addr: running.quic_addr.expect("QUIC is on in tests"),
            quic_fingerprint: running.quic_fingerprint.clone().unwrap_or_default(),
            dir,
            running: Some(running),
            stop: Some(stop),
            tune,
            cluster,
        }
    }

    /// Shuts down gracefully and waits until storage is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            running.wait().await.expect("the server shuts down cleanly");
        }
    }

    /// Stops and starts again on the same data directory (on a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        *self = Self::start_at(self.dir.clone(), self.tune, "127.0.0.1:0".parse().unwrap(), None, self.cluster.clone())
            .await;
    }

    /// Stops and starts again on the same data directory and the same addresses, so clients
    /// reconnect to where they were.
    pub async fn restart_in_place(&mut self) {
        self.stop().await;
        *self =
            Self::start_at(self.dir.clone(), self.tune, self.addr, Some(self.quic_addr), self.cluster.clone()).await;
    }

    pub fn quic_url(&self) -> String {
        format!("quic://{}", self.quic_addr)
    }

    /// The gRPC address, for servers started with `grpc.listen` set.
    pub fn grpc_url(&self) -> String {
        let running = self.running.as_ref().expect("the server runs");
        format!("http://{}", running.grpc_addr.expect("gRPC is on in this test"))
    }

    pub fn app(&self) -> &kefu::net::AppState {
        &self.running().app
    }

    /// The server's tantivy index (test servers run the appliance).
    pub fn index(&self) -> &kefu::search::Search {
        self.app().search.index("a test's search").expect("test servers run the appliance")
    }

    /// The server's redb store (test servers run the appliance).
    pub fn store(&self) -> &kefu::storage::Store {
        self.app().store.appliance("a test's direct reads").expect("test servers run the appliance")
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the server runs")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub async fn create_site(&self, name: &str) -> Site {
        self.create_site_with(NewSite {
            name: name.into(),
            allowed_origins: vec!["https://shop.example".into()],
            ..NewSite::default()
        })
        .await
    }

    pub async fn create_site_with(&self, new_site: NewSite) -> Site {
        kefu::sites::store::SiteStore::create(&self.app().store, new_site).await.expect("creating a site")
    }

    pub async fn create_agent(&self, email: &str, site: &Site, capacity: u32) -> u64 {
        let new_agent = NewAgent {
            email: email.into(),
            name: email.split('@').next().unwrap().into(),
            password: PASSWORD.into(),
            role: Role::Agent,
            sites: vec![site.key.clone()],
            capacity,
        };
        agents::create(&self.app().store, new_agent).await.expect("creating an agent").id
    }

    /// Creates an admin (serving every site) with [`PASSWORD`]; returns the admin's id.
    pub async fn create_admin(&self, email: &str) -> u64 {
        let new_agent = NewAgent {
            email: email.into(),
            name: email.split('@').next().unwrap().into(),
            password: PASSWORD.into(),
            role: Role::Admin,
            sites: Vec::new(),
            capacity: 5,
        };
        agents::create(&self.app().store, new_agent).await.expect("creating an admin").id
    }

    /// Creates an admin and logs them in; returns the token.
    pub async fn admin_token(&self, email: &str) -> String {
        self.create_admin(email).await;
        self.login(email).await
    }

    /// Logs an agent in over HTTP; returns the token.
    pub async fn login(&self, email: &str) -> String {
        self.login_with(email, PASSWORD).await
    }

    /// Logs an agent in over HTTP with `password`; returns the token.
    pub async fn login_with(&self, email: &str, password: &str) -> String {
        let response = http()
            .post(self.url("/api/v1/agent/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "logging in {email}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Opens a visitor session over HTTP; returns (visitor id, token).
    pub async fn visitor_session(&self, site: &Site, token: Option<&str>) -> (u64, String) {
        let response = http()
            .post(self.url("/api/v1/visitor/session"))
            .json(&json!({"site": site.key, "token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        (body["visitor_id"].as_u64().unwrap(), body["token"].as_str().unwrap().to_owned())
    }

    /// A visitor connected and welcomed.
    pub async fn visitor(&self, site: &Site, token: &str) -> Client {
        self.visitor_with_status(site, token).await.0
    }

    /// A new visitor who has started a conversation by saying `text` (client id `v-1`): the
    /// connection, the visitor's token and the conversation's id.
    pub async fn visitor_in_conversation(&self, site: &Site, text: &str) -> (Client, String, u64) {
        let (_, token) = self.visitor_session(site, None).await;
        let mut visitor = self.visitor(site, &token).await;
        let conversation_id = visitor.say(None, "v-1", text).await["conversation_id"].as_u64().unwrap();
        (visitor, token, conversation_id)
    }

    /// A visitor connected and welcomed, with the `site_status` frame that follows `welcome`.
    pub async fn visitor_with_status(&self, site: &Site, token: &str) -> (Client, Value) {
        let mut client = Client::connect(&self.ws_url(&format!("/ws/visitor?site={}", site.key)), None).await;
        client.send(json!({"type": "hello", "token": token})).await;
        client.expect("welcome").await;
        let status = client.next_with_status().await;
        assert_eq!(status["type"], "site_status", "{status}");
        (client, status)
    }

    /// An agent connected and welcomed.
    pub async fn agent(&self, token: &str) -> Client {
        let mut client = Client::connect(&self.ws_url("/ws/agent"), None).await;
        client.send(json!({"type": "hello", "token": token})).await;
        client.expect("welcome").await;
        client
    }

    /// Where this server's `/metrics` listens.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.running.as_ref().expect("the server runs").metrics_addr
    }

    pub fn epoch(&self) -> u64 {
        kefu::chat::message_store::MessageStore::epoch(&self.app().store)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config { data_dir: PathBuf::from(data_dir), ..Config::default() };
    config.http = "127.0.0.1:0".parse().unwrap();
    config.metrics = "127.0.0.1:0".to_owned();
    config.quic = Some("127.0.0.1:0".parse().unwrap());
    config.routing.offline_grace_secs = 0;
    config.limits.frames_per_second = 10_000;
    config.limits.frame_burst = 10_000;
    // Debug-build argon2 is slow and tests run side by side: logins wait for a check, not fail.
    config.limits.password_check_wait_ms = 600_000;
    // Tests make many concurrent requests from 127.0.0.1; connection_limits tests the cap.
    config.limits.max_http_connections_per_ip = config.limits.max_http_connections;
    config
}

pub fn http() -> reqwest::Client {
    // kefu builds reqwest without a default TLS crypto provider; the process installs ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Calls the JSON API as `token`; returns the status and the JSON body (`null` if none).
pub async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_url(&server.url(path), method, token, body).await
}

/// [`call`] on a server at `address` (`HOST:PORT`) that is not a [`TestServer`], without a body.
pub async fn call_at(address: &str, method: &str, path: &str, token: &str) -> (StatusCode, Value) {
    call_url(&format!("http://{address}{path}"), method, token, None).await
}

async fn call_url(url: &str, method: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// [`call`], expecting `status`; an error answer must have the one error shape (a `code` and a
/// non-empty `message`). Returns the body.
pub async fn call_expecting(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let (got, answer) = call(server, method, path, token, body).await;
    assert_eq!(got.as_u16(), status, "{method} {path}: {answer}");
    if status >= 400 {
        assert!(answer["error"]["code"].is_string(), "{method} {path}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "{answer}");
    }
    answer
}

/// Reads a socket's frames to its end: the text frames, and the close code the server sent
/// (1005 for a close without one). Panics if the socket ends with an error, such as a reset
/// instead of a closing handshake, or does not end within 10 s.
pub async fn read_to_clean_end(
    frames: &mut (impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> (Vec<String>, Option<u16>) {
    let (mut texts, mut close_code) = (Vec::new(), None);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), frames.next()).await.expect("the socket ends in time") {
            Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
            Some(Ok(Message::Close(frame))) => close_code = Some(frame.map_or(1005, |frame| u16::from(frame.code))),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("the socket ended with an error instead of a closing handshake: {error}"),
            None => return (texts, close_code),
        }
    }
}

/// A protocol client on one WebSocket (over TLS, through a proxy, when `S` is a TLS stream).
pub struct Client<S = MaybeTlsStream<TcpStream>> {
    pub socket: WebSocketStream<S>,
}

impl Client {
    pub async fn connect(url: &str, origin: Option<&str>) -> Client {
        let mut request = url.into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("the WebSocket connects");
        Client { socket }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Client<S> {
    pub async fn send(&mut self, frame: Value) {
        self.socket.send(Message::Text(frame.to_string().into())).await.expect("sending a frame");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("sending a frame");
    }

    /// The next JSON frame (pings, and `site_status` frames, which a visitor gets after
    /// `welcome` and whenever an agent comes or goes, are skipped). Panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        loop {
            let frame = self.next_with_status().await;
            if frame["type"] != "site_status" {
                return frame;
            }
        }
    }

    /// The next `site_status` frame (a visitor's), skipping others.
    pub async fn expect_site_status(&mut self) -> Value {
        loop {
            let frame = self.next_with_status().await;
            if frame["type"] == "site_status" {
                return frame;
            }
        }
    }

    /// The next JSON frame, `site_status` frames included (pings are skipped).
    pub async fn next_with_status(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.socket.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a readable frame");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("frames are JSON");
                }
                Message::Close(frame) => panic!("closed unexpectedly: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Reads frames until a `conversation` frame with `event` (`assigned`, `created`, ...) for
    /// `conversation_id`.
    pub async fn expect_conversation_event(&mut self, conversation_id: u64, event: &str) -> Value {
        loop {
            let frame = self.expect("conversation").await;
            if frame["event"] == event && frame["conversation"]["id"] == conversation_id {
                return frame;
            }
        }
    }

    /// The next frame of type `kind`, skipping frames of other types.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Skips frames until the `replayed` of a conversation (an assignment brings the messages so
    /// far, then `replayed`); returns the messages skipped on the way.
    pub async fn expect_replayed(&mut self, conversation_id: u64) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            let frame = self.next().await;
            match frame["type"].as_str() {
                Some("replayed") if frame["conversation_id"] == conversation_id => return messages,
                Some("message") if frame["conversation_id"] == conversation_id => messages.push(frame),
                _ => {}
            }
        }
    }

    /// The next frame, which must be of type `kind`.
    pub async fn expect_next(&mut self, kind: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], kind, "unexpected frame {frame}");
        frame
    }

    /// The close code the server sends next (frames before it are skipped).
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.socket.next()).await.expect("a close in time");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
                Some(Ok(Message::Close(None))) | None => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("socket error instead of a close: {error}"),
            }
        }
    }

    /// Sends a text message and returns its ack.
    pub async fn say(&mut self, conversation_id: Option<u64>, client_id: &str, text: &str) -> Value {
        self.send(json!({"type": "send", "client_id": client_id, "conversation_id": conversation_id, "text": text}))
            .await;
        let ack = self.expect("ack").await;
        assert_eq!(ack["client_id"], client_id);
        ack
    }

    /// Nothing arrives within a short time (for "the visitor never sees it" checks).
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, self.socket.next()).await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                assert_eq!(frame["type"], "site_status", "expected nothing, got {text}");
            }
        }
    }
}

/// A site with a word list.
pub fn site_with_words(name: &str, words: &[&str], mode: SensitiveMode) -> NewSite {
    NewSite {
        name: name.into(),
        allowed_origins: vec!["*".into()],
        sensitive_words: words.iter().map(|word| (*word).to_owned()).collect(),
        sensitive_mode: mode,
        ..NewSite::default()
    }
}

/// History of a conversation over HTTP, as seen by `token`.
pub async fn history(server: &TestServer, token: &str, conversation_id: u64) -> Value {
    let response = http()
        .get(server.url(&format!("/api/v1/conversations/{conversation_id}/messages?limit=200")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}
