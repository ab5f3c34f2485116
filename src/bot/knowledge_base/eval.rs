//! Evaluating the bot's matching on labelled visitor messages (`kefu kb eval`).
//!
//! A message file is JSON Lines, one `{"message", "expected", "lang", "kind"}` a line: `expected`
//! is the id of the entry that answers the message, or `null` when none does; `lang` and `kind`
//! (paraphrase, colloquial, typo, mixed, answer_only, near_miss, unrelated, or anything else)
//! only group the figures. Each message goes through [`SiteKnowledge::rank`], the ranking and
//! confidence the live bot answers from, and is answered when its top candidate's confidence
//! reaches the threshold. The report gives, per threshold, precision on answered messages,
//! recall on answerable ones, and how many near-misses and unrelated messages got an answer
//! (each a wrong answer), then the same per language and kind at the chosen threshold; the
//! precision–recall curve is drawn as an SVG.
//!
//! Entries come from a site's database or, without a server, from a JSON Lines file of
//! `{"id", "lang", "question", "answer", "variants"}` (tests/data/kb_eval holds two).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use rustc_hash::FxHashMap;

use super::calibration::{self, N_FEATURES, N_SEMANTIC_FEATURES};
use super::normalize::TermList;
use super::{EntryInput, KbEntry, SiteKnowledge};

/// The thresholds a report lists: 0.05 to 0.95 by 0.05, and `current` (a site's threshold or
/// the default) in its place when it is not one of them.
pub fn thresholds(current: f32) -> Vec<f32> {
    let mut steps: Vec<f32> = (1..=19).map(|step| step as f32 * 0.05).collect();
    if steps.iter().all(|step| (step - current).abs() >= 0.001) {
        steps.push(current);
        steps.sort_by(f32::total_cmp);
    }
    steps
}

/// A threshold as the reports list it: two decimals, three when two would round it (a site's
/// 0.925 is not listed as 0.93 beside figures computed at 0.925).
pub fn threshold_label(step: f32) -> String {
    let two = format!("{step:.2}");
    if two.parse::<f32>().is_ok_and(|rounded| (rounded - step).abs() < 0.0005) { two } else { format!("{step:.3}") }
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{file}: line {line}: {message}")]
    Line { file: String, line: usize, message: String },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

/// One entry of an entries file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalEntry {
    pub id: String,
    #[serde(default)]
    pub lang: String,
    pub question: String,
    pub answer: String,
    #[serde(default)]
    pub variants: Vec<String>,
    #[serde(default)]
    pub category: String,
}

/// One labelled message.
#[derive(Clone, Debug)]
pub struct EvalMessage {
    pub message: String,
    /// The id of the entry that answers it; `None` when none does.
    pub expected: Option<String>,
    pub lang: String,
    pub kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageLine {
    message: String,
    expected: Value,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// The non-blank lines of a JSON Lines text, numbered from 1.
fn json_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(index, line)| (index + 1, line.trim())).filter(|(_, line)| !line.is_empty())
}

/// Reads an entries file; every line must be a valid entry with a distinct id.
pub fn parse_entries(file: &str, text: &str) -> Result<Vec<EvalEntry>, EvalError> {
    let mut entries: Vec<EvalEntry> = Vec::new();
    let mut ids = HashSet::new();
    for (line, json) in json_lines(text) {
        let error = |message: String| EvalError::Line { file: file.to_owned(), line, message };
        let entry: EvalEntry = serde_json::from_str(json).map_err(|parse| error(parse.to_string()))?;
        if entry.id.trim().is_empty() {
            return Err(error("id: must not be empty".into()));
        }
        if !ids.insert(entry.id.clone()) {
            return Err(error(format!("id {:?} appears twice", entry.id)));
        }
        to_input(&entry).map_err(error)?;
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(EvalError::File { file: file.to_owned(), message: "holds no entries".into() });
    }
    Ok(entries)
}

fn to_input(entry: &EvalEntry) -> Result<EntryInput, String> {
    let mut questions = vec![entry.question.clone()];
    questions.extend(entry.variants.iter().cloned());
    EntryInput { questions, answer: entry.answer.clone(), category: entry.category.clone(), lang: entry.lang.clone() }
        .validate()
        .map_err(|error| error.to_string())
}

