//! The audit log: who changed what and when, one entry per admin action.
//!
//! Entries are appended by the admin handlers right after the change they describe commits, and
//! are never edited. Ids grow with time, so the newest entries are the last keys.
//!
//! [`AuditLog`] is its storage boundary: [`Store`] implements it here, the cluster's PostgreSQL
//! in `cluster::audit`; both page with [`AuditPage`].

use std::future::Future;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::people::agents::Agent;
use crate::people::principal::Principal;
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// Most entries one page of the log shows.
pub const PAGE_SIZE: usize = 100;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor_id: u64,
    pub actor_email: String,
    /// What was done, as `subject.verb`: `site.create`, `agent.disable`, ...
    pub action: String,
    /// What it was done to: a site key, an agent email, a team name.
    pub target: String,
    /// The changed values, readable by a person.
    pub detail: String,
}

/// Who made a change: an admin, or someone at the server's command line.
pub struct Actor {
    pub id: u64,
    pub email: String,
}

impl Actor {
    /// `kefu admin ...` on the server itself (whoever can open its data directory).
    pub fn command_line() -> Actor {
        Actor { id: 0, email: "kefu admin (command line)".to_owned() }
    }
}

impl From<&Principal> for Actor {
    fn from(principal: &Principal) -> Actor {
        match principal {
            Principal::Agent(agent) => Actor::from(agent),
            Principal::ApiToken(token) => Actor { id: 0, email: format!("API token {:?} (#{})", token.name, token.id) },
            Principal::Visitor(visitor) => Actor { id: visitor.id, email: format!("visitor #{}", visitor.id) },
        }
    }
}

impl From<&Agent> for Actor {
    fn from(agent: &Agent) -> Actor {
        Actor { id: agent.id, email: agent.email.clone() }
    }
}

/// An entry to append: everything but its id and time, which the log gives.
pub struct NewAuditEntry {
    pub actor_id: u64,
    pub actor_email: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl NewAuditEntry {
    pub fn at(self, id: u64, at: i64) -> AuditEntry {
        let NewAuditEntry { actor_id, actor_email, action, target, detail } = self;
        AuditEntry { id, at, actor_id, actor_email, action, target, detail }
    }
}

/// The audit log's storage boundary.
pub trait AuditLog: Send + Sync {
    /// Appends one entry with the next id and the time now.
    fn append(&self, entry: NewAuditEntry) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Up to [`PAGE_SIZE`] matching entries, newest first.
    fn search(&self, filter: AuditFilter) -> impl Future<Output = Result<Vec<AuditEntry>, StorageError>> + Send;
}

impl AuditLog for Store {
    async fn append(&self, entry: NewAuditEntry) -> Result<(), StorageError> {
        self.write(move |context| {
            let mut table = context.transaction.open_table(tables::AUDIT_LOG)?;
            // Only the writer appends, so the next after the largest id is free.
            let id = table.last()?.map(|(key, _)| key.value() + 1).unwrap_or(1);
            table.insert(id, encode_json(&entry.at(id, context.now)).as_slice())?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await
    }

    async fn search(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, StorageError> {
        self.read(move |transaction| search(transaction, &filter)).await
    }
}

/// Appends one entry. The change it describes has already committed, so a failure here is
/// logged rather than undoing it.
pub async fn record(log: &impl AuditLog, actor: impl Into<Actor>, action: &str, target: &str, detail: String) {
    let Actor { id: actor_id, email: actor_email } = actor.into();
    let entry = NewAuditEntry { actor_id, actor_email, action: action.to_owned(), target: target.to_owned(), detail };
    if let Err(error) = log.append(entry).await {
        tracing::error!(%error, action, "writing the audit log failed");
    }
}

/// Which entries to show.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Part of the actor's email.
    pub actor: Option<String>,
    /// Part of the action name.
    pub action: Option<String>,
    /// Part of the target.
    pub target: Option<String>,
    /// Unix milliseconds, inclusive.
    pub from: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    /// Only entries older than this id (the cursor of the next page).
    pub before: Option<u64>,
}

impl AuditFilter {
    fn matches(&self, entry: &AuditEntry) -> bool {
        let contains = |wanted: &Option<String>, text: &str| {
            wanted.as_deref().is_none_or(|wanted| text.to_lowercase().contains(&wanted.to_lowercase()))
        };
        contains(&self.actor, &entry.actor_email)
            && contains(&self.action, &entry.action)
            && contains(&self.target, &entry.target)
            && self.from.is_none_or(|from| entry.at >= from)
            && self.until.is_none_or(|until| entry.at < until)
    }
}

/// A page of a search, filled from entries newest first, whatever they are read from.
#[derive(Default)]
pub struct AuditPage {
    pub found: Vec<AuditEntry>,
}

impl AuditPage {
    /// Takes the next entry (older than every one before); false once the page is full or no
    /// older entry can match.
    pub fn offer(&mut self, entry: AuditEntry, filter: &AuditFilter) -> bool {
        if filter.from.is_some_and(|from| entry.at < from) {
            // Older entries only from here on.
            return false;
        }
        if filter.matches(&entry) {
            self.found.push(entry);
        }
        self.found.len() < PAGE_SIZE
    }
}

/// Up to [`PAGE_SIZE`] matching entries, newest first.
pub fn search(transaction: &ReadTransaction, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StorageError> {
    let table = transaction.open_table(tables::AUDIT_LOG)?;
    let range = table.range(..filter.before.unwrap_or(u64::MAX))?;
    let mut page = AuditPage::default();
    for entry in range.rev() {
        if !page.offer(decode_json(entry?.1.value())?, filter) {
            break;
        }
    }
    Ok(page.found)
}
