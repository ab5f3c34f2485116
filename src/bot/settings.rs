//! Changing a site's bot settings: one partial change, applied over what is stored, for the
//! HTTP API and the admin page alike.
//!
//! A change names only the fields it sets; every field it leaves out keeps its stored value.
//! (The API once rebuilt the settings from the request alone, so `{"threshold": 0.6}` turned the
//! bot off and dropped the language model.) The language model is three-way: absent keeps it,
//! `null` removes it, an object changes the fields it names. Its API key is never shown back: an
//! absent key, or the masked value that reading the settings shows, keeps the stored one.
//!
//! The storage boundary is [`BotSettingsStore`]: [`Store`] implements it here, the cluster's
//! PostgreSQL in `cluster::bot_settings`; both apply a change with [`SettingsChange::apply`] to
//! the settings they load, in one step.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use redb::ReadableTable;
use serde::{Deserialize, Deserializer};

use crate::bot::embeddings::EmbeddingSettings;
use crate::bot::llm::{DEFAULT_FIRST_TOKEN_TIMEOUT_MS, LlmSettings};
use crate::bot::{Bot, BotSettings};
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// The language model's request timeout when a change sets a model and names none.
pub const DEFAULT_LLM_TIMEOUT_MS: u64 = 30_000;

/// A change of a site's bot settings; `None` keeps the stored value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    pub enabled: Option<bool>,
    pub name: Option<String>,
    pub threshold: Option<f32>,
    pub greeting: Option<String>,
    pub system_prompt: Option<String>,
    /// Minutes without a message after which a conversation only the bot took part in closes.
    pub idle_close_minutes: Option<u32>,
    /// Absent: keep; `null`: no language model; an object: change the fields it names.
    #[serde(default, deserialize_with = "present")]
    pub llm: Option<Option<LlmChange>>,
    /// The site's groups of equivalent terms, one group a line (`shipping = 运费 = 邮费`).
    pub terms: Option<String>,
    /// What visitors type to ask for a human, on top of the built-in phrases.
    pub handoff_phrases: Option<Vec<String>>,
    /// Absent: keep; `null`: no semantic tier; an object: change the fields it names.
    #[serde(default, deserialize_with = "present")]
    pub embeddings: Option<Option<EmbeddingsChange>>,
}

/// A change of the embeddings endpoint; `None` keeps the stored value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsChange {
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// Absent, null, or masked: keep the stored key. Empty: no key.
    pub api_key: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// A change of the language-model settings; `None` keeps the stored value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmChange {
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// Absent, null, or masked (all `*`, or `****` and the last four): keep the stored key.
    /// Empty: no key.
    pub api_key: Option<String>,
    pub timeout_ms: Option<u64>,
    /// How long the model may take to start answering (its first token).
    pub first_token_timeout_ms: Option<u64>,
}

/// Tells a field that is present with `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Whether `key` is what reading the settings shows instead of the stored key.
fn is_masked(key: &str) -> bool {
    !key.is_empty() && (key.chars().all(|c| c == '*') || key.starts_with("****"))
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change would make invalid settings; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("no such site")]
    NoSuchSite,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The bot settings' storage boundary.
pub trait BotSettingsStore: Send + Sync {
    /// A site's settings; the defaults when none are stored.
    fn settings(&self, site: &str) -> impl Future<Output = Result<BotSettings, StorageError>> + Send;

    /// Applies `requested` over the site's stored settings ([`SettingsChange::apply`]) and stores
    /// the result, in one step so a concurrent change is not lost; returns what was stored.
    fn change(
        &self,
        site: &str,
        requested: SettingsChange,
        allow_private_llm: bool,
    ) -> impl Future<Output = Result<BotSettings, ChangeError>> + Send;
}

impl BotSettingsStore for Store {
    async fn settings(&self, site: &str) -> Result<BotSettings, StorageError> {
        let key = site.to_owned();
        self.read(move |transaction| crate::bot::read_settings(transaction, &key)).await
    }

    async fn change(
        &self,
        site: &str,
        requested: SettingsChange,
        allow_private_llm: bool,
    ) -> Result<BotSettings, ChangeError> {
        let key = site.to_owned();
        self.write(move |context| {
            if context.transaction.open_table(tables::SITES)?.get(key.as_str())?.is_none() {
                return Ok(Err(ChangeError::NoSuchSite));
            }
            let mut table = context.transaction.open_table(tables::BOT_SETTINGS)?;
            let stored = table.get(key.as_str())?.map(|value| decode_json::<BotSettings>(value.value())).transpose()?;
            let settings = match requested.apply(&stored.unwrap_or_default(), allow_private_llm) {
                Ok(settings) => settings,
                Err(error) => return Ok(Err(error)),
            };
            table.insert(key.as_str(), encode_json(&settings).as_slice())?;
            Ok(Ok(settings))
        })
        .await
    }
}

