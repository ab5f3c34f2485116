//! The message path on PostgreSQL: [`PostgresMessages`] implements the chat's
//! [`MessageStore`] with the schema of `migrations/0001_messages.sql`.
//!
//! Appends go through a group commit: one task per node takes every append waiting in its
//! channel (up to `max_batch`) and stores them with one call of `kefu_append_batch` in one
//! transaction. BEGIN, the call and COMMIT are sent together (the driver pipelines them), so a
//! batch costs one round trip whatever its size, and every append of it is answered only after
//! the COMMIT has succeeded. A refused append (unknown or closed conversation, an attachment of
//! another conversation) writes nothing and leaves the others of its batch alone; an error of the
//! batch (a lost connection, a failed commit) fails each of its appends, and none is acknowledged.
//!
//! Each batch's newly stored messages go to its [`Outlet`] after its COMMIT and before its
//! appends are answered, each after the `created` event of a conversation it started: to this
//! node's relay with the connections that sent them (their acknowledgements), and to the other
//! nodes over NATS. A send ([`MessageStore::send`]) waits for nothing but room in the queue.
//! Conversations' other changes are in `cluster::conversations`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Row, Statement};

use crate::base::clock;
use crate::chat::conversations::{Conversation, ConversationStatus, Rating};
use crate::chat::delivery::{CommittedEvent, ConnectionHandle, ConversationEvent};
use crate::chat::message_store::{ConversationPosition, MessageStore, Page};
use crate::chat::messages::{AppendError, Appended, AttachmentRef, MessageKind, MessageRecord, NewMessage, Target};
use crate::chat::uploads::AttachmentKind;
use crate::cluster::events::{self, ConversationChange, NodeEvent, Outlet};
use crate::cluster::postgres::{self, PARTITION_DAYS_AHEAD, PostgresError, Readers, Writers, describe};
use crate::protocol::{BotSource, SenderKind};
use crate::storage::StorageError;

/// How the store connects and batches.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// The most appends one transaction takes.
    pub max_batch: usize,
    /// Connections for reads (each carries many queries at once).
    pub read_connections: usize,
    /// Where committed messages are published for the other nodes, if anywhere.
    pub nats: Option<async_nats::Client>,
    /// This node's relay, if it delivers to connections: it hears the node's own commits from
    /// here, with the connections that sent them (`events::relay`).
    pub local: Option<events::LocalEvents>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions { max_batch: 1024, read_connections: 2, nats: None, local: None }
    }
}

/// How many times a batch that lost a deadlock or a serialization conflict to another node is
/// tried again: nothing of it was committed, so running it again is safe.
const CONFLICT_RETRIES: usize = 3;

/// Connections kept for conversations' changes (takes, closes, transfers, ...), beside the
/// group commit's own.
const CHANGE_CONNECTIONS: usize = 4;

/// How often the partition job makes sure the coming days' partitions exist.
const PARTITION_JOB_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// The group commit's counts since the store opened.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Transactions the group commit ran (each one round trip to the server).
    pub batches: AtomicU64,
    /// Appends answered from them.
    pub appends: AtomicU64,
}

/// The message path's storage on PostgreSQL.
pub struct PostgresMessages {
    appends: mpsc::Sender<PendingAppend>,
    pub(crate) readers: Readers,
    /// Connections for the conversations' changes (`cluster::conversations`).
    pub(crate) writers: Writers,
    /// Where committed changes go: this node's relay, the other nodes.
    pub(crate) outlet: Outlet,
    stats: Arc<BatchStats>,
    partition_job: tokio::task::AbortHandle,
    /// The database's epoch, as [`database_epoch`] found it.
    pub(crate) epoch: u64,
    /// The node whose routing lease a routed assignment needs ([`PostgresMessages::route_as`]).
    pub(crate) routing_node: std::sync::OnceLock<crate::cluster::node::NodeName>,
}

struct PendingAppend {
    item: Value,
    answer: Answer,
    /// The connection that sent it, and its client id: its acknowledgement goes there.
    origin: Option<(ConnectionHandle, String)>,
}

