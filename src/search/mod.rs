//! Full-text search over every message: a tantivy index in `DATA_DIR/index`, derived from redb.
//!
//! One indexer thread ([`indexer`]) owns the `IndexWriter`. The dispatcher offers it each
//! committed message through a bounded queue; it commits in batches about once a second with a
//! payload recording the highest lsn indexed (and its day), and after a crash, a lost queue item
//! or a deleted index it catches up from the day shards. One `IndexReader` serves the process;
//! each search takes a searcher from it.
//!
//! Results are ordered newest first (by lsn), so a cursor (the lsn of the last hit) pages through
//! them stably while new messages arrive. The index keeps every segment sorted by lsn, newest
//! first (`sort_by_field`), so a search reads matches in the order it returns them and stops
//! after one page ([`newest_matches`]): its cost follows the page size, not how many messages
//! match. An index without that order (made by an older version) is rebuilt when opened.

pub mod indexer;
pub mod tokenizer;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use serde::Serialize;
use tantivy::columnar::Column;
use tantivy::query::{BooleanQuery, EnableScoring, Occur, Query, QueryParser, RangeQuery, TermQuery, Weight};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocAddress, DocId, DocSet, Index, IndexReader, IndexSettings, IndexSortByField, Order, ReloadPolicy, Searcher,
    SegmentReader, TERMINATED, Term,
};
use tokio::sync::{oneshot, watch};

use crate::chat::conversations::{self, Conversation, ConversationStatus};
use crate::chat::messages::{self, MessageKey, MessageRecord};
use crate::storage::{StorageError, Store};
pub use indexer::ReindexReport;

/// The index directory inside the data directory.
pub const INDEX_DIR: &str = "index";

/// Messages and commands waiting for the indexer. A second or two of peak traffic; when it is
/// full the dispatcher drops the item and flags the indexer, which catches up from redb.
pub const INDEX_QUEUE_CAPACITY: usize = 65_536;

/// Most hits in one search page.
pub const MAX_LIMIT: usize = 100;

/// Most candidate hits one search examines when agent or state filters drop many; past this the
/// page is returned short, with a cursor to go on.
const MAX_EXAMINED: usize = 5_000;

/// Longest snippet, in characters.
const SNIPPET_CHARS: usize = 160;

/// The field that orders hits and the index's segments.
const LSN_FIELD: &str = "lsn";

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("q: {0}")]
    BadQuery(String),
    #[error("index error: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("index directory error: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the indexer has stopped")]
    Stopped,
    #[error("the index is not sorted newest first (it was made by an older version)")]
    Unsorted,
}

/// The index's fields. Nothing is stored in the index: a hit's text, sender and time are read
/// from the day shard it points to (`conversation_id`, `seq`, `day`), and its site and visitor
/// from the conversation, so each document costs the index only its terms and fast fields.
#[derive(Clone, Copy)]
pub struct Fields {
    pub text: Field,
    /// With `seq` and `day`, where the message is in redb (fast fields).
    pub conversation_id: Field,
    pub seq: Field,
    /// The global commit order: the index's sort order and cursors (a fast field only).
    pub lsn: Field,
    /// The day shard, so retention deletes a dropped day and date filters are ranges.
    pub day: Field,
    /// Filters by site and the agents' visible sites (a term only).
    pub site: Field,
    /// Filters by visitor and erases a visitor's messages (a term only).
    pub visitor_id: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(tokenizer::TOKENIZER_NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        text: builder.add_text_field("text", text_options),
        conversation_id: builder.add_u64_field("conversation_id", FAST),
        seq: builder.add_u64_field("seq", FAST),
        lsn: builder.add_u64_field(LSN_FIELD, FAST),
        day: builder.add_u64_field("day", INDEXED | FAST),
        site: builder.add_text_field("site", STRING),
        visitor_id: builder.add_u64_field("visitor_id", INDEXED),
    };
    (builder.build(), fields)
}

