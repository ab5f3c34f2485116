//! Agents: the people who answer visitors, their roles, passwords and login sessions.
//!
//! A login whose agent has two-factor login on ([`two_factor`]) opens a session that only waits
//! for the code ([`SessionStage::AwaitingCode`], a few minutes); [`complete_login`] turns it into
//! a full session. On an installation that requires two-factor login, an agent without it gets a
//! session that can only enrol ([`SessionStage::MustEnrol`]). [`authenticate`], which every
//! transport uses, accepts full sessions only.
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
use crate::people::agent_store::AgentStore;
use crate::people::two_factor::{self, TwoFactorError};
use crate::storage::writer::Counter;
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// How long a login session lasts without being used.
pub const SESSION_LIFETIME_MILLIS: i64 = 30 * 24 * 3600 * 1000;

/// How long a login waits for its second factor.
pub const AWAITING_CODE_LIFETIME_MILLIS: i64 = 5 * 60 * 1000;

/// How long a session that can only enrol in two-factor login lasts.
pub const MUST_ENROL_LIFETIME_MILLIS: i64 = 60 * 60 * 1000;

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
    /// Whether logins need a second factor (the secrets are in `two_factor`'s table).
    #[serde(default)]
    pub two_factor: bool,
    /// The upload id of the agent's picture (`avatars`), if they set one.
    #[serde(default)]
    pub avatar: Option<String>,
    /// The agent asked for no notification emails (offline messages, missed chats).
    #[serde(default)]
    pub email_notifications_off: bool,
}

impl Agent {
    pub fn serves_site(&self, site_key: &str) -> bool {
        self.role == Role::Admin || self.sites.iter().any(|site| site == site_key)
    }
}

/// A login session, stored under its token's digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentSession {
    pub agent_id: u64,
    pub created_at: i64,
    pub expires_at: i64,
    /// Sessions stored before two-factor login read as full ones.
    #[serde(default)]
    pub stage: SessionStage,
}

impl AgentSession {
    /// The agent and stage of this session if it is live and its agent (`self.agent_id`, read by
    /// the caller) exists and is enabled.
    pub fn live(self, agent: Option<Agent>, now: i64) -> Option<(Agent, SessionStage)> {
        if self.expires_at < now {
            return None;
        }
        agent.filter(|agent| !agent.disabled).map(|agent| (agent, self.stage))
    }
}

