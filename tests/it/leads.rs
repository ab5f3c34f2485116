//! Leads: an offline message or an unanswered conversation becomes a lead of the visitor's
//! conversation, agents of its site see it arrive and change, and a reply from a lead lands in
//! the conversation the visitor finds on their next visit.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestServer, call_expecting, history};

/// A visitor of `site` leaves an offline message; returns (visitor id, visitor token).
async fn leave_offline_message(server: &TestServer, site: &kefu::sites::Site, text: &str) -> (u64, String) {
    let (visitor_id, token) = server.visitor_session(site, None).await;
    let form = json!({"name": "Bea 李", "email": "bea@example.com", "text": text});
    call_expecting(server, "POST", "/api/v1/visitor/offline-messages", &token, Some(form), 201).await;
    (visitor_id, token)
}

async fn leads(server: &TestServer, token: &str, query: &str) -> Value {
    call_expecting(server, "GET", &format!("/api/v1/leads{query}"), token, None, 200).await
}

#[tokio::test]
async fn an_offline_message_is_a_lead_of_the_visitors_conversation_that_the_sites_agents_see_arrive() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    server.create_agent("ann@shop.example", &shop, 5).await;
    server.create_agent("ben@other.example", &other, 5).await;
    let ann_token = server.login("ann@shop.example").await;
    let ben_token = server.login("ben@other.example").await;
    let mut ann = server.agent(&ann_token).await;
    let mut ben = server.agent(&ben_token).await;

    let (visitor_id, visitor_token) =
        leave_offline_message(&server, &shop, "Do you deliver to Shenzhen? 请回邮件").await;

    let frame = ann.expect("lead").await;
    assert_eq!(frame["event"], "created");
    let lead = &frame["lead"];
    assert_eq!(lead["source"], "offline_message");
    assert_eq!(lead["status"], "new");
    assert_eq!(lead["visitor_id"], visitor_id);
    assert_eq!(lead["name"], "Bea 李");
    assert_eq!(lead["email"], "bea@example.com");
    assert_eq!(lead["preview"], "Do you deliver to Shenzhen? 请回邮件");
    let other_sites_lead = tokio::time::timeout(Duration::from_millis(300), ben.expect("lead")).await;
    assert!(other_sites_lead.is_err(), "another site's agent gets no lead frame: {other_sites_lead:?}");

    // The message is in the visitor's conversation, which the visitor sees as their own.
    let conversation_id = lead["conversation_id"].as_u64().unwrap();
    let page = history(&server, &visitor_token, conversation_id).await;
    let texts: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Do you deliver to Shenzhen? 请回邮件"]);
    assert_eq!(page["messages"][0]["sender"]["kind"], "visitor");

    let listed = leads(&server, &ann_token, "").await;
    assert_eq!(listed["counts"], json!({"new": 1, "open": 0, "done": 0}));
    assert_eq!(listed["leads"][0]["id"], lead["id"]);
    let of_other = leads(&server, &ben_token, "").await;
    assert_eq!(of_other["leads"], json!([]));
    assert_eq!(of_other["counts"], json!({"new": 0, "open": 0, "done": 0}));
    let path = format!("/api/v1/leads/{}", lead["id"]);
    call_expecting(&server, "GET", &path, &ben_token, None, 404).await;
}

