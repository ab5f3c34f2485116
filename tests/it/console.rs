//! The agent console's HTTP and WebSocket behaviour: login limits, CSRF, site isolation, lists,
//! live visitors, agent-initiated chats, transfer, close, reopen, block, canned replies, teams.

use std::time::Duration;

use kefu::sites::Site;
use serde_json::{Value, json};

use crate::support::{Client, PASSWORD, TestServer, call, call_expecting, http};

/// Expects `status` and, for errors, an error body naming `message_part`.
async fn check(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    status: u16,
    message_part: &str,
) -> Value {
    let answer = call_expecting(server, method, path, token, body, status).await;
    if status >= 400 {
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(message_part), "{method} {path}: {message:?} lacks {message_part:?}");
    }
    answer
}

/// A visitor who has written once; returns (visitor id, token, client, conversation id).
async fn visitor_with_conversation(server: &TestServer, site: &Site, text: &str) -> (u64, String, Client, u64) {
    let (visitor_id, token) = server.visitor_session(site, None).await;
    let mut visitor = server.visitor(site, &token).await;
    let conversation_id =
        visitor.say(None, &format!("v-{visitor_id}"), text).await["conversation_id"].as_u64().unwrap();
    (visitor_id, token, visitor, conversation_id)
}

async fn conversation_event(agent: &mut Client, conversation_id: u64, event: &str) -> Value {
    loop {
        let frame = agent.expect("conversation").await;
        if frame["event"] == event && frame["conversation"]["id"] == conversation_id {
            return frame;
        }
    }
}

#[tokio::test]
async fn logins_are_limited_per_account_and_per_address() {
    let server = TestServer::start_with(|config| {
        config.limits.login_attempts = 3;
        config.limits.login_attempts_per_address = 3;
    })
    .await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let login = |email: &str, password: &str| {
        http().post(server.url("/api/v1/agent/login")).json(&json!({"email": email, "password": password})).send()
    };
    for _ in 0..3 {
        assert_eq!(login("ann@shop.example", "wrong password").await.unwrap().status(), 401);
    }
    let refused = login("ann@shop.example", PASSWORD).await.unwrap();
    assert_eq!(refused.status(), 429, "the right password is refused too from the address that failed");
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "rate_limited");
    // The address is limited as well (limits.login_attempts_per_address): another account from
    // the same address is refused. Other addresses are not (tests/it/login_limits.rs).
    server.create_agent("bob@shop.example", &site, 2).await;
    assert_eq!(login("bob@shop.example", PASSWORD).await.unwrap().status(), 429);
}

