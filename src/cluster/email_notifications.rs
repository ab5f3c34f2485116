//! Emails caused by chat on a cluster: a new offline message emailed to its site's agents,
//! queued in the cluster's outbox in the transaction that stores it, as the appliance's writer
//! does (`email::notifications`, whose [`agent_emails`] decides who gets what, in which
//! language). The URL the email links to is the one the nodes record at start
//! (`PostgresEmailSettings::remember_runtime`).

use std::time::Duration;

use tokio_postgres::Transaction;

use crate::cluster::events::{ConversationChange, NodeEvent};
use crate::cluster::outbox::{self, NewOutboxRow, OutboxContent};
use crate::cluster::postgres::{record_where, records_where};
use crate::email::EmailKind;
use crate::email::content;
use crate::email::notifications::{EmailRuntime, RUNTIME_KEY, agent_emails};
use crate::people::agents::Agent;
use crate::sites::Site;
use crate::storage::StorageError;

/// Queues, in `transaction`, the emails of the events a node committed there.
pub(crate) async fn record(transaction: &Transaction<'_>, published: &[NodeEvent]) -> Result<(), StorageError> {
    for event in published {
        let NodeEvent::Conversation(ConversationChange::OfflineMessage { message }) = event else { continue };
        let site: Option<Site> =
            record_where(transaction, "site", "SELECT record::text FROM sites WHERE key = $1", &[&message.site])
                .await?;
        let agents: Vec<Agent> = records_where(transaction, "agent", "SELECT record::text FROM agents", &[]).await?;
        let runtime: EmailRuntime = record_where(
            transaction,
            "email runtime",
            "SELECT record::text FROM email_settings WHERE name = $1",
            &[&RUNTIME_KEY],
        )
        .await?
        .unwrap_or_default();
        let console = runtime.console_url();
        let render = |lang, site_name: &str| content::offline_message(lang, site_name, message, &console);
        let emails =
            agent_emails(&message.site, site.as_ref(), &agents, EmailKind::OfflineMessage, render, &message.lang);
        for email in emails {
            let row = NewOutboxRow {
                site: Some(message.site.clone()),
                content: OutboxContent::of_email(email),
                delay: Duration::ZERO,
            };
            outbox::enqueue(transaction, &row).await?;
        }
    }
    Ok(())
}
