//! Leads on the cluster's PostgreSQL: [`PostgresMessages`] implements the [`LeadStore`]
//! boundary on the `leads` record table (migration 7), with the appliance's decisions (`Lead`'s
//! `assign_to` and `answered_by`, `leads::page_of` for lists). A change locks the lead's row; a
//! reply takes or reopens the visitor's conversation, appends the message and updates the lead
//! in one transaction, as the appliance's single writer operation does. With NATS, the lead's
//! change (and the reply and the conversation's change) are published after the commit.

use tokio_postgres::Transaction;

use crate::base::clock;
use crate::chat::conversations::AssignWhen;
use crate::chat::lead_store::LeadStore;
use crate::chat::leads::{self, Lead, LeadError, LeadEvent, LeadFilter, LeadPage, LeadReply, LeadStatus};
use crate::chat::messages::Appended;
use crate::cluster::conversations::{Published, announce, locked, save};
use crate::cluster::events::ConversationChange;
use crate::cluster::messages::{self, PostgresMessages};
use crate::cluster::postgres::{self, database, record_of, record_text};
use crate::storage::StorageError;

fn key_of(id: u64) -> Result<i64, LeadError> {
    i64::try_from(id).map_err(|_| LeadError::NotFound)
}

/// The lead's record, locked until the transaction ends.
async fn locked_lead(transaction: &Transaction<'_>, lead_id: u64) -> Result<Lead, LeadError> {
    let row = transaction
        .query_opt("SELECT record::text FROM leads WHERE id = $1 FOR UPDATE", &[&key_of(lead_id)?])
        .await
        .map_err(database)?;
    let row = row.ok_or(LeadError::NotFound)?;
    Ok(record_of("lead", row.get(0))?)
}

/// Writes a changed lead back and announces it.
async fn save_lead(
    transaction: &Transaction<'_>,
    mut lead: Lead,
    published: &mut Published,
) -> Result<Lead, LeadError> {
    lead.updated_at = clock::now_millis();
    transaction
        .execute("UPDATE leads SET record = $2::text::jsonb WHERE id = $1", &[&key_of(lead.id)?, &record_text(&lead)])
        .await
        .map_err(database)?;
    announce(published, ConversationChange::Lead { event: LeadEvent::Updated, lead: lead.clone() });
    Ok(lead)
}

impl PostgresMessages {
    async fn change_lead(&self, lead_id: u64, change: impl FnOnce(&mut Lead)) -> Result<Lead, LeadError> {
        self.change_and_publish(async |transaction, published| {
            let mut lead = locked_lead(transaction, lead_id).await?;
            change(&mut lead);
            save_lead(transaction, lead, published).await
        })
        .await
    }
}

impl LeadStore for PostgresMessages {
    async fn lead(&self, lead_id: u64) -> Result<Option<Lead>, StorageError> {
        let Ok(id) = i64::try_from(lead_id) else { return Ok(None) };
        let client = self.readers.client().await?;
        postgres::record_where(&*client, "lead", "SELECT record::text FROM leads WHERE id = $1", &[&id]).await
    }

    async fn list_leads(
        &self,
        filter: LeadFilter,
        visible: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<LeadPage, StorageError> {
        let client = self.readers.client().await?;
        let rows = client.query("SELECT record::text FROM leads ORDER BY id DESC", &[]).await.map_err(database)?;
        leads::page_of(rows.iter().map(|row| record_of("lead", row.get(0))), &filter, visible)
    }

    async fn set_lead_status(&self, lead_id: u64, status: LeadStatus) -> Result<Lead, LeadError> {
        self.change_lead(lead_id, |lead| lead.status = status).await
    }

    async fn assign_lead(&self, lead_id: u64, agent_id: Option<u64>) -> Result<Lead, LeadError> {
        if let Some(agent_id) = agent_id {
            key_of(agent_id)?;
        }
        self.change_lead(lead_id, |lead| lead.assign_to(agent_id)).await
    }

    async fn reply_to_lead(&self, lead_id: u64, reply: LeadReply) -> Result<(Lead, Appended), LeadError> {
        reply.check()?;
        let agent_id = reply.sender.id;
        key_of(agent_id)?;
        self.change_and_publish(async |transaction, published| {
            let mut lead = locked_lead(transaction, lead_id).await?;
            let now = clock::now_millis();
            let open = transaction
                .query_opt(
                    "SELECT id FROM conversations WHERE visitor_id = $1 AND status <> 'closed'",
                    &[&key_of(lead.visitor_id)?],
                )
                .await
                .map_err(database)?;
            let target = match open.map(|row| row.get::<_, i64>(0) as u64) {
                Some(open) => {
                    let mut conversation = locked(transaction, open).await?;
                    if conversation.assigned_agent.is_none() {
                        let event = conversation.assign_to(agent_id, AssignWhen::Open, now)?;
                        save(transaction, &conversation).await?;
                        announce(published, ConversationChange::Conversation { event, conversation });
                    }
                    open
                }
                None => {
                    let mut conversation = locked(transaction, lead.conversation_id).await?;
                    let event = conversation.reopen_for(agent_id, now)?;
                    save(transaction, &conversation).await?;
                    announce(published, ConversationChange::Conversation { event, conversation });
                    lead.conversation_id
                }
            };
            let (appended, stored) = messages::append_in(transaction, reply.into_message(target)).await?;
            published.extend(stored);
            lead.answered_by(agent_id);
            let lead = save_lead(transaction, lead, published).await?;
            Ok((lead, appended))
        })
        .await
    }
}
