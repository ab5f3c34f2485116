//! Agents: the people who answer visitors, their roles, passwords and login sessions.
//!
//! Passwords are argon2id hashes computed on the blocking pool. A login hands out a random
//! session token; redb stores only its digest. Login checks go through [`PasswordChecks`], a small
//! pool that bounds how many argon2 checks (each about 19 MiB of memory and a core for a while)
//! run at once, whatever the number of concurrent logins.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use crate::base::field_error::FieldError;
use crate::base::secrets::{self, TokenDigest};
use crate::chat::delivery::{AccessEndReason, AccessEnded, CommittedEvent};
use crate::chat::writes::ChatWrites;
use crate::storage::writer::Counter;
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// How long a login session lasts without being used.
pub const SESSION_LIFETIME_MILLIS: i64 = 30 * 24 * 3600 * 1000;

/// The prefix of agent session tokens, so a token says which table it belongs to.
pub const TOKEN_PREFIX: &str = "a1.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Changes settings and serves every site.
    Admin,
    /// Serves the sites listed on their record.
    Agent,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "admin" => Ok(Role::Admin),
            "agent" => Ok(Role::Agent),
            other => Err(format!("role must be admin or agent, not {other:?}")),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agent {
    pub id: u64,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    /// Keys of the sites this agent serves (admins serve all).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Most conversations assigned at once.
    pub capacity: u32,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: i64,
    /// The agent asked for no notification emails (offline messages, missed chats).
    #[serde(default)]
    pub email_notifications_off: bool,
}

impl Agent {
    pub fn serves_site(&self, site_key: &str) -> bool {
        self.role == Role::Admin || self.sites.iter().any(|site| site == site_key)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AgentSession {
    agent_id: u64,
    created_at: i64,
    expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("an agent with email {0} already exists")]
    DuplicateEmail(String),
    #[error("no agent with email {0}")]
    NotFound(String),
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error(transparent)]
    Invalid(FieldError),
    /// Every password check slot stayed busy for the whole wait.
    #[error("too many logins at once")]
    PasswordChecksBusy,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The most password checks that run at once when the configuration leaves it to the core count.
const MAX_DEFAULT_PASSWORD_CHECKS: usize = 4;

/// The pool of login password checks: at most `n_at_once` argon2 verifications run at the same
/// time; a login that finds none free within `wait` is refused with
/// [`AgentError::PasswordChecksBusy`] instead of queueing without bound.
pub struct PasswordChecks {
    /// One permit per check allowed to run; the permit moves into the blocking task, so a login
    /// whose request is dropped mid-check still holds its slot until the hash is done.
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// How long a login waits for a free slot.
    wait: std::time::Duration,
    /// Checks run since start, so tests (and an operator) can see how many hashes an attack cost.
    n_run: std::sync::atomic::AtomicU64,
}

impl PasswordChecks {
    /// A pool of `n_at_once` slots; 0 sizes it from the core count (at most 4).
    pub fn new(n_at_once: usize, wait: std::time::Duration) -> PasswordChecks {
        let n_at_once = match n_at_once {
            0 => std::thread::available_parallelism().map_or(1, usize::from).min(MAX_DEFAULT_PASSWORD_CHECKS),
            n => n,
        };
        PasswordChecks {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(n_at_once)),
            wait,
            n_run: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many password checks have run.
    pub fn n_run(&self) -> u64 {
        self.n_run.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Verifies `password` against `stored_hash` in a free slot, off the async threads.
    async fn verify(&self, password: String, stored_hash: String) -> Result<bool, AgentError> {
        let slot = match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) | Err(_) => return Err(AgentError::PasswordChecksBusy),
        };
        self.n_run.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let matches = secrets::verify_password(&password, &stored_hash);
            drop(slot);
            matches
        })
        .await
        .map_err(|error| AgentError::Storage(StorageError::Panicked(error.to_string())))
    }
}

#[derive(Clone, Debug)]
pub struct NewAgent {
    pub email: String,
    pub name: String,
    pub password: String,
    pub role: Role,
    pub sites: Vec<String>,
    pub capacity: u32,
}

pub fn validate_password(password: &str) -> Result<(), AgentError> {
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(AgentError::Invalid(FieldError::new("password", "must be 8 to 1024 characters")));
    }
    Ok(())
}

fn normalise_email(email: &str) -> Result<String, AgentError> {
    let email = email.trim().to_lowercase();
    let valid =
        email.len() <= 254 && email.split_once('@').is_some_and(|(user, host)| !user.is_empty() && !host.is_empty());
    if valid {
        Ok(email)
    } else {
        Err(AgentError::Invalid(FieldError::new("email", format!("{email:?} is not an email address"))))
    }
}

