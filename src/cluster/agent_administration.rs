//! Agents' administration and an agent's own account on the cluster's PostgreSQL:
//! [`AgentAdministration`] and [`PasswordResetStore`] for [`PostgresAgents`], over the record
//! tables of migration 7 (`agents`, `agent_emails`, `agent_two_factor`, `agent_sessions`,
//! `appliance_meta`, `teams`) and migration 14 (`agent_ids`, `password_resets`). Each change is
//! one transaction that locks the agent's row and decides with the functions the appliance uses
//! (`people::agents`, `TwoFactorRecord`); a change that counts admins or reads every agent (an
//! admin's changes, the installation's switch) first takes an advisory lock, so two nodes cannot
//! both demote the last two admins. The connections a change ends (a password, a disabled or
//! demoted agent, two-factor login) are announced through the store's `events::Outlet` after the
//! commit, so every node closes them. A reset's email is an `outbox` row of kind email, written
//! in the reset's transaction.

use std::time::Duration;

use tokio_postgres::Transaction;

use crate::base::secrets::TokenDigest;
use crate::chat::delivery::{AccessEndReason, AccessEnded};
use crate::cluster::agents::{PostgresAgents, two_factor_required_in};
use crate::cluster::events::NodeEvent;
use crate::cluster::outbox::{self, NewOutboxRow, OutboxContent};
use crate::cluster::postgres::{self, database, put_record, record_text};
use crate::cluster::uploads;
use crate::email::OutgoingEmail;
use crate::email::password_reset::{PasswordReset, PasswordResetStore};
use crate::people::agent_administration::AgentAdministration;
use crate::people::agents::{self, Agent, AgentChanges, AgentDraft, AgentError, AgentSession};
use crate::people::avatars::AvatarError;
use crate::people::two_factor::{TwoFactorError, TwoFactorRecord};
use crate::storage::StorageError;

/// The advisory lock of changes that read every agent (the admins left, the switch's sessions).
const EVERY_AGENT_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('kefu agents'))";

fn key_of(id: u64) -> Option<i64> {
    i64::try_from(id).ok()
}

/// The agent `id`, its row locked until the transaction ends.
async fn agent_for_update(transaction: &Transaction<'_>, id: u64) -> Result<Option<Agent>, StorageError> {
    let Some(key) = key_of(id) else { return Ok(None) };
    postgres::record_where(transaction, "agent", "SELECT record::text FROM agents WHERE id = $1 FOR UPDATE", &[&key])
        .await
}

async fn store_agent(transaction: &Transaction<'_>, agent: &Agent) -> Result<(), StorageError> {
    let key = key_of(agent.id).ok_or_else(|| StorageError::Corrupt(format!("agent id {}", agent.id)))?;
    put_record(transaction, "agents", "id", &key, agent).await
}

