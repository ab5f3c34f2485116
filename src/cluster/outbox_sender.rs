//! A node's webhook and email senders: every node polls the cluster's outbox, claims due rows
//! (`OutboxWorker::claim`, `FOR UPDATE SKIP LOCKED`), makes the attempt and records its outcome,
//! so each row is attempted by one node at a time and a dead node's rows go to another once its
//! claim runs out.
//!
//! The attempts are the appliance's: a webhook is posted and signed by `webhooks::sender::post`,
//! an email sent by `email::sender::send` with the SMTP settings saved for the cluster, and a
//! failure is retried with the appliance's backoff until the give-up time. A webhook row that
//! migration 17 wrote (a new message's or conversation's) has an empty payload: the first node
//! to claim it renders the payload from the stored message or conversation
//! (`webhooks::event_of`, as the appliance builds it) and writes it into the row, so every
//! attempt sends the same body; an agent's answer to a visitor who left their address is
//! rendered the same way (`email::notifications::answer_email`), and a transcript from the
//! history at each attempt, as on the appliance.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::base::config::EmailConfig;
use crate::base::outbound::Clients;
use crate::chat::delivery::{CommittedEvent, ConversationEvent};
use crate::chat::message_store::MessageStore;
use crate::cluster::backend::ClusterStores;
use crate::cluster::messages::{MESSAGE_COLUMNS, message_of};
use crate::cluster::node::NodeName;
use crate::cluster::outbox::{
    ClaimedRow, EmailAbout, OutboxContent, OutboxKind, OutboxSettings, OutboxWorker, WebhookAbout,
};
use crate::cluster::postgres::{PostgresError, Readers, Writers};
use crate::email::ReadCheck;
use crate::email::notifications::answer_email;
use crate::email::settings::EmailSettingsStore;
use crate::people::visitor_store::VisitorStore;
use crate::protocol::SenderKind;
use crate::sites::store::SiteStore;
use crate::storage::StorageError;
use crate::webhooks::WebhookStore;
use crate::webhooks::sender::SenderSettings;

/// How often a node looks for due rows.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Webhook posts at once on a node.
const WEBHOOKS_IN_FLIGHT: usize = 8;

/// Emails sent at once on a node; SMTP servers throttle clients that open many connections.
const EMAILS_IN_FLIGHT: usize = 4;

/// What the attempts of one kind share.
struct Sender {
    stores: Arc<ClusterStores>,
    worker: OutboxWorker,
    writers: Writers,
    readers: Readers,
}

impl Sender {
    fn new(stores: Arc<ClusterStores>, node: NodeName, kind: OutboxKind, settings: &OutboxSettings) -> Option<Sender> {
        let url = stores.url().to_owned();
        match OutboxWorker::new(node, kind, settings) {
            Ok(worker) => {
                Some(Sender { stores, worker, writers: Writers::new(&url, 2), readers: Readers::new(&url, 1) })
            }
            Err(error) => {
                tracing::error!(%error, kind = kind.as_str(), "the outbox sender is off: its settings are out of range");
                None
            }
        }
    }

    /// Logs an outcome that could not be recorded (the row was taken over, or the database is
    /// unreachable: the row is due again when the claim runs out).
    async fn record(
        &self,
        id: u64,
        record: impl AsyncFnOnce(&OutboxWorker, &tokio_postgres::Client) -> Result<(), String>,
    ) {
        let outcome = match self.writers.acquire().await {
            Ok(mut writer) => record(&self.worker, writer.client()).await,
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, outbox_id = id, "recording an outbox attempt failed");
        }
    }

    async fn complete(&self, id: u64, last_status: Option<u16>) {
        self.record(id, async |worker, client| {
            worker.complete(client, id, last_status).await.map_err(|e| e.to_string())
        })
        .await;
    }

    async fn skip(&self, id: u64, reason: &str) {
        self.record(id, async |worker, client| worker.skip(client, id, reason).await.map_err(|e| e.to_string())).await;
    }

    async fn retry_later(&self, id: u64, error: &str, last_status: Option<u16>) {
        self.record(id, async |worker, client| {
            let retry = worker.retry_later(client, id, error, last_status).await.map_err(|e| e.to_string())?;
            tracing::info!(outbox_id = id, ?retry, kind = worker.kind().as_str(), "outbox attempt failed");
            Ok(())
        })
        .await;
    }
}

