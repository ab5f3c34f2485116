//! Routing across nodes: one node at a time decides the assignments of a site, under a lease
//! that row `routing_leases` holds, and no conversation is ever assigned twice, whoever holds it.
//!
//! [`take_or_renew_all`] takes sites' leases when they are free or expired, or renews them for
//! their holder, in one atomic statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE`): two nodes
//! asking at once wait for each other on the site's key, and the second sees the first's row.
//! Expiry uses the database's clock alone, so nodes whose clocks disagree still agree on who holds
//! a site. A node that stops gives its leases back ([`release_all_but`]); one that dies keeps them
//! only until they expire. [`keep`] is a node's lease keeper: it holds the sites its router has
//! conversations waiting for and tells the router which they are. A routed assignment takes
//! effect only while the conversation is queued and the node holds its site's lease ([`holds`],
//! checked by `PostgresMessages` in the assignment's transaction under the conversation's row
//! lock): a node that lost its lease without knowing it, or two holders in a row acting on the
//! same queue, can never assign one conversation twice or take it from the agent it went to.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio_postgres::GenericClient;
use tokio_util::sync::CancellationToken;

use crate::cluster::node::{NodeName, check_name, checked_millis};
use crate::cluster::postgres::PostgresError;
use crate::routing::{Router, RoutingEvent};

/// The longest lease: a dead node's sites wait at most this long for another node.
pub const LONGEST_LEASE: Duration = Duration::from_secs(600);

/// How long a running node's leases last: a node that dies holds its sites at most this long.
pub const LEASE_FOR: Duration = Duration::from_secs(5);

/// How often a running node renews its leases and tries for the sites it lacks.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// How long a node keeps a site's lease after the site's queue emptied, so a site with steady
/// traffic keeps one router rather than the nodes racing for it at every new conversation.
pub const KEEP_IDLE: Duration = Duration::from_secs(30);

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

/// Takes `site`'s lease for `lease_for` if it is free or expired, or renews it if `node` holds
/// it; `None` when another node holds it.
pub async fn take_or_renew(
    client: &impl GenericClient,
    site: &str,
    node: &NodeName,
    lease_for: Duration,
) -> Result<Option<Lease>, PostgresError> {
    Ok(take_or_renew_all(client, &[site.to_owned()], node, lease_for).await?.pop())
}

/// [`take_or_renew`] for several sites in one statement; returns the leases `node` holds now,
/// by site.
pub async fn take_or_renew_all(
    client: &impl GenericClient,
    sites: &[String],
    node: &NodeName,
    lease_for: Duration,
) -> Result<Vec<Lease>, PostgresError> {
    for site in sites {
        check_name("site", site)?;
    }
    let lease_for = checked_millis("lease", lease_for, LONGEST_LEASE)?;
    let mut sites = sites.to_vec();
    // In one order, so two nodes taking the same sites wait for each other rather than deadlock.
    sites.sort();
    sites.dedup();
    let rows = client
        .query(
            "INSERT INTO routing_leases AS lease (site, holder, expires_at, taken_at)
             SELECT site, $2, kefu_now_ms() + $3, kefu_now_ms() FROM unnest($1::text[]) AS site ORDER BY site
             ON CONFLICT (site) DO UPDATE SET
                 holder = excluded.holder,
                 expires_at = excluded.expires_at,
                 taken_at = CASE WHEN lease.holder = excluded.holder AND lease.expires_at >= kefu_now_ms()
                                 THEN lease.taken_at ELSE excluded.taken_at END
             WHERE lease.expires_at < kefu_now_ms() OR lease.holder = excluded.holder
             RETURNING site, holder, expires_at, taken_at",
            &[&sites, &node.as_str(), &lease_for],
        )
        .await?;
    let mut leases = rows.iter().map(lease_of).collect::<Result<Vec<_>, _>>()?;
    leases.sort_by(|a, b| a.site.cmp(&b.site));
    Ok(leases)
}

/// Whether `node` holds `site`'s lease now (by the database's clock): what a routed assignment
/// checks in its transaction, under the conversation's row lock.
pub async fn holds(client: &impl GenericClient, site: &str, node: &NodeName) -> Result<bool, PostgresError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM routing_leases
                            WHERE site = $1 AND holder = $2 AND expires_at >= kefu_now_ms())",
            &[&site, &node.as_str()],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Gives back every lease `node` holds but those of `keep`; returns how many it gave back.
