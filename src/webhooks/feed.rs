//! Each site's webhook events, kept in order for the gRPC API's `Subscribe`: a subscriber that
//! reconnects with the cursor of the last event it processed gets every later event once.
//!
//! [`record`] runs inside the writer just before the commit (registered by `server.rs` only while
//! gRPC is on), like the webhook outbox: an event is in `site_events_v1` exactly when it is
//! committed, numbered by one counter in commit order. Readers page through a site's events after
//! a cursor ([`after`]); [`prune`] drops those older than the retention.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{describe, payload};
use crate::chat::writes::ChatWrites;
use crate::storage::writer::Counter;
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

/// One stored event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteEvent {
    /// The event's cursor: increasing in commit order across all sites.
    pub id: u64,
    pub event_type: String,
    /// The body a webhook gets for this event.
    pub payload: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Stores every event of the batch that webhooks carry, for its site.
pub fn record(context: &mut WriteContext<'_>) -> Result<(), StorageError> {
    if context.published().is_empty() {
        return Ok(());
    }
    let events = context.published().to_vec();
    let mut described = Vec::new();
    for event in &events {
        if let Some(found) = describe(context, event)? {
            described.push(found);
        }
    }
    let now = context.now;
    let mut rows = Vec::with_capacity(described.len());
    for (site, event_type, data) in described {
        let id = context.next_id(Counter::SiteEvent);
        let event = SiteEvent {
            id,
            event_type: event_type.to_owned(),
            payload: payload(event_type, now, &data),
            created_at: now,
        };
        rows.push((site, event));
    }
    let mut table = context.transaction.open_table(tables::SITE_EVENTS)?;
    for (site, event) in rows {
        table.insert((site.as_str(), event.id), encode_json(&event).as_slice())?;
    }
    Ok(())
}

/// Up to `limit` of `site`'s events after the cursor `after`, oldest first.
pub fn after(
    transaction: &ReadTransaction,
    site: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<SiteEvent>, StorageError> {
    let table = transaction.open_table(tables::SITE_EVENTS)?;
    let start = after.saturating_add(1);
    let mut found = Vec::new();
    for entry in table.range((site, start)..=(site, u64::MAX))?.take(limit) {
        found.push(decode_json(entry?.1.value())?);
    }
    Ok(found)
}

/// The cursor of `site`'s newest event, 0 when it has none.
pub fn latest(transaction: &ReadTransaction, site: &str) -> Result<u64, StorageError> {
    let table = transaction.open_table(tables::SITE_EVENTS)?;
    let newest = table.range((site, 0)..=(site, u64::MAX))?.next_back().transpose()?;
    Ok(newest.map(|(key, _)| key.value().1).unwrap_or(0))
}

/// Removes the events created before `cutoff` (Unix milliseconds); returns how many.
pub async fn prune(store: &Store, cutoff: i64) -> Result<usize, StorageError> {
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::SITE_EVENTS)?;
            // Events are stored in commit order per site, so each site's old ones come first.
            let mut old: Vec<(String, u64)> = Vec::new();
            let mut skip_site: Option<String> = None;
            for entry in table.iter()? {
                let (key, value) = entry?;
                let (site, id) = key.value();
                if skip_site.as_deref() == Some(site) {
                    continue;
                }
                let event: SiteEvent = decode_json(value.value())?;
                if event.created_at < cutoff {
                    old.push((site.to_owned(), id));
                } else {
                    skip_site = Some(site.to_owned());
                }
            }
            for (site, id) in &old {
                table.remove((site.as_str(), *id))?;
            }
            Ok(Ok(old.len()))
        })
        .await
}