/// Who hears an append's outcome.
enum Answer {
    /// A caller awaiting it.
    Waiting(oneshot::Sender<Result<Appended, AppendError>>),
    /// Nobody waits: a refusal or failure goes here; an acknowledgement goes to the sender's
    /// connection through delivery.
    Detached(Box<dyn FnOnce(AppendError) + Send>),
}

impl Answer {
    fn give(self, outcome: Result<Appended, AppendError>) {
        match (self, outcome) {
            (Answer::Waiting(caller), outcome) => {
                let _ = caller.send(outcome);
            }
            (Answer::Detached(refused), Err(error)) => refused(error),
            (Answer::Detached(_), Ok(_)) => {}
        }
    }
}

impl PostgresMessages {
    /// Connects, applies the migrations this database lacks, creates the coming days'
    /// partitions and starts the group commit and the partition job.
    pub async fn open(url: &str, options: PostgresOptions) -> Result<PostgresMessages, PostgresError> {
        let mut client = postgres::connect(url).await?;
        postgres::migrate(&mut client).await?;
        postgres::create_partitions(&client, today(), PARTITION_DAYS_AHEAD).await?;
        let epoch = database_epoch(&client).await?;
        let statement = prepare_append(&client).await?;
        let stats = Arc::new(BatchStats::default());
        let (appends, queue) = mpsc::channel(options.max_batch.max(1) * 4);
        let outlet = Outlet::new(options.nats, options.local);
        let writer = GroupCommit {
            url: url.to_owned(),
            client,
            statement,
            max_batch: options.max_batch.max(1),
            stats: stats.clone(),
            outlet: outlet.clone(),
        };
        tokio::spawn(writer.run(queue));
        let readers = Readers::new(url, options.read_connections.max(1));
        let job_readers = readers.clone();
        let partition_job = tokio::spawn(async move {
            let mut interval = tokio::time::interval(PARTITION_JOB_INTERVAL);
            interval.tick().await;
            loop {
                interval.tick().await;
                let outcome = async {
                    let client = job_readers.client().await?;
                    postgres::create_partitions(&client, today(), PARTITION_DAYS_AHEAD).await
                }
                .await;
                if let Err(error) = outcome {
                    tracing::warn!(%error, "the message partitions of the coming days could not be created");
                }
            }
        })
        .abort_handle();
        let writers = Writers::new(url, CHANGE_CONNECTIONS);
        let routing_node = std::sync::OnceLock::new();
        Ok(PostgresMessages { appends, readers, writers, outlet, stats, partition_job, epoch, routing_node })
    }

    /// The group commit's counts so far.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// The names of the message partitions, oldest first.
    pub async fn partitions(&self) -> Result<Vec<String>, PostgresError> {
        postgres::partitions(&*self.readers.client().await?).await
    }

    /// Drops the message partitions of the days before `day` (a UTC day number): retention.
    pub async fn drop_days_before(&self, day: u32) -> Result<Vec<String>, PostgresError> {
        postgres::drop_partitions_before(&*self.readers.client().await?, day).await
    }
}

impl Drop for PostgresMessages {
    fn drop(&mut self) {
        // The group commit ends by itself once the channel's senders are gone.
        self.partition_job.abort();
    }
}

fn today() -> u32 {
    clock::day_of(clock::now_millis())
}

async fn prepare_append(client: &Client) -> Result<Statement, PostgresError> {
    Ok(client.prepare("SELECT kefu_append_batch($1::text::jsonb)::text").await?)
}

/// The task that stores appends in batches on its own connection.
struct GroupCommit {
    url: String,
    client: Client,
    statement: Statement,
    max_batch: usize,
    stats: Arc<BatchStats>,
    outlet: Outlet,
}