/// What the indexer is asked to do.
pub(crate) enum IndexCommand {
    Message {
        conversation_id: u64,
        seq: u64,
        day: u32,
        record: Arc<MessageRecord>,
    },
    /// Remove a dropped day (all sites, or one site's messages of that day).
    Delete {
        day: u32,
        site: Option<String>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Remove every message of one visitor's conversations (the erasure of their data).
    DeleteVisitor {
        visitor_id: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    Reindex {
        done: oneshot::Sender<Result<ReindexReport, String>>,
    },
    Shutdown,
}

/// The process's handle on the index. Cloning is cheap.
#[derive(Clone)]
pub struct Search {
    inner: Arc<SearchShared>,
}

struct SearchShared {
    reader: IndexReader,
    index: Index,
    fields: Fields,
    queue: SyncSender<IndexCommand>,
    /// Set when an offered message did not fit in the queue; the indexer then catches up.
    lagging: Arc<AtomicBool>,
    /// The highest lsn that is committed to the index and visible to searches.
    indexed: watch::Receiver<u64>,
    store: Store,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Filters and paging of one search.
#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    pub query: String,
    /// The sites the caller may see; `None` for every site (admins).
    pub visible_sites: Option<Vec<String>>,
    pub site: Option<String>,
    /// Conversations assigned to this agent.
    pub agent: Option<u64>,
    pub visitor: Option<u64>,
    /// First and last UTC day, inclusive.
    pub from_day: Option<u32>,
    pub to_day: Option<u32>,
    pub state: Option<ConversationStatus>,
    /// Hits older than this lsn (from the previous page's `next_cursor`).
    pub before_lsn: Option<u64>,
    pub limit: usize,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub conversation_id: u64,
    pub seq: u64,
    pub site: String,
    pub visitor_id: u64,
    pub sender_kind: String,
    pub sender_id: u64,
    pub sender_name: String,
    pub created_at: i64,
    pub internal: bool,
    /// The matching part of the text as HTML: escaped, with the matches in `<b>`.
    pub snippet: String,
    pub text: String,
}

impl SearchHit {
    /// A hit on message `seq` of a conversation of `site` and `visitor_id`, stored as `record`.
    pub fn of_record(
        (conversation_id, seq): (u64, u64),
        site: String,
        visitor_id: u64,
        record: MessageRecord,
        snippet: String,
    ) -> SearchHit {
        SearchHit {
            conversation_id,
            seq,
            site,
            visitor_id,
            sender_kind: indexer::sender_kind_name(record.sender_kind).to_owned(),
            sender_id: record.sender_id,
            sender_name: record.sender_name,
            created_at: record.created_at,
            internal: record.internal,
            snippet,
            text: record.text,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Niceness of the indexer's threads: when the CPU is short, receiving, committing and
/// delivering messages go first, and the index (derived data, searchable within seconds)
/// catches up when the load falls.
const INDEXER_NICENESS: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`INDEXER_NICENESS`]; threads it starts
/// afterwards inherit it. On Linux `setpriority(PRIO_PROCESS, 0, ..)` applies to the calling
/// thread only; elsewhere nothing changes.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only changes the calling thread's niceness.
        let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, INDEXER_NICENESS) };
        if result != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "lowering the indexer's priority failed");
        }
    }
}

