//! The knowledge base: per-site entries (question variants, one answer, a category) that the bot
//! answers from, their storage and validation, and the in-memory match index of each site.
//!
//! Entries are JSON records in `kb_entries_v1`, listed per site through `kb_site_entries_v1`.
//! The storage boundary is [`store::KnowledgeBaseStore`] (redb here, the cluster's PostgreSQL in
//! `cluster::knowledge_base`); both decide a change with this module's functions
//! ([`EntryInput::validate`], [`check_room`], [`plan_import`], [`KbEntry::replace_with`]).
//! After a change, [`KnowledgeBase::reload`] rebuilds the site's [`matcher::Index`] from storage,
//! so the bot always matches against committed entries; [`KnowledgeBase::forget`] drops it when
//! another node changed them.
//!
//! [`SiteKnowledge::rank`] is the one place a message becomes ranked entries with a calibrated
//! confidence ([`calibration`]); the bot, routing and `kefu kb eval` ([`eval`]) all go through it.

pub mod calibration;
pub mod eval;
pub mod formats;
pub mod matcher;
pub mod normalize;
pub mod question_type;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::bot::knowledge_base::store::EntrySource;
use crate::storage::{StorageError, Store, WriteContext, decode_json, tables};

/// Most question variants of one entry.
pub const MAX_QUESTIONS: usize = 20;
/// Longest question variant, in characters.
pub const MAX_QUESTION_CHARS: usize = 500;
/// Longest answer, in characters.
pub const MAX_ANSWER_CHARS: usize = 5000;
/// Longest category name, in characters.
pub const MAX_CATEGORY_CHARS: usize = 100;
/// Most entries of one site; the match index stays fast well past this.
pub const MAX_ENTRIES_PER_SITE: usize = 20_000;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(default)]
pub struct KbEntry {
    pub id: u64,
    pub site: String,
    /// Ways visitors ask the same thing; the first is the entry's title.
    pub questions: Vec<String>,
    /// Shown to the visitor as is (plain text; links are written out as URLs).
    pub answer: String,
    pub category: String,
    /// The language of the entry (`zh-CN`, `en`, ...), empty when not said.
    pub lang: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The editable part of an entry (request bodies, import rows).
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    pub questions: Vec<String>,
    pub answer: String,
    #[serde(default)]
    pub category: String,
    /// A language tag such as `zh-CN` or `en`; empty when not said.
    #[serde(default)]
    pub lang: String,
}

/// Longest language tag.
pub const MAX_LANG_CHARS: usize = 20;

/// Whether `lang` is empty or looks like a language tag (`en`, `zh-CN`, `zh-Hant-TW`).
fn is_language_tag(lang: &str) -> bool {
    let mut parts = lang.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|primary| (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic()));
    lang.is_empty()
        || (lang.len() <= MAX_LANG_CHARS
            && primary_ok
            && parts.all(|part| (2..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric())))
}

