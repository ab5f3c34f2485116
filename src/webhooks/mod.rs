//! Webhooks: a site's events sent to its own systems, signed like Standard Webhooks, from a
//! durable outbox.
//!
//! Every committed batch passes through [`record_deliveries`] inside the writer, before the
//! commit: each event a site's webhook subscribes to becomes a delivery row in the same
//! transaction as the event itself, so an event is never committed without its delivery nor the
//! reverse. The [`sender`] task then posts due deliveries, retrying with exponential backoff and
//! jitter for a day before marking them failed. [`feed`] keeps the same events per site for the
//! gRPC API's `Subscribe`.
//!
//! The webhooks' configuration and their deliveries' listing and resending are behind
//! [`WebhookStore`] ([`webhook_store`]): both backends decide with [`new_record`],
//! [`Webhook::change`], [`Delivery::resend_at`] and list with [`oldest_first`].

pub mod feed;
pub mod sender;
pub mod webhook_store;

pub use webhook_store::WebhookStore;

use base64::Engine;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::chat::delivery::{CommittedEvent, ConversationEvent};
use crate::chat::writes::ChatWrites;
use crate::storage::writer::{Counter, WriterExtension};
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

/// Every webhook, kept by the writer between batches: loaded on first use, dropped when one
/// changes.
#[derive(Default)]
struct WebhookCache(Option<Vec<Webhook>>);

impl WriterExtension for WebhookCache {}

/// Webhook operations on the writer's context.
trait WebhookWrites {
    /// Every webhook (cached across batches).
    fn webhooks(&mut self) -> Result<&[Webhook], StorageError>;
    /// Forgets the cached webhooks; operations that change webhooks call it.
    fn invalidate_webhooks(&mut self);
}

impl WebhookWrites for WriteContext<'_> {
    fn webhooks(&mut self) -> Result<&[Webhook], StorageError> {
        if self.extension::<WebhookCache>().0.is_none() {
            let table = self.transaction.open_table(tables::WEBHOOKS)?;
            let mut loaded = Vec::new();
            for entry in table.iter()? {
                loaded.push(decode_json(entry?.1.value())?);
            }
            self.extension::<WebhookCache>().0 = Some(loaded);
        }
        Ok(self.extension::<WebhookCache>().0.as_deref().unwrap_or_default())
    }

    fn invalidate_webhooks(&mut self) {
        self.extension::<WebhookCache>().0 = None;
    }
}

/// The events a webhook can subscribe to.
pub const EVENT_TYPES: [&str; 6] = [
    "message.created",
    "conversation.created",
    "conversation.assigned",
    "conversation.closed",
    "offline_message.received",
    "conversation.rated",
];

