//! Origins kefu refused for a site: pages that embed the widget but are not among the site's
//! allowed origins. The site's admin page lists them with a one-click "allow"; each is logged at
//! most once per origin and site every [`LOG_INTERVAL`] so a busy page cannot flood the log.
//!
//! The list lives in memory (bounded) and is saved to `refused_origins_v1` through the writer:
//! a request only marks its site changed, and [`run_saver`] writes the changed sites at most once
//! every [`SAVE_INTERVAL`] and at shutdown, so a flood of refused requests costs one small write
//! per interval. A crash loses at most the last interval's counts.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

/// How often one refused origin of one site is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(300);

/// How often the changed lists are written at most.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// Most refused origins remembered per site (the most recent ones stay).
pub const MAX_PER_SITE: usize = 20;

/// Most sites with a list; a key of a site that does not exist is never recorded.
const MAX_SITES: usize = 10_000;

/// Longest origin remembered, in bytes (an `Origin` header is short; a longer one is cut).
const MAX_ORIGIN_BYTES: usize = 200;

/// One refused origin of a site.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefusedOrigin {
    pub origin: String,
    /// Requests refused.
    pub count: u64,
    /// When it was last refused (milliseconds since the Unix epoch).
    pub last_seen: i64,
    /// When it was last logged; never for one read back after a restart.
    #[serde(skip)]
    logged_at: Option<Instant>,
}

#[derive(Clone, Default)]
pub struct RefusedOrigins {
    sites: Arc<DashMap<String, Vec<RefusedOrigin>>>,
    /// Sites whose list changed since it was last saved.
    changed: Arc<Mutex<HashSet<String>>>,
}

impl RefusedOrigins {
    pub fn new() -> RefusedOrigins {
        RefusedOrigins::default()
    }

    /// The lists saved before the last stop.
    pub async fn load(store: &Store) -> Result<RefusedOrigins, StorageError> {
        let saved = store
            .read(|transaction| {
                let table = transaction.open_table(tables::REFUSED_ORIGINS)?;
                let mut saved = Vec::new();
                for entry in table.iter()? {
                    let (site_key, list) = entry?;
                    let list: Vec<RefusedOrigin> = decode_json(list.value())?;
                    saved.push((site_key.value().to_owned(), list));
                }
                Ok(saved)
            })
            .await?;
        let refused = RefusedOrigins::new();
        for (site_key, list) in saved {
            refused.sites.insert(site_key, list);
        }
        Ok(refused)
    }

    /// Records a refusal of `origin` for the site `site_key`; returns whether to log it now.
    pub fn record(&self, site_key: &str, origin: &str) -> bool {
        let origin: String = origin.chars().take(MAX_ORIGIN_BYTES).collect();
        if !self.sites.contains_key(site_key) && self.sites.len() >= MAX_SITES {
            return false;
        }
        let now = Instant::now();
        let log = {
            let mut list = self.sites.entry(site_key.to_owned()).or_default();
            let last_seen = crate::base::clock::now_millis();
            if let Some(known) = list.iter_mut().find(|known| known.origin == origin) {
                known.count += 1;
                known.last_seen = last_seen;
                let due = known.logged_at.is_none_or(|logged_at| now.duration_since(logged_at) >= LOG_INTERVAL);
                if due {
                    known.logged_at = Some(now);
                }
                due
            } else {
                if list.len() >= MAX_PER_SITE {
                    let oldest =
                        list.iter().enumerate().min_by_key(|(_, known)| known.last_seen).map(|(index, _)| index);
                    if let Some(index) = oldest {
                        list.remove(index);
                    }
                }
                list.push(RefusedOrigin { origin, count: 1, last_seen, logged_at: Some(now) });
                true
            }
        };
        self.mark_changed(site_key);
        log
    }