/// Reads a messages file; `known_ids`, when given, must hold every expected id.
pub fn parse_messages(
    file: &str,
    text: &str,
    known_ids: Option<&HashSet<String>>,
) -> Result<Vec<EvalMessage>, EvalError> {
    let mut messages = Vec::new();
    for (line, json) in json_lines(text) {
        let error = |message: String| EvalError::Line { file: file.to_owned(), line, message };
        let parsed: MessageLine = serde_json::from_str(json).map_err(|parse| error(parse.to_string()))?;
        if parsed.message.trim().is_empty() {
            return Err(error("message: must not be empty".into()));
        }
        let expected = match parsed.expected {
            Value::Null => None,
            Value::String(id) if !id.trim().is_empty() => Some(id),
            Value::Number(id) => Some(id.to_string()),
            _ => return Err(error("expected: must be an entry id (a string or number) or null".into())),
        };
        if let (Some(id), Some(known)) = (&expected, known_ids) {
            if !known.contains(id) {
                return Err(error(format!("expected: no entry has the id {id:?}")));
            }
        }
        messages.push(EvalMessage {
            message: parsed.message,
            expected,
            lang: parsed.lang.unwrap_or_default(),
            kind: parsed.kind.unwrap_or_default(),
        });
    }
    if messages.is_empty() {
        return Err(EvalError::File { file: file.to_owned(), message: "holds no messages".into() });
    }
    Ok(messages)
}

/// A site's knowledge built from an entries file, in memory; entry `n` (from 1) of the file gets
/// id `n`, and the returned names map ids back to the file's.
pub fn knowledge_from_entries(entries: &[EvalEntry], terms: &str) -> (SiteKnowledge, Vec<String>) {
    let kb_entries: Vec<KbEntry> = entries
        .iter()
        .enumerate()
        .map(|(position, entry)| {
            let input = to_input(entry).unwrap_or_default();
            KbEntry {
                id: position as u64 + 1,
                questions: input.questions,
                answer: input.answer,
                category: input.category,
                ..KbEntry::default()
            }
        })
        .collect();
    let names = entries.iter().map(|entry| entry.id.clone()).collect();
    (SiteKnowledge::build_with_terms(kb_entries, TermList::with_site_terms(terms)), names)
}

/// What the bot made of one message.
#[derive(Clone, Debug)]
pub struct Judged {
    pub message: EvalMessage,
    /// The top candidate's id (as the messages name entries) and confidence.
    pub top: Option<(String, f32)>,
}

impl Judged {
    fn answered(&self, threshold: f32) -> bool {
        self.top.as_ref().is_some_and(|(_, confidence)| *confidence >= threshold)
    }

    fn correct(&self, threshold: f32) -> bool {
        self.answered(threshold) && self.top.as_ref().map(|(id, _)| id) == self.message.expected.as_ref()
    }

    /// `ok` (the right entry answered), `wrong` (an entry answered that does not answer it),
    /// `missed` (the right entry below the threshold), `silent` (nothing answered, rightly),
    /// `lost` (the right entry is not the top one).
    pub fn outcome(&self, threshold: f32) -> &'static str {
        let right = self.top.as_ref().map(|(id, _)| id) == self.message.expected.as_ref();
        match (self.answered(threshold), self.message.expected.is_some(), right) {
            (true, _, true) => "ok",
            (true, _, false) => "wrong",
            (false, false, _) => "silent",
            (false, true, true) => "missed",
            (false, true, false) => "lost",
        }
    }
}

/// Runs every message through the bot's ranking; `name_of` turns an entry id into the name the
/// messages use.
pub fn judge(knowledge: &SiteKnowledge, messages: &[EvalMessage], name_of: impl Fn(u64) -> String) -> Vec<Judged> {
    messages
        .iter()
        .map(|message| {
            let top = knowledge
                .rank(&message.message, 1)
                .into_iter()
                .next()
                .map(|candidate| (name_of(candidate.entry_id), candidate.confidence));
            Judged { message: message.clone(), top }
        })
        .collect()
}

/// A message's cosine with each entry that has a vector, by entry id.
pub type Cosines = FxHashMap<u64, f32>;

