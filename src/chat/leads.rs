//! Leads: the visitors waiting for a follow-up. A lead is an offline message, or a conversation
//! that ended with visitor messages and no agent reply; agents work through them by status
//! (new, open, done) and assignee, and answer in the visitor's conversation.
//!
//! A lead is written in the same writer operation as what made it (the offline message, the
//! close), and every change publishes a [`CommittedEvent::Lead`], which delivery turns into a
//! `lead` frame for the site's agents. `lead_conversations_v1` makes a conversation a lead at
//! most once: an offline message's conversation that later closes unanswered is the same lead.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::chat::conversation_actions;
use crate::chat::conversations::{self, AssignWhen, Conversation, ConversationError};
use crate::chat::delivery::CommittedEvent;
use crate::chat::messages::{self, AppendError, Appended, NewMessage, Target};
use crate::chat::offline_messages::OfflineMessage;
use crate::chat::writes::ChatWrites;
use crate::protocol::{LeadView, SenderKind, SenderView};
use crate::storage::writer::Counter;
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

/// Characters of the visitor's message a lead keeps as its preview.
pub const PREVIEW_CHARS: usize = 200;

/// Most leads one list page holds.
pub const MAX_PAGE: usize = 200;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    /// Nobody has looked at it yet.
    #[default]
    New,
    /// Someone is following it up.
    Open,
    Done,
}

impl LeadStatus {
    pub const ALL: [LeadStatus; 3] = [LeadStatus::New, LeadStatus::Open, LeadStatus::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::Open => "open",
            LeadStatus::Done => "done",
        }
    }

    /// The status a client named, or a message that says what to send.
    pub fn parse(text: &str) -> Result<LeadStatus, LeadError> {
        LeadStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| LeadError::Invalid("status: must be new, open or done".into()))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadSource {
    /// The visitor left an offline message.
    #[default]
    OfflineMessage,
    /// The conversation closed with visitor messages and no agent reply.
    MissedConversation,
}

