//! Assignment: least busy first, capacity respected, a queue, assignment when capacity frees.

use serde_json::{Value, json};

use crate::support::{Client, TestServer};

/// Waits for the `assigned` event of `conversation_id` on an agent's connection.
async fn assigned_to(agent: &mut Client, conversation_id: u64) -> Value {
    loop {
        let event = agent.expect("conversation").await;
        if event["event"] == "assigned" && event["conversation"]["id"] == conversation_id {
            return event;
        }
    }
}

#[tokio::test]
async fn conversations_go_to_the_least_busy_agent_with_room_and_wait_when_all_are_full() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 1).await;
    let bob_id = server.create_agent("bob@shop.example", &site, 2).await;
    let mut ann = server.agent(&server.login("ann@shop.example").await).await;
    let mut bob = server.agent(&server.login("bob@shop.example").await).await;

    let mut conversation_ids = Vec::new();
    let mut holders = Vec::new();
    for n in 0..3 {
        let (_, token) = server.visitor_session(&site, None).await;
        let mut visitor = server.visitor(&site, &token).await;
        let conversation_id = visitor.say(None, &format!("v-{n}"), "help").await["conversation_id"].as_u64().unwrap();
        // Each is assigned before the next arrives, so the order of decisions is known.
        let event = loop {
            let event = bob.expect("conversation").await;
            if event["event"] == "assigned" && event["conversation"]["id"] == conversation_id {
                break event;
            }
        };
        holders.push(event["conversation"]["assigned_agent"].as_u64().unwrap());
        conversation_ids.push(conversation_id);
    }
    // Tie at zero goes to the agent assigned least recently (both never, then by id): Ann.
    // Then Bob has fewer; then Ann is full (capacity 1), so Bob again.
    assert_eq!(holders, [ann_id, bob_id, bob_id]);

    // Everyone is full: the fourth waits in the queue.
    let (_, token) = server.visitor_session(&site, None).await;
    let mut fourth = server.visitor(&site, &token).await;
    let waiting_id = fourth.say(None, "v-4", "anyone?").await["conversation_id"].as_u64().unwrap();
    let created = loop {
        let event = ann.expect("conversation").await;
        if event["conversation"]["id"] == waiting_id {
            break event;
        }
    };
    assert_eq!(created["event"], "created");
    assert_eq!(created["conversation"]["status"], "queued");

    // Ann closes her conversation; the waiting one goes to her.
    ann.send(json!({"type": "close", "conversation_id": conversation_ids[0]})).await;
    let event = assigned_to(&mut ann, waiting_id).await;
    assert_eq!(event["conversation"]["assigned_agent"], ann_id);
    // Ann gets what the waiting visitor wrote so far, then their messages live.
    assert!(!ann.expect_replayed(waiting_id).await.is_empty());
    fourth.say(None, "v-5", "thanks").await;
    let message = ann.expect("message").await;
    assert_eq!(message["conversation_id"], waiting_id);
    assert_eq!(message["text"], "thanks");
}

#[tokio::test]
async fn a_conversation_waits_until_an_agent_comes_online() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    server.create_agent("ann@shop.example", &site, 3).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "hello?").await["conversation_id"].as_u64().unwrap();

    let ann_token = server.login("ann@shop.example").await;
    let mut ann = Client::connect(&server.ws_url("/ws/agent"), None).await;
    ann.send(json!({"type": "hello", "token": ann_token})).await;
    let welcome = ann.expect_next("welcome").await;
    assert_eq!(welcome["conversations"][0]["status"], "queued", "the queue is in the welcome");
    assigned_to(&mut ann, conversation_id).await;
    let update = visitor.expect("conversation").await;
    assert_eq!(update["event"], "assigned");
}

#[tokio::test]
async fn an_away_agent_gets_nothing_new_and_agents_can_take_queued_conversations() {
    let server = TestServer::start().await;
    let site = server.create_site("Shop").await;
    let ann_id = server.create_agent("ann@shop.example", &site, 3).await;
    let mut ann = server.agent(&server.login("ann@shop.example").await).await;
    ann.send(json!({"type": "presence", "status": "away"})).await;
    ann.send(json!({"type": "ping"})).await;
    ann.expect("pong").await;

    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v-1", "hello?").await["conversation_id"].as_u64().unwrap();
    let created = ann.expect("conversation").await;
    assert_eq!(
        (created["event"].as_str(), created["conversation"]["status"].as_str()),
        (Some("created"), Some("queued"))
    );

    ann.send(json!({"type": "take", "conversation_id": conversation_id})).await;
    let event = assigned_to(&mut ann, conversation_id).await;
    assert_eq!(event["conversation"]["assigned_agent"], ann_id);
}
