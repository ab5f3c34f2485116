//! Emails caused by chat on a cluster: a new offline message emailed to its site's agents,
//! queued in the cluster's outbox in the transaction that stores it, as the appliance's writer
//! does (`email::notifications`, whose [`agent_emails`] decides who gets what, in which
//! language); and missed chats, a sweep every node ticks and one runs at a time
//! ([`run_missed_chats`], a periodic job of `cluster::jobs`), each conversation reported once
//! (`missed_chat_reports`, migration 18). The URL the emails link to is the one the nodes record
//! at start (`PostgresEmailSettings::remember_runtime`).

use std::time::Duration;

use tokio_postgres::{Client, Transaction};
use tokio_util::sync::CancellationToken;

use crate::chat::conversations::Conversation;
use crate::chat::delivery::ConversationEvent;
use crate::cluster::events::{ConversationChange, NodeEvent};
use crate::cluster::jobs::{self, JobRun};
use crate::cluster::messages::PostgresMessages;
use crate::cluster::messages::{CONVERSATION_COLUMNS, conversation_of};
use crate::cluster::node::NodeName;
use crate::cluster::outbox::{self, NewOutboxRow, OutboxContent};
use crate::cluster::postgres::{self, PostgresError, database, put_record, record_where, records_where};
use crate::email::content;
use crate::email::notifications::{EmailRuntime, RUNTIME_KEY, agent_emails, language_for, missed_chat_emails};
use crate::email::transcript::{self, TranscriptError, TranscriptStore};
use crate::email::{EmailKind, OutgoingEmail};
use crate::people::agents::Agent;
use crate::people::visitors::Visitor;
use crate::sites::Site;
use crate::storage::StorageError;

/// The name of the missed-chat sweep as a periodic job.
pub const MISSED_CHATS_JOB: &str = "missed chats";

/// The most conversations one sweep reports.
const MISSED_CHATS_PER_SWEEP: i64 = 500;

/// Queues, in `transaction`, the emails of the events a node committed there: an offline
/// message's to the site's agents, and the transcript of a closed conversation to its visitor
/// when the site sends them on close.
pub(crate) async fn record(transaction: &Transaction<'_>, published: &[NodeEvent]) -> Result<(), StorageError> {
    for event in published {
        if let NodeEvent::Conversation(ConversationChange::Conversation {
            event: ConversationEvent::Closed { .. },
            conversation,
        }) = event
        {
            transcript_on_close(transaction, conversation).await?;
            continue;
        }
        let NodeEvent::Conversation(ConversationChange::OfflineMessage { message }) = event else { continue };
        let site = site(transaction, &message.site).await?;
        let agents = agents(transaction).await?;
        let console = console_url(transaction).await?;
        let render = |lang, site_name: &str| content::offline_message(lang, site_name, message, &console);
        let emails =
            agent_emails(&message.site, site.as_ref(), &agents, EmailKind::OfflineMessage, render, &message.lang);
        queue(transaction, &message.site, emails).await?;
        // The message waits in its conversation now; the agents were just told about it, so
        // that conversation is no missed chat to tell them about again.
        if message.conversation_id != 0 {
            report(transaction, message.conversation_id).await?;
        }
    }
    Ok(())
}

/// Queues the transcript of a closed conversation to its visitor's address, when its site sends
/// them on close and the visitor left one (the appliance's `record_notifications`).
async fn transcript_on_close(transaction: &Transaction<'_>, conversation: &Conversation) -> Result<(), StorageError> {
    let site = site(transaction, &conversation.site).await?;
    if !site.as_ref().is_some_and(|site| site.transcript_on_close) {
        return Ok(());
    }
    let Some(visitor) = visitor(transaction, conversation.visitor_id).await? else { return Ok(()) };
    let Some(address) = visitor.email.clone().filter(|address| crate::email::plausible_address(address)) else {
        return Ok(());
    };
    let lang = language_for(site.as_ref(), visitor.lang.as_deref().unwrap_or_default());
    let name = visitor.name.as_deref().unwrap_or_default();
    let email = transcript::transcript_email(conversation, site.as_ref(), &address, name, lang);
    queue(transaction, &conversation.site, vec![email]).await
}

impl TranscriptStore for PostgresMessages {
    async fn request_transcript(
        &self,
        conversation_id: u64,
        visitor_id: u64,
        address: &str,
        lang_tag: &str,
    ) -> Result<(), TranscriptError> {
        let (address, lang_tag) = transcript::checked_request(address, lang_tag)?;
        let (Ok(conversation_key), Ok(visitor_key)) = (i64::try_from(conversation_id), i64::try_from(visitor_id))
        else {
            return Err(TranscriptError::NotFound);
        };
        self.writers
            .run(async |transaction| -> Result<_, TranscriptError> {
                let statement = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1");
                let row = transaction.query_opt(&statement, &[&conversation_key]).await.map_err(database)?;
                let conversation = row.as_ref().map(conversation_of).transpose().map_err(StorageError::from)?;
                let Some(conversation) = conversation.filter(|conversation| conversation.visitor_id == visitor_id)
                else {
                    return Err(TranscriptError::NotFound);
                };
                let statement = "SELECT record::text FROM visitors WHERE id = $1 FOR UPDATE";
                let visitor: Option<Visitor> = record_where(transaction, "visitor", statement, &[&visitor_key]).await?;
                let Some(mut visitor) = visitor else { return Err(TranscriptError::NotFound) };
                transcript::remember_address(&mut visitor, &address, &lang_tag);
                put_record(transaction, "visitors", "id", &visitor_key, &visitor).await?;
                let site = site(transaction, &conversation.site).await?;
                let lang = transcript::requested_lang(&lang_tag, site.as_ref());
                let name = visitor.name.as_deref().unwrap_or_default();
                let email = transcript::transcript_email(&conversation, site.as_ref(), &address, name, lang);
                queue(transaction, &conversation.site, vec![email]).await?;
                Ok(())
            })
            .await
    }
}