/// [`judge`] with the semantic tier: every entry and message embedded through `settings`, ranked
/// as the bot ranks them when the site has an embeddings endpoint.
pub async fn judge_semantic(
    knowledge: &SiteKnowledge,
    messages: &[EvalMessage],
    name_of: impl Fn(u64) -> String,
    http: &reqwest::Client,
    settings: &crate::bot::embeddings::EmbeddingSettings,
) -> Result<Vec<Judged>, crate::bot::llm::LlmError> {
    use crate::bot::embeddings::{self, SiteVectors};
    let mut vectors = SiteVectors::default();
    for batch in knowledge.entries.chunks(embeddings::BATCH) {
        let texts: Vec<String> = batch.iter().map(embeddings::entry_text).collect();
        for (entry, vector) in batch.iter().zip(embeddings::embed(http, settings, &texts).await?) {
            vectors.by_entry.insert(entry.id, (0, vector));
        }
    }
    let mut cosines = Vec::with_capacity(messages.len());
    for batch in messages.chunks(embeddings::BATCH) {
        let texts: Vec<String> = batch.iter().map(|message| message.message.clone()).collect();
        for vector in embeddings::embed(http, settings, &texts).await? {
            cosines.push(
                knowledge
                    .entries
                    .iter()
                    .filter_map(|entry| vectors.similarity(entry.id, &vector).map(|cosine| (entry.id, cosine)))
                    .collect(),
            );
        }
    }
    Ok(judge_fused(knowledge, messages, &cosines, name_of, &FusedCoefficients::SHIPPED))
}

/// The two calibrations the semantic tier ranks with: the lexical one, whose log-odds are one of
/// its features, and its own.
#[derive(Clone, Copy, Debug)]
pub struct FusedCoefficients {
    pub lexical: [f64; N_FEATURES + 1],
    pub semantic: [f64; N_SEMANTIC_FEATURES + 1],
}

impl FusedCoefficients {
    /// What the bot ships.
    pub const SHIPPED: FusedCoefficients =
        FusedCoefficients { lexical: calibration::COEFFICIENTS, semantic: calibration::SEMANTIC_COEFFICIENTS };
}

/// Judges each message (with its cosines, in the same order) by the semantic tier's ranking
/// under `coefficients`, as the live bot ranks (`SiteKnowledge::rank_fused`).
pub fn judge_fused(
    knowledge: &SiteKnowledge,
    messages: &[EvalMessage],
    cosines: &[Cosines],
    name_of: impl Fn(u64) -> String,
    coefficients: &FusedCoefficients,
) -> Vec<Judged> {
    messages
        .iter()
        .zip(cosines)
        .map(|(message, cosines)| {
            let similarity = |entry_id: u64| cosines.get(&entry_id).copied();
            let top = knowledge
                .rank_fused_with(&message.message, 1, similarity, &coefficients.lexical, &coefficients.semantic)
                .into_iter()
                .next()
                .map(|candidate| (name_of(candidate.entry_id), candidate.confidence));
            Judged { message: message.clone(), top }
        })
        .collect()
}

/// The semantic calibration's training samples, with lexical log-odds under `lexical`: every
/// candidate of every message, or with `chosen_by`, each message's top candidate under those
/// coefficients, chosen as the live ranking chooses (the one a threshold judges), labelled by
/// whether it is the expected entry.
pub fn semantic_samples(
    set: &LabelledSet<'_>,
    cosines: &[Cosines],
    lexical: &[f64; N_FEATURES + 1],
    chosen_by: Option<&[f64; N_SEMANTIC_FEATURES + 1]>,
) -> Vec<([f64; N_SEMANTIC_FEATURES], bool)> {
    let mut samples = Vec::new();
    for (message, cosines) in set.messages.iter().zip(cosines) {
        let similarity = |entry_id: u64| cosines.get(&entry_id).copied();
        let Some(candidates) = set.knowledge.fused_candidates(&message.message, similarity, lexical) else {
            continue;
        };
        let labelled = candidates.iter().map(|candidate| {
            let correct = message.expected.as_ref() == Some(&set.name_of(candidate.scored.entry_id));
            (candidate, (candidate.features, correct))
        });
        match chosen_by {
            None => samples.extend(labelled.map(|(_, sample)| sample)),
            Some(coefficients) => {
                let confidence = |candidate: &super::FusedCandidate| {
                    calibration::probability(coefficients, &candidate.features) as f32
                };
                let top = labelled.min_by(|(a, _), (b, _)| {
                    confidence(b).total_cmp(&confidence(a)).then(a.scored.entry_id.cmp(&b.scored.entry_id))
                });
                samples.extend(top.map(|(_, sample)| sample));
            }
        }
    }
    samples
}

