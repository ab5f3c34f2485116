//! Agents' presence across nodes: each node keeps one row per (site, agent) whose connections it
//! holds, with their count and the agent's status, until an expiry its heartbeat renews.
//!
//! A node announces an agent when its connections or status change ([`announce`]), renews all
//! its rows in one statement every heartbeat ([`heartbeat`]), and removes them when it stops
//! ([`withdraw`]). A node that dies stops renewing: its agents stop counting when its rows expire,
//! while rows of the same agents on live nodes keep them present. Expiry uses the database's clock
//! alone, as the routing lease does, so nodes whose clocks disagree still agree on who is online.
//! Reads ([`agents_of`], [`site_has_online_agent`]) ignore expired rows; [`sweep_expired`]
//! deletes them.

use std::time::Duration;

use tokio_postgres::GenericClient;

use crate::cluster::node::{NodeName, check_name, checked_id, checked_millis};
use crate::cluster::postgres::PostgresError;
use crate::protocol::Presence;

/// The longest a row lasts without a heartbeat: a dead node's agents count at most this long.
pub const LONGEST_TTL: Duration = Duration::from_secs(600);

/// An agent present on at least one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPresence {
    pub agent_id: u64,
    /// Online if any node says so, away otherwise.
    pub status: Presence,
    /// Its connections on all nodes.
    pub connections: u64,
    /// The nodes holding them, by name.
    pub nodes: Vec<String>,
}

/// What a node says of one agent's presence through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announced {
    pub status: Presence,
    /// Their connections through the node.
    pub connections: u32,
    /// Whether they take new conversations through the node (online, a connection open).
    pub accepting: bool,
}

/// Records that `node` holds `agent_id`'s connections for `site` as `announced` says, for `ttl`;
/// no connections, or `Presence::Offline`, removes the node's row.
pub async fn announce(
    client: &impl GenericClient,
    node: &NodeName,
    site: &str,
    agent_id: u64,
    announced: Announced,
    ttl: Duration,
) -> Result<(), PostgresError> {
    let Announced { status, connections, accepting } = announced;
    check_name("site", site)?;
    let ttl = checked_millis("presence's time to live", ttl, LONGEST_TTL)?;
    let agent = checked_id("agent id", agent_id)?;
    let status = match status {
        Presence::Online => Some("online"),
        Presence::Away => Some("away"),
        Presence::Offline => None,
    };
    let Some(status) = status.filter(|_| connections > 0) else {
        client
            .execute(
                "DELETE FROM agent_presence WHERE site = $1 AND agent_id = $2 AND node = $3",
                &[&site, &agent, &node.as_str()],
            )
            .await?;
        return Ok(());
    };
    let connections = i32::try_from(connections)
        .map_err(|_| PostgresError::Invalid(format!("{connections} connections are out of range")))?;
    client
        .execute(
            "INSERT INTO agent_presence (site, agent_id, node, connections, status, expires_at, accepting)
             VALUES ($1, $2, $3, $4, $5, kefu_now_ms() + $6, $7)
             ON CONFLICT (site, agent_id, node) DO UPDATE SET
                 connections = excluded.connections, status = excluded.status, expires_at = excluded.expires_at,
                 accepting = excluded.accepting",
            &[&site, &agent, &node.as_str(), &connections, &status, &ttl, &accepting],
        )
        .await?;
    Ok(())
}

/// Renews every row of `node` for `ttl` (the node's heartbeat); returns how many.
pub async fn heartbeat(client: &impl GenericClient, node: &NodeName, ttl: Duration) -> Result<u64, PostgresError> {
    let ttl = checked_millis("presence's time to live", ttl, LONGEST_TTL)?;
    Ok(client
        .execute("UPDATE agent_presence SET expires_at = kefu_now_ms() + $2 WHERE node = $1", &[&node.as_str(), &ttl])
        .await?)
}

/// Removes every row of `node` (a clean stop), so its agents stop counting at once; returns how
/// many.
pub async fn withdraw(client: &impl GenericClient, node: &NodeName) -> Result<u64, PostgresError> {
    Ok(client.execute("DELETE FROM agent_presence WHERE node = $1", &[&node.as_str()]).await?)
}

/// The agents of `site` present on any node, by id.
pub async fn agents_of(client: &impl GenericClient, site: &str) -> Result<Vec<AgentPresence>, PostgresError> {
    check_name("site", site)?;
    let rows = client
        .query(
            "SELECT agent_id, bool_or(status = 'online'), sum(connections)::bigint, array_agg(node ORDER BY node)
             FROM agent_presence WHERE site = $1 AND expires_at >= kefu_now_ms()
             GROUP BY agent_id ORDER BY agent_id",
            &[&site],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let online: bool = row.try_get(1)?;
            Ok(AgentPresence {
                agent_id: crate::cluster::messages::unsigned(row.try_get(0)?)?,
                status: if online { Presence::Online } else { Presence::Away },
                connections: crate::cluster::messages::unsigned(row.try_get(2)?)?,
                nodes: row.try_get(3)?,
            })
        })
        .collect()
}

/// Whether an agent of `site` is online on any node: the site's status for its visitors.
pub async fn site_has_online_agent(client: &impl GenericClient, site: &str) -> Result<bool, PostgresError> {
    check_name("site", site)?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM agent_presence
                            WHERE site = $1 AND status = 'online' AND expires_at >= kefu_now_ms())",
            &[&site],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Deletes the rows that expired (dead nodes'); returns how many.
pub async fn sweep_expired(client: &impl GenericClient) -> Result<u64, PostgresError> {
    Ok(client.execute("DELETE FROM agent_presence WHERE expires_at < kefu_now_ms()", &[]).await?)
}
