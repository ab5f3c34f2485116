//! The indexer thread: the only owner of the `IndexWriter`.
//!
//! It takes committed messages from the dispatcher's bounded queue, adds them in lsn order, and
//! commits when the oldest message not yet committed has waited [`COMMIT_DELAY`], with the
//! payload `{"lsn": N, "day": D}`: the highest lsn indexed and the newest day shard it came from.
//! Each commit writes a new segment (and later merges), a cost that does not depend on how many
//! messages it holds, so the longer the delay the fewer segments per message, at the price of
//! freshness (figures in docs/bench-log/2026-12-06-cost.md). When it sees a gap in the lsns (a queue item dropped
//! because the queue was full, a crash, a deleted index) it catches up from redb: it notes the
//! highest committed lsn, scans the day shards from the day before `D` on, in bounded chunks
//! each in its own read transaction, and adds every message above its lsn and up to that mark.
//! Messages committed after the mark come through the queue (or another catch-up).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument, Term};
use tokio::sync::watch;

use super::{Fields, IndexCommand, SearchError};
use crate::chat::conversations;
use crate::chat::messages::{self, MessageRecord};
use crate::protocol::SenderKind;
use crate::storage::{StorageError, Store, read_meta};

/// The longest an added message waits for the commit that makes it searchable. Deletions
/// (retention, erasure) and shutdown commit at once.
pub const COMMIT_DELAY: Duration = Duration::from_secs(3);

/// The writer's memory budget; past it, tantivy writes a segment (not yet a commit).
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// Messages read per read transaction while catching up.
const CATCH_UP_CHUNK: usize = 8_192;

/// Conversations whose site and visitor are kept in memory (they never change).
const CONVERSATION_CACHE_LIMIT: usize = 100_000;

/// What a commit records.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Payload {
    lsn: u64,
    day: u32,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ReindexReport {
    pub messages: u64,
    pub elapsed_ms: u64,
}

pub(crate) struct Indexer {
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
    store: Store,
    lagging: Arc<AtomicBool>,
    indexed: watch::Sender<u64>,
    /// The highest lsn added (committed or not).
    last_lsn: u64,
    /// The newest day shard a message was added from.
    last_day: u32,
    /// When the oldest change not yet committed was made (`None`: nothing to commit).
    pending_since: Option<Instant>,
    /// Conversation id → (site, visitor id).
    conversations: HashMap<u64, (Arc<str>, u64)>,
}

pub fn sender_kind_name(kind: SenderKind) -> &'static str {
    match kind {
        SenderKind::Visitor => "visitor",
        SenderKind::Agent => "agent",
        SenderKind::Bot => "bot",
        SenderKind::System => "system",
    }
}

impl Indexer {
    pub(crate) fn new(
        index: &Index,
        reader: IndexReader,
        fields: Fields,
        store: Store,
        lagging: Arc<AtomicBool>,
        indexed: watch::Sender<u64>,
    ) -> Result<Indexer, SearchError> {
        let payload = committed_position(index)?;
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
        indexed.send_replace(payload.lsn);
        Ok(Indexer {
            writer,
            reader,
            fields,
            store,
            lagging,
            indexed,
            last_lsn: payload.lsn,
            last_day: payload.day,
            pending_since: None,
            conversations: HashMap::new(),
        })
    }

    /// Drops what was added since the last commit and goes back to the committed position, so a
    /// failed catch-up leaves no half-added messages that a later one would add again; the next
    /// round catches up from there.
    fn discard_uncommitted(&mut self) {
        let restored =
            self.writer.rollback().map_err(SearchError::from).and_then(|_| committed_position(self.writer.index()));
        match restored {
            Ok(position) => {
                self.last_lsn = position.lsn;
                self.last_day = position.day;
                self.pending_since = None;
                self.lagging.store(true, Ordering::Relaxed);
            }
            Err(error) => tracing::error!(%error, "discarding the search index's uncommitted changes failed"),
        }
    }

