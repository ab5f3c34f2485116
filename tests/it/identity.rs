//! Identity claims: an unsigned `user.id` never adopts another visitor's record or history.

use serde_json::{Value, json};

use crate::support::{TestServer, call, call_expecting, http};

async fn open_session(server: &TestServer, body: Value) -> Value {
    let response = http().post(server.url("/api/v1/visitor/session")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn an_unsigned_claim_stays_a_label_of_the_callers_own_visitor() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let agent_token = server.login("ann@shop.example").await;

    // The real u-42 claims their id without a signature (the site does not enforce it) and chats.
    let owner = open_session(&server, json!({"site": site.key, "user": {"id": "u-42", "name": "Ada"}})).await;
    let owner_token = owner["token"].as_str().unwrap();
    let mut owner_socket = server.visitor(&site, owner_token).await;
    let ack = owner_socket.say(None, "c1", "my card number is 4111").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();

    // Someone else claims the same id, unsigned, with no token and with a token of their own.
    let attacker = open_session(&server, json!({"site": site.key, "user": {"id": "u-42"}})).await;
    assert_ne!(attacker["visitor_id"], owner["visitor_id"]);
    assert_ne!(attacker["token"], owner["token"]);
    let (_, own_token) = server.visitor_session(&site, None).await;
    let with_token = open_session(&server, json!({"site": site.key, "token": own_token, "user": {"id": "u-42"}})).await;
    assert_ne!(with_token["visitor_id"], owner["visitor_id"]);
    assert_eq!(with_token["token"], own_token.as_str(), "the caller keeps their own visitor");

    for token in [attacker["token"].as_str().unwrap(), own_token.as_str()] {
        let mut socket =
            crate::support::Client::connect(&server.ws_url(&format!("/ws/visitor?site={}", site.key)), None).await;
        socket.send(json!({"type": "hello", "token": token})).await;
        let welcome = socket.expect("welcome").await;
        assert_eq!(welcome["conversations"], json!([]), "no conversation of u-42 is visible: {welcome}");
        socket.send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 0, "epoch": 0})).await;
        assert_eq!(socket.expect("error").await["code"], "not_found");
        let (status, answer) =
            call(&server, "GET", &format!("/api/v1/conversations/{conversation_id}/messages"), token, None).await;
        assert!(matches!(status.as_u16(), 401 | 403 | 404), "history answered {status}: {answer}");
    }

    // Agents see the claim as unverified on the claimant's own record.
    let profile_path = format!("/api/v1/visitors/{}", attacker["visitor_id"]);
    let profile = call_expecting(&server, "GET", &profile_path, &agent_token, None, 200).await;
    assert_eq!(profile["unverified_user_id"], "u-42");
    assert_eq!(profile["user_id"], Value::Null);
}

#[tokio::test]
async fn a_signed_claim_still_follows_the_user_across_devices() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let signature = kefu::base::secrets::hmac_sha256_hex(site.secret.as_bytes(), b"u-7");
    let first = open_session(&server, json!({"site": site.key, "user": {"id": "u-7", "signature": signature}})).await;
    let second = open_session(&server, json!({"site": site.key, "user": {"id": "u-7", "signature": signature}})).await;
    assert_eq!(first["visitor_id"], second["visitor_id"]);
    // An unsigned claim of a verified id does not reach that record either.
    let unsigned = open_session(&server, json!({"site": site.key, "user": {"id": "u-7"}})).await;
    assert_ne!(unsigned["visitor_id"], first["visitor_id"]);
}