pub async fn release_all_but(
    client: &impl GenericClient,
    node: &NodeName,
    keep: &[String],
) -> Result<u64, PostgresError> {
    Ok(client
        .execute("DELETE FROM routing_leases WHERE holder = $1 AND site <> ALL($2::text[])", &[&node.as_str(), &keep])
        .await?)
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

fn lease_of(row: &tokio_postgres::Row) -> Result<Lease, PostgresError> {
    Ok(Lease { site: row.try_get(0)?, holder: row.try_get(1)?, expires_at: row.try_get(2)?, taken_at: row.try_get(3)? })
}

/// A cluster node's lease keeper, until `shutdown`: it takes the leases of the sites with
/// conversations waiting in its router's queues (at once when a site starts waiting, and every
/// [`RENEW_EVERY`] for those another node holds), renews them while the site waited within
/// [`KEEP_IDLE`], gives back the others, and tells its router which sites it routes. When
/// PostgreSQL cannot be reached the node routes nothing; at shutdown it gives every lease back.
pub async fn keep(url: String, node: NodeName, router: Router, shutdown: CancellationToken) {
    let mut waiting = router.waiting_sites();
    let mut wanted_at: HashMap<String, Instant> = HashMap::new();
    let mut tried_since_tick: HashSet<String> = HashSet::new();
    let mut held: BTreeSet<String> = BTreeSet::new();
    let mut client: Option<tokio_postgres::Client> = None;
    let mut interval = tokio::time::interval(RENEW_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => tried_since_tick.clear(),
            changed = waiting.changed() => {
                if changed.is_err() {
                    break;
                }
                // A site newly waiting is tried at once; the rest wait for the tick.
                let untried = waiting.borrow().iter().any(|site| !held.contains(site) && !tried_since_tick.contains(site));
                if !untried {
                    continue;
                }
            }
        }
        let now = Instant::now();
        for site in waiting.borrow_and_update().iter() {
            wanted_at.insert(site.clone(), now);
        }
        wanted_at.retain(|_, at| now.duration_since(*at) < KEEP_IDLE);
        let wanted: Vec<String> = wanted_at.keys().cloned().collect();
        tried_since_tick.extend(wanted.iter().cloned());
        let now_held = match renew(&url, &mut client, &node, &wanted, &held).await {
            Ok(now_held) => now_held,
            Err(error) => {
                tracing::warn!(%error, "routing leases could not be renewed; this node routes nothing meanwhile");
                client = None;
                BTreeSet::new()
            }
        };
        if now_held != held {
            tracing::info!(node = %node, sites = ?now_held, "this node routes these sites");
        }
        held = now_held;
        router.send(RoutingEvent::LeasesHeld { sites: held.iter().cloned().collect() }).await;
    }
    router.send(RoutingEvent::LeasesHeld { sites: HashSet::new() }).await;
    if let Some(client) = &client {
        if let Err(error) = release_all_but(client, &node, &[]).await {
            tracing::warn!(%error, "this node's routing leases could not be given back; they expire");
        }
    }
}

/// One round of [`keep`]: the leases of `wanted` taken or renewed, those of `held` no longer
/// wanted given back; returns the sites held now.
async fn renew(
    url: &str,
    client: &mut Option<tokio_postgres::Client>,
    node: &NodeName,
    wanted: &[String],
    held: &BTreeSet<String>,
) -> Result<BTreeSet<String>, PostgresError> {
    if client.as_ref().is_none_or(|client| client.is_closed()) {
        *client = Some(crate::cluster::postgres::connect(url).await?);
    }
    let connected = client.as_ref().expect("connected just above");
    let leases =
        if wanted.is_empty() { Vec::new() } else { take_or_renew_all(connected, wanted, node, LEASE_FOR).await? };
    let now_held: BTreeSet<String> = leases.into_iter().map(|lease| lease.site).collect();
    if held.iter().any(|site| !now_held.contains(site)) {
        let keep: Vec<String> = now_held.iter().cloned().collect();
        release_all_but(connected, node, &keep).await?;
    }
    Ok(now_held)
}
