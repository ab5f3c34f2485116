//! Agents' logins on the cluster's PostgreSQL: the [`AgentStore`] boundary over the `agents`,
//! `agent_emails` and `agent_sessions` record tables and the appliance's two-factor switch in
//! `appliance_meta` (migration 7), so an agent logs in through one node and is known by every
//! other. The decisions (the password check, a session's stage, expiry, a disabled agent) are
//! `people::agents`' own, made over the trait. With NATS, a logout is announced to every node,
//! which closes that session's connections. The agents' administration on the same store is
//! `cluster::agent_administration`.

use tokio_postgres::GenericClient;

use crate::base::secrets::TokenDigest;
use crate::chat::delivery::{AccessEndReason, AccessEnded};
use crate::cluster::events::{NodeEvent, Outlet};
use crate::cluster::postgres::{self, PostgresError, database, put_record, record_of};
use crate::cluster::postgres::{Readers, Writers};
use crate::people::agent_store::AgentStore;
use crate::people::agents::{self, Agent, AgentSession};
use crate::people::two_factor;
use crate::storage::StorageError;

/// Connections a node's reads and session writes take in turn.
const CONNECTIONS: usize = 2;

/// Connections kept for the administration's transactions: admins' changes are rare.
const WRITE_CONNECTIONS: usize = 1;

pub struct PostgresAgents {
    pub(super) connections: Readers,
    /// Connections for the administration's transactions (`cluster::agent_administration`).
    pub(super) writers: Writers,
    pub(super) events: Outlet,
}

impl PostgresAgents {
    /// Connects and applies the migrations the database lacks (agents need migration 7).
    pub async fn open(url: &str) -> Result<PostgresAgents, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresAgents {
            connections: Readers::new(url, CONNECTIONS),
            writers: Writers::new(url, WRITE_CONNECTIONS),
            events: Outlet::default(),
        })
    }

    /// Announces a logout to this node and the others (NATS), so every node closes that
    /// session's connections (`events::relay` hands it to each node's dispatcher).
    pub fn with_events(self, events: impl Into<Outlet>) -> PostgresAgents {
        PostgresAgents { events: events.into(), ..self }
    }

    /// The text of the one column of the row `statement` finds by `key`, if any.
    async fn one(
        &self,
        statement: &str,
        key: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Option<String>, StorageError> {
        let client = self.connections.client().await?;
        let row = client.query_opt(statement, &[key]).await.map_err(database)?;
        Ok(row.map(|row| row.get(0)))
    }
}

/// Whether the installation requires two-factor login (the appliance's switch, copied to
/// `appliance_meta`).
pub(super) async fn two_factor_required_in(client: &impl GenericClient) -> Result<bool, StorageError> {
    let row = client
        .query_opt("SELECT record::text FROM appliance_meta WHERE name = $1", &[&two_factor::REQUIRED_KEY])
        .await
        .map_err(database)?;
    Ok(row.is_some_and(|row| row.get::<_, &str>(0).trim() == "1"))
}

impl AgentStore for PostgresAgents {
    async fn get(&self, id: u64) -> Result<Option<Agent>, StorageError> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        let found = self.one("SELECT record::text FROM agents WHERE id = $1", &id).await?;
        found.map(|text| record_of("agent", &text)).transpose()
    }

    async fn get_by_email(&self, email: &str) -> Result<Option<Agent>, StorageError> {
        let Ok(email) = agents::normalise_email(email) else { return Ok(None) };
        let found = self
            .one(
                "SELECT a.record::text FROM agent_emails e JOIN agents a ON a.id = (e.record #>> '{}')::bigint
                 WHERE e.email = $1",
                &email,
            )
            .await?;
        found.map(|text| record_of("agent", &text)).transpose()
    }

    async fn two_factor_required(&self) -> Result<bool, StorageError> {
        two_factor_required_in(&*self.connections.client().await?).await
    }

    async fn insert_session(&self, digest: &TokenDigest, session: AgentSession) -> Result<(), StorageError> {
        let client = self.connections.client().await?;
        put_record(&*client, "agent_sessions", "digest", &digest.as_slice(), &session).await
    }

    async fn stored_session(&self, digest: &TokenDigest) -> Result<Option<AgentSession>, StorageError> {
        let found = self.one("SELECT record::text FROM agent_sessions WHERE digest = $1", &digest.as_slice()).await?;
        found.map(|text| record_of("agent session", &text)).transpose()
    }

    async fn end_session(&self, digest: &TokenDigest) -> Result<(), StorageError> {
        let client = self.connections.client().await?;
        let ended = client
            .query_opt("DELETE FROM agent_sessions WHERE digest = $1 RETURNING record::text", &[&digest.as_slice()])
            .await
            .map_err(database)?;
        let session: Option<AgentSession> = ended.map(|row| record_of("agent session", row.get(0))).transpose()?;
        if let Some(session) = session {
            let ended =
                AccessEnded { agent_id: session.agent_id, session: Some(*digest), reason: AccessEndReason::LoggedOut };
            self.events.announce(vec![NodeEvent::AccessEnded(ended)]).await;
        }
        Ok(())
    }
}
