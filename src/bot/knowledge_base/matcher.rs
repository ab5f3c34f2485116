//! Matching a visitor's message against a site's knowledge base, for Chinese and English alike.
//!
//! Text is first normalised ([`super::normalize`]: full-width forms, colloquial Chinese, a few
//! traditional characters), then becomes features: lowercase word tokens for Latin-script runs
//! (with a light English suffix stemmer; stop words, chat words and interrogatives dropped),
//! character unigrams plus bigrams for CJK runs (Chinese has no spaces; bigrams carry most of
//! the meaning of two-character words; a bigram with a sentence particle is dropped), one
//! feature per group of the term list that the text mentions, so "shipping费多少" meets
//! "运费怎么算？", and one per kind of question it asks ([`super::question_type`]), so "when"
//! meets "how long" and 多久 rather than every question that says "when".
//!
//! Every question variant and every answer is a TF-IDF vector, normalised; term groups count
//! [`TERM_GROUP_WEIGHT`] and question types [`QUESTION_TYPE_WEIGHT`] times their IDF. A message
//! gets, per entry, the best cosine over the entry's questions, the cosine with its answer (so
//! "what currency will I be charged in" finds the entry whose answer says "US dollars"), the
//! share of the message that the entry covers, and for the few best entries the largest part of
//! the message none of the entry's texts holds. An entry's score adds the answer's cosine
//! ([`ANSWER_EVIDENCE_WEIGHT`]) to the better of the two cosines. A Latin word the index does
//! not know is looked up as a typo: a vocabulary word within one deletion on either side
//! (SymSpell), which takes in one substitution, insertion, deletion or transposition, counts at
//! [`TYPO_WEIGHT`].
//!
//! The index is inverted (feature → variants holding it with their weights), built once per
//! change of the site's entries and shared read-only, so a query touches only the postings of its
//! own features. Features are numbered when the index is built and postings sit in one array, so
//! a query looks each of its features up once and then works on numbers: dense per-variant and
//! per-entry score arrays (reused per thread, reset through the lists of what was touched)
//! instead of hash maps.

use std::cell::RefCell;
use std::collections::HashMap;

use rustc_hash::FxHashMap;

use super::KbEntry;
use super::normalize::{TermList, normalize};
use super::question_type;

/// English words too common to tell questions apart. IDF would mostly discount them, but with
/// few entries it cannot, and short questions are dominated by them.
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "i", "me", "my", "we",
    "our", "you", "your", "it", "its", "to", "of", "in", "on", "at", "for", "and", "or", "with", "can", "could",
    "would", "should", "will", "please", "hi", "hello", "hey", "there", "this", "that", "so", "just", "any", "some",
    "get", "have", "has", "what", "s", "t", "m", "im", "u", "pls", "thanks", "thank", "how", "ur", "dose", "us",
    "whats", "wheres", "lol", "ok",
];

/// Sentence particles: a bigram holding one ("到了吗" gives "了吗") says nothing of the topic.
const PARTICLES: &[char] = &['吗', '呢', '吧', '啊', '呀', '嘛', '哦', '啦', '哈', '呗', '哇', '噢', '嗯', '亲', '么'];

/// Words of wanting and asking that carry no topic ("I want to", "can you tell me"), and chat
/// spellings; interrogatives are dropped too, their meaning kept by [`question_type`].
const CHAT_WORDS: &[&str] = &[
    "want", "wanna", "need", "gonna", "gotta", "like", "plz", "pls", "thx", "ty", "hii", "yo", "dear", "sir", "madam",
    "guys", "know", "tell", "let", "hv", "r", "ya", "ok", "okay", "kindly", "possible", "also", "still", "already",
    "now", "yet", "which",
];

/// Chinese characters that carry no topic on their own (particles, pronouns, politeness).
const CJK_STOP_CHARS: &[char] = &[
    '的', '了', '吗', '呢', '吧', '啊', '我', '你', '您', '是', '在', '有', '请', '问', '么', '嘛', '呀', '哦', '和',
    '亲', '们', '个', '一', '下',
];

/// How much an answer's cosine counts against a question's: answers are long and say more than
/// what was asked, so their words are weaker evidence.
pub const ANSWER_WEIGHT: f32 = 0.6;

