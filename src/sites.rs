//! Sites: each website or app that embeds kefu, with its key, secret, allowed origins and settings.
//!
//! Sites change rarely and are read on every connection, so [`SiteDirectory`] keeps them decoded
//! (with their compiled sensitive-word filter) and is told when one changes.

use std::sync::Arc;

use dashmap::DashMap;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::secrets;
use crate::sensitive_words::{SensitiveMode, SensitiveWordFilter};
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Site {
    /// The public key in the embed snippet and URLs.
    pub key: String,
    pub name: String,
    /// Signs visitor identities (HMAC-SHA256 of the user id); never sent to visitors.
    pub secret: String,
    /// Origins allowed to embed the widget and open visitor sockets; `*` allows any.
    pub allowed_origins: Vec<String>,
    pub welcome_text: String,
    /// Widget colour, `#rrggbb`.
    pub color: String,
    /// Widget position: `right` or `left`.
    pub position: String,
    /// When set, a visitor can claim a user identity only with a valid signature.
    pub enforce_identity: bool,
    pub prechat_form: bool,
    pub satisfaction_rating: bool,
    pub sensitive_words: Vec<String>,
    pub sensitive_mode: SensitiveMode,
    pub created_at: i64,
    /// Days of history kept (the current UTC day counts as one); `None` keeps it forever.
    /// See src/retention.rs for how day shards shared by sites are dropped.
    pub retention_days: Option<u32>,
}

impl Default for Site {
    fn default() -> Self {
        Site {
            key: String::new(),
            name: String::new(),
            secret: String::new(),
            allowed_origins: Vec::new(),
            welcome_text: "Hi! How can we help you today?".to_owned(),
            color: "#1f6feb".to_owned(),
            position: "right".to_owned(),
            enforce_identity: false,
            prechat_form: false,
            satisfaction_rating: false,
            sensitive_words: Vec::new(),
            sensitive_mode: SensitiveMode::Mask,
            created_at: 0,
            retention_days: None,
        }
    }
}

impl Site {
    /// Whether a request from `origin` may act for this site. Requests without an `Origin`
    /// header (native apps, servers) are allowed: the header guards browsers against other pages.
    pub fn allows_origin(&self, origin: Option<&str>, own_origin: &str) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim_end_matches('/');
        origin.eq_ignore_ascii_case(own_origin)
            || self
                .allowed_origins
                .iter()
                .any(|allowed| allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("no site with key {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What `create` needs; everything else takes its default.
#[derive(Clone, Debug, Default)]
pub struct NewSite {
    pub name: String,
    pub allowed_origins: Vec<String>,
    pub enforce_identity: bool,
    pub welcome_text: Option<String>,
    pub sensitive_words: Vec<String>,
    pub sensitive_mode: SensitiveMode,
    pub prechat_form: bool,
    pub satisfaction_rating: bool,
}

pub async fn create(store: &Store, new_site: NewSite) -> Result<Site, SiteError> {
    let name = new_site.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(SiteError::Invalid("name: must be 1 to 100 characters".into()));
    }
    for origin in &new_site.allowed_origins {
        if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(SiteError::Invalid(format!("origin {origin:?}: must be * or start with http:// or https://")));
        }
    }
    let mut site = Site {
        key: secrets::new_hex_id(8),
        name,
        secret: secrets::new_hex_id(32),
        allowed_origins: new_site.allowed_origins,
        enforce_identity: new_site.enforce_identity,
        sensitive_words: new_site.sensitive_words,
        sensitive_mode: new_site.sensitive_mode,
        prechat_form: new_site.prechat_form,
        satisfaction_rating: new_site.satisfaction_rating,
        created_at: crate::clock::now_millis(),
        ..Site::default()
    };
    if let Some(welcome_text) = new_site.welcome_text {
        site.welcome_text = welcome_text;
    }
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::SITES)?;
            table.insert(site.key.as_str(), encode_json(&site).as_slice())?;
            Ok(Ok(site))
        })
        .await
}

/// Replaces a site's record (the key must exist).
pub async fn save(store: &Store, site: Site) -> Result<Site, SiteError> {
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::SITES)?;
            if table.get(site.key.as_str())?.is_none() {
                return Ok(Err(SiteError::NotFound(site.key)));
            }
            table.insert(site.key.as_str(), encode_json(&site).as_slice())?;
            Ok(Ok(site))
        })
        .await
}

pub fn get(transaction: &ReadTransaction, key: &str) -> Result<Option<Site>, StorageError> {
    let table = transaction.open_table(tables::SITES)?;
    table.get(key)?.map(|value| decode_json(value.value())).transpose()
}

pub fn list(transaction: &ReadTransaction) -> Result<Vec<Site>, StorageError> {
    let table = transaction.open_table(tables::SITES)?;
    table.iter()?.map(|entry| decode_json(entry?.1.value())).collect()
}

/// A site with what is derived from it once per change.
pub struct SiteRuntime {
    pub site: Site,
    pub filter: SensitiveWordFilter,
}

/// Decoded sites, shared by every connection.
#[derive(Clone)]
pub struct SiteDirectory {
    store: Store,
    sites: Arc<DashMap<String, Arc<SiteRuntime>>>,
}

impl SiteDirectory {
    pub fn new(store: Store) -> SiteDirectory {
        SiteDirectory { store, sites: Arc::new(DashMap::new()) }
    }

    /// The site with `key`, from memory or the database.
    pub async fn get(&self, key: &str) -> Result<Option<Arc<SiteRuntime>>, StorageError> {
        if let Some(found) = self.sites.get(key) {
            return Ok(Some(found.clone()));
        }
        let owned_key = key.to_owned();
        let Some(site) = self.store.read(move |transaction| get(transaction, &owned_key)).await? else {
            return Ok(None);
        };
        let runtime = Arc::new(SiteRuntime {
            filter: SensitiveWordFilter::new(&site.sensitive_words, site.sensitive_mode),
            site,
        });
        self.sites.insert(key.to_owned(), runtime.clone());
        Ok(Some(runtime))
    }

    /// Forgets a changed site so the next `get` reads it again.
    pub fn invalidate(&self, key: &str) {
        self.sites.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        let site = Site { allowed_origins: vec!["https://shop.example".into()], ..Site::default() };
        let own = "http://localhost:8080";
        assert!(site.allows_origin(None, own));
        assert!(site.allows_origin(Some("https://shop.example"), own));
        assert!(site.allows_origin(Some("http://localhost:8080"), own));
        assert!(!site.allows_origin(Some("https://evil.example"), own));
        let open = Site { allowed_origins: vec!["*".into()], ..Site::default() };
        assert!(open.allows_origin(Some("https://anywhere.example"), own));
    }
}