impl Search {
    /// Opens (or creates) the index in `data_dir/index` and starts the indexer thread, which
    /// first catches up with what redb holds. An index that cannot be opened is rebuilt.
    pub fn open(store: Store, data_dir: &Path) -> Result<Search, SearchError> {
        let path = data_dir.join(INDEX_DIR);
        let (schema, fields) = schema();
        let index = match open_index(&path, &schema) {
            Ok(index) => index,
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "the search index cannot be opened; rebuilding it");
                std::fs::remove_dir_all(&path)?;
                open_index(&path, &schema)?
            }
        };
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let (queue, receiver) = std::sync::mpsc::sync_channel(INDEX_QUEUE_CAPACITY);
        let lagging = Arc::new(AtomicBool::new(false));
        let (indexed_sender, indexed) = watch::channel(0);
        let shared = Arc::new(SearchShared {
            reader,
            index,
            fields,
            queue,
            lagging: lagging.clone(),
            indexed,
            store: store.clone(),
            thread: parking_lot::Mutex::new(None),
        });
        // The writer is made on the indexer thread after it lowers its priority, so tantivy's
        // threads, which it starts, inherit the lower priority too.
        let (started_sender, started) = std::sync::mpsc::sync_channel(1);
        let (index, reader) = (shared.index.clone(), shared.reader.clone());
        let thread = std::thread::Builder::new().name("kefu-indexer".to_owned()).spawn(move || {
            lower_thread_priority();
            match indexer::Indexer::new(&index, reader, fields, store, lagging, indexed_sender) {
                Ok(indexer) => {
                    let _ = started_sender.send(Ok(()));
                    indexer.run(receiver);
                }
                Err(error) => {
                    let _ = started_sender.send(Err(error));
                }
            }
        })?;
        started.recv().map_err(|_| SearchError::Stopped)??;
        *shared.thread.lock() = Some(thread);
        Ok(Search { inner: shared })
    }

    /// Offers a committed message, stored in the day shard `day`, to the indexer without waiting. A full queue drops it and
    /// flags the indexer, which then reads what it missed from redb.
    pub fn offer(&self, conversation_id: u64, seq: u64, day: u32, record: Arc<MessageRecord>) {
        let command = IndexCommand::Message { conversation_id, seq, day, record };
        if let Err(TrySendError::Full(_)) = self.inner.queue.try_send(command) {
            self.inner.lagging.store(true, Ordering::Relaxed);
        }
    }

    /// The highest lsn visible to searches.
    pub fn indexed_lsn(&self) -> u64 {
        *self.inner.indexed.borrow()
    }

    /// Waits until every message committed so far is searchable.
    pub async fn wait_caught_up(&self) -> Result<(), SearchError> {
        let next_lsn = self.inner.store.read(|transaction| crate::storage::read_meta(transaction, "next_lsn")).await?;
        let target = next_lsn.unwrap_or(1).saturating_sub(1);
        let mut indexed = self.inner.indexed.clone();
        indexed.wait_for(|lsn| *lsn >= target).await.map_err(|_| SearchError::Stopped)?;
        Ok(())
    }

    /// Rebuilds the index from redb. Searches keep seeing the old index until the new one commits.
    pub async fn reindex(&self) -> Result<ReindexReport, SearchError> {
        let (done, finished) = oneshot::channel();
        self.send(IndexCommand::Reindex { done }).await?;
        finished
            .await
            .map_err(|_| SearchError::Stopped)?
            .map_err(|message| SearchError::Io(std::io::Error::other(message)))
    }

    /// Removes the messages of a dropped day (of every site, or of one) from the index.
    pub async fn delete_day(&self, day: u32, site: Option<String>) -> Result<(), SearchError> {
        let (done, finished) = oneshot::channel();
        self.send(IndexCommand::Delete { day, site, done }).await?;
        finished
            .await
            .map_err(|_| SearchError::Stopped)?
            .map_err(|message| SearchError::Io(std::io::Error::other(message)))
    }

    /// Removes every message of one visitor's conversations from the index, and commits.
    pub async fn delete_visitor(&self, visitor_id: u64) -> Result<(), SearchError> {
        let (done, finished) = oneshot::channel();
        self.send(IndexCommand::DeleteVisitor { visitor_id, done }).await?;
        finished
            .await
            .map_err(|_| SearchError::Stopped)?
            .map_err(|message| SearchError::Io(std::io::Error::other(message)))
    }

    async fn send(&self, command: IndexCommand) -> Result<(), SearchError> {
        let queue = self.inner.queue.clone();
        tokio::task::spawn_blocking(move || queue.send(command))
            .await
            .map_err(|_| SearchError::Stopped)?
            .map_err(|_| SearchError::Stopped)
    }

    /// Commits what is indexed and stops the indexer thread.
    pub async fn shutdown(&self) {
        let _ = self.send(IndexCommand::Shutdown).await;
        let thread = self.inner.thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Runs a search on the blocking pool.
    pub async fn search(&self, request: SearchRequest) -> Result<SearchPage, SearchError> {
        let search = self.clone();
        tokio::task::spawn_blocking(move || search.search_blocking(&request)).await.map_err(|_| SearchError::Stopped)?
    }

    /// Runs a search on the calling thread (blocking contexts and benchmarks).
    pub fn search_blocking(&self, request: &SearchRequest) -> Result<SearchPage, SearchError> {
        let fields = self.inner.fields;
        let query_text = request.query.trim();
        if query_text.is_empty() {
            return Err(SearchError::BadQuery("must not be empty".into()));
        }
        let mut parser = QueryParser::for_index(&self.inner.index, vec![fields.text]);
        parser.set_conjunction_by_default();
        let user_query = parser.parse_query(query_text).map_err(|error| SearchError::BadQuery(error.to_string()))?;

        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, user_query.box_clone())];
        if let Some(sites) = &request.visible_sites {
            let site_clauses: Vec<(Occur, Box<dyn Query>)> = sites
                .iter()
                .map(|site| (Occur::Should, term_query(Term::from_field_text(fields.site, site))))
                .collect();
            if site_clauses.is_empty() {
                return Ok(SearchPage { hits: Vec::new(), next_cursor: None });
            }
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(site_clauses))));
        }
        if let Some(site) = &request.site {
            clauses.push((Occur::Must, term_query(Term::from_field_text(fields.site, site))));
        }
        if let Some(visitor) = request.visitor {
            clauses.push((Occur::Must, term_query(Term::from_field_u64(fields.visitor_id, visitor))));
        }
        if request.from_day.is_some() || request.to_day.is_some() {
            let bound = |day: Option<u32>| match day {
                Some(day) => Bound::Included(Term::from_field_u64(fields.day, u64::from(day))),
                None => Bound::Unbounded,
            };
            clauses.push((Occur::Must, Box::new(RangeQuery::new(bound(request.from_day), bound(request.to_day)))));
        }

        let searcher = self.inner.reader.searcher();
        let weight = BooleanQuery::new(clauses).weight(EnableScoring::disabled_from_searcher(&searcher))?;
        let places = searcher.segment_readers().iter().map(Places::of).collect::<Result<Vec<_>, _>>()?;
        let limit = request.limit.clamp(1, MAX_LIMIT);
        let needs_conversation = request.agent.is_some() || request.state.is_some();
        let batch = if needs_conversation { (limit * 4).max(64) } else { limit + 1 };
        let mut conversations: HashMap<u64, Option<Conversation>> = HashMap::new();
        let mut hits = Vec::with_capacity(limit);
        let mut before = request.before_lsn;
        let mut examined = 0;
        let mut snippets = SnippetGenerator::create(&searcher, &*user_query, fields.text)?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        loop {
            let found = newest_matches(&searcher, &*weight, before, batch)?;
            let exhausted = found.len() < batch;
            // One read transaction per batch of matches: each hit's message from its day shard,
            // and its conversation (site, visitor, and the agent and state filters).
            let page_full = self.inner.store.read_blocking(|transaction| {
                for (lsn, address) in &found {
                    if hits.len() == limit {
                        return Ok(true);
                    }
                    examined += 1;
                    before = Some(*lsn);
                    let key = places[address.segment_ord as usize].key(address.doc_id);
                    let conversation = match conversations.entry(key.conversation_id) {
                        Entry::Occupied(entry) => entry.into_mut(),
                        Entry::Vacant(entry) => entry.insert(conversations::get(transaction, key.conversation_id)?),
                    };
                    let Some(conversation) = conversation else {
                        continue;
                    };
                    if request.agent.is_some_and(|agent| conversation.assigned_agent != Some(agent))
                        || request.state.is_some_and(|state| conversation.status != state)
                        || !request.admits(conversation)
                    {
                        continue;
                    }
                    // Gone from redb (retention, erasure) before the index caught up, or another
                    // message at that place (an index older than a restored database): not a hit.
                    let Some(record) = messages::get(transaction, key)?.filter(|record| record.lsn == *lsn) else {
                        continue;
                    };
                    let snippet = snippets.snippet(&record.text).to_html();
                    hits.push(hit_of(key, conversation, record, snippet));
                }
                Ok(false)
            })?;
            if page_full {
                return Ok(SearchPage { hits, next_cursor: before.map(|lsn| lsn.to_string()) });
            }
            if exhausted {
                return Ok(SearchPage { hits, next_cursor: None });
            }
            if hits.len() == limit || examined >= MAX_EXAMINED {
                return Ok(SearchPage { hits, next_cursor: before.map(|lsn| lsn.to_string()) });
            }
        }
    }
}

