//! Web Push: a push service stand-in on loopback, which checks every request's VAPID token and
//! decrypts its payload with the subscription's private key and auth secret, as a browser would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::support::{TestServer, call, call_expecting};

const CONTACT: &str = "mailto:ops@kefu.test";

/// What the stand-in received: the subscription's name (the endpoint's last part), the headers
/// and the encrypted body.
type Received = (String, HeaderMap, Vec<u8>);

/// A push service run by the test. Each name answers the statuses queued for it, then 201.
struct PushService {
    origin: String,
    received: mpsc::UnboundedReceiver<Received>,
    statuses: Arc<Mutex<HashMap<String, Vec<u16>>>>,
}

#[derive(Clone)]
struct Shared {
    sender: mpsc::UnboundedSender<Received>,
    statuses: Arc<Mutex<HashMap<String, Vec<u16>>>>,
}

async fn push_service() -> PushService {
    let (sender, received) = mpsc::unbounded_channel();
    let statuses = Arc::new(Mutex::new(HashMap::new()));
    let app = axum::Router::new()
        .route(
            "/push/{name}",
            axum::routing::post(
                |State(shared): State<Shared>,
                 Path(name): Path<String>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let status = {
                        let mut statuses = shared.statuses.lock().unwrap();
                        let queued = statuses.entry(name.clone()).or_default();
                        if queued.is_empty() { 201 } else { queued.remove(0) }
                    };
                    let _ = shared.sender.send((name, headers, body.to_vec()));
                    StatusCode::from_u16(status).unwrap()
                },
            ),
        )
        .with_state(Shared { sender, statuses: statuses.clone() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    PushService { origin, received, statuses }
}

impl PushService {
    fn answer(&self, name: &str, statuses: &[u16]) {
        self.statuses.lock().unwrap().insert(name.to_owned(), statuses.to_vec());
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(30), self.received.recv())
            .await
            .expect("a push in time")
            .expect("the stand-in runs")
    }
}

/// A browser's side of a subscription: its key pair and auth secret.
struct Browser {
    name: String,
    secret: SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new(name: &str) -> Browser {
        let secret = loop {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            if let Ok(secret) = SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let mut auth = [0u8; 16];
        rand::rng().fill_bytes(&mut auth);
        Browser { name: name.to_owned(), secret, auth }
    }

    fn endpoint(&self, push: &PushService) -> String {
        format!("{}/push/{}", push.origin, self.name)
    }

    /// What `PushSubscription.toJSON()` gives, plus the console's language.
    fn subscription(&self, push: &PushService, language: &str) -> Value {
        let public = self.secret.public_key().to_encoded_point(false);
        json!({
            "endpoint": self.endpoint(push),
            "expirationTime": null,
            "keys": {"p256dh": URL_SAFE_NO_PAD.encode(public.as_bytes()), "auth": URL_SAFE_NO_PAD.encode(self.auth)},
            "language": language,
        })
    }

    /// Decrypts an `aes128gcm` body (RFC 8188 header, RFC 8291 keys) the way a browser does.
    fn decrypt(&self, body: &[u8]) -> Value {
        let salt = &body[..16];
        let key_id_len = body[20] as usize;
        assert_eq!(key_id_len, 65, "the key id is the server's public key");
        let server_public = PublicKey::from_sec1_bytes(&body[21..21 + key_id_len]).unwrap();
        let sealed = &body[21 + key_id_len..];
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), server_public.as_affine());
        let own_public = self.secret.public_key().to_encoded_point(false);
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(own_public.as_bytes());
        info.extend_from_slice(server_public.to_encoded_point(false).as_bytes());
        let mut input_key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes()).expand(&info, &mut input_key).unwrap();
        let content = Hkdf::<Sha256>::new(Some(salt), &input_key);
        let (mut key, mut nonce) = ([0u8; 16], [0u8; 12]);
        content.expand(b"Content-Encoding: aes128gcm\0", &mut key).unwrap();
        content.expand(b"Content-Encoding: nonce\0", &mut nonce).unwrap();
        let mut plain = Aes128Gcm::new_from_slice(&key).unwrap().decrypt(Nonce::from_slice(&nonce), sealed).unwrap();
        assert_eq!(plain.pop(), Some(2), "one record, the last, ends with the delimiter 2");
        serde_json::from_slice(&plain).unwrap()
    }
}

