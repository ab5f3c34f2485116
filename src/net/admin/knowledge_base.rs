//! Admin pages for the knowledge base and the bot, in English and Chinese ([`super::texts`]):
//! entries (list with search, create, edit, delete), import and export as CSV or JSON, a "try it"
//! box that shows what the bot would do with a message, the bot's settings, and the answers
//! visitors marked unhelpful.
//!
//! Every change goes through the same storage boundaries and domain functions as the HTTP API
//! ([`KnowledgeBaseStore`], [`bot_settings::change`]) and rebuilds the site's match index at once.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::form::FieldErrors;
use super::texts::{Lang, Texts};
use super::{AdminPost, AdminUser, Layout, Notice, done, internal_error, not_found, render};
use crate::bot::feedback::{BotFeedbackStore, Feedback};
use crate::bot::knowledge_base::formats::{self, Format};
use crate::bot::knowledge_base::store::KnowledgeBaseStore;
use crate::bot::knowledge_base::{EntryInput, KbEntry, KbError};
use crate::bot::settings::{self as bot_settings, ChangeError, EmbeddingsChange, LlmChange, SettingsChange};
use crate::bot::{self, BotSettings};
use crate::net::AppState;
use crate::sites::Site;
use crate::sites::store::SiteStore;

/// Entries listed on one page; a search narrows a bigger knowledge base.
const LISTED_ENTRIES: usize = 500;

/// Unhelpful answers listed on the bot page.
const LISTED_UNHELPFUL: usize = 100;

/// Entries shown by the "try it" box.
const TRIED_ENTRIES: usize = 3;

/// Most characters of a "try it" message.
const MAX_TRY_CHARS: usize = 1000;

/// The query of the pages: the site, a search, a "try it" message.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    pub(super) site: Option<String>,
    q: Option<String>,
    #[serde(rename = "try")]
    try_text: Option<String>,
    #[serde(flatten)]
    notice: Notice,
}

/// The entry form as typed.
#[derive(Default)]
struct EntryForm {
    questions: String,
    answer: String,
    category: String,
    lang: String,
}

impl EntryForm {
    fn of(entry: &KbEntry) -> EntryForm {
        EntryForm {
            questions: entry.questions.join("\n"),
            answer: entry.answer.clone(),
            category: entry.category.clone(),
            lang: entry.lang.clone(),
        }
    }

    fn from_post(post: &AdminPost) -> EntryForm {
        EntryForm {
            questions: post.form.text("questions"),
            answer: post.form.text("answer"),
            category: post.form.text("category"),
            lang: post.form.text("entry_lang"),
        }
    }

    fn input(&self) -> EntryInput {
        EntryInput {
            questions: self.questions.lines().map(str::to_owned).collect(),
            answer: self.answer.clone(),
            category: self.category.clone(),
            lang: self.lang.clone(),
        }
    }
}

/// One entry of the "try it" box.
struct Tried {
    entry_id: u64,
    question: String,
    score: String,
    /// Whether this entry's answer would be sent.
    answers: bool,
}

/// What the "try it" box shows.
struct Trial {
    text: String,
    found: Vec<Tried>,
    decision: &'static str,
    threshold: String,
}

#[derive(Template)]
#[template(path = "admin/knowledge_base.html")]
struct KnowledgeBasePage {
    layout: Layout,
    t: &'static Texts,
    sites: Vec<Site>,
    site: Option<Site>,
    search: String,
    entries: Vec<KbEntry>,
    n_entries: usize,
    form: EntryForm,
    errors: FieldErrors,
    import_text: String,
    import_format: String,
    trial: Option<Trial>,
}

#[derive(Template)]
#[template(path = "admin/kb_entry.html")]
struct EntryPage {
    layout: Layout,
    t: &'static Texts,
    entry: KbEntry,
    form: EntryForm,
    errors: FieldErrors,
}

/// The settings form as typed.
struct SettingsForm {
    enabled: bool,
    name: String,
    threshold: String,
    greeting: String,
    system_prompt: String,
    idle_close_minutes: String,
    base_url: String,
    model: String,
    /// Whether a key is stored (the key itself is never shown).
    has_key: bool,
    timeout_ms: String,
    /// One a line.
    handoff_phrases: String,
    terms: String,
    embeddings_url: String,
    embeddings_model: String,
    has_embeddings_key: bool,
}

