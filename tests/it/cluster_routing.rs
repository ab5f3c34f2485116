//! Cluster mode's routing lease on a real PostgreSQL 15 (support/postgres.rs), with two nodes
//! simulated as two connections: one holder per site at a time, released on shutdown and
//! expiring when its node dies; two nodes routing one site's queue at once, stalling past their
//! leases now and then, assign every conversation once and none twice.
//!
//! Each test prints one line and passes when PostgreSQL is not installed.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use kefu::chat::conversation_store::ConversationStore;
use kefu::chat::conversations::{AssignWhen, Conversation, ConversationError, ConversationStatus};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::node::NodeName;
use kefu::cluster::postgres::PostgresError;
use kefu::cluster::routing_lease;

use crate::support::postgres::{count, database, migrated_nodes, node_name as node};

const SITE: &str = "shop";

/// `n` queued conversations of `site`, oldest first; returns their ids.
async fn queue_conversations(client: &tokio_postgres::Client, site: &str, n: i64, first_visitor: i64) -> Vec<u64> {
    let rows = client
        .query(
            "INSERT INTO conversations (site, visitor_id, created_at, updated_at, last_day)
             SELECT $1, $2::bigint + n, 1000 + n, 1000 + n, 0 FROM generate_series(0::bigint, $3::bigint - 1) n
             RETURNING id",
            &[&site, &first_visitor, &n],
        )
        .await
        .expect("queue conversations");
    rows.iter().map(|row| row.get::<_, i64>(0) as u64).collect()
}

#[tokio::test]
async fn one_node_holds_a_site_until_it_releases_or_its_lease_expires() {
    let Some(url) = database("routing_lease_holder").await else { return };
    let clients = migrated_nodes(&url, 2).await;
    let (a, b) = (node("node-a"), node("node-b"));
    let lease_for = Duration::from_millis(400);

    let taken = routing_lease::take_or_renew(&clients[0], SITE, &a, lease_for).await.expect("take").expect("free");
    assert_eq!(taken.holder, "node-a");
    assert_eq!(routing_lease::take_or_renew(&clients[1], SITE, &b, lease_for).await.expect("ask"), None);
    let renewed = routing_lease::take_or_renew(&clients[0], SITE, &a, lease_for).await.expect("renew").expect("held");
    assert!(renewed.expires_at >= taken.expires_at);
    assert_eq!(renewed.taken_at, taken.taken_at, "a renewal keeps the term");
    // Another site is another lease.
    assert!(routing_lease::take_or_renew(&clients[1], "other", &b, lease_for).await.expect("take").is_some());

    // Released on shutdown: the other node takes it at once. Only the holder can release.
    assert!(!routing_lease::release(&clients[1], SITE, &b).await.expect("release someone else's"));
    assert!(routing_lease::release(&clients[0], SITE, &a).await.expect("release"));
    let after_release = routing_lease::take_or_renew(&clients[1], SITE, &b, lease_for).await.expect("take");
    assert_eq!(after_release.map(|lease| lease.holder).as_deref(), Some("node-b"));

    // A node that dies never renews: its lease expires and the other node takes the site.
    assert_eq!(routing_lease::take_or_renew(&clients[0], SITE, &a, lease_for).await.expect("ask"), None);
    tokio::time::sleep(lease_for + Duration::from_millis(100)).await;
    assert_eq!(routing_lease::current(&clients[0], SITE).await.expect("read"), None);
    let taken_over =
        routing_lease::take_or_renew(&clients[0], SITE, &a, lease_for).await.expect("take").expect("expired");
    assert_eq!(taken_over.holder, "node-a");
    assert_eq!(routing_lease::current(&clients[1], SITE).await.expect("read"), Some(taken_over));

    // Bad input is refused and changes nothing.
    let before = count(&clients[0], "routing_leases").await;
    for site in ["", "a\0b"] {
        let refused = routing_lease::take_or_renew(&clients[0], site, &a, lease_for).await;
        assert!(matches!(refused, Err(PostgresError::Invalid(_))), "{site:?}: {refused:?}");
    }
    for lease_for in [Duration::ZERO, routing_lease::LONGEST_LEASE + Duration::from_secs(1)] {
        let refused = routing_lease::take_or_renew(&clients[1], "third", &b, lease_for).await;
        assert!(matches!(refused, Err(PostgresError::Invalid(_))), "{lease_for:?}: {refused:?}");
    }
    assert!(matches!(routing_lease::queued(&clients[0], SITE, 0).await, Err(PostgresError::Invalid(_))));
    assert_eq!(count(&clients[0], "routing_leases").await, before);
}

