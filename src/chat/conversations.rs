//! Conversations: a visitor's exchange with a site, its state (queued, assigned, closed) and the
//! operations that change it. Every change is a writer operation that publishes a
//! [`ConversationEvent`] after commit, which delivery and routing react to.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::chat::delivery::{CommittedEvent, ConversationEvent};
use crate::chat::writes::ChatWrites;
use crate::protocol::ConversationView;
use crate::storage::writer::Counter;
use crate::storage::{StorageError, Store, WriteContext, decode_json, tables};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    /// Waiting for an agent.
    #[default]
    Queued,
    Assigned,
    Closed,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Queued => "queued",
            ConversationStatus::Assigned => "assigned",
            ConversationStatus::Closed => "closed",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Conversation {
    pub id: u64,
    pub site: String,
    pub visitor_id: u64,
    pub status: ConversationStatus,
    pub assigned_agent: Option<u64>,
    /// The sequence number of the newest message; the next one gets `last_seq + 1`.
    pub last_seq: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    /// The newest day shard holding a message; later messages never go to an earlier shard.
    pub last_day: u32,
    /// When an agent first answered.
    pub first_response_at: Option<i64>,
    /// The visitor's satisfaction rating, given once the conversation is closed.
    pub rating: Option<Rating>,
    /// The team the conversation waits for after a transfer to a team; routing then picks only
    /// its members.
    pub team: Option<u64>,
    /// True while the site's bot answers; routing leaves the conversation alone until the visitor
    /// asks for a human (a `handed_off` event) or an agent takes it.
    pub bot_active: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rating {
    /// 1 (bad) to 5 (excellent).
    pub score: u8,
    pub comment: String,
    pub rated_at: i64,
}

impl Conversation {
    pub fn view(&self, epoch: u64) -> ConversationView {
        ConversationView {
            id: self.id,
            site: self.site.clone(),
            visitor_id: self.visitor_id,
            status: self.status.as_str().to_owned(),
            assigned_agent: self.assigned_agent,
            epoch,
            last_seq: self.last_seq,
            created_at: self.created_at,
            updated_at: self.updated_at,
            bot_active: self.bot_active,
        }
    }

    pub fn is_open(&self) -> bool {
        self.status != ConversationStatus::Closed
    }

    /// A new conversation of `visitor_id` on `site` at `now` (its id still to be given): queued
    /// (for `team` if set), or assigned to `agent_id` (an agent reaching out).
    pub fn new_at(
        site: &str,
        visitor_id: u64,
        agent_id: Option<u64>,
        team: Option<u64>,
        bot_active: bool,
        now: i64,
    ) -> Conversation {
        Conversation {
            site: site.to_owned(),
            visitor_id,
            status: if agent_id.is_some() { ConversationStatus::Assigned } else { ConversationStatus::Queued },
            assigned_agent: agent_id,
            created_at: now,
            updated_at: now,
            last_day: crate::base::clock::day_of(now),
            bot_active,
            team,
            ..Conversation::default()
        }
    }

    // The changes below are decided here once, for the appliance's writer and the cluster's
    // PostgreSQL alike: each changes the conversation and returns its event, or changes nothing
    // and says why.

    /// Assigns the conversation to `agent_id` (taking it stops the bot).
    pub fn assign_to(
        &mut self,
        agent_id: u64,
        when: AssignWhen,
        now: i64,
    ) -> Result<ConversationEvent, ConversationError> {
        match self.status {
            ConversationStatus::Closed => return Err(ConversationError::Closed),
            ConversationStatus::Assigned if when == AssignWhen::Queued || self.assigned_agent == Some(agent_id) => {
                return Err(ConversationError::AlreadyAssigned);
            }
            _ => {}
        }
        let previous = self.assigned_agent;
        self.status = ConversationStatus::Assigned;
        self.assigned_agent = Some(agent_id);
        self.team = None;
        self.updated_at = now;
        self.bot_active = false;
        Ok(ConversationEvent::Assigned { previous })
    }

    /// Closes the open conversation.
    pub fn close_at(&mut self, now: i64) -> Result<ConversationEvent, ConversationError> {
        self.check_open()?;
        let previous = self.assigned_agent;
        self.status = ConversationStatus::Closed;
        self.closed_at = Some(now);
        self.updated_at = now;
        Ok(ConversationEvent::Closed { previous })
    }

    /// Records the visitor's rating (checked by [`check_rating`]) of the closed conversation, once.
    pub fn rate_at(&mut self, score: u8, comment: &str, now: i64) -> Result<(), ConversationError> {
        if self.status != ConversationStatus::Closed {
            return Err(ConversationError::NotClosed);
        }
        if self.rating.is_some() {
            return Err(ConversationError::AlreadyRated);
        }
        self.rating = Some(Rating { score, comment: comment.trim().to_owned(), rated_at: now });
        Ok(())
    }

    /// Transfers the open conversation to an agent (assigned at once) or a team (queued for its
    /// members).
    pub fn transfer_to(&mut self, target: TransferTarget, now: i64) -> Result<ConversationEvent, ConversationError> {
        self.check_open()?;
        let previous = self.assigned_agent;
        let event = match target {
            TransferTarget::Agent(agent_id) => {
                if previous == Some(agent_id) {
                    return Err(ConversationError::AlreadyAssigned);
                }
                self.status = ConversationStatus::Assigned;
                self.assigned_agent = Some(agent_id);
                self.team = None;
                ConversationEvent::Assigned { previous }
            }
            TransferTarget::Team(team_id) => {
                self.status = ConversationStatus::Queued;
                self.assigned_agent = None;
                self.team = Some(team_id);
                ConversationEvent::Queued { previous }
            }
        };
        self.updated_at = now;
        Ok(event)
    }

    /// Returns the open conversation `agent_id` holds to the queue; `AlreadyAssigned` when
    /// another agent holds it by now, so a take that committed first wins.
    pub fn release_from(&mut self, agent_id: u64, now: i64) -> Result<ConversationEvent, ConversationError> {
        self.check_open()?;
        if self.assigned_agent != Some(agent_id) {
            return Err(ConversationError::AlreadyAssigned);
        }
        self.status = ConversationStatus::Queued;
        self.assigned_agent = None;
        self.updated_at = now;
        Ok(ConversationEvent::Queued { previous: Some(agent_id) })
    }

    /// Reopens the closed conversation for `agent_id`. The caller has checked that its visitor
    /// has no other open conversation.
    pub fn reopen_for(&mut self, agent_id: u64, now: i64) -> Result<ConversationEvent, ConversationError> {
        if self.status != ConversationStatus::Closed {
            return Err(ConversationError::NotClosed);
        }
        self.status = ConversationStatus::Assigned;
        self.assigned_agent = Some(agent_id);
        self.team = None;
        self.closed_at = None;
        self.updated_at = now;
        Ok(ConversationEvent::Reopened)
    }

    fn check_open(&self) -> Result<(), ConversationError> {
        match self.status {
            ConversationStatus::Closed => Err(ConversationError::Closed),
            _ => Ok(()),
        }
    }
}

/// Where a transferred conversation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferTarget {
    /// Assigned to this agent at once.
    Agent(u64),
    /// Back to the queue, for members of this team only.
    Team(u64),
}