impl SearchRequest {
    /// Whether the request may see `conversation` by its site and visitor. The index's terms
    /// already filter by them; the hit is read from redb, so it is checked again there, and an
    /// index that disagrees with the database never shows what the caller may not see.
    fn admits(&self, conversation: &Conversation) -> bool {
        self.visible_sites.as_ref().is_none_or(|sites| sites.contains(&conversation.site))
            && self.site.as_ref().is_none_or(|site| *site == conversation.site)
            && self.visitor.is_none_or(|visitor| visitor == conversation.visitor_id)
    }
}

/// Where a segment's documents are in redb: its `conversation_id`, `seq` and `day` columns.
struct Places {
    conversation_id: Column<u64>,
    seq: Column<u64>,
    day: Column<u64>,
}

impl Places {
    fn of(reader: &SegmentReader) -> Result<Places, tantivy::TantivyError> {
        let fast = reader.fast_fields();
        Ok(Places { conversation_id: fast.u64("conversation_id")?, seq: fast.u64("seq")?, day: fast.u64("day")? })
    }

    fn key(&self, doc: DocId) -> MessageKey {
        MessageKey {
            day: u32::try_from(self.day.first(doc).unwrap_or_default()).unwrap_or_default(),
            conversation_id: self.conversation_id.first(doc).unwrap_or_default(),
            seq: self.seq.first(doc).unwrap_or_default(),
        }
    }
}