#[tokio::test]
async fn cookie_requests_from_a_foreign_origin_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let token = server.login("ann@shop.example").await;
    let mut ann = server.agent(&token).await;
    let (_, _, _visitor, conversation_id) = visitor_with_conversation(&server, &site, "hi").await;
    conversation_event(&mut ann, conversation_id, "assigned").await;
    ann.send(json!({"type": "close", "conversation_id": conversation_id})).await;
    conversation_event(&mut ann, conversation_id, "closed").await;

    let cookie = format!("kefu_session={token}");
    let reopen = server.url(&format!("/api/v1/conversations/{conversation_id}/reopen"));
    for origin in [Some("https://evil.example"), None] {
        let mut request = http().post(&reopen).header("cookie", &cookie);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "origin {origin:?}");
        assert!(response.text().await.unwrap().contains("cross-site"));
    }
    let (_, closed) = call(&server, "GET", "/api/v1/conversations?state=closed", &token, None).await;
    assert_eq!(closed["conversations"][0]["id"], conversation_id, "still closed");
    assert_eq!(closed["conversations"][0]["status"], "closed");

    // The same request from kefu's own origin works.
    let response = http()
        .post(&reopen)
        .header("cookie", &cookie)
        .header("origin", format!("http://{}", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Reading with the cookie needs no Origin.
    let response = http().get(server.url("/api/v1/agents")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_agent_of_one_site_cannot_reach_another_sites_data() {
    let server = TestServer::start().await;
    let site_a = server.create_site("A").await;
    let site_b = server.create_site("B").await;
    server.create_agent("ann@a.example", &site_a, 2).await;
    server.create_agent("bob@b.example", &site_b, 2).await;
    let ann = server.login("ann@a.example").await;
    let admin = server.admin_token("boss@shop.example").await;
    let (visitor_b, _, _client, conversation_b) = visitor_with_conversation(&server, &site_b, "secret").await;
    check(
        &server,
        "POST",
        "/api/v1/canned-replies",
        &admin,
        Some(json!({"site": site_b.key, "shortcut": "hi", "text": "Hello from B"})),
        201,
        "",
    )
    .await;

    for (method, path, body) in [
        ("GET", format!("/api/v1/conversations/{conversation_b}/messages"), None),
        ("POST", format!("/api/v1/conversations/{conversation_b}/transfer"), Some(json!({"agent_id": 1}))),
        ("POST", format!("/api/v1/conversations/{conversation_b}/reopen"), None),
        ("GET", format!("/api/v1/visitors/{visitor_b}"), None),
        ("GET", format!("/api/v1/visitors/{visitor_b}/conversations"), None),
        ("POST", format!("/api/v1/visitors/{visitor_b}/conversations"), None),
        ("POST", format!("/api/v1/visitors/{visitor_b}/block"), Some(json!({}))),
        ("GET", format!("/api/v1/canned-replies?site={}", site_b.key), None),
    ] {
        check(&server, method, &path, &ann, body, 404, "no such").await;
    }
    for state in ["queued", "open", "closed", "mine"] {
        let (_, list) = call(&server, "GET", &format!("/api/v1/conversations?state={state}"), &ann, None).await;
        assert_eq!(list["conversations"], json!([]), "{state}: {list}");
    }
    let (_, online) = call(&server, "GET", "/api/v1/visitors/online", &ann, None).await;
    assert_eq!(online, json!([]));
    // Over the WebSocket too.
    let mut socket = server.agent(&ann).await;
    socket
        .send(json!({"type": "resume", "conversation_id": conversation_b, "last_seq": 0, "epoch": server.epoch()}))
        .await;
    assert_eq!(socket.expect("error").await["code"], "not_found");
    // Nothing changed: the conversation is still open and blocked nobody.
    let (_, profile) = call(&server, "GET", &format!("/api/v1/visitors/{visitor_b}"), &admin, None).await;
    assert_eq!(profile["blocked"], false);
}

#[tokio::test]
async fn transfer_to_an_agent_carries_an_internal_note_the_visitor_never_sees() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 1).await;
    let bob_id = server.create_agent("bob@shop.example", &site, 1).await;
    let ann_token = server.login("ann@shop.example").await;
    let mut ann = server.agent(&ann_token).await;
    let (_, visitor_token, mut visitor, conversation_id) = visitor_with_conversation(&server, &site, "refund?").await;
    let assigned = conversation_event(&mut ann, conversation_id, "assigned").await;
    assert_eq!(assigned["conversation"]["assigned_agent"], ann_id);
    let mut bob = server.agent(&server.login("bob@shop.example").await).await;

    check(
        &server,
        "POST",
        &format!("/api/v1/conversations/{conversation_id}/transfer"),
        &ann_token,
        Some(json!({"agent_id": bob_id, "note": "VIP, wants a refund"})),
        200,
        "",
    )
    .await;
    let event = conversation_event(&mut bob, conversation_id, "assigned").await;
    assert_eq!(event["conversation"]["assigned_agent"], bob_id);
    // Bob gets the conversation so far (the visitor's message, then the note) with the transfer.
    let first = bob.expect("message").await;
    assert_eq!(first["text"], "refund?");
    let note = bob.expect("message").await;
    assert_eq!(note["text"], "VIP, wants a refund");
    assert_eq!(note["internal"], true);
    // Bob now gets the visitor's messages live.
    visitor.say(Some(conversation_id), "v-2", "hello?").await;
    assert_eq!(bob.expect("message").await["text"], "hello?");
    // The visitor saw the assignment, never the note.
    let visitor_history = crate::support::history(&server, &visitor_token, conversation_id).await;
    let texts: Vec<&str> =
        visitor_history["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["refund?", "hello?"]);
    let agent_history = crate::support::history(&server, &ann_token, conversation_id).await;
    assert_eq!(agent_history["messages"].as_array().unwrap().len(), 3);

    // Ann no longer holds it: she may not transfer it again.
    check(
        &server,
        "POST",
        &format!("/api/v1/conversations/{conversation_id}/transfer"),
        &ann_token,
        Some(json!({"agent_id": ann_id})),
        403,
        "another agent",
    )
    .await;
}

#[tokio::test]
async fn transfer_to_a_team_queues_the_conversation_for_its_members_only() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 5).await;
    let bob_id = server.create_agent("bob@shop.example", &site, 5).await;
    let admin = server.admin_token("boss@shop.example").await;
    let team = check(
        &server,
        "POST",
        "/api/v1/teams",
        &admin,
        Some(json!({"site": site.key, "name": "Billing", "members": [bob_id]})),
        201,
        "",
    )
    .await;
    let ann_token = server.login("ann@shop.example").await;
    let mut ann = server.agent(&ann_token).await;
    let (_, _, _visitor, conversation_id) = visitor_with_conversation(&server, &site, "invoice").await;
    assert_eq!(
        conversation_event(&mut ann, conversation_id, "assigned").await["conversation"]["assigned_agent"],
        ann_id
    );

    // Bob is not online yet: the conversation waits for the team, even though Ann has room.
    let answer = check(
        &server,
        "POST",
        &format!("/api/v1/conversations/{conversation_id}/transfer"),
        &ann_token,
        Some(json!({"team_id": team["id"], "note": "billing question"})),
        200,
        "",
    )
    .await;
    assert_eq!(answer["status"], "queued");
    conversation_event(&mut ann, conversation_id, "queued").await;
    let (_, queued) = call(&server, "GET", "/api/v1/conversations?state=queued", &ann_token, None).await;
    assert_eq!(queued["conversations"][0]["id"], conversation_id);
    assert_eq!(queued["conversations"][0]["team"], team["id"]);

    let mut bob = server.agent(&server.login("bob@shop.example").await).await;
    let event = conversation_event(&mut bob, conversation_id, "assigned").await;
    assert_eq!(event["conversation"]["assigned_agent"], bob_id);

    // A team of another site, or an unknown team, is refused and changes nothing.
    check(
        &server,
        "POST",
        &format!("/api/v1/conversations/{conversation_id}/transfer"),
        &admin,
        Some(json!({"team_id": 99})),
        422,
        "team_id",
    )
    .await;
}

