//! The audit log: who changed what and when, one entry per admin action.
//!
//! Entries are appended by the admin handlers right after the change they describe commits, and
//! are never edited. Ids grow with time, so the newest entries are the last keys.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::agents::Agent;
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

/// Appends one entry for `actor`.
pub async fn record(
    store: &Store,
    actor: &Agent,
    action: &str,
    target: &str,
    detail: String,
) -> Result<(), StorageError> {
    let (actor_id, actor_email) = (actor.id, actor.email.clone());
    let (action, target) = (action.to_owned(), target.to_owned());
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::AUDIT_LOG)?;
            // Only the writer appends, so the next after the largest id is free.
            let id = table.last()?.map(|(key, _)| key.value() + 1).unwrap_or(1);
            let entry = AuditEntry { id, at: context.now, actor_id, actor_email, action, target, detail };
            table.insert(id, encode_json(&entry).as_slice())?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await
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
