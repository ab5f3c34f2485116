//! Uploads, offline messages and satisfaction ratings.

use serde_json::{Value, json};

use crate::support::{TestServer, http};

const PNG: [u8; 24] =
    [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1];

async fn upload(server: &TestServer, token: &str, query: &str, body: Vec<u8>) -> reqwest::Response {
    http().post(server.url(&format!("/api/v1/uploads?{query}"))).bearer_auth(token).body(body).send().await.unwrap()
}

#[tokio::test]
async fn images_travel_as_attachments_and_only_participants_can_fetch_them() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;

    let response = upload(&server, &token, "name=../photo.png", PNG.to_vec()).await;
    assert_eq!(response.status(), 201);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!((uploaded["kind"].as_str(), uploaded["name"].as_str()), (Some("image"), Some("photo.png")));

    visitor.send(json!({"type": "send", "client_id": "img-1", "text": "", "attachment_id": uploaded["id"]})).await;
    let ack = visitor.expect("ack").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    agent.expect("conversation").await;
    agent
        .send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 0, "epoch": server.epoch()}))
        .await;
    let message = agent.expect("message").await;
    assert_eq!(message["kind"], "image");
    let url = message["attachment"]["url"].as_str().unwrap().to_owned();

    let fetched = http().get(server.url(&url)).bearer_auth(&agent_token).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["content-type"], "image/png");
    assert_eq!(fetched.headers()["x-content-type-options"], "nosniff");
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), PNG.as_slice());
    let own = http().get(server.url(&url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(own.status(), 200);

    let (_, stranger) = server.visitor_session(&site, None).await;
    assert_eq!(http().get(server.url(&url)).bearer_auth(&stranger).send().await.unwrap().status(), 404);
    let other_site = server.create_site("Other shop").await;
    server.create_agent("olga@other.example", &other_site, 5).await;
    let other_agent = server.login("olga@other.example").await;
    assert_eq!(
        http().get(server.url(&url)).bearer_auth(&other_agent).send().await.unwrap().status(),
        404,
        "an agent of another site cannot fetch the file"
    );
    let foreign_upload = http()
        .post(server.url(&format!("/api/v1/uploads?name=x.png&conversation_id={conversation_id}")))
        .bearer_auth(&other_agent)
        .body(PNG.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(foreign_upload.status(), 404, "nor upload into its conversations");
    assert_eq!(http().get(server.url(&url)).send().await.unwrap().status(), 401);

    // Someone else's upload cannot be attached.
    let mut stranger_socket = server.visitor(&site, &stranger).await;
    stranger_socket
        .send(json!({"type": "send", "client_id": "steal", "text": "", "attachment_id": uploaded["id"]}))
        .await;
    assert_eq!(stranger_socket.expect("error").await["code"], "invalid_field");
}

#[tokio::test]
async fn uploads_are_type_checked_size_limited_and_served_so_they_cannot_run_script() {
    let server = TestServer::start_with(|config| config.limits.max_upload_bytes = 1000).await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;

    let html = upload(&server, &token, "name=page.html", b"<html><script>alert(1)</script></html>".to_vec()).await;
    assert_eq!(html.status(), 201);
    let html: Value = html.json().await.unwrap();
    assert_eq!(html["kind"], "file");
    let served = http().get(server.url(html["url"].as_str().unwrap())).bearer_auth(&token).send().await.unwrap();
    assert_eq!(served.headers()["content-type"], "application/octet-stream");
    assert!(served.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    assert!(served.headers()["content-security-policy"].to_str().unwrap().contains("sandbox"));

    let mut elf = vec![0x7F, b'E', b'L', b'F', 2, 1, 1, 0];
    elf.resize(64, 0);
    assert_eq!(upload(&server, &token, "name=tool", elf).await.status(), 415);
    // Over the limit: our JSON error naming the limit (the widget words it in the visitor's
    // language, from `too_large` and the settings' max_upload_bytes), not axum's English text.
    let too_big = upload(&server, &token, "name=big.png", vec![0; 5000]).await;
    assert_eq!(too_big.status(), 413);
    let refusal: Value = too_big.json().await.unwrap();
    assert_eq!(refusal["error"]["code"], "too_large");
    assert!(refusal["error"]["message"].as_str().unwrap().contains("1000 bytes"), "{refusal}");
    let settings: Value = http()
        .get(server.url(&format!("/api/v1/sites/{}/widget", site.key)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["max_upload_bytes"], 1000);
    assert_eq!(upload(&server, &token, "name=empty.txt", Vec::new()).await.status(), 422);
    assert_eq!(upload(&server, &token, "name=x.png&conversation_id=999", PNG.to_vec()).await.status(), 404);
    assert_eq!(
        http().get(server.url("/api/v1/uploads/doesnotexist")).bearer_auth(&token).send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn offline_messages_are_stored_for_the_sites_agents() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    server.create_agent("olga@other.example", &other, 5).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let url = server.url("/api/v1/visitor/offline-messages");

    let bad = http()
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"email": "not-an-email", "text": "call me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let left = http()
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"name": "Ada", "email": "ada@example.com", "text": "Please call me back"}))
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 201);

    let ann = server.login("ann@shop.example").await;
    let listed: Value = http()
        .get(server.url("/api/v1/offline-messages"))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["email"], "ada@example.com");
    let olga = server.login("olga@other.example").await;
    let listed: Value = http()
        .get(server.url("/api/v1/offline-messages"))
        .bearer_auth(&olga)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.as_array().unwrap().is_empty(), "agents of other sites see nothing");
    let as_visitor = http().get(server.url("/api/v1/offline-messages")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(as_visitor.status(), 403);
}

