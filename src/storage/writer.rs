//! The single writer: group commit on a dedicated thread.
//!
//! Operations queue on a bounded channel. The writer takes the first, drains whatever else is
//! queued (up to `commit_max_batch`, waiting up to `commit_max_delay_us` for more), runs them all
//! in one write transaction and makes it durable: by appending it to the commit log, or, at a
//! checkpoint (and for a batch the log cannot replay), with a durable redb commit (see
//! [`super::commit_log`]). Only then does it publish the batch's events for delivery and answer
//! the callers. A batch made durable by the log stays in the open transaction, with the batches
//! after it, until a redb commit without a sync shows them to readers ([`super::visibility`]).
//! If any operation fails with a storage error the whole batch is aborted, every caller gets an
//! error, the answered batches of its transaction are applied again from their logged writes,
//! and the writer reloads its caches.
//!
//! **Invariant:** nothing but this thread opens a redb write transaction while the server runs.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::commit_log::{self, CommitLog, LoggedTransaction};
use super::dedup::Dedup;
use super::visibility::Visibility;
use super::{StorageError, tables};
use crate::base::config::StorageConfig;
use crate::base::metrics::METRICS;

/// Operations waiting for the writer. Large enough to absorb a burst of a few commits' worth
/// while the previous commit syncs; when full, senders wait, which is the backpressure.
const WRITER_QUEUE_CAPACITY: usize = 16_384;

/// How long the writer must have had nothing to do before it makes a checkpoint of a non-empty
/// commit log, so checkpoints fall in lulls rather than under load where it can.
const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_millis(500);

/// (conversation, day) pairs remembered by the writer; past this they are forgotten after a commit.
const CONVERSATION_DAYS_CACHE_LIMIT: usize = 100_000;

/// The process's exit status when acknowledged batches cannot be put back into the database
/// (`EX_IOERR`); the next start replays them from the commit log.
const EXIT_STORAGE_FAILED: i32 = 74;

/// What a finished operation reports to the writer: whether the batch may commit, and how to
/// answer the caller once the commit's outcome is known.
type Completion = Box<dyn FnOnce(Result<(), WriteFailure>) + Send>;
/// An operation as the writer runs it: called exactly once, to run in the batch or to be skipped.
type Job = Box<dyn FnOnce(JobInput<'_, '_>) -> (Result<(), WriteFailure>, Completion) + Send>;

/// Why a batch, and so every operation in it, was not stored. Cheap to clone: each caller of the
/// batch gets one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteFailure {
    /// An operation of the batch returned a storage error; the batch is rolled back.
    #[error("an operation of its batch failed: {0}")]
    OperationFailed(Arc<str>),
    #[error("an operation of its batch panicked: {0}")]
    OperationPanicked(Arc<str>),
    /// The batch could not begin (the caches could not be reloaded, or no write transaction began).
    #[error("the batch could not begin: {0}")]
    NotBegun(Arc<str>),
    /// Its webhook outbox, its cached state or the commit log could not be written.
    #[error("the batch could not be made durable: {0}")]
    NotDurable(Arc<str>),
    #[error("the storage writer stopped before running it")]
    WriterStopped,
}

/// What the writer gives a job.
enum JobInput<'c, 'a> {
    Run(&'c mut WriteContext<'a>),
    /// The job is not run (an earlier operation of its batch failed, the batch could not begin,
    /// or the writer stopped before it); its caller is told the reason.
    Skip(WriteFailure),
}

/// Skips `job`; the returned completion tells its caller `reason`, whatever it is called with.
fn skip(job: Job, reason: &WriteFailure) -> Completion {
    job(JobInput::Skip(reason.clone())).1
}

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
    Lead,
    /// The order of the events of `site_events_v1`, shared by all sites.
    SiteEvent,
    Email,
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
            Counter::Lead => "next_lead_id",
            Counter::SiteEvent => "next_site_event_id",
            Counter::Email => "next_email_id",
        }
    }

    const ALL: [Counter; 10] = [
        Counter::Conversation,
        Counter::Visitor,
        Counter::Agent,
        Counter::Lsn,
        Counter::OfflineMessage,
        Counter::WebhookDelivery,
        Counter::KbEntry,
        Counter::Lead,
        Counter::SiteEvent,
        Counter::Email,
    ];
}