/// A node's message store, whose routed assignments need `node`'s lease.
async fn routing_store(url: &str, node: &NodeName) -> PostgresMessages {
    let store = PostgresMessages::open(url, PostgresOptions::default()).await.expect("open the store");
    store.route_as(node.clone());
    store
}

/// What routing asks of the store: `conversation` to `agent` while it is queued.
async fn assign_queued(
    store: &PostgresMessages,
    conversation_id: u64,
    agent_id: u64,
) -> Result<Conversation, ConversationError> {
    ConversationStore::assign(store, conversation_id, agent_id, AssignWhen::Queued).await
}

#[tokio::test]
async fn a_node_that_lost_its_lease_cannot_assign_and_nothing_is_assigned_twice() {
    let Some(url) = database("routing_lost_lease").await else { return };
    let clients = migrated_nodes(&url, 2).await;
    let (a, b) = (node("node-a"), node("node-b"));
    let lease_for = Duration::from_millis(300);
    let ids = queue_conversations(&clients[0], SITE, 3, 100).await;
    let stores = [routing_store(&url, &a).await, routing_store(&url, &b).await];

    // Node a reads the queue under its lease, then stalls past it.
    routing_lease::take_or_renew(&clients[0], SITE, &a, lease_for).await.expect("take").expect("free");
    let seen_by_a = routing_lease::queued(&clients[0], SITE, 10).await.expect("queue");
    assert_eq!(seen_by_a, ids);
    tokio::time::sleep(lease_for + Duration::from_millis(100)).await;
    routing_lease::take_or_renew(&clients[1], SITE, &b, lease_for).await.expect("take").expect("expired");
    let assigned = assign_queued(&stores[1], ids[0], 7).await.expect("assign");
    assert_eq!(
        (assigned.status, assigned.assigned_agent, assigned.team),
        (ConversationStatus::Assigned, Some(7), None)
    );

    // Node a wakes up and acts on what it read: nothing it does takes effect.
    for id in &seen_by_a {
        let refused = assign_queued(&stores[0], *id, 8).await;
        assert!(
            matches!(refused, Err(ConversationError::AlreadyAssigned | ConversationError::LeaseNotHeld)),
            "{refused:?}"
        );
    }
    // Even holding the lease again, it cannot take an assigned conversation from its agent.
    routing_lease::release(&clients[1], SITE, &b).await.expect("release");
    routing_lease::take_or_renew(&clients[0], SITE, &a, lease_for).await.expect("take").expect("released");
    let twice = assign_queued(&stores[0], ids[0], 8).await;
    assert!(matches!(twice, Err(ConversationError::AlreadyAssigned)), "{twice:?}");
    let closed = ids[2];
    clients[0]
        .execute("UPDATE conversations SET status = 'closed' WHERE id = $1", &[&(closed as i64)])
        .await
        .expect("close");
    assert!(matches!(assign_queued(&stores[0], closed, 8).await, Err(ConversationError::Closed)));
    assert!(matches!(assign_queued(&stores[0], 9_999_999, 8).await, Err(ConversationError::NotFound)));
    assert!(matches!(assign_queued(&stores[0], u64::MAX, 8).await, Err(ConversationError::NotFound)));
    // An agent's own take is not routing: it needs no lease.
    let taken = ConversationStore::assign(&stores[1], ids[1], 9, AssignWhen::Open).await.expect("take");
    assert_eq!(taken.assigned_agent, Some(9));
    ConversationStore::release(&stores[1], ids[1], 9).await.expect("back to the queue");
    let agents: Vec<Option<i64>> = clients[0]
        .query("SELECT assigned_agent FROM conversations ORDER BY id", &[])
        .await
        .expect("read")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(agents, [Some(7), None, None]);
    assert_eq!(assign_queued(&stores[0], ids[1], 8).await.expect("assign").assigned_agent, Some(8));
}

/// What one routing node did.
#[derive(Default, Debug)]
struct RoutingTally {
    /// (conversation, agent) of each assignment that took effect.
    assigned: Vec<(u64, u64)>,
    refused: usize,
    turns_without_lease: usize,
}