impl SettingsChange {
    /// The settings after this change, from `previous`; checked, the message names what to fix.
    pub fn apply(self, previous: &BotSettings, allow_private_llm: bool) -> Result<BotSettings, ChangeError> {
        let mut settings = previous.clone();
        if let Some(enabled) = self.enabled {
            settings.enabled = enabled;
        }
        if let Some(name) = self.name {
            settings.name = name.trim().to_owned();
        }
        if let Some(threshold) = self.threshold {
            settings.threshold = threshold;
        }
        if let Some(greeting) = self.greeting {
            settings.greeting = greeting.trim().to_owned();
        }
        if let Some(system_prompt) = self.system_prompt {
            settings.system_prompt = system_prompt;
        }
        if let Some(minutes) = self.idle_close_minutes {
            settings.idle_close_minutes = minutes;
        }
        match self.llm {
            None => {}
            Some(None) => settings.llm = None,
            Some(Some(change)) => settings.llm = Some(change.apply(previous.llm.as_ref())?),
        }
        if let Some(terms) = self.terms {
            settings.terms = terms;
        }
        if let Some(phrases) = self.handoff_phrases {
            settings.handoff_phrases = phrases.iter().map(|phrase| phrase.trim().to_owned()).collect();
        }
        match self.embeddings {
            None => {}
            Some(None) => settings.embeddings = None,
            Some(Some(change)) => settings.embeddings = Some(change.apply(previous.embeddings.as_ref())?),
        }
        settings.validate().map_err(ChangeError::Invalid)?;
        if let Some(llm) = &settings.llm {
            check_endpoint("llm.base_url", &llm.base_url, allow_private_llm)?;
        }
        if let Some(embeddings) = &settings.embeddings {
            check_endpoint("embeddings.base_url", &embeddings.base_url, allow_private_llm)?;
        }
        Ok(settings)
    }
}

impl LlmChange {
    fn apply(self, previous: Option<&LlmSettings>) -> Result<LlmSettings, ChangeError> {
        let mut llm =
            previous.cloned().unwrap_or(LlmSettings { timeout_ms: DEFAULT_LLM_TIMEOUT_MS, ..Default::default() });
        if let Some(base_url) = self.base_url {
            llm.base_url = base_url.trim().to_owned();
        }
        if let Some(model) = self.model {
            llm.model = model.trim().to_owned();
        }
        match self.api_key {
            Some(key) if !is_masked(&key) => llm.api_key = key.trim().to_owned(),
            // A masked key with nothing stored would store the mask itself.
            Some(_) | None if previous.is_none() => llm.api_key = String::new(),
            Some(_) | None => {}
        }
        if let Some(timeout_ms) = self.timeout_ms {
            llm.timeout_ms = timeout_ms;
        }
        match self.first_token_timeout_ms {
            Some(first_token_timeout_ms) => llm.first_token_timeout_ms = first_token_timeout_ms,
            None if previous.is_none() => {
                llm.first_token_timeout_ms = DEFAULT_FIRST_TOKEN_TIMEOUT_MS.min(llm.timeout_ms);
            }
            None => {}
        }
        if llm.base_url.is_empty() {
            return Err(ChangeError::Invalid("llm.base_url: required when setting a language model".into()));
        }
        Ok(llm)
    }
}

impl EmbeddingsChange {
    fn apply(self, previous: Option<&EmbeddingSettings>) -> Result<EmbeddingSettings, ChangeError> {
        let mut embeddings = previous.cloned().unwrap_or_default();
        if let Some(base_url) = self.base_url {
            embeddings.base_url = base_url.trim().to_owned();
        }
        if let Some(model) = self.model {
            embeddings.model = model.trim().to_owned();
        }
        match self.api_key {
            Some(key) if !is_masked(&key) => embeddings.api_key = key.trim().to_owned(),
            Some(_) | None if previous.is_none() => embeddings.api_key = String::new(),
            Some(_) | None => {}
        }
        if let Some(timeout_ms) = self.timeout_ms {
            embeddings.timeout_ms = timeout_ms;
        }
        if embeddings.base_url.is_empty() || embeddings.model.is_empty() {
            return Err(ChangeError::Invalid("embeddings: base_url and model are required".into()));
        }
        Ok(embeddings)
    }
}

/// Refuses an endpoint that is not an http(s) URL, or that points inside the network when
/// `allow_private` is off.
fn check_endpoint(field: &str, base_url: &str, allow_private: bool) -> Result<(), ChangeError> {
    let url = reqwest::Url::parse(base_url)
        .map_err(|_| ChangeError::Invalid(format!("{field}: must be an http:// or https:// URL")))?;
    crate::base::outbound::check_url(&url, allow_private)
        .map_err(|error| ChangeError::Invalid(format!("{field}: {error} (see llm.allow_private_addresses)")))
}

