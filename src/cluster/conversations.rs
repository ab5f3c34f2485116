//! Conversations' changes on the cluster's PostgreSQL: [`PostgresMessages`] implements the
//! [`ConversationStore`] boundary beside its message path, on the same `conversations` table.
//!
//! Each change is one transaction that locks the conversation's row (`FOR UPDATE`), decides with
//! the appliance's `Conversation` methods (`assign_to`, `close_at`, ...) and writes the row back,
//! so two nodes changing one conversation take turns and the second decides on what the first
//! committed (two takes: one wins, the other is refused). A transfer's note is stored in the same
//! transaction; a close that leaves a visitor unanswered makes the lead in it too (`leads`). One
//! open conversation per visitor is the partial unique index of migration 1: a reopen or a start
//! that would make a second is refused with nothing written. With NATS, the committed changes are
//! published after the commit, in commit order (`events::publish`).

use tokio_postgres::Transaction;

use crate::base::clock;
use crate::chat::conversation_actions;
use crate::chat::conversation_list::{self, ListPage, ListRequest, ListState, Listed};
use crate::chat::conversation_store::ConversationStore;
use crate::chat::conversations::{self, AssignWhen, Conversation, ConversationError, ReadThrough, TransferTarget};
use crate::chat::delivery::ConversationEvent;
use crate::chat::leads::{self, Lead, LeadEvent};
use crate::cluster::events::{ConversationChange, NodeEvent};
use crate::cluster::messages::{self, CONVERSATION_COLUMNS, PostgresMessages, conversation_of};
use crate::cluster::postgres::{PostgresError, database, record_of, record_text};
use crate::cluster::routing_lease;
use crate::people::visitors::Visitor;
use crate::protocol::{ParticipantView, SenderKind, SenderView};
use crate::storage::StorageError;

/// The SQLSTATE of a unique violation: here, a second open conversation of one visitor.
fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

fn key_of(id: u64) -> Result<i64, ConversationError> {
    i64::try_from(id).map_err(|_| ConversationError::NotFound)
}

/// What a committed transaction publishes, in commit order.
pub(crate) type Published = Vec<NodeEvent>;

pub(crate) fn announce(published: &mut Published, change: ConversationChange) {
    published.push(NodeEvent::Conversation(change));
}

impl PostgresMessages {
    /// From now on, routing's assignments (`AssignWhen::Queued`) through this store take effect
    /// only while `node` holds the routing lease of the conversation's site (checked in their
    /// transaction, under the conversation's row lock). The first call decides.
    pub fn route_as(&self, node: crate::cluster::node::NodeName) {
        let _ = self.routing_node.set(node);
    }

