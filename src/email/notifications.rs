//! Emails caused by chat: to a site's agents, a new offline message ([`record_notifications`], in
//! the commit of the message) and a missed chat ([`email_missed_chats`], a sweep: a visitor waited
//! past the configured time with no agent answer); to a visitor who left their email, an agent's
//! answer they have not read in the chat. Each is in the recipient's language; an agent who
//! turned notification emails off gets none.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::content::{self, Lang};
use super::{EmailKind, OutgoingEmail};
use crate::chat::conversations::Conversation;
use crate::chat::delivery::{CommittedEvent, ConversationEvent};
use crate::chat::writes::ChatWrites;
use crate::people::agents::Agent;
use crate::protocol::SenderKind;
use crate::sites::Site;
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

/// The key in `email_settings_v1` of what the writer's step needs from the configuration.
pub const RUNTIME_KEY: &str = "runtime";

/// What emails written inside the writer need from the configuration, which the writer's steps
/// cannot be handed: the server writes it on every start, before anything is emailed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRuntime {
    /// The URL kefu is reached at; links in emails start with it.
    pub public_url: String,
    /// How long an answer to a lead waits for the visitor to read it in the chat, in milliseconds.
    pub reply_delay_millis: i64,
}

/// Records what the writer's step needs (called on start).
pub async fn remember_runtime(store: &Store, runtime: EmailRuntime) -> Result<(), StorageError> {
    store
        .write(move |context| {
            if read_runtime(context)? != runtime {
                context
                    .transaction
                    .open_table(tables::EMAIL_SETTINGS)?
                    .insert(RUNTIME_KEY, encode_json(&runtime).as_slice())?;
            }
            Ok(Ok::<_, StorageError>(()))
        })
        .await
}

fn read_runtime(context: &WriteContext<'_>) -> Result<EmailRuntime, StorageError> {
    let table = context.transaction.open_table(tables::EMAIL_SETTINGS)?;
    let stored = table.get(RUNTIME_KEY)?.map(|value| value.value().to_vec());
    stored.map_or(Ok(EmailRuntime::default()), |bytes| decode_json(&bytes))
}

fn console_url(context: &WriteContext<'_>) -> Result<String, StorageError> {
    Ok(read_runtime(context)?.console_url())
}

impl EmailRuntime {
    /// The agents' console, which emails to agents link to.
    pub fn console_url(&self) -> String {
        format!("{}/console", self.public_url.trim_end_matches('/'))
    }
}

pub(super) fn site(context: &WriteContext<'_>, key: &str) -> Result<Option<Site>, StorageError> {
    let table = context.transaction.open_table(tables::SITES)?;
    table.get(key)?.map(|value| decode_json(value.value())).transpose()
}

/// Every agent, for [`agent_emails`] to choose from.
fn all_agents(context: &WriteContext<'_>) -> Result<Vec<Agent>, StorageError> {
    let table = context.transaction.open_table(tables::AGENTS)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        found.push(decode_json(entry?.1.value())?);
    }
    Ok(found)
}

/// The language of an email about `site`: the site's email language when set, else the visitor's.
pub fn language_for(site: Option<&Site>, visitor_lang: &str) -> Lang {
    Lang::first_of([site.map_or("", |site| site.email_language.as_str()), visitor_lang])
}

/// The emails to every notified agent of `site_key` (enabled, serving the site, not opted
/// out) among `agents`, each rendered by `render` in the site's language (else the visitor's):
/// what both backends queue.
pub fn agent_emails(
    site_key: &str,
    site: Option<&Site>,
    agents: &[Agent],
    kind: EmailKind,
    render: impl Fn(Lang, &str) -> content::Rendered,
    visitor_lang: &str,
) -> Vec<OutgoingEmail> {
    let lang = language_for(site, visitor_lang);
    let site_name = site.map_or(site_key, |site| site.name.as_str());
    agents
        .iter()
        .filter(|agent| !agent.disabled && !agent.email_notifications_off && agent.serves_site(site_key))
        .map(|agent| OutgoingEmail {
            kind,
            site: Some(site_key.to_owned()),
            to_address: agent.email.clone(),
            to_name: agent.name.clone(),
            message: render(lang, site_name),
            unless_read: None,
            transcript_of: None,
        })
        .collect()
}

