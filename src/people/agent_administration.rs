//! The agents' storage boundary for their administration and an agent's own account: the list,
//! a new agent, an admin's changes, a password replaced, two-factor enrolment and removal, the
//! installation's two-factor switch and an agent's picture. It extends [`AgentStore`] (logging
//! in), which every transport needs, with what only the admin pages, the account API and the
//! control socket change. The decisions are `people::agents`' and `people::two_factor`'s, shared
//! by every backend: `AgentDraft` (a new agent checked), `Agent::changed` (an admin's changes, the
//! last enabled admin kept, why connections end), `agents::password_changed` and
//! `agents::sessions_ended` (which connections end), `agents::confirm_two_factor_of`,
//! `agents::remove_two_factor_of`, `agents::check_require_two_factor` and `TwoFactorRecord`'s
//! methods. [`Store`] implements it with writer operations; the cluster's PostgreSQL in
//! `cluster::agent_administration`.

use std::future::Future;

use redb::ReadableTable;

use crate::base::secrets::TokenDigest;
use crate::chat::delivery::{AccessEndReason, AccessEnded, CommittedEvent};
use crate::chat::uploads::{self, Upload};
use crate::chat::writes::ChatWrites;
use crate::people::agent_store::AgentStore;
use crate::people::agents::{self, Agent, AgentChanges, AgentDraft, AgentError, AgentSession};
use crate::people::avatars::AvatarError;
use crate::people::two_factor::{self, TwoFactorError};
use crate::storage::writer::Counter;
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

pub trait AgentAdministration: AgentStore {
    /// Every agent, by id.
    fn list(&self) -> impl Future<Output = Result<Vec<Agent>, StorageError>> + Send;

    /// Stores a new agent with the next id; refused for an email that has an account and for a
    /// site that does not exist (`AgentDraft::check_sites`).
    fn insert(&self, draft: AgentDraft) -> impl Future<Output = Result<Agent, AgentError>> + Send;

    /// Makes an admin's changes (`Agent::changed`); disabling ends every session of the
    /// agent, and a change of rights their live connections.
    fn update(&self, id: u64, changes: AgentChanges) -> impl Future<Output = Result<Agent, AgentError>> + Send;

    /// Replaces an agent's password hash and ends every session of theirs but `keep`, with the
    /// live connections `agents::password_changed` names.
    fn replace_password(
        &self,
        agent_id: u64,
        password_hash: String,
        keep: Option<TokenDigest>,
    ) -> impl Future<Output = Result<Agent, AgentError>> + Send;

    /// Keeps a new two-factor secret waiting for its first code (`TwoFactorRecord::begin`).
    fn begin_two_factor(
        &self,
        agent_id: u64,
        secret: String,
    ) -> impl Future<Output = Result<(), TwoFactorError>> + Send;

    /// Turns two-factor login on with the first code (`agents::confirm_two_factor_of`); the
    /// session `session` becomes full if it could only enrol. Returns the recovery codes.
    fn confirm_two_factor(
        &self,
        agent_id: u64,
        session: TokenDigest,
        code: &str,
    ) -> impl Future<Output = Result<Vec<String>, AgentError>> + Send;

    /// Turns two-factor login off (`agents::remove_two_factor_of`), removes its secrets and ends
    /// every session of the agent but `keep`, with their live connections.
    fn remove_two_factor(
        &self,
        agent_id: u64,
        keep: Option<TokenDigest>,
        by_admin: bool,
    ) -> impl Future<Output = Result<Agent, AgentError>> + Send;

    /// Sets the installation's switch (`agents::check_require_two_factor`); turning it on ends
    /// the sessions of agents without two-factor login, with their live connections.
    fn require_two_factor(&self, admin_id: u64, on: bool) -> impl Future<Output = Result<(), AgentError>> + Send;

    /// Gives the login waiting on `ticket` its second factor (`agents::complete_login_of`): a
    /// right code makes the session full, with the code used up; anything else changes nothing.
    fn complete_login(&self, ticket: &str, code: &str) -> impl Future<Output = Result<Agent, AgentError>> + Send;

    /// Points the agent at the upload `upload_id` (marked attached) as their picture, or at
    /// none, and deletes the picture before.
    fn replace_avatar(
        &self,
        agent_id: u64,
        upload_id: Option<String>,
    ) -> impl Future<Output = Result<Agent, AvatarError>> + Send;
}