impl EntryInput {
    /// Trims and checks every field; the message names what to fix.
    pub fn validate(self) -> Result<EntryInput, KbError> {
        let questions: Vec<String> =
            self.questions.iter().map(|question| question.trim().to_owned()).filter(|q| !q.is_empty()).collect();
        if questions.is_empty() || questions.len() > MAX_QUESTIONS {
            return Err(KbError::Invalid(format!("questions: must hold 1 to {MAX_QUESTIONS} non-empty questions")));
        }
        if questions.iter().any(|question| question.chars().count() > MAX_QUESTION_CHARS) {
            return Err(KbError::Invalid(format!("questions: each at most {MAX_QUESTION_CHARS} characters")));
        }
        let answer = self.answer.trim().to_owned();
        if answer.is_empty() || answer.chars().count() > MAX_ANSWER_CHARS {
            return Err(KbError::Invalid(format!("answer: must be 1 to {MAX_ANSWER_CHARS} characters")));
        }
        let category = self.category.trim().to_owned();
        if category.chars().count() > MAX_CATEGORY_CHARS || category.contains('\n') {
            return Err(KbError::Invalid(format!("category: one line of at most {MAX_CATEGORY_CHARS} characters")));
        }
        if questions.iter().chain([&answer, &category]).any(|text| text.contains('\0')) {
            return Err(KbError::Invalid("entry: the text must not contain the character U+0000".into()));
        }
        let lang = self.lang.trim().to_owned();
        if !is_language_tag(&lang) {
            return Err(KbError::Invalid(format!("lang: {lang:?} is not a language tag such as zh-CN or en")));
        }
        Ok(EntryInput { questions, answer, category, lang })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error("no such knowledge-base entry")]
    NotFound,
    #[error("no such site")]
    NoSuchSite,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl KbEntry {
    /// A new entry of `site` from a validated input.
    pub fn new(id: u64, site: String, input: EntryInput, now: i64) -> KbEntry {
        KbEntry {
            id,
            site,
            questions: input.questions,
            answer: input.answer,
            category: input.category,
            lang: input.lang,
            created_at: now,
            updated_at: now,
        }
    }

    /// Replaces the editable fields with a validated input's.
    pub fn replace_with(&mut self, input: EntryInput, now: i64) {
        self.questions = input.questions;
        self.answer = input.answer;
        self.category = input.category;
        self.lang = input.lang;
        self.updated_at = now;
    }
}

/// Validates every input, all or none (the first error names what to fix).
pub fn validated(inputs: Vec<EntryInput>) -> Result<Vec<EntryInput>, KbError> {
    inputs.into_iter().map(EntryInput::validate).collect()
}

/// Refuses adding `n_new` entries to a site that holds `existing`.
pub fn check_room(existing: usize, n_new: usize) -> Result<(), KbError> {
    if existing.saturating_add(n_new) > MAX_ENTRIES_PER_SITE {
        return Err(KbError::Invalid(format!("a site holds at most {MAX_ENTRIES_PER_SITE} entries")));
    }
    Ok(())
}

/// What an import stores: the inputs of the new entries (their ids are the backend's to give)
/// and the entries it replaces, already changed.
pub struct ImportPlan {
    pub new_inputs: Vec<EntryInput>,
    pub replaced: Vec<KbEntry>,
}

/// Decides an import into `site`, which holds `existing` entries, at `now`: every row
/// validated, room for the new ones, and every row with an id naming an entry of the site, once
/// (`named` holds the stored entries the rows' ids name); otherwise nothing is stored.
pub fn plan_import(
    site: &str,
    existing: usize,
    rows: Vec<formats::ImportRow>,
    named: &HashMap<u64, KbEntry>,
    now: i64,
) -> Result<ImportPlan, KbError> {
    let n_new = rows.iter().filter(|row| row.id.is_none()).count();
    check_room(existing, n_new)?;
    let mut plan = ImportPlan { new_inputs: Vec::with_capacity(n_new), replaced: Vec::new() };
    // The row number of each replaced entry, for the message of a repeated id.
    let mut row_numbers = Vec::new();
    for (number, row) in rows.into_iter().enumerate() {
        let input = row.input.validate().map_err(|error| KbError::Invalid(format!("entry {}: {error}", number + 1)))?;
        let Some(id) = row.id else {
            plan.new_inputs.push(input);
            continue;
        };
        if let Some(earlier) = plan.replaced.iter().position(|entry| entry.id == id) {
            return Err(KbError::Invalid(format!(
                "entry {}: id {id} is already the id of entry {} (give each entry once)",
                number + 1,
                row_numbers[earlier]
            )));
        }
        match named.get(&id) {
            Some(entry) if entry.site == site => {
                row_numbers.push(number + 1);
                let mut entry = entry.clone();
                entry.replace_with(input, now);
                plan.replaced.push(entry);
            }
            _ => {
                return Err(KbError::Invalid(format!(
                    "entry {}: id {id} is not an entry of this site (leave the id empty to add it)",
                    number + 1
                )));
            }
        }
    }
    Ok(plan)
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportOutcome {
    /// Rows without an id, added as new entries.
    pub created: usize,
    /// Rows with an id, which replaced that entry's fields.
    pub updated: usize,
}

impl ImportPlan {
    pub fn outcome(&self) -> ImportOutcome {
        ImportOutcome { created: self.new_inputs.len(), updated: self.replaced.len() }
    }
}

/// Removes every entry of a site with its vectors (inside the site's deletion); returns how many.
pub fn erase_of_site(context: &WriteContext<'_>, site: &str) -> Result<usize, StorageError> {
    let mut index = context.transaction.open_table(tables::KB_SITE_ENTRIES)?;
    let mut ids = Vec::new();
    for entry in index.range((site, 0)..=(site, u64::MAX))? {
        ids.push(entry?.0.value().1);
    }
    let mut entries = context.transaction.open_table(tables::KB_ENTRIES)?;
    let mut vectors = context.transaction.open_table(tables::KB_VECTORS)?;
    for id in &ids {
        index.remove((site, *id))?;
        entries.remove(*id)?;
        vectors.remove(*id)?;
    }
    Ok(ids.len())
}

pub fn get(transaction: &ReadTransaction, id: u64) -> Result<Option<KbEntry>, StorageError> {
    let entries = transaction.open_table(tables::KB_ENTRIES)?;
    entries.get(id)?.map(|value| decode_json(value.value())).transpose()
}

/// Every entry of a site, oldest first.
pub fn list(transaction: &ReadTransaction, site: &str) -> Result<Vec<KbEntry>, StorageError> {
    let index = transaction.open_table(tables::KB_SITE_ENTRIES)?;
    let entries = transaction.open_table(tables::KB_ENTRIES)?;
    let mut found = Vec::new();
    for key in index.range((site, 0)..=(site, u64::MAX))? {
        let (_, id) = key?.0.value();
        if let Some(value) = entries.get(id)? {
            found.push(decode_json(value.value())?);
        }
    }
    Ok(found)
}

/// How many candidates the ranking looks at: the margin to the second needs a few.
pub const RANK_DEPTH: usize = 5;

/// An entry ranked for a message, with the probability that it answers the message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub entry_id: u64,
    /// 0 to 1; the bot answers at or above the site's threshold.
    pub confidence: f32,
    pub scored: matcher::Scored,
}

/// A candidate of the semantic tier, before the calibration weighs it.
#[derive(Clone, Copy, Debug)]
pub struct FusedCandidate {
    pub scored: matcher::Scored,
    pub features: [f64; calibration::N_SEMANTIC_FEATURES],
}

/// A site's entries with their match index, as the bot uses them.
pub struct SiteKnowledge {
    pub entries: Vec<KbEntry>,
    pub index: matcher::Index,
    /// The site's own term lines the index was built with.
    pub terms: String,
}

impl SiteKnowledge {
    /// With the built-in term list only.
    pub fn build(entries: Vec<KbEntry>) -> SiteKnowledge {
        SiteKnowledge::build_with_terms(entries, normalize::TermList::with_site_terms(""))
    }