impl GroupCommit {
    async fn run(mut self, mut queue: mpsc::Receiver<PendingAppend>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while queue.recv_many(&mut batch, self.max_batch).await > 0 {
            let items = Value::Array(batch.iter_mut().map(|pending| pending.item.take()).collect());
            let outcome = self.store(&items.to_string()).await;
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.appends.fetch_add(batch.len() as u64, Ordering::Relaxed);
            match outcome {
                Ok(results) if results.len() == batch.len() => {
                    // Sent before the answers, so an acknowledged message's event is already
                    // on its way.
                    let published = committed_events(items, &results);
                    let local = match self.outlet.delivers_locally() {
                        true => local_events(&published, &mut batch, &results),
                        false => Vec::new(),
                    };
                    let delivered = self.outlet.send(local, published).await;
                    for (pending, result) in batch.drain(..).zip(results) {
                        let outcome = match (&pending.answer, delivered, result.into_answer()) {
                            // Stored, but its sender will hear no acknowledgement: told to resend,
                            // which answers from the stored one.
                            (Answer::Detached(_), false, Ok(_)) => {
                                Err(AppendError::Storage(StorageError::WriterStopped))
                            }
                            (_, _, outcome) => outcome,
                        };
                        pending.answer.give(outcome);
                    }
                }
                Ok(results) => {
                    let detail = format!("the batch returned {} outcomes for {} appends", results.len(), batch.len());
                    fail_all(&mut batch, &detail);
                }
                Err(error) => fail_all(&mut batch, &error.to_string()),
            }
        }
    }

    /// Runs one batch: BEGIN, the append call and COMMIT, pipelined; tried again when it lost
    /// a conflict with another node's transaction.
    async fn store(&mut self, items: &str) -> Result<Vec<BatchOutcome>, StorageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.client.is_closed() {
                self.client = postgres::connect(&self.url).await?;
                self.statement = prepare_append(&self.client).await?;
            }
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&items];
            let (begun, called, committed) = tokio::join!(
                self.client.batch_execute("BEGIN"),
                self.client.query_one(&self.statement, &params),
                self.client.batch_execute("COMMIT"),
            );
            // A COMMIT after a failed statement answers as a rollback, not an error: the call's
            // own error decides.
            let outcome = begun.and(called).and_then(|row| committed.map(|()| row));
            match outcome {
                Ok(row) => {
                    let text: String = row.get(0);
                    return serde_json::from_str(&text).map_err(|error| StorageError::Corrupt(error.to_string()));
                }
                Err(error) if attempt <= CONFLICT_RETRIES && is_conflict(&error) => {
                    tracing::debug!(error = %describe(&error), attempt, "append batch lost a conflict; trying again");
                }
                Err(error) => return Err(StorageError::Server(describe(&error))),
            }
        }
    }
}

fn is_conflict(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    error
        .code()
        .is_some_and(|code| *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE)
}

fn fail_all(batch: &mut Vec<PendingAppend>, detail: &str) {
    let count = batch.len();
    for pending in batch.drain(..) {
        let error = StorageError::Server(format!("the batch of {count} messages was not stored: {detail}"));
        pending.answer.give(Err(AppendError::Storage(error)));
    }
}

/// The events of a batch's newly stored messages (not its duplicates or refusals), in order,
/// each after the `created` event of the conversation it started.
fn committed_events(items: Value, results: &[BatchOutcome]) -> Vec<NodeEvent> {
    let Value::Array(items) = items else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for (mut item, result) in items.into_iter().zip(results) {
        let BatchOutcome::Stored { conversation_id, seq, created_at, site, day, lsn, bot_active, created, .. } = result
        else {
            continue;
        };
        if let Some(conversation) = created {
            events.push(NodeEvent::Conversation(ConversationChange::Conversation {
                event: ConversationEvent::Created,
                conversation: conversation.as_ref().clone(),
            }));
        }
        item["conversation_id"] = json!(conversation_id);
        item["seq"] = json!(seq);
        item["created_at"] = json!(created_at);
        item["site"] = json!(site);
        item["day"] = json!(day);
        item["lsn"] = json!(lsn);
        item["bot_active"] = json!(bot_active);
        // Stored as the same bits in a signed column; published as the id it is.
        item["trace_id"] = json!(item["trace_id"].as_i64().unwrap_or_default() as u64);
        match serde_json::from_value(item) {
            Ok(event) => events.push(NodeEvent::Message(event)),
            Err(error) => tracing::warn!(%error, "a committed message's event could not be built"),
        }
    }
    events
}

