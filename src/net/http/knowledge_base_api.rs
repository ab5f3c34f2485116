//! The knowledge base and the bot over HTTP: entries (list, create, update, delete, import,
//! export) and each site's bot settings.
//!
//! Admins and the site's API tokens change entries; agents of the site may read them; visitors
//! get 403. Every change rebuilds the site's match index before answering, so the bot uses the
//! new entries at once. Bot settings are for admins only.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Caller, Json, admin_only};
use crate::bot::embeddings::EmbeddingSettings;
use crate::bot::knowledge_base::formats::{self, Format};
use crate::bot::knowledge_base::{self, EntryInput, KbEntry};
use crate::bot::llm::LlmSettings;
use crate::bot::{BotSettings, BotSettingsError, mask_secret};
use crate::history::audit;
use crate::net::AppState;
use crate::people::principal::Principal;
use crate::sites;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiteQuery {
    /// The site's key.
    #[param(required = true, min_length = 1)]
    site: Option<String>,
    /// Read by import and export only, which document it in [`FileQuery`].
    #[param(ignore)]
    format: Option<String>,
}

/// The query of import and export: [`SiteQuery`] with a required `format` (documentation only;
/// the handlers read a [`SiteQuery`], so a missing field gets a 422 that names it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only its derived documentation is used.
pub struct FileQuery {
    /// The site's key.
    #[param(min_length = 1)]
    site: String,
    /// `csv` or `markdown` (`md` is read as `markdown`).
    #[param(pattern = "^(csv|markdown|md)$")]
    format: String,
}

impl SiteQuery {
    fn site(&self) -> Result<String, ApiError> {
        match self.site.as_deref().map(str::trim) {
            Some(site) if !site.is_empty() => Ok(site.to_owned()),
            _ => Err(ApiError::Unprocessable("site: the query parameter site=KEY is required".into())),
        }
    }

    fn format(&self) -> Result<Format, ApiError> {
        let name = self.format.as_deref().ok_or_else(|| {
            ApiError::Unprocessable("format: the query parameter format=csv|markdown is required".into())
        })?;
        Ok(Format::parse(name)?)
    }
}

/// Checks that the caller may change `site`'s entries: an admin, or an API token of the site.
fn writer(principal: &Principal, site: &str) -> Result<(), ApiError> {
    match principal {
        Principal::Agent(_) if principal.is_admin() => Ok(()),
        Principal::ApiToken(_) => require_site_of(principal, site),
        _ => Err(ApiError::Forbidden("admins only".into())),
    }
}

/// Checks that the caller may read `site`'s entries: an agent of the site (admins serve every
/// site) or an API token of the site.
fn reader(principal: &Principal, site: &str) -> Result<(), ApiError> {
    if principal.serves_site(site) {
        return Ok(());
    }
    match principal {
        Principal::ApiToken(_) => require_site_of(principal, site),
        _ => Err(ApiError::Forbidden("agents of this site only".into())),
    }
}

fn require_site_of(principal: &Principal, site: &str) -> Result<(), ApiError> {
    super::extract::require_site(principal, site, "site")
}

/// The entry `id`, once the caller may change its site.
async fn writable_entry(app: &AppState, principal: &Principal, id: u64) -> Result<KbEntry, ApiError> {
    let entry = app.store.read(move |transaction| knowledge_base::get(transaction, id)).await?;
    let entry = entry.ok_or_else(|| ApiError::NotFound("no such entry".into()))?;
    writer(principal, &entry.site)?;
    Ok(entry)
}

async fn require_site(app: &AppState, site: &str) -> Result<(), ApiError> {
    let key = site.to_owned();
    match app.store.read(move |transaction| sites::get(transaction, &key)).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound("no such site".into())),
    }
}

fn entry_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::Unprocessable("id: must be a positive whole number".into()))
}