    /// Runs `change` in a transaction and publishes what it committed.
    pub(crate) async fn change_and_publish<T, E: From<StorageError>>(
        &self,
        change: impl AsyncFnOnce(&Transaction<'_>, &mut Published) -> Result<T, E>,
    ) -> Result<T, E> {
        let (outcome, published) = self
            .writers
            .run(async |transaction| -> Result<_, E> {
                let mut published = Published::default();
                let outcome = change(transaction, &mut published).await?;
                crate::cluster::webhooks::record_deliveries(transaction, &published, self.epoch)
                    .await
                    .map_err(StorageError::from)?;
                crate::cluster::email_notifications::record(transaction, &published).await?;
                Ok((outcome, published))
            })
            .await?;
        self.outlet.announce(published).await;
        Ok(outcome)
    }

    /// Changes one conversation with `decide` under its row lock and publishes its event.
    async fn decide(
        &self,
        conversation_id: u64,
        decide: impl FnOnce(&mut Conversation, i64) -> Result<ConversationEvent, ConversationError>,
    ) -> Result<Conversation, ConversationError> {
        self.decide_under(conversation_id, None, decide).await
    }

    /// [`Self::decide`], taking effect only while `lease`'s node holds the routing lease of the
    /// conversation's site when one is given.
    async fn decide_under(
        &self,
        conversation_id: u64,
        lease: Option<&crate::cluster::node::NodeName>,
        decide: impl FnOnce(&mut Conversation, i64) -> Result<ConversationEvent, ConversationError>,
    ) -> Result<Conversation, ConversationError> {
        self.change_and_publish(async |transaction, published| {
            let mut conversation = locked(transaction, conversation_id).await?;
            let event = decide(&mut conversation, clock::now_millis())?;
            if let Some(node) = lease {
                if !routing_lease::holds(transaction, &conversation.site, node).await.map_err(StorageError::from)? {
                    return Err(ConversationError::LeaseNotHeld);
                }
            }
            save(transaction, &conversation).await?;
            announce(published, ConversationChange::Conversation { event, conversation: conversation.clone() });
            Ok(conversation)
        })
        .await
    }
}

/// Closes a conversation whose row `transaction` holds, with the lead of a visitor it leaves
/// unanswered, as the appliance's `conversations::close_in` does.
pub(crate) async fn close_locked(
    transaction: &Transaction<'_>,
    conversation: &mut Conversation,
    published: &mut Published,
) -> Result<(), ConversationError> {
    let event = conversation.close_at(clock::now_millis())?;
    save(transaction, conversation).await?;
    announce(published, ConversationChange::Conversation { event, conversation: conversation.clone() });
    note_unanswered(transaction, conversation, published).await?;
    Ok(())
}

/// The conversation's row, locked until the transaction ends.
pub(crate) async fn locked(
    transaction: &Transaction<'_>,
    conversation_id: u64,
) -> Result<Conversation, ConversationError> {
    let id = key_of(conversation_id)?;
    let row = transaction
        .query_opt(&format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 FOR UPDATE"), &[&id])
        .await
        .map_err(database)?;
    let row = row.ok_or(ConversationError::NotFound)?;
    Ok(conversation_of(&row).map_err(StorageError::from)?)
}

/// Writes back what a change decides (its state, holder, team, times, rating and bot); a
/// second open conversation of the visitor is refused.
pub(crate) async fn save(transaction: &Transaction<'_>, conversation: &Conversation) -> Result<(), ConversationError> {
    let id = key_of(conversation.id)?;
    let agent = conversation.assigned_agent.map(key_of).transpose()?;
    let team = conversation.team.map(key_of).transpose()?;
    let rating = conversation.rating.as_ref().map(record_text);
    let written = transaction
        .execute(
            "UPDATE conversations SET status = $2, assigned_agent = $3, team = $4, updated_at = $5, closed_at = $6,
                 rating = $7::text::jsonb, bot_active = $8
             WHERE id = $1",
            &[
                &id,
                &conversation.status.as_str(),
                &agent,
                &team,
                &conversation.updated_at,
                &conversation.closed_at,
                &rating,
                &conversation.bot_active,
            ],
        )
        .await;
    match written {
        Err(error) if is_unique_violation(&error) => Err(ConversationError::VisitorHasOpen),
        other => other.map(drop).map_err(|error| database(error).into()),
    }
}

/// Makes a conversation that just closed unanswered a lead, as the appliance's
/// `leads::note_unanswered` does: once per conversation, from the visitor's last message.
async fn note_unanswered(
    transaction: &Transaction<'_>,
    conversation: &Conversation,
    published: &mut Published,
) -> Result<(), ConversationError> {
    if !leads::may_become_missed_lead(conversation) {
        return Ok(());
    }
    let id = key_of(conversation.id)?;
    let is_lead = transaction
        .query_opt("SELECT 1 FROM lead_conversations WHERE conversation_id = $1", &[&id])
        .await
        .map_err(database)?
        .is_some();
    if is_lead {
        return Ok(());
    }
    let text = transaction
        .query_opt(
            "SELECT text FROM messages WHERE conversation_id = $1 AND sender_kind = $2 AND NOT internal
             ORDER BY seq DESC LIMIT 1",
            &[&id, &i16::from(crate::protocol::SenderKind::Visitor.code())],
        )
        .await
        .map_err(database)?;
    let Some(text) = text.map(|row| row.get::<_, String>(0)) else {
        return Ok(());
    };
    let visitor_id = key_of(conversation.visitor_id)?;
    let visitor = transaction
        .query_opt("SELECT record::text FROM visitors WHERE id = $1", &[&visitor_id])
        .await
        .map_err(database)?;
    let visitor: Visitor = visitor.map(|row| record_of("visitor", row.get(0))).transpose()?.unwrap_or_default();
    insert_lead(transaction, leads::missed_lead(conversation, &visitor, &text), conversation.updated_at, published)
        .await?;
    Ok(())
}

/// Stores a new lead made at `now`, as its conversation's lead, and announces it.
pub(crate) async fn insert_lead(
    transaction: &Transaction<'_>,
    mut lead: Lead,
    now: i64,
    published: &mut Published,
) -> Result<Lead, StorageError> {
    let lead_id: i64 = transaction.query_one("SELECT nextval('lead_ids')", &[]).await.map_err(database)?.get(0);
    lead.id = lead_id as u64;
    lead.created_at = now;
    lead.updated_at = now;
    let conversation_id = i64::try_from(lead.conversation_id)
        .map_err(|_| StorageError::Corrupt(format!("conversation id {} out of range", lead.conversation_id)))?;
    transaction
        .execute("INSERT INTO leads (id, record) VALUES ($1, $2::text::jsonb)", &[&lead_id, &record_text(&lead)])
        .await
        .map_err(database)?;
    transaction
        .execute(
            "INSERT INTO lead_conversations (conversation_id, record) VALUES ($1, to_jsonb($2::bigint))
             ON CONFLICT (conversation_id) DO UPDATE SET record = EXCLUDED.record",
            &[&conversation_id, &lead_id],
        )
        .await
        .map_err(database)?;
    announce(published, ConversationChange::Lead { event: LeadEvent::Created, lead: lead.clone() });
    Ok(lead)
}

/// Stores a new conversation (its id from the sequence) and announces it; `None` when the
/// visitor has an open one already (another node's send may have just made it).
pub(crate) async fn insert_conversation(
    transaction: &Transaction<'_>,
    mut conversation: Conversation,
    published: &mut Published,
) -> Result<Option<Conversation>, ConversationError> {
    let visitor_key = key_of(conversation.visitor_id)?;
    let agent_key = conversation.assigned_agent.map(key_of).transpose()?;
    let last_day = i32::try_from(conversation.last_day).map_err(|_| StorageError::Corrupt("day".into()))?;
    let inserted = transaction
        .query_opt(
            "INSERT INTO conversations (site, visitor_id, status, assigned_agent, created_at, updated_at, last_day,
                 bot_active)
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7)
             ON CONFLICT (visitor_id) WHERE status <> 'closed' DO NOTHING
             RETURNING id",
            &[
                &conversation.site,
                &visitor_key,
                &conversation.status.as_str(),
                &agent_key,
                &conversation.created_at,
                &last_day,
                &conversation.bot_active,
            ],
        )
        .await
        .map_err(database)?;
    let Some(row) = inserted else { return Ok(None) };
    conversation.id = row.get::<_, i64>(0) as u64;
    announce(
        published,
        ConversationChange::Conversation { event: ConversationEvent::Created, conversation: conversation.clone() },
    );
    Ok(Some(conversation))
}