/// How much a word read as a typo of a vocabulary word counts, against the word itself.
pub const TYPO_WEIGHT: f32 = 0.8;

/// How much an entry written in the other script (Chinese against Latin) counts: the term list
/// lets "cancel" reach 取消, but a visitor writing English most likely wants the English entry,
/// and one writing "有warranty吗" the Chinese one. It ranks entries of the message's script first
/// whenever they match about as well; on a site with entries in one language only it lowers
/// every candidate alike and leaves the ranking as it is. 0.8 before; 0.5 put the right entry
/// on top for 2.9 points more of the answerable messages of tests/data/kb_eval.
pub const OTHER_SCRIPT_WEIGHT: f32 = 0.5;

/// How much the answer's cosine adds to an entry's score on top of the better of the question
/// and weighted answer cosines: an answer that holds the message's words ("Do you deliver to
/// Canada?" against an answer listing Canada) is evidence even when a question matches too.
/// Without it the right entry was on top for 80.6% of the answerable messages of
/// tests/data/kb_eval, with it 87.4%.
pub const ANSWER_EVIDENCE_WEIGHT: f32 = 1.0;

/// How much the question-type features ([`question_type`]) count against a word of the same
/// IDF: they tell "when" from "where", but many questions share a type.
pub const QUESTION_TYPE_WEIGHT: f32 = 0.75;

/// How much a term-list group counts against a word of the same IDF: a group stands for every
/// way of saying one thing in either language, so it is stronger evidence than one spelling.
pub const TERM_GROUP_WEIGHT: f32 = 1.5;

/// Latin words shorter than this are not read as typos: too many short words are one edit apart.
const MIN_TYPO_CHARS: usize = 4;

/// One feature of a text.
pub type Feature = String;

pub fn is_cjk(character: char) -> bool {
    matches!(character as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x3040..=0x30FF | 0xAC00..=0xD7AF | 0x20000..=0x2A6DF)
}

/// Strips common English suffixes so "refunds", "refunded" and "refunding" meet, and "shipping",
/// "shipped" and "ship" too (a doubled last consonant is undone).
fn stem(word: &str) -> &str {
    for suffix in ["ing", "ed", "ies", "es", "s"] {
        if word.len() > suffix.len() + 2 && word.ends_with(suffix) {
            let stemmed = &word[..word.len() - suffix.len()];
            if suffix == "s" && (stemmed.ends_with('s') || stemmed.ends_with('u')) {
                return word;
            }
            let bytes = stemmed.as_bytes();
            let n = bytes.len();
            let doubled = (suffix == "ing" || suffix == "ed")
                && n >= 3
                && bytes[n - 1] == bytes[n - 2]
                && !b"aeiouls".contains(&bytes[n - 1]);
            return if doubled { &stemmed[..n - 1] } else { stemmed };
        }
    }
    word
}

/// Calls `visit` with every feature occurrence of a normalised text, in order; a feature that
/// occurs twice is visited twice. The `&str` lives only for the call.
fn for_each_text_feature(text: &str, visit: &mut impl FnMut(&str)) {
    let mut word = String::new();
    let mut cjk_run: Vec<char> = Vec::new();
    let flush_word = |word: &mut String, visit: &mut dyn FnMut(&str)| {
        if !word.is_empty() {
            let stemmed = stem(word);
            let dropped = [STOP_WORDS, CHAT_WORDS, question_type::INTERROGATIVES]
                .iter()
                .any(|list| list.contains(&stemmed) || list.contains(&word.as_str()));
            if !dropped {
                visit(stemmed);
            }
            word.clear();
        }
    };
    let flush_cjk = |run: &mut Vec<char>, visit: &mut dyn FnMut(&str)| {
        let mut buffer = [0_u8; 8];
        for (index, character) in run.iter().enumerate() {
            if !CJK_STOP_CHARS.contains(character) {
                visit(character.encode_utf8(&mut buffer));
            }
            if let Some(next) = run.get(index + 1) {
                if PARTICLES.contains(character) || PARTICLES.contains(next) {
                    continue;
                }
                let first = character.len_utf8();
                character.encode_utf8(&mut buffer);
                let second = next.encode_utf8(&mut buffer[first..]).len();
                if let Ok(bigram) = std::str::from_utf8(&buffer[..first + second]) {
                    visit(bigram);
                }
            }
        }
        run.clear();
    };
    for character in text.chars() {
        if is_cjk(character) {
            flush_word(&mut word, visit);
            cjk_run.push(character);
        } else if character.is_alphanumeric() {
            flush_cjk(&mut cjk_run, visit);
            word.extend(character.to_lowercase());
        } else if character == '\'' || character == '’' {
            // "don't" and "what's" stay one token without the apostrophe.
        } else {
            flush_word(&mut word, visit);
            flush_cjk(&mut cjk_run, visit);
        }
    }
    flush_word(&mut word, visit);
    flush_cjk(&mut cjk_run, visit);
}

