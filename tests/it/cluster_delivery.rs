//! A node delivers what other nodes committed: events published on NATS (a real nats-server,
//! support/nats.rs) reach the node's own WebSocket connections through its dispatcher
//! (`Running::relay_cluster_events`), as frames of the same protocol: a message to the
//! conversation's visitor and agents (an internal note to the agents only), a conversation's
//! change, a read receipt, and nothing for what is not an event. A relayed message the connection already has
//! is not sent twice. A logout through another node (PostgreSQL's agents with NATS) closes that
//! session's connections here, and only those. An event NATS lost is read from PostgreSQL when
//! the conversation's next message or change reveals the gap, and delivered before it, or by the
//! relay's periodic sweep when nothing reveals it. A node's
//! own sends reach its relay with their connections, whose acknowledgements come in commit
//! order (a resend's as a duplicate), never twice through NATS.
//!
//! The tests print one line and pass when nats-server or PostgreSQL is not installed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use kefu::chat::conversation_store::ConversationStore;
use kefu::chat::conversations::{Conversation, ConversationStatus};
use kefu::chat::delivery::{CommittedEvent, ConnectionHandle, ConversationEvent, Outbound, Role};
use kefu::chat::message_store::MessageStore;
use kefu::chat::messages::{NewMessage, Target};
use kefu::cluster::agents::PostgresAgents;
use kefu::cluster::events::{self, ConversationChange, MessageEvent, NodeEvent};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::people::agent_store::AgentStore;
use kefu::people::agents::AgentSession;
use kefu::protocol::{ParticipantView, SenderKind, SenderView};

use crate::support::TestServer;
use crate::support::nats::NatsServer;

/// The local queue of a relay whose node commits nothing itself.
fn no_local_events() -> mpsc::Receiver<Vec<CommittedEvent>> {
    mpsc::channel(1).1
}

/// A message as another node publishes it.
fn message(conversation_id: u64, seq: u64, site: &str, sender: (u8, u64), text: &str, internal: bool) -> NodeEvent {
    NodeEvent::Message(MessageEvent {
        conversation_id,
        seq,
        created_at: 1_700_000_000_000 + seq as i64,
        sender_kind: sender.0,
        sender_id: sender.1,
        sender_name: "客服小王".into(),
        kind: "text".into(),
        internal,
        client_id: format!("other-node-{seq}"),
        text: text.into(),
        attachment: None,
        site: site.to_owned(),
        day: 20_000,
        lsn: 1_000 + seq,
        trace_id: u64::MAX - seq,
        bot_active: false,
        offline_message_id: None,
        bot_source: None,
    })
}

#[tokio::test]
async fn events_another_node_committed_reach_this_nodes_connections() {
    let Some(nats) = NatsServer::start("delivery_relay") else { return };
    let server = TestServer::start().await;
    let site = server.create_site("店").await;
    let agent_id = server.create_agent("ann@shop.example", &site, 5).await;
    let token = server.login("ann@shop.example").await;
    let (mut visitor, _, conversation_id) = server.visitor_in_conversation(&site, "你好").await;
    let mut agent = server.agent(&token).await;
    let assigned = loop {
        let event = agent.expect("conversation").await;
        if event["event"] == "assigned" {
            break event;
        }
    };
    assert_eq!(assigned["conversation"]["id"], conversation_id);
    agent.expect("replayed").await;

    let node = events::connect(&nats.url()).await.expect("this node's NATS connection");
    let relaying = server
        .running()
        .relay_cluster_events(&node, no_local_events(), Arc::new(server.store().clone()))
        .await
        .expect("relay");
    node.flush().await.unwrap();
    let other_node = events::connect(&nats.url()).await.expect("another node's NATS connection");
    other_node.publish("kefu.messages.1", "not an event".into()).await.unwrap();
    events::publish(
        &other_node,
        vec![
            message(conversation_id, 2, &site.key, (2, agent_id), "来自另一个节点的回复", false),
            message(conversation_id, 3, &site.key, (2, agent_id), "internal note", true),
        ],
    )
    .await;

    let reply = visitor.expect("message").await;
    assert_eq!(
        (reply["seq"].as_u64(), reply["text"].as_str(), reply["sender"]["kind"].as_str()),
        (Some(2), Some("来自另一个节点的回复"), Some("agent"))
    );
    for seq in [2, 3] {
        let seen = agent.expect("message").await;
        assert_eq!((seen["seq"].as_u64(), seen["conversation_id"].as_u64()), (Some(seq), Some(conversation_id)));
    }

    // A conversation's change: the visitor and the agent hear it; the note never reached the visitor.
    let stored = server.store().conversation(conversation_id).await.unwrap().expect("the conversation");
    let closed =
        Conversation { status: ConversationStatus::Closed, last_seq: 3, closed_at: Some(1_700_000_000_100), ..stored };
    // A message the connections already have, relayed again: not sent twice.
    events::publish(
        &other_node,
        vec![
            message(conversation_id, 2, &site.key, (2, agent_id), "来自另一个节点的回复", false),
            NodeEvent::Conversation(ConversationChange::Read {
                conversation_id,
                reader: ParticipantView { kind: SenderKind::Agent, id: agent_id },
                seq: 1,
            }),
            NodeEvent::Conversation(ConversationChange::Conversation {
                event: ConversationEvent::Closed { previous: Some(agent_id) },
                conversation: closed,
            }),
        ],
    )
    .await;
    let receipt = visitor.expect_next("read").await;
    assert_eq!((receipt["seq"].as_u64(), receipt["reader"]["kind"].as_str()), (Some(1), Some("agent")));
    let change = visitor.expect_next("conversation").await;
    assert_eq!((change["event"].as_str(), change["conversation"]["status"].as_str()), (Some("closed"), Some("closed")));
    let change = agent.expect("conversation").await;
    assert_eq!(change["event"], "closed");
    visitor.expect_silence(Duration::from_millis(300)).await;
    relaying.abort();
}