/// One node's routing loop: under the site's lease, the queue's oldest conversations to the
/// least busy agent; now and then it stalls past its lease before acting on what it read.
async fn route_until_empty(
    client: &tokio_postgres::Client,
    url: &str,
    name: &str,
    agents: &[u64],
    lease_for: Duration,
) -> RoutingTally {
    let me = node(name);
    let store = routing_store(url, &me).await;
    let mut tally = RoutingTally::default();
    for turn in 0u64.. {
        assert!(turn < 100_000, "routing never finished: {tally:?}");
        if routing_lease::take_or_renew(client, SITE, &me, lease_for).await.expect("lease").is_none() {
            tally.turns_without_lease += 1;
            if routing_lease::queued(client, SITE, 1).await.expect("queue").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let waiting = routing_lease::queued(client, SITE, 8).await.expect("queue");
        if waiting.is_empty() {
            break;
        }
        if turn % 5 == 3 {
            tokio::time::sleep(lease_for * 2).await;
        }
        for conversation_id in waiting {
            let loads: HashMap<i64, i64> = client
                .query(
                    "SELECT assigned_agent, count(*) FROM conversations
                     WHERE site = $1 AND status = 'assigned' GROUP BY assigned_agent",
                    &[&SITE],
                )
                .await
                .expect("loads")
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let agent = *agents
                .iter()
                .min_by_key(|agent| (loads.get(&(**agent as i64)).copied().unwrap_or(0), **agent))
                .expect("agents");
            match assign_queued(&store, conversation_id, agent).await {
                Ok(conversation) => {
                    assert_eq!(conversation.assigned_agent, Some(agent));
                    tally.assigned.push((conversation_id, agent));
                }
                Err(ConversationError::AlreadyAssigned | ConversationError::LeaseNotHeld) => tally.refused += 1,
                Err(error) => panic!("{name}: {error}"),
            }
        }
    }
    let _ = routing_lease::release(client, SITE, &me).await.expect("release");
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_routing_one_queue_assign_each_conversation_once() {
    let Some(url) = database("routing_two_nodes").await else { return };
    let clients = migrated_nodes(&url, 2).await;
    let ids = queue_conversations(&clients[0], SITE, 240, 1).await;
    let elsewhere = queue_conversations(&clients[0], "other", 10, 10_000).await;
    let agents = [11, 12, 13, 14, 15];
    let lease_for = Duration::from_millis(40);

    let tallies = join_all(
        clients
            .iter()
            .enumerate()
            .map(|(n, client)| route_until_empty(client, &url, ["node-a", "node-b"][n], &agents, lease_for)),
    )
    .await;

    let mut assigned_to: HashMap<u64, Vec<u64>> = HashMap::new();
    for (conversation_id, agent) in tallies.iter().flat_map(|tally| tally.assigned.iter()) {
        assigned_to.entry(*conversation_id).or_default().push(*agent);
    }
    let twice: Vec<_> = assigned_to.iter().filter(|(_, agents)| agents.len() > 1).collect();
    assert!(twice.is_empty(), "assigned twice: {twice:?}");
    assert_eq!(assigned_to.len(), ids.len(), "every conversation was assigned");
    let rows = clients[0]
        .query("SELECT id, status, assigned_agent FROM conversations WHERE site = $1 ORDER BY id", &[&SITE])
        .await
        .expect("read");
    for row in rows {
        let (id, status, agent): (i64, String, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(status, "assigned");
        assert_eq!(agent.map(|agent| agent as u64), Some(assigned_to[&(id as u64)][0]), "conversation {id}");
    }
    assert_eq!(
        count(&clients[0], "conversations WHERE site = 'other' AND status = 'queued'").await,
        elsewhere.len() as i64
    );
    assert!(tallies.iter().all(|tally| !tally.assigned.is_empty()), "both nodes routed: {tallies:?}");
    let mut loads: HashMap<u64, usize> = HashMap::new();
    for agents in assigned_to.values() {
        *loads.entry(agents[0]).or_default() += 1;
    }
    println!(
        "routing: {} conversations, {} by node-a and {} by node-b, {} refusals, agent loads {loads:?}",
        ids.len(),
        tallies[0].assigned.len(),
        tallies[1].assigned.len(),
        tallies[0].refused + tallies[1].refused,
    );
    assert_eq!(count(&clients[0], "routing_leases").await, 0, "both released the lease");
}
