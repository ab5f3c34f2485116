//! The webhook sender: posts due deliveries from the outbox, signed like Standard Webhooks
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,BASE64`), and records each outcome.
//!
//! A failed attempt is retried after `retry_base × 2^(attempts-1)` (at most an hour) times a
//! random factor between 0.5 and 1.5; a delivery still failing a day after its event is marked
//! failed. Deliveries survive restarts because the outbox is in redb.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use redb::ReadableTable;
use sha2::Sha256;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Delivery, DeliveryStatus, Webhook};
use crate::base::outbound::{Clients, backoff, describe_error};
use crate::storage::outbox::{self, Outbox};
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// Deliveries posted at once.
const MAX_IN_FLIGHT: usize = 8;

/// How the sender behaves; `config.webhooks` in production, shorter in tests.
#[derive(Clone, Debug)]
pub struct SenderSettings {
    pub retry_base: Duration,
    pub give_up_after: Duration,
    pub timeout: Duration,
}

/// The Standard Webhooks signature of a payload.
pub fn signature(key: &[u8], message_id: &str, timestamp_secs: i64, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{message_id}.{timestamp_secs}.{payload}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// The webhook outbox: what [`outbox::run`] polls.
#[derive(Clone)]
struct Webhooks {
    settings: SenderSettings,
    clients: Clients,
}

/// Runs until `shutdown`.
pub async fn run(store: Store, settings: SenderSettings, shutdown: CancellationToken) {
    let clients = match Clients::new(settings.timeout) {
        Ok(clients) => clients,
        Err(error) => {
            tracing::error!(%error, "webhooks are off: the HTTP client could not be built");
            return;
        }
    };
    outbox::run(store, Webhooks { settings, clients }, shutdown).await;
}

impl Outbox for Webhooks {
    type Due = (Delivery, Option<Webhook>);
    const NAME: &'static str = "webhooks";
    const MAX_IN_FLIGHT: usize = MAX_IN_FLIGHT;
    // A cut-off attempt is posted again after the restart; receivers dedupe on `webhook-id`.
    const FINISH_ON_SHUTDOWN: bool = false;

    fn read_due(
        &self,
        transaction: &redb::ReadTransaction,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Self::Due>, StorageError> {
        let deliveries = transaction.open_table(tables::WEBHOOK_DELIVERIES)?;
        outbox::due_rows(transaction, tables::WEBHOOK_DUE, now, limit, |id| {
            let Some(value) = deliveries.get(id)? else {
                return Ok(None);
            };
            let delivery: Delivery = decode_json(value.value())?;
            let webhook = super::get(transaction, &delivery.webhook_id)?;
            Ok(Some((delivery, webhook)))
        })
    }

    async fn start(&self, store: &Store, (delivery, webhook): Self::Due, now: i64, in_flight: &mut JoinSet<()>) {
        // Claim it by moving its due time forward, so the next poll does not post it twice.
        let claimed_until = now + self.settings.timeout.as_millis() as i64 * 2;
        if reschedule(store, delivery.id, delivery.next_attempt_at, Some(claimed_until)).await.is_err() {
            return;
        }
        let client = self.clients.pick(webhook.as_ref().is_some_and(|webhook| webhook.allow_private)).clone();
        let store = store.clone();
        let settings = self.settings.clone();
        // A stage of the message's trace when the delivery is about a message, else a trace of
        // its own (crate::base::trace_export).
        let span = tracing::debug_span!(
            parent: None,
            "webhook",
            trace_id = delivery.trace_id,
            delivery_id = delivery.id,
            event_type = %delivery.event_type,
        );
        in_flight.spawn(
            async move {
                let outcome = match &webhook {
                    Some(webhook) => post(&client, webhook, delivery.id, &delivery.payload).await,
                    None => Err((None, "the webhook was deleted".to_owned())),
                };
                if let Err(error) =
                    record_outcome(&store, &settings, delivery.id, claimed_until, outcome, webhook.is_none()).await
                {
                    tracing::error!(%error, delivery_id = delivery.id, "recording a webhook outcome failed");
                }
            }
            .instrument(span),
        );
    }
}

/// Posts `payload` to the webhook as delivery `delivery_id` (`webhook-id: msg_ID`), signed; the
/// receiver's success status, or its status and what went wrong.
pub(crate) async fn post(
    client: &reqwest::Client,
    webhook: &Webhook,
    delivery_id: u64,
    payload: &str,
) -> Result<u16, (Option<u16>, String)> {
    let message_id = format!("msg_{delivery_id}");
    let timestamp = crate::base::clock::now_millis() / 1000;
    let response = client
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header("webhook-id", &message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(&webhook.key(), &message_id, timestamp, payload))
        .body(payload.to_owned());
    let response = crate::base::trace_context::with_traceparent(response);
    let url = reqwest::Url::parse(&webhook.url).map_err(|error| (None, error.to_string()))?;
    crate::base::outbound::check_url(&url, webhook.allow_private).map_err(|error| (None, error.to_string()))?;
    match response.send().await {
        Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
        Ok(response) => Err((Some(response.status().as_u16()), format!("the receiver answered {}", response.status()))),
        Err(error) => Err((None, describe_error(&error))),
    }
}

/// Moves a delivery's due time; `None` takes it out of the due index.
async fn reschedule(store: &Store, id: u64, from: Option<i64>, to: Option<i64>) -> Result<(), StorageError> {
    let tables = (tables::WEBHOOK_DUE, tables::WEBHOOK_DELIVERIES);
    outbox::reschedule(store, tables, id, from, to, |delivery: &mut Delivery, due| delivery.next_attempt_at = due).await
}

async fn record_outcome(
    store: &Store,
    settings: &SenderSettings,
    id: u64,
    claimed_until: i64,
    outcome: Result<u16, (Option<u16>, String)>,
    give_up_now: bool,
) -> Result<(), StorageError> {
    let retry_base = settings.retry_base;
    let give_up_after = settings.give_up_after.as_millis() as i64;
    store
        .write(move |context| {
            let now = context.now;
            let mut deliveries = context.transaction.open_table(tables::WEBHOOK_DELIVERIES)?;
            let Some(mut delivery) = deliveries.get(id)?.map(|value| decode_json::<Delivery>(value.value())).transpose()? else {
                return Ok(Ok(()));
            };
            let mut due = context.transaction.open_table(tables::WEBHOOK_DUE)?;
            outbox::move_due(&mut due, id, Some(claimed_until), None)?;
            delivery.attempts += 1;
            match outcome {
                Ok(status) => {
                    delivery.status = DeliveryStatus::Delivered;
                    delivery.last_status = Some(status);
                    delivery.last_error = None;
                    delivery.delivered_at = Some(now);
                    delivery.next_attempt_at = None;
                }
                Err((status, error)) => {
                    delivery.last_status = status;
                    delivery.last_error = Some(error);
                    let next = now + backoff(retry_base, delivery.attempts).as_millis() as i64;
                    if give_up_now || next - delivery.created_at > give_up_after {
                        delivery.status = DeliveryStatus::Failed;
                        delivery.next_attempt_at = None;
                    } else {
                        delivery.next_attempt_at = Some(next);
                        outbox::move_due(&mut due, id, None, Some(next))?;
                    }
                }
            }
            tracing::info!(delivery_id = id, attempts = delivery.attempts, status = ?delivery.status, "webhook attempt");
            deliveries.insert(id, encode_json(&delivery).as_slice())?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let key = base64::engine::general_purpose::STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let payload = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