#[tokio::test]
async fn a_reply_lands_where_the_visitor_finds_it_and_the_lead_moves_from_new_to_done() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &shop, 5).await;
    let cid_id = server.create_agent("cid@shop.example", &shop, 5).await;
    let ann_token = server.login("ann@shop.example").await;
    let cid_token = server.login("cid@shop.example").await;
    let (_, visitor_token) = leave_offline_message(&server, &shop, "Is the blue one in stock?").await;
    let lead = leads(&server, &ann_token, "").await["leads"][0].clone();
    let lead_path = format!("/api/v1/leads/{}", lead["id"]);
    // Nobody is online, so the conversation waits in the queue until the reply takes it.
    let mut ann = server.agent(&ann_token).await;

    let answer = call_expecting(
        &server,
        "POST",
        &format!("{lead_path}/reply"),
        &ann_token,
        Some(json!({"text": "Yes, we have three left.", "client_id": "reply-1"})),
        201,
    )
    .await;
    assert_eq!(answer["lead"]["status"], "open");
    assert_eq!(answer["lead"]["assigned_agent"], ann_id);
    assert_eq!(answer["message"]["conversation_id"], lead["conversation_id"]);
    let updated = ann.expect("lead").await;
    assert_eq!((updated["event"].as_str(), updated["lead"]["status"].as_str()), (Some("updated"), Some("open")));
    // A retry with the same client id is the same reply.
    let again = call_expecting(
        &server,
        "POST",
        &format!("{lead_path}/reply"),
        &ann_token,
        Some(json!({"text": "Yes, we have three left.", "client_id": "reply-1"})),
        200,
    )
    .await;
    assert_eq!(again["message"]["seq"], answer["message"]["seq"]);

    // The visitor comes back with their token: the same conversation, the reply after their message.
    let (_, same_token) = server.visitor_session(&shop, Some(&visitor_token)).await;
    let page = history(&server, &same_token, lead["conversation_id"].as_u64().unwrap()).await;
    let texts: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Is the blue one in stock?", "Yes, we have three left."]);
    let conversation = call_expecting(
        &server,
        "GET",
        &format!("/api/v1/conversations/{}", lead["conversation_id"]),
        &ann_token,
        None,
        200,
    )
    .await;
    assert_eq!(
        (conversation["status"].as_str(), conversation["assigned_agent"].as_u64()),
        (Some("assigned"), Some(ann_id))
    );

    // Assigned to another agent of the site, then done; the filters and counts follow.
    let mut cid = server.agent(&cid_token).await;
    let assigned = call_expecting(
        &server,
        "POST",
        &format!("{lead_path}/assign"),
        &ann_token,
        Some(json!({"agent_id": cid_id})),
        200,
    )
    .await;
    assert_eq!(assigned["assigned_agent"], cid_id);
    let done = call_expecting(
        &server,
        "POST",
        &format!("{lead_path}/status"),
        &cid_token,
        Some(json!({"status": "done"})),
        200,
    )
    .await;
    assert_eq!(done["status"], "done");
    let seen = loop {
        let frame = cid.expect("lead").await;
        if frame["lead"]["status"] == "done" {
            break frame;
        }
    };
    assert_eq!(seen["lead"]["assigned_agent"], cid_id);
    assert_eq!(leads(&server, &ann_token, "?status=done").await["leads"].as_array().unwrap().len(), 1);
    assert_eq!(leads(&server, &ann_token, "?status=new").await["leads"], json!([]));
    let mine = leads(&server, &cid_token, &format!("?assigned_agent={cid_id}")).await;
    assert_eq!(mine["counts"], json!({"new": 0, "open": 0, "done": 1}));
    assert_eq!(leads(&server, &ann_token, &format!("?assigned_agent={ann_id}")).await["leads"], json!([]));
}

