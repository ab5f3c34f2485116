//! Each site's webhook events, kept in order for the gRPC API's `Subscribe`: a subscriber that
//! reconnects with the cursor of the last event it processed gets every later event once.
//!
//! [`record`] runs inside the writer just before the commit (registered by `server.rs` only while
//! gRPC is on), like the webhook outbox: an event is in `site_events_v1` exactly when it is
//! committed, numbered by one counter in commit order. Readers page through a site's events after
//! a cursor ([`after`]); [`prune`] drops those older than the retention.
//!
//! The batch's events are also published ([`FeedBatch`]), and the dispatcher hands them to
//! [`Listeners`], which pushes each to the bounded queue of every subscriber of its site without
//! waiting. A subscriber listens first and reads storage after its cursor second, so nothing falls
//! between; after that it reads storage again only when its queue overflowed, never on a timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{event_of, payload};
use crate::chat::writes::ChatWrites;
use crate::storage::writer::{Counter, Published, WriterExtension};
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

/// Events waiting for one subscriber between the dispatcher and its task. A subscriber further
/// behind is dropped from the listeners and reads storage from its cursor instead, so the
/// dispatcher never waits for it.
const LISTENER_QUEUE_CAPACITY: usize = 256;

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

/// The events a batch stored in the feed, each with its site, in commit order; published once
/// the batch is durable.
pub struct FeedBatch(pub Vec<(String, Arc<SiteEvent>)>);

/// What the batch stored in the feed so far.
#[derive(Default)]
struct FeedPublished(Vec<(String, Arc<SiteEvent>)>);

impl WriterExtension for FeedPublished {
    fn take_published(&mut self) -> Option<Published> {
        match self.0.is_empty() {
            true => None,
            false => Some(Box::new(FeedBatch(std::mem::take(&mut self.0)))),
        }
    }
}

/// Stores every event of the batch that webhooks carry, for its site, and publishes them.
pub fn record(context: &mut WriteContext<'_>) -> Result<(), StorageError> {
    if context.published().is_empty() {
        return Ok(());
    }
    let epoch = context.epoch();
    let described: Vec<_> = context.published().iter().filter_map(|event| event_of(event, epoch)).collect();
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
    for (site, event) in &rows {
        table.insert((site.as_str(), event.id), encode_json(event).as_slice())?;
    }
    drop(table);
    let published = &mut context.extension::<FeedPublished>().0;
    published.extend(rows.into_iter().map(|(site, event)| (site, Arc::new(event))));
    Ok(())
}

/// The subscribers of each site's events, fed by the dispatcher. Cloning is cheap.
#[derive(Clone, Default)]
pub struct Listeners {
    inner: Arc<ListenersInner>,
}

/// One site's listeners, by listener id: the API token it listens with, and its queue.
type SiteListeners = HashMap<u64, (u64, mpsc::Sender<Arc<SiteEvent>>)>;

#[derive(Default)]
struct ListenersInner {
    sites: Mutex<HashMap<String, SiteListeners>>,
    next_id: AtomicU64,
}

/// One subscriber's side: the site's events from the moment it listened. The receiver ends when
/// the subscriber fell too far behind (it then reads storage from its cursor and listens again).
/// Dropping it stops the listening.
pub struct Listening {
    pub events: mpsc::Receiver<Arc<SiteEvent>>,
    site: String,
    id: u64,
    listeners: Listeners,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.listeners.remove(&self.site, self.id);
    }
}

impl Listeners {
    pub fn new() -> Listeners {
        Listeners::default()
    }

    /// Starts receiving `site`'s events as they are committed, for the API token `token_id`.
    pub fn listen(&self, site: &str, token_id: u64) -> Listening {
        let (sender, events) = mpsc::channel(LISTENER_QUEUE_CAPACITY);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.sites.lock().entry(site.to_owned()).or_default().insert(id, (token_id, sender));
        Listening { events, site: site.to_owned(), id, listeners: self.clone() }
    }

    /// Hands a committed batch's events to their sites' listeners, without waiting: a listener
    /// whose queue is full is dropped, and its receiver ends.
    pub fn publish(&self, batch: FeedBatch) {
        let mut sites = self.inner.sites.lock();
        for (site, event) in batch.0 {
            let Some(listeners) = sites.get_mut(&site) else { continue };
            listeners.retain(|_, (_, listener)| listener.try_send(event.clone()).is_ok());
            if listeners.is_empty() {
                sites.remove(&site);
            }
        }
    }

    /// Drops the listeners of revoked tokens: their receivers end, and their subscribers, looking
    /// at their token again, find it revoked.
    pub fn end_tokens(&self, tokens: &[u64]) {
        let mut sites = self.inner.sites.lock();
        sites.retain(|_, listeners| {
            listeners.retain(|_, (token_id, _)| !tokens.contains(token_id));
            !listeners.is_empty()
        });
    }

    /// How many subscribers listen now, over all sites.
    pub fn n_listening(&self) -> usize {
        self.inner.sites.lock().values().map(HashMap::len).sum()
    }

    fn remove(&self, site: &str, id: u64) {
        let mut sites = self.inner.sites.lock();
        if let Some(listeners) = sites.get_mut(site) {
            listeners.remove(&id);
            if listeners.is_empty() {
                sites.remove(site);
            }
        }
    }
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

/// Removes every event of a site (inside the site's deletion).
pub fn erase_of_site(context: &WriteContext<'_>, site: &str) -> Result<(), StorageError> {
    let mut table = context.transaction.open_table(tables::SITE_EVENTS)?;
    let mut ids = Vec::new();
    for entry in table.range((site, 0)..=(site, u64::MAX))? {
        ids.push(entry?.0.value().1);
    }
    for id in ids {
        table.remove((site, id))?;
    }
    Ok(())
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