#[tokio::test]
async fn close_and_reopen() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 2).await;
    let ann_token = server.login("ann@shop.example").await;
    let mut ann = server.agent(&ann_token).await;
    let (_, _, mut visitor, conversation_id) = visitor_with_conversation(&server, &site, "hi").await;
    conversation_event(&mut ann, conversation_id, "assigned").await;
    let reopen = format!("/api/v1/conversations/{conversation_id}/reopen");
    check(&server, "POST", &reopen, &ann_token, None, 409, "not closed").await;

    ann.send(json!({"type": "close", "conversation_id": conversation_id})).await;
    conversation_event(&mut ann, conversation_id, "closed").await;
    let answer = check(&server, "POST", &reopen, &ann_token, None, 200, "").await;
    assert_eq!(answer["status"], "assigned");
    assert_eq!(answer["assigned_agent"], ann_id);
    let event = conversation_event(&mut visitor, conversation_id, "reopened").await;
    assert_eq!(event["conversation"]["status"], "assigned");
    // The visitor writes into the same conversation again, and Ann hears it.
    let ack = visitor.say(None, "v-again", "back again").await;
    assert_eq!(ack["conversation_id"], conversation_id);
    assert_eq!(ann.expect("message").await["text"], "back again");

    // A visitor has one open conversation: reopening an old one while another is open is refused.
    ann.send(json!({"type": "close", "conversation_id": conversation_id})).await;
    conversation_event(&mut ann, conversation_id, "closed").await;
    let newer = visitor.say(None, "v-new", "new question").await["conversation_id"].as_u64().unwrap();
    assert_ne!(newer, conversation_id);
    check(&server, "POST", &reopen, &ann_token, None, 409, "already has an open").await;
    check(&server, "POST", "/api/v1/conversations/999/reopen", &ann_token, None, 404, "no such").await;
}