/// Checks a push request's headers and VAPID token as a push service must (RFC 8292), and returns
/// the token's claims.
fn check_request(headers: &HeaderMap, push: &PushService, server_key: &str) -> Value {
    assert_eq!(headers["content-encoding"], "aes128gcm");
    assert!(headers["ttl"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(["high", "normal"].contains(&headers["urgency"].to_str().unwrap()));
    let authorization = headers["authorization"].to_str().unwrap();
    let (token, key) = authorization.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
    assert_eq!(key, server_key, "the key browsers subscribed with");
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let verifying = VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(key).unwrap()).unwrap();
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
    verifying.verify(signed.as_bytes(), &signature).expect("an ES256 signature by the VAPID key");
    let (header, claims) = signed.split_once('.').unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["aud"], push.origin.as_str());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let expiry = claims["exp"].as_i64().unwrap();
    assert!(expiry > now && expiry <= now + 24 * 3600, "exp within a day: {claims}");
    assert_eq!(claims["sub"], CONTACT);
    claims
}

async fn start() -> TestServer {
    TestServer::start_with(|config| {
        config.push.allow_loopback_endpoints = true;
        config.push.contact = CONTACT.to_owned();
        config.push.retry_base_ms = 20;
    })
    .await
}

/// A new visitor leaves a message through the offline form.
async fn leave_offline_message(server: &TestServer, site: &kefu::sites::Site, name: &str, text: &str) {
    let (_, token) = server.visitor_session(site, None).await;
    let left = crate::support::http()
        .post(server.url("/api/v1/visitor/offline-messages"))
        .bearer_auth(&token)
        .json(&json!({"name": name, "email": "lead@example.com", "text": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 201);
}

/// Waits until the agent's console sockets are gone from the server.
async fn until_disconnected(server: &TestServer, agent_id: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.app().hub.agent_connections(agent_id).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the console's socket closes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn agents_with_a_closed_console_are_told_in_their_language() {
    let server = start().await;
    let mut push = push_service().await;
    let site = server.create_site("Shop").await;
    let other = server.create_site("Elsewhere").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 5).await;
    server.create_agent("olga@elsewhere.example", &other, 5).await;
    let ann = server.login("ann@shop.example").await;
    let olga = server.login("olga@elsewhere.example").await;
    let key = call_expecting(&server, "GET", "/api/v1/push/key", &ann, None, 200).await;
    let key = key["public_key"].as_str().unwrap().to_owned();
    assert_eq!(URL_SAFE_NO_PAD.decode(&key).unwrap().len(), 65);

    let ann_browser = Browser::new("ann");
    let olga_browser = Browser::new("olga");
    let body = Some(ann_browser.subscription(&push, "zh-CN"));
    call_expecting(&server, "POST", "/api/v1/push/subscriptions", &ann, body, 201).await;
    let body = Some(olga_browser.subscription(&push, "en"));
    call_expecting(&server, "POST", "/api/v1/push/subscriptions", &olga, body, 201).await;

    // A new conversation: Ann serves the site and her console is closed.
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    let sent_at = std::time::Instant::now();
    let ack = visitor.say(None, "v-1", "你好，我的订单在哪里？").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    let (name, headers, encrypted) = push.next().await;
    // A figure, not a limit: how long a push takes from the send to the push service.
    eprintln!("push: the notification reached the push service {:?} after the visitor's send", sent_at.elapsed());
    assert_eq!(name, "ann");
    check_request(&headers, &push, &key);
    assert_eq!(headers["urgency"], "high");
    let notification = ann_browser.decrypt(&encrypted);
    assert_eq!(notification["title"], "新会话 · Shop");
    assert!(notification["body"].as_str().unwrap().ends_with("你好，我的订单在哪里？"), "{notification}");
    assert_eq!(notification["url"], format!("/console#conversation={conversation_id}"));

    // With her console open, the conversation is assigned to her and she sees messages there.
    let mut console = server.agent(&ann).await;
    console.expect_conversation_event(conversation_id, "assigned").await;
    visitor.say(Some(conversation_id), "v-2", "while the console is open").await;
    // Notices are planned in commit order: once Olga hears of a lead on her site, the message
    // before it was planned, with Ann's console open.
    leave_offline_message(&server, &other, "Bea", "for Elsewhere").await;
    // One notice: the lead, not also the conversation the offline message waits in.
    let (name, headers, encrypted) = push.next().await;
    assert_eq!(name, "olga");
    check_request(&headers, &push, &key);
    assert_eq!(olga_browser.decrypt(&encrypted)["title"], "New offline message · Elsewhere");
    drop(console);
    until_disconnected(&server, ann_id).await;

    // Console closed again: a message in her conversation is pushed; the one before was not.
    visitor.say(Some(conversation_id), "v-3", "Are you there?").await;
    let (name, headers, encrypted) = push.next().await;
    assert_eq!(name, "ann");
    check_request(&headers, &push, &key);
    let notification = ann_browser.decrypt(&encrypted);
    assert_eq!(notification["title"], "新消息 · Shop");
    assert!(notification["body"].as_str().unwrap().ends_with(": Are you there?"), "{notification}");
    // A client id like the old offline-form one marks nothing: the message is pushed as any other.
    visitor.say(Some(conversation_id), "offline-1", "Still here").await;
    let (name, _, encrypted) = push.next().await;
    assert_eq!(name, "ann");
    let notification = ann_browser.decrypt(&encrypted);
    assert_eq!(notification["title"], "新消息 · Shop");
    assert!(notification["body"].as_str().unwrap().ends_with(": Still here"), "{notification}");

    // A lead, in English once Ann's console language changed (the console posts again).
    let body = Some(ann_browser.subscription(&push, "en"));
    call_expecting(&server, "POST", "/api/v1/push/subscriptions", &ann, body, 201).await;
    let listed = call_expecting(&server, "GET", "/api/v1/push/subscriptions", &ann, None, 200).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "the same browser is one subscription: {listed}");
    leave_offline_message(&server, &site, "Ada", "Please call me back").await;
    let (name, headers, encrypted) = push.next().await;
    assert_eq!(name, "ann", "Olga serves another site and hears nothing");
    check_request(&headers, &push, &key);
    let notification = ann_browser.decrypt(&encrypted);
    assert_eq!(notification["title"], "New offline message · Shop");
    assert_eq!(notification["body"], "Ada: Please call me back");
    assert_eq!(notification["url"], "/console");
}