pub async fn create(store: &Store, new_agent: NewAgent) -> Result<Agent, AgentError> {
    let email = normalise_email(&new_agent.email)?;
    validate_password(&new_agent.password)?;
    if new_agent.capacity == 0 {
        return Err(AgentError::Invalid(FieldError::new("capacity", "must be at least 1")));
    }
    let password = new_agent.password.clone();
    let password_hash = tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|error| StorageError::Panicked(error.to_string()))?;
    let name = if new_agent.name.trim().is_empty() {
        email.split('@').next().unwrap_or_default().to_owned()
    } else {
        new_agent.name.trim().to_owned()
    };
    store
        .write(move |context| {
            let mut emails = context.transaction.open_table(tables::AGENT_EMAILS)?;
            if emails.get(email.as_str())?.is_some() {
                return Ok(Err(AgentError::DuplicateEmail(email)));
            }
            let sites = context.transaction.open_table(tables::SITES)?;
            for site in &new_agent.sites {
                if sites.get(site.as_str())?.is_none() {
                    return Ok(Err(AgentError::Invalid(FieldError::new("sites", format!("no such site {site:?}")))));
                }
            }
            let agent = Agent {
                id: context.next_id(Counter::Agent),
                email,
                name,
                password_hash,
                role: new_agent.role,
                sites: new_agent.sites,
                capacity: new_agent.capacity,
                disabled: false,
                created_at: context.now,
                email_notifications_off: false,
            };
            emails.insert(agent.email.as_str(), agent.id)?;
            let mut agents = context.transaction.open_table(tables::AGENTS)?;
            agents.insert(agent.id, encode_json(&agent).as_slice())?;
            Ok(Ok(agent))
        })
        .await
}

pub async fn reset_password(store: &Store, email: &str, password: &str) -> Result<Agent, AgentError> {
    let email = normalise_email(email)?;
    validate_password(password)?;
    let password = password.to_owned();
    let password_hash = tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|error| StorageError::Panicked(error.to_string()))?;
    store
        .write(move |context| {
            let Some(id) =
                context.transaction.open_table(tables::AGENT_EMAILS)?.get(email.as_str())?.map(|value| value.value())
            else {
                return Ok(Err(AgentError::NotFound(email)));
            };
            let mut agents = context.transaction.open_table(tables::AGENTS)?;
            let Some(mut agent) = agents.get(id)?.map(|value| decode_json::<Agent>(value.value())).transpose()? else {
                return Ok(Err(AgentError::NotFound(email)));
            };
            agent.password_hash = password_hash;
            agents.insert(id, encode_json(&agent).as_slice())?;
            drop(agents);
            // A new password ends every existing session of the agent, live connections included.
            end_sessions(context, id)?;
            context.publish(CommittedEvent::AccessEnded(AccessEnded {
                agent_id: id,
                session: None,
                reason: AccessEndReason::PasswordChanged,
            }));
            Ok(Ok(agent))
        })
        .await
}

/// Most conversations an agent can hold at once.
pub const MAX_CAPACITY: u32 = 1000;

/// What an admin changes on an agent.
#[derive(Clone, Debug)]
pub struct AgentChanges {
    pub name: String,
    pub role: Role,
    pub capacity: u32,
    pub sites: Vec<String>,
    pub disabled: bool,
    /// No notification emails (offline messages, missed chats) for this agent.
    pub email_notifications_off: bool,
}

/// Changes an agent. Refused when it would leave no enabled admin; disabling ends every session
/// of the agent.
pub async fn update(store: &Store, id: u64, changes: AgentChanges) -> Result<Agent, AgentError> {
    let name = changes.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AgentError::Invalid(FieldError::new("name", "must be 1 to 100 characters")));
    }
    if changes.capacity == 0 || changes.capacity > MAX_CAPACITY {
        return Err(AgentError::Invalid(FieldError::new("capacity", format!("must be 1 to {MAX_CAPACITY}"))));
    }
    let mut sites = changes.sites;
    sites.sort();
    sites.dedup();
    store
        .write(move |context| {
            let site_table = context.transaction.open_table(tables::SITES)?;
            for site in &sites {
                if site_table.get(site.as_str())?.is_none() {
                    return Ok(Err(AgentError::Invalid(FieldError::new("sites", format!("no site with key {site}")))));
                }
            }
            drop(site_table);
            let mut agents = context.transaction.open_table(tables::AGENTS)?;
            let Some(mut agent) = agents.get(id)?.map(|value| decode_json::<Agent>(value.value())).transpose()? else {
                return Ok(Err(AgentError::NotFound(id.to_string())));
            };
            let rights_before = (agent.role, agent.sites.clone(), agent.disabled);
            agent.name = name;
            agent.role = changes.role;
            agent.capacity = changes.capacity;
            agent.sites = sites;
            agent.disabled = changes.disabled;
            agent.email_notifications_off = changes.email_notifications_off;
            let mut other_admins = 0;
            for entry in agents.iter()? {
                let other: Agent = decode_json(entry?.1.value())?;
                if other.id != id && other.role == Role::Admin && !other.disabled {
                    other_admins += 1;
                }
            }
            if other_admins == 0 && (agent.role != Role::Admin || agent.disabled) {
                return Ok(Err(AgentError::Invalid(FieldError::new("role", "kefu needs at least one enabled admin"))));
            }
            agents.insert(id, encode_json(&agent).as_slice())?;
            drop(agents);
            if agent.disabled {
                end_sessions(context, id)?;
            }
            // Live connections carry the rights they were opened with: end them so they
            // reconnect with the new ones (or, disabled, cannot).
            if rights_before != (agent.role, agent.sites.clone(), agent.disabled) {
                let reason = if agent.disabled { AccessEndReason::Disabled } else { AccessEndReason::RightsChanged };
                context.publish(CommittedEvent::AccessEnded(AccessEnded { agent_id: id, session: None, reason }));
            }
            Ok(Ok(agent))
        })
        .await
}