#[tokio::test]
async fn a_logout_through_one_node_closes_that_sessions_connections_on_another() {
    let Some(url) = crate::support::postgres::database("delivery_logout").await else { return };
    let Some(nats) = NatsServer::start("delivery_logout") else { return };
    let server = TestServer::start().await;
    let site = server.create_site("店").await;
    let agent_id = server.create_agent("ann@shop.example", &site, 5).await;
    let (kept_token, ended_token) = (server.login("ann@shop.example").await, server.login("ann@shop.example").await);
    let mut kept = server.agent(&kept_token).await;
    let mut ended = server.agent(&ended_token).await;
    let node = events::connect(&nats.url()).await.expect("this node's NATS connection");
    let relaying = server
        .running()
        .relay_cluster_events(&node, no_local_events(), Arc::new(server.store().clone()))
        .await
        .expect("relay");
    node.flush().await.unwrap();

    // Another node holds the same session in PostgreSQL and logs it out.
    let other_node = events::connect(&nats.url()).await.expect("another node's NATS connection");
    let agents = PostgresAgents::open(&url).await.unwrap().with_events(other_node);
    let digest = kefu::base::secrets::token_digest(&ended_token);
    let session = AgentSession { agent_id, created_at: 0, expires_at: i64::MAX, stage: Default::default() };
    agents.insert_session(&digest, session).await.unwrap();
    kefu::people::agents::logout(&agents, &ended_token).await.expect("logout through the other node");
    // A logout of a session that is gone announces nothing.
    kefu::people::agents::logout(&agents, &ended_token).await.expect("again");

    assert_eq!(ended.expect_close().await, kefu::protocol::close_code::UNAUTHENTICATED);
    // The agent's other session stays open.
    kept.send(serde_json::json!({"type": "ping"})).await;
    kept.expect("pong").await;
    relaying.abort();
}