/// `GET /api/v1/kb?site=KEY`: the site's entries, oldest first.
#[utoipa::path(get, path = "/api/v1/kb", tag = "knowledge base",
    params(SiteQuery),
    responses((status = 200, description = "The site's entries, oldest first", body = Vec<KbEntry>), super::openapi::CommonErrors))]
pub async fn list(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<SiteQuery>,
) -> Result<axum::Json<Vec<KbEntry>>, ApiError> {
    let site = query.site()?;
    reader(&principal, &site)?;
    require_site(&app, &site).await?;
    let entries = app.store.read(move |transaction| knowledge_base::list(transaction, &site)).await?;
    Ok(axum::Json(entries))
}

/// `POST /api/v1/kb?site=KEY`: a new entry.
#[utoipa::path(post, path = "/api/v1/kb", tag = "knowledge base",
    params(SiteQuery),
    request_body = EntryInput,
    responses((status = 201, description = "The new entry", body = KbEntry), super::openapi::CommonErrors))]
pub async fn create(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<SiteQuery>,
    Json(input): Json<EntryInput>,
) -> Result<(StatusCode, axum::Json<KbEntry>), ApiError> {
    let site = query.site()?;
    writer(&principal, &site)?;
    let input = input.validate()?;
    let mut created = knowledge_base::create_many(&app.store, site.clone(), vec![input]).await?;
    app.bot.knowledge().reload(&site).await?;
    let entry = created.pop().ok_or_else(|| ApiError::Internal("no entry was created".into()))?;
    audit::record(&app.store, &principal, "kb.create", &format!("{site} #{}", entry.id), entry.questions.join(" | "))
        .await;
    Ok((StatusCode::CREATED, axum::Json(entry)))
}

/// `PUT /api/v1/kb/{id}`: replaces an entry's questions, answer and category.
#[utoipa::path(put, path = "/api/v1/kb/{id}", tag = "knowledge base",
    params(("id" = u64, Path, description = "The entry's id")),
    request_body = EntryInput,
    responses((status = 200, description = "The changed entry", body = KbEntry), super::openapi::CommonErrors))]
pub async fn update(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    Json(input): Json<EntryInput>,
) -> Result<axum::Json<KbEntry>, ApiError> {
    let id = entry_id(&id)?;
    writable_entry(&app, &principal, id).await?;
    let input = input.validate()?;
    let entry = knowledge_base::update(&app.store, id, input).await?;
    app.bot.knowledge().reload(&entry.site).await?;
    let target = format!("{} #{}", entry.site, entry.id);
    audit::record(&app.store, &principal, "kb.update", &target, entry.questions.join(" | ")).await;
    Ok(axum::Json(entry))
}

/// `DELETE /api/v1/kb/{id}`
#[utoipa::path(delete, path = "/api/v1/kb/{id}", tag = "knowledge base",
    params(("id" = u64, Path, description = "The entry's id")),
    responses((status = 204, description = "Deleted"), super::openapi::CommonErrors))]
pub async fn delete(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = entry_id(&id)?;
    writable_entry(&app, &principal, id).await?;
    let entry = knowledge_base::delete(&app.store, id).await?;
    app.bot.knowledge().reload(&entry.site).await?;
    let target = format!("{} #{}", entry.site, entry.id);
    audit::record(&app.store, &principal, "kb.delete", &target, entry.questions.join(" | ")).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Imported {
    imported: usize,
}

/// `POST /api/v1/kb/import?site=KEY&format=csv|markdown`: adds every entry of the file, or none.
#[utoipa::path(post, path = "/api/v1/kb/import", tag = "knowledge base",
    params(FileQuery),
    request_body(content = String, content_type = "text/csv", description = "CSV (question, answer, category) or Markdown (format=markdown)"),
    responses((status = 200, description = "How many entries were added", body = Imported), super::openapi::CommonErrors))]
