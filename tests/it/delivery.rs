//! The delivery contract: acknowledged means durable, resends are deduplicated, resume bridges
//! disconnections with no gap and no duplicate.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, history, read_to_clean_end};

#[tokio::test]
async fn a_resent_client_id_stores_nothing_new_even_after_a_restart() {
    let mut server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;

    let first = visitor.say(None, "same-id", "only once").await;
    let again = visitor.say(None, "same-id", "only once").await;
    assert_eq!(again["duplicate"], true);
    for field in ["conversation_id", "seq", "created_at", "text"] {
        assert_eq!(first[field], again[field], "{field}");
    }
    drop(visitor);

    server.restart().await;
    let mut visitor = server.visitor(&site, &token).await;
    let after_restart = visitor.say(None, "same-id", "only once").await;
    assert_eq!(after_restart["duplicate"], true);
    assert_eq!(after_restart["seq"], first["seq"]);
    let next = visitor.say(None, "new-id", "second").await;
    assert_eq!(next["seq"], 2);

    let conversation_id = first["conversation_id"].as_u64().unwrap();
    let page = history(&server, &token, conversation_id).await;
    let texts: Vec<&str> =
        page["messages"].as_array().unwrap().iter().map(|message| message["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["only once", "second"]);
}

#[tokio::test]
async fn a_visitor_who_dropped_gets_exactly_the_missed_messages_in_order_then_live_ones() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let ack = visitor.say(None, "v-1", "hello").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    agent.expect("conversation").await;
    drop(visitor);

    for n in 1..=10 {
        agent.say(Some(conversation_id), &format!("a-{n}"), &format!("reply {n}")).await;
    }

    let mut visitor =
        crate::support::Client::connect(&server.ws_url(&format!("/ws/visitor?site={}", site.key)), None).await;
    visitor.send(json!({"type": "hello", "token": token, "resume": [{"conversation_id": conversation_id, "last_seq": 1, "epoch": server.epoch()}]})).await;
    visitor.expect_next("welcome").await;
    for n in 1..=10u64 {
        let message = visitor.expect_next("message").await;
        assert_eq!(message["seq"], n + 1);
        assert_eq!(message["text"], format!("reply {n}"));
    }
    assert_eq!(visitor.expect_next("replayed").await["last_seq"], 11);

    agent.say(Some(conversation_id), "a-live", "live again").await;
    let live = visitor.expect_next("message").await;
    assert_eq!(live["seq"], 12);
}

#[tokio::test]
async fn resuming_while_messages_keep_arriving_has_no_gap_and_no_duplicate() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 5).await;
    let agent_token = server.login("ann@shop.example").await;
    let mut agent = server.agent(&agent_token).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "hello").await["conversation_id"].as_u64().unwrap();
    // Wait for the assignment, so its event cannot reach the resumed connection below.
    while agent.expect("conversation").await["event"] != "assigned" {}
    drop(visitor);

    // The agent keeps sending (pipelined, acks read later) while the visitor resumes.
    const N: u64 = 200;
    let sender = tokio::spawn(async move {
        for n in 0..N {
            agent.send(json!({"type": "send", "client_id": format!("a-{n}"), "conversation_id": conversation_id, "text": format!("m{n}")})).await;
        }
        for _ in 0..N {
            agent.expect("ack").await;
        }
    });
    let mut visitor =
        crate::support::Client::connect(&server.ws_url(&format!("/ws/visitor?site={}", site.key)), None).await;
    visitor.send(json!({"type": "hello", "token": token, "resume": [{"conversation_id": conversation_id, "last_seq": 1, "epoch": server.epoch()}]})).await;
    let mut expected_seq = 2;
    while expected_seq <= N + 1 {
        let frame = visitor.next().await;
        match frame["type"].as_str().unwrap() {
            "message" => {
                assert_eq!(frame["seq"], expected_seq, "messages arrive in order, each once");
                expected_seq += 1;
            }
            "welcome" | "replayed" => {}
            other => panic!("unexpected frame {other}: {frame}"),
        }
    }
    sender.await.unwrap();
}