/// An agent read inside a writer operation.
fn agent_in(context: &WriteContext<'_>, id: u64) -> Result<Option<Agent>, StorageError> {
    context.transaction.open_table(tables::AGENTS)?.get(id)?.map(|value| decode_json(value.value())).transpose()
}

fn store_agent_in(context: &WriteContext<'_>, agent: &Agent) -> Result<(), StorageError> {
    context.transaction.open_table(tables::AGENTS)?.insert(agent.id, encode_json(agent).as_slice())?;
    Ok(())
}

/// Those of `sites` that exist, read inside a writer operation.
fn known_sites_in(context: &WriteContext<'_>, sites: &[String]) -> Result<Vec<String>, StorageError> {
    let table = context.transaction.open_table(tables::SITES)?;
    let mut known = Vec::new();
    for site in sites {
        if table.get(site.as_str())?.is_some() {
            known.push(site.clone());
        }
    }
    Ok(known)
}

fn publish_all(context: &mut WriteContext<'_>, ended: Vec<AccessEnded>) {
    for ended in ended {
        context.publish(CommittedEvent::AccessEnded(ended));
    }
}

impl AgentAdministration for Store {
    async fn list(&self) -> Result<Vec<Agent>, StorageError> {
        self.read(agents::list).await
    }

    async fn insert(&self, draft: AgentDraft) -> Result<Agent, AgentError> {
        self.write(move |context| {
            if context.transaction.open_table(tables::AGENT_EMAILS)?.get(draft.email())?.is_some() {
                return Ok(Err(AgentError::DuplicateEmail(draft.email().to_owned())));
            }
            if let Err(error) = draft.check_sites(&known_sites_in(context, draft.sites())?) {
                return Ok(Err(error));
            }
            let agent = draft.into_agent(context.next_id(Counter::Agent), context.now);
            context.transaction.open_table(tables::AGENT_EMAILS)?.insert(agent.email.as_str(), agent.id)?;
            store_agent_in(context, &agent)?;
            Ok(Ok(agent))
        })
        .await
    }

    async fn update(&self, id: u64, changes: AgentChanges) -> Result<Agent, AgentError> {
        self.write(move |context| {
            let Some(before) = agent_in(context, id)? else {
                return Ok(Err(AgentError::NotFound(id.to_string())));
            };
            let known_sites = known_sites_in(context, &changes.sites)?;
            let mut other_enabled_admins = 0;
            for entry in context.transaction.open_table(tables::AGENTS)?.iter()? {
                let other: Agent = decode_json(entry?.1.value())?;
                other_enabled_admins += usize::from(other.id != id && other.is_enabled_admin());
            }
            let (agent, access_ended) = match before.changed(changes, &known_sites, other_enabled_admins) {
                Ok(changed) => changed,
                Err(error) => return Ok(Err(error)),
            };
            store_agent_in(context, &agent)?;
            if agent.disabled {
                agents::end_sessions_but(context, id, None)?;
            }
            if let Some(reason) = access_ended {
                context.publish(CommittedEvent::AccessEnded(AccessEnded { agent_id: id, session: None, reason }));
            }
            Ok(Ok(agent))
        })
        .await
    }

    async fn replace_password(
        &self,
        agent_id: u64,
        password_hash: String,
        keep: Option<TokenDigest>,
    ) -> Result<Agent, AgentError> {
        self.write(move |context| {
            let Some(mut agent) = agent_in(context, agent_id)? else {
                return Ok(Err(AgentError::NotFound(agent_id.to_string())));
            };
            agent.password_hash = password_hash;
            store_agent_in(context, &agent)?;
            let ended = agents::end_sessions_but(context, agent_id, keep)?;
            publish_all(context, agents::password_changed(agent_id, keep, ended));
            Ok(Ok(agent))
        })
        .await
    }