/// Fits the semantic calibration over the lexical log-odds under `lexical`: first on every
/// candidate, then on the top candidates that fit chooses, which are the ones a threshold judges.
pub fn fit_semantic(
    sets: &[(LabelledSet<'_>, &[Cosines])],
    lexical: &[f64; N_FEATURES + 1],
    l2: f64,
) -> [f64; N_SEMANTIC_FEATURES + 1] {
    let every: Vec<_> = sets.iter().flat_map(|(set, cosines)| semantic_samples(set, cosines, lexical, None)).collect();
    let first = calibration::fit(&every, l2);
    let tops: Vec<_> =
        sets.iter().flat_map(|(set, cosines)| semantic_samples(set, cosines, lexical, Some(&first))).collect();
    calibration::fit(&tops, l2)
}

/// [`cross_business`] for the semantic tier: each set judged by both calibrations fitted on the
/// other sets alone (the lexical one first, then the semantic one over its log-odds).
pub fn cross_business_semantic(sets: &[(LabelledSet<'_>, &[Cosines])], l2: f64) -> Vec<Judged> {
    let mut judged = Vec::new();
    for (held, (set, cosines)) in sets.iter().enumerate() {
        let training: Vec<(LabelledSet<'_>, &[Cosines])> = sets
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != held)
            .map(|(_, (set, cosines))| (set.clone(), *cosines))
            .collect();
        let lexical_samples: Vec<_> = training
            .iter()
            .flat_map(|(set, _)| calibration_samples(set.knowledge, set.messages, |id| set.name_of(id)))
            .collect();
        let lexical = calibration::fit(&lexical_samples, l2);
        let coefficients = FusedCoefficients { lexical, semantic: fit_semantic(&training, &lexical, l2) };
        judged.extend(judge_fused(set.knowledge, set.messages, cosines, |id| set.name_of(id), &coefficients));
    }
    judged
}

/// [`judge`] with other calibration coefficients (to see a refit before shipping it).
pub fn judge_with(
    knowledge: &SiteKnowledge,
    messages: &[EvalMessage],
    name_of: impl Fn(u64) -> String,
    coefficients: &[f64; N_FEATURES + 1],
) -> Vec<Judged> {
    messages
        .iter()
        .map(|message| {
            let query = knowledge.index.query(&message.message, super::RANK_DEPTH);
            let top = (!query.ranked.is_empty()).then(|| {
                let confidence = calibration::probability(coefficients, &calibration::features(&query, 0));
                (name_of(query.ranked[0].entry_id), confidence as f32)
            });
            Judged { message: message.clone(), top }
        })
        .collect()
}

/// The calibration's training samples: each message's top candidate, labelled by whether it is
/// the expected entry.
pub fn calibration_samples(
    knowledge: &SiteKnowledge,
    messages: &[EvalMessage],
    name_of: impl Fn(u64) -> String,
) -> Vec<([f64; N_FEATURES], bool)> {
    let mut samples = Vec::new();
    for message in messages {
        let query = knowledge.index.query(&message.message, super::RANK_DEPTH);
        if query.ranked.is_empty() {
            continue;
        }
        let correct = message.expected.as_ref() == Some(&name_of(query.ranked[0].entry_id));
        samples.push((calibration::features(&query, 0), correct));
    }
    samples
}

/// One business's labelled messages with the knowledge they are matched against, for
/// cross-validating the calibration.
#[derive(Clone)]
pub struct LabelledSet<'a> {
    pub knowledge: &'a SiteKnowledge,
    pub messages: &'a [EvalMessage],
    /// Entry id `n` is named `names[n - 1]`, as [`knowledge_from_entries`] numbers them.
    pub names: &'a [String],
}

impl LabelledSet<'_> {
    pub fn name_of(&self, id: u64) -> String {
        self.names.get((id as usize).wrapping_sub(1)).cloned().unwrap_or_default()
    }
}

/// A stable fold number for a message (FNV-1a of its text), so folds do not depend on file order.
fn fold_of(message: &EvalMessage, folds: usize) -> usize {
    let hash = message
        .message
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    (hash % folds.max(1) as u64) as usize
}

/// Out-of-fold judgements: the messages of every set are dealt into `folds` folds by a hash of
/// their text, and each fold is judged with a calibration fitted (`l2`) on the other folds only,
/// so the figures estimate how the calibration does on messages it was not fitted on.
pub fn cross_validate(sets: &[LabelledSet<'_>], folds: usize, l2: f64) -> Vec<Judged> {
    let mut judged = Vec::new();
    for fold in 0..folds {
        let mut samples = Vec::new();
        for set in sets {
            let training: Vec<EvalMessage> =
                set.messages.iter().filter(|message| fold_of(message, folds) != fold).cloned().collect();
            samples.extend(calibration_samples(set.knowledge, &training, |id| set.name_of(id)));
        }
        let coefficients = calibration::fit(&samples, l2);
        for set in sets {
            let held: Vec<EvalMessage> =
                set.messages.iter().filter(|message| fold_of(message, folds) == fold).cloned().collect();
            judged.extend(judge_with(set.knowledge, &held, |id| set.name_of(id), &coefficients));
        }
    }
    judged
}

/// Leave-one-business-out judgements: each set is judged with a calibration fitted on the
/// other sets only, the estimate for a knowledge base the calibration has never seen.
pub fn cross_business(sets: &[LabelledSet<'_>], l2: f64) -> Vec<Judged> {
    let mut judged = Vec::new();
    for (held, set) in sets.iter().enumerate() {
        let mut samples = Vec::new();
        for (other, training) in sets.iter().enumerate() {
            if other != held {
                samples.extend(calibration_samples(training.knowledge, training.messages, |id| training.name_of(id)));
            }
        }
        let coefficients = calibration::fit(&samples, l2);
        judged.extend(judge_with(set.knowledge, set.messages, |id| set.name_of(id), &coefficients));
    }
    judged
}

/// The share of answerable messages whose top-ranked entry is the expected one, whatever its
/// confidence: the ceiling of recall at any threshold.
pub fn top_accuracy(judged: &[&Judged]) -> f64 {
    let answerable: Vec<_> = judged.iter().filter(|one| one.message.expected.is_some()).collect();
    let right =
        answerable.iter().filter(|one| one.top.as_ref().map(|(id, _)| id) == one.message.expected.as_ref()).count();
    share(right, answerable.len()).unwrap_or(1.0)
}

/// The figures of a set of messages at one threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub threshold: f32,
    pub n_messages: usize,
    pub n_answerable: usize,
    pub n_answered: usize,
    pub n_correct: usize,
    /// Correct among answered; 1 when nothing was answered.
    pub precision: f64,
    /// Correct among answerable; 1 when nothing was answerable.
    pub recall: f64,
    /// Answered near-misses among near-misses (every one a wrong answer); `None` without any.
    pub near_miss_answered: Option<f64>,
    /// Answered unrelated messages among them; `None` without any.
    pub unrelated_answered: Option<f64>,
}

fn share(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The figures of `judged` at `threshold`.
pub fn figures(judged: &[&Judged], threshold: f32) -> Figures {
    let n_answerable = judged.iter().filter(|one| one.message.expected.is_some()).count();
    let n_answered = judged.iter().filter(|one| one.answered(threshold)).count();
    let n_correct = judged.iter().filter(|one| one.correct(threshold)).count();
    let of_kind = |kind: &str| {
        let all: Vec<_> = judged.iter().filter(|one| one.message.kind == kind).collect();
        share(all.iter().filter(|one| one.answered(threshold)).count(), all.len())
    };
    Figures {
        threshold,
        n_messages: judged.len(),
        n_answerable,
        n_answered,
        n_correct,
        precision: share(n_correct, n_answered).unwrap_or(1.0),
        recall: share(n_correct, n_answerable).unwrap_or(1.0),
        near_miss_answered: of_kind("near_miss"),
        unrelated_answered: of_kind("unrelated"),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |value| format!("{:.1}%", value * 100.0))
}

fn figures_line(label: &str, figures: &Figures) -> String {
    format!(
        "{label:<14} {:>5} {:>8} {:>8} {:>9.3} {:>7.3} {:>10} {:>10}",
        figures.n_messages,
        figures.n_answered,
        figures.n_correct,
        figures.precision,
        figures.recall,
        percent(figures.near_miss_answered),
        percent(figures.unrelated_answered)
    )
}

const HEADER: &str = "               messages answered  correct precision  recall  near-miss  unrelated\n                                                                answered   answered";

/// The report: every threshold, then each language and kind at `threshold`.
pub fn report(judged: &[Judged], threshold: f32) -> String {
    let all: Vec<&Judged> = judged.iter().collect();
    let mut text = String::new();
    let _ = writeln!(text, "By threshold (all messages):\n{HEADER}");
    for step in thresholds(threshold) {
        let _ = writeln!(text, "{}", figures_line(&threshold_label(step), &figures(&all, step)));
    }
    let _ = writeln!(text, "\nAt threshold {threshold:.2}:\n{HEADER}");
    let _ = writeln!(text, "{}", figures_line("all", &figures(&all, threshold)));
    for (label, members) in groups(judged) {
        let _ = writeln!(text, "{}", figures_line(&label, &figures(&members, threshold)));
    }
    text
}

/// The messages grouped by language (`lang zh`) and by kind (`kind typo`), in that order.
pub fn groups(judged: &[Judged]) -> BTreeMap<String, Vec<&Judged>> {
    let mut groups: BTreeMap<String, Vec<&Judged>> = BTreeMap::new();
    for one in judged {
        groups.entry(format!("lang {}", one.message.lang)).or_default().push(one);
    }
    for one in judged {
        groups.entry(format!("kind {}", one.message.kind)).or_default().push(one);
    }
    groups
}

/// The words of a curve, so a page can draw it in its own language.
pub struct CurveLabels {
    pub recall: &'static str,
    pub precision: &'static str,
    pub threshold: &'static str,
}

/// The labels `kefu kb eval` draws with.
pub const ENGLISH_LABELS: CurveLabels =
    CurveLabels { recall: "recall", precision: "precision", threshold: "threshold" };

/// Every message with its top entry, confidence and [`Judged::outcome`].
pub fn listing(judged: &[Judged], threshold: f32) -> String {
    let mut text = String::new();
    for one in judged {
        let (top, confidence) = one.top.clone().unwrap_or_default();
        let outcome = one.outcome(threshold);
        let expected = one.message.expected.as_deref().unwrap_or("-");
        let _ = writeln!(
            text,
            "{outcome:<6} {confidence:.3} top={top:<12} expected={expected:<12} {}/{} {}",
            one.message.lang, one.message.kind, one.message.message
        );
    }
    text
}

/// The precision–recall curve over thresholds 0.01 to 0.99, as a self-contained SVG with the
/// threshold `marked` highlighted.
pub fn curve_svg(judged: &[Judged], marked: f32, title: &str, labels: &CurveLabels) -> String {
    const WIDTH: f64 = 480.0;
    const HEIGHT: f64 = 440.0;
    const LEFT: f64 = 60.0;
    const TOP: f64 = 40.0;
    const SIZE: f64 = 320.0;
    let all: Vec<&Judged> = judged.iter().collect();
    let x = |recall: f64| LEFT + recall * SIZE;
    let y = |precision: f64| TOP + (1.0 - precision) * SIZE;
    let points: Vec<Figures> = (1..=99).map(|step| figures(&all, step as f32 / 100.0)).collect();
    let path: Vec<String> =
        points.iter().map(|point| format!("{:.1},{:.1}", x(point.recall), y(point.precision))).collect();
    let escaped = title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} \
         {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"24\" font-size=\"14\">{escaped}</text>\n"
    );
    for tick in 0..=10 {
        let value = f64::from(tick) / 10.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{TOP}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><line x1=\"{LEFT}\" \
             y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
            x(value),
            x(value),
            TOP + SIZE,
            y(value),
            LEFT + SIZE,
            y(value)
        );
        if tick % 2 == 0 {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{value:.1}</text><text x=\"{:.1}\" \
                 y=\"{:.1}\" text-anchor=\"end\">{value:.1}</text>",
                x(value),
                TOP + SIZE + 16.0,
                LEFT - 6.0,
                y(value) + 4.0
            );
        }
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{SIZE}\" height=\"{SIZE}\" fill=\"none\" stroke=\"#333\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n<text x=\"16\" y=\"{:.1}\" \
         transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">{}</text>\n<polyline points=\"{}\" \
         fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>",
        LEFT + SIZE / 2.0,
        TOP + SIZE + 34.0,
        labels.recall,
        TOP + SIZE / 2.0,
        TOP + SIZE / 2.0,
        labels.precision,
        path.join(" ")
    );
    let at = figures(&all, marked);
    let _ = writeln!(
        svg,
        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#d62728\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" \
         fill=\"#d62728\">{} {marked:.2}: {} {:.3}, {} {:.3}</text>\n</svg>",
        x(at.recall),
        y(at.precision),
        LEFT + 8.0,
        TOP + SIZE + 54.0,
        labels.threshold,
        labels.precision,
        at.precision,
        labels.recall,
        at.recall
    );
    svg
}

/// `kefu kb eval`'s arguments.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The site whose entries and bot settings to use (the server must be stopped).
    #[arg(long, conflicts_with = "entries", required_unless_present = "entries")]
    pub site: Option<String>,
    /// A JSON Lines file of entries to match against instead of a site's (no database needed).
    #[arg(long)]
    pub entries: Option<PathBuf>,
    /// The threshold to report per language and kind (default: the site's, or the default).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Where to write the precision–recall curve.
    #[arg(long, default_value = "kb-eval-curve.svg")]
    pub curve: PathBuf,
    /// Also print every message with its top entry, confidence and outcome at the threshold.
    #[arg(long)]
    pub list: bool,
    /// Rank with the semantic tier too: an OpenAI-compatible embeddings API's base URL, such as
    /// http://127.0.0.1:11434/v1 (its key, if any, in KEFU_EMBEDDINGS_KEY).
    #[arg(long, requires = "embeddings_model")]
    pub embeddings_url: Option<String>,
    /// The embeddings model, such as bge-m3.
    #[arg(long)]
    pub embeddings_model: Option<String>,
    /// The JSON Lines file of labelled messages.
    pub file: PathBuf,
}