/// Checks a visitor's rating before anything is read: a score of 1 to 5, a comment of at most
/// 2,000 characters.
pub fn check_rating(score: u8, comment: &str) -> Result<(), ConversationError> {
    if !(1..=5).contains(&score) {
        return Err(ConversationError::Invalid("score: must be 1 to 5".into()));
    }
    if comment.chars().count() > 2000 {
        return Err(ConversationError::Invalid("comment: at most 2000 characters".into()));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("no such conversation")]
    NotFound,
    #[error("the conversation is closed")]
    Closed,
    #[error("the conversation is already assigned")]
    AlreadyAssigned,
    #[error("the conversation is not closed")]
    NotClosed,
    #[error("the conversation was already rated")]
    AlreadyRated,
    #[error("the visitor already has an open conversation")]
    VisitorHasOpen,
    /// Routing on a cluster node that does not hold the routing lease of the conversation's site.
    #[error("this node does not hold the routing lease of the conversation's site")]
    LeaseNotHeld,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Starts a new conversation for a visitor (inside a writer operation) and publishes `created`;
/// it waits for `team` when the site's routing rules chose one.
pub fn create_for_visitor(
    context: &mut WriteContext<'_>,
    site: &str,
    visitor_id: u64,
    team: Option<u64>,
) -> Result<u64, StorageError> {
    create_conversation(context, site, visitor_id, None, team, true)
}

/// Starts a conversation for an offline message: no bot (the visitor asked for a person), and it
/// waits in the queue like any other.
pub fn create_for_offline_message(
    context: &mut WriteContext<'_>,
    site: &str,
    visitor_id: u64,
) -> Result<u64, StorageError> {
    create_conversation(context, site, visitor_id, None, None, false)
}

/// Starts a new conversation already assigned to an agent (an agent reaching out to a visitor).
pub fn create_with_holder(
    context: &mut WriteContext<'_>,
    site: &str,
    visitor_id: u64,
    agent_id: u64,
) -> Result<u64, StorageError> {
    create_conversation(context, site, visitor_id, Some(agent_id), None, true)
}

fn create_conversation(
    context: &mut WriteContext<'_>,
    site: &str,
    visitor_id: u64,
    agent_id: Option<u64>,
    team: Option<u64>,
    bot_allowed: bool,
) -> Result<u64, StorageError> {
    let bot_active = bot_allowed && crate::bot::answers_new_conversations(context.transaction, site)?;
    let id = context.next_id(Counter::Conversation);
    let conversation =
        Conversation { id, ..Conversation::new_at(site, visitor_id, agent_id, team, bot_active, context.now) };
    context.transaction.open_table(tables::VISITOR_CONVERSATIONS)?.insert((visitor_id, id), ())?;
    context.transaction.open_table(tables::VISITOR_OPEN_CONVERSATION)?.insert(visitor_id, id)?;
    context.transaction.open_table(tables::OPEN_CONVERSATIONS)?.insert(id, site)?;
    context.publish(CommittedEvent::Conversation {
        event: ConversationEvent::Created,
        conversation: conversation.clone(),
    });
    context.insert_conversation(conversation);
    Ok(id)
}

/// The open conversation of a visitor, if any.
pub fn open_conversation_of(context: &mut WriteContext<'_>, visitor_id: u64) -> Result<Option<u64>, StorageError> {
    let table = context.transaction.open_table(tables::VISITOR_OPEN_CONVERSATION)?;
    Ok(table.get(visitor_id)?.map(|value| value.value()))
}

/// When an assignment may happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignWhen {
    /// Only while the conversation waits in the queue (routing).
    Queued,
    /// Also when another agent holds it (an agent or admin taking over).
    Open,
}