/// A batch's events as this node's relay takes them: each stored message with the connection
/// that sent it, and a duplicate's acknowledgement for the connection that resent it.
fn local_events(published: &[NodeEvent], batch: &mut [PendingAppend], results: &[BatchOutcome]) -> Vec<CommittedEvent> {
    let mut origins = Vec::new();
    let mut duplicates = Vec::new();
    for (pending, result) in batch.iter_mut().zip(results) {
        let Some((origin, client_id)) = pending.origin.take() else { continue };
        match result {
            BatchOutcome::Stored { conversation_id, seq, .. } => origins.push(((*conversation_id, *seq), origin)),
            BatchOutcome::Duplicate { conversation_id, seq, created_at, text } => {
                duplicates.push(CommittedEvent::Duplicate {
                    appended: Appended {
                        conversation_id: *conversation_id,
                        seq: *seq,
                        created_at: *created_at,
                        text: text.clone(),
                        duplicate: true,
                    },
                    client_id,
                    origin: Some(origin),
                });
            }
            _ => {}
        }
    }
    let mut local: Vec<CommittedEvent> = published.iter().cloned().filter_map(NodeEvent::into_committed).collect();
    for event in &mut local {
        if let CommittedEvent::Message { conversation_id, seq, origin, .. } = event
            && let Some(at) = origins.iter().position(|(key, _)| *key == (*conversation_id, *seq))
        {
            *origin = Some(origins.swap_remove(at).1);
        }
    }
    local.extend(duplicates);
    local
}

/// Stores one message inside `transaction` with the group commit's function, for a change that
/// writes a message with it (a transfer's note); returns its answer and, when it was newly stored,
/// its event, to publish after the commit.
pub(crate) async fn append_in(
    transaction: &tokio_postgres::Transaction<'_>,
    message: NewMessage,
) -> Result<(Appended, Vec<NodeEvent>), AppendError> {
    append_with_source_in(transaction, message, None).await
}

/// [`append_in`] for a bot message, with where it came from.
pub(crate) async fn append_with_source_in(
    transaction: &tokio_postgres::Transaction<'_>,
    message: NewMessage,
    bot_source: Option<BotSource>,
) -> Result<(Appended, Vec<NodeEvent>), AppendError> {
    let mut item = batch_item(message, clock::now_millis())?;
    item["bot_source"] = serde_json::to_value(bot_source).map_err(|error| StorageError::Corrupt(error.to_string()))?;
    let items = Value::Array(vec![item]);
    let row = transaction
        .query_one("SELECT kefu_append_batch($1::text::jsonb)::text", &[&items.to_string()])
        .await
        .map_err(postgres::database)?;
    let results: Vec<BatchOutcome> =
        serde_json::from_str(row.get(0)).map_err(|error| StorageError::Corrupt(error.to_string()))?;
    let events = committed_events(items, &results);
    let outcome =
        results.into_iter().next().ok_or_else(|| StorageError::Corrupt("an append returned no outcome".into()))?;
    Ok((outcome.into_answer()?, events))
}

/// One append's outcome, as `kefu_append_batch` returns it.
#[derive(Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum BatchOutcome {
    Stored {
        conversation_id: u64,
        seq: u64,
        created_at: i64,
        text: String,
        site: String,
        day: u32,
        lsn: u64,
        bot_active: bool,
        /// The conversation the message started, as it was before the message.
        created: Option<Box<Conversation>>,
    },
    Duplicate {
        conversation_id: u64,
        seq: u64,
        created_at: i64,
        text: String,
    },
    NotFound,
    Closed,
    AttachmentElsewhere,
}