/// Whether a text is mostly Chinese (or other CJK): more CJK characters than Latin words.
pub fn mostly_cjk(text: &str) -> bool {
    let (mut n_cjk, mut n_words, mut in_word) = (0, 0, false);
    for character in text.chars() {
        if is_cjk(character) {
            n_cjk += 1;
            in_word = false;
        } else if character.is_alphanumeric() {
            if !in_word {
                n_words += 1;
            }
            in_word = true;
        } else {
            in_word = false;
        }
    }
    n_cjk > n_words
}

/// Calls `visit` with every feature of a raw text: normalised words and characters, then the
/// term groups it mentions (as `~N`).
fn for_each_feature(terms: &TermList, text: &str, visit: &mut impl FnMut(&str)) {
    let normalized = normalize(text);
    for_each_text_feature(&normalized, visit);
    terms.for_each_group(&normalized, &mut |group| visit(&format!("~{group}")));
    question_type::for_each_type(&normalized, &mut |kind| visit(kind.feature()));
}

/// The features of a text with their counts (built-in term list only).
pub fn features(text: &str) -> HashMap<Feature, f32> {
    let terms = TermList::with_site_terms("");
    let mut counts: HashMap<Feature, f32> = HashMap::new();
    for_each_feature(&terms, text, &mut |feature| *counts.entry(feature.to_owned()).or_default() += 1.0);
    counts
}

/// The TF-IDF weight of a feature occurring `count` times (a typo counts less than once).
fn feature_weight(count: f32, idf: f32) -> f32 {
    (1.0 + count.max(0.5).ln()) * idf
}

/// A match of a message against one entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub entry_id: u64,
    /// What entries are ranked by: the better of the question cosine and the weighted answer
    /// cosine, plus [`ANSWER_EVIDENCE_WEIGHT`] times the answer cosine; 0 to 2.
    pub score: f32,
    /// The best cosine over the entry's question variants.
    pub question: f32,
    /// The cosine with the entry's answer.
    pub answer: f32,
    /// The share of the message (by squared TF-IDF weight) that the best-covering question holds.
    pub coverage: f32,
    /// The same for the answer.
    pub answer_coverage: f32,
    /// Whether the entry is written in the message's script (both mostly Chinese, or neither).
    pub same_script: bool,
    /// The share of the message that any of the entry's questions or its answer holds.
    pub union_coverage: f32,
    /// The share of the message (by squared TF-IDF weight) of its largest feature that none of
    /// the entry's texts holds, 0 when the entry holds them all: a near-miss asks about
    /// something the entry does not mention. Measured for the ranked entries only.
    pub missing: f32,
}

impl Scored {
    /// An entry the matcher did not find in the message (found by meaning alone).
    pub fn unmatched(entry_id: u64) -> Scored {
        Scored {
            entry_id,
            score: 0.0,
            question: 0.0,
            answer: 0.0,
            coverage: 0.0,
            answer_coverage: 0.0,
            same_script: true,
            union_coverage: 0.0,
            missing: 0.0,
        }
    }
}

/// What a message brought besides its ranking: how much of it the index knows at all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Best first.
    pub ranked: Vec<Scored>,
    /// The share of the message (by squared TF-IDF weight) made of features the index holds,
    /// typos included; 0 for an empty message.
    pub known_share: f32,
    /// How many feature occurrences the message has.
    pub n_features: usize,
    /// Whether the message is mostly Chinese.
    pub cjk: bool,
}