    pub fn build_with_terms(entries: Vec<KbEntry>, terms: normalize::TermList) -> SiteKnowledge {
        SiteKnowledge { index: matcher::Index::build_with_terms(&entries, terms), entries, terms: String::new() }
    }

    pub fn entry(&self, id: u64) -> Option<&KbEntry> {
        self.entries.iter().find(|entry| entry.id == id)
    }

    /// The `limit` most likely entries for a message, most likely first, each with its
    /// calibrated confidence.
    pub fn rank(&self, text: &str, limit: usize) -> Vec<Candidate> {
        let query = self.index.query(text, RANK_DEPTH.max(limit));
        let mut candidates: Vec<Candidate> = (0..query.ranked.len())
            .map(|position| Candidate {
                entry_id: query.ranked[position].entry_id,
                confidence: calibration::confidence(&query, position),
                scored: query.ranked[position],
            })
            .collect();
        // Kept in the matcher's order: the confidence is fitted on the matcher's top candidate.
        candidates.truncate(limit);
        candidates
    }

    /// [`SiteKnowledge::rank`] with the semantic tier: `similarity` gives an entry's cosine with
    /// the message (`None` without a vector). The lexical candidates and the few entries most
    /// similar in meaning are ranked by the semantic calibration
    /// ([`calibration::SEMANTIC_COEFFICIENTS`]), most likely first; where the tier does not apply
    /// (see [`SiteKnowledge::fused_candidates`]), the lexical ranking.
    pub fn rank_fused(&self, text: &str, limit: usize, similarity: impl Fn(u64) -> Option<f32>) -> Vec<Candidate> {
        self.rank_fused_with(text, limit, similarity, &calibration::COEFFICIENTS, &calibration::SEMANTIC_COEFFICIENTS)
    }