/// Up to `n` documents matching `weight` with an lsn below `before` (all if `None`), newest first.
///
/// Every segment is sorted by lsn, newest first, so its matches arrive in the order wanted: each
/// segment is entered at its first document below `before` (a binary search on the lsn column),
/// and left after `n` matches or at the first match older than the `n` newest found so far.
/// Segments are visited newest first, and once `n` are found a segment with nothing newer is not
/// opened. Deleted documents are skipped.
fn newest_matches(
    searcher: &Searcher,
    weight: &dyn Weight,
    before: Option<u64>,
    n: usize,
) -> Result<Vec<(u64, DocAddress)>, SearchError> {
    let mut segments: Vec<(u32, &SegmentReader, Column<u64>)> = Vec::new();
    for (ordinal, reader) in searcher.segment_readers().iter().enumerate() {
        segments.push((ordinal as u32, reader, reader.fast_fields().u64(LSN_FIELD)?));
    }
    segments.sort_by_key(|(_, _, lsns)| Reverse(lsns.max_value()));
    let mut found: Vec<(u64, DocAddress)> = Vec::with_capacity(n + 1);
    for (ordinal, reader, lsns) in segments {
        // The oldest lsn on the page so far: a document not newer than it cannot make the page.
        let floor = if found.len() >= n { found.last().map(|(lsn, _)| *lsn) } else { None };
        if floor.is_some_and(|floor| lsns.max_value() <= floor) {
            break;
        }
        let start = before.map_or(0, |before| first_doc_below(&lsns, reader.max_doc(), before));
        if start >= reader.max_doc() {
            continue;
        }
        let mut scorer = weight.scorer(reader, 1.0)?;
        let mut doc = scorer.doc();
        if doc < start {
            doc = scorer.seek(start);
        }
        let alive = reader.alive_bitset();
        let mut taken = 0;
        while doc != TERMINATED && taken < n {
            if alive.is_none_or(|alive| alive.is_alive(doc)) {
                let lsn = lsns.first(doc).unwrap_or_default();
                if floor.is_some_and(|floor| lsn <= floor) {
                    break;
                }
                found.push((lsn, DocAddress::new(ordinal, doc)));
                taken += 1;
            }
            doc = scorer.advance();
        }
        found.sort_unstable_by_key(|(lsn, _)| Reverse(*lsn));
        found.truncate(n);
    }
    Ok(found)
}

/// The first document of a segment whose lsn is below `before` (`max_doc` if none is): the
/// segment is sorted by lsn, newest first, so a binary search finds it.
fn first_doc_below(lsns: &Column<u64>, max_doc: DocId, before: u64) -> DocId {
    let (mut low, mut high) = (0, max_doc);
    while low < high {
        let middle = low + (high - low) / 2;
        if lsns.first(middle).unwrap_or_default() >= before {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

/// The settings every index is created with: documents sorted by lsn, newest first.
fn index_settings() -> IndexSettings {
    IndexSettings {
        sort_by_field: Some(IndexSortByField { field: LSN_FIELD.to_owned(), order: Order::Desc }),
        ..IndexSettings::default()
    }
}

fn open_index(path: &Path, schema: &Schema) -> Result<Index, SearchError> {
    std::fs::create_dir_all(path)?;
    let directory = tantivy::directory::MmapDirectory::open(path)?;
    let settings = index_settings();
    let index = Index::builder().schema(schema.clone()).settings(settings.clone()).open_or_create(directory)?;
    if index.settings().sort_by_field != settings.sort_by_field {
        return Err(SearchError::Unsorted);
    }
    index
        .tokenizers()
        .register(tokenizer::TOKENIZER_NAME, TextAnalyzer::builder(tokenizer::CjkBigramTokenizer::default()).build());
    Ok(index)
}

fn term_query(term: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(term, IndexRecordOption::Basic))
}

fn hit_of(key: MessageKey, conversation: &Conversation, record: MessageRecord, snippet: String) -> SearchHit {
    SearchHit::of_record(
        (key.conversation_id, key.seq),
        conversation.site.clone(),
        conversation.visitor_id,
        record,
        snippet,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_without_the_newest_first_order_is_refused_and_new_ones_have_it() {
        let (schema, _) = schema();
        let old = tempfile::tempdir().expect("a temporary directory");
        let directory = tantivy::directory::MmapDirectory::open(old.path()).expect("opening the directory");
        Index::create(directory, schema.clone(), IndexSettings::default()).expect("creating an unsorted index");
        assert!(matches!(open_index(old.path(), &schema), Err(SearchError::Unsorted)));

        let new = tempfile::tempdir().expect("a temporary directory");
        let index = open_index(new.path(), &schema).expect("creating an index");
        assert_eq!(index.settings().sort_by_field, index_settings().sort_by_field);
        let reopened = open_index(new.path(), &schema).expect("reopening the index");
        assert_eq!(reopened.settings().sort_by_field, index_settings().sort_by_field);
    }
}