impl LeadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadSource::OfflineMessage => "offline_message",
            LeadSource::MissedConversation => "missed_conversation",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Lead {
    pub id: u64,
    pub site: String,
    pub visitor_id: u64,
    pub conversation_id: u64,
    pub source: LeadSource,
    /// The offline message it came from, for `offline_message` leads.
    pub offline_message_id: Option<u64>,
    pub name: String,
    pub email: String,
    pub preview: String,
    pub status: LeadStatus,
    pub assigned_agent: Option<u64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Lead {
    /// An agent answered it: a new lead becomes open and, if nobody had it, the agent's.
    pub fn answered_by(&mut self, agent_id: u64) {
        if self.status == LeadStatus::New {
            self.status = LeadStatus::Open;
        }
        self.assigned_agent = self.assigned_agent.or(Some(agent_id));
    }

    /// Gives it to an agent (a new lead someone takes is open), or to nobody.
    pub fn assign_to(&mut self, agent_id: Option<u64>) {
        self.assigned_agent = agent_id;
        if agent_id.is_some() && self.status == LeadStatus::New {
            self.status = LeadStatus::Open;
        }
    }

    pub fn view(&self) -> LeadView {
        LeadView {
            id: self.id,
            site: self.site.clone(),
            visitor_id: self.visitor_id,
            conversation_id: self.conversation_id,
            source: self.source.as_str().to_owned(),
            name: self.name.clone(),
            email: self.email.clone(),
            preview: self.preview.clone(),
            status: self.status.as_str().to_owned(),
            assigned_agent: self.assigned_agent,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// What happened to a lead, as the `event` of its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadEvent {
    Created,
    /// Its status or assignee changed.
    Updated,
    /// The visitor's data was erased, the lead with it.
    Erased,
}

impl LeadEvent {
    pub fn name(self) -> &'static str {
        match self {
            LeadEvent::Created => "created",
            LeadEvent::Updated => "updated",
            LeadEvent::Erased => "erased",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeadError {
    #[error("no such lead")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn preview(text: &str) -> String {
    text.chars().take(PREVIEW_CHARS).collect()
}

/// Stores a new lead, indexes its conversation and publishes it, inside a writer operation.
fn create(context: &mut WriteContext<'_>, mut lead: Lead) -> Result<Lead, StorageError> {
    lead.id = context.next_id(Counter::Lead);
    lead.created_at = context.now;
    lead.updated_at = context.now;
    context.transaction.open_table(tables::LEADS)?.insert(lead.id, encode_json(&lead).as_slice())?;
    context.transaction.open_table(tables::LEAD_CONVERSATIONS)?.insert(lead.conversation_id, lead.id)?;
    context.publish(CommittedEvent::Lead { event: LeadEvent::Created, lead: lead.clone() });
    Ok(lead)
}

fn read(context: &WriteContext<'_>, lead_id: u64) -> Result<Option<Lead>, StorageError> {
    let table = context.transaction.open_table(tables::LEADS)?;
    let found = table.get(lead_id)?.map(|value| decode_json(value.value())).transpose()?;
    Ok(found)
}

fn update(context: &mut WriteContext<'_>, mut lead: Lead) -> Result<Lead, StorageError> {
    lead.updated_at = context.now;
    context.transaction.open_table(tables::LEADS)?.insert(lead.id, encode_json(&lead).as_slice())?;
    context.publish(CommittedEvent::Lead { event: LeadEvent::Updated, lead: lead.clone() });
    Ok(lead)
}

/// Makes an offline message a lead of its conversation (inside the operation that stores it).
pub fn record_offline_message(context: &mut WriteContext<'_>, message: &OfflineMessage) -> Result<Lead, StorageError> {
    create(context, offline_lead(message))
}

/// The lead an offline message makes (its id and times are the store's to give).
pub fn offline_lead(message: &OfflineMessage) -> Lead {
    Lead {
        site: message.site.clone(),
        visitor_id: message.visitor_id,
        conversation_id: message.conversation_id,
        source: LeadSource::OfflineMessage,
        offline_message_id: Some(message.id),
        name: message.name.clone(),
        email: message.email.clone(),
        preview: preview(&message.text),
        ..Lead::default()
    }
}

/// Makes a conversation that just closed a lead when it was never answered: the visitor wrote,
/// no agent replied, and the visitor had asked for a human (a conversation the bot alone held
/// is not waiting for anyone). A conversation that already is a lead stays one lead.
pub fn note_unanswered(context: &mut WriteContext<'_>, conversation: &Conversation) -> Result<(), StorageError> {
    if !may_become_missed_lead(conversation) {
        return Ok(());
    }
    if context.transaction.open_table(tables::LEAD_CONVERSATIONS)?.get(conversation.id)?.is_some() {
        return Ok(());
    }
    let Some(text) = messages::last_visitor_text(context, conversation.id)? else {
        return Ok(());
    };
    let visitor = crate::people::visitors::get_for_update(context, conversation.visitor_id)?.unwrap_or_default();
    create(context, missed_lead(conversation, &visitor, &text))?;
    Ok(())
}

/// Whether a conversation that just closed may be a missed lead: no agent answered and the bot
/// did not hold it (it also needs a visitor message, and no lead of its own yet).
pub fn may_become_missed_lead(conversation: &Conversation) -> bool {
    conversation.first_response_at.is_none() && !conversation.bot_active
}

/// The lead of a conversation that closed unanswered, from its visitor and the visitor's last
/// message (its id and times still to be given).
pub fn missed_lead(conversation: &Conversation, visitor: &crate::people::visitors::Visitor, text: &str) -> Lead {
    Lead {
        site: conversation.site.clone(),
        visitor_id: conversation.visitor_id,
        conversation_id: conversation.id,
        source: LeadSource::MissedConversation,
        offline_message_id: None,
        name: visitor.name.clone().unwrap_or_default(),
        email: visitor.email.clone().unwrap_or_default(),
        preview: preview(text),
        ..Lead::default()
    }
}

/// The first agent reply in a conversation, however it was sent, takes up the conversation's
/// lead if it has a new one: the lead becomes open and, if nobody had it, the agent's. Only the
/// first reply looks, so the message path pays one lookup per conversation, not per message.
pub fn note_first_reply(
    context: &mut WriteContext<'_>,
    conversation_id: u64,
    agent_id: u64,
) -> Result<(), StorageError> {
    let lead_id =
        context.transaction.open_table(tables::LEAD_CONVERSATIONS)?.get(conversation_id)?.map(|id| id.value());
    let Some(mut lead) = lead_id.map(|id| read(context, id)).transpose()?.flatten() else {
        return Ok(());
    };
    if lead.status != LeadStatus::New {
        return Ok(());
    }
    lead.answered_by(agent_id);
    update(context, lead)?;
    Ok(())
}

/// Changes a lead's status.
pub async fn set_status(store: &Store, lead_id: u64, status: LeadStatus) -> Result<Lead, LeadError> {
    store
        .write(move |context| {
            let Some(mut lead) = read(context, lead_id)? else { return Ok(Err(LeadError::NotFound)) };
            lead.status = status;
            Ok(Ok(update(context, lead)?))
        })
        .await
}

/// Gives a lead to an agent (the caller has checked that they serve its site), or to nobody.
/// A new lead someone takes is open.
pub async fn assign(store: &Store, lead_id: u64, agent_id: Option<u64>) -> Result<Lead, LeadError> {
    store
        .write(move |context| {
            let Some(mut lead) = read(context, lead_id)? else { return Ok(Err(LeadError::NotFound)) };
            lead.assign_to(agent_id);
            Ok(Ok(update(context, lead)?))
        })
        .await
}

/// An agent's answer to a lead.
pub struct LeadReply {
    /// The agent answering (an agent sender).
    pub sender: SenderView,
    pub client_id: String,
    /// Validated and filtered by the caller.
    pub text: String,
    pub trace_id: u64,
}

impl LeadReply {
    /// Only an agent answers a lead.
    pub fn check(&self) -> Result<(), LeadError> {
        match self.sender.kind {
            SenderKind::Agent => Ok(()),
            _ => Err(LeadError::Invalid("only an agent answers a lead".into())),
        }
    }

    /// The reply as a message to the conversation it goes to.
    pub fn into_message(self, conversation_id: u64) -> NewMessage {
        NewMessage {
            trace_id: self.trace_id,
            ..NewMessage::text(Target::Conversation(conversation_id), self.sender, self.client_id, self.text)
        }
    }
}

/// Answers a lead in the visitor's conversation, where the widget shows it on their next visit:
/// their open conversation if they have one (taken by the agent if nobody holds it), or else the
/// lead's conversation, reopened for the agent. The lead becomes open and, if nobody had it,
/// the agent's. One writer operation, so the reply and the lead's change commit together.
pub async fn reply(store: &Store, lead_id: u64, reply: LeadReply) -> Result<(Lead, Appended), LeadError> {
    reply.check()?;
    store
        .write(move |context| {
            let Some(mut lead) = read(context, lead_id)? else { return Ok(Err(LeadError::NotFound)) };
            let agent_id = reply.sender.id;
            let target = match conversations::open_conversation_of(context, lead.visitor_id)? {
                Some(open) => {
                    let unheld =
                        context.conversation(open)?.is_some_and(|conversation| conversation.assigned_agent.is_none());
                    if unheld && let Err(error) = conversations::assign_in(context, open, agent_id, AssignWhen::Open)? {
                        return Ok(Err(error.into()));
                    }
                    open
                }
                None => {
                    if let Err(error) = conversation_actions::reopen_in(context, lead.conversation_id, agent_id)? {
                        return Ok(Err(error.into()));
                    }
                    lead.conversation_id
                }
            };
            let appended = match messages::append(context, reply.into_message(target))? {
                Ok(appended) => appended,
                Err(error) => return Ok(Err(error.into())),
            };
            lead.answered_by(agent_id);
            let lead = update(context, lead)?;
            Ok(Ok((lead, appended)))
        })
        .await
}

pub fn get(transaction: &ReadTransaction, lead_id: u64) -> Result<Option<Lead>, StorageError> {
    let table = transaction.open_table(tables::LEADS)?;
    table.get(lead_id)?.map(|value| decode_json(value.value())).transpose()
}

/// Which leads a list shows.
#[derive(Clone, Debug, Default)]
pub struct LeadFilter {
    pub status: Option<LeadStatus>,
    pub site: Option<String>,
    pub assigned_agent: Option<u64>,
    /// Only leads with a smaller id (the previous page's `next_cursor`).
    pub before: Option<u64>,
    pub limit: usize,
}

/// Leads of each status among those a list could show (its status filter aside).
#[derive(Clone, Copy, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct LeadCounts {
    pub new: usize,
    pub open: usize,
    pub done: usize,
}

#[derive(Clone, Debug, Default)]
pub struct LeadPage {
    pub leads: Vec<Lead>,
    pub counts: LeadCounts,
    pub next_cursor: Option<u64>,
}

/// One page of the leads of the sites `visible` accepts, newest first, with the counts per
/// status of everything the filter (but its status and cursor) matches.
pub fn list(
    transaction: &ReadTransaction,
    filter: &LeadFilter,
    visible: impl Fn(&str) -> bool,
) -> Result<LeadPage, StorageError> {
    let table = transaction.open_table(tables::LEADS)?;
    page_of(table.iter()?.rev().map(|entry| decode_json(entry?.1.value())), filter, visible)
}

/// One page of `leads` (newest first) as [`list`] makes it, whatever they are read from.
pub fn page_of(
    leads: impl Iterator<Item = Result<Lead, StorageError>>,
    filter: &LeadFilter,
    visible: impl Fn(&str) -> bool,
) -> Result<LeadPage, StorageError> {
    let mut page = LeadPage::default();
    for lead in leads {
        let lead = lead?;
        if !visible(&lead.site)
            || filter.site.as_ref().is_some_and(|site| *site != lead.site)
            || filter.assigned_agent.is_some_and(|agent_id| lead.assigned_agent != Some(agent_id))
        {
            continue;
        }
        match lead.status {
            LeadStatus::New => page.counts.new += 1,
            LeadStatus::Open => page.counts.open += 1,
            LeadStatus::Done => page.counts.done += 1,
        }
        let wanted = filter.status.is_none_or(|status| status == lead.status)
            && filter.before.is_none_or(|before| lead.id < before);
        if !wanted {
            continue;
        }
        if page.leads.len() < filter.limit {
            page.leads.push(lead);
        } else if page.next_cursor.is_none() {
            page.next_cursor = page.leads.last().map(|last| last.id);
        }
    }
    Ok(page)
}

/// Every lead of a visitor, oldest first.
pub fn of_visitor(transaction: &ReadTransaction, visitor_id: u64) -> Result<Vec<Lead>, StorageError> {
    let table = transaction.open_table(tables::LEADS)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        let lead: Lead = decode_json(entry?.1.value())?;
        if lead.visitor_id == visitor_id {
            found.push(lead);
        }
    }
    Ok(found)
}

/// Removes every lead of a visitor (inside the erasure of their data) and tells the consoles;
/// returns how many.
pub fn erase_of_visitor(context: &mut WriteContext<'_>, visitor_id: u64) -> Result<u64, StorageError> {
    let mut doomed = Vec::new();
    {
        let table = context.transaction.open_table(tables::LEADS)?;
        for entry in table.iter()? {
            let lead: Lead = decode_json(entry?.1.value())?;
            if lead.visitor_id == visitor_id {
                doomed.push(lead);
            }
        }
    }
    for lead in &doomed {
        context.transaction.open_table(tables::LEADS)?.remove(lead.id)?;
        context.transaction.open_table(tables::LEAD_CONVERSATIONS)?.remove(lead.conversation_id)?;
    }
    let n_erased = doomed.len() as u64;
    for lead in doomed {
        // What the consoles need to drop it from their lists, and nothing personal.
        let lead = Lead { name: String::new(), email: String::new(), preview: String::new(), ..lead };
        context.publish(CommittedEvent::Lead { event: LeadEvent::Erased, lead });
    }
    Ok(n_erased)
}
