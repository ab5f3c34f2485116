//! The audit log: who changed what and when, one entry per admin action.
//!
//! Entries are appended by the admin handlers right after the change they describe commits, and
//! are never edited. Ids grow with time, so the newest entries are the last keys.

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

/// Appends one entry. The change it describes has already committed, so a failure here is
/// logged rather than undoing it.
pub async fn record(store: &Store, actor: impl Into<Actor>, action: &str, target: &str, detail: String) {
    let Actor { id: actor_id, email: actor_email } = actor.into();
    let (action, target) = (action.to_owned(), target.to_owned());
    let logged_action = action.clone();
    let written = store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::AUDIT_LOG)?;
            // Only the writer appends, so the next after the largest id is free.
            let id = table.last()?.map(|(key, _)| key.value() + 1).unwrap_or(1);
            let entry = AuditEntry { id, at: context.now, actor_id, actor_email, action, target, detail };
            table.insert(id, encode_json(&entry).as_slice())?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await;
    if let Err(error) = written {
        tracing::error!(%error, action = logged_action, "writing the audit log failed");
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

/// Up to [`PAGE_SIZE`] matching entries, newest first.
pub fn search(transaction: &ReadTransaction, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StorageError> {
    let table = transaction.open_table(tables::AUDIT_LOG)?;
    let range = table.range(..filter.before.unwrap_or(u64::MAX))?;
    let mut found = Vec::new();
    for entry in range.rev() {
        let entry: AuditEntry = decode_json(entry?.1.value())?;
        if filter.from.is_some_and(|from| entry.at < from) {
            // Older entries only from here on.
            break;
        }
        if filter.matches(&entry) {
            found.push(entry);
            if found.len() == PAGE_SIZE {
                break;
            }
        }
    }
    Ok(found)
}
