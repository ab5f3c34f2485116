//! Sites: each website or app that embeds kefu, with its key, secret, allowed origins and settings.
//!
//! Sites change rarely and are read on every connection, so [`SiteDirectory`] keeps them decoded
//! (with their compiled sensitive-word filter) and is told when one changes.

pub mod business_hours;
pub mod refused_origins;
pub mod status;
pub mod store;

use std::sync::Arc;

use dashmap::DashMap;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::base::field_error::FieldError;
use crate::base::secrets;
use crate::chat::sensitive_words::{SensitiveMode, SensitiveWordFilter};
use crate::routing::rules::{self, CompiledRules, RoutingRule};
use crate::sites::business_hours::BusinessHours;
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
    /// When agents answer; outside them the widget offers the offline form.
    pub business_hours: BusinessHours,
    /// Which team a new conversation waits for (see src/routing_rules.rs).
    pub routing_rules: Vec<RoutingRule>,
    /// The team of conversations no rule routes; `None` lets every agent of the site take them.
    pub default_team: Option<u64>,
    /// The language of emails about the site (`en`, `zh-CN`); empty follows the visitor's widget.
    pub email_language: String,
    /// Emails a closed conversation's transcript to its visitor, when their email is known.
    pub transcript_on_close: bool,
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
            business_hours: BusinessHours::default(),
            routing_rules: Vec::new(),
            default_team: None,
            email_language: String::new(),
            transcript_on_close: false,
        }
    }
}

/// Longest welcome text, in characters.
pub const MAX_WELCOME_CHARS: usize = 1000;
/// Most words in a site's sensitive-word list.
pub const MAX_SENSITIVE_WORDS: usize = 5000;
/// Longest retention period, in days (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl Site {
    /// The site's time zone (of its business hours and its reports); UTC if the stored name is
    /// unknown, which validation refuses.
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.business_hours.time_zone).unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// Every problem with the site's settings, each as (field, message); empty when valid.
    /// Team references are checked against storage by [`save`].
    /// The teams its routing rules and default team send conversations to, each of which must
    /// be one of its own.
    pub fn routed_teams(&self) -> impl Iterator<Item = u64> + '_ {
        self.routing_rules.iter().map(|rule| rule.team).chain(self.default_team)
    }

    /// The site, or the first of its invalid fields as an error.
    pub fn checked(&self) -> Result<(), SiteError> {
        match self.validate().into_iter().next() {
            Some((field, message)) => Err(SiteError::Invalid(FieldError::new(field, message))),
            None => Ok(()),
        }
    }

    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() || self.name.chars().count() > 100 {
            problems.push(("name", "must be 1 to 100 characters".to_owned()));
        }
        if let Some(origin) = self.allowed_origins.iter().find(|origin| {
            *origin != "*"
                && url::Url::parse(origin)
                    .map_or(true, |url| url.origin().unicode_serialization() != origin.trim_end_matches('/'))
        }) {
            problems
                .push(("allowed_origins", format!("{origin:?} is not * or an origin such as https://shop.example")));
        }
        if self.welcome_text.chars().count() > MAX_WELCOME_CHARS {
            problems.push(("welcome_text", format!("at most {MAX_WELCOME_CHARS} characters")));
        }
        let is_colour = self.color.len() == 7
            && self.color.starts_with('#')
            && self.color[1..].chars().all(|digit| digit.is_ascii_hexdigit());
        if !is_colour {
            problems.push(("color", format!("{:?} is not a colour like #1f6feb", self.color)));
        }
        if self.position != "right" && self.position != "left" {
            problems.push(("position", "must be right or left".to_owned()));
        }
        if self.sensitive_words.len() > MAX_SENSITIVE_WORDS {
            problems.push(("sensitive_words", format!("at most {MAX_SENSITIVE_WORDS} words")));
        } else if self.sensitive_words.iter().any(|word| word.chars().count() > 100) {
            problems.push(("sensitive_words", "a word is longer than 100 characters".to_owned()));
        }
        if self.retention_days.is_some_and(|days| days == 0 || days > MAX_RETENTION_DAYS) {
            problems
                .push(("retention_days", format!("must be 1 to {MAX_RETENTION_DAYS} days, or empty to keep forever")));
        }
        if let Err((field, message)) = self.business_hours.validate() {
            problems.push((field, message));
        }
        if !["", "en", "zh-CN"].contains(&self.email_language.as_str()) {
            problems.push(("email_language", "must be en, zh-CN or empty (the visitor's language)".to_owned()));
        }
        if let Err(message) = rules::validate(&self.routing_rules) {
            problems.push(("routing_rules", message));
        }
        problems
    }

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