/// One variant holding a feature, with the feature's weight in the variant's normalised vector.
#[derive(Clone, Copy, Debug)]
struct Posting {
    variant: u32,
    weight: f32,
}

/// The inverted TF-IDF index of one site's entries. Immutable: a change builds a new one.
#[derive(Default)]
pub struct Index {
    terms: TermList,
    /// Feature → its number, which indexes `idfs` and `posting_starts`.
    feature_numbers: FxHashMap<Box<str>, u32>,
    /// Every one-deletion form of every Latin word of the vocabulary (and the word itself) → the
    /// words' feature numbers, for typos.
    deletions: FxHashMap<Box<str>, Vec<u32>>,
    /// Feature number → the feature, for checking a typo candidate.
    feature_texts: Vec<Box<str>>,
    /// Feature number → its inverse document frequency.
    idfs: Vec<f32>,
    /// Feature number → where its postings start in `postings`; one more element than features,
    /// so a feature's postings are `postings[starts[n]..starts[n + 1]]`.
    posting_starts: Vec<u32>,
    /// The postings of every feature, feature after feature, each in variant order.
    postings: Vec<Posting>,
    /// Variant number → the entry it belongs to, as a position in `entry_ids`.
    variant_entries: Vec<u32>,
    /// Variant number → whether it is the entry's answer (else a question).
    variant_is_answer: Vec<bool>,
    /// Entry position → the entry's id; ids are distinct.
    entry_ids: Vec<u64>,
    /// Variant number → whether it is mostly Chinese.
    variant_cjk: Vec<bool>,
    /// Entry position → its first and one past its last variant number (an entry's variants
    /// are numbered together).
    entry_variants: Vec<(u32, u32)>,
    /// Entry id → its position in `entry_ids`.
    entry_positions: FxHashMap<u64, u32>,
    /// The IDF of a feature no variant has: unknown words lower a message's score.
    unseen_idf: f32,
}

/// A query's working memory, sized to the largest index this thread has searched and kept
/// between queries, so a query allocates nothing proportional to the index. Every slot listed in
/// `touched_variants`/`touched_entries` may be non-zero; every other slot is zero.
#[derive(Default)]
struct Scratch {
    variant_scores: Vec<f32>,
    variant_coverage: Vec<f32>,
    touched_variants: Vec<u32>,
    /// Per entry: best question cosine, answer cosine, best question coverage, answer coverage,
    /// and 1 when the best question is in the message's script; cosines are weighted by
    /// [`OTHER_SCRIPT_WEIGHT`] when not.
    entry_scores: Vec<[f32; 5]>,
    touched_entries: Vec<u32>,
    /// Per entry: the share of the message any of its texts holds, and the number (from 1) of
    /// the last query feature counted in it.
    entry_union: Vec<(f32, u32)>,
    /// The query's known feature occurrences with their count (1, or [`TYPO_WEIGHT`]).
    known_features: Vec<(u32, f32)>,
    ranked: Vec<Scored>,
}

impl Scratch {
    /// Zeroes what the last query left and makes room for `index`.
    fn reset_for(&mut self, index: &Index) {
        for variant in self.touched_variants.drain(..) {
            self.variant_scores[variant as usize] = 0.0;
            self.variant_coverage[variant as usize] = 0.0;
        }
        for entry in self.touched_entries.drain(..) {
            self.entry_scores[entry as usize] = [0.0; 5];
            self.entry_union[entry as usize] = (0.0, 0);
        }
        if self.variant_scores.len() < index.variant_entries.len() {
            self.variant_scores.resize(index.variant_entries.len(), 0.0);
            self.variant_coverage.resize(index.variant_entries.len(), 0.0);
        }
        if self.entry_scores.len() < index.entry_ids.len() {
            self.entry_scores.resize(index.entry_ids.len(), [0.0; 5]);
            self.entry_union.resize(index.entry_ids.len(), (0.0, 0));
        }
        self.known_features.clear();
        self.ranked.clear();
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Whether a feature is a Latin word that may be read as a typo.
fn typo_candidate(feature: &str) -> bool {
    feature.len() >= MIN_TYPO_CHARS && feature.len() <= 30 && feature.bytes().all(|byte| byte.is_ascii_lowercase())
}

/// Every form of `word` with one character deleted.
fn deletions_of(word: &str) -> impl Iterator<Item = String> + '_ {
    (0..word.len()).map(move |position| format!("{}{}", &word[..position], &word[position + 1..]))
}

/// The optimal-string-alignment distance of two ASCII words, or `None` past `limit`.
pub(crate) fn edit_distance(a: &[u8], b: &[u8], limit: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let width = b.len() + 1;
    let mut rows = vec![0_usize; (a.len() + 1) * width];
    for (j, slot) in rows.iter_mut().take(width).enumerate() {
        *slot = j;
    }
    for i in 1..=a.len() {
        rows[i * width] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[(i - 1) * width + j] + 1)
                .min(rows[i * width + j - 1] + 1)
                .min(rows[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[(i - 2) * width + j - 2] + 1);
            }
            rows[i * width + j] = best;
        }
    }
    let distance = rows[a.len() * width + b.len()];
    (distance <= limit).then_some(distance)
}

