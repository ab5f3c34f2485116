//! Full-text search over the cluster's messages, from any node: the PostgreSQL counterpart of the
//! appliance's tantivy index (src/search/), with the same tokens, filters, order and hits.
//!
//! Migration 5 gives `messages` a generated `search_vector` column holding the tokens of kefu's
//! tokenizer (words, CJK bigrams) and a GIN index on it, so every message is searchable as soon
//! as its append commits, whichever node wrote it, with no index of its own to feed or catch up.
//! A query's whitespace-separated terms must all match, each as a phrase of its tokens
//! (`kefu_search_query`); hits are read with their conversation, so a caller only ever gets hits
//! of the sites it may see, newest first (by lsn), and a cursor (the last hit's lsn) pages on.
//! docs/cluster.md ("Search") has the schema, the choice against `pg_trgm` and its figures.

use std::collections::BTreeMap;

use tantivy::schema::Field;
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::TextAnalyzer;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::chat::conversations::ConversationStatus;
use crate::cluster::messages::{MESSAGE_COLUMNS, message_of, unsigned};
use crate::cluster::postgres::Readers;
use crate::cluster::postgres::{self, PostgresError};
use crate::search::tokenizer::{self, CjkBigramTokenizer};
use crate::search::{MAX_LIMIT, SearchError, SearchHit, SearchPage, SearchRequest};
use crate::storage::StorageError;

/// Longest query, in characters: longer ones are refused rather than turned into a phrase of
/// hundreds of terms.
pub const MAX_QUERY_CHARS: usize = 200;

/// Longest snippet, in characters, as in the appliance.
const SNIPPET_CHARS: usize = 160;

/// Up to this many matches (older than the cursor), a search reads them all through the GIN index
/// and sorts them; with more, it walks the messages newest first (the lsn index) and stops after
/// a page, as the matches are then dense enough to fill one soon. PostgreSQL's planner cannot
/// tell the two cases apart (it guesses a rare word's frequency), and each plan is slow in the
/// other case: the walk reads every message for a rare word, the sort reads every match of a
/// common one (docs/cluster.md, "Search", has both).
const MATCHES_SORTED_IN_FULL: i64 = 1_000;

/// Connections a node's searches take in turn.
const SEARCH_CONNECTIONS: usize = 2;

/// Searches the messages of the cluster's PostgreSQL.
pub struct PostgresSearch {
    readers: Readers,
}

impl PostgresSearch {
    /// Connects and applies the migrations the database lacks (search needs migration 5).
    pub async fn open(url: &str) -> Result<PostgresSearch, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresSearch { readers: Readers::new(url, SEARCH_CONNECTIONS) })
    }

    /// One page of hits for `request`, newest first, with the appliance's meaning: only
    /// messages of conversations the request admits (`visible_sites`, `site`, `visitor`,
    /// `agent`, `state`, days), older than `before_lsn` when given. An empty query, one longer
    /// than [`MAX_QUERY_CHARS`] or one without a word is refused with nothing read.
    pub async fn search(&self, request: &SearchRequest) -> Result<SearchPage, SearchError> {
        let query = checked_query(&request.query)?;
        if request.visible_sites.as_ref().is_some_and(Vec::is_empty) {
            return Ok(SearchPage { hits: Vec::new(), next_cursor: None });
        }
        let limit = request.limit.clamp(1, MAX_LIMIT);
        let state = request.state.map(status_name);
        let agent = request.agent.map(signed);
        let visitor = request.visitor.map(signed);
        let before = request.before_lsn.map(signed);
        let from_day = request.from_day.map(|day| i32::try_from(day).unwrap_or(i32::MAX));
        let to_day = request.to_day.map(|day| i32::try_from(day).unwrap_or(i32::MAX));
        // One more than a page tells whether there is a next one.
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let parameters: [&(dyn ToSql + Sync); 10] = [
            &query,
            &request.visible_sites,
            &request.site,
            &visitor,
            &agent,
            &state,
            &from_day,
            &to_day,
            &before,
            &fetch,
        ];
        let client = self.readers.client().await.map_err(StorageError::from)?;
        let n_matches: i64 = client
            .query_one(
                "SELECT count(*) FROM (SELECT 1 FROM messages
                                       WHERE search_vector @@ kefu_search_query($1) AND ($2::bigint IS NULL OR lsn < $2)
                                       LIMIT $3) matches",
                &[&query, &before, &(MATCHES_SORTED_IN_FULL + 1)],
            )
            .await
            .map_err(PostgresError::from)
            .map_err(StorageError::from)?
            .get(0);
        let order = if n_matches > MATCHES_SORTED_IN_FULL { Order::NewestFirstWalk } else { Order::SortAllMatches };
        let rows = client
            .query(&search_statement(order), &parameters)
            .await
            .map_err(PostgresError::from)
            .map_err(StorageError::from)?;
        let snippets = snippet_generator(&query);
        let hits = rows
            .iter()
            .take(limit)
            .map(|row| hit_of(row, &snippets))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StorageError::from)?;
        let next_cursor = if rows.len() > limit { hits.last().map(|(_, lsn)| lsn.to_string()) } else { None };
        Ok(SearchPage { hits: hits.into_iter().map(|(hit, _)| hit).collect(), next_cursor })
    }
}

