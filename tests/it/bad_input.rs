//! Bad input of every kind gets its documented error and changes nothing.

use kefu::base::secrets;
use kefu::sites::NewSite;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, history, http};

#[tokio::test]
async fn malformed_frames_get_error_frames_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;

    let cases: [(&str, &str); 7] = [
        ("{not json", "bad_json"),
        ("42", "bad_json"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"text":"no type"}"#, "unknown_type"),
        (r#"{"type":"send","text":"no client id"}"#, "invalid_field"),
        (r#"{"type":"send","client_id":"x","text":"   "}"#, "invalid_field"),
        (r#"{"type":"read","conversation_id":"seven","seq":1}"#, "invalid_field"),
    ];
    for (input, code) in cases {
        visitor.send_raw(Message::Text(input.into())).await;
        let error = visitor.expect_next("error").await;
        assert_eq!(error["code"], code, "{input}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    let too_long = "x".repeat(4001);
    visitor.send(json!({"type": "send", "client_id": "long", "text": too_long})).await;
    let error = visitor.expect_next("error").await;
    assert_eq!((error["code"].as_str(), error["client_id"].as_str()), (Some("invalid_field"), Some("long")));
    visitor.send(json!({"type": "send", "client_id": "bad id with spaces", "text": "hi"})).await;
    assert_eq!(visitor.expect_next("error").await["code"], "invalid_field");
    visitor.send(json!({"type": "send", "client_id": "n1", "text": "hi", "internal": true})).await;
    assert_eq!(visitor.expect_next("error").await["code"], "forbidden");
    visitor.send(json!({"type": "take", "conversation_id": 1})).await;
    assert_eq!(visitor.expect_next("error").await["code"], "forbidden");
    visitor.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(visitor.expect_next("error").await["code"], "bad_json");

    visitor.send(json!({"type": "ping"})).await;
    visitor.expect_next("pong").await;
    let ack = visitor.say(None, "ok-1", "still works").await;
    assert_eq!(ack["seq"], 1, "none of the bad frames stored anything");
}

#[tokio::test]
async fn an_oversized_frame_closes_the_connection_with_1009() {
    let server = TestServer::start_with(|config| config.limits.max_frame_bytes = 4096).await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.send(json!({"type": "send", "client_id": "big", "text": "x".repeat(10_000)})).await;
    assert_eq!(visitor.expect_close().await, 1009);
}

#[tokio::test]
async fn connections_without_a_valid_hello_are_closed_with_their_codes() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let url = server.ws_url(&format!("/ws/visitor?site={}", site.key));

    let mut client = Client::connect(&url, None).await;
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.expect_close().await, 4000);

    let mut client = Client::connect(&url, None).await;
    client.send(json!({"type": "hello", "token": "v1.not-a-real-token"})).await;
    assert_eq!(client.expect_close().await, 4001);

    let mut client = Client::connect(&server.ws_url("/ws/agent"), None).await;
    client.send(json!({"type": "hello"})).await;
    assert_eq!(client.expect_close().await, 4001);

    // A visitor token of one site does not open a socket of another.
    let other = server.create_site("Other").await;
    let (_, token) = server.visitor_session(&other, None).await;
    let mut client = Client::connect(&url, None).await;
    client.send(json!({"type": "hello", "token": token})).await;
    assert_eq!(client.expect_close().await, 4001);
}

#[tokio::test]
async fn a_wrong_origin_is_refused_before_the_upgrade() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await; // allows https://shop.example only
    let url = server.ws_url(&format!("/ws/visitor?site={}", site.key));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    request.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected a 403, got {:?}", other.map(|_| "a connection")),
    }
    let _allowed = Client::connect(&url, Some("https://shop.example")).await;

    let response = http()
        .post(server.url("/api/v1/visitor/session"))
        .header("origin", "https://evil.example")
        .json(&json!({"site": site.key}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "origin_not_allowed");
}

#[tokio::test]
async fn nobody_reaches_a_conversation_that_is_not_theirs() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let other_site = server.create_site("Other shop").await;
    server.create_agent("other@other.example", &other_site, 5).await;
    let other_agent_token = server.login("other@other.example").await;

    let (_, owner_token) = server.visitor_session(&site, None).await;
    let mut owner = server.visitor(&site, &owner_token).await;
    let conversation_id = owner.say(None, "o-1", "private").await["conversation_id"].as_u64().unwrap();

    let (_, stranger_token) = server.visitor_session(&site, None).await;
    let mut stranger = server.visitor(&site, &stranger_token).await;
    stranger
        .send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 0, "epoch": server.epoch()}))
        .await;
    assert_eq!(stranger.expect_next("error").await["code"], "not_found");
    stranger
        .send(json!({"type": "send", "client_id": "s-1", "conversation_id": conversation_id, "text": "let me in"}))
        .await;
    assert_eq!(stranger.expect_next("error").await["code"], "not_found");
    stranger.send(json!({"type": "typing", "conversation_id": conversation_id, "active": true})).await;
    assert_eq!(stranger.expect_next("error").await["code"], "not_found");

    let mut other_agent = server.agent(&other_agent_token).await;
    other_agent
        .send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 0, "epoch": server.epoch()}))
        .await;
    assert_eq!(other_agent.expect("error").await["code"], "not_found");
    other_agent
        .send(json!({"type": "send", "client_id": "x-1", "conversation_id": conversation_id, "text": "hello"}))
        .await;
    assert_eq!(other_agent.expect("error").await["code"], "not_found");
    other_agent.send(json!({"type": "close", "conversation_id": conversation_id})).await;
    assert_eq!(other_agent.expect("error").await["code"], "not_found");

    for token in [&stranger_token, &other_agent_token] {
        let response = http()
            .get(server.url(&format!("/api/v1/conversations/{conversation_id}/messages")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }
    let response =
        http().get(server.url(&format!("/api/v1/conversations/{conversation_id}/messages"))).send().await.unwrap();
    assert_eq!(response.status(), 401);
    owner.expect_silence(std::time::Duration::from_millis(200)).await;
    assert_eq!(history(&server, &owner_token, conversation_id).await["last_seq"], 1, "nothing changed");
}

#[tokio::test]
async fn bad_http_bodies_get_clear_errors() {
    let server = TestServer::start_with(|config| config.limits.max_body_bytes = 2048).await;
    let site = server.create_site("Shop").await;
    let url = server.url("/api/v1/visitor/session");
    let check = |body: String, content_type: &'static str, status: u16, code: &'static str| {
        let url = url.clone();
        async move {
            let response =
                http().post(&url).header("content-type", content_type).body(body.clone()).send().await.unwrap();
            assert_eq!(response.status(), status, "{body}");
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"]["code"], code, "{body}: {error}");
        }
    };
    check("{oops".into(), "application/json", 400, "bad_request").await;
    check(json!({"site": 12}).to_string(), "application/json", 422, "invalid_field").await;
    check(json!({"site": site.key}).to_string(), "text/plain", 400, "bad_request").await;
    check(json!({"site": "no-such-site"}).to_string(), "application/json", 404, "not_found").await;
    check(
        json!({"site": site.key, "user": {"id": "x".repeat(600)}}).to_string(),
        "application/json",
        422,
        "invalid_field",
    )
    .await;
    check(json!({"site": site.key, "pad": "x".repeat(4096)}).to_string(), "application/json", 413, "too_large").await;
    let response = http().get(server.url("/api/v1/conversations/1/messages?limit=0")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn enforced_identity_needs_a_valid_signature() {
    let server = TestServer::start().await;
    let site = server
        .create_site_with(NewSite {
            name: "Bank".into(),
            allowed_origins: vec!["*".into()],
            enforce_identity: true,
            ..NewSite::default()
        })
        .await;
    let url = server.url("/api/v1/visitor/session");
    let unsigned =
        http().post(&url).json(&json!({"site": site.key, "user": {"id": "customer-7"}})).send().await.unwrap();
    assert_eq!(unsigned.status(), 403);
    assert_eq!(unsigned.json::<Value>().await.unwrap()["error"]["code"], "invalid_signature");
    let forged = http().post(&url).json(&json!({"site": site.key, "user": {"id": "customer-7", "signature": secrets::hmac_sha256_hex(b"wrong", b"customer-7")}})).send().await.unwrap();
    assert_eq!(forged.status(), 403);

    let signature = secrets::hmac_sha256_hex(site.secret.as_bytes(), b"customer-7");
    let signed: Value = http()
        .post(&url)
        .json(&json!({"site": site.key, "user": {"id": "customer-7", "name": "Ada", "signature": signature}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The same verified user on another device is the same visitor.
    let again: Value = http()
        .post(&url)
        .json(&json!({"site": site.key, "user": {"id": "customer-7", "signature": signature}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(signed["visitor_id"], again["visitor_id"]);
    // An anonymous visitor stays possible and is someone else.
    let anonymous: Value =
        http().post(&url).json(&json!({"site": site.key})).send().await.unwrap().json().await.unwrap();
    assert_ne!(anonymous["visitor_id"], signed["visitor_id"]);
}

#[tokio::test]
async fn malformed_paths_and_queries_unknown_routes_and_wrong_methods_get_the_json_error_shape() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let token = server.login("ann@shop.example").await;
    let cases = [
        (reqwest::Method::GET, "/api/v1/conversations/not-a-number/messages", 400, "bad_request"),
        (reqwest::Method::GET, "/api/v1/conversations/1/messages?limit=lots", 400, "bad_request"),
        (reqwest::Method::GET, "/api/v1/no-such-route", 404, "not_found"),
        (reqwest::Method::DELETE, "/api/v1/agents", 405, "method_not_allowed"),
    ];
    for (method, path, status, code) in cases {
        let response = http().request(method.clone(), server.url(path)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
}