impl Index {
    /// An index with the built-in term list only.
    pub fn build(entries: &[KbEntry]) -> Index {
        Index::build_with_terms(entries, TermList::with_site_terms(""))
    }

    pub fn build_with_terms(entries: &[KbEntry], terms: TermList) -> Index {
        let mut feature_numbers: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let mut entry_positions: FxHashMap<u64, u32> = FxHashMap::default();
        let mut entry_ids = Vec::new();
        let mut variant_cjk = Vec::new();
        let mut variant_entries = Vec::new();
        let mut variant_is_answer = Vec::new();
        // Per variant: (feature number, count), by feature number.
        let mut variant_features: Vec<Vec<(u32, f32)>> = Vec::new();
        for entry in entries {
            let entry_position = *entry_positions.entry(entry.id).or_insert_with(|| {
                entry_ids.push(entry.id);
                entry_ids.len() as u32 - 1
            });
            let texts = entry.questions.iter().map(|question| (question, false)).chain([(&entry.answer, true)]);
            for (text, is_answer) in texts {
                if is_answer && text.trim().is_empty() {
                    continue;
                }
                let mut numbers = Vec::new();
                for_each_feature(&terms, text, &mut |feature| {
                    let next = feature_numbers.len() as u32;
                    numbers.push(*feature_numbers.entry(feature.into()).or_insert(next));
                });
                variant_features.push(counted(&mut numbers));
                variant_entries.push(entry_position);
                variant_is_answer.push(is_answer);
                variant_cjk.push(mostly_cjk(text));
            }
        }
        let mut entry_variants = vec![(u32::MAX, 0_u32); entry_ids.len()];
        for (variant, entry) in variant_entries.iter().enumerate() {
            let range = &mut entry_variants[*entry as usize];
            range.0 = range.0.min(variant as u32);
            range.1 = range.1.max(variant as u32 + 1);
        }
        let n_features = feature_numbers.len();
        let mut feature_texts: Vec<Box<str>> = vec![Box::from(""); n_features];
        for (text, number) in &feature_numbers {
            feature_texts[*number as usize] = text.clone();
        }
        let mut deletions: FxHashMap<Box<str>, Vec<u32>> = FxHashMap::default();
        for (number, text) in feature_texts.iter().enumerate() {
            if typo_candidate(text) {
                deletions.entry(text.clone()).or_default().push(number as u32);
                for deleted in deletions_of(text) {
                    deletions.entry(deleted.into()).or_default().push(number as u32);
                }
            }
        }
        let mut document_frequencies = vec![0_u32; n_features];
        for features in &variant_features {
            for (feature, _) in features {
                document_frequencies[*feature as usize] += 1;
            }
        }
        let n_variants = variant_features.len() as f32;
        let idf = |df: u32| ((n_variants + 1.0) / (df as f32 + 1.0)).ln() + 1.0;
        // A feature's weight is its IDF times how much its kind of feature counts.
        let idfs: Vec<f32> = document_frequencies
            .iter()
            .zip(&feature_texts)
            .map(|(df, text)| {
                let kind_weight = if text.starts_with('?') {
                    QUESTION_TYPE_WEIGHT
                } else if text.starts_with('~') {
                    TERM_GROUP_WEIGHT
                } else {
                    1.0
                };
                idf(*df) * kind_weight
            })
            .collect();
        let mut posting_starts = Vec::with_capacity(n_features + 1);
        let mut start = 0_u32;
        for df in &document_frequencies {
            posting_starts.push(start);
            start += df;
        }
        posting_starts.push(start);
        let mut postings = vec![Posting { variant: 0, weight: 0.0 }; start as usize];
        let mut filled: Vec<u32> = posting_starts[..n_features].to_vec();
        for (variant, features) in variant_features.iter().enumerate() {
            let norm = features
                .iter()
                .map(|(feature, count)| feature_weight(*count, idfs[*feature as usize]).powi(2))
                .sum::<f32>()
                .sqrt();
            for (feature, count) in features {
                let slot = &mut filled[*feature as usize];
                let weight = feature_weight(*count, idfs[*feature as usize]) / norm;
                postings[*slot as usize] = Posting { variant: variant as u32, weight };
                *slot += 1;
            }
        }
        Index {
            terms,
            feature_numbers,
            deletions,
            feature_texts,
            idfs,
            posting_starts,
            postings,
            variant_entries,
            variant_is_answer,
            entry_ids,
            variant_cjk,
            entry_variants,
            entry_positions,
            unseen_idf: idf(0),
        }
    }