/// Queues an email to every notified agent of `site_key`, each rendered by `render`.
fn email_agents(
    context: &mut WriteContext<'_>,
    site_key: &str,
    kind: EmailKind,
    render: impl Fn(Lang, &str) -> content::Rendered,
    visitor_lang: &str,
) -> Result<usize, StorageError> {
    let site = site(context, site_key)?;
    let emails = agent_emails(site_key, site.as_ref(), &all_agents(context)?, kind, render, visitor_lang);
    let now = context.now;
    let count = emails.len();
    for email in emails {
        super::queue(context, email, now)?;
    }
    Ok(count)
}

/// Writes the emails of this batch's events to the outbox: a new offline message to the site's
/// agents, an agent's answer to a visitor who left their email. Runs inside the writer, just
/// before the commit.
pub fn record_notifications(context: &mut WriteContext<'_>) -> Result<(), StorageError> {
    let mut offline = Vec::new();
    let mut answers = Vec::new();
    let mut closed = Vec::new();
    for event in context.published() {
        match event {
            CommittedEvent::OfflineMessage(message) => offline.push(message.clone()),
            CommittedEvent::Conversation { event: ConversationEvent::Closed { .. }, conversation } => {
                closed.push(conversation.clone());
            }
            CommittedEvent::Message { conversation_id, seq, record, .. }
                if record.sender_kind == SenderKind::Agent && !record.internal =>
            {
                answers.push((*conversation_id, *seq, record.clone()));
            }
            _ => {}
        }
    }
    if !offline.is_empty() {
        let console = console_url(context)?;
        for message in offline {
            let render = |lang: Lang, site_name: &str| content::offline_message(lang, site_name, &message, &console);
            email_agents(context, &message.site, EmailKind::OfflineMessage, render, &message.lang)?;
            // The message waits in its conversation now; the agents were just told about it, so
            // that conversation is no missed chat to tell them about again.
            if message.conversation_id != 0 {
                let now = context.now;
                context.transaction.open_table(tables::EMAIL_MISSED_CHATS)?.insert(message.conversation_id, now)?;
            }
        }
    }
    for (conversation_id, seq, record) in answers {
        email_answer(context, conversation_id, seq, &record)?;
    }
    for conversation in closed {
        let site = site(context, &conversation.site)?;
        if !site.as_ref().is_some_and(|site| site.transcript_on_close) {
            continue;
        }
        let Some(visitor) = crate::people::visitors::get_for_update(context, conversation.visitor_id)? else {
            continue;
        };
        let Some(address) = visitor.email.clone().filter(|address| super::plausible_address(address)) else { continue };
        let lang = language_for(site.as_ref(), visitor.lang.as_deref().unwrap_or_default());
        super::transcript::queue(context, &conversation, &address, visitor.name.as_deref().unwrap_or_default(), lang)?;
    }
    Ok(())
}

/// Queues an agent's answer to the conversation's visitor, if they left an email address; it
/// waits `reply_delay_millis` and is dropped if the visitor reads it in the chat meanwhile.
fn email_answer(
    context: &mut WriteContext<'_>,
    conversation_id: u64,
    seq: u64,
    record: &crate::chat::messages::MessageRecord,
) -> Result<(), StorageError> {
    let Some(conversation) = context.conversation(conversation_id)?.cloned() else { return Ok(()) };
    // Most visitors left no address: known from the writer's cache, without reading the visitor.
    if !crate::people::visitors::has_email(context, conversation.visitor_id)? {
        return Ok(());
    }
    let Some(visitor) = crate::people::visitors::get_for_update(context, conversation.visitor_id)? else {
        return Ok(());
    };
    let site = site(context, &conversation.site)?;
    let Some(email) = answer_email(&conversation, seq, record, &visitor, site.as_ref()) else { return Ok(()) };
    let due = context.now + read_runtime(context)?.reply_delay_millis;
    super::queue(context, email, due)?;
    Ok(())
}

/// The email of an agent's answer (message `seq` of `conversation`) to its visitor, in the
/// site's language (else the visitor's), sent only if the visitor has not read it in the chat
/// by then; `None` when the visitor left no plausible address. What both backends send.
pub fn answer_email(
    conversation: &Conversation,
    seq: u64,
    record: &crate::chat::messages::MessageRecord,
    visitor: &crate::people::visitors::Visitor,
    site: Option<&Site>,
) -> Option<OutgoingEmail> {
    let address = visitor.email.clone().filter(|address| super::plausible_address(address))?;
    let site_name = site.map_or(conversation.site.as_str(), |site| site.name.as_str());
    let lang = language_for(site, visitor.lang.as_deref().unwrap_or_default());
    let text = super::transcript::message_text(record);
    Some(OutgoingEmail {
        kind: EmailKind::Reply,
        site: Some(conversation.site.clone()),
        to_address: address,
        to_name: visitor.name.clone().unwrap_or_default(),
        message: content::reply(lang, site_name, &record.sender_name, &text, record.created_at),
        unless_read: Some(super::ReadCheck { conversation_id: conversation.id, visitor_id: visitor.id, seq }),
        transcript_of: None,
    })
}