/// What a session may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStage {
    /// Everything the agent's role allows.
    #[default]
    Full,
    /// Nothing until the second factor is given ([`complete_login`]).
    AwaitingCode,
    /// Only enrol in two-factor login (the installation requires it); confirming it makes the
    /// session full.
    MustEnrol,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("an agent with email {0} already exists")]
    DuplicateEmail(String),
    #[error("no agent with email {0}")]
    NotFound(String),
    #[error("wrong email or password")]
    InvalidCredentials,
    /// A wrong, used or expired second factor, or a login that is no longer waiting for one.
    #[error("wrong or already used code")]
    WrongCode,
    #[error(transparent)]
    TwoFactor(#[from] TwoFactorError),
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
    pub async fn verify(&self, password: String, stored_hash: String) -> Result<bool, AgentError> {
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

pub fn normalise_email(email: &str) -> Result<String, AgentError> {
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
    let password_hash = hash_off_thread(&new_agent.password).await?;
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
                two_factor: false,
                avatar: None,
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
    let password_hash = hash_off_thread(password).await?;
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

/// Takes a deleted site out of every agent's sites (inside the site's deletion), so an agent's
/// list names only sites that exist and saving it again is not refused for the missing one.
pub fn forget_site(context: &crate::storage::WriteContext<'_>, site: &str) -> Result<(), StorageError> {
    let mut agents = context.transaction.open_table(tables::AGENTS)?;
    let mut changed = Vec::new();
    for entry in agents.iter()? {
        let mut agent: Agent = decode_json(entry?.1.value())?;
        if agent.sites.iter().any(|key| key == site) {
            agent.sites.retain(|key| key != site);
            changed.push(agent);
        }
    }
    for agent in &changed {
        agents.insert(agent.id, encode_json(agent).as_slice())?;
    }
    Ok(())
}

fn end_sessions(context: &mut crate::storage::WriteContext<'_>, agent_id: u64) -> Result<(), StorageError> {
    end_sessions_but(context, agent_id, None).map(drop)
}

/// Removes every session of the agent except `keep`; returns the digests removed.
fn end_sessions_but(
    context: &mut crate::storage::WriteContext<'_>,
    agent_id: u64,
    keep: Option<TokenDigest>,
) -> Result<Vec<TokenDigest>, StorageError> {
    let mut sessions = context.transaction.open_table(tables::AGENT_SESSIONS)?;
    let mut ended = Vec::new();
    for entry in sessions.iter()? {
        let (digest, value) = entry?;
        let digest = *digest.value();
        if Some(digest) != keep
            && decode_json::<AgentSession>(value.value()).is_ok_and(|session| session.agent_id == agent_id)
        {
            ended.push(digest);
        }
    }
    for digest in &ended {
        sessions.remove(digest)?;
    }
    Ok(ended)
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

/// What a login with the right password still needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginStep {
    /// Nothing: the session is full.
    Done,
    /// The code of the agent's authenticator app (or a recovery code), within
    /// [`AWAITING_CODE_LIFETIME_MILLIS`].
    Code,
    /// Enrolment in two-factor login, which the installation requires.
    Enrol,
}

/// Checks an email and password (in a slot of `checks`) and opens a session of the stage the
/// agent's two-factor state calls for; returns its token.
pub async fn login(
    store: &impl AgentStore,
    checks: &PasswordChecks,
    email: &str,
    password: &str,
) -> Result<(String, Agent, LoginStep), AgentError> {
    let agent = store.get_by_email(email).await?;
    let required = store.two_factor_required().await?;
    let password = password.to_owned();
    // Hash even for an unknown email so timing does not reveal which emails exist.
    let stored_hash = agent.as_ref().map(|agent| agent.password_hash.clone()).unwrap_or_else(dummy_hash);
    let matches = checks.verify(password, stored_hash).await?;
    let agent = match agent {
        Some(agent) if matches && !agent.disabled => agent,
        _ => return Err(AgentError::InvalidCredentials),
    };
    let (stage, step, lifetime) = if agent.two_factor {
        (SessionStage::AwaitingCode, LoginStep::Code, AWAITING_CODE_LIFETIME_MILLIS)
    } else if required {
        (SessionStage::MustEnrol, LoginStep::Enrol, MUST_ENROL_LIFETIME_MILLIS)
    } else {
        (SessionStage::Full, LoginStep::Done, SESSION_LIFETIME_MILLIS)
    };
    let token = secrets::new_token(TOKEN_PREFIX);
    let now = crate::base::clock::now_millis();
    let session = AgentSession { agent_id: agent.id, created_at: now, expires_at: now + lifetime, stage };
    store.insert_session(&secrets::token_digest(&token), session).await?;
    Ok((token, agent, step))
}

/// The agent whose login `ticket` (the token of an [`SessionStage::AwaitingCode`] session) waits
/// for a second factor, so the caller can count the attempt against that account.
pub fn awaiting_code(transaction: &ReadTransaction, ticket: &str, now: i64) -> Result<Option<Agent>, StorageError> {
    Ok(session_of(transaction, &secrets::token_digest(ticket), now)?
        .filter(|(_, stage)| *stage == SessionStage::AwaitingCode)
        .map(|(agent, _)| agent))
}

/// Gives a login its second factor: a right code makes the waiting session full (the ticket
/// becomes the session token); a wrong one changes nothing.
pub async fn complete_login(store: &Store, ticket: &str, code: &str) -> Result<Agent, AgentError> {
    let digest = secrets::token_digest(ticket);
    let code = code.to_owned();
    store
        .write(move |context| {
            let sessions = context.transaction.open_table(tables::AGENT_SESSIONS)?;
            let Some(mut session) =
                sessions.get(&digest)?.map(|value| decode_json::<AgentSession>(value.value())).transpose()?
            else {
                return Ok(Err(AgentError::WrongCode));
            };
            drop(sessions);
            if session.stage != SessionStage::AwaitingCode || session.expires_at < context.now {
                return Ok(Err(AgentError::WrongCode));
            }
            let agent = context
                .transaction
                .open_table(tables::AGENTS)?
                .get(session.agent_id)?
                .map(|value| decode_json::<Agent>(value.value()))
                .transpose()?;
            let Some(agent) = agent.filter(|agent| !agent.disabled) else {
                return Ok(Err(AgentError::WrongCode));
            };
            if !two_factor::check_in(context, agent.id, &code)? {
                return Ok(Err(AgentError::WrongCode));
            }
            session.stage = SessionStage::Full;
            session.expires_at = context.now + SESSION_LIFETIME_MILLIS;
            context
                .transaction
                .open_table(tables::AGENT_SESSIONS)?
                .insert(&digest, encode_json(&session).as_slice())?;
            Ok(Ok(agent))
        })
        .await
}

fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| secrets::hash_password("not a real password")).clone()
}

/// The agent and stage of a live session of an enabled agent.
pub fn session_of(
    transaction: &ReadTransaction,
    digest: &TokenDigest,
    now: i64,
) -> Result<Option<(Agent, SessionStage)>, StorageError> {
    let Some(session) = stored_session(transaction, digest)? else {
        return Ok(None);
    };
    let agent = get(transaction, session.agent_id)?;
    Ok(session.live(agent, now))
}

/// The session stored under `digest`, live or not.
pub fn stored_session(
    transaction: &ReadTransaction,
    digest: &TokenDigest,
) -> Result<Option<AgentSession>, StorageError> {
    let sessions = transaction.open_table(tables::AGENT_SESSIONS)?;
    sessions.get(digest)?.map(|value| decode_json::<AgentSession>(value.value())).transpose()
}

/// The agent a session token belongs to, if the session is live and full and the agent enabled.
pub fn authenticate(
    transaction: &ReadTransaction,
    digest: &TokenDigest,
    now: i64,
) -> Result<Option<Agent>, StorageError> {
    Ok(session_of(transaction, digest, now)?.filter(|(_, stage)| *stage == SessionStage::Full).map(|(agent, _)| agent))
}

/// Changes the agent's own password after checking the current one (in a slot of `checks`);
/// every other session of the agent ends, with its live connections, and `keep` (the session
/// making the change) stays. A wrong current password changes nothing; a new password that is
/// not allowed is refused before the current one is checked, so it costs no guess.
pub async fn change_password(
    store: &Store,
    checks: &PasswordChecks,
    agent: &Agent,
    keep: TokenDigest,
    current: &str,
    new: &str,
) -> Result<(), AgentError> {
    validate_password(new)?;
    if !checks.verify(current.to_owned(), agent.password_hash.clone()).await? {
        return Err(AgentError::InvalidCredentials);
    }
    let password_hash = hash_off_thread(new).await?;
    let agent_id = agent.id;
    store
        .write(move |context| {
            let mut agents = context.transaction.open_table(tables::AGENTS)?;
            let Some(mut agent) = agents.get(agent_id)?.map(|value| decode_json::<Agent>(value.value())).transpose()?
            else {
                return Ok(Err(AgentError::NotFound(agent_id.to_string())));
            };
            agent.password_hash = password_hash;
            agents.insert(agent_id, encode_json(&agent).as_slice())?;
            drop(agents);
            for session in end_sessions_but(context, agent_id, Some(keep))? {
                context.publish(CommittedEvent::AccessEnded(AccessEnded {
                    agent_id,
                    session: Some(session),
                    reason: AccessEndReason::PasswordChanged,
                }));
            }
            Ok(Ok(()))
        })
        .await
}

async fn hash_off_thread(password: &str) -> Result<String, AgentError> {
    let password = password.to_owned();
    Ok(tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|error| StorageError::Panicked(error.to_string()))?)
}