#[tokio::test]
async fn blocking_a_visitor_closes_their_sockets_and_refuses_them() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let ann_token = server.login("ann@shop.example").await;
    let (visitor_id, visitor_token, mut visitor, _) = visitor_with_conversation(&server, &site, "spam").await;

    check(
        &server,
        "POST",
        &format!("/api/v1/visitors/{visitor_id}/block"),
        &ann_token,
        Some(json!({"ip": "yes"})),
        422,
        "ip",
    )
    .await;
    let answer =
        check(&server, "POST", &format!("/api/v1/visitors/{visitor_id}/block"), &ann_token, Some(json!({})), 200, "")
            .await;
    assert_eq!(answer["blocked"], true);
    assert_eq!(visitor.expect("error").await["code"], "blocked");
    assert_eq!(visitor.expect_close().await, 4003);

    // The token no longer opens a socket or a session.
    let mut again = Client::connect(&server.ws_url(&format!("/ws/visitor?site={}", site.key)), None).await;
    again.send(json!({"type": "hello", "token": visitor_token})).await;
    assert_eq!(again.expect_close().await, 4003);
    let response = http()
        .post(server.url("/api/v1/visitor/session"))
        .json(&json!({"site": site.key, "token": visitor_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("blocked"));
    // Agents cannot start a chat with a blocked visitor.
    check(&server, "POST", &format!("/api/v1/visitors/{visitor_id}/conversations"), &ann_token, None, 409, "blocked")
        .await;
}

#[tokio::test]
async fn blocking_by_address_refuses_every_visitor_from_it() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let ann_token = server.login("ann@shop.example").await;
    let (visitor_id, _, mut visitor, _) = visitor_with_conversation(&server, &site, "spam").await;
    let (_, other_token) = server.visitor_session(&site, None).await;
    let mut other = server.visitor(&site, &other_token).await;

    let answer = check(
        &server,
        "POST",
        &format!("/api/v1/visitors/{visitor_id}/block"),
        &ann_token,
        Some(json!({"ip": true})),
        200,
        "",
    )
    .await;
    assert_eq!(answer["ip"], "127.0.0.1");
    assert_eq!(visitor.expect_close().await, 4003);
    assert_eq!(other.expect_close().await, 4003, "another visitor on the blocked address is closed too");

    // A brand-new visitor from the address gets no session and no socket.
    let response =
        http().post(server.url("/api/v1/visitor/session")).json(&json!({"site": site.key})).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("blocked"));
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.ws_url(&format!("/ws/visitor?site={}", site.key)),
    )
    .unwrap();
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(refused.is_err(), "the upgrade is refused");
}