/// The emails to the notified agents of `conversation`'s site about its visitor waiting since
/// it started, as of `now`, linking to `console`: what both backends queue for a missed chat.
pub fn missed_chat_emails(
    conversation: &Conversation,
    visitor: Option<&crate::people::visitors::Visitor>,
    site: Option<&Site>,
    agents: &[Agent],
    console: &str,
    now: i64,
) -> Vec<OutgoingEmail> {
    let visitor_name =
        visitor.map_or_else(|| format!("Visitor #{}", conversation.visitor_id), crate::people::visitors::display_name);
    let waited_minutes = ((now - conversation.created_at).max(0) / 60_000) as u64;
    let render =
        |lang: Lang, site_name: &str| content::missed_chat(lang, site_name, &visitor_name, waited_minutes, console);
    let visitor_lang = visitor.and_then(|visitor| visitor.lang.as_deref()).unwrap_or_default();
    agent_emails(&conversation.site, site, agents, EmailKind::MissedChat, render, visitor_lang)
}

/// Emails the agents of every open conversation whose visitor has waited at least `wait_millis`
/// without an agent's answer (once per conversation). Returns how many conversations it reported.
pub async fn email_missed_chats(store: &Store, wait_millis: i64) -> Result<usize, StorageError> {
    // Most sweeps find nothing: look first, so they cost a read and not a commit.
    let now = crate::base::clock::now_millis();
    let any_missed = store
        .read(move |transaction| {
            let open = transaction.open_table(tables::OPEN_CONVERSATIONS)?;
            let reported = transaction.open_table(tables::EMAIL_MISSED_CHATS)?;
            let conversations = transaction.open_table(tables::CONVERSATIONS)?;
            for entry in open.iter()? {
                let id = entry?.0.value();
                if reported.get(id)?.is_some() {
                    continue;
                }
                let Some(value) = conversations.get(id)? else { continue };
                let conversation: Conversation = decode_json(value.value())?;
                if conversation.first_response_at.is_none()
                    && !conversation.bot_active
                    && conversation.created_at <= now - wait_millis
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await?;
    if !any_missed {
        return Ok(0);
    }
    store
        .write(move |context| {
            let deadline = context.now - wait_millis;
            let open: Vec<u64> = {
                let table = context.transaction.open_table(tables::OPEN_CONVERSATIONS)?;
                let mut ids = Vec::new();
                for entry in table.iter()? {
                    ids.push(entry?.0.value());
                }
                ids
            };
            let unreported: Vec<u64> = {
                // Reports of conversations closed since are forgotten, so the table stays as
                // small as the open conversations.
                let mut reported = context.transaction.open_table(tables::EMAIL_MISSED_CHATS)?;
                reported.retain(|id, _| open.binary_search(&id).is_ok())?;
                let mut ids = Vec::new();
                for id in open {
                    if reported.get(id)?.is_none() {
                        ids.push(id);
                    }
                }
                ids
            };
            let mut missed: Vec<Conversation> = Vec::new();
            for id in unreported {
                let Some(conversation) = context.conversation(id)? else { continue };
                let waiting = conversation.is_open()
                    && conversation.first_response_at.is_none()
                    && !conversation.bot_active
                    && conversation.created_at <= deadline;
                if waiting {
                    missed.push(conversation.clone());
                }
            }
            if missed.is_empty() {
                return Ok(Ok(0));
            }
            let console = console_url(context)?;
            let now = context.now;
            let agents = all_agents(context)?;
            for conversation in &missed {
                let visitor = {
                    let table = context.transaction.open_table(tables::VISITORS)?;
                    table
                        .get(conversation.visitor_id)?
                        .map(|value| decode_json::<crate::people::visitors::Visitor>(value.value()))
                        .transpose()?
                };
                let site = site(context, &conversation.site)?;
                for email in missed_chat_emails(conversation, visitor.as_ref(), site.as_ref(), &agents, &console, now) {
                    super::queue(context, email, now)?;
                }
                context.transaction.open_table(tables::EMAIL_MISSED_CHATS)?.insert(conversation.id, now)?;
            }
            Ok(Ok::<_, StorageError>(missed.len()))
        })
        .await
}
