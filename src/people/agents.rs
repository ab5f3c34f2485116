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
//!
//! The functions here are written over the storage boundaries (`agent_store::AgentStore` for
//! logging in, `agent_administration::AgentAdministration` for the rest), and the decisions the
//! backends make inside their transactions are shared ones: [`AgentDraft`], [`Agent::changed`],
//! [`password_changed`], [`confirm_two_factor_of`], [`remove_two_factor_of`].

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use crate::base::field_error::FieldError;
use crate::base::secrets::{self, TokenDigest};
use crate::chat::delivery::{AccessEndReason, AccessEnded};
use crate::people::agent_administration::AgentAdministration;
use crate::people::agent_store::AgentStore;
use crate::people::two_factor::{self, TwoFactorError};
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
        serves(self.role, &self.sites, site_key)
    }
}

/// Whether an agent with `role` and `sites` serves `site_key` (admins serve every site).
pub fn serves(role: Role, sites: &[String], site_key: &str) -> bool {
    role == Role::Admin || sites.iter().any(|site| site == site_key)
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

/// A new agent checked, with their password hashed, waiting for an id (the backend's); made
/// only by [`AgentDraft::of`].
#[derive(Clone, Debug)]
pub struct AgentDraft {
    email: String,
    name: String,
    password_hash: String,
    role: Role,
    sites: Vec<String>,
    capacity: u32,
}

impl AgentDraft {
    /// Checks `new_agent` (email, password, capacity; the name defaults to the email's user) and
    /// hashes its password off the async threads.
    pub async fn of(new_agent: NewAgent) -> Result<AgentDraft, AgentError> {
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
        Ok(AgentDraft {
            email,
            name,
            password_hash,
            role: new_agent.role,
            sites: new_agent.sites,
            capacity: new_agent.capacity,
        })
    }

    /// The new agent's email, normalised.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The sites the new agent serves.
    pub fn sites(&self) -> &[String] {
        &self.sites
    }

    /// Refuses a draft naming a site that does not exist; `known_sites` are those of its sites
    /// that do.
    pub fn check_sites(&self, known_sites: &[String]) -> Result<(), AgentError> {
        match self.sites.iter().find(|site| !known_sites.contains(site)) {
            Some(site) => Err(AgentError::Invalid(FieldError::new("sites", format!("no such site {site:?}")))),
            None => Ok(()),
        }
    }

    /// The agent made from the draft, numbered `id`, at `now`.
    pub fn into_agent(self, id: u64, now: i64) -> Agent {
        Agent {
            id,
            email: self.email,
            name: self.name,
            password_hash: self.password_hash,
            role: self.role,
            sites: self.sites,
            capacity: self.capacity,
            disabled: false,
            created_at: now,
            two_factor: false,
            avatar: None,
            email_notifications_off: false,
        }
    }
}

/// Creates an agent; refused for an email that has an account, and for sites that do not exist.
pub async fn create(store: &impl AgentAdministration, new_agent: NewAgent) -> Result<Agent, AgentError> {
    store.insert(AgentDraft::of(new_agent).await?).await
}

/// Sets an agent's password (an admin's reset, a reset link); every session of the agent ends,
/// with its live connections.
pub async fn reset_password(
    store: &impl AgentAdministration,
    email: &str,
    password: &str,
) -> Result<Agent, AgentError> {
    let email = normalise_email(email)?;
    validate_password(password)?;
    let password_hash = hash_off_thread(password).await?;
    let Some(agent) = store.get_by_email(&email).await? else {
        return Err(AgentError::NotFound(email));
    };
    store.replace_password(agent.id, password_hash, None).await
}

/// What ends an agent's live connections once their password changed and their sessions but
/// `keep` ended (`ended`): when none stays, every connection of the agent; otherwise those of
/// each ended session.
pub fn password_changed(agent_id: u64, keep: Option<TokenDigest>, ended: Vec<TokenDigest>) -> Vec<AccessEnded> {
    match keep {
        None => vec![AccessEnded { agent_id, session: None, reason: AccessEndReason::PasswordChanged }],
        Some(_) => sessions_ended(agent_id, ended, AccessEndReason::PasswordChanged),
    }
}

/// What ends the live connections of each of an agent's sessions that ended (`ended`).
pub fn sessions_ended(agent_id: u64, ended: Vec<TokenDigest>, reason: AccessEndReason) -> Vec<AccessEnded> {
    ended.into_iter().map(|session| AccessEnded { agent_id, session: Some(session), reason }).collect()
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

impl AgentChanges {
    /// The changes with the name trimmed and checked, the capacity checked and the sites sorted
    /// without repeats.
    pub fn checked(mut self) -> Result<AgentChanges, AgentError> {
        self.name = self.name.trim().to_owned();
        if self.name.is_empty() || self.name.chars().count() > 100 {
            return Err(AgentError::Invalid(FieldError::new("name", "must be 1 to 100 characters")));
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(AgentError::Invalid(FieldError::new("capacity", format!("must be 1 to {MAX_CAPACITY}"))));
        }
        self.sites.sort();
        self.sites.dedup();
        Ok(self)
    }
}

impl Agent {
    /// The agent with `changes` made, once checked ([`AgentChanges::checked`]): refused for a site that does not exist
    /// (`known_sites` are those of the changes' sites that do) and when no enabled admin would be
    /// left (`other_enabled_admins` counts the others). Also says why the agent's live
    /// connections end, if their rights changed: they carry the rights they were opened with.
    pub fn changed(
        &self,
        changes: AgentChanges,
        known_sites: &[String],
        other_enabled_admins: usize,
    ) -> Result<(Agent, Option<AccessEndReason>), AgentError> {
        let changes = changes.checked()?;
        if let Some(site) = changes.sites.iter().find(|site| !known_sites.contains(site)) {
            return Err(AgentError::Invalid(FieldError::new("sites", format!("no site with key {site}"))));
        }
        let mut agent = self.clone();
        agent.name = changes.name;
        agent.role = changes.role;
        agent.capacity = changes.capacity;
        agent.sites = changes.sites;
        agent.disabled = changes.disabled;
        agent.email_notifications_off = changes.email_notifications_off;
        if other_enabled_admins == 0 && (agent.role != Role::Admin || agent.disabled) {
            return Err(AgentError::Invalid(FieldError::new("role", "kefu needs at least one enabled admin")));
        }
        let rights_changed = (self.role, &self.sites, self.disabled) != (agent.role, &agent.sites, agent.disabled);
        let ended = rights_changed.then_some(match agent.disabled {
            true => AccessEndReason::Disabled,
            false => AccessEndReason::RightsChanged,
        });
        Ok((agent, ended))
    }

    /// Whether the agent counts as an admin who keeps kefu administered.
    pub fn is_enabled_admin(&self) -> bool {
        self.role == Role::Admin && !self.disabled
    }
}

/// Changes an agent. Refused when it would leave no enabled admin; disabling ends every session
/// of the agent, and a change of rights their live connections.
pub async fn update(store: &impl AgentAdministration, id: u64, changes: AgentChanges) -> Result<Agent, AgentError> {
    store.update(id, changes).await
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

/// Removes every session of the agent except `keep`, inside a writer operation; returns the
/// digests removed.
pub(crate) fn end_sessions_but(
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

/// Gives a login its second factor: a right code makes the waiting session full (the ticket
/// becomes the session token); a wrong one changes nothing.
pub(crate) async fn complete_login(store: &Store, ticket: &str, code: &str) -> Result<Agent, AgentError> {
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
            let agent = context
                .transaction
                .open_table(tables::AGENTS)?
                .get(session.agent_id)?
                .map(|value| decode_json::<Agent>(value.value()))
                .transpose()?;
            let mut record = two_factor::record_in(context, session.agent_id)?;
            let agent = match complete_login_of(&mut session, agent, &mut record, &code, context.now) {
                Ok(agent) => agent,
                Err(error) => return Ok(Err(error)),
            };
            two_factor::store_in(context, agent.id, &record)?;
            context
                .transaction
                .open_table(tables::AGENT_SESSIONS)?
                .insert(&digest, encode_json(&session).as_slice())?;
            Ok(Ok(agent))
        })
        .await
}

/// Decides a login's code on both backends: `session` must be waiting for it and live, its
/// agent enabled, and `code` right for the agent's two-factor `record` (which it advances, so a
/// code passes once). The session is then full for a new lifetime. Any refusal is
/// [`AgentError::WrongCode`], and the caller stores nothing.
pub fn complete_login_of(
    session: &mut AgentSession,
    agent: Option<Agent>,
    record: &mut two_factor::TwoFactorRecord,
    code: &str,
    now: i64,
) -> Result<Agent, AgentError> {
    if session.stage != SessionStage::AwaitingCode || session.expires_at < now {
        return Err(AgentError::WrongCode);
    }
    let agent = agent.filter(|agent| !agent.disabled && agent.id == session.agent_id).ok_or(AgentError::WrongCode)?;
    if !record.check(code, now) {
        return Err(AgentError::WrongCode);
    }
    session.stage = SessionStage::Full;
    session.expires_at = now + SESSION_LIFETIME_MILLIS;
    Ok(agent)
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
    store: &impl AgentAdministration,
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
    store.replace_password(agent.id, password_hash, Some(keep)).await.map(drop)
}

async fn hash_off_thread(password: &str) -> Result<String, AgentError> {
    let password = password.to_owned();
    Ok(tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|error| StorageError::Panicked(error.to_string()))?)
}

/// Turns the agent's two-factor login on once `code` matches the secret of their setup
/// (`record`, changed in place); the session that confirmed it (`session`, if stored) becomes
/// full if it could only enrol. Returns the recovery codes, shown once. What both backends
/// store after [`confirm_two_factor`].
pub fn confirm_two_factor_of(
    agent: &mut Agent,
    record: &mut two_factor::TwoFactorRecord,
    session: Option<&mut AgentSession>,
    code: &str,
    now: i64,
) -> Result<Vec<String>, AgentError> {
    let codes = match record.confirm(code, now) {
        Ok(codes) => codes,
        // A wrong code is a wrong guess, counted like one at login.
        Err(TwoFactorError::WrongCode) => return Err(AgentError::WrongCode),
        Err(error) => return Err(error.into()),
    };
    agent.two_factor = true;
    if let Some(session) = session.filter(|session| session.stage == SessionStage::MustEnrol) {
        session.stage = SessionStage::Full;
        session.expires_at = now + SESSION_LIFETIME_MILLIS;
    }
    Ok(codes)
}

/// Turns two-factor login on for the agent once `code` matches the secret of their setup; the
/// session `session` (which confirmed it) becomes full if it could only enrol. Returns the
/// recovery codes, shown once.
pub async fn confirm_two_factor(
    store: &impl AgentAdministration,
    agent_id: u64,
    session: TokenDigest,
    code: &str,
) -> Result<Vec<String>, AgentError> {
    store.confirm_two_factor(agent_id, session, code).await
}

/// Turns the agent's own two-factor login off once `password` (checked in a slot of `checks`)
/// is theirs; `keep` (the session asking) stays, every other session ends. A wrong password
/// changes nothing.
pub async fn disable_own_two_factor(
    store: &impl AgentAdministration,
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

/// Turns `agent`'s two-factor login off: refused to the agent themself (not `by_admin`) where
/// the installation requires it (`required`), or when it is off. What both backends decide
/// before removing the secrets and ending the sessions.
pub fn remove_two_factor_of(agent: &mut Agent, required: bool, by_admin: bool) -> Result<(), AgentError> {
    if !by_admin && required {
        return Err(TwoFactorError::Required.into());
    }
    if !agent.two_factor && !by_admin {
        return Err(TwoFactorError::Off.into());
    }
    agent.two_factor = false;
    Ok(())
}

/// Turns the agent's two-factor login off: by the agent (who gives their password; refused when
/// the installation requires it; [`disable_own_two_factor`]) or by an admin's reset. Every
/// session of the agent but `keep` ends, since whoever held a lost phone may have logged in with
/// it.
pub async fn remove_two_factor(
    store: &impl AgentAdministration,
    agent_id: u64,
    keep: Option<TokenDigest>,
    by_admin: bool,
) -> Result<Agent, AgentError> {
    store.remove_two_factor(agent_id, keep, by_admin).await
}

/// Whether `admin` (as stored) may set the installation's switch to `on`: turning it on needs
/// their own two-factor login on.
pub fn check_require_two_factor(admin: Option<&Agent>, on: bool) -> Result<(), AgentError> {
    if on && !admin.is_some_and(|admin| admin.two_factor) {
        return Err(AgentError::Invalid(FieldError::new(
            "require_two_factor",
            "turn on two-factor login for your own account first (console, profile menu)",
        )));
    }
    Ok(())
}

/// Sets whether every agent needs two-factor login. Turning it on ends the sessions of agents
/// without it, so they log in again and enrol; an admin turns it on only with their own on.
pub async fn require_two_factor(store: &impl AgentAdministration, admin: &Agent, on: bool) -> Result<(), AgentError> {
    store.require_two_factor(admin.id, on).await
}

/// Ends one login session, and the live connections opened with it.
pub async fn logout(store: &impl AgentStore, token: &str) -> Result<(), StorageError> {
    store.end_session(&secrets::token_digest(token)).await
}