#[tokio::test]
async fn lists_page_with_cursors_and_count() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let ann_token = server.login("ann@shop.example").await;
    let mut ann = server.agent(&ann_token).await;
    let mut ids = Vec::new();
    let mut visitors = Vec::new();
    for n in 0..5 {
        let (_, _, visitor, id) = visitor_with_conversation(&server, &site, &format!("q{n}")).await;
        ids.push(id);
        visitors.push(visitor);
    }
    // Two are Ann's (capacity 2), three wait.
    let mut n_assigned = 0;
    while n_assigned < 2 {
        if ann.expect("conversation").await["event"] == "assigned" {
            n_assigned += 1;
        }
    }
    let (_, first) = call(&server, "GET", "/api/v1/conversations?state=open&limit=2", &ann_token, None).await;
    assert_eq!(first["counts"], json!({"queued": 3, "mine": 2, "open": 5}));
    let mut seen: Vec<u64> =
        first["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    let mut cursor = first["next_cursor"].as_u64();
    while let Some(next) = cursor {
        let (_, page) =
            call(&server, "GET", &format!("/api/v1/conversations?state=open&limit=2&cursor={next}"), &ann_token, None)
                .await;
        seen.extend(page["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()));
        cursor = page["next_cursor"].as_u64();
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let (_, mine) = call(&server, "GET", "/api/v1/conversations?state=mine", &ann_token, None).await;
    assert_eq!(mine["conversations"].as_array().unwrap().len(), 2);
    assert_eq!(mine["conversations"][0]["read_seq"], 0);
    assert!(mine["conversations"][0]["visitor_name"].as_str().unwrap().starts_with("Visitor #"));

    // Close three; the closed list pages newest first.
    let admin = server.admin_token("boss@shop.example").await;
    let mut boss = server.agent(&admin).await;
    for id in &ids[..3] {
        boss.send(json!({"type": "close", "conversation_id": id})).await;
        conversation_event(&mut boss, *id, "closed").await;
    }
    let (_, closed) = call(&server, "GET", "/api/v1/conversations?state=closed&limit=2", &ann_token, None).await;
    let page: Vec<u64> =
        closed["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(page, [ids[2], ids[1]]);
    let cursor = closed["next_cursor"].as_u64().unwrap();
    let (_, rest) =
        call(&server, "GET", &format!("/api/v1/conversations?state=closed&limit=2&cursor={cursor}"), &ann_token, None)
            .await;
    assert_eq!(rest["conversations"][0]["id"], ids[0]);
    assert_eq!(rest["next_cursor"], Value::Null);

    check(&server, "GET", "/api/v1/conversations?state=snoozed", &ann_token, None, 422, "state").await;
    check(&server, "GET", "/api/v1/conversations?state=open&limit=0", &ann_token, None, 422, "limit").await;
    check(&server, "GET", "/api/v1/conversations?state=open&limit=201", &ann_token, None, 422, "limit").await;
    check(&server, "GET", "/api/v1/conversations?state=open&cursor=x", &ann_token, None, 400, "").await;
    // Without parameters the old shape stays: an array of open conversations.
    let (_, all) = call(&server, "GET", "/api/v1/conversations", &ann_token, None).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn agents_hear_of_every_message_of_their_sites() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    server.create_agent("ann@shop.example", &site, 1).await;
    server.create_agent("bob@shop.example", &site, 1).await;
    server.create_agent("cy@other.example", &other, 1).await;
    let mut ann = server.agent(&server.login("ann@shop.example").await).await;
    let mut cy = server.agent(&server.login("cy@other.example").await).await;
    let long = "x".repeat(100) + "é";
    let (_, _, _visitor, conversation_id) = visitor_with_conversation(&server, &site, &long).await;
    let frame = ann.expect("activity").await;
    assert_eq!(frame["items"].as_array().unwrap().len(), 1, "{frame}");
    let activity = &frame["items"][0];
    assert_eq!(activity["conversation_id"], conversation_id);
    assert_eq!(activity["seq"], 1);
    assert_eq!(activity["sender_kind"], "visitor");
    assert_eq!(activity["internal"], false);
    assert_eq!(activity["preview"].as_str().unwrap().chars().count(), 80);
    // Bob is not subscribed (the conversation went to one agent) but still sees the activity.
    let mut bob = server.agent(&server.login("bob@shop.example").await).await;
    let (_, _, mut second, second_id) = visitor_with_conversation(&server, &site, "second").await;
    // A burst of messages may share frames; every one is heard once, in the order stored.
    for n in 2..=30 {
        second.say(Some(second_id), &format!("burst-{n}"), &format!("message {n}")).await;
    }
    let mut heard = Vec::new();
    while heard.len() < 30 {
        for item in bob.expect("activity").await["items"].as_array().unwrap() {
            assert_eq!(item["conversation_id"], second_id, "{item}");
            heard.push(item["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(heard, (1..=30).collect::<Vec<u64>>());
    // Another site's agent hears nothing of it (presence frames may come and go).
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), cy.next()).await {
        assert_ne!(frame["type"], "activity", "{frame}");
    }
}

#[tokio::test]
async fn the_live_visitor_list_and_an_agent_initiated_chat() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 2).await;
    let ann_token = server.login("ann@shop.example").await;
    let mut ann = server.agent(&ann_token).await;

    let response = http()
        .post(server.url("/api/v1/visitor/session"))
        .json(&json!({"site": site.key, "page": {"url": "https://shop.example/", "title": "Home", "referrer": "https://search.example/"}}))
        .send()
        .await
        .unwrap();
    let session: Value = response.json().await.unwrap();
    let visitor_id = session["visitor_id"].as_u64().unwrap();
    let token = session["token"].as_str().unwrap();
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.ws_url(&format!("/ws/visitor?site={}", site.key)),
    )
    .unwrap();
    request.headers_mut().insert(
        "user-agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0 Safari/537.36"
            .parse()
            .unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut visitor = Client { socket };
    visitor.send(json!({"type": "hello", "token": token})).await;
    visitor.expect("welcome").await;

    let online = ann.expect("visitor").await;
    assert_eq!(online["event"], "online");
    assert_eq!(online["visitor"]["url"], "https://shop.example/");
    assert_eq!(online["visitor"]["browser"], "Chrome 121 on Windows");
    assert_eq!(online["visitor"]["ip"], "127.0.0.1");
    assert_eq!(online["visitor"]["returning"], false);

    visitor.send(json!({"type": "page_view", "url": "https://shop.example/cart", "title": "Cart"})).await;
    let page = ann.expect("visitor").await;
    assert_eq!(page["event"], "page");
    assert_eq!(page["visitor"]["url"], "https://shop.example/cart");
    assert_eq!(page["visitor"]["referrer"], "https://search.example/");
    let (_, list) = call(&server, "GET", "/api/v1/visitors/online", &ann_token, None).await;
    assert_eq!(list[0]["visitor_id"], visitor_id);
    assert_eq!(list[0]["title"], "Cart");
    let (_, profile) = call(&server, "GET", &format!("/api/v1/visitors/{visitor_id}"), &ann_token, None).await;
    assert_eq!(profile["online"]["url"], "https://shop.example/cart");

    // Ann reaches out; the conversation is hers at once and the visitor hears of it.
    let started =
        check(&server, "POST", &format!("/api/v1/visitors/{visitor_id}/conversations"), &ann_token, None, 201, "")
            .await;
    assert_eq!(started["status"], "assigned");
    assert_eq!(started["assigned_agent"], ann_id);
    let conversation_id = started["id"].as_u64().unwrap();
    let created = visitor.expect("conversation").await;
    assert_eq!(created["event"], "created");
    ann.say(Some(conversation_id), "a-1", "Can I help with your cart?").await;
    let message = visitor.expect("message").await;
    assert_eq!(message["text"], "Can I help with your cart?");
    assert_eq!(visitor.say(None, "v-1", "yes please").await["conversation_id"], conversation_id);
    assert_eq!(ann.expect("message").await["text"], "yes please");
    check(&server, "POST", &format!("/api/v1/visitors/{visitor_id}/conversations"), &ann_token, None, 409, "open")
        .await;
    let (_, earlier) =
        call(&server, "GET", &format!("/api/v1/visitors/{visitor_id}/conversations"), &ann_token, None).await;
    assert_eq!(earlier[0]["id"], conversation_id);

    // Leaving takes the visitor off the list.
    drop(visitor);
    let offline = ann.expect("visitor").await;
    assert_eq!(offline["event"], "offline");
}

#[tokio::test]
async fn page_views_with_bad_input_are_refused() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let mut ann = server.agent(&server.login("ann@shop.example").await).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    for (frame, part) in [
        (json!({"type": "page_view"}), "url"),
        (json!({"type": "page_view", "url": ""}), "url"),
        (json!({"type": "page_view", "url": "x".repeat(2001)}), "url"),
        (json!({"type": "page_view", "url": "https://a/", "title": "t".repeat(501)}), "title"),
        (json!({"type": "page_view", "url": 5}), "page_view"),
    ] {
        visitor.send(frame).await;
        let error = visitor.expect("error").await;
        assert_eq!(error["code"], "invalid_field");
        assert!(error["message"].as_str().unwrap().contains(part), "{error}");
    }
    ann.send(json!({"type": "page_view", "url": "https://a/"})).await;
    assert_eq!(ann.expect("error").await["code"], "forbidden");
}

#[tokio::test]
async fn canned_replies_are_read_by_agents_and_written_by_admins() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let ann = server.login("ann@shop.example").await;
    let admin = server.admin_token("boss@shop.example").await;
    let body = json!({"site": site.key, "shortcut": "/thanks", "text": "Thank you for waiting!"});
    check(&server, "POST", "/api/v1/canned-replies", &ann, Some(body.clone()), 403, "admins").await;
    let created = check(&server, "POST", "/api/v1/canned-replies", &admin, Some(body.clone()), 201, "").await;
    assert_eq!(created["shortcut"], "thanks");
    check(&server, "POST", "/api/v1/canned-replies", &admin, Some(body), 409, "already used").await;
    for (bad, part) in [
        (json!({"site": site.key, "shortcut": "two words", "text": "x"}), "shortcut"),
        (json!({"site": site.key, "shortcut": "", "text": "x"}), "shortcut"),
        (json!({"site": site.key, "shortcut": "ok", "text": "  "}), "text"),
        (json!({"site": "nope", "shortcut": "ok", "text": "x"}), "no such site"),
        (json!({"site": site.key, "shortcut": "ok"}), "text"),
    ] {
        check(&server, "POST", "/api/v1/canned-replies", &admin, Some(bad), 422, part).await;
    }
    let id = created["id"].as_u64().unwrap();
    check(
        &server,
        "PUT",
        &format!("/api/v1/canned-replies/{id}"),
        &admin,
        Some(json!({"site": site.key, "shortcut": "ty", "text": "Thanks!"})),
        200,
        "",
    )
    .await;
    let listed = check(&server, "GET", &format!("/api/v1/canned-replies?site={}", site.key), &ann, None, 200, "").await;
    assert_eq!(listed, json!([{"id": id, "site": site.key, "shortcut": "ty", "text": "Thanks!"}]));
    check(&server, "GET", "/api/v1/canned-replies", &ann, None, 422, "site").await;
    check(&server, "DELETE", &format!("/api/v1/canned-replies/{id}"), &ann, None, 403, "admins").await;
    check(&server, "DELETE", &format!("/api/v1/canned-replies/{id}"), &admin, None, 204, "").await;
    check(&server, "DELETE", &format!("/api/v1/canned-replies/{id}"), &admin, None, 404, "no such").await;
    let listed = check(&server, "GET", &format!("/api/v1/canned-replies?site={}", site.key), &ann, None, 200, "").await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn teams_and_the_agent_list() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 2).await;
    let cy_id = server.create_agent("cy@other.example", &other, 2).await;
    let ann = server.login("ann@shop.example").await;
    let admin = server.admin_token("boss@shop.example").await;
    let _ann_socket = server.agent(&ann).await;

    let body = json!({"site": site.key, "name": "Sales", "members": [ann_id]});
    check(&server, "POST", "/api/v1/teams", &ann, Some(body.clone()), 403, "admins").await;
    for (bad, part) in [
        (json!({"site": site.key, "name": "", "members": []}), "name"),
        (json!({"site": site.key, "name": "X", "members": [cy_id]}), "does not serve"),
        (json!({"site": site.key, "name": "X", "members": ["a"]}), "members"),
        (json!({"site": "nope", "name": "X"}), "no such site"),
    ] {
        check(&server, "POST", "/api/v1/teams", &admin, Some(bad), 422, part).await;
    }
    let team = check(&server, "POST", "/api/v1/teams", &admin, Some(body), 201, "").await;
    let teams = check(&server, "GET", "/api/v1/teams", &ann, None, 200, "").await;
    assert_eq!(teams, json!([team]));

    let agents = check(&server, "GET", "/api/v1/agents", &ann, None, 200, "").await;
    let listed: Vec<(u64, String)> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|agent| (agent["id"].as_u64().unwrap(), agent["presence"].as_str().unwrap().to_owned()))
        .collect();
    assert!(listed.contains(&(ann_id, "online".to_owned())), "{agents}");
    assert!(!listed.iter().any(|(id, _)| *id == cy_id), "agents of other sites are not listed");

    // A visitor token is not an agent.
    let (_, visitor_token) = server.visitor_session(&site, None).await;
    check(&server, "GET", "/api/v1/agents", &visitor_token, None, 403, "agents only").await;
    check(&server, "GET", "/api/v1/visitors/online", &visitor_token, None, 403, "agents only").await;
}

