//! Edges of the socket protocol a client written from the docs runs into: resume positions the
//! server never had, a second resume, the first messages of an assigned conversation, frames over
//! the rate, and a client that stops reading.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer};

/// A visitor in a conversation of two messages, and the conversation's id.
async fn visitor_with_two_messages(server: &TestServer) -> (Client, u64, u64) {
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "c1", "one").await["conversation_id"].as_u64().unwrap();
    visitor.say(Some(conversation_id), "c2", "two").await;
    (visitor, conversation_id, server.epoch())
}

#[tokio::test]
async fn a_resume_ahead_of_the_server_is_reset_and_withholds_nothing() {
    let server = TestServer::start().await;
    let (mut visitor, conversation_id, epoch) = visitor_with_two_messages(&server).await;
    visitor.send(json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 50, "epoch": epoch})).await;
    let reset = visitor.expect("reset").await;
    assert_eq!(reset["reason"], "ahead_of_server");
    assert_eq!(reset["last_seq"], 2);
    // Later messages (seq 3 and on, all below the client's made-up 50) still arrive.
    let ack = visitor.say(Some(conversation_id), "c3", "three").await;
    assert_eq!(ack["seq"], 3);
}

#[tokio::test]
async fn a_second_resume_of_the_same_conversation_replays_nothing_twice() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut sender = server.visitor(&site, &token).await;
    let conversation_id = sender.say(None, "c1", "one").await["conversation_id"].as_u64().unwrap();
    sender.say(Some(conversation_id), "c2", "two").await;
    // Another tab of the same visitor, which has written nothing of the conversation yet.
    let mut visitor = server.visitor(&site, &token).await;
    let epoch = server.epoch();
    let resume = json!({"type": "resume", "conversation_id": conversation_id, "last_seq": 0, "epoch": epoch});
    visitor.send(resume.clone()).await;
    let mut replayed_seqs = Vec::new();
    loop {
        let frame = visitor.next().await;
        match frame["type"].as_str().unwrap() {
            "message" => replayed_seqs.push(frame["seq"].as_u64().unwrap()),
            "replayed" => break,
            _ => {}
        }
    }
    assert_eq!(replayed_seqs, [1, 2]);
    visitor.send(resume).await;
    let next = visitor.expect_next("replayed").await;
    assert_eq!(next["last_seq"], 2, "nothing already written is sent again");
}

#[tokio::test]
async fn the_agent_a_conversation_is_assigned_to_gets_its_first_message_live() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let mut agent = server.agent(&server.login("ann@shop.example").await).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "c1", "hello, anyone?").await["conversation_id"].as_u64().unwrap();

    // No resume: the assignment brings the messages so far, then live ones.
    let first = agent.expect("message").await;
    assert_eq!((first["conversation_id"].as_u64(), first["seq"].as_u64()), (Some(conversation_id), Some(1)));
    assert_eq!(first["text"], "hello, anyone?");
    visitor.say(Some(conversation_id), "c2", "still there?").await;
    let second = agent.expect("message").await;
    assert_eq!(second["seq"], 2);
}

#[tokio::test]
async fn a_resent_offline_queue_of_500_goes_through_in_order_without_refusals() {
    let server = TestServer::start_with(|config| {
        config.limits.frames_per_second = 200;
        config.limits.frame_burst = 20;
    })
    .await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "first", "first").await["conversation_id"].as_u64().unwrap();
    // Everything at once, as a client resends its queue after a reconnect.
    for n in 0..500 {
        let frame = json!({"type": "send", "client_id": format!("q{n}"), "conversation_id": conversation_id, "text": format!("queued {n}")});
        visitor.send_raw(Message::Text(frame.to_string().into())).await;
    }
    let mut acked = Vec::new();
    while acked.len() < 500 {
        let frame = visitor.next().await;
        match frame["type"].as_str().unwrap() {
            "ack" => acked.push(frame["client_id"].as_str().unwrap().to_owned()),
            "error" => panic!("a queued send was refused: {frame}"),
            _ => {}
        }
    }
    let expected: Vec<String> = (0..500).map(|n| format!("q{n}")).collect();
    assert_eq!(acked, expected);
}

#[tokio::test]
async fn a_flood_is_paced_not_answered_with_errors() {
    let server = TestServer::start_with(|config| {
        config.limits.frames_per_second = 20;
        config.limits.frame_burst = 40;
    })
    .await;
    let site = server.create_site("Shop").await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    for _ in 0..1800 {
        visitor.send_raw(Message::Text(json!({"type": "ping"}).to_string().into())).await;
    }
    // In one second the server reads about the burst and a second's rate, no more, and sends
    // back pongs only.
    let mut n_pongs = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut visitor.socket)).await
    {
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(frame["type"], "pong", "{frame}");
            n_pongs += 1;
        }
    }
    assert!((40..=80).contains(&n_pongs), "{n_pongs} pongs in the first second");
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_the_4008_close_after_its_backlog() {
    let server = TestServer::start_with(|config| {
        config.limits.outbound_queue = 16;
        config.limits.write_timeout_secs = 1;
    })
    .await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 2).await;
    let agent_token = server.login("ann@shop.example").await;
    // A small receive buffer, so the server's writes stall soon.
    let address = server.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address.parse().unwrap()).await.unwrap();
    let (socket, _) = tokio_tungstenite::client_async(server.ws_url("/ws/agent"), stream).await.unwrap();
    let mut agent = Client {
        socket: tokio_tungstenite::WebSocketStream::from_raw_socket(
            tokio_tungstenite::MaybeTlsStream::Plain(socket.into_inner()),
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await,
    };
    agent.send(json!({"type": "hello", "token": agent_token})).await;
    agent.expect("welcome").await;

    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "c0", "hello").await["conversation_id"].as_u64().unwrap();
    // About 8 MB for the agent, more than the socket buffers on both ends hold.
    let long_text = "x".repeat(4000);
    for batch in 0..200 {
        for n in 0..10 {
            let frame = json!({"type": "send", "client_id": format!("c{batch}-{n}"), "conversation_id": conversation_id, "text": long_text});
            visitor.send_raw(Message::Text(frame.to_string().into())).await;
        }
        for _ in 0..10 {
            visitor.expect("ack").await;
        }
    }
    // The agent reads nothing for longer than the write timeout, then reads everything.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(agent.expect_close().await, 4008);
}