    /// The postings of a feature, in variant order.
    fn postings_of(&self, feature: u32) -> &[Posting] {
        &self.postings
            [self.posting_starts[feature as usize] as usize..self.posting_starts[feature as usize + 1] as usize]
    }

    pub fn n_variants(&self) -> usize {
        self.variant_entries.len()
    }

    /// The `limit` best entries for `text`, best first, each with its score.
    pub fn search(&self, text: &str, limit: usize) -> Vec<Scored> {
        self.query(text, limit).ranked
    }

    /// The `limit` best entries for `text` with what the calibration needs to know of the text.
    pub fn query(&self, text: &str, limit: usize) -> Query {
        SCRATCH.with_borrow_mut(|scratch| self.query_with(scratch, text, limit))
    }

    /// The vocabulary word a Latin word is most likely a typo of: the closest (one edit for
    /// words under eight letters, two from eight), then the most frequent.
    fn typo_of(&self, word: &str) -> Option<u32> {
        if !typo_candidate(word) {
            return None;
        }
        let limit = if word.len() >= 8 { 2 } else { 1 };
        let mut best: Option<(usize, f32, u32)> = None;
        let forms = std::iter::once(word.to_owned()).chain(deletions_of(word));
        for form in forms {
            let Some(candidates) = self.deletions.get(form.as_str()) else {
                continue;
            };
            for candidate in candidates {
                let text = &self.feature_texts[*candidate as usize];
                let Some(distance) = edit_distance(word.as_bytes(), text.as_bytes(), limit) else {
                    continue;
                };
                let key = (distance, self.idfs[*candidate as usize], *candidate);
                if best.is_none_or(|best| (key.0, key.1) < (best.0, best.1)) {
                    best = Some(key);
                }
            }
        }
        best.map(|(_, _, number)| number)
    }

