//! Matching a visitor's message against a site's knowledge base, for Chinese and English alike.
//!
//! Text becomes features: lowercase word tokens for Latin-script runs (with a light English
//! suffix stemmer and a short stop-word list), and character unigrams plus bigrams for CJK runs
//! (Chinese has no spaces; bigrams carry most of the meaning of two-character words).
//! Every question variant is a TF-IDF vector, normalised; a message's score against an entry is
//! the best cosine over the entry's variants, a number from 0 to 1.
//!
//! The index is inverted (feature → variants holding it with their weights), built once per
//! change of the site's entries and shared read-only, so a query touches only the postings of its
//! own features: matching against 10,000 entries takes well under a millisecond (BENCHMARKS.md).

use std::collections::HashMap;

use super::KbEntry;

/// English words too common to tell questions apart. IDF would mostly discount them, but with
/// few entries it cannot, and short questions are dominated by them.
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "i", "me", "my", "we",
    "our", "you", "your", "it", "its", "to", "of", "in", "on", "at", "for", "and", "or", "with", "can", "could",
    "would", "should", "will", "please", "hi", "hello", "hey", "there", "this", "that", "so", "just", "any", "some",
    "get", "have", "has", "there", "what", "s", "t", "m", "im", "u", "pls", "thanks", "thank",
];

/// Chinese characters that carry no topic on their own (particles, pronouns, politeness).
const CJK_STOP_CHARS: &[char] =
    &['的', '了', '吗', '呢', '吧', '啊', '我', '你', '您', '是', '在', '有', '请', '问', '么', '嘛', '呀', '哦', '和'];

/// One feature of a text; hashed strings keep the index compact.
pub type Feature = String;

fn is_cjk(character: char) -> bool {
    matches!(character as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x3040..=0x30FF | 0xAC00..=0xD7AF | 0x20000..=0x2A6DF)
}

/// Strips common English suffixes so "refunds", "refunded" and "refunding" meet.
fn stem(word: &str) -> &str {
    for suffix in ["ing", "ed", "es", "s"] {
        if word.len() > suffix.len() + 2 && word.ends_with(suffix) {
            let stemmed = &word[..word.len() - suffix.len()];
            if suffix == "s" && stemmed.ends_with('s') {
                return word;
            }
            return stemmed;
        }
    }
    word
}

/// The features of a text with their counts.
pub fn features(text: &str) -> HashMap<Feature, f32> {
    let mut counts: HashMap<Feature, f32> = HashMap::new();
    let mut word = String::new();
    let mut cjk_run: Vec<char> = Vec::new();
    let flush_word = |word: &mut String, counts: &mut HashMap<Feature, f32>| {
        if !word.is_empty() {
            let stemmed = stem(word);
            if !STOP_WORDS.contains(&stemmed) && !STOP_WORDS.contains(&word.as_str()) {
                *counts.entry(stemmed.to_owned()).or_default() += 1.0;
            }
            word.clear();
        }
    };
    let flush_cjk = |run: &mut Vec<char>, counts: &mut HashMap<Feature, f32>| {
        for (index, character) in run.iter().enumerate() {
            if !CJK_STOP_CHARS.contains(character) {
                *counts.entry(character.to_string()).or_default() += 1.0;
            }
            if let Some(next) = run.get(index + 1) {
                let mut bigram = String::with_capacity(8);
                bigram.push(*character);
                bigram.push(*next);
                *counts.entry(bigram).or_default() += 1.0;
            }
        }
        run.clear();
    };
    for character in text.chars() {
        if is_cjk(character) {
            flush_word(&mut word, &mut counts);
            cjk_run.push(character);
        } else if character.is_alphanumeric() {
            flush_cjk(&mut cjk_run, &mut counts);
            word.extend(character.to_lowercase());
        } else if character == '\'' || character == '’' {
            // "don't" and "what's" stay one token without the apostrophe.
        } else {
            flush_word(&mut word, &mut counts);
            flush_cjk(&mut cjk_run, &mut counts);
        }
    }
    flush_word(&mut word, &mut counts);
    flush_cjk(&mut cjk_run, &mut counts);
    counts
}

/// A match of a message against one entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub entry_id: u64,
    /// The best cosine over the entry's question variants, 0 to 1.
    pub score: f32,
}