    async fn begin_two_factor(&self, agent_id: u64, secret: String) -> Result<(), TwoFactorError> {
        self.write(move |context| {
            if agent_in(context, agent_id)?.is_none() {
                return Ok(Err(TwoFactorError::NotFound));
            }
            let mut record = two_factor::record_in(context, agent_id)?;
            if let Err(error) = record.begin(secret) {
                return Ok(Err(error));
            }
            two_factor::store_in(context, agent_id, &record)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn confirm_two_factor(
        &self,
        agent_id: u64,
        session: TokenDigest,
        code: &str,
    ) -> Result<Vec<String>, AgentError> {
        let code = code.to_owned();
        self.write(move |context| {
            let Some(mut agent) = agent_in(context, agent_id)? else {
                return Ok(Err(AgentError::NotFound(agent_id.to_string())));
            };
            let mut record = two_factor::record_in(context, agent_id)?;
            let mut sessions = context.transaction.open_table(tables::AGENT_SESSIONS)?;
            let mut stored: Option<AgentSession> =
                sessions.get(&session)?.map(|value| decode_json(value.value())).transpose()?;
            let now = context.now;
            let codes = match agents::confirm_two_factor_of(&mut agent, &mut record, stored.as_mut(), &code, now) {
                Ok(codes) => codes,
                Err(error) => return Ok(Err(error)),
            };
            if let Some(stored) = &stored {
                sessions.insert(&session, encode_json(stored).as_slice())?;
            }
            drop(sessions);
            two_factor::store_in(context, agent_id, &record)?;
            store_agent_in(context, &agent)?;
            Ok(Ok(codes))
        })
        .await
    }

    async fn remove_two_factor(
        &self,
        agent_id: u64,
        keep: Option<TokenDigest>,
        by_admin: bool,
    ) -> Result<Agent, AgentError> {
        self.write(move |context| {
            let required = two_factor::required_in(context)?;
            let Some(mut agent) = agent_in(context, agent_id)? else {
                return Ok(Err(AgentError::NotFound(agent_id.to_string())));
            };
            if let Err(error) = agents::remove_two_factor_of(&mut agent, required, by_admin) {
                return Ok(Err(error));
            }
            store_agent_in(context, &agent)?;
            two_factor::remove_in(context, agent_id)?;
            let ended = agents::end_sessions_but(context, agent_id, keep)?;
            publish_all(context, agents::sessions_ended(agent_id, ended, AccessEndReason::TwoFactorChanged));
            Ok(Ok(agent))
        })
        .await
    }

    async fn complete_login(&self, ticket: &str, code: &str) -> Result<Agent, AgentError> {
        agents::complete_login(self, ticket, code).await
    }

    async fn require_two_factor(&self, admin_id: u64, on: bool) -> Result<(), AgentError> {
        self.write(move |context| {
            if let Err(error) = agents::check_require_two_factor(agent_in(context, admin_id)?.as_ref(), on) {
                return Ok(Err(error));
            }
            if on {
                let mut without = Vec::new();
                for entry in context.transaction.open_table(tables::AGENTS)?.iter()? {
                    let agent: Agent = decode_json(entry?.1.value())?;
                    if !agent.two_factor {
                        without.push(agent.id);
                    }
                }
                for agent_id in without {
                    if !agents::end_sessions_but(context, agent_id, None)?.is_empty() {
                        context.publish(CommittedEvent::AccessEnded(AccessEnded {
                            agent_id,
                            session: None,
                            reason: AccessEndReason::TwoFactorChanged,
                        }));
                    }
                }
            }
            two_factor::set_required_in(context, on)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn replace_avatar(&self, agent_id: u64, upload_id: Option<String>) -> Result<Agent, AvatarError> {
        let (agent, previous) = self
            .write(move |context| {
                let Some(mut agent) = agent_in(context, agent_id)? else {
                    return Ok(Err(AvatarError::NotFound));
                };
                let previous = std::mem::replace(&mut agent.avatar, upload_id.clone());
                store_agent_in(context, &agent)?;
                let mut table = context.transaction.open_table(tables::UPLOADS)?;
                if let Some(id) = &upload_id {
                    let upload =
                        table.get(id.as_str())?.map(|value| decode_json::<Upload>(value.value())).transpose()?;
                    if let Some(mut upload) = upload {
                        upload.attached = true;
                        table.insert(id.as_str(), encode_json(&upload).as_slice())?;
                    }
                }
                if let Some(id) = &previous {
                    table.remove(id.as_str())?;
                }
                Ok(Ok((agent, previous)))
            })
            .await?;
        if let Some(id) = previous {
            let path = uploads::path_of(self.data_dir(), &id);
            if let Err(error) = tokio::fs::remove_file(&path).await
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(%error, upload = %id, "removing an old avatar's file failed");
            }
        }
        Ok(agent)
    }
}