/// One sweep: emails the agents of every open conversation whose visitor has waited at least
/// `wait_millis` with no agent's answer and no bot, once per conversation (the appliance's
/// `email_missed_chats`), and forgets the reports of closed conversations. Runs on one node at a
/// time: a node that finds another sweeping skips (`JobRun::Busy`). Returns how many it reported.
pub async fn email_missed_chats(
    client: &mut Client,
    node: &NodeName,
    wait_millis: i64,
) -> Result<JobRun<usize>, PostgresError> {
    // The database's clock names the slot: nodes whose clocks disagree still take turns.
    let slot: i64 = client.query_one("SELECT kefu_now_ms()", &[]).await?.try_get(0)?;
    jobs::run_once(client, node, MISSED_CHATS_JOB, slot, async |transaction| {
        sweep_missed_chats(transaction, wait_millis).await.map_err(|error| PostgresError::Invalid(error.to_string()))
    })
    .await
}

async fn sweep_missed_chats(transaction: &Transaction<'_>, wait_millis: i64) -> Result<usize, StorageError> {
    transaction
        .execute(
            "DELETE FROM missed_chat_reports r USING conversations c
             WHERE c.id = r.conversation_id AND c.status = 'closed'",
            &[],
        )
        .await
        .map_err(database)?;
    let rows = transaction
        .query(
            &format!(
                "SELECT {CONVERSATION_COLUMNS}, kefu_now_ms() FROM conversations c
                 WHERE status <> 'closed' AND first_response_at IS NULL AND NOT bot_active
                   AND created_at <= kefu_now_ms() - $1
                   AND NOT EXISTS (SELECT 1 FROM missed_chat_reports r WHERE r.conversation_id = c.id)
                 ORDER BY id LIMIT $2"
            ),
            &[&wait_millis, &MISSED_CHATS_PER_SWEEP],
        )
        .await
        .map_err(database)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let agents = agents(transaction).await?;
    let console = console_url(transaction).await?;
    for row in &rows {
        let conversation = conversation_of(row)?;
        let now: i64 = row.try_get(row.len() - 1).map_err(database)?;
        let visitor = visitor(transaction, conversation.visitor_id).await?;
        let site = site(transaction, &conversation.site).await?;
        let emails = missed_chat_emails(&conversation, visitor.as_ref(), site.as_ref(), &agents, &console, now);
        queue(transaction, &conversation.site, emails).await?;
        report(transaction, conversation.id).await?;
    }
    Ok(rows.len())
}

/// Ticks the missed-chat sweep every `interval` until `shutdown`, on a connection of its own.
pub async fn run_missed_chats(
    url: String,
    node: NodeName,
    wait_millis: i64,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut client: Option<Client> = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match postgres::connect(&url).await {
                Ok(connected) => Some(connected),
                Err(error) => {
                    tracing::warn!(%error, "the missed-chat sweep could not connect; it tries again");
                    continue;
                }
            };
        }
        let Some(connected) = client.as_mut() else { continue };
        match email_missed_chats(connected, &node, wait_millis).await {
            Ok(JobRun::Ran(reported)) if reported > 0 => tracing::info!(reported, "emailed agents about missed chats"),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "emailing about missed chats failed"),
        }
    }
}

async fn site(transaction: &Transaction<'_>, key: &str) -> Result<Option<Site>, StorageError> {
    record_where(transaction, "site", "SELECT record::text FROM sites WHERE key = $1", &[&key]).await
}

async fn visitor(transaction: &Transaction<'_>, id: u64) -> Result<Option<Visitor>, StorageError> {
    let key = i64::try_from(id).map_err(|_| StorageError::Corrupt(format!("visitor {id}")))?;
    record_where(transaction, "visitor", "SELECT record::text FROM visitors WHERE id = $1", &[&key]).await
}

async fn agents(transaction: &Transaction<'_>) -> Result<Vec<Agent>, StorageError> {
    records_where(transaction, "agent", "SELECT record::text FROM agents", &[]).await
}

async fn console_url(transaction: &Transaction<'_>) -> Result<String, StorageError> {
    let statement = "SELECT record::text FROM email_settings WHERE name = $1";
    let runtime: Option<EmailRuntime> = record_where(transaction, "email runtime", statement, &[&RUNTIME_KEY]).await?;
    Ok(runtime.unwrap_or_default().console_url())
}

async fn queue(transaction: &Transaction<'_>, site: &str, emails: Vec<OutgoingEmail>) -> Result<(), StorageError> {
    for email in emails {
        let row = NewOutboxRow {
            site: Some(site.to_owned()),
            content: OutboxContent::of_email(email),
            delay: Duration::ZERO,
        };
        outbox::enqueue(transaction, &row).await?;
    }
    Ok(())
}

/// Marks a conversation as one its agents were told about.
async fn report(transaction: &Transaction<'_>, conversation_id: u64) -> Result<(), StorageError> {
    let id =
        i64::try_from(conversation_id).map_err(|_| StorageError::Corrupt(format!("conversation {conversation_id}")))?;
    transaction
        .execute(
            "INSERT INTO missed_chat_reports (conversation_id, reported_at) VALUES ($1, kefu_now_ms())
             ON CONFLICT DO NOTHING",
            &[&id],
        )
        .await
        .map_err(database)?;
    Ok(())
}
