//! The webhooks' storage boundary: a site's webhooks made, changed, deleted and listed, and
//! their deliveries read and sent again. [`Store`] implements it here with the writer
//! operations of `webhooks`, the cluster's PostgreSQL in `cluster::webhooks` (deliveries in its
//! `outbox`); both decide with `webhooks::new_record`, `Webhook::change` and
//! `Delivery::resend_at`.

use std::future::Future;

use super::{Delivery, NewWebhook, Webhook, WebhookError};
use crate::storage::{StorageError, Store};

/// The webhooks' storage boundary.
pub trait WebhookStore: Send + Sync {
    /// Adds a webhook to `site` with a new signing secret (the site must exist: checked by the
    /// caller); refused when invalid or when the site has its most webhooks.
    fn create(
        &self,
        site: String,
        new_webhook: NewWebhook,
    ) -> impl Future<Output = Result<Webhook, WebhookError>> + Send;

    /// Changes a webhook's URL, events and private-address permission.
    fn update(&self, id: String, change: NewWebhook) -> impl Future<Output = Result<Webhook, WebhookError>> + Send;

    /// Deletes a webhook; its pending deliveries fail as those of a deleted webhook.
    fn delete(&self, id: String) -> impl Future<Output = Result<(), WebhookError>> + Send;

    /// One webhook.
    fn webhook(&self, id: &str) -> impl Future<Output = Result<Option<Webhook>, StorageError>> + Send;

    /// A site's webhooks, oldest first (`webhooks::oldest_first`).
    fn of_site(&self, site: &str) -> impl Future<Output = Result<Vec<Webhook>, StorageError>> + Send;

    /// One delivery.
    fn delivery(&self, id: u64) -> impl Future<Output = Result<Option<Delivery>, StorageError>> + Send;

    /// Up to `limit` of a webhook's deliveries, newest first.
    fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StorageError>> + Send;

    /// Queues a delivery again (for example after it failed), due now.
    fn resend(&self, delivery_id: u64) -> impl Future<Output = Result<Delivery, WebhookError>> + Send;
}

impl WebhookStore for Store {
    async fn create(&self, site: String, new_webhook: NewWebhook) -> Result<Webhook, WebhookError> {
        super::create(self, site, new_webhook).await
    }

    async fn update(&self, id: String, change: NewWebhook) -> Result<Webhook, WebhookError> {
        super::update(self, id, change).await
    }

    async fn delete(&self, id: String) -> Result<(), WebhookError> {
        super::delete(self, id).await
    }

    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StorageError> {
        let id = id.to_owned();
        self.read(move |transaction| super::get(transaction, &id)).await
    }

    async fn of_site(&self, site: &str) -> Result<Vec<Webhook>, StorageError> {
        let site = site.to_owned();
        self.read(move |transaction| super::of_site(transaction, &site)).await
    }

    async fn delivery(&self, id: u64) -> Result<Option<Delivery>, StorageError> {
        self.read(move |transaction| super::get_delivery(transaction, id)).await
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> Result<Vec<Delivery>, StorageError> {
        let webhook_id = webhook_id.to_owned();
        self.read(move |transaction| super::deliveries(transaction, &webhook_id, limit)).await
    }

    async fn resend(&self, delivery_id: u64) -> Result<Delivery, WebhookError> {
        super::resend(self, delivery_id).await
    }
}