/// The inverted TF-IDF index of one site's entries. Immutable: a change builds a new one.
#[derive(Default)]
pub struct Index {
    /// Feature → its inverse document frequency and postings (variant number, weight).
    postings: HashMap<Feature, (f32, Vec<(u32, f32)>)>,
    /// Variant number → the entry it belongs to.
    variant_entries: Vec<u64>,
    /// The IDF of a feature no variant has: unknown words lower a message's score.
    unseen_idf: f32,
}

impl Index {
    pub fn build(entries: &[KbEntry]) -> Index {
        let mut variant_features = Vec::new();
        let mut variant_entries = Vec::new();
        for entry in entries {
            for question in &entry.questions {
                variant_features.push(features(question));
                variant_entries.push(entry.id);
            }
        }
        let n_variants = variant_features.len() as f32;
        let mut document_frequency: HashMap<&str, u32> = HashMap::new();
        for features in &variant_features {
            for feature in features.keys() {
                *document_frequency.entry(feature.as_str()).or_default() += 1;
            }
        }
        let idf = |df: u32| ((n_variants + 1.0) / (df as f32 + 1.0)).ln() + 1.0;
        let idfs: HashMap<String, f32> =
            document_frequency.iter().map(|(feature, df)| ((*feature).to_owned(), idf(*df))).collect();
        let mut postings: HashMap<Feature, (f32, Vec<(u32, f32)>)> = HashMap::new();
        for (variant, features) in variant_features.iter().enumerate() {
            let weights: Vec<(&String, f32)> =
                features.iter().map(|(feature, count)| (feature, (1.0 + count.ln()) * idfs[feature])).collect();
            let norm = weights.iter().map(|(_, weight)| weight * weight).sum::<f32>().sqrt();
            if norm == 0.0 {
                continue;
            }
            for (feature, weight) in weights {
                postings
                    .entry(feature.clone())
                    .or_insert_with(|| (idfs[feature], Vec::new()))
                    .1
                    .push((variant as u32, weight / norm));
            }
        }
        Index { postings, variant_entries, unseen_idf: idf(0) }
    }

    pub fn n_variants(&self) -> usize {
        self.variant_entries.len()
    }

    /// The `limit` best entries for `text`, best first, each with its score.
    pub fn search(&self, text: &str, limit: usize) -> Vec<Scored> {
        let query = features(text);
        let mut weights = Vec::with_capacity(query.len());
        for (feature, count) in &query {
            let (idf, postings) = match self.postings.get(feature) {
                Some((idf, postings)) => (*idf, Some(postings)),
                None => (self.unseen_idf, None),
            };
            weights.push(((1.0 + count.ln()) * idf, postings));
        }
        let norm = weights.iter().map(|(weight, _)| weight * weight).sum::<f32>().sqrt();
        if norm == 0.0 {
            return Vec::new();
        }
        // Dense accumulators (a few hundred kilobytes at 10,000 entries) beat a hash map when
        // common features have long postings; `touched` lists what to read back.
        let mut scores = vec![0.0_f32; self.variant_entries.len()];
        let mut touched: Vec<u32> = Vec::new();
        for (weight, postings) in weights {
            let Some(postings) = postings else {
                continue;
            };
            let weight = weight / norm;
            for (variant, variant_weight) in postings {
                let score = &mut scores[*variant as usize];
                if *score == 0.0 {
                    touched.push(*variant);
                }
                *score += weight * variant_weight;
            }
        }
        let mut best: HashMap<u64, f32> = HashMap::with_capacity(touched.len().min(4096));
        for variant in touched {
            let entry_id = self.variant_entries[variant as usize];
            let best_score = best.entry(entry_id).or_default();
            *best_score = best_score.max(scores[variant as usize].min(1.0));
        }
        let mut ranked: Vec<Scored> = best.into_iter().map(|(entry_id, score)| Scored { entry_id, score }).collect();
        let by_score = |a: &Scored, b: &Scored| b.score.total_cmp(&a.score).then(a.entry_id.cmp(&b.entry_id));
        if ranked.len() > limit && limit > 0 {
            ranked.select_nth_unstable_by(limit - 1, by_score);
        }
        ranked.truncate(limit);
        ranked.sort_by(by_score);
        ranked
    }
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
    }
}
