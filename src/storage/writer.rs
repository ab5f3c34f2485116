//! The single writer: group commit on a dedicated thread.
//!
//! Operations queue on a bounded channel. The writer takes the first, drains whatever else is
//! queued (up to `commit_max_batch`, waiting up to `commit_max_delay_us` for more), runs them all
//! in one write transaction and makes it durable: by appending it to the commit log and
//! committing it to redb without a sync, or, at a checkpoint (and for a batch the log cannot
//! replay), with a durable redb commit (see [`super::commit_log`]). Only then does it publish the
//! batch's events for delivery and answer the callers. If any operation fails with a storage error
//! the whole batch is aborted, every caller gets an error and the writer reloads its caches.
//!
//! **Invariant:** nothing but this thread opens a redb write transaction while the server runs.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::commit_log::{self, CommitLog, LoggedTransaction};
use super::dedup::Dedup;
use super::{StorageError, decode_json, encode_json, tables};
use crate::config::StorageConfig;
use crate::conversations::Conversation;
use crate::delivery::{CommittedBatch, CommittedEvent};
use crate::metrics::METRICS;

/// Operations waiting for the writer. Large enough to absorb a burst of a few commits' worth
/// while the previous commit syncs; when full, senders wait, which is the backpressure.
const WRITER_QUEUE_CAPACITY: usize = 16_384;

/// How long the writer must have had nothing to do before it makes a checkpoint of a non-empty
/// commit log, so checkpoints fall in lulls rather than under load where it can.
const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_millis(500);

/// Conversations kept decoded in the writer; past this the clean ones are dropped after a commit.
const CONVERSATION_CACHE_LIMIT: usize = 100_000;

/// What a finished operation reports to the writer: whether the batch may commit, and how to
/// answer the caller once the commit's outcome is known.
type Completion = Box<dyn FnOnce(Result<(), Arc<str>>) + Send>;
type Job = Box<dyn FnOnce(&mut WriteContext<'_>) -> (Result<(), Arc<str>>, Completion) + Send>;

enum Command {
    Job(Job),
    Shutdown(oneshot::Sender<()>),
}

/// The counters the writer allocates ids from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    Conversation,
    Visitor,
    Agent,
    /// The global commit order of messages (log sequence number).
    Lsn,
    OfflineMessage,
    WebhookDelivery,
    KbEntry,
}

impl Counter {
    fn meta_key(self) -> &'static str {
        match self {
            Counter::Conversation => "next_conversation_id",
            Counter::Visitor => "next_visitor_id",
            Counter::Agent => "next_agent_id",
            Counter::Lsn => "next_lsn",
            Counter::OfflineMessage => "next_offline_message_id",
            Counter::WebhookDelivery => "next_webhook_delivery_id",
            Counter::KbEntry => "next_kb_entry_id",
        }
    }

    const ALL: [Counter; 7] = [
        Counter::Conversation,
        Counter::Visitor,
        Counter::Agent,
        Counter::Lsn,
        Counter::OfflineMessage,
        Counter::WebhookDelivery,
        Counter::KbEntry,
    ];
}

/// What the writer keeps between batches. Rebuilt from the database after a failed batch.
pub struct WriterState {
    /// Next value of each counter; written to `meta_v1` with every batch that moved it.
    counters: HashMap<Counter, u64>,
    dirty_counters: HashSet<Counter>,
    /// Decoded conversations, so a message does not decode and re-encode its conversation.
    conversations: HashMap<u64, Conversation>,
    /// Conversations changed in this batch; written once at its end.
    dirty_conversations: HashSet<u64>,
    pub dedup: Dedup,
    /// (conversation, day) pairs known to be in `conversation_days_v1`.
    conversation_days: HashSet<(u64, u32)>,
    /// Every webhook, loaded on first use and dropped when one changes.
    webhooks: Option<Vec<crate::webhooks::Webhook>>,
    /// The database epoch (see `Store::epoch`), for views built inside operations.
    epoch: u64,
}

