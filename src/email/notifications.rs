//! Emails to a site's agents: a new offline message ([`record_notifications`], in the commit of
//! the message) and a missed chat ([`email_missed_chats`], a sweep: a visitor waited past the
//! configured time with no agent answer), each in the recipient's language. An agent who turned
//! email notifications off gets none.

use redb::ReadableTable;

use super::content::{self, Lang};
use super::{EmailKind, OutgoingEmail};
use crate::chat::conversations::Conversation;
use crate::chat::delivery::CommittedEvent;
use crate::chat::writes::ChatWrites;
use crate::people::agents::Agent;
use crate::sites::Site;
use crate::storage::{StorageError, Store, WriteContext, decode_json, tables};

/// The key in `email_settings_v1` of the URL kefu is reached at, which links in emails start
/// with; the server writes it on start from `public_url`.
const PUBLIC_URL_KEY: &str = "public_url";

/// Records the URL links in emails point to (called on start, before anything is emailed).
pub async fn remember_public_url(store: &Store, url: String) -> Result<(), StorageError> {
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::EMAIL_SETTINGS)?;
            let same = table.get(PUBLIC_URL_KEY)?.is_some_and(|value| value.value() == url.as_bytes());
            if !same {
                table.insert(PUBLIC_URL_KEY, url.as_bytes())?;
            }
            Ok(Ok::<_, StorageError>(()))
        })
        .await
}

fn console_url(context: &WriteContext<'_>) -> Result<String, StorageError> {
    let table = context.transaction.open_table(tables::EMAIL_SETTINGS)?;
    let base = table.get(PUBLIC_URL_KEY)?.map(|value| String::from_utf8_lossy(value.value()).into_owned());
    Ok(format!("{}/console", base.unwrap_or_default().trim_end_matches('/')))
}

fn site(context: &WriteContext<'_>, key: &str) -> Result<Option<Site>, StorageError> {
    let table = context.transaction.open_table(tables::SITES)?;
    table.get(key)?.map(|value| decode_json(value.value())).transpose()
}

/// The agents a site's notifications go to: enabled, serving the site, not opted out.
fn notified_agents(context: &WriteContext<'_>, site_key: &str) -> Result<Vec<Agent>, StorageError> {
    let table = context.transaction.open_table(tables::AGENTS)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        let agent: Agent = decode_json(entry?.1.value())?;
        if !agent.disabled && !agent.email_notifications_off && agent.serves_site(site_key) {
            found.push(agent);
        }
    }
    Ok(found)
}

/// The language of an email about `site`: the site's email language when set, else the visitor's.
pub fn language_for(site: Option<&Site>, visitor_lang: &str) -> Lang {
    Lang::first_of([site.map_or("", |site| site.email_language.as_str()), visitor_lang])
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
    let lang = language_for(site.as_ref(), visitor_lang);
    let site_name = site.as_ref().map_or(site_key, |site| site.name.as_str()).to_owned();
    let agents = notified_agents(context, site_key)?;
    let now = context.now;
    for agent in &agents {
        let email = OutgoingEmail {
            kind,
            site: Some(site_key.to_owned()),
            to_address: agent.email.clone(),
            to_name: agent.name.clone(),
            message: render(lang, &site_name),
        };
        super::queue(context, email, now)?;
    }
    Ok(agents.len())
}

/// Writes the emails of this batch's events (a new offline message) to the outbox. Runs inside
/// the writer, just before the commit.
pub fn record_notifications(context: &mut WriteContext<'_>) -> Result<(), StorageError> {
    let offline: Vec<_> = context
        .published()
        .iter()
        .filter_map(|event| match event {
            CommittedEvent::OfflineMessage(message) => Some(message.clone()),
            _ => None,
        })
        .collect();
    if offline.is_empty() {
        return Ok(());
    }
    let console = console_url(context)?;
    for message in offline {
        let render = |lang: Lang, site_name: &str| content::offline_message(lang, site_name, &message, &console);
        email_agents(context, &message.site, EmailKind::OfflineMessage, render, &message.lang)?;
    }
    Ok(())
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
            for conversation in &missed {
                let visitor = {
                    let table = context.transaction.open_table(tables::VISITORS)?;
                    table
                        .get(conversation.visitor_id)?
                        .map(|value| decode_json::<crate::people::visitors::Visitor>(value.value()))
                        .transpose()?
                };
                let visitor_name = visitor.as_ref().map_or_else(
                    || format!("Visitor #{}", conversation.visitor_id),
                    crate::people::visitors::display_name,
                );
                let waited_minutes = ((now - conversation.created_at).max(0) / 60_000) as u64;
                let render = |lang: Lang, site_name: &str| {
                    content::missed_chat(lang, site_name, &visitor_name, waited_minutes, &console)
                };
                let visitor_lang = visitor.as_ref().and_then(|visitor| visitor.lang.clone()).unwrap_or_default();
                email_agents(context, &conversation.site, EmailKind::MissedChat, render, &visitor_lang)?;
                context.transaction.open_table(tables::EMAIL_MISSED_CHATS)?.insert(conversation.id, now)?;
            }
            Ok(Ok::<_, StorageError>(missed.len()))
        })
        .await
}