    pub(crate) fn run(mut self, receiver: Receiver<IndexCommand>) {
        self.catch_up_logged();
        self.commit_logged();
        loop {
            let wait = self.pending_since.map_or(COMMIT_DELAY, |since| COMMIT_DELAY.saturating_sub(since.elapsed()));
            match receiver.recv_timeout(wait) {
                Ok(IndexCommand::Message { conversation_id, seq, day, record }) => {
                    if let Err(error) = self.take(conversation_id, seq, day, &record) {
                        tracing::error!(%error, "indexing a message failed");
                        self.discard_uncommitted();
                    }
                }
                Ok(IndexCommand::Delete { day, site, done }) => {
                    let outcome = self.delete(day, site).and_then(|()| self.commit());
                    let _ = done.send(outcome.map_err(|error| error.to_string()));
                }
                Ok(IndexCommand::DeleteVisitor { visitor_id, done }) => {
                    self.writer.delete_term(Term::from_field_u64(self.fields.visitor_id, visitor_id));
                    self.changed();
                    let _ = done.send(self.commit().map_err(|error| error.to_string()));
                }
                Ok(IndexCommand::Reindex { done }) => {
                    let _ = done.send(self.reindex().map_err(|error| error.to_string()));
                }
                Ok(IndexCommand::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    self.commit_logged();
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.lagging.swap(false, Ordering::Relaxed) {
                self.catch_up_logged();
            }
            if self.pending_since.is_some_and(|since| since.elapsed() >= COMMIT_DELAY) {
                self.commit_logged();
            }
        }
        tracing::debug!("indexer stopped");
    }

    /// Adds a message from the queue, or catches up if messages before it are missing.
    fn take(&mut self, conversation_id: u64, seq: u64, day: u32, record: &MessageRecord) -> Result<(), SearchError> {
        if record.lsn <= self.last_lsn {
            return Ok(());
        }
        if record.lsn != self.last_lsn + 1 {
            return self.catch_up();
        }
        let (site, visitor_id) = self.conversation(conversation_id)?;
        self.add(conversation_id, seq, day, record, &site, visitor_id)?;
        self.last_lsn = record.lsn;
        self.last_day = self.last_day.max(day);
        Ok(())
    }

    /// Notes a change to commit within [`COMMIT_DELAY`].
    fn changed(&mut self) {
        self.pending_since.get_or_insert_with(Instant::now);
    }

    fn conversation(&mut self, conversation_id: u64) -> Result<(Arc<str>, u64), SearchError> {
        if let Some(found) = self.conversations.get(&conversation_id) {
            return Ok(found.clone());
        }
        let found = self
            .store
            .read_blocking(|transaction| conversations::get(transaction, conversation_id))?
            .map(|conversation| (Arc::from(conversation.site), conversation.visitor_id))
            .unwrap_or_else(|| (Arc::from(""), 0));
        if self.conversations.len() >= CONVERSATION_CACHE_LIMIT {
            self.conversations.clear();
        }
        self.conversations.insert(conversation_id, found.clone());
        Ok(found)
    }

    fn add(
        &mut self,
        conversation_id: u64,
        seq: u64,
        day: u32,
        record: &MessageRecord,
        site: &str,
        visitor_id: u64,
    ) -> Result<(), SearchError> {
        let fields = self.fields;
        let mut document = TantivyDocument::default();
        document.add_text(fields.text, &record.text);
        document.add_u64(fields.conversation_id, conversation_id);
        document.add_u64(fields.seq, seq);
        document.add_u64(fields.lsn, record.lsn);
        document.add_u64(fields.day, u64::from(day));
        document.add_text(fields.site, site);
        document.add_u64(fields.visitor_id, visitor_id);
        self.writer.add_document(document)?;
        self.changed();
        Ok(())
    }

    fn catch_up_logged(&mut self) {
        let started = Instant::now();
        let before = self.last_lsn;
        match self.catch_up() {
            Ok(()) if self.last_lsn > before => tracing::info!(
                from_lsn = before,
                to_lsn = self.last_lsn,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "search index caught up"
            ),
            Ok(()) => {}
            Err(error) => {
                tracing::error!(%error, "catching up the search index failed");
                self.discard_uncommitted();
            }
        }
    }

    /// Adds every committed message above `last_lsn` from the day shards.
    fn catch_up(&mut self) -> Result<(), SearchError> {
        let high = self.store.read_blocking(|transaction| read_meta(transaction, "next_lsn"))?.unwrap_or(1) - 1;
        if high <= self.last_lsn {
            return Ok(());
        }
        let days = self.store.read_blocking(messages::shard_days)?;
        let first_day = self.last_day.saturating_sub(1);
        let mut newest_day = self.last_day;
        for day in days.into_iter().filter(|day| *day >= first_day) {
            let mut after = None;
            loop {
                let chunk = self.store.read_blocking(|transaction| {
                    let chunk = messages::scan_shard(transaction, day, after, CATCH_UP_CHUNK)?;
                    let mut sites = Vec::new();
                    for (key, _) in &chunk {
                        if !self.conversations.contains_key(&key.conversation_id)
                            && sites.last().is_none_or(|(id, _)| *id != key.conversation_id)
                        {
                            let found = conversations::get(transaction, key.conversation_id)?
                                .map(|conversation| (Arc::from(conversation.site), conversation.visitor_id))
                                .unwrap_or_else(|| (Arc::from(""), 0));
                            sites.push((key.conversation_id, found));
                        }
                    }
                    Ok::<_, StorageError>((chunk, sites))
                })?;
                let (chunk, sites) = chunk;
                if self.conversations.len() + sites.len() > CONVERSATION_CACHE_LIMIT {
                    self.conversations.clear();
                }
                self.conversations.extend(sites);
                let Some((last_key, _)) = chunk.last() else {
                    break;
                };
                after = Some((last_key.conversation_id, last_key.seq));
                let full = chunk.len() == CATCH_UP_CHUNK;
                for (key, record) in chunk {
                    if record.lsn <= self.last_lsn || record.lsn > high {
                        continue;
                    }
                    let (site, visitor_id) = self.conversation(key.conversation_id)?;
                    self.add(key.conversation_id, key.seq, day, &record, &site, visitor_id)?;
                    newest_day = newest_day.max(day);
                }
                if !full {
                    break;
                }
            }
        }
        self.last_lsn = high;
        self.last_day = newest_day;
        self.changed();
        Ok(())
    }

    fn delete(&mut self, day: u32, site: Option<String>) -> Result<(), SearchError> {
        let day_term = Term::from_field_u64(self.fields.day, u64::from(day));
        match site {
            None => {
                self.writer.delete_term(day_term);
            }
            Some(site) => {
                let clauses: Vec<(Occur, Box<dyn Query>)> = vec![
                    (Occur::Must, Box::new(TermQuery::new(day_term, IndexRecordOption::Basic))),
                    (
                        Occur::Must,
                        Box::new(TermQuery::new(
                            Term::from_field_text(self.fields.site, &site),
                            IndexRecordOption::Basic,
                        )),
                    ),
                ];
                self.writer.delete_query(Box::new(BooleanQuery::new(clauses)))?;
            }
        }
        self.changed();
        Ok(())
    }

    fn reindex(&mut self) -> Result<ReindexReport, SearchError> {
        let started = Instant::now();
        self.writer.delete_all_documents()?;
        self.last_lsn = 0;
        self.last_day = 0;
        self.catch_up()?;
        self.commit()?;
        let messages = self.reader.searcher().num_docs();
        let report = ReindexReport { messages, elapsed_ms: started.elapsed().as_millis() as u64 };
        tracing::info!(messages = report.messages, elapsed_ms = report.elapsed_ms, "search index rebuilt");
        Ok(report)
    }

    fn commit_logged(&mut self) {
        if let Err(error) = self.commit() {
            tracing::error!(%error, "committing the search index failed");
            // Tried again after another delay, not at once in a loop.
            if self.pending_since.is_some() {
                self.pending_since = Some(Instant::now());
            }
        }
    }

    fn commit(&mut self) -> Result<(), SearchError> {
        let payload = serde_json::to_string(&Payload { lsn: self.last_lsn, day: self.last_day })
            .expect("the payload always serializes");
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.reader.reload()?;
        self.pending_since = None;
        self.indexed.send_replace(self.last_lsn);
        Ok(())
    }
}

/// The position the index's last commit recorded (nothing indexed yet: zero).
fn committed_position(index: &Index) -> Result<Payload, SearchError> {
    Ok(index.load_metas()?.payload.and_then(|payload| serde_json::from_str(&payload).ok()).unwrap_or_default())
}