pub async fn import(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<SiteQuery>,
    body: Bytes,
) -> Result<axum::Json<Imported>, ApiError> {
    let site = query.site()?;
    writer(&principal, &site)?;
    let format = query.format()?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::Unprocessable("body: must be UTF-8 text".into()))?;
    let inputs = formats::import(format, text)?;
    let created = knowledge_base::create_many(&app.store, site.clone(), inputs).await?;
    app.bot.knowledge().reload(&site).await?;
    audit::record(&app.store, &principal, "kb.import", &site, format!("{} entries", created.len())).await;
    Ok(axum::Json(Imported { imported: created.len() }))
}

/// `GET /api/v1/kb/export?site=KEY&format=csv|markdown`
#[utoipa::path(get, path = "/api/v1/kb/export", tag = "knowledge base",
    params(FileQuery),
    responses(
        (status = 200, description = "The site's entries as a file", content(
            (String = "text/csv"),
            (String = "text/markdown"))),
        super::openapi::CommonErrors))]
pub async fn export(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Query(query): Query<SiteQuery>,
) -> Result<Response, ApiError> {
    let site = query.site()?;
    reader(&principal, &site)?;
    let format = query.format()?;
    require_site(&app, &site).await?;
    let entries = app.store.read(move |transaction| knowledge_base::list(transaction, &site)).await?;
    let text = formats::export(format, &entries);
    Ok(([(header::CONTENT_TYPE, format.content_type())], text).into_response())
}

/// Bot settings as admins see them: the API key masked.
fn settings_view(mut settings: BotSettings) -> BotSettings {
    if let Some(llm) = &mut settings.llm {
        llm.api_key = mask_secret(&llm.api_key);
    }
    if let Some(embeddings) = &mut settings.embeddings {
        embeddings.api_key = mask_secret(&embeddings.api_key);
    }
    settings
}

/// `GET /api/v1/sites/{key}/bot`
pub async fn bot_settings(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(site): Path<String>,
) -> Result<axum::Json<BotSettings>, ApiError> {
    admin_only(principal)?;
    require_site(&app, &site).await?;
    let settings = app.bot.settings(&site).await?;
    Ok(axum::Json(settings_view(BotSettings::clone(&settings))))
}

/// The body of `PUT /api/v1/sites/{key}/bot`; absent fields take their defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotSettingsInput {
    #[serde(default)]
    enabled: bool,
    name: Option<String>,
    threshold: Option<f32>,
    greeting: Option<String>,
    system_prompt: Option<String>,
    #[serde(default)]
    llm: Option<LlmInput>,
    /// Absent: keep the stored terms.
    terms: Option<String>,
    /// Absent: keep the stored phrases.
    handoff_phrases: Option<Vec<String>>,
    /// Absent: keep the stored endpoint; null: no semantic tier.
    #[serde(default, deserialize_with = "present")]
    embeddings: Option<Option<EmbeddingsInput>>,
}

/// Tells a field sent as null (`Some(None)`) from one not sent (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsInput {
    base_url: String,
    model: String,
    /// Absent, null, or the masked value shown by GET: keep the stored key. Empty: no key.
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default = "default_embeddings_timeout_ms")]
    timeout_ms: u64,
}

fn default_embeddings_timeout_ms() -> u64 {
    EmbeddingSettings::default().timeout_ms
}