#[tokio::test]
async fn a_message_nats_lost_is_read_from_postgresql_before_the_next_event() {
    let Some(url) = crate::support::postgres::database("delivery_gaps").await else { return };
    let Some(nats) = NatsServer::start("delivery_gaps") else { return };
    let server = TestServer::start().await;
    let site = server.create_site("店").await;
    let (mut visitor, _, conversation_id) = server.visitor_in_conversation(&site, "你好").await;

    // Two nodes' stores on one database: one publishes its commits, the other's never reach NATS.
    let published = PostgresMessages::open(
        &url,
        PostgresOptions { nats: Some(events::connect(&nats.url()).await.unwrap()), ..PostgresOptions::default() },
    )
    .await
    .unwrap();
    let lost = PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap();
    let node = events::connect(&nats.url()).await.expect("this node's NATS connection");
    let gaps = Arc::new(PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap());
    let relaying = server.running().relay_cluster_events(&node, no_local_events(), gaps).await.expect("relay");
    node.flush().await.unwrap();

    // The conversation in PostgreSQL bears the id of the one the visitor's connection follows.
    let database = crate::support::postgres::connect(&url).await;
    database.execute("SELECT setval('conversation_ids', $1, false)", &[&(conversation_id as i64)]).await.unwrap();
    let sender = SenderView { kind: SenderKind::Agent, id: 5, name: "客服小王".into() };
    let message = |target: Target, n: u32| {
        NewMessage::text(target, sender.clone(), format!("c-{n}"), format!("第{n}条 message {n}"))
    };
    let visitor_id = server.store().conversation(conversation_id).await.unwrap().expect("the conversation").visitor_id;
    let first = lost.append(message(Target::VisitorInbox { site: site.key.clone(), visitor_id }, 1)).await.unwrap();
    assert_eq!((first.conversation_id, first.seq), (conversation_id, 1));
    let target = Target::Conversation(conversation_id);
    published.append(message(target.clone(), 2)).await.unwrap();
    lost.append(message(target.clone(), 3)).await.unwrap();
    published.append(message(target.clone(), 4)).await.unwrap();
    for seq in [2, 3, 4] {
        let seen = visitor.expect("message").await;
        assert_eq!(
            (seen["seq"].as_u64(), seen["text"].as_str()),
            (Some(seq), Some(format!("第{seq}条 message {seq}").as_str())),
            "every message, in order"
        );
    }

    // The last message lost, and nothing after it: the relay's sweep finds it in PostgreSQL, two
    // or three sweeps after its commit.
    lost.append(message(target.clone(), 5)).await.unwrap();
    let started = std::time::Instant::now();
    let seen = visitor.expect_next("message").await;
    assert_eq!(seen["seq"].as_u64(), Some(5));
    assert!(started.elapsed() >= events::SWEEP_INTERVAL / 2, "read by a sweep, not by an event");

    // Lost again, and the conversation's next change (a close) brings it first.
    lost.append(message(target.clone(), 6)).await.unwrap();
    ConversationStore::close(&published, conversation_id).await.expect("close through the publishing node");
    let seen = visitor.expect_next("message").await;
    assert_eq!(seen["seq"].as_u64(), Some(6));
    let change = visitor.expect_next("conversation").await;
    assert_eq!((change["event"].as_str(), change["conversation"]["last_seq"].as_u64()), (Some("closed"), Some(6)));
    visitor.expect_silence(Duration::from_millis(300)).await;
    relaying.abort();
}

/// The next frame queued for a connection, as JSON, and its place in the sequence if it has one.
async fn next_queued(queue: &mut kefu::chat::delivery::OutboundReceiver) -> (serde_json::Value, Option<u64>) {
    let outbound = tokio::time::timeout(Duration::from_secs(10), queue.recv()).await.expect("a frame in time");
    let (frame, seq) = match outbound {
        Outbound::Ack { seq, frame, .. } | Outbound::Sequenced { seq, frame, .. } => (frame, Some(seq)),
        Outbound::Frame(frame) => (frame, None),
        Outbound::Subscribed { .. } => panic!("an unexpected subscription"),
    };
    (serde_json::from_slice(&frame).expect("a JSON frame"), seq)
}