fn read(path: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Runs `kefu kb eval`: prints the report and writes the curve. `store` is the opened database
/// when `args.site` names a site (the caller opens it: the command line owns the process).
pub async fn run_cli(args: EvalArgs, store: Option<crate::storage::Store>) -> anyhow::Result<()> {
    use anyhow::Context;
    let default_threshold = crate::bot::BotSettings::default().threshold;
    let (knowledge, names, threshold) = match (&args.entries, &args.site, store) {
        (Some(path), _, _) => {
            let entries = parse_entries(&path.display().to_string(), &read(path)?)?;
            let (knowledge, names) = knowledge_from_entries(&entries, "");
            (knowledge, Some(names), args.threshold.unwrap_or(default_threshold))
        }
        (None, Some(site), Some(store)) => {
            let key = site.clone();
            let loaded = store
                .read(move |transaction| {
                    let exists = transaction.open_table(crate::storage::tables::SITES)?.get(key.as_str())?.is_some();
                    let settings = crate::bot::read_settings(transaction, &key)?;
                    Ok((exists, super::list(transaction, &key)?, settings))
                })
                .await;
            store.shutdown().await;
            let (exists, entries, settings) = loaded.context("reading the site's entries")?;
            anyhow::ensure!(exists, "no site has the key {site}");
            anyhow::ensure!(!entries.is_empty(), "the site {site} has no knowledge-base entries");
            let knowledge = SiteKnowledge::build_with_terms(entries, TermList::with_site_terms(&settings.terms));
            (knowledge, None, args.threshold.unwrap_or(settings.threshold))
        }
        _ => anyhow::bail!("name a site with --site or an entries file with --entries"),
    };
    anyhow::ensure!((0.0..=1.0).contains(&threshold), "--threshold must be a number from 0 to 1");
    let known: HashSet<String> = match &names {
        Some(names) => names.iter().cloned().collect(),
        None => knowledge.entries.iter().map(|entry| entry.id.to_string()).collect(),
    };
    let messages = parse_messages(&args.file.display().to_string(), &read(&args.file)?, Some(&known))?;
    let name_of = |id: u64| match &names {
        Some(names) => names.get(id as usize - 1).cloned().unwrap_or_default(),
        None => id.to_string(),
    };
    let judged = match (&args.embeddings_url, &args.embeddings_model) {
        (Some(url), Some(model)) => {
            let settings = crate::bot::embeddings::EmbeddingSettings {
                base_url: url.clone(),
                model: model.clone(),
                api_key: std::env::var("KEFU_EMBEDDINGS_KEY").unwrap_or_default(),
                timeout_ms: 60_000,
            };
            settings.validate().map_err(|message| anyhow::anyhow!(message))?;
            let http = crate::base::outbound::client(std::time::Duration::from_secs(120), true)
                .map_err(|error| anyhow::anyhow!("building the HTTP client: {error}"))?;
            judge_semantic(&knowledge, &messages, name_of, &http, &settings).await.context("embedding")?
        }
        _ => judge(&knowledge, &messages, name_of),
    };
    if args.list {
        print!("{}", listing(&judged, threshold));
    }
    print!("{}", report(&judged, threshold));
    let file_name =
        args.file.file_name().map_or_else(|| args.file.display().to_string(), |name| name.to_string_lossy().into());
    let title = format!("{file_name} ({} messages)", messages.len());
    std::fs::write(&args.curve, curve_svg(&judged, threshold, &title, &ENGLISH_LABELS))
        .with_context(|| format!("writing {}", args.curve.display()))?;
    println!("\nprecision–recall curve: {}", args.curve.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str, expected: Option<&str>) -> EvalMessage {
        EvalMessage { message: text.into(), expected: expected.map(Into::into), lang: "en".into(), kind: String::new() }
    }

    #[test]
    fn each_outcome_is_named_for_what_happened() {
        let judged = |expected: Option<&str>, top: Option<(&str, f32)>| Judged {
            message: message("m", expected),
            top: top.map(|(id, confidence)| (id.to_owned(), confidence)),
        };
        let cases = [
            (judged(Some("a"), Some(("a", 0.95))), "ok"),
            (judged(Some("a"), Some(("b", 0.95))), "wrong"),
            (judged(None, Some(("b", 0.95))), "wrong"),
            (judged(Some("a"), Some(("a", 0.5))), "missed"),
            (judged(Some("a"), Some(("b", 0.5))), "lost"),
            (judged(Some("a"), None), "lost"),
            (judged(None, Some(("b", 0.5))), "silent"),
            // Nothing matched a message nothing answers: rightly silent, not a miss.
            (judged(None, None), "silent"),
        ];
        for (one, outcome) in cases {
            assert_eq!(one.outcome(0.9), outcome, "{:?} {:?}", one.message.expected, one.top);
        }
    }

    #[test]
    fn the_current_threshold_is_listed_in_its_place() {
        assert_eq!(thresholds(0.8).len(), 19);
        let with_current = thresholds(0.92);
        assert_eq!(with_current.len(), 20);
        assert!(with_current.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(with_current.contains(&0.92));
        let labels: Vec<String> = [0.05, 0.92, 0.925].map(threshold_label).into();
        assert_eq!(labels, ["0.05", "0.92", "0.925"]);
    }

    #[test]
    fn cross_validation_judges_every_message_once() {
        let entries =
            [("a", "How much is shipping?", "Shipping is $5."), ("b", "Can I return an item?", "Within 30 days.")].map(
                |(id, question, answer)| EvalEntry {
                    id: id.into(),
                    lang: "en".into(),
                    question: question.into(),
                    answer: answer.into(),
                    variants: Vec::new(),
                    category: String::new(),
                },
            );
        let (knowledge, names) = knowledge_from_entries(&entries, "");
        let messages = vec![
            message("shipping cost", Some("a")),
            message("what does shipping cost", Some("a")),
            message("return an item", Some("b")),
            message("can I return it", Some("b")),
            message("banana bread", None),
            message("shipping to mars", None),
        ];
        let sets = [LabelledSet { knowledge: &knowledge, messages: &messages, names: &names }];
        for judged in [cross_validate(&sets, 3, 1.0), cross_business(&sets, 1.0)] {
            let mut seen: Vec<&str> = judged.iter().map(|one| one.message.message.as_str()).collect();
            seen.sort_unstable();
            let mut expected: Vec<&str> = messages.iter().map(|one| one.message.as_str()).collect();
            expected.sort_unstable();
            assert_eq!(seen, expected);
        }
        let judged = judge(&knowledge, &messages, |id| names[id as usize - 1].clone());
        let all: Vec<&Judged> = judged.iter().collect();
        assert!((top_accuracy(&all) - 1.0).abs() < 1e-9, "{}", listing(&judged, 0.5));
    }
}