#[tokio::test]
async fn a_conversation_closed_without_an_agent_reply_becomes_one_lead_and_a_reply_reopens_it() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &shop, 5).await;
    let ann_token = server.login("ann@shop.example").await;
    let (_, visitor_token) = server.visitor_session(&shop, None).await;
    let mut visitor = server.visitor(&shop, &visitor_token).await;
    let ack = visitor.say(None, "v-1", "Anyone there?").await;
    let unanswered = ack["conversation_id"].as_u64().unwrap();
    call_expecting(&server, "POST", &format!("/api/v1/conversations/{unanswered}/close"), &ann_token, None, 200).await;

    let listed = leads(&server, &ann_token, "").await;
    assert_eq!(listed["leads"].as_array().unwrap().len(), 1);
    let lead = &listed["leads"][0];
    assert_eq!(
        (lead["source"].as_str(), lead["conversation_id"].as_u64()),
        (Some("missed_conversation"), Some(unanswered))
    );
    assert_eq!(lead["preview"], "Anyone there?");

    // An answered conversation that closes is no lead.
    let ack = visitor.say(None, "v-2", "Hello again").await;
    let answered = ack["conversation_id"].as_u64().unwrap();
    assert_ne!(answered, unanswered);
    let reply = json!({"text": "Hi!", "agent_id": ann_id});
    call_expecting(
        &server,
        "POST",
        &format!("/api/v1/conversations/{answered}/messages"),
        &ann_token,
        Some(reply),
        201,
    )
    .await;
    call_expecting(&server, "POST", &format!("/api/v1/conversations/{answered}/close"), &ann_token, None, 200).await;
    assert_eq!(leads(&server, &ann_token, "").await["leads"].as_array().unwrap().len(), 1);

    // A reply to the lead reopens its conversation for the agent; the visitor gets it live.
    let path = format!("/api/v1/leads/{}/reply", lead["id"]);
    call_expecting(&server, "POST", &path, &ann_token, Some(json!({"text": "Sorry for the wait!"})), 201).await;
    let message = loop {
        let message = visitor.expect("message").await;
        if message["conversation_id"] == unanswered {
            break message;
        }
    };
    assert_eq!(message["text"], "Sorry for the wait!");
    let conversation =
        call_expecting(&server, "GET", &format!("/api/v1/conversations/{unanswered}"), &ann_token, None, 200).await;
    assert_eq!(conversation["status"], "assigned");
    // Closed again, it stays the one lead it was.
    call_expecting(&server, "POST", &format!("/api/v1/conversations/{unanswered}/close"), &ann_token, None, 200).await;
    assert_eq!(leads(&server, &ann_token, "").await["leads"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_lead_requests_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let shop = server.create_site("Shop").await;
    let other = server.create_site("Other").await;
    server.create_agent("ann@shop.example", &shop, 5).await;
    let ben_id = server.create_agent("ben@other.example", &other, 5).await;
    let ann_token = server.login("ann@shop.example").await;
    let ben_token = server.login("ben@other.example").await;
    leave_offline_message(&server, &shop, "Please call me").await;
    let lead = leads(&server, &ann_token, "").await["leads"][0].clone();
    let path = format!("/api/v1/leads/{}", lead["id"]);

    call_expecting(&server, "POST", &format!("{path}/status"), &ann_token, Some(json!({"status": "later"})), 422).await;
    call_expecting(&server, "POST", &format!("{path}/status"), &ann_token, Some(json!({"state": "done"})), 422).await;
    call_expecting(&server, "POST", &format!("{path}/assign"), &ann_token, Some(json!({"agent_id": ben_id})), 422)
        .await;
    call_expecting(&server, "POST", &format!("{path}/reply"), &ann_token, Some(json!({"text": "   "})), 422).await;
    call_expecting(&server, "POST", &format!("{path}/status"), &ben_token, Some(json!({"status": "done"})), 404).await;
    call_expecting(&server, "POST", &format!("{path}/reply"), &ben_token, Some(json!({"text": "Hi"})), 404).await;
    call_expecting(&server, "GET", "/api/v1/leads?status=later", &ann_token, None, 422).await;
    call_expecting(&server, "GET", "/api/v1/leads?limit=0", &ann_token, None, 422).await;
    call_expecting(&server, "POST", "/api/v1/leads/999999/status", &ann_token, Some(json!({"status": "done"})), 404)
        .await;
    let (_, visitor_token) = server.visitor_session(&shop, None).await;
    call_expecting(&server, "GET", "/api/v1/leads", &visitor_token, None, 403).await;

    let unchanged = call_expecting(&server, "GET", &path, &ann_token, None, 200).await;
    assert_eq!(unchanged, lead);
    let page = history(&server, &ann_token, lead["conversation_id"].as_u64().unwrap()).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "no reply was stored");
}