/// What the writer keeps between batches. Rebuilt from the database after a failed batch.
pub struct WriterState {
    /// Next value of each counter; written to `meta_v1` with every batch that moved it.
    counters: HashMap<Counter, u64>,
    dirty_counters: HashSet<Counter>,
    pub dedup: Dedup,
    /// (conversation, day) pairs known to be in `conversation_days_v1`.
    conversation_days: HashSet<(u64, u32)>,
    /// The layers' own state, each made on first use (see [`WriterExtension`]).
    extensions: Vec<Box<dyn WriterExtension>>,
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
            dedup: Dedup::load(database)?,
            conversation_days: HashSet::new(),
            extensions: Vec::new(),
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
        for extension in &mut self.extensions {
            extension.flush(transaction)?;
        }
        Ok(())
    }

    fn trim_caches(&mut self) {
        if self.conversation_days.len() > CONVERSATION_DAYS_CACHE_LIMIT {
            self.conversation_days.clear();
        }
        for extension in &mut self.extensions {
            extension.trim();
        }
    }

    /// What the batch published, taken from every extension.
    fn take_published(&mut self) -> Vec<Published> {
        self.extensions.iter_mut().filter_map(|extension| extension.take_published()).collect()
    }
}

/// Something a batch published, of a type storage does not know; the layer that published it
/// takes it back from the `committed` channel given to [`crate::storage::Store::open`].
pub type Published = Box<dyn Any + Send>;

/// State a layer above storage keeps in the writer: caches that live between batches, or what a
/// batch publishes. Storage knows neither type. Each is made empty on first use in a batch
/// ([`WriteContext::extension`]) and dropped with the rest of the writer's caches when a batch
/// fails.
pub trait WriterExtension: Any + Send {
    /// Writes what the batch changed, at its end and in its transaction.
    fn flush(&mut self, _transaction: &LoggedTransaction<'_>) -> Result<(), StorageError> {
        Ok(())
    }

    /// Keeps caches bounded; called after each committed batch.
    fn trim(&mut self) {}

    /// What the batch published, taken once it is made durable (and dropped when it fails).
    fn take_published(&mut self) -> Option<Published> {
        None
    }
}

/// A step run after a batch's operations and before its commit, in its transaction: what must be
/// written in the same commit as the batch's events (the webhook outbox).
pub type BeforeCommit = fn(&mut WriteContext<'_>) -> Result<(), StorageError>;

/// What the layers above add to the writer, given to [`crate::storage::Store::open`].
#[derive(Clone, Default)]
pub struct WriterHooks {
    /// Run in order after each batch's operations, before it commits.
    pub before_commit: Vec<BeforeCommit>,
    /// Where what committed batches published goes, in commit order.
    pub committed: Option<mpsc::Sender<Published>>,
}

/// What an operation sees: the batch's transaction, the writer's caches, and the event list.
pub struct WriteContext<'a> {
    /// The batch's transaction; its writes are recorded for the commit log.
    pub transaction: &'a LoggedTransaction<'a>,
    state: &'a mut WriterState,
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

    pub fn dedup(&mut self) -> &mut Dedup {
        &mut self.state.dedup
    }

    /// The database epoch.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// The extension of type `T`, made empty if the batch has not used it yet.
    pub fn extension<T: WriterExtension + Default>(&mut self) -> &mut T {
        let wanted = TypeId::of::<T>();
        let index = match self.state.extensions.iter().position(|extension| (**extension).type_id() == wanted) {
            Some(index) => index,
            None => {
                self.state.extensions.push(Box::new(T::default()));
                self.state.extensions.len() - 1
            }
        };
        let extension: &mut dyn Any = self.state.extensions[index].as_mut();
        match extension.downcast_mut::<T>() {
            Some(extension) => extension,
            None => unreachable!("the extension at this index has the type it was found by"),
        }
    }

    /// Records that `conversation_id` has messages in the shard of `day`.
    pub fn note_conversation_day(&mut self, conversation_id: u64, day: u32) -> Result<(), StorageError> {
        if self.state.conversation_days.insert((conversation_id, day)) {
            let mut table = self.transaction.open_table(tables::CONVERSATION_DAYS)?;
            table.insert((conversation_id, day), ())?;
        }
        Ok(())
    }
}

/// The async side's handle on the writer thread.
pub struct WriterHandle {
    queue: mpsc::Sender<Command>,
    /// What readers wait on to see every answered batch.
    pub visibility: Arc<Visibility>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    #[cfg(test)]
    faults: Arc<InjectedFaults>,
}

/// Failures a test makes the writer meet where nothing outside it can cause them.
#[cfg(test)]
#[derive(Default)]
struct InjectedFaults {
    /// How many of the next write transactions fail to begin.
    begin_write: std::sync::atomic::AtomicU32,
    /// How many of the next reloads of the writer's caches fail.
    reload: std::sync::atomic::AtomicU32,
}

#[cfg(test)]
impl InjectedFaults {
    /// The injected failure, if one is pending (and counts it off).
    fn take(pending: &std::sync::atomic::AtomicU32) -> Result<(), StorageError> {
        use std::sync::atomic::Ordering::SeqCst;
        match pending.fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1)) {
            Ok(_) => Err(StorageError::Corrupt("a failure injected by the test".into())),
            Err(_) => Ok(()),
        }
    }
}

