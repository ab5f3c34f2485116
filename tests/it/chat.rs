//! Visitor ↔ agent chat end to end.

use serde_json::json;

use crate::support::{TestServer, history};

#[tokio::test]
async fn visitor_and_agent_chat_in_real_time_across_two_visitor_tabs() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;

    let (_, visitor_token) = server.visitor_session(&site, None).await;
    let mut tab_one = server.visitor(&site, &visitor_token).await;
    let mut tab_two = server.visitor(&site, &visitor_token).await;

    let ack = tab_one.say(None, "c-1", "  Hello, is anyone there?  ").await;
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["duplicate"], false);
    assert_eq!(ack["text"], "Hello, is anyone there?");
    let conversation_id = ack["conversation_id"].as_u64().unwrap();

    // The other tab learns of the new conversation and gets the message.
    let created = tab_two.expect("conversation").await;
    assert_eq!(created["event"], "created");
    let seen = tab_two.expect("message").await;
    assert_eq!(seen["text"], "Hello, is anyone there?");
    assert_eq!(seen["sender"]["kind"], "visitor");

    // Routing assigns the conversation to the only agent online, who gets the messages so far.
    let assigned = loop {
        let event = agent.expect("conversation").await;
        if event["event"] == "assigned" {
            break event;
        }
    };
    assert_eq!(assigned["conversation"]["id"], conversation_id);
    assert_eq!(assigned["conversation"]["last_seq"], 1);
    let first = agent.expect("message").await;
    assert_eq!(first["seq"], 1);
    assert_eq!(agent.expect_next("replayed").await["last_seq"], 1);
    // A resume from 0 now sends nothing twice.
    agent
        .send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 0, "epoch": server.epoch()}))
        .await;
    assert_eq!(agent.expect_next("replayed").await["last_seq"], 1);

    let reply = agent.say(Some(conversation_id), "a-1", "Hi! How can I help?").await;
    assert_eq!(reply["seq"], 2);
    for tab in [&mut tab_one, &mut tab_two] {
        let message = tab.expect("message").await;
        assert_eq!(message["seq"], 2);
        assert_eq!(message["text"], "Hi! How can I help?");
        assert_eq!(message["sender"]["kind"], "agent");
    }

    // Both sides see the same history over HTTP.
    let page = history(&server, &visitor_token, conversation_id).await;
    let texts: Vec<&str> =
        page["messages"].as_array().unwrap().iter().map(|message| message["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Hello, is anyone there?", "Hi! How can I help?"]);
    assert_eq!(history(&server, &agent_token, conversation_id).await["last_seq"], 2);
}

#[tokio::test]
async fn internal_notes_reach_agents_only() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (mut visitor, visitor_token, conversation_id) = server.visitor_in_conversation(&site, "hi").await;
    agent.expect("conversation").await;

    let note = agent.say(Some(conversation_id), "n-1", "Hello from support").await;
    assert_eq!(note["seq"], 2);
    agent.send(json!({"type": "send", "client_id": "n-2", "conversation_id": conversation_id, "text": "note", "internal": true})).await;
    agent.expect("ack").await;
    let visible = visitor.expect("message").await;
    assert_eq!(visible["text"], "Hello from support");
    visitor.expect_silence(std::time::Duration::from_millis(300)).await;

    let page = history(&server, &visitor_token, conversation_id).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 2, "the note is not in the visitor's history");
    let page = history(&server, &agent_token, conversation_id).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 3);
    assert_eq!(page["messages"][2]["internal"], true);
}

#[tokio::test]
async fn typing_and_read_receipts_reach_the_other_side() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (visitor_id, visitor_token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &visitor_token).await;
    let conversation_id = visitor.say(None, "v-1", "hi").await["conversation_id"].as_u64().unwrap();
    agent.expect("conversation").await;
    agent
        .send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 1, "epoch": server.epoch()}))
        .await;
    agent.expect("replayed").await;

    visitor.send(json!({"type": "typing", "conversation_id": conversation_id, "active": true})).await;
    let typing = agent.expect("typing").await;
    assert_eq!(typing["sender"]["kind"], "visitor");
    assert_eq!(typing["active"], true);

    agent.send(json!({"type": "read", "conversation_id": conversation_id, "seq": 1})).await;
    let read = visitor.expect("read").await;
    assert_eq!(read["reader"]["kind"], "agent");
    assert_eq!(read["seq"], 1);

    visitor.send(json!({"type": "read", "conversation_id": conversation_id, "seq": 99})).await;
    // Every participant's connections hear of read positions, the reader's own included (other tabs).
    let read = loop {
        let read = agent.expect("read").await;
        if read["reader"]["kind"] == "visitor" {
            break read;
        }
    };
    assert_eq!(read["reader"], json!({"kind": "visitor", "id": visitor_id}));
    assert_eq!(read["seq"], 1, "a read position never passes the last message");

    // After a reload the receipts come with the history, for both sides.
    for token in [&visitor_token, &agent_token] {
        let page = crate::support::history(&server, token, conversation_id).await;
        assert_eq!((&page["visitor_read_seq"], &page["agents_read_seq"]), (&json!(1), &json!(1)), "{page}");
    }
}

#[tokio::test]
async fn a_returning_visitor_keeps_their_conversation() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (visitor_id, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "first visit").await["conversation_id"].as_u64().unwrap();
    drop(visitor);

    let (same_id, same_token) = server.visitor_session(&site, Some(&token)).await;
    assert_eq!((same_id, same_token.as_str()), (visitor_id, token.as_str()));
    let mut visitor = server.visitor(&site, &token).await;
    let ack = visitor.say(None, "v-2", "back again").await;
    assert_eq!(ack["conversation_id"], conversation_id, "the open conversation continues");
    assert_eq!(ack["seq"], 2);

    // A token of another site starts a new visitor.
    let other_site = server.create_site("Other").await;
    let (other_id, _) = server.visitor_session(&other_site, Some(&token)).await;
    assert_ne!(other_id, visitor_id);
}

#[tokio::test]
async fn an_agent_answering_one_conversation_reads_it_once_and_another_sites_stays_refused() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let other_site = server.create_site("Other").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (_visitor, _, conversation_id) = server.visitor_in_conversation(&site, "hi").await;
    agent.expect("conversation").await;
    let (mut stranger, stranger_token, foreign) = server.visitor_in_conversation(&other_site, "hello").await;

    assert_eq!(agent.say(Some(conversation_id), "a-1", "first").await["seq"], 2);
    let reads_before = server.store().n_reads();
    for n in 2..=6u64 {
        let ack = agent.say(Some(conversation_id), &format!("a-{n}"), "more").await;
        assert_eq!(ack["seq"], n + 1);
    }
    let reads = server.store().n_reads() - reads_before;
    assert!(reads < 5, "five answers to a conversation the connection knows took {reads} storage reads");

    // Another site's conversation is refused every time, whatever the connection remembers.
    for client_id in ["x-1", "x-2"] {
        agent.send(json!({"type": "send", "conversation_id": foreign, "client_id": client_id, "text": "hi"})).await;
        let refused = agent.expect("error").await;
        assert_eq!(refused["code"], "not_found");
        assert_eq!(refused["client_id"], client_id);
    }
    stranger.expect_silence(std::time::Duration::from_millis(200)).await;
    assert_eq!(history(&server, &stranger_token, foreign).await["last_seq"], 1);
}