/// The tag a site's pages include to show the widget, served from `base` (kefu's URL).
pub fn embed_snippet(base: &str, key: &str) -> String {
    format!("<script src=\"{base}/widget.js\" data-site=\"{key}\" async></script>")
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("no site with key {0}")]
    NotFound(String),
    #[error(transparent)]
    Invalid(FieldError),
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

/// The server's own time zone as an IANA name, the one a new site starts with; UTC when the
/// system names none.
pub fn server_time_zone() -> String {
    jiff::tz::TimeZone::system().iana_name().unwrap_or("UTC").to_owned()
}

/// A new site's record: a new key and secret, the server's time zone, the given settings,
/// validated (the first invalid field is the error). Every backend stores sites made here.
pub fn new_record(new_site: NewSite) -> Result<Site, SiteError> {
    let mut site = Site {
        key: new_key(),
        name: new_site.name.trim().to_owned(),
        secret: new_secret(),
        allowed_origins: new_site.allowed_origins,
        enforce_identity: new_site.enforce_identity,
        sensitive_words: new_site.sensitive_words,
        sensitive_mode: new_site.sensitive_mode,
        prechat_form: new_site.prechat_form,
        satisfaction_rating: new_site.satisfaction_rating,
        created_at: crate::base::clock::now_millis(),
        ..Site::default()
    };
    site.business_hours.time_zone = server_time_zone();
    if let Some(welcome_text) = new_site.welcome_text {
        site.welcome_text = welcome_text;
    }
    site.checked()?;
    Ok(site)
}

pub async fn create(store: &Store, new_site: NewSite) -> Result<Site, SiteError> {
    let site = new_record(new_site)?;
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::SITES)?;
            table.insert(site.key.as_str(), encode_json(&site).as_slice())?;
            Ok(Ok(site))
        })
        .await
}

/// A new site key (32 random bits in hex).
pub fn new_key() -> String {
    secrets::new_hex_id(8)
}

/// A new secret for signing visitor identities.
pub fn new_secret() -> String {
    secrets::new_hex_id(32)
}

/// The message of a team a site routes to that is not one of the site's teams.
pub fn foreign_team(team_id: u64) -> SiteError {
    SiteError::Invalid(FieldError::new("routing_rules", format!("team {team_id} is not a team of this site")))
}

/// Replaces a site's record (the key must exist, the settings be valid, and every team it
/// routes to belong to it). The key, secret and creation time stay as stored.
pub async fn save(store: &Store, site: Site) -> Result<Site, SiteError> {
    site.checked()?;
    store
        .write(move |context| {
            let mut site = site;
            let teams = context.transaction.open_table(tables::TEAMS)?;
            for team_id in site.routed_teams() {
                let team: Option<crate::people::teams::Team> =
                    teams.get(team_id)?.map(|value| decode_json(value.value())).transpose()?;
                if team.is_none_or(|team| team.site != site.key) {
                    return Ok(Err(foreign_team(team_id)));
                }
            }
            drop(teams);
            let mut table = context.transaction.open_table(tables::SITES)?;
            let Some(stored) =
                table.get(site.key.as_str())?.map(|value| decode_json::<Site>(value.value())).transpose()?
            else {
                return Ok(Err(SiteError::NotFound(site.key)));
            };
            site.secret = stored.secret;
            site.created_at = stored.created_at;
            table.insert(site.key.as_str(), encode_json(&site).as_slice())?;
            drop(table);
            if stored.business_hours.time_zone != site.business_hours.time_zone {
                // Its days now start at another hour: its daily figures are counted again.
                crate::history::daily_figures::rebuild(context, Some(&site.key))?;
            }
            Ok(Ok(site))
        })
        .await
}

/// Gives a site a new secret; identities signed with the old one stop being accepted.
pub async fn rotate_secret(store: &Store, key: &str) -> Result<Site, SiteError> {
    let key = key.to_owned();
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::SITES)?;
            let Some(mut site) =
                table.get(key.as_str())?.map(|value| decode_json::<Site>(value.value())).transpose()?
            else {
                return Ok(Err(SiteError::NotFound(key)));
            };
            site.secret = new_secret();
            table.insert(key.as_str(), encode_json(&site).as_slice())?;
            Ok(Ok(site))
        })
        .await
}

