//! Cluster mode's agent presence on a real PostgreSQL 15 (support/postgres.rs), with nodes
//! simulated as connections: an agent present through one node is seen from every node, its
//! status is online while any node says so, a dead node's rows stop counting when they expire
//! while a live node's heartbeat keeps its own, and bad input writes nothing.
//!
//! Each test prints one line and passes when PostgreSQL is not installed.

use std::time::Duration;

use kefu::cluster::postgres::PostgresError;
use kefu::cluster::presence::{self, AgentPresence, Announced};
use kefu::protocol::Presence;

use crate::support::postgres::{count, database, migrated_nodes, node_name as node};

const SITE: &str = "shop";
const TTL: Duration = Duration::from_secs(30);

/// An agent's presence through a node with `connections` open, taking conversations when online.
fn announced(status: Presence, connections: u32) -> Announced {
    Announced { status, connections, accepting: status == Presence::Online }
}

#[tokio::test]
async fn an_agent_on_any_node_is_seen_from_every_node_and_online_while_one_node_says_so() {
    let Some(url) = database("presence_seen").await else { return };
    let clients = migrated_nodes(&url, 2).await;
    let (a, b) = (node("node-a"), node("node-b"));
    assert!(!presence::site_has_online_agent(&clients[1], SITE).await.expect("read"));

    presence::announce(&clients[0], &a, SITE, 7, announced(Presence::Away, 1), TTL).await.expect("away on a");
    assert_eq!(
        presence::agents_of(&clients[1], SITE).await.expect("read from b"),
        [AgentPresence { agent_id: 7, status: Presence::Away, connections: 1, nodes: vec!["node-a".into()] }]
    );
    assert!(!presence::site_has_online_agent(&clients[1], SITE).await.expect("read"), "away is not online");

    // A second tab through the other node, online: the agent is online, with both connections.
    presence::announce(&clients[1], &b, SITE, 7, announced(Presence::Online, 2), TTL).await.expect("online on b");
    assert_eq!(
        presence::agents_of(&clients[0], SITE).await.expect("read from a"),
        [AgentPresence {
            agent_id: 7,
            status: Presence::Online,
            connections: 3,
            nodes: vec!["node-a".into(), "node-b".into()]
        }]
    );
    assert!(presence::site_has_online_agent(&clients[0], SITE).await.expect("read"));
    assert!(presence::agents_of(&clients[0], "another-site").await.expect("read").is_empty());

    // Its tabs on b close: only a's away remains.
    presence::announce(&clients[1], &b, SITE, 7, announced(Presence::Online, 0), TTL).await.expect("closed on b");
    assert!(!presence::site_has_online_agent(&clients[0], SITE).await.expect("read"));
    presence::announce(&clients[0], &a, SITE, 7, announced(Presence::Offline, 1), TTL).await.expect("offline on a");
    assert!(presence::agents_of(&clients[0], SITE).await.expect("read").is_empty());
    assert_eq!(count(&clients[0], "agent_presence").await, 0);
}

#[tokio::test]
async fn a_dead_nodes_agents_expire_while_a_live_nodes_heartbeat_keeps_its_own() {
    let Some(url) = database("presence_expiry").await else { return };
    let clients = migrated_nodes(&url, 2).await;
    let (a, b) = (node("node-a"), node("node-b"));
    let short = Duration::from_millis(1000);
    presence::announce(&clients[0], &a, SITE, 1, announced(Presence::Online, 1), short).await.expect("1 on a");
    presence::announce(&clients[1], &b, SITE, 2, announced(Presence::Online, 1), short).await.expect("2 on b");
    presence::announce(&clients[0], &a, SITE, 3, announced(Presence::Online, 1), short).await.expect("3 on a");
    presence::announce(&clients[1], &b, SITE, 3, announced(Presence::Away, 1), short).await.expect("3 on b");

    // Node a dies (no more heartbeats); node b's heartbeat renews its rows.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(presence::heartbeat(&clients[1], &b, short).await.expect("heartbeat"), 2);
    }
    let present = presence::agents_of(&clients[1], SITE).await.expect("read");
    assert_eq!(
        present,
        [
            AgentPresence { agent_id: 2, status: Presence::Online, connections: 1, nodes: vec!["node-b".into()] },
            AgentPresence { agent_id: 3, status: Presence::Away, connections: 1, nodes: vec!["node-b".into()] },
        ],
        "agent 1 went with node a, and agent 3 is away: only b says so now"
    );
    assert_eq!(presence::sweep_expired(&clients[1]).await.expect("sweep"), 2);
    assert_eq!(count(&clients[1], "agent_presence").await, 2);

    // A clean stop removes a node's rows at once.
    assert_eq!(presence::withdraw(&clients[1], &b).await.expect("withdraw"), 2);
    assert!(!presence::site_has_online_agent(&clients[0], SITE).await.expect("read"));
}

#[tokio::test]
async fn bad_presence_input_is_refused_and_writes_nothing() {
    let Some(url) = database("presence_bad_input").await else { return };
    let clients = migrated_nodes(&url, 2).await;
    let a = node("node-a");
    let refused = [
        presence::announce(&clients[0], &a, "", 1, announced(Presence::Online, 1), TTL).await,
        presence::announce(&clients[0], &a, "bad\nsite", 1, announced(Presence::Online, 1), TTL).await,
        presence::announce(&clients[0], &a, SITE, u64::MAX, announced(Presence::Online, 1), TTL).await,
        presence::announce(&clients[0], &a, SITE, 1, announced(Presence::Online, 1), Duration::ZERO).await,
        presence::announce(&clients[0], &a, SITE, 1, announced(Presence::Online, 1), presence::LONGEST_TTL * 2).await,
        presence::announce(&clients[0], &a, SITE, 1, announced(Presence::Online, u32::MAX), TTL).await,
    ];
    for outcome in refused {
        assert!(matches!(outcome, Err(PostgresError::Invalid(_))), "{outcome:?}");
    }
    assert!(matches!(presence::heartbeat(&clients[0], &a, Duration::ZERO).await, Err(PostgresError::Invalid(_))));
    assert!(matches!(presence::agents_of(&clients[0], "").await, Err(PostgresError::Invalid(_))));
    assert_eq!(count(&clients[0], "agent_presence").await, 0);
}