impl BatchOutcome {
    fn into_answer(self) -> Result<Appended, AppendError> {
        match self {
            BatchOutcome::Stored { conversation_id, seq, created_at, text, .. } => {
                Ok(Appended { conversation_id, seq, created_at, text, duplicate: false })
            }
            BatchOutcome::Duplicate { conversation_id, seq, created_at, text } => {
                Ok(Appended { conversation_id, seq, created_at, text, duplicate: true })
            }
            BatchOutcome::NotFound => Err(AppendError::NotFound),
            BatchOutcome::Closed => Err(AppendError::Closed),
            BatchOutcome::AttachmentElsewhere => Err(AppendError::AttachmentElsewhere),
        }
    }
}

/// A message as one item of a batch (the fields `kefu_append_batch` reads).
fn batch_item(message: NewMessage, now: i64) -> Result<Value, AppendError> {
    let out_of_range = |what: &str| AppendError::Storage(StorageError::Server(format!("{what} is out of range")));
    // PostgreSQL's text and jsonb cannot hold U+0000, and one such item would fail its whole
    // batch: it is refused here, alone.
    let site = match &message.target {
        Target::VisitorInbox { site, .. } => site.as_str(),
        Target::Conversation(_) => "",
    };
    let upload_text =
        message.attachment.as_ref().map_or(String::new(), |upload| format!("{}{}", upload.name, upload.content_type));
    if [message.text.as_str(), message.sender.name.as_str(), site, upload_text.as_str()]
        .iter()
        .any(|text| text.contains('\0'))
    {
        return Err(AppendError::Storage(StorageError::Server(
            "the message was not stored: PostgreSQL cannot store the character U+0000".to_owned(),
        )));
    }
    let sender_id = i64::try_from(message.sender.id).map_err(|_| out_of_range("the sender id"))?;
    let (conversation_id, site, visitor_id) = match message.target {
        // An id PostgreSQL cannot hold names no conversation.
        Target::Conversation(id) => (Some(i64::try_from(id).map_err(|_| AppendError::NotFound)?), None, None),
        Target::VisitorInbox { site, visitor_id } => {
            (None, Some(site), Some(i64::try_from(visitor_id).map_err(|_| out_of_range("the visitor id"))?))
        }
    };
    let kind = match message.attachment.as_ref().map(|upload| upload.kind) {
        None => MessageKind::Text,
        Some(AttachmentKind::Image) => MessageKind::Image,
        Some(AttachmentKind::File) => MessageKind::File,
    };
    let upload_conversation = message.attachment.as_ref().and_then(|upload| upload.conversation_id);
    let attachment = message.attachment.map(|upload| AttachmentRef {
        id: upload.id,
        name: upload.name,
        size: upload.size,
        content_type: upload.content_type,
    });
    Ok(json!({
        "sender_kind": message.sender.kind.code(),
        "sender_id": sender_id,
        "sender_name": message.sender.name,
        "client_id": message.client_id,
        "text": message.text,
        "kind": kind.as_str(),
        "internal": message.internal,
        // Trace ids use all 64 bits; stored as the same bits in a signed column.
        "trace_id": message.trace_id as i64,
        "now": now,
        "day": clock::day_of(now),
        "conversation_id": conversation_id,
        "site": site,
        "visitor_id": visitor_id,
        "team": message.route_to_team.and_then(|team| i64::try_from(team).ok()),
        "upload_conversation": upload_conversation.and_then(|id| i64::try_from(id).ok()),
        "offline_message_id": message.offline_message_id,
        "attachment": attachment,
        "bot_source": Value::Null,
    }))
}

