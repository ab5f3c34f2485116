//! Three cluster nodes behind a real nginx running `packaging/nginx-cluster.conf` (the tested
//! example of docs/cluster.md), on one PostgreSQL and one nats-server: a visitor and an agent
//! whose connections nginx gave to different nodes chat both ways, and the agent's console hears
//! of the conversation within a second.
//!
//! Skipped (one line) without PostgreSQL, nats-server or nginx, unless `CI` is set for nginx.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::nats::NatsServer;
use crate::support::proxy::{self, ProxiedStream};
use crate::support::{Client, TestServer};

/// The node (0, 1 or 2) holding a connection, as `holds` tells for each.
fn node_of(nodes: &[TestServer], holds: impl Fn(&TestServer) -> bool) -> Option<usize> {
    nodes.iter().position(holds)
}

#[tokio::test]
async fn behind_nginx_a_visitor_and_an_agent_on_different_nodes_chat_both_ways() {
    let Some(url) = crate::support::postgres::database("nginx_nodes").await else { return };
    let Some(nats) = NatsServer::start("nginx_nodes") else { return };
    let Some(binary) = proxy::installed(proxy::nginx_binary(), "nginx") else { return };
    let nats_url = nats.url();
    let mut nodes = Vec::new();
    for address in ["127.0.0.11", "127.0.0.12", "127.0.0.13"] {
        nodes.push(TestServer::start_cluster_node_at(address, &url, &nats_url).await);
    }
    let nginx = proxy::start_nginx_cluster(binary, [0, 1, 2].map(|index| nodes[index].addr));

    let site = nodes[0].create_site("小店 Shop").await;
    let agent_id = nodes[1].create_agent("wang@shop.example", &site, 5).await;
    let agent_token = proxy::login_through(nginx.address, "wang@shop.example").await;
    let session = proxy::post_json(nginx.address, "/api/v1/visitor/session", json!({"site": site.key})).await;
    let (visitor_id, visitor_token) =
        (session["visitor_id"].as_u64().unwrap(), session["token"].as_str().unwrap().to_owned());

    // nginx takes turns among the nodes: a second try puts the agent on another node than the
    // visitor.
    let mut visitor: Client<ProxiedStream> = proxy::client_through_proxy(
        nginx.address,
        "127.0.0.1",
        &format!("/ws/visitor?site={}", site.key),
        &visitor_token,
    )
    .await;
    let visitor_node =
        node_of(&nodes, |node| !node.app().hub.visitor_connections(visitor_id).is_empty()).expect("a node holds it");
    let mut agent = proxy::client_through_proxy(nginx.address, "127.0.0.1", "/ws/agent", &agent_token).await;
    let mut agent_node =
        node_of(&nodes, |node| !node.app().hub.agent_connections(agent_id).is_empty()).expect("a node holds it");
    if agent_node == visitor_node {
        let other = proxy::client_through_proxy(nginx.address, "127.0.0.1", "/ws/agent", &agent_token).await;
        drop(std::mem::replace(&mut agent, other));
        tokio::time::sleep(Duration::from_millis(200)).await;
        agent_node =
            node_of(&nodes, |node| !node.app().hub.agent_connections(agent_id).is_empty()).expect("a node holds it");
    }
    assert_ne!(agent_node, visitor_node, "nginx gave both connections to one node");

    // The site is online for the visitor once the nodes have shared the agent's presence.
    loop {
        let status = visitor.expect_site_status().await;
        if status["status"] == "online" {
            break;
        }
    }
    let started = Instant::now();
    let ack = visitor.say(None, "v-1", "你好，我的订单还没到").await;
    let conversation_id = ack["conversation_id"].as_u64().unwrap();
    let assigned = loop {
        let frame = agent.expect("conversation").await;
        if frame["event"] == "assigned" && frame["conversation"]["id"] == conversation_id {
            break frame;
        }
    };
    assert!(started.elapsed() < Duration::from_secs(1), "the console heard after {:?}", started.elapsed());
    assert_eq!(assigned["conversation"]["site"], site.key);
    assert_eq!(agent.expect("message").await["text"], "你好，我的订单还没到");

    let reply = agent.say(Some(conversation_id), "a-1", "Sorry about that! 我来帮您查一下。").await;
    assert_eq!(reply["seq"], 2);
    let message = visitor.expect("message").await;
    assert_eq!(
        (message["seq"].as_u64(), message["text"].as_str()),
        (Some(2), Some("Sorry about that! 我来帮您查一下。"))
    );
    let again = visitor.say(Some(conversation_id), "v-2", "Thanks, order 1042").await;
    assert_eq!(again["seq"], 3);
    assert_eq!(agent.expect("message").await["text"], "Thanks, order 1042");
    // Nothing came twice (the agent's console also gets its lists' `activity`, so only the
    // visitor's connection is quiet).
    visitor.expect_silence(Duration::from_millis(300)).await;
    drop(nginx);
}

#[test]
fn docs_cluster_shows_the_tested_nginx_configuration() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cluster.md")).unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/nginx-cluster.conf")).unwrap();
    assert!(
        docs.contains(&format!("```nginx\n{example}```")),
        "docs/cluster.md must show packaging/nginx-cluster.conf as it is"
    );
}