    fn query_with(&self, scratch: &mut Scratch, text: &str, limit: usize) -> Query {
        scratch.reset_for(self);
        let mut unseen: Vec<String> = Vec::new();
        let mut n_features = 0;
        for_each_feature(&self.terms, text, &mut |feature| {
            n_features += 1;
            match self.feature_numbers.get(feature) {
                Some(number) => scratch.known_features.push((*number, 1.0)),
                None => match self.typo_of(feature) {
                    Some(number) => scratch.known_features.push((number, TYPO_WEIGHT)),
                    None => unseen.push(feature.to_owned()),
                },
            }
        });
        scratch.known_features.sort_unstable_by_key(|(number, _)| *number);
        let mut weights: Vec<(u32, f32)> = Vec::with_capacity(scratch.known_features.len());
        for run in scratch.known_features.chunk_by(|a, b| a.0 == b.0) {
            let count: f32 = run.iter().map(|(_, count)| count).sum();
            weights.push((run[0].0, feature_weight(count, self.idfs[run[0].0 as usize])));
        }
        unseen.sort_unstable();
        let mut unseen_squared = 0.0_f32;
        let mut unseen_largest = 0.0_f32;
        for run in unseen.chunk_by(|a, b| a == b) {
            let squared = feature_weight(run.len() as f32, self.unseen_idf).powi(2);
            unseen_squared += squared;
            unseen_largest = unseen_largest.max(squared);
        }
        let known_squared = weights.iter().map(|(_, weight)| weight * weight).sum::<f32>();
        let norm = (known_squared + unseen_squared).sqrt();
        if norm == 0.0 || limit == 0 {
            return Query { ranked: Vec::new(), known_share: 0.0, n_features, cjk: mostly_cjk(text) };
        }
        for (feature_position, (feature, weight)) in weights.iter().enumerate() {
            let weight = weight / norm;
            let stamp = feature_position as u32 + 1;
            for posting in self.postings_of(*feature) {
                let variant = posting.variant as usize;
                let union = &mut scratch.entry_union[self.variant_entries[variant] as usize];
                if union.1 != stamp {
                    *union = (union.0 + weight * weight, stamp);
                }
                if scratch.variant_coverage[variant] == 0.0 {
                    scratch.touched_variants.push(posting.variant);
                }
                scratch.variant_scores[variant] += weight * posting.weight;
                scratch.variant_coverage[variant] += weight * weight;
            }
        }
        let message_cjk = mostly_cjk(text);
        for variant in &scratch.touched_variants {
            let entry = self.variant_entries[*variant as usize];
            let scores = &mut scratch.entry_scores[entry as usize];
            if *scores == [0.0; 5] {
                scratch.touched_entries.push(entry);
            }
            let same_script = self.variant_cjk[*variant as usize] == message_cjk;
            let script_weight = if same_script { 1.0 } else { OTHER_SCRIPT_WEIGHT };
            let score = scratch.variant_scores[*variant as usize].min(1.0) * script_weight;
            let coverage = scratch.variant_coverage[*variant as usize].min(1.0);
            if self.variant_is_answer[*variant as usize] {
                scores[1] = score;
                scores[3] = coverage;
            } else {
                if score > scores[0] {
                    scores[0] = score;
                    scores[4] = f32::from(u8::from(same_script));
                }
                scores[2] = scores[2].max(coverage);
            }
        }
        scratch.ranked.extend(scratch.touched_entries.iter().map(|entry| {
            let [question, answer, coverage, answer_coverage, same_script] = scratch.entry_scores[*entry as usize];
            Scored {
                entry_id: self.entry_ids[*entry as usize],
                union_coverage: scratch.entry_union[*entry as usize].0.min(1.0),
                missing: 0.0,
                score: question.max(ANSWER_WEIGHT * answer) + ANSWER_EVIDENCE_WEIGHT * answer,
                question,
                answer,
                coverage,
                answer_coverage,
                same_script: same_script > 0.0,
            }
        }));
        let by_score = |a: &Scored, b: &Scored| b.score.total_cmp(&a.score).then(a.entry_id.cmp(&b.entry_id));
        let ranked = &mut scratch.ranked;
        if ranked.len() > limit {
            ranked.select_nth_unstable_by(limit - 1, by_score);
            ranked.truncate(limit);
        }
        ranked.sort_by(by_score);
        let squared_norm = norm * norm;
        let entry_positions: Vec<u32> = ranked
            .iter()
            .map(|scored| self.entry_positions.get(&scored.entry_id).copied().unwrap_or_default())
            .collect();
        for (scored, position) in ranked.iter_mut().zip(entry_positions) {
            let (first, end) = self.entry_variants[position as usize];
            let mut largest = unseen_largest;
            for (feature, weight) in &weights {
                let postings = self.postings_of(*feature);
                let at = postings.partition_point(|posting| posting.variant < first);
                if postings.get(at).is_none_or(|posting| posting.variant >= end) {
                    largest = largest.max(weight * weight);
                }
            }
            scored.missing = largest / squared_norm;
        }
        Query { ranked: ranked.clone(), known_share: known_squared / (norm * norm), n_features, cjk: message_cjk }
    }
}