/// The trimmed query, or why it cannot be searched.
fn checked_query(query: &str) -> Result<String, SearchError> {
    let query = query.trim();
    if query.is_empty() {
        return Err(SearchError::BadQuery("must not be empty".into()));
    }
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(SearchError::BadQuery(format!("must be at most {MAX_QUERY_CHARS} characters")));
    }
    if tokenizer::tokenize(query).is_empty() {
        return Err(SearchError::BadQuery("has no word or character to search for".into()));
    }
    Ok(query.to_owned())
}

/// How a search reaches its newest matches (see [`MATCHES_SORTED_IN_FULL`]).
#[derive(Clone, Copy)]
enum Order {
    /// Every match from the GIN index, sorted: for rare terms.
    SortAllMatches,
    /// The messages newest first by the lsn index, each tested, until a page: for common terms.
    NewestFirstWalk,
}

/// The search: the matches of the query among the messages of the conversations the filters
/// admit (a null filter admits all), newest first. The join reads each match's conversation, so
/// a site's filter holds for every hit.
fn search_statement(order: Order) -> String {
    // `lsn + 0` has the same order but no index, which leaves the planner the GIN index alone.
    let order_by = match order {
        Order::SortAllMatches => "m.lsn + 0",
        Order::NewestFirstWalk => "m.lsn",
    };
    format!(
        "SELECT {MESSAGE_COLUMNS}, conversation_id, site, visitor_id FROM (
             SELECT m.*, c.site, c.visitor_id
             FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.search_vector @@ kefu_search_query($1)
               AND ($2::text[] IS NULL OR c.site = ANY($2))
               AND ($3::text IS NULL OR c.site = $3)
               AND ($4::bigint IS NULL OR c.visitor_id = $4)
               AND ($5::bigint IS NULL OR c.assigned_agent = $5)
               AND ($6::text IS NULL OR c.status = $6)
               AND ($7::integer IS NULL OR m.day >= date '1970-01-01' + $7)
               AND ($8::integer IS NULL OR m.day <= date '1970-01-01' + $8)
               AND ($9::bigint IS NULL OR m.lsn < $9)
             ORDER BY {order_by} DESC
             LIMIT $10
         ) hits"
    )
}

/// A hit and its lsn (the cursor when it ends a page).
fn hit_of(row: &Row, snippets: &SnippetGenerator) -> Result<(SearchHit, u64), PostgresError> {
    let (seq, record) = message_of(row)?;
    let column = MESSAGE_COLUMNS.split(',').count();
    let conversation_id: i64 = row.try_get(column)?;
    let visitor_id: i64 = row.try_get(column + 2)?;
    let snippet = snippets.snippet(&record.text).to_html();
    let lsn = record.lsn;
    let site = row.try_get(column + 1)?;
    let hit = SearchHit::of_record((unsigned(conversation_id)?, seq), site, unsigned(visitor_id)?, record, snippet);
    Ok((hit, lsn))
}

/// Marks the query's tokens in a hit's text, with the appliance's tokenizer and snippet rules.
fn snippet_generator(query: &str) -> SnippetGenerator {
    let terms: BTreeMap<String, f32> = tokenizer::tokenize(query).into_iter().map(|token| (token.text, 1.0)).collect();
    let analyzer = TextAnalyzer::builder(CjkBigramTokenizer::default()).build();
    // The field only matters to snippets made from stored documents, which these are not.
    SnippetGenerator::new(terms, analyzer, Field::from_field_id(0), SNIPPET_CHARS)
}

fn status_name(status: ConversationStatus) -> String {
    match status {
        ConversationStatus::Queued => "queued",
        ConversationStatus::Assigned => "assigned",
        ConversationStatus::Closed => "closed",
    }
    .to_owned()
}

/// An id as PostgreSQL's bigint; ids past its range match nothing, as they cannot be stored.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked_before_anything_is_read() {
        assert!(matches!(checked_query("  "), Err(SearchError::BadQuery(_))));
        assert!(matches!(checked_query("!!! ..."), Err(SearchError::BadQuery(_))));
        assert!(matches!(checked_query(&"退".repeat(MAX_QUERY_CHARS + 1)), Err(SearchError::BadQuery(_))));
        assert_eq!(checked_query(" 退款 refund ").expect("a query"), "退款 refund");
    }

    #[test]
    fn snippets_mark_the_query_tokens() {
        let snippet = snippet_generator("退款").snippet("我要退款, <i>now</i> please").to_html();
        assert_eq!(snippet, "我要<b>退款</b>, &lt;i&gt;now&lt;/i&gt; please");
    }
}