    /// [`SiteKnowledge::rank_fused`] with other coefficients (to fit and judge them).
    pub fn rank_fused_with(
        &self,
        text: &str,
        limit: usize,
        similarity: impl Fn(u64) -> Option<f32>,
        lexical: &[f64; calibration::N_FEATURES + 1],
        semantic: &[f64; calibration::N_SEMANTIC_FEATURES + 1],
    ) -> Vec<Candidate> {
        let Some(fused) = self.fused_candidates(text, similarity, lexical) else {
            return self.rank(text, limit);
        };
        let mut candidates: Vec<Candidate> = fused
            .into_iter()
            .map(|fused| Candidate {
                entry_id: fused.scored.entry_id,
                confidence: calibration::probability(semantic, &fused.features) as f32,
                scored: fused.scored,
            })
            .collect();
        candidates.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then(a.entry_id.cmp(&b.entry_id)));
        candidates.truncate(limit);
        candidates
    }

    /// The candidates the semantic tier ranks: the matcher's best [`RANK_DEPTH`] and the
    /// [`calibration::SEMANTIC_DEPTH`] entries closest in meaning, each with its features (the
    /// lexical log-odds under `lexical`). `None` where the tier does not apply and the lexical
    /// ranking decides: fewer than [`calibration::SEMANTIC_MIN_ENTRIES`] entries with a vector,
    /// or a lexical candidate without one (an entry added since the vectors were made).
    pub fn fused_candidates(
        &self,
        text: &str,
        similarity: impl Fn(u64) -> Option<f32>,
        lexical: &[f64; calibration::N_FEATURES + 1],
    ) -> Option<Vec<FusedCandidate>> {
        let cosine_of = |entry_id: u64| similarity(entry_id).filter(|cosine| cosine.is_finite());
        let mut by_meaning: Vec<(u64, f32)> =
            self.entries.iter().filter_map(|entry| cosine_of(entry.id).map(|cosine| (entry.id, cosine))).collect();
        if by_meaning.len() < calibration::SEMANTIC_MIN_ENTRIES {
            return None;
        }
        let spread = calibration::CosineSpread::of(by_meaning.iter().map(|(_, cosine)| *cosine));
        let query = self.index.query(text, RANK_DEPTH);
        let mut fused = Vec::with_capacity(query.ranked.len() + calibration::SEMANTIC_DEPTH);
        for (position, scored) in query.ranked.iter().enumerate() {
            let logit = calibration::lexical_logit(&query, position, lexical);
            let features = calibration::semantic_features(logit, cosine_of(scored.entry_id)?, &spread);
            fused.push(FusedCandidate { scored: *scored, features });
        }
        let closest = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if by_meaning.len() > calibration::SEMANTIC_DEPTH {
            by_meaning.select_nth_unstable_by(calibration::SEMANTIC_DEPTH, closest);
            by_meaning.truncate(calibration::SEMANTIC_DEPTH);
        }
        by_meaning.sort_by(closest);
        for (entry_id, cosine) in by_meaning {
            if !fused.iter().any(|candidate| candidate.scored.entry_id == entry_id) {
                let features = calibration::semantic_features(None, cosine, &spread);
                fused.push(FusedCandidate { scored: matcher::Scored::unmatched(entry_id), features });
            }
        }
        Some(fused)
    }

    /// The `limit` entries that match `text` best, best first, with their calibrated
    /// confidences (see [`SiteKnowledge::rank`]).
    pub fn top(&self, text: &str, limit: usize) -> Vec<Match<'_>> {
        self.rank(text, limit)
            .into_iter()
            .filter_map(|candidate| {
                self.entry(candidate.entry_id).map(|entry| Match { entry, score: candidate.confidence })
            })
            .collect()
    }

    /// The first questions of the ranked entries at least [`MIDDLE_BAND_FLOOR`] likely, at most
    /// `limit`: quick replies for a visitor whose message came close to an answer.
    pub fn related_questions(&self, ranked: &[Candidate], limit: usize) -> Vec<String> {
        ranked
            .iter()
            .filter(|candidate| candidate.confidence >= MIDDLE_BAND_FLOOR)
            .filter_map(|candidate| self.entry(candidate.entry_id)?.questions.first().cloned())
            .take(limit)
            .collect()
    }
}