/// Most webhooks per site.
const MAX_WEBHOOKS_PER_SITE: usize = 10;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub site: String,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_` followed by the base64 key (the Standard Webhooks form).
    pub secret: String,
    /// Allows private, loopback and link-local destinations; off unless an admin sets it.
    pub allow_private: bool,
    pub created_at: i64,
}

impl Webhook {
    /// Changes the URL, events and private-address permission; the id, site, secret and
    /// deliveries stay. An invalid change changes nothing.
    pub fn change(&mut self, change: NewWebhook) -> Result<(), WebhookError> {
        validate(&change)?;
        self.url = change.url;
        self.events = change.events;
        self.allow_private = change.allow_private;
        Ok(())
    }

    /// The signing key bytes.
    pub fn key(&self) -> Vec<u8> {
        let encoded = self.secret.strip_prefix("whsec_").unwrap_or(&self.secret);
        base64::engine::general_purpose::STANDARD.decode(encoded).unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub webhook_id: String,
    pub site: String,
    pub event_type: String,
    /// The exact body sent (and signed).
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    /// The trace of the message a `message.created` delivery is about, so its delivery joins that
    /// message's trace (crate::base::trace_export); absent from rows written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<u64>,
}

impl Delivery {
    /// Queues the delivery again at `now`: pending, due at once, and retried for as long as a
    /// new delivery would be (its attempts so far are kept).
    pub fn resend_at(&mut self, now: i64) {
        self.status = DeliveryStatus::Pending;
        self.created_at = now;
        self.next_attempt_at = Some(now);
        self.delivered_at = None;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no such webhook")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Clone, Debug, Deserialize)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub allow_private: bool,
}

fn validate(new_webhook: &NewWebhook) -> Result<(), WebhookError> {
    let url: reqwest::Url = new_webhook.url.parse().map_err(|_| WebhookError::Invalid("url: not a URL".into()))?;
    crate::base::outbound::check_url(&url, new_webhook.allow_private)
        .map_err(|error| WebhookError::Invalid(format!("url: {error}")))?;
    if new_webhook.events.is_empty() {
        return Err(WebhookError::Invalid(format!("events: name at least one of {}", EVENT_TYPES.join(", "))));
    }
    if let Some(unknown) = new_webhook.events.iter().find(|event| !EVENT_TYPES.contains(&event.as_str())) {
        return Err(WebhookError::Invalid(format!("events: unknown event {unknown:?}")));
    }
    Ok(())
}

/// A new webhook of `site`, which has `n_of_site` webhooks already, made at `created_at` with a
/// fresh id and signing secret; refused when `new_webhook` is invalid or the site has its most.
pub fn new_record(
    site: &str,
    n_of_site: usize,
    new_webhook: NewWebhook,
    created_at: i64,
) -> Result<Webhook, WebhookError> {
    validate(&new_webhook)?;
    if n_of_site >= MAX_WEBHOOKS_PER_SITE {
        return Err(WebhookError::Invalid(format!("a site has at most {MAX_WEBHOOKS_PER_SITE} webhooks")));
    }
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    Ok(Webhook {
        id: crate::base::secrets::new_hex_id(8),
        site: site.to_owned(),
        url: new_webhook.url,
        events: new_webhook.events,
        secret: format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key)),
        allow_private: new_webhook.allow_private,
        created_at,
    })
}

/// A site's webhooks as they are listed: oldest first.
pub fn oldest_first(mut webhooks: Vec<Webhook>) -> Vec<Webhook> {
    webhooks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    webhooks
}

async fn create(store: &Store, site: String, new_webhook: NewWebhook) -> Result<Webhook, WebhookError> {
    store
        .write(move |context| {
            let n_of_site = context.webhooks()?.iter().filter(|existing| existing.site == site).count();
            let webhook = match new_record(&site, n_of_site, new_webhook, context.now) {
                Ok(webhook) => webhook,
                Err(error) => return Ok(Err(error)),
            };
            context
                .transaction
                .open_table(tables::WEBHOOKS)?
                .insert(webhook.id.as_str(), encode_json(&webhook).as_slice())?;
            context.invalidate_webhooks();
            Ok(Ok(webhook))
        })
        .await
}

async fn update(store: &Store, id: String, change: NewWebhook) -> Result<Webhook, WebhookError> {
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::WEBHOOKS)?;
            let Some(mut webhook) =
                table.get(id.as_str())?.map(|value| decode_json::<Webhook>(value.value())).transpose()?
            else {
                return Ok(Err(WebhookError::NotFound));
            };
            if let Err(error) = webhook.change(change) {
                return Ok(Err(error));
            }
            table.insert(id.as_str(), encode_json(&webhook).as_slice())?;
            drop(table);
            context.invalidate_webhooks();
            Ok(Ok(webhook))
        })
        .await
}

async fn delete(store: &Store, id: String) -> Result<(), WebhookError> {
    store
        .write(move |context| {
            if context.transaction.open_table(tables::WEBHOOKS)?.remove(id.as_str())?.is_none() {
                return Ok(Err(WebhookError::NotFound));
            }
            context.invalidate_webhooks();
            Ok(Ok(()))
        })
        .await
}

/// Deletes every webhook of a site (inside the site's deletion); their pending deliveries fail
/// as those of a deleted webhook. Returns how many.
pub fn delete_of_site(context: &mut WriteContext<'_>, site: &str) -> Result<usize, StorageError> {
    let doomed: Vec<String> =
        context.webhooks()?.iter().filter(|webhook| webhook.site == site).map(|webhook| webhook.id.clone()).collect();
    let mut table = context.transaction.open_table(tables::WEBHOOKS)?;
    for id in &doomed {
        table.remove(id.as_str())?;
    }
    drop(table);
    context.invalidate_webhooks();
    Ok(doomed.len())
}

fn get(transaction: &ReadTransaction, id: &str) -> Result<Option<Webhook>, StorageError> {
    let table = transaction.open_table(tables::WEBHOOKS)?;
    table.get(id)?.map(|value| decode_json(value.value())).transpose()
}

fn of_site(transaction: &ReadTransaction, site: &str) -> Result<Vec<Webhook>, StorageError> {
    let table = transaction.open_table(tables::WEBHOOKS)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        let webhook: Webhook = decode_json(entry?.1.value())?;
        if webhook.site == site {
            found.push(webhook);
        }
    }
    Ok(oldest_first(found))
}

fn get_delivery(transaction: &ReadTransaction, id: u64) -> Result<Option<Delivery>, StorageError> {
    let table = transaction.open_table(tables::WEBHOOK_DELIVERIES)?;
    table.get(id)?.map(|value| decode_json(value.value())).transpose()
}

/// A webhook's deliveries, newest first.
fn deliveries(transaction: &ReadTransaction, webhook_id: &str, limit: usize) -> Result<Vec<Delivery>, StorageError> {
    let table = transaction.open_table(tables::WEBHOOK_DELIVERIES)?;
    let mut found = Vec::new();
    for entry in table.iter()?.rev() {
        if found.len() >= limit {
            break;
        }
        let delivery: Delivery = decode_json(entry?.1.value())?;
        if delivery.webhook_id == webhook_id {
            found.push(delivery);
        }
    }
    Ok(found)
}

/// Queues a delivery again (for example after it failed), due now.
async fn resend(store: &Store, delivery_id: u64) -> Result<Delivery, WebhookError> {
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::WEBHOOK_DELIVERIES)?;
            let Some(mut delivery) =
                table.get(delivery_id)?.map(|value| decode_json::<Delivery>(value.value())).transpose()?
            else {
                return Ok(Err(WebhookError::NotFound));
            };
            let mut due = context.transaction.open_table(tables::WEBHOOK_DUE)?;
            crate::storage::outbox::move_due(&mut due, delivery_id, delivery.next_attempt_at, Some(context.now))?;
            delivery.resend_at(context.now);
            table.insert(delivery_id, encode_json(&delivery).as_slice())?;
            Ok(Ok(delivery))
        })
        .await
}

/// The body of an event as webhooks and `Subscribe` send it: `{"type", "timestamp", "data"}`.
pub fn payload(event_type: &str, now: i64, data: &Value) -> String {
    let timestamp = jiff::Timestamp::from_millisecond(now).map(|at| at.to_string()).unwrap_or_default();
    json!({ "type": event_type, "timestamp": timestamp, "data": data }).to_string()
}

/// The site, event type and payload data of a committed event, if it is one webhooks carry: what
/// both backends write to their outboxes.
pub fn event_of(event: &CommittedEvent, epoch: u64) -> Option<(String, &'static str, Value)> {
    match event {
        CommittedEvent::Message { conversation_id, seq, record, site, .. } => {
            let view = crate::chat::messages::message_view(*conversation_id, *seq, record, epoch);
            let mut data = json!({ "site": site, "message": view });
            // The offline form's message also comes as `offline_message.received`: the id lets a
            // receiver that takes both events tell them apart.
            if let Some(id) = record.offline_message_id {
                data["offline_message_id"] = json!(id);
            }
            Some((site.clone(), "message.created", data))
        }
        CommittedEvent::Conversation { event, conversation } => {
            let event_type = match event {
                ConversationEvent::Created => "conversation.created",
                ConversationEvent::Assigned { .. } => "conversation.assigned",
                ConversationEvent::Closed { .. } => "conversation.closed",
                ConversationEvent::Queued { .. } | ConversationEvent::Reopened | ConversationEvent::HandedOff => {
                    return None;
                }
            };
            Some((conversation.site.clone(), event_type, json!({ "conversation": conversation.view(epoch) })))
        }
        CommittedEvent::OfflineMessage(message) => {
            Some((message.site.clone(), "offline_message.received", json!({ "offline_message": message })))
        }
        CommittedEvent::Rated { conversation } => Some((
            conversation.site.clone(),
            "conversation.rated",
            json!({ "conversation_id": conversation.id, "rating": conversation.rating }),
        )),
        CommittedEvent::Duplicate { .. }
        | CommittedEvent::Read { .. }
        | CommittedEvent::AccessEnded(_)
        | CommittedEvent::ApiTokensRevoked(_)
        | CommittedEvent::VisitorErased(_)
        | CommittedEvent::Lead { .. } => None,
    }
}

/// The trace a delivery about `event` joins: a message's own (crate::base::trace_export).
pub fn trace_of(event: &CommittedEvent) -> Option<u64> {
    match event {
        CommittedEvent::Message { record, .. } if record.trace_id != 0 => Some(record.trace_id),
        _ => None,
    }
}

/// Whether a delivery's `data` is about `visitor_id` or one of their conversations: what the
/// erasure of their data removes, on both backends.
pub fn payload_concerns(data: &Value, visitor_id: u64, conversation_ids: &std::collections::HashSet<u64>) -> bool {
    let in_conversation =
        |value: &Value| value.as_u64().is_some_and(|conversation_id| conversation_ids.contains(&conversation_id));
    in_conversation(&data["message"]["conversation_id"])
        || in_conversation(&data["conversation"]["id"])
        || in_conversation(&data["conversation_id"])
        || data["conversation"]["visitor_id"].as_u64() == Some(visitor_id)
        || data["offline_message"]["visitor_id"].as_u64() == Some(visitor_id)
}

/// Removes every delivery (pending or past) whose payload concerns a visitor: their offline
/// messages, conversations and messages (the erasure of their data). Inside the writer;
/// returns how many.
pub fn erase_deliveries_of(
    context: &mut WriteContext<'_>,
    visitor_id: u64,
    conversation_ids: &std::collections::HashSet<u64>,
) -> Result<u64, StorageError> {
    let concerns = |data: &Value| payload_concerns(data, visitor_id, conversation_ids);
    let mut doomed = Vec::new();
    {
        let deliveries = context.transaction.open_table(tables::WEBHOOK_DELIVERIES)?;
        for entry in deliveries.iter()? {
            let delivery: Delivery = decode_json(entry?.1.value())?;
            let payload: Value = serde_json::from_str(&delivery.payload).unwrap_or_default();
            if concerns(&payload["data"]) {
                doomed.push((delivery.id, delivery.next_attempt_at));
            }
        }
    }
    let mut deliveries = context.transaction.open_table(tables::WEBHOOK_DELIVERIES)?;
    let mut due = context.transaction.open_table(tables::WEBHOOK_DUE)?;
    for (delivery_id, next_attempt_at) in &doomed {
        deliveries.remove(*delivery_id)?;
        crate::storage::outbox::move_due(&mut due, *delivery_id, *next_attempt_at, None)?;
    }
    Ok(doomed.len() as u64)
}

/// Writes an outbox row for every subscribed webhook of every event published in this batch.
/// Runs inside the writer, just before the commit.
pub fn record_deliveries(context: &mut WriteContext<'_>) -> Result<(), StorageError> {
    if context.published().is_empty() || context.webhooks()?.is_empty() {
        return Ok(());
    }
    let events: Vec<CommittedEvent> = context.published().to_vec();
    let mut rows = Vec::new();
    for event in &events {
        let Some((site, event_type, data)) = event_of(event, context.epoch()) else { continue };
        let trace_id = trace_of(event);
        let subscribed: Vec<String> = context
            .webhooks()?
            .iter()
            .filter(|webhook| webhook.site == site && webhook.events.iter().any(|wanted| wanted == event_type))
            .map(|webhook| webhook.id.clone())
            .collect();
        for webhook_id in subscribed {
            rows.push((webhook_id, site.clone(), event_type, data.clone(), trace_id));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let now = context.now;
    let mut ids = Vec::with_capacity(rows.len());
    for _ in &rows {
        ids.push(context.next_id(Counter::WebhookDelivery));
    }
    let mut deliveries = context.transaction.open_table(tables::WEBHOOK_DELIVERIES)?;
    let mut due = context.transaction.open_table(tables::WEBHOOK_DUE)?;
    for ((webhook_id, site, event_type, data, trace_id), id) in rows.into_iter().zip(ids) {
        let payload = payload(event_type, now, &data);
        let delivery = Delivery {
            id,
            webhook_id,
            site,
            event_type: event_type.to_owned(),
            payload,
            status: DeliveryStatus::Pending,
            attempts: 0,
            created_at: now,
            next_attempt_at: Some(now),
            last_status: None,
            last_error: None,
            delivered_at: None,
            trace_id,
        };
        deliveries.insert(id, encode_json(&delivery).as_slice())?;
        crate::storage::outbox::move_due(&mut due, id, None, Some(now))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_rows_written_before_trace_ids_still_read() {
        let old_row = r#"{"id":7,"webhook_id":"wh_1","site":"shop","event_type":"message.created","payload":"{}",
            "status":"pending","attempts":0,"created_at":1,"next_attempt_at":1,"last_status":null,
            "last_error":null,"delivered_at":null}"#;
        let delivery: Delivery = serde_json::from_str(old_row).unwrap();
        assert_eq!((delivery.id, delivery.trace_id), (7, None));
        let with_trace = serde_json::to_value(Delivery { trace_id: Some(255), ..delivery.clone() }).unwrap();
        assert_eq!(with_trace["trace_id"], 255);
        assert!(serde_json::to_value(delivery).unwrap().get("trace_id").is_none());
    }
}