/// The epoch of the history this database holds (`appliance_meta`'s `epoch`): the appliance's
/// when `kefu migrate-to-postgres` copied one, so its clients' positions stay valid; otherwise
/// made by the first node that opens the database.
async fn database_epoch(client: &tokio_postgres::Client) -> Result<u64, PostgresError> {
    let made = i64::try_from(crate::storage::new_epoch()).unwrap_or(1);
    client
        .execute(
            "INSERT INTO appliance_meta (name, record) VALUES ('epoch', to_jsonb($1::bigint)) ON CONFLICT (name) DO NOTHING",
            &[&made],
        )
        .await?;
    let epoch: i64 = client
        .query_one("SELECT (record #>> '{}')::bigint FROM appliance_meta WHERE name = 'epoch'", &[])
        .await?
        .get(0);
    u64::try_from(epoch).map_err(|_| PostgresError::Invalid(format!("the database's epoch {epoch} is negative")))
}

impl MessageStore for PostgresMessages {
    async fn append(&self, mut message: NewMessage) -> Result<Appended, AppendError> {
        let origin = message.origin.take().map(|origin| (origin, message.client_id.clone()));
        let item = batch_item(message, clock::now_millis())?;
        let (answer, answered) = oneshot::channel();
        let stopped = || AppendError::Storage(StorageError::WriterStopped);
        let pending = PendingAppend { item, answer: Answer::Waiting(answer), origin };
        self.appends.send(pending).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    async fn send(
        &self,
        mut message: NewMessage,
        refused: impl FnOnce(AppendError) + Clone + Send + 'static,
    ) -> Result<(), StorageError> {
        if !self.outlet.delivers_locally() {
            // Its acknowledgement would have no way to its sender.
            refused(AppendError::Storage(StorageError::Server(
                "this node delivers to no connection (no local relay); send with append".into(),
            )));
            return Ok(());
        }
        let origin = message.origin.take().map(|origin| (origin, message.client_id.clone()));
        let item = match batch_item(message, clock::now_millis()) {
            Ok(item) => item,
            Err(error) => {
                refused(error);
                return Ok(());
            }
        };
        let pending = PendingAppend { item, answer: Answer::Detached(Box::new(refused)), origin };
        self.appends.send(pending).await.map_err(|_| StorageError::WriterStopped)
    }

    async fn page_before(&self, conversation_id: u64, before: Option<u64>, limit: usize) -> Result<Page, StorageError> {
        let Ok(conversation_id) = i64::try_from(conversation_id) else {
            return Ok(Vec::new());
        };
        let before = before.map_or(i64::MAX, |before| i64::try_from(before).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.readers.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                ),
                &[&conversation_id, &before, &limit],
            )
            .await
            .map_err(PostgresError::from)?;
        let mut page = rows.iter().map(message_of).collect::<Result<Page, PostgresError>>()?;
        page.reverse();
        Ok(page)
    }

    async fn page_after(&self, conversation_id: u64, after: u64, limit: usize) -> Result<Page, StorageError> {
        let (Ok(conversation_id), Ok(after)) = (i64::try_from(conversation_id), i64::try_from(after)) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.readers.client().await?;
        let rows = client
            .query(
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
                &[&conversation_id, &after, &limit],
            )
            .await
            .map_err(PostgresError::from)?;
        Ok(rows.iter().map(message_of).collect::<Result<Page, PostgresError>>()?)
    }