    /// The refused origins of a site, most recent first.
    pub fn list(&self, site_key: &str) -> Vec<RefusedOrigin> {
        let mut list = self.sites.get(site_key).map(|list| list.clone()).unwrap_or_default();
        list.sort_by_key(|known| std::cmp::Reverse(known.last_seen));
        list
    }

    /// Forgets an origin of a site (it was allowed).
    pub fn forget(&self, site_key: &str, origin: &str) {
        if let Some(mut list) = self.sites.get_mut(site_key) {
            list.retain(|known| known.origin != origin);
        }
        self.mark_changed(site_key);
    }

    /// Forgets every origin of a deleted site, so no later save writes its list again.
    pub fn forget_site(&self, site_key: &str) {
        self.sites.remove(site_key);
        if let Ok(mut changed) = self.changed.lock() {
            changed.remove(site_key);
        }
    }

    fn mark_changed(&self, site_key: &str) {
        if let Ok(mut changed) = self.changed.lock() {
            changed.insert(site_key.to_owned());
        }
    }

    /// Writes the lists changed since the last save, in one write.
    pub async fn save(&self, store: &Store) -> Result<(), StorageError> {
        let changed: Vec<String> = match self.changed.lock() {
            Ok(mut changed) => changed.drain().collect(),
            Err(_) => return Ok(()),
        };
        if changed.is_empty() {
            return Ok(());
        }
        let lists: Vec<(String, Vec<RefusedOrigin>)> = changed
            .iter()
            .map(|site_key| (site_key.clone(), self.sites.get(site_key).map(|list| list.clone()).unwrap_or_default()))
            .collect();
        let saved = store
            .write(move |context| {
                let sites = context.transaction.open_table(tables::SITES)?;
                let mut table = context.transaction.open_table(tables::REFUSED_ORIGINS)?;
                for (site_key, list) in &lists {
                    // A save that was on its way when the site was deleted writes nothing for it.
                    if list.is_empty() || sites.get(site_key.as_str())?.is_none() {
                        table.remove(site_key.as_str())?;
                    } else {
                        table.insert(site_key.as_str(), encode_json(list).as_slice())?;
                    }
                }
                Ok(Ok::<_, StorageError>(()))
            })
            .await;
        if saved.is_err() {
            // Saved next time.
            for site_key in changed {
                self.mark_changed(&site_key);
            }
        }
        saved
    }
}

/// Removes a site's saved list (inside the site's deletion).
pub fn erase_of_site(context: &WriteContext<'_>, site_key: &str) -> Result<(), StorageError> {
    context.transaction.open_table(tables::REFUSED_ORIGINS)?.remove(site_key)?;
    Ok(())
}

/// Saves the changed lists every [`SAVE_INTERVAL`] until `shutdown`, then once more.
pub async fn run_saver(refused: RefusedOrigins, store: Store, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(SAVE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticker.tick() => false,
        };
        if let Err(error) = refused.save(&store).await {
            tracing::error!(%error, "saving the refused origins failed");
        }
        if stopping {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_keeps_its_latest_origins_and_logs_each_once_per_interval() {
        let refused = RefusedOrigins::new();
        assert!(refused.record("shop", "https://a.example"));
        assert!(!refused.record("shop", "https://a.example"), "logged twice within the interval");
        assert_eq!(refused.list("shop")[0].count, 2);
        assert_eq!(refused.changed.lock().unwrap().len(), 1, "a flood marks its site once, for one write");
        for n in 0..MAX_PER_SITE + 5 {
            refused.record("shop", &format!("https://{n}.example"));
        }
        let list = refused.list("shop");
        assert_eq!(list.len(), MAX_PER_SITE);
        let newest = format!("https://{}.example", MAX_PER_SITE + 4);
        assert!(refused.list("shop").iter().any(|known| known.origin == newest));
        assert!(refused.list("other").is_empty());
        refused.forget("shop", &format!("https://{}.example", MAX_PER_SITE + 4));
        assert_eq!(refused.list("shop").len(), MAX_PER_SITE - 1);
    }
}