/// Sorts feature numbers and counts each: `[7, 3, 7]` becomes `[(3, 1.0), (7, 2.0)]`.
fn counted(numbers: &mut [u32]) -> Vec<(u32, f32)> {
    numbers.sort_unstable();
    numbers.chunk_by(|a, b| a == b).map(|run| (run[0], run.len() as f32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, questions: &[&str]) -> KbEntry {
        KbEntry {
            id,
            questions: questions.iter().map(|question| (*question).to_owned()).collect(),
            ..KbEntry::default()
        }
    }

    #[test]
    fn features_cover_latin_words_and_cjk_bigrams() {
        let found = features("Refunds for 退货运费?");
        assert!(found.contains_key("refund"));
        assert!(!found.contains_key("for"));
        assert!(found.contains_key("退货") && found.contains_key("运费") && found.contains_key("货运"));
        assert!(found.contains_key("退"));
        assert_eq!(features("退款退款")["退款"], 2.0);
        assert!(!features("我的").contains_key("我") && features("我的").contains_key("我的"));
        // Interrogatives become the kind of question; particles make no bigram.
        let when = features("When will it ship?");
        assert!(!when.contains_key("when") && when.contains_key("?time"), "{when:?}");
        let arrived = features("到了吗");
        assert!(arrived.contains_key("到了") && !arrived.contains_key("了吗"), "{arrived:?}");
    }

    #[test]
    fn the_kind_of_question_and_the_answer_rank_the_entry_that_answers() {
        let mut refund = entry(1, &["When will I get my refund?"]);
        refund.answer = "Refunds reach your card within 5 business days.".into();
        let mut delivery = entry(2, &["How long does delivery take?"]);
        delivery.answer = "Orders arrive in 3 to 7 days.".into();
        let mut international = entry(3, &["Do you ship internationally?"]);
        international.answer = "We ship to Canada, the UK and Japan.".into();
        let index = Index::build(&[refund, delivery, international]);
        assert_eq!(index.search("When will my order be delivered?", 1)[0].entry_id, 2);
        let top = index.search("When will I get my refund for the lamp?", 3);
        assert_eq!(top[0].entry_id, 1);
        assert!(top[0].missing > 0.0 && top[0].union_coverage < 1.0, "{top:?}");
    }

    #[test]
    fn the_same_question_scores_one_and_an_unrelated_one_zero() {
        let index = Index::build(&[
            entry(1, &["How do I reset my password?", "忘记密码怎么办"]),
            entry(2, &["What are your opening hours?"]),
        ]);
        let exact = index.search("how do I reset my password", 3);
        assert_eq!(exact[0].entry_id, 1);
        assert!(exact[0].score > 0.99, "{exact:?}");
        let chinese = index.search("忘记密码怎么办", 3);
        assert_eq!(chinese[0].entry_id, 1);
        assert!(index.search("banana smoothie recipe", 3).is_empty());
        assert!(index.search("", 3).is_empty());
        assert!(index.search("reset password", 0).is_empty());
    }

    #[test]
    fn an_entry_scores_its_best_variant_and_queries_leave_nothing_behind() {
        let index = Index::build(&[
            entry(10, &["track my parcel", "where is my delivery"]),
            entry(20, &["parcel damaged on arrival"]),
            entry(30, &["change delivery address"]),
        ]);
        let ranked = index.search("where is my delivery", 3);
        assert_eq!(ranked[0].entry_id, 10);
        assert!(ranked[0].score > 0.99, "{ranked:?}");
        assert_eq!(ranked.iter().filter(|scored| scored.entry_id == 10).count(), 1);
        assert!(ranked.windows(2).all(|pair| pair[0].score >= pair[1].score));
        // A second, smaller index searched on the same thread starts from clean scores.
        let small = Index::build(&[entry(1, &["opening hours"])]);
        assert_eq!(small.search("delivery", 3), Vec::new());
        let again = index.search("where is my delivery", 3);
        assert_eq!(again, ranked);
        // Unknown words lower the score; they do not remove the match.
        let with_unknown = index.search("where is my delivery zebra", 1);
        assert_eq!(with_unknown[0].entry_id, 10);
        assert!(with_unknown[0].score < ranked[0].score);
    }
}