#[tokio::test]
async fn a_closed_conversation_can_be_rated_once_by_its_visitor() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let mut agent = server.agent(&server.login("ann@shop.example").await).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "hi").await["conversation_id"].as_u64().unwrap();
    let rate = |score: u8, who: String| {
        let url = server.url(&format!("/api/v1/conversations/{conversation_id}/rating"));
        async move {
            http()
                .post(url)
                .bearer_auth(who)
                .json(&json!({"score": score, "comment": "quick!"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(rate(5, token.clone()).await, 409, "open conversations are not rated yet");
    agent.send(json!({"type": "close", "conversation_id": conversation_id})).await;
    let closed = visitor.expect("conversation").await;
    let closed = if closed["event"] == "closed" { closed } else { visitor.expect("conversation").await };
    assert_eq!(closed["event"], "closed");
    assert_eq!(rate(9, token.clone()).await, 422);
    let (_, stranger) = server.visitor_session(&site, None).await;
    assert_eq!(rate(5, stranger).await, 404);
    assert_eq!(rate(5, token.clone()).await, 204);
    assert_eq!(rate(4, token.clone()).await, 409, "only once");

    // After a close, the visitor's next message starts a new conversation.
    let next = visitor.say(Some(conversation_id), "v-2", "one more thing").await;
    assert_ne!(next["conversation_id"], conversation_id);
    assert_eq!(next["seq"], 1);
}

#[tokio::test]
async fn widget_settings_answer_allowed_origins_with_cors() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await; // allows https://shop.example
    let url = server.url(&format!("/api/v1/sites/{}/widget", site.key));
    let allowed = http().get(&url).header("origin", "https://shop.example").send().await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example");
    let body: Value = allowed.json().await.unwrap();
    assert_eq!(body["key"], site.key.as_str());
    assert!(body.get("secret").is_none(), "the secret never reaches visitors");
    // A refused origin may read the refusal (so the loader can say why), never the settings.
    let refused = http().get(&url).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.headers()["access-control-allow-origin"], "https://evil.example");
    let refusal: Value = refused.json().await.unwrap();
    assert_eq!(refusal["error"]["code"], "origin_not_allowed");
    assert!(refusal.get("name").is_none() && refusal.get("welcome_text").is_none(), "{refusal}");
    assert_eq!(http().get(server.url("/api/v1/sites/nope/widget")).send().await.unwrap().status(), 404);
}