impl WriterState {
    pub fn load(database: &Database) -> Result<WriterState, StorageError> {
        let transaction = database.begin_read()?;
        let meta = transaction.open_table(tables::META)?;
        let mut counters = HashMap::new();
        for counter in Counter::ALL {
            let next = meta.get(counter.meta_key())?.map(|value| value.value()).unwrap_or(1);
            counters.insert(counter, next);
        }
        Ok(WriterState {
            counters,
            dirty_counters: HashSet::new(),
            conversations: HashMap::new(),
            dirty_conversations: HashSet::new(),
            dedup: Dedup::load(database)?,
            conversation_days: HashSet::new(),
            webhooks: None,
            epoch: meta.get("epoch")?.map(|value| value.value()).unwrap_or(0),
        })
    }

    fn flush(&mut self, transaction: &LoggedTransaction<'_>) -> Result<(), StorageError> {
        if !self.dirty_counters.is_empty() {
            let mut meta = transaction.open_table(tables::META)?;
            for counter in self.dirty_counters.drain() {
                meta.insert(counter.meta_key(), self.counters[&counter])?;
            }
        }
        if !self.dirty_conversations.is_empty() {
            let mut table = transaction.open_table(tables::CONVERSATIONS)?;
            for id in self.dirty_conversations.drain() {
                if let Some(conversation) = self.conversations.get(&id) {
                    table.insert(id, encode_json(conversation).as_slice())?;
                }
            }
        }
        Ok(())
    }

    fn trim_caches(&mut self) {
        if self.conversations.len() > CONVERSATION_CACHE_LIMIT {
            self.conversations.clear();
        }
        if self.conversation_days.len() > CONVERSATION_CACHE_LIMIT {
            self.conversation_days.clear();
        }
    }
}

/// What an operation sees: the batch's transaction, the writer's caches, and the event list.
pub struct WriteContext<'a> {
    /// The batch's transaction; its writes are recorded for the commit log.
    pub transaction: &'a LoggedTransaction<'a>,
    state: &'a mut WriterState,
    events: &'a mut Vec<CommittedEvent>,
    /// The time the batch started, in Unix milliseconds; all its records carry it.
    pub now: i64,
}

impl WriteContext<'_> {
    /// Allocates the next value of a counter.
    pub fn next_id(&mut self, counter: Counter) -> u64 {
        let next = self.state.counters.entry(counter).or_insert(1);
        let id = *next;
        *next += 1;
        self.state.dirty_counters.insert(counter);
        id
    }

    /// Publishes `event` for delivery once the batch is committed.
    pub fn publish(&mut self, event: CommittedEvent) {
        self.events.push(event);
    }

    pub fn dedup(&mut self) -> &mut Dedup {
        &mut self.state.dedup
    }

    /// A conversation, from the cache or the database.
    pub fn conversation(&mut self, id: u64) -> Result<Option<&Conversation>, StorageError> {
        self.load_conversation(id)?;
        Ok(self.state.conversations.get(&id))
    }

    /// A conversation to change; it is written back at the end of the batch.
    pub fn conversation_mut(&mut self, id: u64) -> Result<Option<&mut Conversation>, StorageError> {
        self.load_conversation(id)?;
        if self.state.conversations.contains_key(&id) {
            self.state.dirty_conversations.insert(id);
        }
        Ok(self.state.conversations.get_mut(&id))
    }

    /// Stores a new conversation (written at the end of the batch).
    pub fn insert_conversation(&mut self, conversation: Conversation) {
        self.state.dirty_conversations.insert(conversation.id);
        self.state.conversations.insert(conversation.id, conversation);
    }

    /// The database epoch.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// The events this batch has published so far.
    pub fn published(&self) -> &[CommittedEvent] {
        self.events
    }

    /// Every webhook (cached across batches).
    pub fn webhooks(&mut self) -> Result<&[crate::webhooks::Webhook], StorageError> {
        if self.state.webhooks.is_none() {
            let table = self.transaction.open_table(tables::WEBHOOKS)?;
            let mut loaded = Vec::new();
            for entry in table.iter()? {
                loaded.push(decode_json(entry?.1.value())?);
            }
            self.state.webhooks = Some(loaded);
        }
        Ok(self.state.webhooks.as_deref().unwrap_or_default())
    }

    /// Forgets the cached webhooks; operations that change webhooks call it.
    pub fn invalidate_webhooks(&mut self) {
        self.state.webhooks = None;
    }

    /// Records that `conversation_id` has messages in the shard of `day`.
    pub fn note_conversation_day(&mut self, conversation_id: u64, day: u32) -> Result<(), StorageError> {
        if self.state.conversation_days.insert((conversation_id, day)) {
            let mut table = self.transaction.open_table(tables::CONVERSATION_DAYS)?;
            table.insert((conversation_id, day), ())?;
        }
        Ok(())
    }

    fn load_conversation(&mut self, id: u64) -> Result<(), StorageError> {
        if self.state.conversations.contains_key(&id) {
            return Ok(());
        }
        let table = self.transaction.open_table(tables::CONVERSATIONS)?;
        let found = table.get(id)?.map(|value| decode_json::<Conversation>(value.value())).transpose()?;
        drop(table);
        if let Some(conversation) = found {
            self.state.conversations.insert(id, conversation);
        }
        Ok(())
    }
}

