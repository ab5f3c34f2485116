//! Admin pages for webhooks: per site, the list with a form to add one (its signing secret shown
//! once, right after), a page per webhook to edit it and see its recent deliveries (status,
//! attempts, last error and response code) with a button to send one again, and deleting.
//! They go through `WebhookStore` (create, update, delete, resend), as the HTTP API does.
//! Their words are the admin catalogue's `webhooks_*` texts ([`super::texts`]).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::texts::{Lang, Texts};
use super::{AdminPost, AdminUser, Layout, done, internal_error, not_found, render};
use crate::base::clock::format_utc;
use crate::net::AppState;
use crate::sites::Site;
use crate::sites::store::SiteStore;
use crate::webhooks::{Delivery, DeliveryStatus, EVENT_TYPES, NewWebhook, Webhook, WebhookError, WebhookStore};

/// Deliveries shown on a webhook's page, newest first.
const RECENT_DELIVERIES: usize = 50;

/// A webhook as the pages show it.
struct WebhookRow {
    id: String,
    url: String,
    events: Vec<String>,
    allow_private: bool,
    /// The secret's last characters only.
    secret_hint: String,
    created_at: String,
}

impl WebhookRow {
    fn new(webhook: &Webhook) -> WebhookRow {
        let secret = &webhook.secret;
        WebhookRow {
            id: webhook.id.clone(),
            url: webhook.url.clone(),
            events: webhook.events.clone(),
            allow_private: webhook.allow_private,
            secret_hint: format!("whsec_…{}", &secret[secret.len().saturating_sub(4)..]),
            created_at: format_utc(webhook.created_at),
        }
    }
}

/// A delivery as the page shows it.
struct DeliveryRow {
    id: u64,
    event_type: String,
    /// `pending`, `sent` or `failed` (a class name too).
    status: &'static str,
    attempts: u32,
    response: String,
    last_error: String,
    created_at: String,
}