    async fn conversation(&self, conversation_id: u64) -> Result<Option<Conversation>, StorageError> {
        let Ok(id) = i64::try_from(conversation_id) else {
            return Ok(None);
        };
        let client = self.readers.client().await?;
        let row = client
            .query_opt(&format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"), &[&id])
            .await
            .map_err(PostgresError::from)?;
        Ok(row.as_ref().map(conversation_of).transpose()?)
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn changed_within(&self, window_millis: i64) -> Result<Vec<ConversationPosition>, StorageError> {
        // Open conversations only, through their partial index: no index on `updated_at`, which
        // every append changes and which would cost each append its in-place (HOT) update.
        let client = self.readers.client().await?;
        let rows = client
            .query(
                "SELECT id, last_seq, site FROM conversations
                 WHERE status <> 'closed' AND updated_at >= kefu_now_ms() - $1",
                &[&window_millis],
            )
            .await
            .map_err(PostgresError::from)?;
        let positions = rows
            .iter()
            .map(|row| {
                Ok(ConversationPosition {
                    conversation_id: unsigned(row.try_get(0)?)?,
                    last_seq: unsigned(row.try_get(1)?)?,
                    site: row.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, PostgresError>>()?;
        Ok(positions)
    }
}

/// The columns [`conversation_of`] reads, in its order.
pub(crate) const CONVERSATION_COLUMNS: &str = "id, site, visitor_id, status, assigned_agent, last_seq, created_at, \
                                               updated_at, closed_at, last_day, first_response_at, rating::text, team, \
                                               bot_active";

/// The columns [`message_of`] reads, in its order.
pub(crate) const MESSAGE_COLUMNS: &str = "seq, lsn, trace_id, created_at, sender_kind, sender_id, sender_name, kind, internal, \
                               client_id, text, attachment::text, bot_source::text, offline_message_id";

pub(crate) fn message_of(row: &Row) -> Result<(u64, MessageRecord), PostgresError> {
    let kind: String = row.try_get(7)?;
    let kind = match kind.as_str() {
        "text" => MessageKind::Text,
        "image" => MessageKind::Image,
        "file" => MessageKind::File,
        other => return Err(PostgresError::Corrupt(format!("unknown message kind {other:?}"))),
    };
    let record = MessageRecord {
        lsn: unsigned(row.try_get(1)?)?,
        trace_id: row.try_get::<_, i64>(2)? as u64,
        created_at: row.try_get(3)?,
        sender_kind: sender_kind_of(row.try_get(4)?)?,
        sender_id: unsigned(row.try_get(5)?)?,
        sender_name: row.try_get(6)?,
        kind,
        internal: row.try_get(8)?,
        client_id: row.try_get(9)?,
        text: row.try_get(10)?,
        attachment: json_column(row.try_get(11)?)?,
        bot_source: json_column(row.try_get(12)?)?,
        offline_message_id: row.try_get::<_, Option<i64>>(13)?.map(unsigned).transpose()?,
    };
    Ok((unsigned(row.try_get(0)?)?, record))
}

pub(crate) fn conversation_of(row: &Row) -> Result<Conversation, PostgresError> {
    let status: String = row.try_get(3)?;
    let status = match status.as_str() {
        "queued" => ConversationStatus::Queued,
        "assigned" => ConversationStatus::Assigned,
        "closed" => ConversationStatus::Closed,
        other => return Err(PostgresError::Corrupt(format!("unknown conversation status {other:?}"))),
    };
    let last_day: i32 = row.try_get(9)?;
    Ok(Conversation {
        id: unsigned(row.try_get(0)?)?,
        site: row.try_get(1)?,
        visitor_id: unsigned(row.try_get(2)?)?,
        status,
        assigned_agent: row.try_get::<_, Option<i64>>(4)?.map(unsigned).transpose()?,
        last_seq: unsigned(row.try_get(5)?)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
        closed_at: row.try_get(8)?,
        last_day: u32::try_from(last_day).map_err(|_| PostgresError::Corrupt(format!("day {last_day}")))?,
        first_response_at: row.try_get(10)?,
        rating: json_column::<Rating>(row.try_get(11)?)?,
        team: row.try_get::<_, Option<i64>>(12)?.map(unsigned).transpose()?,
        bot_active: row.try_get(13)?,
    })
}

pub(crate) fn unsigned(value: i64) -> Result<u64, PostgresError> {
    u64::try_from(value).map_err(|_| PostgresError::Corrupt(format!("negative id or count {value}")))
}

pub(crate) fn sender_kind_of(code: i16) -> Result<SenderKind, PostgresError> {
    [SenderKind::Visitor, SenderKind::Agent, SenderKind::Bot, SenderKind::System]
        .into_iter()
        .find(|kind| i16::from(kind.code()) == code)
        .ok_or_else(|| PostgresError::Corrupt(format!("unknown sender kind {code}")))
}

fn json_column<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>, PostgresError> {
    text.map(|text| serde_json::from_str(&text).map_err(|error| PostgresError::Corrupt(error.to_string()))).transpose()
}
