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
use crate::bot::feedback::{BotFeedbackStore, FeedbackError};
use crate::bot::knowledge_base::formats::{self, Format};
use crate::bot::knowledge_base::store::KnowledgeBaseStore;
use crate::bot::knowledge_base::{EntryInput, KbEntry};
use crate::bot::settings::{self as bot_settings, ChangeError, SettingsChange};
use crate::bot::{BotSettings, mask_secret};
use crate::chat::conversation_store::ConversationStore;
use crate::chat::message_store::MessageStore;
use crate::history::audit;
use crate::net::AppState;
use crate::people::principal::Principal;
use crate::sites::store::SiteStore;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiteQuery {
    /// The site's key.
    #[param(required = true, min_length = 1)]
    pub(crate) site: Option<String>,
    /// Read by import and export only, which document it in [`FileQuery`].
    #[param(ignore)]
    pub(crate) format: Option<String>,
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
    /// `csv`, `json` or `markdown` (`md` is read as `markdown`).
    #[param(pattern = "^(csv|json|markdown|md)$")]
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
            ApiError::Unprocessable("format: the query parameter format=csv|json|markdown is required".into())
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
    let entry = KnowledgeBaseStore::entry(&app.store, id).await?;
    let entry = entry.ok_or_else(|| ApiError::NotFound("no such entry".into()))?;
    writer(principal, &entry.site)?;
    Ok(entry)
}

async fn require_site(app: &AppState, site: &str) -> Result<(), ApiError> {
    match SiteStore::get(&app.store, site).await? {
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
    let entries = KnowledgeBaseStore::of_site(&app.store, &site).await?;
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
    let mut created = KnowledgeBaseStore::create_many(&app.store, site.clone(), vec![input]).await?;
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
    let entry = KnowledgeBaseStore::update(&app.store, id, input).await?;
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
    let entry = KnowledgeBaseStore::delete(&app.store, id).await?;
    app.bot.knowledge().reload(&entry.site).await?;
    let target = format!("{} #{}", entry.site, entry.id);
    audit::record(&app.store, &principal, "kb.delete", &target, entry.questions.join(" | ")).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Imported {
    /// Rows stored: `created` plus `updated`.
    imported: usize,
    /// Rows without an id, added as new entries.
    created: usize,
    /// Rows with an id, which replaced that entry.
    updated: usize,
}

/// `POST /api/v1/kb/import?site=KEY&format=csv|json|markdown`: stores every row of the file, or
/// none; a row with an `id` updates that entry of the site, one without adds an entry.
#[utoipa::path(post, path = "/api/v1/kb/import", tag = "knowledge base",
    params(FileQuery),
    request_body(content = String, content_type = "text/csv", description = "CSV (id, lang, questions, answer, category), JSON (format=json) or Markdown (format=markdown)"),
    responses((status = 200, description = "How many entries were added and updated", body = Imported), super::openapi::CommonErrors))]
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
    let rows = formats::import_rows(format, text)?;
    let outcome = KnowledgeBaseStore::import(&app.store, site.clone(), rows).await?;
    app.bot.knowledge().reload(&site).await?;
    let detail = format!("{} added, {} updated", outcome.created, outcome.updated);
    audit::record(&app.store, &principal, "kb.import", &site, detail).await;
    Ok(axum::Json(Imported {
        imported: outcome.created + outcome.updated,
        created: outcome.created,
        updated: outcome.updated,
    }))
}

/// `GET /api/v1/kb/export?site=KEY&format=csv|json|markdown`
#[utoipa::path(get, path = "/api/v1/kb/export", tag = "knowledge base",
    params(FileQuery),
    responses(
        (status = 200, description = "The site's entries as a file", content(
            (String = "text/csv"),
            (Vec<formats::JsonRow> = "application/json"),
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
    let entries = KnowledgeBaseStore::of_site(&app.store, &site).await?;
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

/// `PUT /api/v1/sites/{key}/bot`: changes the fields the body names and keeps the others
/// (see [`bot_settings`](crate::bot_settings)).
pub async fn save_bot_settings(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(site): Path<String>,
    Json(change): Json<SettingsChange>,
) -> Result<axum::Json<BotSettings>, ApiError> {
    let admin = admin_only(principal)?;
    require_site(&app, &site).await?;
    let settings =
        bot_settings::change(&app.store, &app.bot, &site, change, app.config.llm.allow_private_addresses).await?;
    let detail =
        format!("enabled {}, threshold {}, llm {}", settings.enabled, settings.threshold, settings.llm.is_some());
    audit::record(&app.store, &admin, "bot.update", &site, detail).await;
    Ok(axum::Json(settings_view(settings)))
}

impl From<ChangeError> for ApiError {
    fn from(error: ChangeError) -> Self {
        match error {
            ChangeError::Invalid(message) => ApiError::Unprocessable(message),
            ChangeError::NoSuchSite => ApiError::NotFound("no such site".into()),
            ChangeError::Storage(error) => error.into(),
        }
    }
}

/// The body of a visitor's feedback on a bot answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackInput {
    helpful: bool,
}

/// `POST /api/v1/conversations/{id}/messages/{seq}/feedback`: a visitor's thumbs up
/// (`{"helpful": true}`) or down on a bot answer of their own conversation; a second call
/// replaces the first.
pub async fn feedback(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path((conversation_id, seq)): Path<(String, String)>,
    Json(input): Json<FeedbackInput>,
) -> Result<StatusCode, ApiError> {
    if !principal.is_visitor() {
        return Err(ApiError::Forbidden("visitors give feedback on the bot's answers in their conversations".into()));
    }
    let conversation_id = conversation_id
        .parse::<u64>()
        .map_err(|_| ApiError::Unprocessable("id: must be a positive whole number".into()))?;
    let seq = seq.parse::<u64>().map_err(|_| ApiError::Unprocessable("seq: must be a positive whole number".into()))?;
    let conversation = MessageStore::conversation(&app.store, conversation_id).await?;
    if !conversation.is_some_and(|conversation| principal.can_access(&conversation)) {
        return Err(ApiError::NotFound("no such conversation".into()));
    }
    BotFeedbackStore::record(&app.store, conversation_id, seq, input.helpful).await.map_err(|error| match error {
        FeedbackError::NoSuchConversation | FeedbackError::NoSuchMessage => ApiError::NotFound(error.to_string()),
        FeedbackError::NotAnAnswer => ApiError::Unprocessable(error.to_string()),
        FeedbackError::Storage(error) => error.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub struct QueuePlace {
    /// 1 for next; `null` when the conversation is not waiting for an agent.
    position: Option<usize>,
}

/// `GET /api/v1/conversations/{id}/queue`: where a visitor's handed-off conversation stands in
/// the site's queue, for the widget's "you are number N" line.
pub async fn queue_place(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(conversation_id): Path<String>,
) -> Result<axum::Json<QueuePlace>, ApiError> {
    let conversation_id = conversation_id
        .parse::<u64>()
        .map_err(|_| ApiError::Unprocessable("id: must be a positive whole number".into()))?;
    let conversation = MessageStore::conversation(&app.store, conversation_id).await?;
    let Some(conversation) = conversation.filter(|conversation| principal.can_access(conversation)) else {
        return Err(ApiError::NotFound("no such conversation".into()));
    };
    let open = ConversationStore::list_open(&app.store).await?;
    let position = crate::bot::lifecycle::queue_position(&conversation, &open);
    Ok(axum::Json(QueuePlace { position }))
}