#[tokio::test]
async fn a_subscription_stored_before_a_restart_is_pushed_to_after_it() {
    // Until a subscription exists the server turns no event into a notice (it would read storage
    // for every visitor message); at start it learns from storage that one exists.
    let mut server = start().await;
    let mut push = push_service().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let ann = server.login("ann@shop.example").await;
    let browser = Browser::new("ann");
    let body = Some(browser.subscription(&push, "en"));
    call_expecting(&server, "POST", "/api/v1/push/subscriptions", &ann, body, 201).await;
    server.restart().await;

    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    visitor.say(None, "v-1", "after the restart").await;
    let (name, _, encrypted) = push.next().await;
    assert_eq!(name, "ann");
    assert!(browser.decrypt(&encrypted)["body"].as_str().unwrap().ends_with("after the restart"));
}

#[tokio::test]
async fn failures_are_retried_and_a_gone_subscription_is_removed() {
    let server = start().await;
    let mut push = push_service().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let ann = server.login("ann@shop.example").await;
    let browser = Browser::new("ann");
    let body = Some(browser.subscription(&push, "en"));
    call_expecting(&server, "POST", "/api/v1/push/subscriptions", &ann, body, 201).await;

    // Two failures of the push service, then it takes the message.
    push.answer("ann", &[503, 500]);
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    visitor.say(None, "v-1", "hello").await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (name, _, encrypted) = push.next().await;
        assert_eq!(name, "ann");
        bodies.push(browser.decrypt(&encrypted));
    }
    assert!(bodies.iter().all(|body| body["title"] == "New conversation · Shop"), "{bodies:?}");

    // 410: the browser dropped the subscription, and kefu forgets it.
    push.answer("ann", &[410]);
    leave_offline_message(&server, &site, "", "call me").await;
    assert_eq!(push.next().await.0, "ann");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = call_expecting(&server, "GET", "/api/v1/push/subscriptions", &ann, None, 200).await;
        if listed.as_array().unwrap().is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the gone subscription is removed: {listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_subscriptions_are_refused_and_nothing_is_stored() {
    // The default configuration: no loopback endpoints.
    let server = TestServer::start().await;
    let push = push_service().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let ann = server.login("ann@shop.example").await;
    let on_loopback = Browser::new("ann").subscription(&push, "en");
    let mut good = on_loopback.clone();
    good["endpoint"] = json!("https://push.example.net/send/ann");
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        match field {
            "p256dh" | "auth" => body["keys"][field] = value,
            _ => body[field] = value,
        }
        body
    };
    let public = URL_SAFE_NO_PAD.decode(good["keys"]["p256dh"].as_str().unwrap()).unwrap();
    let mut off_curve = public.clone();
    off_curve[64] ^= 1;
    for (body, status, says) in [
        (on_loopback, 422, "endpoint: must be an https URL"),
        (with("endpoint", json!("https://127.0.0.1/push/x")), 422, "endpoint: 127.0.0.1 is a private"),
        (with("endpoint", json!("http://push.example.net/x")), 422, "endpoint: must be an https URL"),
        (with("endpoint", json!("not a url")), 422, "endpoint: is not a URL"),
        (with("p256dh", json!(URL_SAFE_NO_PAD.encode(&public[..33]))), 422, "keys.p256dh: must be an uncompressed"),
        (with("p256dh", json!(URL_SAFE_NO_PAD.encode(&off_curve))), 422, "keys.p256dh: is not a point"),
        (with("p256dh", json!("***")), 422, "keys.p256dh: is not base64url"),
        (with("auth", json!(URL_SAFE_NO_PAD.encode([1u8; 15]))), 422, "keys.auth: must be 16 bytes"),
        (with("language", json!("fr")), 422, "language"),
        (json!({"endpoint": "https://push.example.net/x"}), 422, "keys"),
    ] {
        let answer =
            call_expecting(&server, "POST", "/api/v1/push/subscriptions", &ann, Some(body.clone()), status).await;
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let listed = call_expecting(&server, "GET", "/api/v1/push/subscriptions", &ann, None, 200).await;
    assert_eq!(listed, json!([]));

    // Only agents have subscriptions.
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let (status, _) = call(&server, "GET", "/api/v1/push/key", &visitor_token, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(&server, "GET", "/api/v1/push/key", "nobody", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_agent_cannot_remove_another_agents_subscription() {
    let server = start().await;
    let push = push_service().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    server.create_agent("bob@shop.example", &site, 5).await;
    let ann = server.login("ann@shop.example").await;
    let bob = server.login("bob@shop.example").await;
    let browser = Browser::new("ann");
    let body = Some(browser.subscription(&push, "en"));
    call_expecting(&server, "POST", "/api/v1/push/subscriptions", &ann, body, 201).await;
    let endpoint = json!({"endpoint": browser.endpoint(&push)});

    call_expecting(&server, "DELETE", "/api/v1/push/subscriptions", &bob, Some(endpoint.clone()), 404).await;
    let listed = call_expecting(&server, "GET", "/api/v1/push/subscriptions", &ann, None, 200).await;
    assert_eq!(listed[0]["endpoint"], browser.endpoint(&push));
    let listed = call_expecting(&server, "GET", "/api/v1/push/subscriptions", &bob, None, 200).await;
    assert_eq!(listed, json!([]), "Bob does not see Ann's");

    call_expecting(&server, "DELETE", "/api/v1/push/subscriptions", &ann, Some(endpoint.clone()), 204).await;
    let listed = call_expecting(&server, "GET", "/api/v1/push/subscriptions", &ann, None, 200).await;
    assert_eq!(listed, json!([]));
    call_expecting(&server, "DELETE", "/api/v1/push/subscriptions", &ann, Some(endpoint), 404).await;

    // Each browser is one subscription; past ten, the oldest goes.
    for n in 0..=kefu::push::subscriptions::MAX_SUBSCRIPTIONS_PER_AGENT {
        let body = Some(Browser::new(&format!("device-{n}")).subscription(&push, "en"));
        call_expecting(&server, "POST", "/api/v1/push/subscriptions", &bob, body, 201).await;
    }
    let listed = call_expecting(&server, "GET", "/api/v1/push/subscriptions", &bob, None, 200).await;
    let endpoints: Vec<&str> = listed.as_array().unwrap().iter().map(|s| s["endpoint"].as_str().unwrap()).collect();
    assert_eq!(endpoints.len(), kefu::push::subscriptions::MAX_SUBSCRIPTIONS_PER_AGENT);
    assert!(endpoints.last().unwrap().ends_with("/push/device-10"), "{endpoints:?}");
}

#[tokio::test]
async fn a_visitor_who_asks_the_bot_for_a_person_is_announced_not_their_talk_with_the_bot() {
    let server = start().await;
    let mut push = push_service().await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("boss@shop.example").await;
    let path = format!("/api/v1/sites/{}/bot", site.key);
    call_expecting(&server, "PUT", &path, &admin, Some(json!({"enabled": true})), 200).await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let ann = server.login("ann@shop.example").await;
    let browser = Browser::new("ann");
    let body = Some(browser.subscription(&push, "en"));
    call_expecting(&server, "POST", "/api/v1/push/subscriptions", &ann, body, 201).await;

    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    let ack = visitor.say(None, "v-1", "hello bot").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    visitor.say(Some(conversation_id), "v-2", "人工").await;
    let (name, _, encrypted) = push.next().await;
    assert_eq!(name, "ann");
    let notification = browser.decrypt(&encrypted);
    assert_eq!(notification["title"], "New conversation · Shop", "the first push is the handoff: {notification}");
    assert_eq!(notification["body"], "A visitor asks for an agent");
    assert_eq!(notification["url"], format!("/console#conversation={conversation_id}"));
}

#[tokio::test]
async fn cluster_nodes_share_one_key_and_push_to_a_subscription_stored_through_another_node() {
    let Some(url) = crate::support::postgres::database("push_nodes").await else { return };
    let Some(nats) = crate::support::nats::NatsServer::start("push_nodes") else { return };
    fn tune(config: &mut kefu::base::config::Config) {
        config.push.allow_loopback_endpoints = true;
        config.push.contact = CONTACT.to_owned();
        config.push.retry_base_ms = 20;
    }
    let one = TestServer::start_cluster_node_with(tune, "127.0.0.1", &url, &nats.url()).await;
    let two = TestServer::start_cluster_node_with(tune, "127.0.0.1", &url, &nats.url()).await;
    let mut push = push_service().await;
    let site = one.create_site("Shop").await;
    one.create_agent("ann@shop.example", &site, 5).await;
    let ann = one.login("ann@shop.example").await;

    // One key for the installation, whichever node is asked.
    let key = call_expecting(&one, "GET", "/api/v1/push/key", &ann, None, 200).await;
    let key = key["public_key"].as_str().unwrap().to_owned();
    assert_eq!(call_expecting(&two, "GET", "/api/v1/push/key", &ann, None, 200).await["public_key"], key.as_str());

    // Subscribed through the first node; visitors write through the second, which learns within
    // a few seconds that a subscription exists: new conversations until one is pushed.
    let browser = Browser::new("ann");
    call_expecting(&one, "POST", "/api/v1/push/subscriptions", &ann, Some(browser.subscription(&push, "zh-CN")), 201)
        .await;
    let mut pushed = None;
    for attempt in 0..10 {
        let (_, token) = two.visitor_session(&site, None).await;
        let mut visitor = two.visitor(&site, &token).await;
        visitor.say(None, "v-1", &format!("第{attempt}位访客：有人吗？")).await;
        if let Ok(received) = tokio::time::timeout(Duration::from_millis(1500), push.next()).await {
            pushed = Some(received);
            break;
        }
    }
    let (name, headers, encrypted) = pushed.expect("a push once the second node knows of the subscription");
    assert_eq!(name, "ann");
    check_request(&headers, &push, &key);
    let notification = browser.decrypt(&encrypted);
    assert_eq!(notification["title"], "新会话 · Shop");
    assert!(notification["body"].as_str().unwrap().ends_with("位访客：有人吗？"), "{notification}");

    // With her console open through the first node, the second node pushes her nothing: she
    // sees the new conversation already (each node learns within a second or two).
    let _console = one.agent(&ann).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (_, token) = two.visitor_session(&site, None).await;
    let mut visitor = two.visitor(&site, &token).await;
    visitor.say(None, "v-1", "还有人吗？").await;
    let late = tokio::time::timeout(Duration::from_millis(1500), push.next()).await;
    assert!(late.is_err(), "pushed to an agent whose console is open through another node: {late:?}");
}