pub fn spawn(
    database: Arc<Database>,
    state: WriterState,
    config: StorageConfig,
    log: Option<CommitLog>,
    hooks: WriterHooks,
) -> Result<WriterHandle, StorageError> {
    let (queue, receiver) = mpsc::channel(WRITER_QUEUE_CAPACITY);
    let durability = DurabilityPlan {
        log,
        interval: Duration::from_secs(config.checkpoint_interval_secs),
        max_log_bytes: config.checkpoint_log_mib.saturating_mul(1024 * 1024),
        last_checkpoint: Instant::now(),
    };
    let visibility = Arc::new(Visibility::default());
    #[cfg(test)]
    let faults = Arc::new(InjectedFaults::default());
    let writer = Writer {
        database,
        state,
        durability,
        visibility: visibility.clone(),
        open: None,
        visibility_interval: Duration::from_micros(config.visibility_interval_us),
        last_batch: 0,
        state_stale: false,
        before_commit: hooks.before_commit,
        committed: hooks.committed,
        #[cfg(test)]
        faults: faults.clone(),
    };
    let thread =
        std::thread::Builder::new().name("kefu-writer".to_owned()).spawn(move || run(writer, &config, receiver))?;
    Ok(WriterHandle {
        queue,
        visibility,
        thread: parking_lot::Mutex::new(Some(thread)),
        #[cfg(test)]
        faults,
    })
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
            if let Err(error) = log.cut() {
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

    /// Whether a lull should be used for a checkpoint: the log holds batches (or has failed).
    fn wants_checkpoint_when_idle(&self) -> bool {
        self.log.as_ref().is_some_and(|log| !log.is_empty() || !log.is_usable())
    }
}

/// The write transaction that answered batches stay in until the redb commit that shows them to
/// readers ([`super::visibility`]).
struct OpenTransaction {
    transaction: WriteTransaction,
    /// The commit-log writes of each answered batch in it, to apply to a new transaction if this
    /// one has to be dropped.
    answered_writes: Vec<Vec<u8>>,
    began: Instant,
}

/// Commits a transaction without a sync: readers see it at once, and the commit log (or the next
/// durable commit) is what makes it durable.
fn commit_visible(mut transaction: WriteTransaction) -> Result<(), StorageError> {
    transaction.set_durability(Durability::None)?;
    Ok(transaction.commit()?)
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
        let job: Job = Box::new(move |input| {
            let context = match input {
                JobInput::Run(context) => context,
                JobInput::Skip(reason) => {
                    let error = StorageError::NotStored(reason.clone());
                    let completion: Completion = Box::new(move |_| {
                        let _ = answer.send(Err(E::from(error)));
                    });
                    return (Err(reason), completion);
                }
            };
            match catch_unwind(AssertUnwindSafe(|| operation(context))) {
                Ok(Ok(outcome)) => {
                    let completion: Completion = Box::new(move |committed| {
                        METRICS.ack_latency.observe_duration(submitted.elapsed());
                        let _ = answer.send(match committed {
                            Ok(()) => outcome,
                            Err(reason) => Err(E::from(StorageError::NotStored(reason))),
                        });
                    });
                    (Ok(()), completion)
                }
                Ok(Err(error)) => {
                    let reason = WriteFailure::OperationFailed(error.to_string().into());
                    let completion: Completion = Box::new(move |_| {
                        let _ = answer.send(Err(E::from(error)));
                    });
                    (Err(reason), completion)
                }
                Err(panic) => {
                    let message = panic_message(panic);
                    let reason = WriteFailure::OperationPanicked(message.as_str().into());
                    let completion: Completion = Box::new(move |_| {
                        let _ = answer.send(Err(E::from(StorageError::Panicked(message))));
                    });
                    (Err(reason), completion)
                }
            }
        });
        if self.queue.send(Command::Job(job)).await.is_err() {
            return Err(E::from(StorageError::WriterStopped));
        }
        answered.await.unwrap_or_else(|_| Err(E::from(StorageError::WriterStopped)))
    }

    /// Queues `operation` without waiting for its commit; `on_abort` runs if it is not stored (its
    /// batch fails, or the writer stops before running it).
    pub async fn submit_detached<F, A>(&self, operation: F, on_abort: A) -> Result<(), StorageError>
    where
        F: FnOnce(&mut WriteContext<'_>) -> Result<(), StorageError> + Send + 'static,
        A: FnOnce(WriteFailure) + Send + 'static,
    {
        let submitted = Instant::now();
        let job: Job = Box::new(move |input| {
            let context = match input {
                JobInput::Run(context) => context,
                JobInput::Skip(reason) => {
                    return (Err(reason.clone()), Box::new(move |_| on_abort(reason)) as Completion);
                }
            };
            let outcome = match catch_unwind(AssertUnwindSafe(|| operation(context))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(WriteFailure::OperationFailed(error.to_string().into())),
                Err(panic) => Err(WriteFailure::OperationPanicked(panic_message(panic).into())),
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

/// The writer thread's state across batches.
struct Writer {
    database: Arc<Database>,
    state: WriterState,
    durability: DurabilityPlan,
    visibility: Arc<Visibility>,
    /// Answered batches not yet committed to redb.
    open: Option<OpenTransaction>,
    /// How long answered batches may wait for their redb commit (zero: it comes before the
    /// answers).
    visibility_interval: Duration,
    /// The number of the last batch answered.
    last_batch: u64,
    /// Reloading `state` after a failed batch failed: it may hold that batch's changes, so the
    /// next batch reloads it first (and fails if it cannot).
    state_stale: bool,
    /// See [`WriterHooks`].
    before_commit: Vec<BeforeCommit>,
    committed: Option<mpsc::Sender<Published>>,
    #[cfg(test)]
    faults: Arc<InjectedFaults>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Answered batches in the open transaction are gone from redb but not from the log:
            // stop the way a crash does, so the next start replays them.
            tracing::error!("the storage writer panicked; stopping, so that the next start replays the commit log");
            std::process::exit(EXIT_STORAGE_FAILED);
        }
        self.visibility.release_readers();
    }
}

/// What the writer got while waiting for work.
enum Waited {
    Command(Option<Command>),
    /// Answered batches are due for their redb commit, or a reader waits for them.
    Publish,
    /// A lull long enough for a checkpoint.
    Lull,
}

impl Writer {
    fn wait(&self, waiter: &tokio::runtime::Runtime, receiver: &mut mpsc::Receiver<Command>) -> Waited {
        if let Some(open) = &self.open {
            let remaining = self.visibility_interval.saturating_sub(open.began.elapsed());
            return waiter.block_on(async {
                tokio::select! {
                    biased;
                    command = receiver.recv() => Waited::Command(command),
                    () = self.visibility.wake_writer.notified() => Waited::Publish,
                    () = tokio::time::sleep(remaining) => Waited::Publish,
                }
            });
        }
        if self.durability.wants_checkpoint_when_idle() {
            return match waiter.block_on(async { tokio::time::timeout(IDLE_CHECKPOINT_AFTER, receiver.recv()).await }) {
                Ok(command) => Waited::Command(command),
                Err(_) => Waited::Lull,
            };
        }
        Waited::Command(receiver.blocking_recv())
    }

    fn open_transaction(&mut self) -> Result<OpenTransaction, StorageError> {
        match self.open.take() {
            Some(open) => Ok(open),
            None => {
                #[cfg(test)]
                InjectedFaults::take(&self.faults.begin_write)?;
                Ok(OpenTransaction {
                    transaction: self.database.begin_write()?,
                    answered_writes: Vec::new(),
                    began: Instant::now(),
                })
            }
        }
    }

    /// Commits `open` (durably: a checkpoint), which shows every batch up to `last_batch` to
    /// readers. If the commit fails, its answered batches are applied again.
    fn commit_open(&mut self, open: OpenTransaction, durably: bool) -> Result<(), StorageError> {
        let committed = match durably {
            true => self.durability.commit_durably(open.transaction),
            false => commit_visible(open.transaction),
        };
        match committed {
            Ok(()) => self.visibility.committed(self.last_batch),
            Err(_) => self.restore_answered(open.answered_writes),
        }
        committed
    }

    /// Drops `open` after a failure in it, and applies its answered batches again.
    fn abandon(&mut self, open: OpenTransaction) {
        let _ = open.transaction.abort();
        self.restore_answered(open.answered_writes);
    }

    /// Commits the answered batches to redb, so readers see them.
    fn publish(&mut self) {
        let Some(open) = self.open.take() else { return };
        if let Err(error) = self.commit_open(open, false) {
            tracing::error!(%error, "committing answered batches failed; they were applied again");
        }
    }

    /// A checkpoint of whatever the log holds, in a lull or for a clean stop.
    fn checkpoint(&mut self) {
        if self.open.is_none() && !self.durability.wants_checkpoint_when_idle() {
            return;
        }
        let checkpoint = self.open_transaction().and_then(|open| self.commit_open(open, true));
        if let Err(error) = checkpoint {
            tracing::error!(%error, "checkpoint failed");
        }
    }

    /// The writer's caches, read again from the committed database.
    fn load_state(&self) -> Result<WriterState, StorageError> {
        #[cfg(test)]
        InjectedFaults::take(&self.faults.reload)?;
        WriterState::load(&self.database)
    }

    /// After the transaction holding answered batches was lost (a later batch failed in it, or
    /// its commit failed): applies their logged writes to a new transaction and commits it, then
    /// rebuilds the writer's caches from the database.
    fn restore_answered(&mut self, answered_writes: Vec<Vec<u8>>) {
        if !answered_writes.is_empty() {
            let restored = (|| -> Result<(), StorageError> {
                let transaction = self.database.begin_write()?;
                for writes in &answered_writes {
                    commit_log::apply_writes(&transaction, writes)?;
                }
                commit_visible(transaction)
            })();
            match restored {
                Ok(()) => self.visibility.committed(self.last_batch),
                Err(error) => {
                    // Reads would miss acknowledged writes from here on. Stop the way a crash
                    // does: the supervisor restarts kefu, and the start replays the log.
                    tracing::error!(
                        %error,
                        "acknowledged batches could not be put back into the database; stopping, so that the next \
                         start replays them from the commit log"
                    );
                    std::process::exit(EXIT_STORAGE_FAILED);
                }
            }
        }
        match self.load_state() {
            Ok(reloaded) => {
                self.state = reloaded;
                self.state_stale = false;
            }
            Err(error) => {
                // The caches may hold the failed batch's changes; no batch runs on them.
                tracing::error!(%error, "reloading the writer state failed; the next batch tries again");
                self.state_stale = true;
            }
        }
    }

    /// Runs a batch in the open transaction, makes it durable and answers it. The batch's redb
    /// commit comes before the answers when `visibility_interval` is zero or the batch needs a
    /// durable commit; otherwise before a later batch once the interval has passed or a reader
    /// waits for it, or when the writer finds nothing to do ([`Writer::wait`]).
    fn commit_batch(&mut self, batch: &mut Vec<Job>) {
        let started = Instant::now();
        let n_operations = batch.len();
        let mut completions: Vec<Completion> = Vec::with_capacity(n_operations);
        // The answered batches' commit is due, or a reader waits for them (it should not also
        // wait for this batch), or a checkpoint is (it should not wait for the checkpoint's sync).
        let checkpoint_due = self.durability.checkpoint_due();
        if self.open.as_ref().is_some_and(|open| {
            checkpoint_due || self.visibility.is_wanted() || open.began.elapsed() >= self.visibility_interval
        }) {
            self.publish();
        }
        let outcome: Result<(), WriteFailure> = (|| {
            if self.state_stale {
                // Only after `restore_answered`, which commits every answered batch, so the reload
                // sees them all.
                debug_assert!(self.open.is_none(), "the caches are reloaded with answered batches uncommitted");
                self.state = self.load_state().map_err(|error| WriteFailure::NotBegun(error.to_string().into()))?;
                self.state_stale = false;
            }
            let mut open = self.open_transaction().map_err(|error| WriteFailure::NotBegun(error.to_string().into()))?;
            let logged = LoggedTransaction::new(&open.transaction);
            let mut failure: Option<WriteFailure> = None;
            {
                let mut context = WriteContext {
                    transaction: &logged,
                    state: &mut self.state,
                    now: crate::base::clock::now_millis(),
                };
                // After a failure the rest of the batch is skipped, each operation told why.
                for job in batch.drain(..) {
                    if let Some(reason) = &failure {
                        completions.push(skip(job, reason));
                        continue;
                    }
                    let (job_outcome, completion) = job(JobInput::Run(&mut context));
                    completions.push(completion);
                    failure = job_outcome.err();
                }
                // What must be written in the same commit as the batch's events (the outboxes).
                for step in &self.before_commit {
                    if failure.is_some() {
                        break;
                    }
                    if let Err(error) = step(&mut context) {
                        failure = Some(WriteFailure::NotDurable(error.to_string().into()));
                    }
                }
                if failure.is_none() {
                    if let Err(error) = context.state.flush(&logged) {
                        failure = Some(WriteFailure::NotDurable(error.to_string().into()));
                    }
                }
            }
            let must_be_durable = logged.unloggable();
            let writes = logged.take_writes();
            drop(logged);
            if let Some(reason) = failure {
                self.abandon(open);
                return Err(reason);
            }
            let log = match self.durability.log.as_mut() {
                Some(log) if !must_be_durable && !checkpoint_due => log,
                _ => {
                    self.last_batch += 1;
                    return self
                        .commit_open(open, true)
                        .map_err(|error| WriteFailure::NotDurable(error.to_string().into()));
                }
            };
            if !writes.is_empty() {
                if let Err(error) = log.append(&writes) {
                    self.abandon(open);
                    return Err(WriteFailure::NotDurable(error.to_string().into()));
                }
            }
            // From here the batch is durable: if its transaction is lost, its logged writes are
            // applied again.
            open.answered_writes.push(writes);
            self.last_batch += 1;
            self.open = Some(open);
            if self.visibility_interval.is_zero() {
                self.publish();
            }
            Ok(())
        })();
        if outcome.is_ok() {
            self.visibility.answered(self.last_batch);
            self.state.trim_caches();
            METRICS.commit_batch_size.observe(n_operations as u64);
            METRICS.commit_duration.observe_duration(started.elapsed());
            tracing::trace!(n_operations, elapsed_us = started.elapsed().as_micros() as u64, "batch committed");
            for published in self.state.take_published() {
                self.dispatch(published);
            }
        } else if let Err(reason) = &outcome {
            // A batch that did not begin (the caches could not be reloaded, or no write
            // transaction began) still holds its jobs: none of them ran.
            completions.extend(batch.drain(..).map(|job| skip(job, reason)));
            drop(self.state.take_published());
            METRICS.commits_aborted.inc();
            tracing::error!(%reason, n_operations, "write batch aborted");
        }
        for completion in completions {
            completion(outcome.clone());
        }
    }

    /// Sends a batch's events for delivery. When the dispatcher's queue is full the writer waits
    /// for room, and commits the answered batches first: what it waits on may be reading.
    fn dispatch(&mut self, batch: Published) {
        let Some(committed) = self.committed.take() else { return };
        let sent = match committed.try_send(batch) {
            Err(mpsc::error::TrySendError::Full(batch)) => {
                self.publish();
                committed.blocking_send(batch).is_ok()
            }
            other => other.is_ok(),
        };
        if !sent {
            tracing::debug!("delivery has stopped; committed events dropped");
        }
        METRICS.dispatch_queue.set((committed.max_capacity() - committed.capacity()) as i64);
        self.committed = Some(committed);
    }
}

fn run(mut writer: Writer, config: &StorageConfig, mut receiver: mpsc::Receiver<Command>) {
    let max_batch = config.commit_max_batch.max(1);
    let max_delay = Duration::from_micros(config.commit_max_delay_us);
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch.min(4096));
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    // Only for waiting on the queue with a timeout, so a lull can be used for a checkpoint.
    let waiter = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a timer runtime starts");
    while shutdown.is_none() {
        match writer.wait(&waiter, &mut receiver) {
            Waited::Command(Some(Command::Job(job))) => batch.push(job),
            Waited::Command(Some(Command::Shutdown(done))) => shutdown = Some(done),
            Waited::Command(None) => break,
            Waited::Publish => {
                writer.publish();
                continue;
            }
            Waited::Lull => {
                writer.checkpoint();
                continue;
            }
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
            writer.commit_batch(&mut batch);
        }
    }
    receiver.close();
    // Operations queued behind the stop are not run; their callers hear so. `blocking_recv` also
    // waits for a send that had reserved its place before the close.
    let stopping = WriteFailure::WriterStopped;
    while let Some(command) = receiver.blocking_recv() {
        if let Command::Job(job) = command {
            skip(job, &stopping)(Err(stopping.clone()));
        }
    }
    // An error here is logged by the checkpoint; the next start replays the commit log.
    writer.checkpoint();
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
    tracing::debug!("storage writer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::delivery::CommittedEvent;
    use crate::chat::writes::ChatWrites;
    use crate::storage::{Store, read_meta};

    /// A store whose answered batches wait a minute for their redb commit unless a read asks.
    fn store_with_late_commits() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig { visibility_interval_us: 60_000_000, ..StorageConfig::default() };
        let store = Store::open(dir.path(), &config, WriterHooks::default()).unwrap();
        (dir, store)
    }

    async fn put_meta(store: &Store, key: &'static str, value: u64) -> Result<(), StorageError> {
        store
            .write(move |context: &mut WriteContext<'_>| {
                context.transaction.open_table(tables::META)?.insert(key, value)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn meta(store: &Store, key: &'static str) -> Option<u64> {
        store.read(move |transaction| read_meta(transaction, key)).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_sees_every_answered_write_before_its_commit_is_due() {
        let (_dir, store) = store_with_late_commits();
        for value in 1..=3 {
            put_meta(&store, "answered", value).await.unwrap();
            assert_eq!(meta(&store, "answered").await, Some(value));
        }
        store.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_batch_keeps_the_answered_batches_of_its_transaction() {
        let (_dir, store) = store_with_late_commits();
        put_meta(&store, "kept", 1).await.unwrap();
        let failed = store
            .write(|context: &mut WriteContext<'_>| -> Result<Result<(), StorageError>, StorageError> {
                context.transaction.open_table(tables::META)?.insert("lost", 2)?;
                Err(StorageError::Corrupt("refused by the test".into()))
            })
            .await;
        assert!(failed.is_err(), "the failing batch is answered with an error");
        assert_eq!(meta(&store, "kept").await, Some(1), "the batch answered before it stays");
        assert_eq!(meta(&store, "lost").await, None, "nothing of the failed batch is kept");
        put_meta(&store, "after", 3).await.unwrap();
        assert_eq!(meta(&store, "after").await, Some(3), "the writer goes on");
        store.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_does_not_wait_on_a_writer_stuck_behind_a_full_dispatch_queue() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig { visibility_interval_us: 60_000_000, ..StorageConfig::default() };
        let (committed, mut dispatched) = mpsc::channel(1);
        let store =
            Store::open(dir.path(), &config, WriterHooks { committed: Some(committed), ..WriterHooks::default() })
                .unwrap();
        let second_running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let write_with_event = |value: u64| {
            let store = store.clone();
            let running = second_running.clone();
            tokio::spawn(async move {
                store
                    .write(move |context: &mut WriteContext<'_>| -> Result<Result<(), StorageError>, StorageError> {
                        running.store(value == 2, std::sync::atomic::Ordering::Release);
                        context.transaction.open_table(tables::META)?.insert("dispatched", value)?;
                        let reader =
                            crate::protocol::ParticipantView { kind: crate::protocol::SenderKind::Agent, id: 1 };
                        context.publish(CommittedEvent::Read { conversation_id: 1, reader, seq: value });
                        Ok(Ok(()))
                    })
                    .await
            })
        };
        // The first batch fills the queue; the writer runs the second and waits for room.
        write_with_event(1).await.unwrap().unwrap();
        let second = write_with_event(2);
        while !second_running.load(std::sync::atomic::Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let read = tokio::time::timeout(Duration::from_secs(30), meta(&store, "dispatched")).await;
        assert_eq!(read.expect("the read is not stuck behind the writer"), Some(2));
        for _ in 0..2 {
            dispatched.recv().await.expect("both batches are dispatched");
        }
        second.await.unwrap().unwrap();
        store.shutdown().await;
    }

    /// Holds the writer inside an operation until the returned sender is dropped or sent to, so
    /// the operations queued meanwhile form the next batch together.
    async fn hold_writer(store: &Store) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (entered, entering) = oneshot::channel();
        let held = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(move |_: &mut WriteContext<'_>| -> Result<Result<(), StorageError>, StorageError> {
                        let _ = entered.send(());
                        let _ = released.recv();
                        Ok(Ok(()))
                    })
                    .await
                    .unwrap();
            }
        });
        entering.await.unwrap();
        (release, held)
    }

    /// Queues a detached `put_meta` whose abort reason, if any, arrives on the returned receiver.
    async fn put_meta_detached(store: &Store, key: &'static str, value: u64) -> oneshot::Receiver<WriteFailure> {
        let (aborted, abort_reason) = oneshot::channel();
        store
            .write_detached(
                move |context| {
                    context.transaction.open_table(tables::META)?.insert(key, value)?;
                    Ok(())
                },
                move |reason| {
                    let _ = aborted.send(reason);
                },
            )
            .await
            .unwrap();
        abort_reason
    }

    async fn wait_for_queue(store: &Store, queued: usize) {
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            while store.writer_queue_len() < queued {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        waited.await.expect("the operations reach the writer's queue");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_operations_after_a_failed_one_in_its_batch_are_told_they_were_not_stored() {
        // The three operations queued while the writer is held make one batch: the writer waits
        // up to 0.2 s for a third (a place counts in the queue's length once reserved, a moment
        // before the operation is in it).
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            visibility_interval_us: 60_000_000,
            commit_max_batch: 3,
            commit_max_delay_us: 200_000,
            ..StorageConfig::default()
        };
        let store = Store::open(dir.path(), &config, WriterHooks::default()).unwrap();
        let (release, held) = hold_writer(&store).await;
        let failing = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(|_: &mut WriteContext<'_>| -> Result<Result<(), StorageError>, StorageError> {
                        Err(StorageError::Corrupt("refused by the test".into()))
                    })
                    .await
            }
        });
        wait_for_queue(&store, 1).await;
        let detached = put_meta_detached(&store, "detached", 1).await;
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { put_meta(&store, "waiting", 2).await }
        });
        wait_for_queue(&store, 3).await;
        drop(release);
        held.await.unwrap();

        let failed = failing.await.unwrap().expect_err("the failing operation gets its own error");
        assert!(matches!(&failed, StorageError::Corrupt(reason) if reason == "refused by the test"), "{failed}");
        let reason = detached.await.expect("the detached operation hears that it was not stored");
        assert!(
            matches!(&reason, WriteFailure::OperationFailed(message) if message.contains("refused by the test")),
            "{reason}"
        );
        let answer = waiting.await.unwrap().expect_err("the waiting operation gets an error");
        assert!(
            matches!(&answer, StorageError::NotStored(WriteFailure::OperationFailed(message)) if message.contains("refused by the test")),
            "{answer}"
        );
        assert_eq!(meta(&store, "detached").await, None);
        assert_eq!(meta(&store, "waiting").await, None);
        put_meta(&store, "after", 3).await.unwrap();
        assert_eq!(meta(&store, "after").await, Some(3), "the writer goes on");
        store.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn operations_queued_behind_a_stop_are_told_the_writer_stopped() {
        let (_dir, store) = store_with_late_commits();
        let (release, held) = hold_writer(&store).await;
        let stopping = tokio::spawn({
            let store = store.clone();
            async move { store.shutdown().await }
        });
        wait_for_queue(&store, 1).await;
        let detached = put_meta_detached(&store, "behind_the_stop", 1).await;
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { put_meta(&store, "waiting_behind_the_stop", 2).await }
        });
        wait_for_queue(&store, 3).await;
        drop(release);
        held.await.unwrap();
        stopping.await.unwrap();
        let reason = detached.await.expect("the operation behind the stop hears of it");
        assert_eq!(reason, WriteFailure::WriterStopped);
        let answer = waiting.await.unwrap().expect_err("the waiting operation behind the stop gets an error");
        assert!(matches!(&answer, StorageError::NotStored(WriteFailure::WriterStopped)), "{answer}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_whose_transaction_cannot_begin_is_answered_with_the_reason() {
        let (_dir, store) = store_with_late_commits();
        store.inner.writer.faults.begin_write.store(1, std::sync::atomic::Ordering::SeqCst);
        let answer = put_meta(&store, "not_begun", 1).await.expect_err("the write is refused");
        assert!(
            matches!(&answer, StorageError::NotStored(WriteFailure::NotBegun(message)) if message.contains("injected")),
            "{answer}"
        );
        let mut detached = put_meta_detached(&store, "not_begun_detached", 2).await;
        put_meta(&store, "after", 3).await.unwrap();
        assert!(detached.try_recv().is_err(), "with no fault left, the detached write is stored");
        assert_eq!(meta(&store, "not_begun").await, None);
        assert_eq!(meta(&store, "not_begun_detached").await, Some(2));
        store.shutdown().await;
    }

    /// Appends a visitor's message to their open conversation (a new one the first time).
    async fn visitor_says(store: &Store, client_id: &str) -> Result<crate::chat::messages::Appended, StorageError> {
        let new_message = crate::chat::messages::NewMessage::text(
            crate::chat::messages::Target::VisitorInbox { site: "site".into(), visitor_id: 7 },
            crate::protocol::SenderView { kind: crate::protocol::SenderKind::Visitor, id: 7, name: "visitor".into() },
            client_id.to_owned(),
            "hello".into(),
        );
        store
            .write(move |context| crate::chat::messages::append(context, new_message))
            .await
            .map_err(|error| StorageError::Corrupt(error.to_string()))
    }

    /// A batch that moves a conversation's sequence in the writer's cache, then fails.
    async fn bump_sequence_then_fail(store: &Store, conversation_id: u64) {
        let failed = store
            .write(move |context: &mut WriteContext<'_>| -> Result<Result<(), StorageError>, StorageError> {
                context.conversation_mut(conversation_id)?.expect("the conversation exists").last_seq += 1;
                Err(StorageError::Corrupt("refused by the test".into()))
            })
            .await;
        assert!(failed.is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_batch_leaves_no_change_in_the_caches_even_when_their_reload_fails() {
        let (_dir, store) = store_with_late_commits();
        let first = visitor_says(&store, "first").await.unwrap();
        assert_eq!(first.seq, 1);

        // The reload after the failed batch fails: the next batch reloads first.
        store.inner.writer.faults.reload.store(1, std::sync::atomic::Ordering::SeqCst);
        bump_sequence_then_fail(&store, first.conversation_id).await;
        let second = visitor_says(&store, "second").await.unwrap();
        assert_eq!(second.seq, 2, "the failed batch's sequence change is gone");

        // The next batch's reload fails too: that batch is refused, the one after it runs.
        store.inner.writer.faults.reload.store(2, std::sync::atomic::Ordering::SeqCst);
        bump_sequence_then_fail(&store, first.conversation_id).await;
        let refused = visitor_says(&store, "refused").await.expect_err("a batch on caches not reloaded is refused");
        assert!(refused.to_string().contains("injected"), "{refused}");
        let third = visitor_says(&store, "third").await.unwrap();
        assert_eq!(third.seq, 3, "neither the failed nor the refused batch took a sequence");
        store.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn answered_writes_not_yet_visible_survive_a_restart() {
        let (dir, store) = store_with_late_commits();
        put_meta(&store, "before_stop", 5).await.unwrap();
        store.shutdown().await;
        drop(store);
        let reopened = Store::open(dir.path(), &StorageConfig::default(), WriterHooks::default()).unwrap();
        assert_eq!(meta(&reopened, "before_stop").await, Some(5));
        reopened.shutdown().await;
    }
}
