//! "Forgot password" for agents: a single-use link by email, valid for 30 minutes.
//!
//! [`request`] answers the same whether the address belongs to an agent or not (the caller shows
//! one message either way); only an enabled agent's request writes a reset and its email, in one
//! commit. [`complete`] takes the reset out of the table before anything else, so a link works
//! once, then sets the password through `people::agents::reset_password`, which ends every
//! session of the agent.

use serde::{Deserialize, Serialize};

use super::content::{self, Lang};
use super::{EmailKind, OutgoingEmail};
use crate::base::secrets;
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

/// Emails a reset link to the agent with `email`, if there is an enabled one; `reset_url` is the
/// page the link opens (the token is appended).
pub async fn request(store: &Store, email: &str, reset_url: &str, lang: Lang) -> Result<(), StorageError> {
    let email = email.trim().to_lowercase();
    let found = {
        let email = email.clone();
        store.read(move |transaction| agents::get_by_email(transaction, &email)).await?
    };
    let Some(agent) = found.filter(|agent| !agent.disabled) else {
        return Ok(());
    };
    let token = secrets::new_token(TOKEN_PREFIX);
    let digest = secrets::token_digest(&token);
    let link = format!("{reset_url}?token={token}");
    store
        .write(move |context| {
            let reset = PasswordReset {
                agent_id: agent.id,
                created_at: context.now,
                expires_at: context.now + RESET_LIFETIME_MILLIS,
            };
            let mut resets = context.transaction.open_table(tables::PASSWORD_RESETS)?;
            // Expired resets go when a new one is made, so the table stays small.
            let now = context.now;
            resets.retain(|_, value| decode_json::<PasswordReset>(value).is_ok_and(|reset| reset.expires_at >= now))?;
            resets.insert(&digest, encode_json(&reset).as_slice())?;
            drop(resets);
            let outgoing = OutgoingEmail {
                kind: EmailKind::PasswordReset,
                site: None,
                to_address: agent.email.clone(),
                to_name: agent.name.clone(),
                message: content::password_reset(lang, &link, RESET_LIFETIME_MILLIS / 60_000),
                unless_read: None,
                transcript_of: None,
            };
            let now = context.now;
            super::queue(context, outgoing, now)?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await
}

/// Uses a reset link: sets `password` and ends every session of the agent. The link stops
/// working at the first attempt, whatever its outcome, except a password too short or long.
pub async fn complete(store: &Store, token: &str, password: &str) -> Result<Agent, ResetError> {
    agents::validate_password(password)?;
    let digest = secrets::token_digest(token.trim());
    let reset = store
        .write(move |context| {
            let mut resets = context.transaction.open_table(tables::PASSWORD_RESETS)?;
            let reset = resets.remove(&digest)?.map(|value| decode_json::<PasswordReset>(value.value())).transpose()?;
            Ok(Ok::<_, StorageError>(reset.filter(|reset| reset.expires_at >= context.now)))
        })
        .await?;
    let Some(reset) = reset else {
        return Err(ResetError::InvalidLink);
    };
    let agent = store.read(move |transaction| agents::get(transaction, reset.agent_id)).await?;
    let Some(agent) = agent.filter(|agent| !agent.disabled) else {
        return Err(ResetError::InvalidLink);
    };
    Ok(agents::reset_password(store, &agent.email, password).await?)
}

/// Whether a reset link is live (for the page that asks for the new password).
pub async fn is_live(store: &Store, token: &str) -> Result<bool, StorageError> {
    let digest = secrets::token_digest(token.trim());
    let now = crate::base::clock::now_millis();
    store
        .read(move |transaction| {
            let table = transaction.open_table(tables::PASSWORD_RESETS)?;
            let reset = table.get(&digest)?.map(|value| decode_json::<PasswordReset>(value.value())).transpose()?;
            Ok(reset.is_some_and(|reset| reset.expires_at >= now))
        })
        .await
}