impl DeliveryRow {
    fn new(delivery: Delivery) -> DeliveryRow {
        DeliveryRow {
            id: delivery.id,
            event_type: delivery.event_type,
            status: match delivery.status {
                DeliveryStatus::Pending => "pending",
                DeliveryStatus::Delivered => "sent",
                DeliveryStatus::Failed => "failed",
            },
            attempts: delivery.attempts,
            response: delivery.last_status.map(|status| status.to_string()).unwrap_or_default(),
            last_error: delivery.last_error.unwrap_or_default(),
            created_at: format_utc(delivery.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    t: &'static Texts,
    event_types: &'static [&'static str],
    sites: Vec<Site>,
    site: Option<Site>,
    webhooks: Vec<WebhookRow>,
    /// The secret of a webhook just made, shown this once.
    created_secret: Option<String>,
    error: Option<String>,
    form_url: String,
    form_events: Vec<String>,
    form_allow_private: bool,
}

#[derive(Template)]
#[template(path = "admin/webhook.html")]
struct WebhookPage {
    layout: Layout,
    t: &'static Texts,
    event_types: &'static [&'static str],
    site: String,
    webhook: WebhookRow,
    deliveries: Vec<DeliveryRow>,
    error: Option<String>,
}

/// The query of the pages: the site, and the notice after a change.
#[derive(serde::Deserialize, Default)]
pub struct PageQuery {
    site: Option<String>,
    done: Option<String>,
}

/// What the create form was sent with, kept after a refusal.
#[derive(Default)]
struct Typed {
    url: String,
    events: Vec<String>,
    allow_private: bool,
}

fn typed(post: &AdminPost) -> Typed {
    Typed {
        url: post.form.text("url"),
        events: post.form.all("events"),
        allow_private: post.form.checked("allow_private"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn list_page(
    app: &AppState,
    admin: &AdminUser,
    lang: Lang,
    site: Option<String>,
    notice: Option<String>,
    created_secret: Option<String>,
    error: Option<String>,
    form: Typed,
) -> Result<WebhooksPage, Response> {
    let sites = SiteStore::list_by_name(&app.store).await.map_err(internal_error)?;
    let site = match site {
        Some(key) => sites.iter().find(|found| found.key == key).cloned(),
        None => sites.first().cloned(),
    };
    let found = match &site {
        Some(site) => WebhookStore::of_site(&app.store, &site.key).await.map_err(internal_error)?,
        None => Vec::new(),
    };
    let rows: Vec<WebhookRow> = found.iter().map(WebhookRow::new).collect();
    Ok(WebhooksPage {
        layout: admin.layout("webhooks", notice),
        t: lang.texts(),
        event_types: &EVENT_TYPES,
        sites,
        site,
        webhooks: rows,
        created_secret,
        error,
        form_url: form.url,
        form_events: form.events,
        form_allow_private: form.allow_private,
    })
}

/// `GET /admin/webhooks?site=KEY`
pub async fn list(State(app): State<AppState>, admin: AdminUser, Query(query): Query<PageQuery>) -> Response {
    let lang = admin.lang;
    let notice = query.done.filter(|notice| !notice.is_empty());
    match list_page(&app, &admin, lang, query.site, notice, None, None, Typed::default()).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(response) => response,
    }
}

/// `POST /admin/webhooks`: adds a webhook to a site and shows its secret, this once.
pub async fn create(State(app): State<AppState>, post: AdminPost) -> Response {
    let (lang, site) = (post.admin.lang, post.form.text("site"));
    let form = typed(&post);
    let new_webhook =
        NewWebhook { url: form.url.clone(), events: form.events.clone(), allow_private: form.allow_private };
    let known = app.sites.get(&site).await.map_err(internal_error);
    match known {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(lang, lang.texts().noun_site),
        Err(response) => return response,
    }
    let (status, secret, error, form) = match WebhookStore::create(&app.store, site.clone(), new_webhook).await {
        Ok(webhook) => {
            let detail = format!("site {site}, url {}, events {:?}", webhook.url, webhook.events);
            post.admin.audit(&app, "webhook.create", &webhook.id, detail).await;
            (StatusCode::CREATED, Some(webhook.secret), None, Typed::default())
        }
        Err(WebhookError::Invalid(message)) => (StatusCode::UNPROCESSABLE_ENTITY, None, Some(message), form),
        Err(error) => return internal_error(error),
    };
    match list_page(&app, &post.admin, lang, Some(site), None, secret, error, form).await {
        Ok(page) => render(status, &page),
        Err(response) => response,
    }
}

async fn webhook_page(
    app: &AppState,
    admin: &AdminUser,
    lang: Lang,
    id: String,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let webhook = match WebhookStore::webhook(&app.store, &id).await {
        Ok(Some(webhook)) => webhook,
        Ok(None) => return not_found(lang, lang.texts().noun_webhook),
        Err(error) => return internal_error(error),
    };
    let deliveries = match WebhookStore::deliveries(&app.store, &id, RECENT_DELIVERIES).await {
        Ok(deliveries) => deliveries,
        Err(error) => return internal_error(error),
    };
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = WebhookPage {
        layout: admin.layout("webhooks", notice),
        t: lang.texts(),
        event_types: &EVENT_TYPES,
        site: webhook.site.clone(),
        webhook: WebhookRow::new(&webhook),
        deliveries: deliveries.into_iter().map(DeliveryRow::new).collect(),
        error,
    };
    render(status, &page)
}

/// `GET /admin/webhooks/{id}`: the edit form and the recent deliveries.
pub async fn edit_form(
    State(app): State<AppState>,
    admin: AdminUser,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let lang = admin.lang;
    let notice = query.done.filter(|notice| !notice.is_empty());
    webhook_page(&app, &admin, lang, id, notice, None).await
}

/// `POST /admin/webhooks/{id}`
pub async fn save(State(app): State<AppState>, Path(id): Path<String>, post: AdminPost) -> Response {
    let lang = post.admin.lang;
    let form = typed(&post);
    let change = NewWebhook { url: form.url, events: form.events, allow_private: form.allow_private };
    match WebhookStore::update(&app.store, id.clone(), change).await {
        Ok(webhook) => {
            let detail = format!("url {}, events {:?}", webhook.url, webhook.events);
            post.admin.audit(&app, "webhook.update", &webhook.id, detail).await;
            done(&format!("/admin/webhooks/{id}"), lang.texts().webhooks_saved)
        }
        Err(WebhookError::NotFound) => not_found(lang, lang.texts().noun_webhook),
        Err(WebhookError::Invalid(message)) => webhook_page(&app, &post.admin, lang, id, None, Some(message)).await,
        Err(error) => internal_error(error),
    }
}

/// `POST /admin/webhooks/{id}/delete`
pub async fn delete(State(app): State<AppState>, Path(id): Path<String>, post: AdminPost) -> Response {
    let lang = post.admin.lang;
    let site = match WebhookStore::webhook(&app.store, &id).await {
        Ok(Some(webhook)) => webhook.site,
        Ok(None) => return not_found(lang, lang.texts().noun_webhook),
        Err(error) => return internal_error(error),
    };
    match WebhookStore::delete(&app.store, id.clone()).await {
        Ok(()) => {
            post.admin.audit(&app, "webhook.delete", &id, String::new()).await;
            done(&format!("/admin/webhooks?site={site}"), lang.texts().webhooks_deleted)
        }
        Err(WebhookError::NotFound) => not_found(lang, lang.texts().noun_webhook),
        Err(error) => internal_error(error),
    }
}

/// `POST /admin/webhooks/{id}/deliveries/{delivery}/resend`
pub async fn resend(
    State(app): State<AppState>,
    Path((id, delivery_id)): Path<(String, String)>,
    post: AdminPost,
) -> Response {
    let lang = post.admin.lang;
    let Ok(delivery_id) = delivery_id.parse::<u64>() else { return not_found(lang, lang.texts().noun_delivery) };
    match WebhookStore::delivery(&app.store, delivery_id).await {
        Ok(Some(delivery)) if delivery.webhook_id == id => {}
        Ok(_) => return not_found(lang, lang.texts().noun_delivery),
        Err(error) => return internal_error(error),
    }
    match WebhookStore::resend(&app.store, delivery_id).await {
        Ok(_) => {
            post.admin.audit(&app, "webhook.resend", &format!("delivery {delivery_id}"), String::new()).await;
            done(&format!("/admin/webhooks/{id}"), lang.texts().webhooks_resent)
        }
        Err(WebhookError::NotFound) => not_found(lang, lang.texts().noun_delivery),
        Err(error) => internal_error(error),
    }
}