fn end_sessions(context: &mut crate::storage::WriteContext<'_>, agent_id: u64) -> Result<(), StorageError> {
    let mut sessions = context.transaction.open_table(tables::AGENT_SESSIONS)?;
    sessions.retain(|_, value| {
        decode_json::<AgentSession>(value).map(|session| session.agent_id != agent_id).unwrap_or(true)
    })?;
    Ok(())
}

pub fn get(transaction: &ReadTransaction, id: u64) -> Result<Option<Agent>, StorageError> {
    let table = transaction.open_table(tables::AGENTS)?;
    table.get(id)?.map(|value| decode_json(value.value())).transpose()
}

pub fn get_by_email(transaction: &ReadTransaction, email: &str) -> Result<Option<Agent>, StorageError> {
    let Ok(email) = normalise_email(email) else {
        return Ok(None);
    };
    let Some(id) = transaction.open_table(tables::AGENT_EMAILS)?.get(email.as_str())?.map(|value| value.value()) else {
        return Ok(None);
    };
    get(transaction, id)
}

pub fn list(transaction: &ReadTransaction) -> Result<Vec<Agent>, StorageError> {
    let table = transaction.open_table(tables::AGENTS)?;
    table.iter()?.map(|entry| decode_json(entry?.1.value())).collect()
}

pub fn count(transaction: &ReadTransaction) -> Result<u64, StorageError> {
    Ok(transaction.open_table(tables::AGENTS)?.len()?)
}

/// Checks an email and password (in a slot of `checks`) and opens a session; returns its token.
pub async fn login(
    store: &Store,
    checks: &PasswordChecks,
    email: &str,
    password: &str,
) -> Result<(String, Agent), AgentError> {
    let owned_email = email.to_owned();
    let agent = store.read(move |transaction| get_by_email(transaction, &owned_email)).await?;
    let password = password.to_owned();
    // Hash even for an unknown email so timing does not reveal which emails exist.
    let stored_hash = agent.as_ref().map(|agent| agent.password_hash.clone()).unwrap_or_else(dummy_hash);
    let matches = checks.verify(password, stored_hash).await?;
    let agent = match agent {
        Some(agent) if matches && !agent.disabled => agent,
        _ => return Err(AgentError::InvalidCredentials),
    };
    let token = secrets::new_token(TOKEN_PREFIX);
    let digest = secrets::token_digest(&token);
    let agent_id = agent.id;
    store
        .write(move |context| {
            let session =
                AgentSession { agent_id, created_at: context.now, expires_at: context.now + SESSION_LIFETIME_MILLIS };
            context
                .transaction
                .open_table(tables::AGENT_SESSIONS)?
                .insert(&digest, encode_json(&session).as_slice())?;
            Ok(Ok::<_, AgentError>(()))
        })
        .await?;
    Ok((token, agent))
}

fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| secrets::hash_password("not a real password")).clone()
}

/// The agent a session token belongs to, if the session is live and the agent enabled.
pub fn authenticate(
    transaction: &ReadTransaction,
    digest: &TokenDigest,
    now: i64,
) -> Result<Option<Agent>, StorageError> {
    let sessions = transaction.open_table(tables::AGENT_SESSIONS)?;
    let Some(session) = sessions.get(digest)?.map(|value| decode_json::<AgentSession>(value.value())).transpose()?
    else {
        return Ok(None);
    };
    if session.expires_at < now {
        return Ok(None);
    }
    Ok(get(transaction, session.agent_id)?.filter(|agent| !agent.disabled))
}

/// Ends one login session, and the live connections opened with it.
pub async fn logout(store: &Store, token: &str) -> Result<(), StorageError> {
    let digest = secrets::token_digest(token);
    store
        .write(move |context| {
            let mut sessions = context.transaction.open_table(tables::AGENT_SESSIONS)?;
            let session =
                sessions.remove(&digest)?.map(|value| decode_json::<AgentSession>(value.value())).transpose()?;
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