/// Turns two-factor login on for the agent once `code` matches the secret of their setup; the
/// session `session` (which confirmed it) becomes full if it could only enrol. Returns the
/// recovery codes, shown once.
pub async fn confirm_two_factor(
    store: &Store,
    agent_id: u64,
    session: TokenDigest,
    code: &str,
) -> Result<Vec<String>, AgentError> {
    let code = code.to_owned();
    store
        .write(move |context| {
            let codes = match two_factor::confirm_in(context, agent_id, &code)? {
                Ok(codes) => codes,
                // A wrong code is a wrong guess, counted like one at login.
                Err(TwoFactorError::WrongCode) => return Ok(Err(AgentError::WrongCode)),
                Err(error) => return Ok(Err(error.into())),
            };
            let mut agents = context.transaction.open_table(tables::AGENTS)?;
            let Some(mut agent) = agents.get(agent_id)?.map(|value| decode_json::<Agent>(value.value())).transpose()?
            else {
                return Ok(Err(AgentError::NotFound(agent_id.to_string())));
            };
            agent.two_factor = true;
            agents.insert(agent_id, encode_json(&agent).as_slice())?;
            drop(agents);
            let mut sessions = context.transaction.open_table(tables::AGENT_SESSIONS)?;
            let stored = sessions.get(&session)?.map(|value| decode_json::<AgentSession>(value.value())).transpose()?;
            if let Some(mut stored) = stored.filter(|stored| stored.stage == SessionStage::MustEnrol) {
                stored.stage = SessionStage::Full;
                stored.expires_at = context.now + SESSION_LIFETIME_MILLIS;
                sessions.insert(&session, encode_json(&stored).as_slice())?;
            }
            Ok(Ok(codes))
        })
        .await
}