#[tokio::test]
async fn a_nodes_own_sends_are_acknowledged_in_commit_order_and_delivered_once() {
    let Some(url) = crate::support::postgres::database("delivery_own_sends").await else { return };
    let Some(nats) = NatsServer::start("delivery_own_sends") else { return };
    let server = TestServer::start().await;
    let site = server.create_site("店").await;
    let (mut visitor, _, conversation_id) = server.visitor_in_conversation(&site, "你好").await;
    let visitor_id = server.store().conversation(conversation_id).await.unwrap().expect("the conversation").visitor_id;

    // This node: one NATS connection to publish and follow, its own events through its relay.
    let node = events::connect(&nats.url()).await.expect("this node's NATS connection");
    let (local, local_events) = mpsc::channel(events::LOCAL_EVENTS_CAPACITY);
    let options = PostgresOptions { nats: Some(node.clone()), local: Some(local), ..PostgresOptions::default() };
    let this_node = Arc::new(PostgresMessages::open(&url, options).await.unwrap());
    let relaying = server.running().relay_cluster_events(&node, local_events, this_node.clone()).await.expect("relay");
    node.flush().await.unwrap();
    let database = crate::support::postgres::connect(&url).await;
    database.execute("SELECT setval('conversation_ids', $1, false)", &[&(conversation_id as i64)]).await.unwrap();
    let sender = SenderView { kind: SenderKind::Agent, id: 5, name: "客服小王".into() };
    let first = NewMessage::text(
        Target::VisitorInbox { site: site.key.clone(), visitor_id },
        sender.clone(),
        "a-0".into(),
        "开始".into(),
    );
    assert_eq!(this_node.append(first).await.unwrap().conversation_id, conversation_id);

    // An agent's connection sends three messages without waiting, and a resend of the first.
    let (agent, mut agent_queue) = ConnectionHandle::new(Role::Agent, 64);
    server.app().hub.subscribe(conversation_id, &agent);
    let (refusals, mut refused) = mpsc::unbounded_channel();
    for (client_id, text) in [("a-1", "第一"), ("a-2", "second"), ("a-3", "第三"), ("a-1", "第一")] {
        let mut message =
            NewMessage::text(Target::Conversation(conversation_id), sender.clone(), client_id.into(), text.into());
        message.origin = Some(agent.clone());
        let refusals = refusals.clone();
        this_node.send(message, move |error| refusals.send(error.to_string()).unwrap()).await.expect("queued");
    }
    for (seq, client_id) in [(2, "a-1"), (3, "a-2"), (4, "a-3")] {
        let (ack, place) = next_queued(&mut agent_queue).await;
        assert_eq!(
            (ack["type"].as_str(), ack["client_id"].as_str(), ack["seq"].as_u64(), place),
            (Some("ack"), Some(client_id), Some(seq), Some(seq)),
            "acknowledged in commit order"
        );
    }
    let (resent, _) = next_queued(&mut agent_queue).await;
    assert_eq!(
        (resent["type"].as_str(), resent["seq"].as_u64(), resent["duplicate"].as_bool()),
        (Some("ack"), Some(2), Some(true))
    );
    for (seq, text) in [(2, "第一"), (3, "second"), (4, "第三")] {
        let seen = visitor.expect("message").await;
        assert_eq!((seen["seq"].as_u64(), seen["text"].as_str()), (Some(seq), Some(text)));
    }

    // A refused send is told to its sender and stores nothing.
    let mut lost =
        NewMessage::text(Target::Conversation(u64::MAX >> 1), sender.clone(), "a-9".into(), "nowhere".into());
    lost.origin = Some(agent.clone());
    this_node.send(lost, move |error| refusals.send(error.to_string()).unwrap()).await.expect("queued");
    let refusal = tokio::time::timeout(Duration::from_secs(10), refused.recv()).await.unwrap().unwrap();
    assert_eq!(refusal, "no such conversation");

    // Another node's message arrives over NATS; this node's own change is delivered once.
    let other_node = PostgresMessages::open(
        &url,
        PostgresOptions { nats: Some(events::connect(&nats.url()).await.unwrap()), ..PostgresOptions::default() },
    )
    .await
    .unwrap();
    let reply =
        NewMessage::text(Target::Conversation(conversation_id), sender.clone(), "b-1".into(), "另一个节点".into());
    other_node.append(reply).await.unwrap();
    let seen = visitor.expect("message").await;
    assert_eq!((seen["seq"].as_u64(), seen["text"].as_str()), (Some(5), Some("另一个节点")));
    ConversationStore::close(this_node.as_ref(), conversation_id).await.expect("close");
    let change = visitor.expect_next("conversation").await;
    assert_eq!(change["event"], "closed");
    visitor.expect_silence(Duration::from_millis(500)).await;
    relaying.abort();
}

#[tokio::test]
async fn a_store_without_a_local_relay_refuses_a_send_whose_acknowledgement_would_reach_nobody() {
    let Some(url) = crate::support::postgres::database("delivery_send_unrelayed").await else { return };
    let store = PostgresMessages::open(&url, PostgresOptions::default()).await.unwrap();
    let sender = SenderView { kind: SenderKind::Visitor, id: 3, name: "访客".into() };
    let message = NewMessage::text(
        Target::VisitorInbox { site: "shop".into(), visitor_id: 3 },
        sender,
        "v-1".into(),
        "你好".into(),
    );
    let (refusals, mut refused) = mpsc::unbounded_channel();
    store.send(message, move |error| refusals.send(error.to_string()).unwrap()).await.expect("answered");
    let refusal = refused.recv().await.expect("refused");
    assert!(refusal.contains("no local relay"), "{refusal}");
    let database = crate::support::postgres::connect(&url).await;
    assert_eq!(crate::support::postgres::count(&database, "messages").await, 0, "nothing stored");
}