#[tokio::test]
async fn a_client_too_far_behind_or_from_another_epoch_is_told_to_reload() {
    let server = TestServer::start_with(|config| config.limits.replay_limit = 5).await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let mut conversation_id = 0;
    for n in 0..8 {
        conversation_id = visitor.say(None, &format!("v-{n}"), "text").await["conversation_id"].as_u64().unwrap();
    }
    visitor
        .send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 1, "epoch": server.epoch()}))
        .await;
    let reset = visitor.expect_next("reset").await;
    assert_eq!(reset["reason"], "too_far_behind");
    assert_eq!(reset["last_seq"], 8);

    visitor
        .send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 7, "epoch": server.epoch() + 1}))
        .await;
    let reset = visitor.expect_next("reset").await;
    assert_eq!(reset["reason"], "epoch_changed");

    visitor
        .send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 6, "epoch": server.epoch()}))
        .await;
    assert_eq!(visitor.expect_next("message").await["seq"], 7);
    assert_eq!(visitor.expect_next("message").await["seq"], 8);
    assert_eq!(visitor.expect_next("replayed").await["last_seq"], 8);
}

#[tokio::test]
async fn history_pages_walk_back_with_a_cursor() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let mut conversation_id = 0;
    for n in 1..=7 {
        conversation_id =
            visitor.say(None, &format!("v-{n}"), &format!("m{n}")).await["conversation_id"].as_u64().unwrap();
    }
    let mut seen = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut url = server.url(&format!("/api/v1/conversations/{conversation_id}/messages?limit=3"));
        if let Some(before) = before {
            url.push_str(&format!("&before={before}"));
        }
        let page: serde_json::Value =
            crate::support::http().get(url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        let seqs: Vec<u64> =
            page["messages"].as_array().unwrap().iter().map(|message| message["seq"].as_u64().unwrap()).collect();
        seen.splice(0..0, seqs);
        match page["next_before"].as_u64() {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, (1..=7).collect::<Vec<u64>>());
}

#[tokio::test]
async fn shutdown_sends_goaway_and_a_restart_close_code() {
    let mut server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.say(None, "v-1", "before shutdown").await;
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    let goaway = visitor.expect("goaway").await;
    assert_eq!(goaway["reason"], "shutdown");
    assert_eq!(visitor.expect_close().await, 1012);
    let mut server = stopping.await.unwrap();
    server.restart().await;
    let mut visitor = server.visitor(&site, &token).await;
    assert_eq!(visitor.say(None, "v-2", "after restart").await["seq"], 2);
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(|config| {
        config.limits.heartbeat_secs = 1;
        config.limits.idle_timeout_secs = 2;
    })
    .await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    // Not reading means not answering pings; the server gives up after the idle timeout.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(visitor.expect_close().await, 4010);
}

#[tokio::test]
async fn a_client_that_closes_gets_the_servers_answer_then_a_clean_end() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.send_raw(Message::Close(None)).await;
    let (_, close_code) = read_to_clean_end(&mut visitor.socket).await;
    assert!(close_code.is_some(), "the server answers the client's close");
}

#[tokio::test]
async fn a_client_still_sending_at_shutdown_gets_goaway_and_a_clean_close() {
    let mut server = TestServer::start_with(|config| {
        config.limits.frames_per_second = 1_000_000;
        config.limits.frame_burst = 1_000_000;
    })
    .await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let visitor = server.visitor(&site, &token).await;
    let (mut sink, mut stream) = visitor.socket.split();
    // Frames keep coming while the server closes, so its socket holds input it has not read.
    let ping = json!({"type": "ping"}).to_string();
    let sending = tokio::spawn(async move {
        while sink.send(Message::Text(ping.clone().into())).await.is_ok() {
            tokio::task::yield_now().await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(async move { server.stop().await });
    let (texts, close_code) = read_to_clean_end(&mut stream).await;
    assert!(texts.iter().any(|text| text.contains("\"goaway\"")));
    assert_eq!(close_code, Some(1012));
    stopping.await.unwrap();
    sending.await.unwrap();
}