/// Turns the agent's own two-factor login off once `password` (checked in a slot of `checks`)
/// is theirs; `keep` (the session asking) stays, every other session ends. A wrong password
/// changes nothing.
pub async fn disable_own_two_factor(
    store: &Store,
    checks: &PasswordChecks,
    agent: &Agent,
    keep: TokenDigest,
    password: &str,
) -> Result<Agent, AgentError> {
    if !checks.verify(password.to_owned(), agent.password_hash.clone()).await? {
        return Err(AgentError::InvalidCredentials);
    }
    remove_two_factor(store, agent.id, Some(keep), false).await
}

/// Turns the agent's two-factor login off: by the agent (who gives their password; refused when
/// the installation requires it; [`disable_own_two_factor`]) or by an admin's reset. Every session of the agent but `keep`
/// ends, since whoever held a lost phone may have logged in with it.
pub async fn remove_two_factor(
    store: &Store,
    agent_id: u64,
    keep: Option<TokenDigest>,
    by_admin: bool,
) -> Result<Agent, AgentError> {
    store
        .write(move |context| {
            if !by_admin && two_factor::required_in(context)? {
                return Ok(Err(TwoFactorError::Required.into()));
            }
            let mut agents = context.transaction.open_table(tables::AGENTS)?;
            let Some(mut agent) = agents.get(agent_id)?.map(|value| decode_json::<Agent>(value.value())).transpose()?
            else {
                return Ok(Err(AgentError::NotFound(agent_id.to_string())));
            };
            if !agent.two_factor && !by_admin {
                return Ok(Err(TwoFactorError::Off.into()));
            }
            agent.two_factor = false;
            agents.insert(agent_id, encode_json(&agent).as_slice())?;
            drop(agents);
            two_factor::remove_in(context, agent_id)?;
            for session in end_sessions_but(context, agent_id, keep)? {
                context.publish(CommittedEvent::AccessEnded(AccessEnded {
                    agent_id,
                    session: Some(session),
                    reason: AccessEndReason::TwoFactorChanged,
                }));
            }
            Ok(Ok(agent))
        })
        .await
}

/// Sets whether every agent needs two-factor login. Turning it on ends the sessions of agents
/// without it, so they log in again and enrol; an admin turns it on only with their own on.
pub async fn require_two_factor(store: &Store, admin: &Agent, on: bool) -> Result<(), AgentError> {
    let admin_id = admin.id;
    store
        .write(move |context| {
            if on {
                let admin = context
                    .transaction
                    .open_table(tables::AGENTS)?
                    .get(admin_id)?
                    .map(|value| decode_json::<Agent>(value.value()))
                    .transpose()?;
                if !admin.is_some_and(|admin| admin.two_factor) {
                    return Ok(Err(AgentError::Invalid(FieldError::new(
                        "require_two_factor",
                        "turn on two-factor login for your own account first (console, profile menu)",
                    ))));
                }
                let mut without = Vec::new();
                for entry in context.transaction.open_table(tables::AGENTS)?.iter()? {
                    let agent: Agent = decode_json(entry?.1.value())?;
                    if !agent.two_factor {
                        without.push(agent.id);
                    }
                }
                for agent_id in without {
                    if !end_sessions_but(context, agent_id, None)?.is_empty() {
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

/// Ends one login session, and the live connections opened with it.
pub async fn logout(store: &impl AgentStore, token: &str) -> Result<(), StorageError> {
    store.end_session(&secrets::token_digest(token)).await
}
