//! Webhooks on the cluster's PostgreSQL: the [`WebhookStore`] boundary over the `webhooks`
//! record table (migration 7) and the webhook rows of `outbox` (migration 4), where nodes write
//! deliveries and `kefu migrate-to-postgres` copies the appliance's. Decided as on the appliance
//! (`webhooks::new_record`, `Webhook::change`, `Delivery::resend_at`); times are the database's
//! clock. A creation takes an advisory lock of its site, so two nodes adding webhooks at once
//! keep to the site's limit. A resend locks the delivery's row and makes it pending, due now and
//! unclaimed: the next claim of any node sends it, and a node still holding it records nothing.

use tokio_postgres::Transaction;

use crate::base::clock;
use crate::cluster::events::NodeEvent;
use crate::cluster::outbox::{self, OutboxContent, OutboxRow, OutboxStatus};
use crate::cluster::postgres::{self, PostgresError, Readers, Writers, database, record_text};
use crate::storage::StorageError;
use crate::webhooks::{self, Delivery, DeliveryStatus, NewWebhook, Webhook, WebhookError, WebhookStore};

pub struct PostgresWebhooks {
    readers: Readers,
    writers: Writers,
}

impl PostgresWebhooks {
    /// Connects and applies the migrations the database lacks.
    pub async fn open(url: &str) -> Result<PostgresWebhooks, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresWebhooks { readers: Readers::new(url, 2), writers: Writers::new(url, 1) })
    }
}

/// An outbox row as the appliance's delivery, if it is a webhook's. A row no longer sent
/// (`skipped`) is shown as failed, which is what the appliance calls a delivery it gave up.
fn delivery_of(row: OutboxRow) -> Option<Delivery> {
    let OutboxContent::Webhook { webhook_id, event_type, payload, trace_id, .. } = row.content else { return None };
    let status = match row.status {
        OutboxStatus::Pending => DeliveryStatus::Pending,
        OutboxStatus::Delivered => DeliveryStatus::Delivered,
        OutboxStatus::Failed | OutboxStatus::Skipped => DeliveryStatus::Failed,
    };
    Some(Delivery {
        id: row.id,
        webhook_id,
        site: row.site.unwrap_or_default(),
        event_type,
        payload,
        status,
        attempts: row.attempts,
        created_at: row.created_at,
        next_attempt_at: row.next_attempt_at,
        last_status: row.last_status,
        last_error: row.last_error,
        delivered_at: row.finished_at.filter(|_| status == DeliveryStatus::Delivered),
        trace_id,
    })
}

/// Writes in `transaction` a delivery for every subscribed webhook of each event a node decided
/// there (assigned, closed, rated, an offline message), with its payload. The deliveries of new
/// messages and conversations are written by the database with the rows themselves (migration
/// 17: the append function and a trigger).
pub(crate) async fn record_deliveries(
    transaction: &Transaction<'_>,
    published: &[NodeEvent],
    epoch: u64,
) -> Result<(), PostgresError> {
    for event in published {
        let NodeEvent::Conversation(change) = event else { continue };
        let Some((site, event_type, data)) = webhooks::event_of(&change.clone().into_committed(), epoch) else {
            continue;
        };
        if TRIGGERED.contains(&event_type) {
            continue;
        }
        let payload = webhooks::payload(event_type, clock::now_millis(), &data);
        transaction.execute("SELECT kefu_webhook_rows($1, $2, $3, NULL)", &[&site, &event_type, &payload]).await?;
    }
    Ok(())
}

/// The events whose deliveries the database writes (migration 17).
const TRIGGERED: [&str; 2] = ["message.created", "conversation.created"];

impl WebhookStore for PostgresWebhooks {
    async fn create(&self, site: String, new_webhook: NewWebhook) -> Result<Webhook, WebhookError> {
        self.writers
            .run(async |transaction| -> Result<_, WebhookError> {
                transaction
                    .execute("SELECT pg_advisory_xact_lock(hashtext('kefu webhooks ' || $1))", &[&site])
                    .await
                    .map_err(database)?;
                let row = transaction
                    .query_one("SELECT count(*), kefu_now_ms() FROM webhooks WHERE record->>'site' = $1", &[&site])
                    .await
                    .map_err(database)?;
                let (n_of_site, now): (i64, i64) = (row.get(0), row.get(1));
                let webhook = webhooks::new_record(&site, n_of_site as usize, new_webhook, now)?;
                transaction
                    .execute(
                        "INSERT INTO webhooks (id, record) VALUES ($1, $2::text::jsonb)",
                        &[&webhook.id, &record_text(&webhook)],
                    )
                    .await
                    .map_err(database)?;
                Ok(webhook)
            })
            .await
    }

    async fn update(&self, id: String, change: NewWebhook) -> Result<Webhook, WebhookError> {
        self.writers
            .run(async |transaction| -> Result<_, WebhookError> {
                let statement = "SELECT record::text FROM webhooks WHERE id = $1 FOR UPDATE";
                let found: Option<Webhook> = postgres::record_where(transaction, "webhook", statement, &[&id]).await?;
                let mut webhook = found.ok_or(WebhookError::NotFound)?;
                webhook.change(change)?;
                transaction
                    .execute(
                        "UPDATE webhooks SET record = $2::text::jsonb WHERE id = $1",
                        &[&id, &record_text(&webhook)],
                    )
                    .await
                    .map_err(database)?;
                Ok(webhook)
            })
            .await
    }

    async fn delete(&self, id: String) -> Result<(), WebhookError> {
        let client = self.readers.client().await.map_err(StorageError::from)?;
        let deleted = client.execute("DELETE FROM webhooks WHERE id = $1", &[&id]).await.map_err(database)?;
        match deleted {
            0 => Err(WebhookError::NotFound),
            _ => Ok(()),
        }
    }

    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StorageError> {
        let client = self.readers.client().await?;
        postgres::record_where(&*client, "webhook", "SELECT record::text FROM webhooks WHERE id = $1", &[&id]).await
    }

    async fn of_site(&self, site: &str) -> Result<Vec<Webhook>, StorageError> {
        let client = self.readers.client().await?;
        let statement = "SELECT record::text FROM webhooks WHERE record->>'site' = $1";
        Ok(webhooks::oldest_first(postgres::records_where(&*client, "webhook", statement, &[&site]).await?))
    }

    async fn delivery(&self, id: u64) -> Result<Option<Delivery>, StorageError> {
        let client = self.readers.client().await?;
        Ok(outbox::get(&*client, id).await?.and_then(delivery_of))
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> Result<Vec<Delivery>, StorageError> {
        let client = self.readers.client().await?;
        Ok(outbox::of_webhook(&*client, webhook_id, limit).await?.into_iter().filter_map(delivery_of).collect())
    }

    async fn resend(&self, delivery_id: u64) -> Result<Delivery, WebhookError> {
        self.writers
            .run(async |transaction| -> Result<_, WebhookError> {
                let row = outbox::get_for_update(transaction, delivery_id).await.map_err(StorageError::from)?;
                let mut delivery = row.and_then(delivery_of).ok_or(WebhookError::NotFound)?;
                let now: i64 = transaction.query_one("SELECT kefu_now_ms()", &[]).await.map_err(database)?.get(0);
                delivery.resend_at(now);
                let due_at = delivery.next_attempt_at.unwrap_or(now);
                outbox::requeue(transaction, delivery_id, delivery.created_at, due_at)
                    .await
                    .map_err(StorageError::from)?;
                Ok(delivery)
            })
            .await
    }
}