/// Polls for due rows until `shutdown`, running `attempt` on each with at most `max_in_flight`
/// at once; then lets the attempts in flight finish (`finish_on_shutdown`) or drops them.
async fn poll<F, Fut>(
    sender: Arc<Sender>,
    max_in_flight: usize,
    finish_on_shutdown: bool,
    shutdown: CancellationToken,
    attempt: F,
) where
    F: Fn(Arc<Sender>, ClaimedRow) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.try_join_next().is_some() {}
        let room = max_in_flight.saturating_sub(in_flight.len());
        if room > 0 {
            let claimed = match sender.writers.acquire().await {
                Ok(mut writer) => sender.worker.claim(writer.client(), room).await.map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match claimed {
                Ok(rows) => {
                    for row in rows {
                        in_flight.spawn(attempt(sender.clone(), row));
                    }
                }
                Err(error) => tracing::warn!(%error, "claiming outbox rows failed; trying again"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
    if finish_on_shutdown {
        while in_flight.join_next().await.is_some() {}
    } else {
        in_flight.abort_all();
    }
}

/// Sends the cluster's webhook deliveries from this node until `shutdown`.
pub async fn run_webhooks(
    stores: Arc<ClusterStores>,
    node: NodeName,
    settings: SenderSettings,
    shutdown: CancellationToken,
) {
    let clients = match Clients::new(settings.timeout) {
        Ok(clients) => clients,
        Err(error) => {
            tracing::error!(%error, "webhooks are off: the HTTP client could not be built");
            return;
        }
    };
    let outbox_settings = OutboxSettings {
        claim_for: settings.timeout * 2,
        retry_base: settings.retry_base,
        give_up_after: settings.give_up_after,
    };
    let Some(sender) = Sender::new(stores, node, OutboxKind::Webhook, &outbox_settings) else { return };
    // A cut-off attempt is posted again by the node that claims it next; receivers dedupe on
    // `webhook-id`.
    poll(Arc::new(sender), WEBHOOKS_IN_FLIGHT, false, shutdown, move |sender, row| {
        let clients = clients.clone();
        async move { attempt_webhook(&sender, &clients, row).await }
    })
    .await;
}

async fn attempt_webhook(sender: &Sender, clients: &Clients, row: ClaimedRow) {
    let OutboxContent::Webhook { webhook_id, event_type, payload, trace_id, about } = row.content else {
        return;
    };
    let (payload, trace_id) = match about {
        Some(about) if payload.is_empty() => match render(sender, row.id, &webhook_id, &event_type, about).await {
            Ok(Some(rendered)) => rendered,
            Ok(None) => return sender.skip(row.id, "what the event was about no longer exists").await,
            Err(error) => {
                let error = format!("its payload could not be rendered: {error}");
                return sender.retry_later(row.id, &error, None).await;
            }
        },
        _ => (payload, trace_id),
    };
    let webhook = match sender.stores.webhooks.webhook(&webhook_id).await {
        Ok(webhook) => webhook,
        Err(error) => {
            return sender.retry_later(row.id, &format!("its webhook could not be read: {error}"), None).await;
        }
    };
    let span = tracing::debug_span!(parent: None, "webhook", trace_id, delivery_id = row.id, event_type = %event_type);
    let outcome = async {
        match &webhook {
            Some(webhook) => {
                crate::webhooks::sender::post(clients.pick(webhook.allow_private), webhook, row.id, &payload).await
            }
            None => Err((None, "the webhook was deleted".to_owned())),
        }
    }
    .instrument(span)
    .await;
    match outcome {
        Ok(status) => sender.complete(row.id, Some(status)).await,
        Err((_, error)) if webhook.is_none() => sender.skip(row.id, &error).await,
        Err((status, error)) => sender.retry_later(row.id, &error, status).await,
    }
}

/// The payload and trace of a row the database wrote, written into the row while this node
/// holds it; `None` when the message or conversation is gone (erased).
async fn render(
    sender: &Sender,
    id: u64,
    webhook_id: &str,
    event_type: &str,
    about: WebhookAbout,
) -> Result<Option<(String, Option<u64>)>, PostgresError> {
    let event = match about {
        WebhookAbout::Message { conversation_id, seq, day } => {
            let Some((site, record)) = stored_message(sender, conversation_id, seq, day).await? else {
                return Ok(None);
            };
            CommittedEvent::Message {
                conversation_id,
                seq,
                site,
                day: 0,
                record: Arc::new(record),
                origin: None,
                bot_active: false,
            }
        }
        WebhookAbout::Conversation(conversation) => {
            CommittedEvent::Conversation { event: ConversationEvent::Created, conversation: *conversation }
        }
    };
    let Some((_, described_type, data)) = crate::webhooks::event_of(&event, sender.stores.messages.epoch) else {
        return Ok(None);
    };
    let at = match &event {
        CommittedEvent::Message { record, .. } => record.created_at,
        CommittedEvent::Conversation { conversation, .. } => conversation.created_at,
        _ => crate::base::clock::now_millis(),
    };
    debug_assert_eq!(described_type, event_type);
    let payload = crate::webhooks::payload(event_type, at, &data);
    let trace_id = crate::webhooks::trace_of(&event);
    let content = OutboxContent::Webhook {
        webhook_id: webhook_id.to_owned(),
        event_type: event_type.to_owned(),
        payload: payload.clone(),
        trace_id,
        about: None,
    };
    write_rendered(sender, id, &content).await?;
    Ok(Some((payload, trace_id)))
}

/// A stored message with its conversation's site, read in its day's partition when the day is
/// known.
async fn stored_message(
    sender: &Sender,
    conversation_id: u64,
    seq: u64,
    day: Option<u32>,
) -> Result<Option<(String, crate::chat::messages::MessageRecord)>, PostgresError> {
    let (Ok(conversation), Ok(seq_key)) = (i64::try_from(conversation_id), i64::try_from(seq)) else {
        return Ok(None);
    };
    let client = sender.readers.client().await?;
    let select = format!(
        "SELECT {MESSAGE_COLUMNS}, (SELECT site FROM conversations WHERE id = $1)
         FROM messages WHERE conversation_id = $1 AND seq = $2"
    );
    let row = match day.and_then(|day| i32::try_from(day).ok()) {
        Some(day) => {
            let statement = format!("{select} AND day = date '1970-01-01' + $3::integer");
            client.query_opt(&statement, &[&conversation, &seq_key, &day]).await?
        }
        None => client.query_opt(&select, &[&conversation, &seq_key]).await?,
    };
    let Some(row) = row else { return Ok(None) };
    let site: Option<String> = row.try_get(14)?;
    let (_, record) = message_of(&row)?;
    Ok(site.map(|site| (site, record)))
}

/// Writes a rendered row's content while this node still holds the row.
async fn write_rendered(sender: &Sender, id: u64, content: &OutboxContent) -> Result<(), PostgresError> {
    let content = serde_json::to_string(content).map_err(|error| PostgresError::Invalid(error.to_string()))?;
    let key = i64::try_from(id).map_err(|_| PostgresError::Invalid(format!("outbox row {id} is out of range")))?;
    let mut writer = sender.writers.acquire().await?;
    let written = writer
        .client()
        .execute(
            "UPDATE outbox SET content = $2::text::jsonb WHERE id = $1 AND claimed_by = $3 AND status = 'pending'",
            &[&key, &content, &sender.worker.node().as_str()],
        )
        .await?;
    if written == 0 {
        return Err(PostgresError::Invalid(format!("outbox row {id} is no longer this node's")));
    }
    Ok(())
}

/// The email of an agent's answer the database wrote a row for, rendered as the appliance's
/// (`email::notifications::answer_email`) and written into the row; `None` when the message,
/// its conversation or the visitor's address is gone.
async fn render_answer(
    sender: &Sender,
    id: u64,
    conversation_id: u64,
    seq: u64,
    day: Option<u32>,
) -> Result<Option<OutboxContent>, StorageError> {
    let Some((_, record)) = stored_message(sender, conversation_id, seq, day).await? else { return Ok(None) };
    let Some(conversation) = MessageStore::conversation(&sender.stores.messages, conversation_id).await? else {
        return Ok(None);
    };
    let Some(visitor) = VisitorStore::get(&sender.stores.visitors, conversation.visitor_id).await? else {
        return Ok(None);
    };
    let site = SiteStore::get(&sender.stores.sites, &conversation.site).await?;
    let Some(email) = answer_email(&conversation, seq, &record, &visitor, site.as_ref()) else { return Ok(None) };
    let content = OutboxContent::of_email(email);
    write_rendered(sender, id, &content).await?;
    Ok(Some(content))
}

/// Sends the cluster's emails from this node until `shutdown`, then lets the emails in flight
/// finish (one cut off mid-conversation may have been accepted without being marked sent).
pub async fn run_emails(stores: Arc<ClusterStores>, node: NodeName, config: EmailConfig, shutdown: CancellationToken) {
    let timeout = Duration::from_secs(config.timeout_secs);
    let outbox_settings = OutboxSettings {
        claim_for: timeout * 2,
        retry_base: Duration::from_millis(config.retry_base_ms),
        give_up_after: Duration::from_secs(config.give_up_after_secs),
    };
    let Some(sender) = Sender::new(stores, node, OutboxKind::Email, &outbox_settings) else { return };
    let config = Arc::new(config);
    poll(Arc::new(sender), EMAILS_IN_FLIGHT, true, shutdown, move |sender, row| {
        let config = config.clone();
        async move { attempt_email(&sender, &config, row).await }
    })
    .await;
}

async fn attempt_email(sender: &Sender, config: &EmailConfig, row: ClaimedRow) {
    let content =
        match row.content {
            OutboxContent::Email {
                about: Some(EmailAbout::Answer { conversation_id, seq, day }), ref subject, ..
            } if subject.is_empty() => match render_answer(sender, row.id, conversation_id, seq, day).await {
                Ok(Some(content)) => content,
                Ok(None) => return sender.skip(row.id, "the answer or the visitor's address is gone").await,
                Err(error) => {
                    let error = format!("the answer could not be rendered: {error}");
                    return sender.retry_later(row.id, &error, None).await;
                }
            },
            content => content,
        };
    let Some(mut email) = content.into_email(row.id, row.site, row.attempts, row.created_at) else { return };
    if let Some(of) = &email.transcript_of {
        // Rendered from the history at each attempt, as the appliance does: the outbox keeps no
        // copy of the chat.
        match crate::email::transcript::render_stored(&sender.stores.messages, &sender.stores.sites, of).await {
            Ok(rendered) => (email.subject, email.text, email.html) = (rendered.subject, rendered.text, rendered.html),
            Err(error) => {
                let error = format!("the transcript could not be rendered: {error}");
                return sender.retry_later(row.id, &error, None).await;
            }
        }
    }
    if let Some(check) = email.unless_read {
        match is_read(sender, check).await {
            Ok(true) => return sender.skip(row.id, "the visitor read it in the chat").await,
            Ok(false) => {}
            Err(error) => {
                let error = format!("whether the visitor read it could not be checked: {error}");
                return sender.retry_later(row.id, &error, None).await;
            }
        }
    }
    let smtp = match sender.stores.email_settings.load(config).await {
        Ok(smtp) => smtp,
        Err(error) => {
            return sender.retry_later(row.id, &format!("the SMTP settings could not be read: {error}"), None).await;
        }
    };
    if !smtp.is_configured() {
        // Due again when this claim runs out, until an SMTP server is set up or the give-up
        // time has passed.
        if crate::base::clock::now_millis() - row.created_at > config.give_up_after_secs as i64 * 1000 {
            sender.retry_later(row.id, "no SMTP server was set up in time", None).await;
        }
        return;
    }
    match crate::email::sender::send(&smtp, &email, Duration::from_secs(config.timeout_secs)).await {
        Ok(()) => sender.complete(row.id, None).await,
        Err(error) => sender.retry_later(row.id, &error, None).await,
    }
}

/// Whether the visitor has read up to the message (`read_positions`, as the appliance's check).
async fn is_read(sender: &Sender, check: ReadCheck) -> Result<bool, PostgresError> {
    let (Ok(conversation), Ok(visitor)) = (i64::try_from(check.conversation_id), i64::try_from(check.visitor_id))
    else {
        return Ok(false);
    };
    let client = sender.readers.client().await?;
    let read: Option<i64> = client
        .query_opt(
            "SELECT (record #>> '{}')::bigint FROM read_positions
             WHERE conversation_id = $1 AND reader_kind = $2 AND reader_id = $3",
            &[&conversation, &i16::from(SenderKind::Visitor.code()), &visitor],
        )
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    Ok(read.is_some_and(|read| read >= 0 && read as u64 >= check.seq))
}
