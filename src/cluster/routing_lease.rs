//! Routing across nodes: one node at a time decides the assignments of a site, under a lease
//! that row `routing_leases` holds, and no conversation is ever assigned twice, whoever holds it.
//!
//! [`take_or_renew`] takes a site's lease when it is free or expired, or renews it for its
//! holder, in one atomic statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE`): two nodes
//! asking at once wait for each other on the site's key, and the second sees the first's row.
//! Expiry uses the database's clock alone, so nodes whose clocks disagree still agree on who holds
//! a site. A node that stops gives its leases back ([`release`]); one that dies keeps them only
//! until they expire. [`assign_queued`] assigns a conversation only while it is queued and
//! unassigned and its site's lease is held by the node: the conversation's row decides, so a node
//! that lost its lease without knowing it, or two holders in a row acting on the same queue, can
//! never assign one conversation twice or take it from the agent it went to.

use std::time::Duration;

use tokio_postgres::GenericClient;

use crate::base::clock;
use crate::chat::conversations::{Conversation, ConversationStatus};
use crate::cluster::messages::{CONVERSATION_COLUMNS, conversation_of};
use crate::cluster::node::{NodeName, check_name, checked_id, checked_millis};
use crate::cluster::postgres::PostgresError;

/// The longest lease: a dead node's sites wait at most this long for another node.
pub const LONGEST_LEASE: Duration = Duration::from_secs(600);

/// The most conversations [`queued`] reads at once.
pub const MAX_QUEUED_READ: usize = 1000;

/// A lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub site: String,
    pub holder: String,
    /// Unix milliseconds of the database's clock.
    pub expires_at: i64,
    pub taken_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("no such conversation")]
    NotFound,
    #[error("the conversation is no longer queued (it is {status:?}, agent {assigned_agent:?})")]
    NotQueued { status: ConversationStatus, assigned_agent: Option<u64> },
    #[error("this node does not hold the routing lease of the conversation's site")]
    LeaseNotHeld,
    #[error(transparent)]
    Postgres(#[from] PostgresError),
}

impl From<tokio_postgres::Error> for AssignError {
    fn from(error: tokio_postgres::Error) -> Self {
        AssignError::Postgres(error.into())
    }
}

/// Takes `site`'s lease for `lease_for` if it is free or expired, or renews it if `node` holds
/// it; `None` when another node holds it.
pub async fn take_or_renew(
    client: &impl GenericClient,
    site: &str,
    node: &NodeName,
    lease_for: Duration,
) -> Result<Option<Lease>, PostgresError> {
    check_name("site", site)?;
    let lease_for = checked_millis("lease", lease_for, LONGEST_LEASE)?;
    let row = client
        .query_opt(
            "INSERT INTO routing_leases AS lease (site, holder, expires_at, taken_at)
             VALUES ($1, $2, kefu_now_ms() + $3, kefu_now_ms())
             ON CONFLICT (site) DO UPDATE SET
                 holder = excluded.holder,
                 expires_at = excluded.expires_at,
                 taken_at = CASE WHEN lease.holder = excluded.holder AND lease.expires_at >= kefu_now_ms()
                                 THEN lease.taken_at ELSE excluded.taken_at END
             WHERE lease.expires_at < kefu_now_ms() OR lease.holder = excluded.holder
             RETURNING site, holder, expires_at, taken_at",
            &[&site, &node.as_str(), &lease_for],
        )
        .await?;
    row.as_ref().map(lease_of).transpose()
}

/// Gives `site`'s lease back if `node` holds it (at shutdown), so another node takes over at
/// once rather than when it expires; true when it did.
pub async fn release(client: &impl GenericClient, site: &str, node: &NodeName) -> Result<bool, PostgresError> {
    check_name("site", site)?;
    let released =
        client.execute("DELETE FROM routing_leases WHERE site = $1 AND holder = $2", &[&site, &node.as_str()]).await?;
    Ok(released == 1)
}

/// The lease of `site` while it lasts; `None` when nobody holds it or it expired.
pub async fn current(client: &impl GenericClient, site: &str) -> Result<Option<Lease>, PostgresError> {
    check_name("site", site)?;
    let row = client
        .query_opt(
            "SELECT site, holder, expires_at, taken_at FROM routing_leases
             WHERE site = $1 AND expires_at >= kefu_now_ms()",
            &[&site],
        )
        .await?;
    row.as_ref().map(lease_of).transpose()
}

/// The queued conversations of `site` waiting for an agent (not those the bot is answering),
/// oldest first, at most `limit`.
pub async fn queued(client: &impl GenericClient, site: &str, limit: usize) -> Result<Vec<u64>, PostgresError> {
    check_name("site", site)?;
    if limit == 0 || limit > MAX_QUEUED_READ {
        return Err(PostgresError::Invalid(format!("a queue read takes 1 to {MAX_QUEUED_READ} rows, not {limit}")));
    }
    let rows = client
        .query(
            "SELECT id FROM conversations
             WHERE site = $1 AND status = 'queued' AND assigned_agent IS NULL AND NOT bot_active
             ORDER BY created_at, id LIMIT $2",
            &[&site, &(limit as i64)],
        )
        .await?;
    rows.iter().map(|row| crate::cluster::messages::unsigned(row.try_get(0)?)).collect()
}

/// Assigns a queued conversation to `agent_id`, as the appliance's routing does (assigned, no
/// team, no bot), only while it is still queued and unassigned and `node` holds its site's
/// lease; returns the conversation as assigned.
pub async fn assign_queued(
    client: &impl GenericClient,
    node: &NodeName,
    conversation_id: u64,
    agent_id: u64,
) -> Result<Conversation, AssignError> {
    let Ok(id) = i64::try_from(conversation_id) else { return Err(AssignError::NotFound) };
    let agent = checked_id("agent id", agent_id)?;
    let row = client
        .query_opt(
            &format!(
                "UPDATE conversations c SET status = 'assigned', assigned_agent = $2, team = NULL,
                     bot_active = false, updated_at = $4
                 WHERE c.id = $1 AND c.status = 'queued' AND c.assigned_agent IS NULL
                   AND EXISTS (SELECT 1 FROM routing_leases l
                               WHERE l.site = c.site AND l.holder = $3 AND l.expires_at >= kefu_now_ms())
                 RETURNING {CONVERSATION_COLUMNS}"
            ),
            &[&id, &agent, &node.as_str(), &clock::now_millis()],
        )
        .await?;
    if let Some(row) = row {
        return Ok(conversation_of(&row)?);
    }
    // Why nothing changed; read after the fact, so only an explanation.
    let found =
        client.query_opt(&format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"), &[&id]).await?;
    let Some(found) = found else { return Err(AssignError::NotFound) };
    let conversation = conversation_of(&found)?;
    if conversation.status != ConversationStatus::Queued || conversation.assigned_agent.is_some() {
        return Err(AssignError::NotQueued {
            status: conversation.status,
            assigned_agent: conversation.assigned_agent,
        });
    }
    Err(AssignError::LeaseNotHeld)
}

fn lease_of(row: &tokio_postgres::Row) -> Result<Lease, PostgresError> {
    Ok(Lease { site: row.try_get(0)?, holder: row.try_get(1)?, expires_at: row.try_get(2)?, taken_at: row.try_get(3)? })
}
