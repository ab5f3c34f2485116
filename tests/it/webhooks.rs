//! Webhooks: signed deliveries from the durable outbox, retries, restarts, and the private-address guard.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::{TestServer, http};

/// A local webhook receiver that fails the first `n_failures` requests.
pub(crate) struct Receiver {
    pub(crate) url: String,
    received: mpsc::UnboundedReceiver<(HeaderMap, String)>,
    failures_left: Arc<AtomicUsize>,
    /// Deliveries that arrived while the test waited for another event type (retries with
    /// jitter do not keep events in order).
    set_aside: Vec<(HeaderMap, String)>,
}

pub(crate) async fn receiver(n_failures: usize) -> Receiver {
    let (sender, received) = mpsc::unbounded_channel();
    let failures_left = Arc::new(AtomicUsize::new(n_failures));
    let failing = failures_left.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let sender = sender.clone();
            let failing = failing.clone();
            async move {
                if failing.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_ok() {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let _ = sender.send((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, received, failures_left, set_aside: Vec::new() }
}

impl Receiver {
    /// The next delivery, if one arrives `within`.
    pub(crate) async fn next_within(&mut self, within: std::time::Duration) -> Option<(HeaderMap, String)> {
        tokio::time::timeout(within, self.received.recv()).await.ok().flatten()
    }

    pub(crate) async fn next(&mut self) -> (HeaderMap, Value) {
        let (headers, body) = tokio::time::timeout(std::time::Duration::from_secs(60), self.received.recv())
            .await
            .expect("a delivery in time")
            .unwrap();
        (headers, serde_json::from_str(&body).unwrap())
    }

    /// The next delivery of `event_type` (in whatever order deliveries arrive), checking its
    /// signature with `secret`.
    pub(crate) async fn expect(&mut self, event_type: &str, secret: &str) -> Value {
        let is_wanted = |body: &str| serde_json::from_str::<Value>(body).unwrap()["type"] == event_type;
        let (headers, body) = match self.set_aside.iter().position(|(_, body)| is_wanted(body)) {
            Some(index) => self.set_aside.remove(index),
            None => loop {
                let delivery = tokio::time::timeout(std::time::Duration::from_secs(60), self.received.recv())
                    .await
                    .expect("a delivery in time")
                    .unwrap();
                if is_wanted(&delivery.1) {
                    break delivery;
                }
                self.set_aside.push(delivery);
            },
        };
        verify(&headers, &body, secret);
        serde_json::from_str(&body).unwrap()
    }
}

/// Verifies a Standard Webhooks signature the way a receiver would.
pub(crate) fn verify(headers: &HeaderMap, body: &str, secret: &str) {
    let id = headers["webhook-id"].to_str().unwrap();
    let timestamp: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let expected = kefu::webhooks::sender::signature(&key, id, timestamp, body);
    let signatures = headers["webhook-signature"].to_str().unwrap();
    assert!(signatures.split(' ').any(|signature| signature == expected), "the signature verifies");
    assert!((kefu::base::clock::now_millis() / 1000 - timestamp).abs() < 300);
}

pub(crate) async fn create_webhook(server: &TestServer, token: &str, site: &str, body: Value) -> reqwest::Response {
    http()
        .post(server.url(&format!("/api/v1/sites/{site}/webhooks")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn quick_retries(config: &mut kefu::base::config::Config) {
    config.webhooks.retry_base_ms = 50;
}

#[tokio::test]
async fn events_are_delivered_signed_and_retried_until_the_receiver_recovers() {
    let server = TestServer::start_with(quick_retries).await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("root@shop.example").await;
    let mut receiver = receiver(2).await;
    let events = json!(["message.created", "conversation.created", "offline_message.received", "conversation.closed"]);
    let created = create_webhook(
        &server,
        &admin,
        &site.key,
        json!({"url": receiver.url, "events": events, "allow_private": true}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let webhook: Value = created.json().await.unwrap();
    let secret = webhook["secret"].as_str().unwrap().to_owned();

    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    // A client id like the old offline-form one: an ordinary message all the same.
    let ack = visitor.say(None, "offline-1", "hello webhooks").await;
    let conversation = receiver.expect("conversation.created", &secret).await;
    assert_eq!(conversation["data"]["conversation"]["id"], ack["conversation_id"]);
    let message = receiver.expect("message.created", &secret).await;
    assert_eq!(message["data"]["message"]["text"], "hello webhooks");
    assert!(message["data"].get("offline_message_id").is_none(), "{message}");
    assert_eq!(receiver.failures_left.load(Ordering::SeqCst), 0, "the first attempts failed and were retried");

    let offline = http()
        .post(server.url("/api/v1/visitor/offline-messages"))
        .bearer_auth(&token)
        .json(&json!({"email": "ada@example.com", "text": "call me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(offline.status(), 201);
    let left = receiver.expect("offline_message.received", &secret).await;
    assert_eq!(left["data"]["offline_message"]["email"], "ada@example.com");
    // Its message in the conversation comes as message.created too, marked with its id.
    let in_conversation = receiver.expect("message.created", &secret).await;
    assert_eq!(in_conversation["data"]["message"]["text"], "call me");
    assert_eq!(in_conversation["data"]["offline_message_id"], left["data"]["offline_message"]["id"]);
    assert_eq!(in_conversation["data"]["message"]["conversation_id"], ack["conversation_id"]);

    // The admin sees every delivery, with its attempts, and can send one again.
    let url = server.url(&format!("/api/v1/webhooks/{}/deliveries", webhook["id"].as_str().unwrap()));
    // The receiver may see a delivery a moment before its outcome is recorded.
    let deliveries = loop {
        let deliveries: Value = http().get(&url).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        if deliveries.as_array().unwrap().iter().all(|delivery| delivery["status"] == "delivered") {
            break deliveries;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let deliveries = deliveries.as_array().unwrap();
    assert!(deliveries.iter().any(|delivery| delivery["attempts"].as_u64() > Some(1)));
    let first = deliveries.last().unwrap()["id"].as_u64().unwrap();
    let resent = http()
        .post(server.url(&format!("/api/v1/webhook-deliveries/{first}/resend")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resent.status(), 200);
    let (headers, _) = receiver.next().await;
    assert_eq!(headers["webhook-id"], format!("msg_{first}"));
}

#[tokio::test]
async fn a_delivery_pending_at_shutdown_is_sent_after_the_restart() {
    let mut server = TestServer::start_with(quick_retries).await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("root@shop.example").await;
    let mut receiver = receiver(usize::MAX).await;
    let webhook: Value = create_webhook(
        &server,
        &admin,
        &site.key,
        json!({"url": receiver.url, "events": ["conversation.created"], "allow_private": true}),
    )
    .await
    .json()
    .await
    .unwrap();
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.say(None, "v-1", "are you there?").await;
    drop(visitor);
    server.stop().await;

    receiver.failures_left.store(0, Ordering::SeqCst);
    server.restart().await;
    let created = receiver.expect("conversation.created", webhook["secret"].as_str().unwrap()).await;
    assert_eq!(created["data"]["conversation"]["site"], site.key.as_str());
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allowed_and_only_admins_manage_webhooks() {
    let server = TestServer::start_with(quick_retries).await;
    let site = server.create_site("Shop").await;
    let admin = server.admin_token("root@shop.example").await;
    let mut receiver = receiver(0).await;

    let refused =
        create_webhook(&server, &admin, &site.key, json!({"url": receiver.url, "events": ["conversation.created"]}))
            .await;
    assert_eq!(refused.status(), 422, "a literal loopback address is refused at once");
    for (body, status) in [
        (json!({"url": "not a url", "events": ["conversation.created"]}), 422),
        (json!({"url": "https://hooks.example.com/x", "events": ["party.started"]}), 422),
        (json!({"url": "https://hooks.example.com/x", "events": []}), 422),
    ] {
        assert_eq!(create_webhook(&server, &admin, &site.key, body).await.status(), status);
    }
    assert_eq!(
        create_webhook(
            &server,
            &admin,
            "no-such-site",
            json!({"url": "https://hooks.example.com/x", "events": ["conversation.created"]})
        )
        .await
        .status(),
        404
    );

    // A name that resolves to loopback is refused when connecting.
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let webhook: Value =
        create_webhook(&server, &admin, &site.key, json!({"url": by_name, "events": ["conversation.created"]}))
            .await
            .json()
            .await
            .unwrap();
    let (_, token) = server.visitor_session(&site, None).await;
    server.visitor(&site, &token).await.say(None, "v-1", "hi").await;
    let url = server.url(&format!("/api/v1/webhooks/{}/deliveries", webhook["id"].as_str().unwrap()));
    let delivery = loop {
        let deliveries: Value = http().get(&url).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        if deliveries[0]["attempts"].as_u64() >= Some(1) {
            break deliveries[0].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_ne!(delivery["status"], "delivered");
    assert!(delivery["last_error"].as_str().is_some());
    assert!(receiver.received.try_recv().is_err(), "the receiver was never reached");

    server.create_agent("ann@shop.example", &site, 5).await;
    let agent = server.login("ann@shop.example").await;
    let body = json!({"url": "https://hooks.example.com/x", "events": ["conversation.created"]});
    assert_eq!(create_webhook(&server, &agent, &site.key, body.clone()).await.status(), 403);
    assert_eq!(
        http()
            .get(server.url(&format!("/api/v1/sites/{}/webhooks", site.key)))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        http()
            .post(server.url(&format!("/api/v1/sites/{}/webhooks", site.key)))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let listed: Value = http()
        .get(server.url(&format!("/api/v1/sites/{}/webhooks", site.key)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed[0]["secret"].as_str().unwrap().starts_with("whsec_…"), "secrets are shown once");
}