/// Assigns a conversation to an agent.
pub async fn assign(
    store: &Store,
    conversation_id: u64,
    agent_id: u64,
    when: AssignWhen,
) -> Result<Conversation, ConversationError> {
    store.write(move |context| assign_in(context, conversation_id, agent_id, when)).await
}

/// Assigns a conversation to an agent inside a writer operation.
pub fn assign_in(
    context: &mut WriteContext<'_>,
    conversation_id: u64,
    agent_id: u64,
    when: AssignWhen,
) -> Result<Result<Conversation, ConversationError>, StorageError> {
    let now = context.now;
    let Some(conversation) = context.conversation_mut(conversation_id)? else {
        return Ok(Err(ConversationError::NotFound));
    };
    let event = match conversation.assign_to(agent_id, when, now) {
        Ok(event) => event,
        Err(error) => return Ok(Err(error)),
    };
    let conversation = conversation.clone();
    context.publish(CommittedEvent::Conversation { event, conversation: conversation.clone() });
    Ok(Ok(conversation))
}

/// Closes a conversation.
pub async fn close(store: &Store, conversation_id: u64) -> Result<Conversation, ConversationError> {
    store.write(move |context| close_in(context, conversation_id)).await
}

/// Closes a conversation inside a writer operation, for callers that check more first.
pub fn close_in(
    context: &mut WriteContext<'_>,
    conversation_id: u64,
) -> Result<Result<Conversation, ConversationError>, StorageError> {
    let now = context.now;
    let Some(conversation) = context.conversation_mut(conversation_id)? else {
        return Ok(Err(ConversationError::NotFound));
    };
    let event = match conversation.close_at(now) {
        Ok(event) => event,
        Err(error) => return Ok(Err(error)),
    };
    let conversation = conversation.clone();
    context.transaction.open_table(tables::OPEN_CONVERSATIONS)?.remove(conversation_id)?;
    let mut open_by_visitor = context.transaction.open_table(tables::VISITOR_OPEN_CONVERSATION)?;
    if open_by_visitor.get(conversation.visitor_id)?.map(|value| value.value()) == Some(conversation_id) {
        open_by_visitor.remove(conversation.visitor_id)?;
    }
    drop(open_by_visitor);
    context.publish(CommittedEvent::Conversation { event, conversation: conversation.clone() });
    crate::chat::leads::note_unanswered(context, &conversation)?;
    Ok(Ok(conversation))
}

/// Records the visitor's rating of a closed conversation (once).
pub async fn rate(
    store: &Store,
    conversation_id: u64,
    score: u8,
    comment: String,
) -> Result<Conversation, ConversationError> {
    check_rating(score, &comment)?;
    store
        .write(move |context| {
            let now = context.now;
            let Some(conversation) = context.conversation_mut(conversation_id)? else {
                return Ok(Err(ConversationError::NotFound));
            };
            if let Err(error) = conversation.rate_at(score, &comment, now) {
                return Ok(Err(error));
            }
            let conversation = conversation.clone();
            context.publish(CommittedEvent::Rated { conversation: conversation.clone() });
            Ok(Ok(conversation))
        })
        .await
}