impl SettingsForm {
    fn of(settings: &BotSettings) -> SettingsForm {
        let llm = settings.llm.as_ref();
        SettingsForm {
            enabled: settings.enabled,
            name: settings.name.clone(),
            threshold: settings.threshold.to_string(),
            greeting: settings.greeting.clone(),
            system_prompt: settings.system_prompt.clone(),
            idle_close_minutes: settings.idle_close_minutes.to_string(),
            base_url: llm.map(|llm| llm.base_url.clone()).unwrap_or_default(),
            model: llm.map(|llm| llm.model.clone()).unwrap_or_default(),
            has_key: llm.is_some_and(|llm| !llm.api_key.is_empty()),
            timeout_ms: llm.map_or(bot_settings::DEFAULT_LLM_TIMEOUT_MS, |llm| llm.timeout_ms).to_string(),
            handoff_phrases: settings.handoff_phrases.join("\n"),
            terms: settings.terms.clone(),
            embeddings_url: settings.embeddings.as_ref().map(|e| e.base_url.clone()).unwrap_or_default(),
            embeddings_model: settings.embeddings.as_ref().map(|e| e.model.clone()).unwrap_or_default(),
            has_embeddings_key: settings.embeddings.as_ref().is_some_and(|e| !e.api_key.is_empty()),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/bot.html")]
struct BotPage {
    layout: Layout,
    t: &'static Texts,
    sites: Vec<Site>,
    site: Option<Site>,
    form: SettingsForm,
    errors: FieldErrors,
    unhelpful: Vec<Feedback>,
}

impl BotPage {
    fn when(&self, feedback: &Feedback) -> String {
        crate::base::clock::format_utc(feedback.created_at)
    }
}

impl KnowledgeBasePage {
    fn updated(&self, entry: &KbEntry) -> String {
        crate::base::clock::format_utc(entry.updated_at)
    }
}

/// The sites, and the one named (or the first).
pub(super) async fn sites_and_site(
    app: &AppState,
    key: Option<String>,
    lang: Lang,
) -> Result<(Vec<Site>, Option<Site>), Response> {
    let sites = SiteStore::list_by_name(&app.store).await.map_err(internal_error)?;
    let site = match key {
        Some(key) => Some(
            sites
                .iter()
                .find(|site| site.key == key)
                .cloned()
                .ok_or_else(|| not_found(lang, lang.texts().noun_site))?,
        ),
        None => sites.first().cloned(),
    };
    Ok((sites, site))
}

/// Whether `entry` holds every word of `search` (case-insensitive) in its questions, answer,
/// category or language.
fn matches_search(entry: &KbEntry, search: &str) -> bool {
    let haystack =
        format!("{} {} {} {}", entry.questions.join(" "), entry.answer, entry.category, entry.lang).to_lowercase();
    search.split_whitespace().all(|word| haystack.contains(&word.to_lowercase()))
}

/// The words of a plan in the "try it" box.
fn plan_words(plan: &bot::Plan, t: &'static Texts) -> &'static str {
    match plan {
        bot::Plan::Off => t.decision_off,
        bot::Plan::Handoff => t.decision_handoff,
        bot::Plan::Answer(_) => t.decision_answer,
        bot::Plan::Judge => t.decision_judge,
        bot::Plan::Generate => t.decision_model,
        bot::Plan::Notice { related } if !related.is_empty() => t.decision_related,
        bot::Plan::Notice { .. } => t.decision_human,
    }
}

/// What the bot would do with `text` on `site`: the bot's own decision ([`bot::Bot::decide`]),
/// with the same knowledge, settings and tiers.
async fn try_message(app: &AppState, site: &str, text: &str, t: &'static Texts) -> Result<Trial, Response> {
    let text: String = text.trim().chars().take(MAX_TRY_CHARS).collect();
    let settings = app.bot.settings(site).await.map_err(internal_error)?;
    let knowledge = app.bot.knowledge().site(site).await.map_err(internal_error)?;
    let mut decision = app.bot.decide(site, &knowledge, &settings, &text).await;
    if decision.ranked.is_empty() {
        // Settled before ranking (off, or a handoff phrase): the entries are still worth seeing.
        decision.ranked = app.bot.rank(site, &knowledge, &settings, &text).await;
    }
    let answering = match decision.plan {
        bot::Plan::Answer(candidate) => Some(candidate.entry_id),
        _ => None,
    };
    let found = decision
        .ranked
        .iter()
        .take(TRIED_ENTRIES)
        .filter_map(|candidate| {
            let entry = knowledge.entry(candidate.entry_id)?;
            Some(Tried {
                entry_id: entry.id,
                question: entry.questions.first().cloned().unwrap_or_default(),
                score: format!("{:.3}", candidate.confidence),
                answers: answering == Some(entry.id),
            })
        })
        .collect();
    Ok(Trial { text, found, decision: plan_words(&decision.plan, t), threshold: format!("{:.2}", settings.threshold) })
}

struct ListState {
    form: EntryForm,
    errors: FieldErrors,
    import_text: String,
    import_format: String,
}

impl Default for ListState {
    fn default() -> Self {
        ListState {
            form: EntryForm::default(),
            errors: FieldErrors::default(),
            import_text: String::new(),
            import_format: "csv".into(),
        }
    }
}

async fn list_page(app: &AppState, admin: &AdminUser, lang: Lang, query: PageQuery, state: ListState) -> Response {
    let (sites, site) = match sites_and_site(app, query.site, lang).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let search = query.q.unwrap_or_default().trim().to_owned();
    let (mut entries, mut trial) = (Vec::new(), None);
    if let Some(site) = &site {
        entries = match KnowledgeBaseStore::of_site(&app.store, &site.key).await {
            Ok(entries) => entries,
            Err(error) => return internal_error(error),
        };
        if let Some(text) = query.try_text.filter(|text| !text.trim().is_empty()) {
            match try_message(app, &site.key, &text, lang.texts()).await {
                Ok(found) => trial = Some(found),
                Err(response) => return response,
            }
        }
    }
    let n_entries = entries.len();
    entries.retain(|entry| search.is_empty() || matches_search(entry, &search));
    entries.reverse();
    entries.truncate(LISTED_ENTRIES);
    let status = if state.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = KnowledgeBasePage {
        layout: admin.layout("kb", query.notice.take()),
        t: lang.texts(),
        sites,
        site,
        search,
        entries,
        n_entries,
        form: state.form,
        errors: state.errors,
        import_text: state.import_text,
        import_format: state.import_format,
        trial,
    };
    render(status, &page)
}

/// `GET /admin/knowledge-base?site=KEY&q=SEARCH&try=MESSAGE&lang=en|zh`
pub async fn list(State(app): State<AppState>, admin: AdminUser, Query(query): Query<PageQuery>) -> Response {
    let lang = admin.lang;
    list_page(&app, &admin, lang, query, ListState::default()).await
}

fn kb_path(site: &str) -> String {
    format!("/admin/knowledge-base?site={}", url_part(site))
}

fn url_part(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `POST /admin/knowledge-base/entries`
pub async fn create(State(app): State<AppState>, post: AdminPost) -> Response {
    let lang = post.admin.lang;
    let site = post.form.text("site");
    let form = EntryForm::from_post(&post);
    let result = KnowledgeBaseStore::create_many(&app.store, site.clone(), vec![form.input()]).await;
    match result {
        Ok(created) => {
            if let Err(error) = app.bot.knowledge().reload(&site).await {
                return internal_error(error);
            }
            for entry in &created {
                post.admin
                    .audit(&app, "kb.create", &format!("{site} #{}", entry.id), entry.questions.join(" | "))
                    .await;
            }
            done(&kb_path(&site), lang.texts().saved)
        }
        Err(KbError::NoSuchSite) => not_found(lang, lang.texts().noun_site),
        Err(KbError::Invalid(message)) => {
            let mut errors = FieldErrors::default();
            errors.add("entry", message);
            let query = PageQuery { site: Some(site), ..PageQuery::default() };
            list_page(&app, &post.admin, lang, query, ListState { form, errors, ..ListState::default() }).await
        }
        Err(error) => internal_error(error),
    }
}

/// The entry `id`, or the page to answer with.
async fn stored_entry(app: &AppState, id: u64, lang: Lang) -> Result<KbEntry, Response> {
    match KnowledgeBaseStore::entry(&app.store, id).await {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) => Err(not_found(lang, lang.texts().noun_entry)),
        Err(error) => Err(internal_error(error)),
    }
}

/// `GET /admin/knowledge-base/entries/{id}`
pub async fn edit_form(
    State(app): State<AppState>,
    admin: AdminUser,
    Path(id): Path<u64>,
    Query(query): Query<PageQuery>,
) -> Response {
    let lang = admin.lang;
    let entry = match stored_entry(&app, id, lang).await {
        Ok(entry) => entry,
        Err(response) => return response,
    };
    let form = EntryForm::of(&entry);
    let page = EntryPage {
        layout: admin.layout("kb", query.notice.take()),
        t: lang.texts(),
        entry,
        form,
        errors: FieldErrors::default(),
    };
    render(StatusCode::OK, &page)
}

/// `POST /admin/knowledge-base/entries/{id}`
pub async fn save(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    let lang = post.admin.lang;
    let entry = match stored_entry(&app, id, lang).await {
        Ok(entry) => entry,
        Err(response) => return response,
    };
    let form = EntryForm::from_post(&post);
    let result = KnowledgeBaseStore::update(&app.store, id, form.input()).await;
    match result {
        Ok(saved) => {
            if let Err(error) = app.bot.knowledge().reload(&saved.site).await {
                return internal_error(error);
            }
            let target = format!("{} #{}", saved.site, saved.id);
            post.admin.audit(&app, "kb.update", &target, saved.questions.join(" | ")).await;
            done(&kb_path(&saved.site), lang.texts().saved)
        }
        Err(KbError::NotFound) => not_found(lang, lang.texts().noun_entry),
        Err(KbError::Invalid(message)) => {
            let mut errors = FieldErrors::default();
            errors.add("entry", message);
            let page = EntryPage { layout: post.admin.layout("kb", None), t: lang.texts(), entry, form, errors };
            render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(error) => internal_error(error),
    }
}

/// `POST /admin/knowledge-base/entries/{id}/delete`
pub async fn delete(State(app): State<AppState>, Path(id): Path<u64>, post: AdminPost) -> Response {
    let lang = post.admin.lang;
    match KnowledgeBaseStore::delete(&app.store, id).await {
        Ok(entry) => {
            if let Err(error) = app.bot.knowledge().reload(&entry.site).await {
                return internal_error(error);
            }
            let target = format!("{} #{}", entry.site, entry.id);
            post.admin.audit(&app, "kb.delete", &target, entry.questions.join(" | ")).await;
            done(&kb_path(&entry.site), lang.texts().deleted)
        }
        Err(KbError::NotFound) => not_found(lang, lang.texts().noun_entry),
        Err(error) => internal_error(error),
    }
}

/// `POST /admin/knowledge-base/import`: the file's text (`content`) as CSV or JSON (`format`).
pub async fn import(State(app): State<AppState>, post: AdminPost) -> Response {
    let lang = post.admin.lang;
    let site = post.form.text("site");
    let format_name = post.form.text("format");
    let text = post.form.text("content");
    let outcome = match Format::parse(&format_name) {
        Ok(Format::Markdown) => Err(KbError::Invalid("format: choose csv or json".into())),
        Ok(format) => match formats::import_rows(format, &text) {
            Ok(rows) if rows.is_empty() => Err(KbError::Invalid("the file holds no entries".into())),
            Ok(rows) => KnowledgeBaseStore::import(&app.store, site.clone(), rows).await,
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    match outcome {
        Ok(outcome) => {
            if let Err(error) = app.bot.knowledge().reload(&site).await {
                return internal_error(error);
            }
            let detail = format!("{} added, {} updated", outcome.created, outcome.updated);
            post.admin.audit(&app, "kb.import", &site, detail).await;
            let notice =
                super::fill(lang.texts().kb_imported, &[("created", &outcome.created), ("updated", &outcome.updated)]);
            done(&kb_path(&site), &notice)
        }
        Err(KbError::NoSuchSite) => not_found(lang, lang.texts().noun_site),
        Err(KbError::Invalid(message)) => {
            let mut errors = FieldErrors::default();
            errors.add("import", message);
            let query = PageQuery { site: Some(site), ..PageQuery::default() };
            let state = ListState { errors, import_text: text, import_format: format_name, ..ListState::default() };
            list_page(&app, &post.admin, lang, query, state).await
        }
        Err(error) => internal_error(error),
    }
}

#[derive(Deserialize)]
pub struct ExportQuery {
    site: Option<String>,
    format: Option<String>,
}

/// `GET /admin/knowledge-base/export?site=KEY&format=csv|json`: the site's entries as a file.
pub async fn export(State(app): State<AppState>, admin: AdminUser, Query(query): Query<ExportQuery>) -> Response {
    let lang = admin.lang;
    let format = match Format::parse(query.format.as_deref().unwrap_or("csv")) {
        Ok(format) => format,
        Err(error) => {
            return super::message_page(
                lang,
                StatusCode::UNPROCESSABLE_ENTITY,
                lang.texts().export,
                &error.to_string(),
            );
        }
    };
    let Some(key) = query.site else {
        return not_found(lang, lang.texts().noun_site);
    };
    if !matches!(app.sites.get(&key).await, Ok(Some(_))) {
        return not_found(lang, lang.texts().noun_site);
    }
    let entries = match KnowledgeBaseStore::of_site(&app.store, &key).await {
        Ok(entries) => entries,
        Err(error) => return internal_error(error),
    };
    let disposition = format!("attachment; filename=\"kb-{}.{}\"", key.replace(['"', '\\'], ""), format.extension());
    (
        [(header::CONTENT_TYPE, format.content_type().to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        formats::export(format, &entries),
    )
        .into_response()
}

async fn bot_page(
    app: &AppState,
    admin: &AdminUser,
    lang: Lang,
    site_key: Option<String>,
    notice: Option<String>,
    typed: Option<(SettingsForm, FieldErrors)>,
) -> Response {
    let (sites, site) = match sites_and_site(app, site_key, lang).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let (mut form, mut errors, mut unhelpful) =
        (SettingsForm::of(&BotSettings::default()), FieldErrors::default(), Vec::new());
    if let Some(site) = &site {
        let settings = match app.bot.settings(&site.key).await {
            Ok(settings) => settings,
            Err(error) => return internal_error(error),
        };
        form = SettingsForm::of(&settings);
        unhelpful = match BotFeedbackStore::unhelpful(&app.store, &site.key, LISTED_UNHELPFUL).await {
            Ok(found) => found,
            Err(error) => return internal_error(error),
        };
    }
    if let Some((typed_form, typed_errors)) = typed {
        form = typed_form;
        errors = typed_errors;
    }
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = BotPage { layout: admin.layout("bot", notice), t: lang.texts(), sites, site, form, errors, unhelpful };
    render(status, &page)
}

/// `GET /admin/bot?site=KEY&lang=en|zh`
pub async fn settings(State(app): State<AppState>, admin: AdminUser, Query(query): Query<PageQuery>) -> Response {
    let lang = admin.lang;
    bot_page(&app, &admin, lang, query.site, query.notice.take(), None).await
}

/// The change a settings form asks for; `Err` names the field that is not a number.
fn change_of(post: &AdminPost) -> Result<SettingsChange, (&'static str, String)> {
    let number = |field: &'static str| -> Result<String, (&'static str, String)> {
        let text = post.form.text(field).trim().to_owned();
        if text.is_empty() {
            return Err((field, format!("{field}: required")));
        }
        Ok(text)
    };
    let threshold = number("threshold")?
        .parse::<f32>()
        .map_err(|_| ("threshold", "threshold: must be a number from 0 to 1".to_owned()))?;
    let idle_close_minutes = number("idle_close_minutes")?
        .parse::<u32>()
        .map_err(|_| ("idle_close_minutes", "idle_close_minutes: must be a whole number of minutes".to_owned()))?;
    let base_url = post.form.text("base_url").trim().to_owned();
    let llm = if base_url.is_empty() {
        None
    } else {
        let timeout_ms = number("timeout_ms")?
            .parse::<u64>()
            .map_err(|_| ("timeout_ms", "llm.timeout_ms: must be a whole number of milliseconds".to_owned()))?;
        Some(LlmChange {
            base_url: Some(base_url),
            model: Some(post.form.text("model")),
            api_key: key_change(post, "api_key", "remove_key"),
            timeout_ms: Some(timeout_ms),
            first_token_timeout_ms: None,
        })
    };
    let embeddings_url = post.form.text("embeddings_url").trim().to_owned();
    let embeddings = if embeddings_url.is_empty() {
        None
    } else {
        Some(EmbeddingsChange {
            base_url: Some(embeddings_url),
            model: Some(post.form.text("embeddings_model")),
            api_key: key_change(post, "embeddings_api_key", "remove_embeddings_key"),
            timeout_ms: None,
        })
    };
    let handoff_phrases: Vec<String> = post
        .form
        .text("handoff_phrases")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect();
    Ok(SettingsChange {
        enabled: Some(post.form.checked("enabled")),
        name: Some(post.form.text("name")),
        threshold: Some(threshold),
        greeting: Some(post.form.text("greeting")),
        system_prompt: Some(post.form.text("system_prompt")),
        idle_close_minutes: Some(idle_close_minutes),
        llm: Some(llm),
        terms: Some(post.form.text("terms")),
        handoff_phrases: Some(handoff_phrases),
        embeddings: Some(embeddings),
    })
}

/// What a form's key box asks for: remove the key (its box ticked), keep it (left empty), or
/// the key typed.
fn key_change(post: &AdminPost, key_field: &str, remove_field: &str) -> Option<String> {
    let typed = post.form.text(key_field);
    if post.form.checked(remove_field) {
        Some(String::new())
    } else if typed.trim().is_empty() {
        None
    } else {
        Some(typed)
    }
}

/// The form as typed, to show again with its errors.
fn typed_form(post: &AdminPost, has_key: bool) -> SettingsForm {
    SettingsForm {
        enabled: post.form.checked("enabled"),
        name: post.form.text("name"),
        threshold: post.form.text("threshold"),
        greeting: post.form.text("greeting"),
        system_prompt: post.form.text("system_prompt"),
        idle_close_minutes: post.form.text("idle_close_minutes"),
        base_url: post.form.text("base_url"),
        model: post.form.text("model"),
        has_key,
        timeout_ms: post.form.text("timeout_ms"),
        handoff_phrases: post.form.text("handoff_phrases"),
        terms: post.form.text("terms"),
        embeddings_url: post.form.text("embeddings_url"),
        embeddings_model: post.form.text("embeddings_model"),
        has_embeddings_key: false,
    }
}

/// The form field an error message is about (messages start with the field's name).
fn field_of(message: &str) -> &'static str {
    const FIELDS: [&str; 8] = [
        "threshold",
        "name",
        "greeting",
        "system_prompt",
        "idle_close_minutes",
        "llm.base_url",
        "llm.model",
        "llm.timeout_ms",
    ];
    FIELDS.into_iter().find(|field| message.starts_with(field)).unwrap_or("settings")
}

/// `POST /admin/bot`: saves the whole form; the API key only when one was typed.
pub async fn save_settings(State(app): State<AppState>, post: AdminPost) -> Response {
    let lang = post.admin.lang;
    let site = post.form.text("site");
    if !matches!(app.sites.get(&site).await, Ok(Some(_))) {
        return not_found(lang, lang.texts().noun_site);
    }
    let has_key = match app.bot.settings(&site).await {
        Ok(settings) => settings.llm.as_ref().is_some_and(|llm| !llm.api_key.is_empty()),
        Err(error) => return internal_error(error),
    };
    let failed = |field: &'static str, message: String| {
        let mut errors = FieldErrors::default();
        errors.add(field, message);
        (typed_form(&post, has_key), errors)
    };
    let change = match change_of(&post) {
        Ok(change) => change,
        Err((field, message)) => {
            let typed = failed(field, message);
            return bot_page(&app, &post.admin, lang, Some(site), None, Some(typed)).await;
        }
    };
    match bot_settings::change(&app.store, &app.bot, &site, change, app.config.llm.allow_private_addresses).await {
        Ok(settings) => {
            let detail = format!(
                "enabled {}, threshold {}, llm {}",
                settings.enabled,
                settings.threshold,
                settings.llm.is_some()
            );
            post.admin.audit(&app, "bot.update", &site, detail).await;
            done(&format!("/admin/bot?site={}", url_part(&site)), lang.texts().saved)
        }
        Err(ChangeError::NoSuchSite) => not_found(lang, lang.texts().noun_site),
        Err(ChangeError::Invalid(message)) => {
            let typed = failed(field_of(&message), message);
            bot_page(&app, &post.admin, lang, Some(site), None, Some(typed)).await
        }
        Err(ChangeError::Storage(error)) => internal_error(error),
    }
}