#[tokio::test]
async fn transfer_and_block_bad_input_changes_nothing() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 2).await;
    let ann = server.login("ann@shop.example").await;
    let mut socket = server.agent(&ann).await;
    let (visitor_id, _, _visitor, conversation_id) = visitor_with_conversation(&server, &site, "hi").await;
    conversation_event(&mut socket, conversation_id, "assigned").await;
    let path = format!("/api/v1/conversations/{conversation_id}/transfer");
    for (bad, status, part) in [
        (json!({}), 422, "exactly one"),
        (json!({"agent_id": 1, "team_id": 1}), 422, "exactly one"),
        (json!({"agent_id": 999}), 422, "agent_id"),
        (json!({"agent_id": ann_id}), 409, "already assigned"),
        (json!({"agent_id": "x"}), 422, "agent_id"),
        (json!({"agent_id": ann_id, "note": "n".repeat(2001)}), 422, "note"),
        (json!({"agent_id": ann_id, "colour": "red"}), 422, "colour"),
    ] {
        check(&server, "POST", &path, &ann, Some(bad), status, part).await;
    }
    check(&server, "POST", "/api/v1/conversations/999/transfer", &ann, Some(json!({"agent_id": 1})), 404, "no such")
        .await;
    let response = http().post(server.url(&path)).bearer_auth(&ann).body("{not json").send().await.unwrap();
    assert_eq!(response.status(), 400);
    check(&server, "POST", &format!("/api/v1/visitors/{visitor_id}/block"), &ann, Some(json!({"ip": 1})), 422, "ip")
        .await;
    check(&server, "POST", "/api/v1/visitors/999/block", &ann, Some(json!({})), 404, "no such").await;
    check(&server, "GET", "/api/v1/visitors/999", &ann, None, 404, "no such").await;
    check(&server, "GET", "/api/v1/visitors/abc", &ann, None, 400, "").await;
    // Nothing changed.
    let history = crate::support::history(&server, &ann, conversation_id).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    let (_, profile) = call(&server, "GET", &format!("/api/v1/visitors/{visitor_id}"), &ann, None).await;
    assert_eq!(profile["blocked"], false);
    let (_, mine) = call(&server, "GET", "/api/v1/conversations?state=mine", &ann, None).await;
    assert_eq!(mine["conversations"][0]["assigned_agent"], ann_id);
}

#[tokio::test]
async fn the_console_page_is_served_with_a_strict_policy() {
    let server = TestServer::start().await;
    let response = http().get(server.url("/console")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let policy = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("default-src 'self'") && policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"));
    let page = response.text().await.unwrap();
    assert!(page.contains("/console/app.js"));
    assert!(!page.contains("<script>"), "no inline script");
    let script = http().get(server.url("/console/app.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
}