/// Deletes a site with everything that is only the site's: teams, canned replies, webhooks,
/// knowledge base and bot settings, address blocks, refused origins and its gRPC event feed; its
/// API tokens are revoked and its key leaves the agents' sites. Its conversations stay in the history (with their visitors, leads and
/// report figures), where admins can still search and export them.
pub async fn delete(store: &Store, key: &str) -> Result<Site, SiteError> {
    let key = key.to_owned();
    store
        .write(move |context| {
            let Some(site) = context
                .transaction
                .open_table(tables::SITES)?
                .remove(key.as_str())?
                .map(|value| decode_json::<Site>(value.value()))
                .transpose()?
            else {
                return Ok(Err(SiteError::NotFound(key)));
            };
            context.transaction.open_table(tables::TEAMS)?.retain(|_, value| {
                decode_json::<crate::people::teams::Team>(value).map_or(true, |team| team.site != key)
            })?;
            context.transaction.open_table(tables::CANNED_REPLIES)?.retain(|_, value| {
                decode_json::<crate::chat::canned_replies::CannedReply>(value).map_or(true, |reply| reply.site != key)
            })?;
            crate::webhooks::delete_of_site(context, &key)?;
            crate::webhooks::feed::erase_of_site(context, &key)?;
            crate::bot::knowledge_base::erase_of_site(context, &key)?;
            crate::bot::erase_settings_of_site(context, &key)?;
            crate::people::blocking::unblock_addresses_of_site(context, &key)?;
            crate::people::api_tokens::revoke_of_site(context, &key)?;
            crate::people::agents::forget_site(context, &key)?;
            refused_origins::erase_of_site(context, &key)?;
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

/// Every site, by name (case-insensitive), as people pick them from lists.
pub fn list_by_name(transaction: &ReadTransaction) -> Result<Vec<Site>, StorageError> {
    let mut sites = list(transaction)?;
    sort_by_name(&mut sites);
    Ok(sites)
}

/// Sites in the order the admin pages list them: by name, whatever its case.
pub fn sort_by_name(sites: &mut [Site]) {
    sites.sort_by_key(|site| site.name.to_lowercase());
}

/// A site with what is derived from it once per change.
pub struct SiteRuntime {
    pub site: Site,
    pub filter: SensitiveWordFilter,
    pub routing: CompiledRules,
}

/// Decoded sites, shared by every connection.
#[derive(Clone)]
pub struct SiteDirectory {
    source: Arc<dyn store::SiteSource>,
    sites: Arc<DashMap<String, Arc<SiteRuntime>>>,
    /// Told of every change, for the status watcher (`status::run_watcher`).
    changed: Arc<tokio::sync::Notify>,
}

impl SiteDirectory {
    pub fn new(store: Store) -> SiteDirectory {
        SiteDirectory::of(Arc::new(store))
    }

    /// A directory of the sites `source` stores (the appliance's `Store`, or a cluster's
    /// PostgreSQL, whose changes through other nodes `invalidate` is told of).
    pub fn of(source: Arc<dyn store::SiteSource>) -> SiteDirectory {
        SiteDirectory { source, sites: Arc::new(DashMap::new()), changed: Arc::new(tokio::sync::Notify::new()) }
    }

    /// Every site, read from the database.
    pub async fn all(&self) -> Result<Vec<Site>, StorageError> {
        self.source.list_sites().await
    }

    /// Notified whenever a site changes (it keeps one notice while nobody waits).
    pub fn change_signal(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// The site with `key`, from memory or the database.
    pub async fn get(&self, key: &str) -> Result<Option<Arc<SiteRuntime>>, StorageError> {
        if let Some(found) = self.sites.get(key) {
            return Ok(Some(found.clone()));
        }
        let Some(site) = self.source.get_site(key).await? else {
            return Ok(None);
        };
        let runtime = Arc::new(SiteRuntime {
            filter: SensitiveWordFilter::new(&site.sensitive_words, site.sensitive_mode),
            routing: CompiledRules::new(&site.routing_rules, site.default_team),
            site,
        });
        self.sites.insert(key.to_owned(), runtime.clone());
        Ok(Some(runtime))
    }

    /// Forgets a changed site so the next `get` reads it again.
    pub fn invalidate(&self, key: &str) {
        self.sites.remove(key);
        self.changed.notify_one();
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