/// The floor of the middle band of confidence: an entry below the threshold but at least this
/// close is offered as a related question, and is worth asking the language model to judge.
pub const MIDDLE_BAND_FLOOR: f32 = 0.3;

/// An entry a message matched, with its score (0 to 1).
#[derive(Clone, Copy, Debug)]
pub struct Match<'a> {
    pub entry: &'a KbEntry,
    pub score: f32,
}

/// The match indexes of every site that has been asked about, rebuilt on change.
#[derive(Clone)]
pub struct KnowledgeBase {
    /// Where entries are read from: the appliance's `Store`, or a cluster's PostgreSQL.
    source: Arc<dyn EntrySource>,
    sites: Arc<DashMap<String, Arc<SiteKnowledge>>>,
    /// Each site's own term lines (bot settings), as the bot last read them.
    terms: Arc<DashMap<String, String>>,
    /// Serialises rebuilds, so a slower rebuild of older entries never replaces a newer one.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// Counts [`KnowledgeBase::forget`] calls, so a rebuild that read its entries before one
    /// does not keep an index the change made stale.
    forgotten: Arc<AtomicU64>,
    /// Told the key of every site whose entries were rebuilt (the bot's vector refresher).
    rebuilt: Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>>>,
}

impl KnowledgeBase {
    pub fn new(store: Store) -> KnowledgeBase {
        KnowledgeBase::of(Arc::new(store))
    }

    /// The match indexes of the entries `source` stores (the appliance's `Store`, or a cluster's
    /// PostgreSQL, whose changes through other nodes `forget` is told of).
    pub fn of(source: Arc<dyn EntrySource>) -> KnowledgeBase {
        KnowledgeBase {
            source,
            sites: Arc::new(DashMap::new()),
            terms: Arc::new(DashMap::new()),
            reloading: Arc::new(tokio::sync::Mutex::new(())),
            forgotten: Arc::new(AtomicU64::new(0)),
            rebuilt: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Sends the key of every site rebuilt from now on to `listener`.
    pub fn notify_rebuilds(&self, listener: tokio::sync::mpsc::UnboundedSender<String>) {
        let _ = self.rebuilt.set(listener);
    }

    /// Uses a site's own term lines from now on; the index is rebuilt on next use if they changed.
    pub fn set_terms(&self, site: &str, terms: &str) {
        let changed = self.terms.get(site).is_none_or(|known| known.as_str() != terms);
        if changed {
            self.terms.insert(site.to_owned(), terms.to_owned());
            self.sites.remove(site);
        }
    }

    /// Drops a site's index (its entries changed elsewhere); the next use rebuilds it.
    pub fn forget(&self, site: &str) {
        self.forgotten.fetch_add(1, Ordering::SeqCst);
        self.sites.remove(site);
    }

    /// The site's knowledge, from memory or built from storage.
    pub async fn site(&self, site: &str) -> Result<Arc<SiteKnowledge>, StorageError> {
        if let Some(found) = self.sites.get(site) {
            return Ok(found.clone());
        }
        self.reload(site).await
    }

    /// Rebuilds a site's index from storage (after its entries changed).
    pub async fn reload(&self, site: &str) -> Result<Arc<SiteKnowledge>, StorageError> {
        let _one_at_a_time = self.reloading.lock().await;
        let forgotten = self.forgotten.load(Ordering::SeqCst);
        let terms = self.terms.get(site).map(|terms| terms.clone()).unwrap_or_default();
        let entries = self.source.site_entries(site).await?;
        // Building the index of a big site takes a while: off the async worker threads.
        let knowledge = tokio::task::spawn_blocking(move || {
            let mut knowledge = SiteKnowledge::build_with_terms(entries, normalize::TermList::with_site_terms(&terms));
            knowledge.terms = terms;
            Arc::new(knowledge)
        })
        .await
        .map_err(|error| StorageError::Panicked(error.to_string()))?;
        // Checked under the map's lock of the site, which `forget`'s removal waits for.
        {
            let slot = self.sites.entry(site.to_owned());
            if self.forgotten.load(Ordering::SeqCst) == forgotten {
                slot.insert(knowledge.clone());
            }
        }
        if let Some(listener) = self.rebuilt.get() {
            let _ = listener.send(site.to_owned());
        }
        Ok(knowledge)
    }
}
