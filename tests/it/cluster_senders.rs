//! The cluster's webhook and email senders: two `kefu serve` nodes on one PostgreSQL and one
//! nats-server, both polling the outbox. A chat across the nodes reaches a site's webhook once
//! per event, signed, retried after the receiver's failures; a password reset asked on one node
//! is emailed once, and so are an offline message's notice and a missed chat's to each of the
//! site's agents; the Email page of either node lists them and sends test emails.
//!
//! The tests print one line and pass when nats-server or PostgreSQL is not installed.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{ADMIN, Admin};
use crate::email::{
    Parsed, SmtpSink, an_answer_reaches_the_lead_once, leave_offline_message, quick_email, received_with_subject,
    to_lead, use_sink,
};
use crate::support::nats::NatsServer;
use crate::support::{TestServer, call};
use crate::webhooks::{create_webhook, receiver, verify};

fn quick_senders(config: &mut kefu::base::config::Config) {
    config.webhooks.retry_base_ms = 50;
    quick_email(config);
}

/// Two nodes sending email through an SMTP sink, with a site and its admin (who set the sink up
/// on the Email page); `None` when PostgreSQL or nats-server is missing.
struct EmailNodes {
    url: String,
    _nats: NatsServer,
    sink: SmtpSink,
    one: TestServer,
    two: TestServer,
    site: kefu::sites::Site,
    admin: Admin,
}

async fn email_nodes(test: &str) -> Option<EmailNodes> {
    let url = crate::support::postgres::database(test).await?;
    let nats = NatsServer::start(test)?;
    let sink = SmtpSink::start().await;
    let one = TestServer::start_cluster_node_with(quick_senders, "127.0.0.1", &url, &nats.url()).await;
    let two = TestServer::start_cluster_node_with(quick_senders, "127.0.0.1", &url, &nats.url()).await;
    let site = one.create_site("Shop").await;
    one.create_admin(ADMIN).await;
    let admin = Admin::log_in(&one).await;
    use_sink(&one, &admin, sink.port).await;
    Some(EmailNodes { url, _nats: nats, sink, one, two, site, admin })
}