/// What [`SiteSettings`] reads from: any [`BotSettingsStore`], behind a pointer.
pub trait SettingsSource: Send + Sync {
    fn site_settings<'a>(&'a self, site: &'a str) -> BoxFuture<'a, Result<BotSettings, StorageError>>;
}

impl<T: BotSettingsStore> SettingsSource for T {
    fn site_settings<'a>(&'a self, site: &'a str) -> BoxFuture<'a, Result<BotSettings, StorageError>> {
        Box::pin(self.settings(site))
    }
}

/// Each site's bot settings as the bot uses them, read once and kept until they change: through
/// this node ([`SiteSettings::insert`]) or another ([`SiteSettings::forget`]).
#[derive(Clone)]
pub struct SiteSettings {
    /// Where settings are read from: the appliance's `Store`, or a cluster's PostgreSQL.
    source: Arc<dyn SettingsSource>,
    sites: Arc<DashMap<String, Arc<BotSettings>>>,
    /// Counts [`SiteSettings::forget`] calls, so a read from before one is not kept.
    forgotten: Arc<AtomicU64>,
}

impl SiteSettings {
    pub fn of(source: Arc<dyn SettingsSource>) -> SiteSettings {
        SiteSettings { source, sites: Arc::new(DashMap::new()), forgotten: Arc::new(AtomicU64::new(0)) }
    }

    /// A site's settings, from memory or storage.
    pub async fn get(&self, site: &str) -> Result<Arc<BotSettings>, StorageError> {
        if let Some(found) = self.sites.get(site) {
            return Ok(found.clone());
        }
        let forgotten = self.forgotten.load(Ordering::SeqCst);
        let settings = Arc::new(self.source.site_settings(site).await?);
        // Checked under the map's lock of the site, which `forget`'s removal waits for.
        {
            let slot = self.sites.entry(site.to_owned());
            if self.forgotten.load(Ordering::SeqCst) == forgotten {
                slot.insert(settings.clone());
            }
        }
        Ok(settings)
    }

    /// Keeps settings this node just stored; returns the ones it kept before, if any.
    pub fn insert(&self, site: &str, settings: BotSettings) -> Option<Arc<BotSettings>> {
        self.sites.insert(site.to_owned(), Arc::new(settings))
    }

    /// Drops a site's settings (changed elsewhere); the next use reads them again.
    pub fn forget(&self, site: &str) {
        self.forgotten.fetch_add(1, Ordering::SeqCst);
        self.sites.remove(site);
    }
}

/// Applies `requested` over the site's stored settings in `store`, stores the result and has
/// `bot` use it at once; returns it.
pub async fn change(
    store: &impl BotSettingsStore,
    bot: &Bot,
    site: &str,
    requested: SettingsChange,
    allow_private_llm: bool,
) -> Result<BotSettings, ChangeError> {
    let settings = BotSettingsStore::change(store, site, requested, allow_private_llm).await?;
    bot.use_settings(site, settings.clone());
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> BotSettings {
        BotSettings {
            enabled: true,
            greeting: "Hi".into(),
            llm: Some(LlmSettings {
                base_url: "https://llm.example/v1".into(),
                model: "m".into(),
                api_key: "sk-secret1234".into(),
                timeout_ms: 5000,
                ..LlmSettings::default()
            }),
            ..BotSettings::default()
        }
    }

    fn change(json: &str) -> SettingsChange {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name() {
        let settings = change(r#"{"threshold": 0.6}"#).apply(&stored(), false).unwrap();
        assert_eq!(settings, BotSettings { threshold: 0.6, ..stored() });
    }

    #[test]
    fn the_language_model_is_kept_removed_or_changed() {
        assert_eq!(change(r#"{"llm": null}"#).apply(&stored(), false).unwrap().llm, None);
        let changed =
            change(r#"{"llm": {"model": "other", "api_key": "*********1234"}}"#).apply(&stored(), false).unwrap();
        let llm = changed.llm.unwrap();
        assert_eq!((llm.model.as_str(), llm.api_key.as_str(), llm.timeout_ms), ("other", "sk-secret1234", 5000));
        let cleared = change(r#"{"llm": {"api_key": ""}}"#).apply(&stored(), false).unwrap();
        assert_eq!(cleared.llm.unwrap().api_key, "");
    }

    #[test]
    fn bad_changes_name_the_field() {
        let error = change(r#"{"threshold": 1.5}"#).apply(&stored(), false).unwrap_err();
        assert!(error.to_string().contains("threshold"), "{error}");
        let error = change(r#"{"llm": {"model": "m"}}"#).apply(&BotSettings::default(), false).unwrap_err();
        assert!(error.to_string().contains("llm.base_url"), "{error}");
        assert!(serde_json::from_str::<SettingsChange>(r#"{"treshold": 0.5}"#).is_err());
    }
}
