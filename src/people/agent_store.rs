//! The agents' storage boundary for logging in: what a login, a session check and a logout need
//! of agents, in domain terms, so a second backend (the cluster's PostgreSQL, `cluster::agents`)
//! implements these calls and not redb's tables. The decisions stay in `people::agents`, written
//! once over this trait: `agents::login` (the password check, the session's stage),
//! `AgentSession::live` (expiry, a disabled agent). [`Store`] implements it with redb.

use std::future::Future;

use crate::base::secrets::TokenDigest;
use crate::chat::delivery::{AccessEndReason, AccessEnded, CommittedEvent};
use crate::chat::writes::ChatWrites;
use crate::people::agents::{self, Agent, AgentSession, SessionStage};
use crate::people::two_factor;
use crate::storage::{StorageError, Store, encode_json, tables};

pub trait AgentStore: Send + Sync {
    /// One agent.
    fn get(&self, id: u64) -> impl Future<Output = Result<Option<Agent>, StorageError>> + Send;

    /// The agent with `email` (compared as `agents::normalise_email` makes it); none for a text
    /// that is not an email address.
    fn get_by_email(&self, email: &str) -> impl Future<Output = Result<Option<Agent>, StorageError>> + Send;

    /// Whether the installation requires two-factor login of every agent.
    fn two_factor_required(&self) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Stores a new login session under its token's digest.
    fn insert_session(
        &self,
        digest: &TokenDigest,
        session: AgentSession,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The session stored under `digest`, live or not.
    fn stored_session(
        &self,
        digest: &TokenDigest,
    ) -> impl Future<Output = Result<Option<AgentSession>, StorageError>> + Send;

    /// Ends one session, and the live connections opened with it.
    fn end_session(&self, digest: &TokenDigest) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The agent and stage of a live session of an enabled agent.
    fn session_of(
        &self,
        digest: &TokenDigest,
        now: i64,
    ) -> impl Future<Output = Result<Option<(Agent, SessionStage)>, StorageError>> + Send {
        async move {
            let Some(session) = self.stored_session(digest).await? else {
                return Ok(None);
            };
            let agent = self.get(session.agent_id).await?;
            Ok(session.live(agent, now))
        }
    }

    /// The agent of a live, full session (what every transport accepts).
    fn authenticate(
        &self,
        digest: &TokenDigest,
        now: i64,
    ) -> impl Future<Output = Result<Option<Agent>, StorageError>> + Send {
        async move {
            let session = self.session_of(digest, now).await?;
            Ok(session.filter(|(_, stage)| *stage == SessionStage::Full).map(|(agent, _)| agent))
        }
    }
}

impl AgentStore for Store {
    async fn get(&self, id: u64) -> Result<Option<Agent>, StorageError> {
        self.read(move |transaction| agents::get(transaction, id)).await
    }

    async fn get_by_email(&self, email: &str) -> Result<Option<Agent>, StorageError> {
        let email = email.to_owned();
        self.read(move |transaction| agents::get_by_email(transaction, &email)).await
    }

    async fn two_factor_required(&self) -> Result<bool, StorageError> {
        self.read(two_factor::required).await
    }

    async fn insert_session(&self, digest: &TokenDigest, session: AgentSession) -> Result<(), StorageError> {
        let digest = *digest;
        self.write(move |context| {
            context
                .transaction
                .open_table(tables::AGENT_SESSIONS)?
                .insert(&digest, encode_json(&session).as_slice())?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await
    }

    async fn stored_session(&self, digest: &TokenDigest) -> Result<Option<AgentSession>, StorageError> {
        let digest = *digest;
        self.read(move |transaction| agents::stored_session(transaction, &digest)).await
    }

    async fn end_session(&self, digest: &TokenDigest) -> Result<(), StorageError> {
        let digest = *digest;
        self.write(move |context| {
            let mut sessions = context.transaction.open_table(tables::AGENT_SESSIONS)?;
            let session = sessions
                .remove(&digest)?
                .map(|value| crate::storage::decode_json::<AgentSession>(value.value()))
                .transpose()?;
            drop(sessions);
            if let Some(session) = session {
                context.publish(CommittedEvent::AccessEnded(AccessEnded {
                    agent_id: session.agent_id,
                    session: Some(digest),
                    reason: AccessEndReason::LoggedOut,
                }));
            }
            Ok(Ok::<_, StorageError>(()))
        })
        .await
    }
}
