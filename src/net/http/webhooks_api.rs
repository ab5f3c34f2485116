//! Webhook administration over HTTP (admins only): create, list and delete a site's webhooks,
//! see each delivery, and send one again.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Caller, Json, admin_only};
use crate::history::audit;
use crate::net::AppState;
use crate::webhooks::{Delivery, NewWebhook, Webhook, WebhookError, WebhookStore};

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::NotFound => ApiError::NotFound(error.to_string()),
            WebhookError::Invalid(message) => ApiError::Unprocessable(message),
            WebhookError::Storage(error) => error.into(),
        }
    }
}

/// A webhook as listed: the secret is shown only once, when the webhook is created.
#[derive(Serialize)]
pub struct WebhookView {
    id: String,
    site: String,
    url: String,
    events: Vec<String>,
    allow_private: bool,
    created_at: i64,
    secret: String,
}

impl WebhookView {
    fn listed(webhook: Webhook) -> WebhookView {
        let hidden = format!("whsec_…{}", &webhook.secret[webhook.secret.len().saturating_sub(4)..]);
        WebhookView { secret: hidden, ..WebhookView::created(webhook) }
    }

    fn created(webhook: Webhook) -> WebhookView {
        WebhookView {
            id: webhook.id,
            site: webhook.site,
            url: webhook.url,
            events: webhook.events,
            allow_private: webhook.allow_private,
            created_at: webhook.created_at,
            secret: webhook.secret,
        }
    }
}

/// `POST /api/v1/sites/{key}/webhooks`
pub async fn create(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(site): Path<String>,
    Json(new_webhook): Json<NewWebhook>,
) -> Result<(StatusCode, axum::Json<WebhookView>), ApiError> {
    let admin = admin_only(principal)?;
    app.sites.get(&site).await?.ok_or_else(|| ApiError::NotFound("no such site".into()))?;
    let webhook = WebhookStore::create(&app.store, site.clone(), new_webhook).await?;
    let detail = format!("site {site}, url {}, events {:?}", webhook.url, webhook.events);
    audit::record(&app.store, &admin, "webhook.create", &webhook.id, detail).await;
    Ok((StatusCode::CREATED, axum::Json(WebhookView::created(webhook))))
}

/// `GET /api/v1/sites/{key}/webhooks`
pub async fn list(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(site): Path<String>,
) -> Result<axum::Json<Vec<WebhookView>>, ApiError> {
    admin_only(principal)?;
    let found = WebhookStore::of_site(&app.store, &site).await?;
    Ok(axum::Json(found.into_iter().map(WebhookView::listed).collect()))
}

/// `DELETE /api/v1/webhooks/{id}`
pub async fn delete(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let admin = admin_only(principal)?;
    WebhookStore::delete(&app.store, id.clone()).await?;
    audit::record(&app.store, &admin, "webhook.delete", &id, String::new()).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/webhooks/{id}/deliveries`: newest first.
pub async fn deliveries(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<axum::Json<Vec<Delivery>>, ApiError> {
    admin_only(principal)?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    if WebhookStore::webhook(&app.store, &id).await?.is_none() {
        return Err(ApiError::NotFound("no such webhook".into()));
    }
    Ok(axum::Json(WebhookStore::deliveries(&app.store, &id, limit).await?))
}

/// `POST /api/v1/webhook-deliveries/{id}/resend`
pub async fn resend(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<u64>,
) -> Result<axum::Json<Delivery>, ApiError> {
    let admin = admin_only(principal)?;
    let delivery = WebhookStore::resend(&app.store, id).await?;
    audit::record(&app.store, &admin, "webhook.resend", &format!("delivery {id}"), String::new()).await;
    Ok(axum::Json(delivery))
}