impl ConversationStore for PostgresMessages {
    async fn of_visitor(&self, visitor_id: u64) -> Result<Vec<Conversation>, StorageError> {
        let Ok(visitor_id) = i64::try_from(visitor_id) else { return Ok(Vec::new()) };
        let client = self.readers.client().await?;
        let rows = client
            .query(
                &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE visitor_id = $1 ORDER BY id"),
                &[&visitor_id],
            )
            .await
            .map_err(database)?;
        Ok(rows.iter().map(conversation_of).collect::<Result<_, PostgresError>>()?)
    }

    async fn list_page(
        &self,
        request: ListRequest,
        serves: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ListPage, StorageError> {
        let open = self.list_open().await?;
        let (counts, open_page, open_next) = request.open_page(open, &serves);
        let client = self.readers.client().await?;
        let (page, next_cursor) = match request.state {
            ListState::Closed => {
                let cursor = i64::try_from(request.cursor).unwrap_or(i64::MAX);
                let rows = client
                    .query(
                        &format!(
                            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id < $1 AND status = 'closed'
                             ORDER BY id DESC LIMIT $2"
                        ),
                        &[&cursor, &(conversation_list::MAX_CLOSED_SCAN as i64)],
                    )
                    .await
                    .map_err(database)?;
                let newest_first = rows.iter().map(|row| Ok(conversation_of(row)?));
                conversation_list::closed_page(newest_first, &|c| request.in_scope(c, &serves), request.limit)?
            }
            _ => (open_page, open_next),
        };
        let ids: Vec<i64> = page.iter().map(|conversation| conversation.id as i64).collect();
        let visitor_ids: Vec<i64> = page.iter().map(|conversation| conversation.visitor_id as i64).collect();
        let mut positions = std::collections::HashMap::new();
        if let Some(agent_id) = request.caller_agent_id.and_then(|id| i64::try_from(id).ok()) {
            let rows = client
                .query(
                    "SELECT conversation_id, (record #>> '{}')::bigint FROM read_positions
                     WHERE reader_kind = $1 AND reader_id = $2 AND conversation_id = ANY($3)",
                    &[&i16::from(SenderKind::Agent.code()), &agent_id, &ids],
                )
                .await
                .map_err(database)?;
            positions.extend(rows.iter().map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64)));
        }
        let rows = client
            .query("SELECT id, record::text FROM visitors WHERE id = ANY($1)", &[&visitor_ids])
            .await
            .map_err(database)?;
        let mut names = std::collections::HashMap::new();
        for row in &rows {
            let visitor: Visitor = record_of("visitor", row.get(1))?;
            names.insert(row.get::<_, i64>(0) as u64, crate::people::visitors::display_name(&visitor));
        }
        let listed = page
            .into_iter()
            .map(|conversation| Listed {
                read_seq: request.caller_agent_id.map(|_| positions.get(&conversation.id).copied().unwrap_or(0)),
                visitor_name: names.get(&conversation.visitor_id).cloned(),
                conversation,
            })
            .collect();
        Ok(ListPage { listed, next_cursor, counts })
    }

    async fn list_open(&self) -> Result<Vec<Conversation>, StorageError> {
        let client = self.readers.client().await?;
        let rows = client
            .query(
                &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status <> 'closed' ORDER BY id"),
                &[],
            )
            .await
            .map_err(database)?;
        Ok(rows.iter().map(conversation_of).collect::<Result<_, PostgresError>>()?)
    }

    async fn assign(
        &self,
        conversation_id: u64,
        agent_id: u64,
        when: AssignWhen,
    ) -> Result<Conversation, ConversationError> {
        key_of(agent_id)?;
        let lease = self.routing_node.get().filter(|_| when == AssignWhen::Queued);
        self.decide_under(conversation_id, lease, |conversation, now| conversation.assign_to(agent_id, when, now)).await
    }

    async fn close(&self, conversation_id: u64) -> Result<Conversation, ConversationError> {
        self.change_and_publish(async |transaction, published| {
            let mut conversation = locked(transaction, conversation_id).await?;
            close_locked(transaction, &mut conversation, published).await?;
            Ok(conversation)
        })
        .await
    }

    async fn rate(&self, conversation_id: u64, score: u8, comment: String) -> Result<Conversation, ConversationError> {
        conversations::check_rating(score, &comment)?;
        self.change_and_publish(async |transaction, published| {
            let mut conversation = locked(transaction, conversation_id).await?;
            conversation.rate_at(score, &comment, clock::now_millis())?;
            save(transaction, &conversation).await?;
            announce(published, ConversationChange::Rated { conversation: conversation.clone() });
            Ok(conversation)
        })
        .await
    }

    async fn transfer(
        &self,
        conversation_id: u64,
        target: TransferTarget,
        note: Option<String>,
        sender: SenderView,
    ) -> Result<Conversation, ConversationError> {
        match target {
            TransferTarget::Agent(id) | TransferTarget::Team(id) => key_of(id)?,
        };
        self.change_and_publish(async |transaction, published| {
            let mut conversation = locked(transaction, conversation_id).await?;
            let event = conversation.transfer_to(target, clock::now_millis())?;
            save(transaction, &conversation).await?;
            announce(published, ConversationChange::Conversation { event, conversation: conversation.clone() });
            let Some(text) = note else {
                return Ok(conversation);
            };
            let note = conversation_actions::transfer_note(conversation_id, sender, text);
            let (_, stored) = messages::append_in(transaction, note)
                .await
                .map_err(|error| ConversationError::Invalid(error.to_string()))?;
            published.extend(stored);
            // The note moved the conversation's last seq (and perhaps its day).
            locked(transaction, conversation_id).await
        })
        .await
    }

    async fn release(&self, conversation_id: u64, agent_id: u64) -> Result<Conversation, ConversationError> {
        self.decide(conversation_id, |conversation, now| conversation.release_from(agent_id, now)).await
    }

    async fn reopen(&self, conversation_id: u64, agent_id: u64) -> Result<Conversation, ConversationError> {
        key_of(agent_id)?;
        self.decide(conversation_id, |conversation, now| conversation.reopen_for(agent_id, now)).await
    }

    async fn mark_read(&self, conversation_id: u64, reader: ParticipantView, seq: u64) -> Result<(), StorageError> {
        let (Ok(id), Ok(reader_id)) = (i64::try_from(conversation_id), i64::try_from(reader.id)) else {
            return Ok(());
        };
        let kind = i16::from(reader.kind.code());
        let moved = self
            .writers
            .run(async |transaction| -> Result<_, StorageError> {
                let last_seq = transaction
                    .query_opt("SELECT last_seq FROM conversations WHERE id = $1", &[&id])
                    .await
                    .map_err(database)?;
                let Some(last_seq) = last_seq.map(|row| row.get::<_, i64>(0)) else {
                    return Ok(None);
                };
                let previous = transaction
                    .query_opt(
                        "SELECT (record #>> '{}')::bigint FROM read_positions
                         WHERE conversation_id = $1 AND reader_kind = $2 AND reader_id = $3 FOR UPDATE",
                        &[&id, &kind, &reader_id],
                    )
                    .await
                    .map_err(database)?
                    .map_or(0, |row| row.get::<_, i64>(0));
                let Some(seq) = conversations::read_advance(previous as u64, seq, last_seq as u64) else {
                    return Ok(None);
                };
                // Two first reads of one reader racing on two nodes both insert: the position
                // only ever moves forward, and only the one that moved it announces it.
                let written = transaction
                    .execute(
                        "INSERT INTO read_positions (conversation_id, reader_kind, reader_id, record)
                         VALUES ($1, $2, $3, to_jsonb($4::bigint))
                         ON CONFLICT (conversation_id, reader_kind, reader_id) DO UPDATE SET record = EXCLUDED.record
                         WHERE (read_positions.record #>> '{}')::bigint < $4",
                        &[&id, &kind, &reader_id, &(seq as i64)],
                    )
                    .await
                    .map_err(database)?;
                Ok((written == 1).then_some(seq))
            })
            .await?;
        if let Some(seq) = moved {
            let change = ConversationChange::Read { conversation_id, reader, seq };
            self.outlet.announce(vec![NodeEvent::Conversation(change)]).await;
        }
        Ok(())
    }

    async fn read_through(&self, conversation_id: u64) -> Result<ReadThrough, StorageError> {
        let mut through = ReadThrough::default();
        let Ok(id) = i64::try_from(conversation_id) else { return Ok(through) };
        let client = self.readers.client().await?;
        let rows = client
            .query(
                "SELECT reader_kind, (record #>> '{}')::bigint FROM read_positions WHERE conversation_id = $1",
                &[&id],
            )
            .await
            .map_err(database)?;
        for row in rows {
            through.add(row.get::<_, i16>(0) as u8, row.get::<_, i64>(1) as u64);
        }
        Ok(through)
    }

    async fn start_with_visitor(
        &self,
        site: String,
        visitor_id: u64,
        agent_id: u64,
    ) -> Result<Conversation, ConversationError> {
        self.change_and_publish(async |transaction, published| {
            let settings = transaction
                .query_opt("SELECT record::text FROM bot_settings WHERE site = $1", &[&site])
                .await
                .map_err(database)?;
            let settings: Option<crate::bot::BotSettings> =
                settings.map(|row| record_of("bot settings", row.get(0))).transpose()?;
            let bot_active = settings.is_some_and(|settings| settings.enabled);
            let conversation =
                Conversation::new_at(&site, visitor_id, Some(agent_id), None, bot_active, clock::now_millis());
            insert_conversation(transaction, conversation, published).await?.ok_or(ConversationError::VisitorHasOpen)
        })
        .await
    }
}