pub fn get(transaction: &ReadTransaction, id: u64) -> Result<Option<Conversation>, StorageError> {
    let table = transaction.open_table(tables::CONVERSATIONS)?;
    table.get(id)?.map(|value| decode_json(value.value())).transpose()
}

/// Shows every conversation to `visit`, by id, decoding one at a time (reports read them all once).
pub fn visit_all(transaction: &ReadTransaction, mut visit: impl FnMut(Conversation)) -> Result<(), StorageError> {
    let table = transaction.open_table(tables::CONVERSATIONS)?;
    for entry in table.iter()? {
        visit(decode_json(entry?.1.value())?);
    }
    Ok(())
}

/// Up to `limit` conversations with an id above `after` (all ids when `None`), by id: a chunked
/// reader calls it again with the last id it got.
pub fn scan(
    transaction: &ReadTransaction,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<Conversation>, StorageError> {
    let table = transaction.open_table(tables::CONVERSATIONS)?;
    let range = match after {
        Some(id) => table.range((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded))?,
        None => table.range::<u64>(..)?,
    };
    range.take(limit).map(|entry| decode_json(entry?.1.value())).collect()
}

/// Every conversation that is not closed.
pub fn list_open(transaction: &ReadTransaction) -> Result<Vec<Conversation>, StorageError> {
    let open = transaction.open_table(tables::OPEN_CONVERSATIONS)?;
    let conversations = transaction.open_table(tables::CONVERSATIONS)?;
    let mut found = Vec::new();
    for entry in open.iter()? {
        let id = entry?.0.value();
        if let Some(value) = conversations.get(id)? {
            found.push(decode_json(value.value())?);
        }
    }
    Ok(found)
}

/// A visitor's conversations, oldest first.
pub fn of_visitor(transaction: &ReadTransaction, visitor_id: u64) -> Result<Vec<Conversation>, StorageError> {
    let index = transaction.open_table(tables::VISITOR_CONVERSATIONS)?;
    let conversations = transaction.open_table(tables::CONVERSATIONS)?;
    let mut found = Vec::new();
    for entry in index.range((visitor_id, 0)..=(visitor_id, u64::MAX))? {
        let (_, conversation_id) = entry?.0.value();
        if let Some(value) = conversations.get(conversation_id)? {
            found.push(decode_json(value.value())?);
        }
    }
    Ok(found)
}

/// How far a conversation's participants have read: the visitor, and the furthest any agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadThrough {
    pub visitor: u64,
    pub agents: u64,
}

impl ReadThrough {
    /// Takes one reader's position into account.
    pub fn add(&mut self, reader_kind: u8, seq: u64) {
        if reader_kind == crate::protocol::SenderKind::Visitor.code() {
            self.visitor = self.visitor.max(seq);
        } else if reader_kind == crate::protocol::SenderKind::Agent.code() {
            self.agents = self.agents.max(seq);
        }
    }
}

/// Where a reader's position moves when they say they read through `seq`: never past the
/// conversation's last message, never back. `None` when it does not move.
pub fn read_advance(previous: u64, seq: u64, last_seq: u64) -> Option<u64> {
    let seq = seq.min(last_seq);
    (seq > previous).then_some(seq)
}

/// Records that `reader` read a conversation through `seq` (inside a writer operation) and
/// publishes the `read` event when the position moved.
pub fn mark_read_in(
    context: &mut WriteContext<'_>,
    conversation_id: u64,
    reader: crate::protocol::ParticipantView,
    seq: u64,
) -> Result<(), StorageError> {
    let Some(conversation) = context.conversation(conversation_id)? else {
        return Ok(());
    };
    let last_seq = conversation.last_seq;
    let mut positions = context.transaction.open_table(tables::READ_POSITIONS)?;
    let key = (conversation_id, reader.kind.code(), reader.id);
    let previous = positions.get(key)?.map(|value| value.value()).unwrap_or(0);
    if let Some(seq) = read_advance(previous, seq, last_seq) {
        positions.insert(key, seq)?;
        drop(positions);
        context.publish(CommittedEvent::Read { conversation_id, reader, seq });
    }
    Ok(())
}

/// The read positions of a conversation (its read receipts, for history pages).
pub fn read_through(transaction: &ReadTransaction, conversation_id: u64) -> Result<ReadThrough, StorageError> {
    let positions = transaction.open_table(tables::READ_POSITIONS)?;
    let mut through = ReadThrough::default();
    for entry in positions.range((conversation_id, 0, 0)..=(conversation_id, u8::MAX, u64::MAX))? {
        let (key, seq) = entry?;
        through.add(key.value().1, seq.value());
    }
    Ok(through)
}
