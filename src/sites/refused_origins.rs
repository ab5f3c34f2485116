//! Origins kefu refused for a site: pages that embed the widget but are not among the site's
//! allowed origins. Kept in memory (bounded) so the site's admin page can list them with a
//! one-click "allow", and logged at most once per origin and site every [`LOG_INTERVAL`] so a
//! busy page cannot flood the log.
//!
//! Nothing here is stored: after a restart the list fills again as the pages load the widget.

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// How often one refused origin of one site is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(300);

/// Most refused origins remembered per site (the most recent ones stay).
pub const MAX_PER_SITE: usize = 20;

/// Most sites with a list; a key of a site that does not exist is never recorded.
const MAX_SITES: usize = 10_000;

/// Longest origin remembered, in bytes (an `Origin` header is short; a longer one is cut).
const MAX_ORIGIN_BYTES: usize = 200;

/// One refused origin of a site.
#[derive(Clone, Debug)]
pub struct RefusedOrigin {
    pub origin: String,
    /// Requests refused since kefu started.
    pub count: u64,
    /// When it was last refused (milliseconds since the Unix epoch).
    pub last_seen: i64,
    /// When it was last logged.
    logged_at: Instant,
}

#[derive(Default)]
pub struct RefusedOrigins {
    sites: DashMap<String, Vec<RefusedOrigin>>,
}

impl RefusedOrigins {
    pub fn new() -> RefusedOrigins {
        RefusedOrigins::default()
    }

    /// Records a refusal of `origin` for the site `site_key`; returns whether to log it now.
    pub fn record(&self, site_key: &str, origin: &str) -> bool {
        let origin: String = origin.chars().take(MAX_ORIGIN_BYTES).collect();
        if !self.sites.contains_key(site_key) && self.sites.len() >= MAX_SITES {
            return false;
        }
        let now = Instant::now();
        let mut list = self.sites.entry(site_key.to_owned()).or_default();
        let last_seen = crate::base::clock::now_millis();
        if let Some(known) = list.iter_mut().find(|known| known.origin == origin) {
            known.count += 1;
            known.last_seen = last_seen;
            if now.duration_since(known.logged_at) >= LOG_INTERVAL {
                known.logged_at = now;
                return true;
            }
            return false;
        }
        if list.len() >= MAX_PER_SITE {
            let oldest = list.iter().enumerate().min_by_key(|(_, known)| known.last_seen).map(|(index, _)| index);
            if let Some(index) = oldest {
                list.remove(index);
            }
        }
        list.push(RefusedOrigin { origin, count: 1, last_seen, logged_at: now });
        true
    }

    /// The refused origins of a site, most recent first.
    pub fn list(&self, site_key: &str) -> Vec<RefusedOrigin> {
        let mut list = self.sites.get(site_key).map(|list| list.clone()).unwrap_or_default();
        list.sort_by_key(|known| std::cmp::Reverse(known.last_seen));
        list
    }

    /// Whether `origin` was refused for the site (an "allow" must name one from the list).
    pub fn contains(&self, site_key: &str, origin: &str) -> bool {
        self.sites.get(site_key).is_some_and(|list| list.iter().any(|known| known.origin == origin))
    }

    /// Forgets an origin of a site (it was allowed).
    pub fn forget(&self, site_key: &str, origin: &str) {
        if let Some(mut list) = self.sites.get_mut(site_key) {
            list.retain(|known| known.origin != origin);
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
        for n in 0..MAX_PER_SITE + 5 {
            refused.record("shop", &format!("https://{n}.example"));
        }
        let list = refused.list("shop");
        assert_eq!(list.len(), MAX_PER_SITE);
        assert!(refused.contains("shop", &format!("https://{}.example", MAX_PER_SITE + 4)));
        assert!(refused.list("other").is_empty());
        refused.forget("shop", &format!("https://{}.example", MAX_PER_SITE + 4));
        assert_eq!(refused.list("shop").len(), MAX_PER_SITE - 1);
    }
}