#[tokio::test]
async fn a_chat_across_nodes_reaches_the_sites_webhook_once_per_event_signed_and_retried() {
    let Some(url) = crate::support::postgres::database("senders_webhooks").await else { return };
    let Some(nats) = NatsServer::start("senders_webhooks") else { return };
    let one = TestServer::start_cluster_node_with(quick_senders, "127.0.0.1", &url, &nats.url()).await;
    let two = TestServer::start_cluster_node_with(quick_senders, "127.0.0.1", &url, &nats.url()).await;
    let site = one.create_site("小店 Shop").await;
    let admin = one.admin_token(ADMIN).await;
    // The receiver fails its first three requests: they are retried by whichever node claims them.
    let mut receiver = receiver(3).await;
    let events = json!([
        "message.created",
        "conversation.created",
        "conversation.assigned",
        "conversation.closed",
        "offline_message.received",
        "conversation.rated"
    ]);
    let created =
        create_webhook(&one, &admin, &site.key, json!({"url": receiver.url, "events": events, "allow_private": true}))
            .await;
    assert_eq!(created.status(), 201);
    let webhook: Value = created.json().await.unwrap();
    let secret = webhook["secret"].as_str().unwrap().to_owned();

    one.create_agent("wang@shop.example", &site, 5).await;
    let agent_token = one.login("wang@shop.example").await;
    let mut agent = one.agent(&agent_token).await;
    let (_, visitor_token) = two.visitor_session(&site, None).await;
    let mut visitor = two.visitor(&site, &visitor_token).await;
    let ack = visitor.say(None, "v-1", "你好，我的订单到哪了？").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    loop {
        let frame = agent.expect("conversation").await;
        if frame["event"] == "assigned" && frame["conversation"]["id"] == conversation_id {
            break;
        }
    }
    agent.say(Some(conversation_id), "a-1", "Your parcel left today. 今天已发货。").await;
    let (status, closed) =
        call(&two, "POST", &format!("/api/v1/conversations/{conversation_id}/close"), &agent_token, None).await;
    assert_eq!(status, 200, "{closed}");

    // Five events, each delivered once (the failed attempts were retried), in whatever order
    // the retries' jitter gives.
    let mut by_type: HashMap<String, Vec<Value>> = HashMap::new();
    let mut ids = Vec::new();
    let mut received = 0;
    while received < 5 {
        let (headers, body) = receiver.next_within(Duration::from_secs(60)).await.expect("a delivery in time");
        verify(&headers, &body, &secret);
        ids.push(headers["webhook-id"].to_str().unwrap().to_owned());
        let body: Value = serde_json::from_str(&body).unwrap();
        by_type.entry(body["type"].as_str().unwrap().to_owned()).or_default().push(body);
        received += 1;
    }
    assert!(receiver.next_within(Duration::from_millis(1500)).await.is_none(), "nothing is delivered twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each delivery has its own id");
    let counts: HashMap<&str, usize> = by_type.iter().map(|(kind, bodies)| (kind.as_str(), bodies.len())).collect();
    let expected = HashMap::from([
        ("conversation.created", 1),
        ("message.created", 2),
        ("conversation.assigned", 1),
        ("conversation.closed", 1),
    ]);
    assert_eq!(counts, expected);

    let created = &by_type["conversation.created"][0];
    assert_eq!(created["data"]["conversation"]["id"], conversation_id);
    assert_eq!(created["data"]["conversation"]["site"], site.key.as_str());
    let mut texts: Vec<&str> =
        by_type["message.created"].iter().map(|body| body["data"]["message"]["text"].as_str().unwrap()).collect();
    texts.sort();
    assert_eq!(texts, ["Your parcel left today. 今天已发货。", "你好，我的订单到哪了？"]);
    for body in &by_type["message.created"] {
        assert_eq!(body["data"]["site"], site.key.as_str());
        assert_eq!(body["data"]["message"]["conversation_id"], conversation_id);
    }
    assert_eq!(by_type["conversation.assigned"][0]["data"]["conversation"]["status"], "assigned");
    assert_eq!(by_type["conversation.closed"][0]["data"]["conversation"]["status"], "closed");

    // Every node lists the deliveries, delivered, with the retried attempts counted.
    let path = format!("/api/v1/webhooks/{}/deliveries", webhook["id"].as_str().unwrap());
    let deliveries = loop {
        let (status, deliveries) = call(&two, "GET", &path, &admin, None).await;
        assert_eq!(status, 200, "{deliveries}");
        let listed = deliveries.as_array().unwrap().clone();
        if listed.len() == 5 && listed.iter().all(|delivery| delivery["status"] == "delivered") {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let attempts: u64 = deliveries.iter().map(|delivery| delivery["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 8, "five deliveries and three failed attempts: {deliveries:?}");
    assert!(deliveries.iter().all(|delivery| !delivery["payload"].as_str().unwrap().is_empty()));

    // An offline message through the other node: its event, and its copy in a new conversation
    // as a message marked with its id.
    leave_offline_message(&one, &site, "en", "Do you ship on weekends?").await;
    let left = receiver.expect("offline_message.received", &secret).await;
    assert_eq!(left["data"]["offline_message"]["text"], "Do you ship on weekends?");
    let copy = receiver.expect("message.created", &secret).await;
    assert_eq!(copy["data"]["message"]["text"], "Do you ship on weekends?");
    assert_eq!(copy["data"]["offline_message_id"], left["data"]["offline_message"]["id"]);
}

#[tokio::test]
async fn password_resets_offline_messages_missed_chats_and_test_emails_are_emailed_once_and_listed_on_every_node() {
    let Some(EmailNodes { url, _nats, sink, one, two, site, admin }) = email_nodes("senders_email").await else {
        return;
    };
    two.create_agent("wang@shop.example", &site, 3).await;

    let response = crate::admin::client()
        .post(two.url("/admin/forgot-password"))
        .header("accept-language", "en")
        .form(&[("email", "wang@shop.example")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let received = sink.wait_for(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.received().len(), 1, "one email, from one of the two nodes");
    assert_eq!(received[0].rcpt_to, ["wang@shop.example"]);
    let message = Parsed::new(&received[0].data);
    let text = message.part("text/plain");
    let link = text.split_whitespace().find(|word| word.contains("/admin/reset-password?token=")).expect("a link");
    let token = link.split("token=").nth(1).unwrap();

    // Sent, and the link is not kept in the outbox.
    let database = crate::support::postgres::connect(&url).await;
    let row = database
        .query_one("SELECT status, attempts, content::text FROM outbox WHERE kind = 'email'", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, String>(0).as_str(), row.get::<_, i32>(1)), ("delivered", 1));
    assert!(!row.get::<_, String>(2).contains(token), "the sent link is blanked");

    // The link works on the other node.
    let reset = crate::admin::client()
        .post(one.url("/admin/reset-password"))
        .form(&[("token", token), ("password", "a brand new password")])
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::OK);
    two.login_with("wang@shop.example", "a brand new password").await;

    // An offline message left through one node: each of the site's agents gets one email, in the
    // visitor's language, linking to the console.
    leave_offline_message(&one, &site, "zh-CN", "你们周末发货吗？").await;
    let received = sink.wait_for(4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.received().len(), 4, "nothing is sent twice");
    let mut recipients: Vec<String> = received[1..].iter().flat_map(|message| message.rcpt_to.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["admin@kefu.local", ADMIN, "wang@shop.example"]);
    let message = Parsed::new(&received[1].data);
    assert_eq!(message.header("subject"), "李雷 的新留言（Shop）");
    let text = message.part("text/plain");
    assert!(text.contains("你们周末发货吗？") && text.contains("打开客服工作台: http://127.0.0.1:"), "{text}");
    assert!(text.contains("/console"), "{text}");

    // The Email page of either node lists them, newest first, and sends a test email at once:
    // accepted in Chinese, or refused with the server's words, each kept with its outcome.
    let admin_two = Admin::log_in(&two).await;
    let (status, _, html) =
        admin_two.post_in(&two, "/admin/email/test", &[("to", "owner@shop.example")], "zh-CN").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("SMTP 服务器已接收测试邮件"), "{html}");
    assert_eq!(sink.wait_for(5).await[4].rcpt_to, ["owner@shop.example"]);
    let (status, _, html) = admin.post(&one, "/admin/email/test", &[("to", "reject@shop.example")]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(html.contains("no such mailbox here"), "{html}");
    let (status, page) = admin_two.get(&two, "/admin/email").await;
    assert_eq!(status, StatusCode::OK);
    let newest = page.find("reject@shop.example").expect("the refused test email is listed");
    let older = page.find("owner@shop.example").expect("the test email is listed");
    assert!(newest < older && page.contains("no such mailbox here"), "newest first, with the error");
    assert!(page.contains("wang@shop.example"), "the offline message's notices are listed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.received().len(), 5, "the test emails are not sent again by the senders");

    // A visitor who waits past `missed_chat_after_secs` with no answer: the site's agents are
    // told once, by one of the two nodes sweeping, however long the visitor goes on waiting.
    let (_, token) = two.visitor_session(&site, None).await;
    let mut visitor = two.visitor(&site, &token).await;
    visitor.say(None, "c1", "hello, anyone?").await;
    let received = sink.wait_for(8).await;
    let mut recipients: Vec<String> = received[5..].iter().flat_map(|message| message.rcpt_to.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["admin@kefu.local", ADMIN, "wang@shop.example"]);
    let message = Parsed::new(&received[5].data);
    assert!(message.header("subject").contains("is waiting for an answer (Shop)"), "{}", message.header("subject"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(sink.received().len(), 8, "told once");
}

#[tokio::test]
async fn an_agents_answer_through_one_node_reaches_a_lead_by_email_unless_they_read_it_in_the_chat() {
    let Some(EmailNodes { url, _nats, sink, one, two, site, .. }) = email_nodes("senders_answers").await else {
        return;
    };
    // The visitor leaves their address and chats through the second node; the agent answers
    // through the first.
    let (mut wang, token, conversation_id) = an_answer_reaches_the_lead_once(&two, &one, &site, &sink).await;

    // Back in the chat, the visitor reads the next answer there: no email for it.
    let mut visitor = two.visitor(&site, &token).await;
    let seq = wang.say(Some(conversation_id), "a2", "还有别的问题吗？").await["seq"].as_u64().unwrap();
    visitor.send(json!({"type": "read", "conversation_id": conversation_id, "seq": seq})).await;
    let database = crate::support::postgres::connect(&url).await;
    let mut skipped = false;
    for _ in 0..200 {
        let count: i64 = database
            .query_one(
                "SELECT count(*) FROM outbox WHERE kind = 'email' AND content->>'email_kind' = 'reply'
                     AND status = 'skipped'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if count == 1 {
            skipped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(skipped, "the answer read in the chat is skipped");
    assert_eq!(to_lead(&sink).len(), 1, "the answer read in the chat is not emailed");
}

#[tokio::test]
async fn transcripts_asked_through_one_node_and_sent_on_close_through_another_carry_the_history() {
    let Some(EmailNodes { _nats, sink, one, two, mut site, .. }) = email_nodes("senders_transcripts").await else {
        return;
    };
    site.transcript_on_close = true;
    site.email_language = "zh-CN".into();
    let site = kefu::sites::store::SiteStore::save(&one.app().store, site).await.unwrap();
    one.create_agent("wang@shop.example", &site, 3).await;
    let mut wang = one.agent(&one.login("wang@shop.example").await).await;
    let (_, token) = two.visitor_session(&site, None).await;
    let mut visitor = two.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v1", "How long is shipping?").await["conversation_id"].as_u64().unwrap();
    wang.expect_conversation_event(conversation_id, "assigned").await;
    wang.say(Some(conversation_id), "a1", "Two days. 两天到。").await;
    wang.send(json!({"type": "send", "client_id": "note", "conversation_id": conversation_id, "text": "VIP customer", "internal": true})).await;
    let to_lead = |sink: &SmtpSink| -> Vec<crate::email::Received> {
        sink.received().into_iter().filter(|message| message.rcpt_to == ["ada@visitor.example"]).collect()
    };
    let ask = |email: &'static str| {
        let (url, token) = (two.url(&format!("/api/v1/conversations/{conversation_id}/transcript")), token.clone());
        async move {
            crate::support::http()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"email": email, "lang": "en"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    // Asked through the second node: in the widget's language, the history without the note.
    assert_eq!(ask("not an address").await, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, stranger) = two.visitor_session(&site, None).await;
    let url = two.url(&format!("/api/v1/conversations/{conversation_id}/transcript"));
    let status = crate::support::http()
        .post(&url)
        .bearer_auth(stranger)
        .json(&json!({"email": "x@y.example"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND, "another visitor's conversation");
    assert_eq!(ask("ada@visitor.example").await, StatusCode::ACCEPTED);
    for _ in 0..200 {
        if !to_lead(&sink).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = Parsed::new(&to_lead(&sink)[0].data);
    assert_eq!(message.header("subject"), "Your chat with Shop");
    let text = message.part("text/plain");
    assert!(text.contains("How long is shipping?") && text.contains("Two days. 两天到。"), "{text}");
    assert!(!text.contains("VIP customer"), "internal notes stay out: {text}");

    // Closing through the first node sends it again, in the site's email language.
    wang.send(json!({"type": "close", "conversation_id": conversation_id})).await;
    let received = received_with_subject(&sink, "ada@visitor.example", "您与 Shop 的聊天记录").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((received.len(), to_lead(&sink).len()), (2, 2), "one asked for, one on close, each once");
}
