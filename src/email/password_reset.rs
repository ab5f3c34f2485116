//! "Forgot password" for agents: a single-use link by email, valid for 30 minutes.
//!
//! [`request`] answers the same whether the address belongs to an agent or not (the caller shows
//! one message either way); only an enabled agent's request writes a reset and its email, in one
//! commit. [`complete`] takes the reset out of the table before anything else, so a link works
//! once, then sets the password through `people::agents::reset_password`, which ends every
//! session of the agent.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::content::{self, Lang};
use super::{EmailKind, OutgoingEmail};
use crate::base::secrets::{self, TokenDigest};
use crate::people::agent_administration::AgentAdministration;
use crate::people::agents::{self, Agent, AgentError};
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// How long a reset link works.
pub const RESET_LIFETIME_MILLIS: i64 = 30 * 60 * 1000;

/// The prefix of reset tokens.
const TOKEN_PREFIX: &str = "r1.";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PasswordReset {
    pub agent_id: u64,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// Unknown, used or expired: one answer for all three.
    #[error("this link is not valid any more; ask for a new one")]
    InvalidLink,
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl PasswordReset {
    /// A reset of `agent_id`'s password asked for at `now`.
    pub fn new(agent_id: u64, now: i64) -> PasswordReset {
        PasswordReset { agent_id, created_at: now, expires_at: now + RESET_LIFETIME_MILLIS }
    }

    /// Whether the link still works at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.expires_at >= now
    }
}

/// The password resets' storage boundary: a reset stored with its email, read, and taken out.
/// [`Store`] implements it with a writer operation (the email goes to the appliance's outbox);
/// the cluster's PostgreSQL in `cluster::agent_administration` (the email an `outbox` row).
pub trait PasswordResetStore: AgentAdministration {
    /// Stores `reset` under its token's digest, and `email` (its link) in the outbox, in one
    /// commit; resets expired before `reset` was made go.
    fn insert_reset(
        &self,
        digest: TokenDigest,
        reset: PasswordReset,
        email: OutgoingEmail,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The reset stored under `digest`, live or not.
    fn password_reset(
        &self,
        digest: TokenDigest,
    ) -> impl Future<Output = Result<Option<PasswordReset>, StorageError>> + Send;

    /// Takes the reset stored under `digest` out, live or not, so its link works once.
    fn take_reset(
        &self,
        digest: TokenDigest,
    ) -> impl Future<Output = Result<Option<PasswordReset>, StorageError>> + Send;
}

impl PasswordResetStore for Store {
    async fn insert_reset(
        &self,
        digest: TokenDigest,
        reset: PasswordReset,
        email: OutgoingEmail,
    ) -> Result<(), StorageError> {
        self.write(move |context| {
            let mut resets = context.transaction.open_table(tables::PASSWORD_RESETS)?;
            // Expired resets go when a new one is made, so the table stays small.
            let now = reset.created_at;
            resets.retain(|_, value| decode_json::<PasswordReset>(value).is_ok_and(|reset| reset.is_live(now)))?;
            resets.insert(&digest, encode_json(&reset).as_slice())?;
            drop(resets);
            let due_at = context.now;
            super::queue(context, email, due_at)?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await
    }

    async fn password_reset(&self, digest: TokenDigest) -> Result<Option<PasswordReset>, StorageError> {
        self.read(move |transaction| {
            let table = transaction.open_table(tables::PASSWORD_RESETS)?;
            table.get(&digest)?.map(|value| decode_json(value.value())).transpose()
        })
        .await
    }

    async fn take_reset(&self, digest: TokenDigest) -> Result<Option<PasswordReset>, StorageError> {
        self.write(move |context| {
            let mut resets = context.transaction.open_table(tables::PASSWORD_RESETS)?;
            let reset = resets.remove(&digest)?.map(|value| decode_json(value.value())).transpose()?;
            Ok(Ok::<_, StorageError>(reset))
        })
        .await
    }
}

/// Emails a reset link to the agent with `email`, if there is an enabled one; `reset_url` is the
/// page the link opens (the token is appended).
pub async fn request(
    store: &impl PasswordResetStore,
    email: &str,
    reset_url: &str,
    lang: Lang,
) -> Result<(), StorageError> {
    let Some(agent) = store.get_by_email(email).await?.filter(|agent| !agent.disabled) else {
        return Ok(());
    };
    let token = secrets::new_token(TOKEN_PREFIX);
    let link = format!("{reset_url}?token={token}");
    let email = OutgoingEmail {
        kind: EmailKind::PasswordReset,
        site: None,
        to_address: agent.email.clone(),
        to_name: agent.name.clone(),
        message: content::password_reset(lang, &link, RESET_LIFETIME_MILLIS / 60_000),
        unless_read: None,
        transcript_of: None,
    };
    let reset = PasswordReset::new(agent.id, crate::base::clock::now_millis());
    store.insert_reset(secrets::token_digest(&token), reset, email).await
}

/// Uses a reset link: sets `password` and ends every session of the agent. The link stops
/// working at the first attempt, whatever its outcome, except a password too short or long.
pub async fn complete(store: &impl PasswordResetStore, token: &str, password: &str) -> Result<Agent, ResetError> {
    agents::validate_password(password)?;
    let now = crate::base::clock::now_millis();
    let reset = store.take_reset(secrets::token_digest(token.trim())).await?;
    let Some(reset) = reset.filter(|reset| reset.is_live(now)) else {
        return Err(ResetError::InvalidLink);
    };
    let Some(agent) = store.get(reset.agent_id).await?.filter(|agent| !agent.disabled) else {
        return Err(ResetError::InvalidLink);
    };
    Ok(agents::reset_password(store, &agent.email, password).await?)
}

/// Whether a reset link is live (for the page that asks for the new password).
pub async fn is_live(store: &impl PasswordResetStore, token: &str) -> Result<bool, StorageError> {
    let now = crate::base::clock::now_millis();
    let reset = store.password_reset(secrets::token_digest(token.trim())).await?;
    Ok(reset.is_some_and(|reset| reset.is_live(now)))
}
