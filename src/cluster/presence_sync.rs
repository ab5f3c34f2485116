//! A node's part in the cluster's presence: every [`SYNC_INTERVAL`] it writes the agents its
//! router counts present, online or away (`cluster::presence` rows, which expire unless renewed),
//! and reads the other nodes' rows: the sites with an agent online elsewhere, which its router
//! adds to the sites' status, the agents present elsewhere, and those taking conversations there
//! (with their records' sites and capacity), whom its router routes to under a site's lease. So a
//! visitor on one node sees the site online while its agents are connected to another, and an
//! agent who reconnected through another node keeps their conversations when this node's grace
//! ends. An admin serves every site: their row's site is [`EVERY_SITE`].

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::node::NodeName;
use crate::cluster::postgres::{self, PostgresError};
use crate::cluster::presence::{self, Announced};
use crate::people::agents::{Agent, Role};
use crate::protocol::Presence;
use crate::routing::{AcceptingAgent, OnlineElsewhere, Router};

/// How often a node writes its agents and reads the others'.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How long a node's rows count without a renewal: a node that dies stops counting after it.
pub const PRESENCE_TTL: Duration = Duration::from_secs(10);

/// Every this many rounds, the rows of nodes that died (expired) are deleted.
const SWEEP_EVERY: u64 = 60;

/// The site of an admin's row: every site.
pub const EVERY_SITE: &str = "*";

/// Keeps this node's agents in the cluster's presence and its router told of the other nodes'
/// until `shutdown`, then removes this node's rows.
pub async fn run(url: String, node: NodeName, router: Router, shutdown: CancellationToken) {
    let mut client = None;
    let mut announced: HashMap<(String, u64), Announced> = HashMap::new();
    let mut rounds: u64 = 0;
    let mut interval = tokio::time::interval(SYNC_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        if client.as_ref().is_none_or(|client: &tokio_postgres::Client| client.is_closed()) {
            client = match postgres::connect(&url).await {
                Ok(connected) => Some(connected),
                Err(error) => {
                    tracing::warn!(%error, "agents' presence: PostgreSQL is unreachable");
                    continue;
                }
            };
            // A new connection may follow a failure half-way, or this node's name may have rows
            // of an earlier run that died: they go, and every row is written again.
            announced.clear();
            if let Some(connected) = &client {
                if let Err(error) = presence::withdraw(connected, &node).await {
                    tracing::warn!(%error, "this node's earlier presence rows could not be removed");
                    client = None;
                    continue;
                }
            }
        }
        let Some(connected) = &client else { continue };
        if let Err(error) = sync_once(connected, &node, &router, &mut announced).await {
            tracing::warn!(%error, "agents' presence could not be synchronised");
        }
        rounds += 1;
        if rounds % SWEEP_EVERY == 0 {
            if let Err(error) = presence::sweep_expired(connected).await {
                tracing::warn!(%error, "expired presence rows could not be swept");
            }
        }
    }
    if let Some(client) = &client {
        if let Err(error) = presence::withdraw(client, &node).await {
            tracing::warn!(%error, "this node's agents' presence could not be removed");
        }
    }
}

/// One round: this node's changes and renewal written, the other nodes' read.
async fn sync_once(
    client: &tokio_postgres::Client,
    node: &NodeName,
    router: &Router,
    announced: &mut HashMap<(String, u64), Announced>,
) -> Result<(), PostgresError> {
    let here: HashMap<(String, u64), Announced> = router
        .present_here()
        .into_iter()
        .flat_map(|(agent, status, accepting)| {
            let sites = match agent.role {
                Role::Admin => vec![EVERY_SITE.to_owned()],
                Role::Agent => agent.sites.clone(),
            };
            let announced = Announced { status, connections: 1, accepting };
            sites.into_iter().map(move |site| ((site, agent.id), announced))
        })
        .collect();
    for (key, now) in &here {
        if announced.get(key) != Some(now) {
            presence::announce(client, node, &key.0, key.1, *now, PRESENCE_TTL).await?;
        }
    }
    let gone = Announced { status: Presence::Offline, connections: 0, accepting: false };
    for (site, agent_id) in announced.keys().filter(|key| !here.contains_key(*key)) {
        presence::announce(client, node, site, *agent_id, gone, PRESENCE_TTL).await?;
    }
    *announced = here;
    presence::heartbeat(client, node, PRESENCE_TTL).await?;
    let rows = client
        .query(
            "SELECT site, agent_id, status = 'online', accepting FROM agent_presence
             WHERE node <> $1 AND expires_at >= kefu_now_ms()",
            &[&node.as_str()],
        )
        .await?;
    let mut elsewhere = OnlineElsewhere::default();
    let mut accepting = BTreeSet::new();
    for row in rows {
        let site: String = row.try_get(0)?;
        let agent_id = crate::cluster::messages::unsigned(row.try_get(1)?)?;
        // Away agents are present (they keep their conversations), but do not make a site online.
        let online = row.try_get::<_, bool>(2)?;
        elsewhere.agent_sites.entry(agent_id).or_default().push(site.clone());
        let status = elsewhere.agents.entry(agent_id).or_insert(Presence::Away);
        if !online {
            continue;
        }
        *status = Presence::Online;
        if row.try_get::<_, bool>(3)? {
            accepting.insert(agent_id as i64);
        }
        if site == EVERY_SITE {
            elsewhere.every_site = true;
        } else {
            elsewhere.sites.insert(site);
        }
    }
    for sites in elsewhere.agent_sites.values_mut() {
        sites.sort();
        sites.dedup();
    }
    elsewhere.accepting = accepting_agents(client, accepting).await?;
    router.set_online_elsewhere(elsewhere).await;
    Ok(())
}

/// The agents of `ids` as their records say now (sites, capacity), the disabled left out.
async fn accepting_agents(
    client: &tokio_postgres::Client,
    ids: BTreeSet<i64>,
) -> Result<Vec<AcceptingAgent>, PostgresError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = ids.into_iter().collect();
    let rows = client.query("SELECT record::text FROM agents WHERE id = ANY($1) ORDER BY id", &[&ids]).await?;
    let mut agents = Vec::with_capacity(rows.len());
    for row in rows {
        let agent: Agent =
            serde_json::from_str(row.try_get(0)?).map_err(|error| PostgresError::Corrupt(format!("agent: {error}")))?;
        if !agent.disabled {
            agents.push(AcceptingAgent::of(&agent));
        }
    }
    Ok(agents)
}