/// Those of `sites` that exist.
async fn known_sites(transaction: &Transaction<'_>, sites: &[String]) -> Result<Vec<String>, StorageError> {
    let rows = transaction.query("SELECT key FROM sites WHERE key = ANY($1)", &[&sites]).await.map_err(database)?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Removes every session of the agent except `keep`; returns the digests removed.
async fn end_sessions_but(
    transaction: &Transaction<'_>,
    agent_id: u64,
    keep: Option<TokenDigest>,
) -> Result<Vec<TokenDigest>, StorageError> {
    let Some(key) = key_of(agent_id) else { return Ok(Vec::new()) };
    let keep = keep.map(|digest| digest.to_vec());
    let rows = transaction
        .query(
            "DELETE FROM agent_sessions WHERE (record->>'agent_id')::bigint = $1 AND digest IS DISTINCT FROM $2
             RETURNING digest",
            &[&key, &keep],
        )
        .await
        .map_err(database)?;
    rows.iter()
        .map(|row| {
            let digest: &[u8] = row.get(0);
            TokenDigest::try_from(digest).map_err(|_| StorageError::Corrupt("an agent session's digest".into()))
        })
        .collect()
}

/// The agent's two-factor state, its row locked (a default one when there is none).
async fn two_factor_for_update(transaction: &Transaction<'_>, agent_id: u64) -> Result<TwoFactorRecord, StorageError> {
    let Some(key) = key_of(agent_id) else { return Ok(TwoFactorRecord::default()) };
    let statement = "SELECT record::text FROM agent_two_factor WHERE agent_id = $1 FOR UPDATE";
    let found = postgres::record_where(transaction, "two-factor record", statement, &[&key]).await?;
    Ok(found.unwrap_or_default())
}

async fn store_two_factor(
    transaction: &Transaction<'_>,
    agent_id: u64,
    record: &TwoFactorRecord,
) -> Result<(), StorageError> {
    let key = key_of(agent_id).ok_or_else(|| StorageError::Corrupt(format!("agent id {agent_id}")))?;
    put_record(transaction, "agent_two_factor", "agent_id", &key, record).await
}

/// The database's clock, in Unix milliseconds.
async fn now_of(transaction: &Transaction<'_>) -> Result<i64, StorageError> {
    Ok(transaction.query_one("SELECT kefu_now_ms()", &[]).await.map_err(database)?.get(0))
}

impl PostgresAgents {
    /// Tells every node (this one included) to close the connections a committed change ended.
    async fn announce_ended(&self, ended: Vec<AccessEnded>) {
        if !ended.is_empty() {
            self.events.announce(ended.into_iter().map(NodeEvent::AccessEnded).collect()).await;
        }
    }
}

impl AgentAdministration for PostgresAgents {
    async fn list(&self) -> Result<Vec<Agent>, StorageError> {
        let client = self.connections.client().await?;
        postgres::records_where(&*client, "agent", "SELECT record::text FROM agents ORDER BY id", &[]).await
    }

    async fn insert(&self, draft: AgentDraft) -> Result<Agent, AgentError> {
        self.writers
            .run(async |transaction| -> Result<_, AgentError> {
                let taken = transaction
                    .query_opt("SELECT 1 FROM agent_emails WHERE email = $1", &[&draft.email()])
                    .await
                    .map_err(database)?;
                if taken.is_some() {
                    return Err(AgentError::DuplicateEmail(draft.email().to_owned()));
                }
                draft.check_sites(&known_sites(transaction, draft.sites()).await?)?;
                let row = transaction.query_one("SELECT nextval('agent_ids'), kefu_now_ms()", &[]).await.map_err(database)?;
                let (id, now): (i64, i64) = (row.get(0), row.get(1));
                let agent = draft.into_agent(id as u64, now);
                // Another node making an account for the same email at once wins here.
                let inserted = transaction
                    .execute(
                        "INSERT INTO agent_emails (email, record) VALUES ($1, to_jsonb($2::bigint)) ON CONFLICT DO NOTHING",
                        &[&agent.email, &id],
                    )
                    .await
                    .map_err(database)?;
                if inserted == 0 {
                    return Err(AgentError::DuplicateEmail(agent.email));
                }
                store_agent(transaction, &agent).await?;
                Ok(agent)
            })
            .await
    }

    async fn update(&self, id: u64, changes: AgentChanges) -> Result<Agent, AgentError> {
        let (agent, access_ended) = self
            .writers
            .run(async |transaction| -> Result<_, AgentError> {
                transaction.execute(EVERY_AGENT_LOCK, &[]).await.map_err(database)?;
                let before = agent_for_update(transaction, id).await?.ok_or(AgentError::NotFound(id.to_string()))?;
                let known_sites = known_sites(transaction, &changes.sites).await?;
                let every: Vec<Agent> =
                    postgres::records_where(transaction, "agent", "SELECT record::text FROM agents", &[]).await?;
                let other_enabled_admins =
                    every.iter().filter(|other| other.id != id && other.is_enabled_admin()).count();
                let (agent, access_ended) = before.changed(changes, &known_sites, other_enabled_admins)?;
                store_agent(transaction, &agent).await?;
                if agent.disabled {
                    end_sessions_but(transaction, id, None).await?;
                }
                Ok((agent, access_ended))
            })
            .await?;
        let ended = access_ended.map(|reason| AccessEnded { agent_id: id, session: None, reason });
        self.announce_ended(ended.into_iter().collect()).await;
        Ok(agent)
    }

    async fn replace_password(
        &self,
        agent_id: u64,
        password_hash: String,
        keep: Option<TokenDigest>,
    ) -> Result<Agent, AgentError> {
        let (agent, ended) = self
            .writers
            .run(async |transaction| -> Result<_, AgentError> {
                let mut agent =
                    agent_for_update(transaction, agent_id).await?.ok_or(AgentError::NotFound(agent_id.to_string()))?;
                agent.password_hash = password_hash;
                store_agent(transaction, &agent).await?;
                let ended = end_sessions_but(transaction, agent_id, keep).await?;
                Ok((agent, agents::password_changed(agent_id, keep, ended)))
            })
            .await?;
        self.announce_ended(ended).await;
        Ok(agent)
    }

    async fn begin_two_factor(&self, agent_id: u64, secret: String) -> Result<(), TwoFactorError> {
        self.writers
            .run(async |transaction| -> Result<_, TwoFactorError> {
                agent_for_update(transaction, agent_id).await?.ok_or(TwoFactorError::NotFound)?;
                let mut record = two_factor_for_update(transaction, agent_id).await?;
                record.begin(secret)?;
                store_two_factor(transaction, agent_id, &record).await?;
                Ok(())
            })
            .await
    }

    async fn confirm_two_factor(
        &self,
        agent_id: u64,
        session: TokenDigest,
        code: &str,
    ) -> Result<Vec<String>, AgentError> {
        self.writers
            .run(async |transaction| -> Result<_, AgentError> {
                let mut agent =
                    agent_for_update(transaction, agent_id).await?.ok_or(AgentError::NotFound(agent_id.to_string()))?;
                let mut record = two_factor_for_update(transaction, agent_id).await?;
                let statement = "SELECT record::text FROM agent_sessions WHERE digest = $1 FOR UPDATE";
                let mut stored: Option<AgentSession> =
                    postgres::record_where(transaction, "agent session", statement, &[&session.as_slice()]).await?;
                let now = now_of(transaction).await?;
                let codes = agents::confirm_two_factor_of(&mut agent, &mut record, stored.as_mut(), code, now)?;
                if let Some(stored) = &stored {
                    transaction
                        .execute(
                            "UPDATE agent_sessions SET record = $2::text::jsonb WHERE digest = $1",
                            &[&session.as_slice(), &record_text(stored)],
                        )
                        .await
                        .map_err(database)?;
                }
                store_two_factor(transaction, agent_id, &record).await?;
                store_agent(transaction, &agent).await?;
                Ok(codes)
            })
            .await
    }

    async fn remove_two_factor(
        &self,
        agent_id: u64,
        keep: Option<TokenDigest>,
        by_admin: bool,
    ) -> Result<Agent, AgentError> {
        let (agent, ended) = self
            .writers
            .run(async |transaction| -> Result<_, AgentError> {
                let required = two_factor_required_in(transaction).await?;
                let mut agent =
                    agent_for_update(transaction, agent_id).await?.ok_or(AgentError::NotFound(agent_id.to_string()))?;
                agents::remove_two_factor_of(&mut agent, required, by_admin)?;
                store_agent(transaction, &agent).await?;
                transaction
                    .execute("DELETE FROM agent_two_factor WHERE agent_id = $1", &[&(agent_id as i64)])
                    .await
                    .map_err(database)?;
                let ended = end_sessions_but(transaction, agent_id, keep).await?;
                Ok((agent, agents::sessions_ended(agent_id, ended, AccessEndReason::TwoFactorChanged)))
            })
            .await?;
        self.announce_ended(ended).await;
        Ok(agent)
    }

    async fn require_two_factor(&self, admin_id: u64, on: bool) -> Result<(), AgentError> {
        let ended = self
            .writers
            .run(async |transaction| -> Result<_, AgentError> {
                transaction.execute(EVERY_AGENT_LOCK, &[]).await.map_err(database)?;
                agents::check_require_two_factor(agent_for_update(transaction, admin_id).await?.as_ref(), on)?;
                let mut ended = Vec::new();
                if on {
                    let statement = "SELECT record::text FROM agents ORDER BY id";
                    let every: Vec<Agent> = postgres::records_where(transaction, "agent", statement, &[]).await?;
                    for agent in every.iter().filter(|agent| !agent.two_factor) {
                        if !end_sessions_but(transaction, agent.id, None).await?.is_empty() {
                            let reason = AccessEndReason::TwoFactorChanged;
                            ended.push(AccessEnded { agent_id: agent.id, session: None, reason });
                        }
                    }
                }
                transaction
                    .execute(
                        "INSERT INTO appliance_meta (name, record) VALUES ($1, to_jsonb($2::bigint))
                         ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
                        &[&crate::people::two_factor::REQUIRED_KEY, &i64::from(on)],
                    )
                    .await
                    .map_err(database)?;
                Ok(ended)
            })
            .await?;
        self.announce_ended(ended).await;
        Ok(())
    }

    async fn complete_login(&self, ticket: &str, code: &str) -> Result<Agent, AgentError> {
        let digest = crate::base::secrets::token_digest(ticket);
        self.writers
            .run(async |transaction| -> Result<_, AgentError> {
                // The agent's row first, then the session, as every other change of an agent's
                // sessions locks them: the session is read once to learn whose it is.
                let statement = "SELECT record::text FROM agent_sessions WHERE digest = $1";
                let session: Option<AgentSession> =
                    postgres::record_where(transaction, "agent session", statement, &[&digest.as_slice()]).await?;
                let Some(session) = session else { return Err(AgentError::WrongCode) };
                let agent = agent_for_update(transaction, session.agent_id).await?;
                let statement = "SELECT record::text FROM agent_sessions WHERE digest = $1 FOR UPDATE";
                let session: Option<AgentSession> =
                    postgres::record_where(transaction, "agent session", statement, &[&digest.as_slice()]).await?;
                let Some(mut session) = session else { return Err(AgentError::WrongCode) };
                let mut record = two_factor_for_update(transaction, session.agent_id).await?;
                let now = now_of(transaction).await?;
                let agent = agents::complete_login_of(&mut session, agent, &mut record, code, now)?;
                store_two_factor(transaction, agent.id, &record).await?;
                put_record(transaction, "agent_sessions", "digest", &digest.as_slice(), &session).await?;
                Ok(agent)
            })
            .await
    }

    async fn replace_avatar(&self, agent_id: u64, upload_id: Option<String>) -> Result<Agent, AvatarError> {
        self.writers
            .run(async |transaction| -> Result<_, AvatarError> {
                let mut agent = agent_for_update(transaction, agent_id).await?.ok_or(AvatarError::NotFound)?;
                let previous = std::mem::replace(&mut agent.avatar, upload_id.clone());
                store_agent(transaction, &agent).await?;
                if let Some(id) = &upload_id {
                    transaction
                        .execute("UPDATE uploads SET attached = true WHERE id = $1", &[id])
                        .await
                        .map_err(database)?;
                }
                if let Some(id) = &previous {
                    uploads::delete_in(transaction, id).await?;
                }
                Ok(agent)
            })
            .await
    }
}

impl PasswordResetStore for PostgresAgents {
    async fn insert_reset(
        &self,
        digest: TokenDigest,
        reset: PasswordReset,
        email: OutgoingEmail,
    ) -> Result<(), StorageError> {
        self.writers
            .run(async |transaction| -> Result<_, StorageError> {
                // Resets expired before this one was made go (`PasswordReset::is_live`), so the
                // table stays small.
                transaction
                    .execute(
                        "DELETE FROM password_resets WHERE (record->>'expires_at')::bigint < $1",
                        &[&reset.created_at],
                    )
                    .await
                    .map_err(database)?;
                transaction
                    .execute(
                        "INSERT INTO password_resets (digest, record) VALUES ($1, $2::text::jsonb)",
                        &[&digest.as_slice(), &record_text(&reset)],
                    )
                    .await
                    .map_err(database)?;
                let row = NewOutboxRow {
                    site: email.site.clone(),
                    content: OutboxContent::of_email(email),
                    delay: Duration::ZERO,
                };
                outbox::enqueue(transaction, &row).await?;
                Ok(())
            })
            .await
    }

    async fn password_reset(&self, digest: TokenDigest) -> Result<Option<PasswordReset>, StorageError> {
        let client = self.connections.client().await?;
        let statement = "SELECT record::text FROM password_resets WHERE digest = $1";
        postgres::record_where(&*client, "password reset", statement, &[&digest.as_slice()]).await
    }

    async fn take_reset(&self, digest: TokenDigest) -> Result<Option<PasswordReset>, StorageError> {
        let client = self.connections.client().await?;
        let statement = "DELETE FROM password_resets WHERE digest = $1 RETURNING record::text";
        postgres::record_where(&*client, "password reset", statement, &[&digest.as_slice()]).await
    }
}