/// The async side's handle on the writer thread.
pub struct WriterHandle {
    queue: mpsc::Sender<Command>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

pub fn spawn(
    database: Arc<Database>,
    state: WriterState,
    config: StorageConfig,
    log: Option<CommitLog>,
    committed: Option<mpsc::Sender<CommittedBatch>>,
) -> Result<WriterHandle, StorageError> {
    let (queue, receiver) = mpsc::channel(WRITER_QUEUE_CAPACITY);
    let durability = DurabilityPlan {
        log,
        interval: Duration::from_secs(config.checkpoint_interval_secs),
        max_log_bytes: config.checkpoint_log_mib.saturating_mul(1024 * 1024),
        last_checkpoint: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name("kefu-writer".to_owned())
        .spawn(move || run(database, state, config, durability, receiver, committed))?;
    Ok(WriterHandle { queue, thread: parking_lot::Mutex::new(Some(thread)) })
}

/// How the writer makes batches durable: through the commit log when it has one, with a
/// durable redb commit (a checkpoint) when the log is due to be emptied.
struct DurabilityPlan {
    /// `None`: every batch is a durable redb commit.
    log: Option<CommitLog>,
    interval: Duration,
    max_log_bytes: u64,
    last_checkpoint: Instant,
}

impl DurabilityPlan {
    fn checkpoint_due(&self) -> bool {
        self.log.as_ref().is_some_and(|log| {
            !log.is_usable()
                || (!log.is_empty()
                    && (log.len() >= self.max_log_bytes || self.last_checkpoint.elapsed() >= self.interval))
        })
    }

    /// Commits `transaction` durably, which makes every record in the log redundant, then
    /// empties the log.
    fn commit_durably(&mut self, mut transaction: WriteTransaction) -> Result<(), StorageError> {
        if let Some(log) = &self.log {
            transaction.open_table(tables::META)?.insert(commit_log::SEQUENCE_KEY, log.sequence())?;
        }
        transaction.set_durability(Durability::Immediate)?;
        let started = Instant::now();
        transaction.commit()?;
        if let Some(log) = &mut self.log {
            let log_bytes = log.len();
            if let Err(error) = log.truncate() {
                // The records stay, and replay skips them: they are older than the commit.
                tracing::warn!(%error, "emptying the commit log failed");
            }
            if log_bytes > 0 {
                METRICS.checkpoints.inc();
                tracing::debug!(log_bytes, elapsed_us = started.elapsed().as_micros() as u64, "checkpoint");
            }
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Makes a batch durable: through the log, or with a durable commit when the batch cannot be
    /// replayed from the log, a checkpoint is due, or the writer is stopping.
    fn commit(
        &mut self,
        transaction: WriteTransaction,
        writes: Vec<u8>,
        must_be_durable: bool,
    ) -> Result<(), StorageError> {
        let durable = must_be_durable || self.checkpoint_due();
        let log = match &mut self.log {
            Some(log) if !durable => log,
            _ => return self.commit_durably(transaction),
        };
        if !writes.is_empty() {
            log.append(&writes)?;
        }
        let committed = (|| -> Result<(), StorageError> {
            let mut transaction = transaction;
            transaction.set_durability(Durability::None)?;
            Ok(transaction.commit()?)
        })();
        if let Err(error) = committed {
            if !writes.is_empty() {
                log.remove_last(&writes);
            }
            return Err(error);
        }
        Ok(())
    }

    /// Whether a lull should be used for a checkpoint: the log holds batches (or has failed).
    fn wants_checkpoint_when_idle(&self) -> bool {
        self.log.as_ref().is_some_and(|log| !log.is_empty() || !log.is_usable())
    }

    /// A checkpoint of whatever the log holds, in a lull or for a clean stop.
    fn checkpoint(&mut self, database: &Database) -> Result<(), StorageError> {
        if self.wants_checkpoint_when_idle() {
            self.commit_durably(database.begin_write()?)?;
        }
        Ok(())
    }
}

impl WriterHandle {
    pub async fn submit<R, E, F>(&self, operation: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&mut WriteContext<'_>) -> Result<Result<R, E>, StorageError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<R, E>>();
        let submitted = Instant::now();
        let job: Job = Box::new(move |context| match catch_unwind(AssertUnwindSafe(|| operation(context))) {
            Ok(Ok(outcome)) => {
                let completion: Completion = Box::new(move |committed| {
                    METRICS.ack_latency.observe_duration(submitted.elapsed());
                    let _ = answer.send(match committed {
                        Ok(()) => outcome,
                        Err(reason) => Err(E::from(StorageError::Panicked(reason.to_string()))),
                    });
                });
                (Ok(()), completion)
            }
            Ok(Err(error)) => {
                let reason: Arc<str> = error.to_string().into();
                let completion: Completion = Box::new(move |_| {
                    let _ = answer.send(Err(E::from(error)));
                });
                (Err(reason), completion)
            }
            Err(panic) => {
                let reason: Arc<str> = panic_message(panic).into();
                let message = reason.to_string();
                let completion: Completion = Box::new(move |_| {
                    let _ = answer.send(Err(E::from(StorageError::Panicked(message))));
                });
                (Err(reason), completion)
            }
        });
        if self.queue.send(Command::Job(job)).await.is_err() {
            return Err(E::from(StorageError::WriterStopped));
        }
        answered.await.unwrap_or_else(|_| Err(E::from(StorageError::WriterStopped)))
    }

    /// Queues `operation` without waiting for its commit; `on_abort` runs if its batch fails.
    pub async fn submit_detached<F, A>(&self, operation: F, on_abort: A) -> Result<(), StorageError>
    where
        F: FnOnce(&mut WriteContext<'_>) -> Result<(), StorageError> + Send + 'static,
        A: FnOnce(Arc<str>) + Send + 'static,
    {
        let submitted = Instant::now();
        let job: Job = Box::new(move |context| {
            let outcome = match catch_unwind(AssertUnwindSafe(|| operation(context))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string().into()),
                Err(panic) => Err(panic_message(panic).into()),
            };
            let completion: Completion = Box::new(move |committed| {
                METRICS.ack_latency.observe_duration(submitted.elapsed());
                if let Err(reason) = committed {
                    on_abort(reason);
                }
            });
            (outcome, completion)
        });
        self.queue.send(Command::Job(job)).await.map_err(|_| StorageError::WriterStopped)
    }

    /// Operations waiting in the writer's queue.
    pub fn queue_len(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.queue.send(Command::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "write operation panicked".to_owned())
}

fn run(
    database: Arc<Database>,
    mut state: WriterState,
    config: StorageConfig,
    mut durability: DurabilityPlan,
    mut receiver: mpsc::Receiver<Command>,
    committed: Option<mpsc::Sender<CommittedBatch>>,
) {
    let max_batch = config.commit_max_batch.max(1);
    let max_delay = Duration::from_micros(config.commit_max_delay_us);
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch.min(4096));
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    // Only for waiting on the queue with a timeout, so a lull can be used for a checkpoint.
    let waiter = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a timer runtime starts");
    while shutdown.is_none() {
        let next = if durability.wants_checkpoint_when_idle() {
            match waiter.block_on(async { tokio::time::timeout(IDLE_CHECKPOINT_AFTER, receiver.recv()).await }) {
                Ok(next) => next,
                Err(_) => {
                    if let Err(error) = durability.checkpoint(&database) {
                        tracing::error!(%error, "checkpoint failed");
                    }
                    continue;
                }
            }
        } else {
            receiver.blocking_recv()
        };
        match next {
            Some(Command::Job(job)) => batch.push(job),
            Some(Command::Shutdown(done)) => shutdown = Some(done),
            None => break,
        }
        let deadline = Instant::now() + max_delay;
        loop {
            while batch.len() < max_batch && shutdown.is_none() {
                match receiver.try_recv() {
                    Ok(Command::Job(job)) => batch.push(job),
                    Ok(Command::Shutdown(done)) => shutdown = Some(done),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if batch.len() >= max_batch || shutdown.is_some() || now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_micros(100)));
        }
        if !batch.is_empty() {
            commit_batch(&database, &mut state, &mut durability, &mut batch, committed.as_ref());
        }
    }
    receiver.close();
    if let Err(error) = durability.checkpoint(&database) {
        tracing::error!(%error, "the checkpoint at stop failed; the next start replays the commit log");
    }
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
    tracing::debug!("storage writer stopped");
}

fn commit_batch(
    database: &Database,
    state: &mut WriterState,
    durability: &mut DurabilityPlan,
    batch: &mut Vec<Job>,
    committed: Option<&mpsc::Sender<CommittedBatch>>,
) {
    let started = Instant::now();
    let n_operations = batch.len();
    let mut events = Vec::new();
    let mut completions: Vec<Completion> = Vec::with_capacity(n_operations);
    let outcome: Result<(), Arc<str>> = (|| {
        let transaction = database.begin_write().map_err(|error| Arc::from(error.to_string()))?;
        let logged = LoggedTransaction::new(&transaction);
        let mut failure: Option<Arc<str>> = None;
        {
            let mut context =
                WriteContext { transaction: &logged, state, events: &mut events, now: crate::clock::now_millis() };
            for job in batch.drain(..) {
                let (job_outcome, completion) = job(&mut context);
                completions.push(completion);
                if let Err(reason) = job_outcome {
                    failure = Some(reason);
                    break;
                }
            }
            // Webhook deliveries of this batch's events go into the outbox in the same commit.
            if failure.is_none() {
                if let Err(error) = crate::webhooks::record_deliveries(&mut context) {
                    failure = Some(error.to_string().into());
                }
            }
            if failure.is_none() {
                if let Err(error) = context.state.flush(&logged) {
                    failure = Some(error.to_string().into());
                }
            }
        }
        if let Some(reason) = failure {
            drop(logged);
            let _ = transaction.abort();
            return Err(reason);
        }
        let must_be_durable = logged.unloggable();
        let writes = logged.take_writes();
        drop(logged);
        durability.commit(transaction, writes, must_be_durable).map_err(|error| Arc::from(error.to_string()))
    })();
    batch.clear();
    match &outcome {
        Ok(()) => {
            state.trim_caches();
            METRICS.commit_batch_size.observe(n_operations as u64);
            METRICS.commit_duration.observe_duration(started.elapsed());
            tracing::trace!(n_operations, elapsed_us = started.elapsed().as_micros() as u64, "batch committed");
            if let Some(committed) = committed {
                if !events.is_empty() && committed.blocking_send(CommittedBatch(events)).is_err() {
                    tracing::debug!("delivery has stopped; committed events dropped");
                }
                METRICS.dispatch_queue.set((committed.max_capacity() - committed.capacity()) as i64);
            }
        }
        Err(reason) => {
            METRICS.commits_aborted.inc();
            tracing::error!(%reason, n_operations, "write batch aborted");
            match WriterState::load(database) {
                Ok(reloaded) => *state = reloaded,
                Err(error) => tracing::error!(%error, "reloading the writer state failed"),
            }
        }
    }
    for completion in completions {
        completion(outcome.clone());
    }
}