/// Whether a key sent with settings means "keep the stored one": absent, null, or masked.
fn keeps_key(key: Option<&str>) -> bool {
    key.is_none_or(|key| !key.is_empty() && key.chars().all(|c| c == '*'))
        || key.is_some_and(|key| key.starts_with("****"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmInput {
    base_url: String,
    model: String,
    /// Absent, null, or the masked value shown by GET: keep the stored key. Empty: no key.
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    /// Absent: the default, or `timeout_ms` when that is shorter.
    #[serde(default)]
    first_token_timeout_ms: Option<u64>,
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// `PUT /api/v1/sites/{key}/bot`
pub async fn save_bot_settings(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(site): Path<String>,
    Json(input): Json<BotSettingsInput>,
) -> Result<axum::Json<BotSettings>, ApiError> {
    let admin = admin_only(principal)?;
    require_site(&app, &site).await?;
    let previous = app.bot.settings(&site).await?;
    let defaults = BotSettings::default();
    let llm = input.llm.map(|llm| {
        let keep = llm.api_key.as_deref().is_none_or(|key| key.starts_with("****") || key.chars().all(|c| c == '*'))
            && llm.api_key.as_deref() != Some("");
        let api_key = match (keep, &previous.llm) {
            (true, Some(stored)) => stored.api_key.clone(),
            (true, None) => String::new(),
            (false, _) => llm.api_key.unwrap_or_default(),
        };
        LlmSettings {
            base_url: llm.base_url.trim().to_owned(),
            model: llm.model.trim().to_owned(),
            api_key,
            timeout_ms: llm.timeout_ms,
            first_token_timeout_ms: llm
                .first_token_timeout_ms
                .unwrap_or(crate::bot::llm::DEFAULT_FIRST_TOKEN_TIMEOUT_MS.min(llm.timeout_ms)),
        }
    });
    let settings = BotSettings {
        enabled: input.enabled,
        name: input.name.map(|name| name.trim().to_owned()).unwrap_or(defaults.name),
        threshold: input.threshold.unwrap_or(defaults.threshold),
        greeting: input.greeting.map(|greeting| greeting.trim().to_owned()).unwrap_or_default(),
        system_prompt: input.system_prompt.unwrap_or(defaults.system_prompt),
        llm,
        terms: input.terms.unwrap_or_else(|| previous.terms.clone()),
        handoff_phrases: input
            .handoff_phrases
            .map(|phrases| phrases.iter().map(|phrase| phrase.trim().to_owned()).collect())
            .unwrap_or_else(|| previous.handoff_phrases.clone()),
        embeddings: match input.embeddings {
            None => previous.embeddings.clone(),
            Some(None) => None,
            Some(Some(embeddings)) => Some(EmbeddingSettings {
                base_url: embeddings.base_url.trim().to_owned(),
                model: embeddings.model.trim().to_owned(),
                api_key: match (keeps_key(embeddings.api_key.as_deref()), &previous.embeddings) {
                    (true, Some(stored)) => stored.api_key.clone(),
                    (true, None) => String::new(),
                    (false, _) => embeddings.api_key.unwrap_or_default(),
                },
                timeout_ms: embeddings.timeout_ms,
            }),
        },
    };
    settings.validate().map_err(ApiError::Unprocessable)?;
    if let Some(embeddings) = &settings.embeddings {
        let url = reqwest::Url::parse(&embeddings.base_url)
            .map_err(|_| ApiError::Unprocessable("embeddings.base_url: must be an http:// or https:// URL".into()))?;
        crate::base::outbound::check_url(&url, app.config.llm.allow_private_addresses).map_err(|error| {
            ApiError::Unprocessable(format!("embeddings.base_url: {error} (see llm.allow_private_addresses)"))
        })?;
    }
    if let Some(llm) = &settings.llm {
        let url = reqwest::Url::parse(&llm.base_url)
            .map_err(|_| ApiError::Unprocessable("llm.base_url: must be an http:// or https:// URL".into()))?;
        crate::base::outbound::check_url(&url, app.config.llm.allow_private_addresses).map_err(|error| {
            ApiError::Unprocessable(format!("llm.base_url: {error} (see llm.allow_private_addresses)"))
        })?;
    }
    app.bot.save_settings(&site, settings.clone()).await.map_err(|error| match error {
        BotSettingsError::NoSuchSite => ApiError::NotFound("no such site".into()),
        BotSettingsError::Storage(error) => error.into(),
    })?;
    let detail =
        format!("enabled {}, threshold {}, llm {}", settings.enabled, settings.threshold, settings.llm.is_some());
    audit::record(&app.store, &admin, "bot.update", &site, detail).await;
    Ok(axum::Json(settings_view(settings)))
}
