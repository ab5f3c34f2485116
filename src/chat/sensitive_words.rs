//! The sensitive-word filter: each site lists words that are masked or make a message rejected.
//!
//! Matching uses one Aho-Corasick automaton per site (built when the site is loaded), so the cost
//! per message does not grow with the number of words. Matching ignores ASCII case.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};

/// What happens to a message that contains a listed word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensitiveMode {
    /// Each occurrence is replaced by `*`, one per character.
    #[default]
    Mask,
    /// The message is refused with `rejected_content`.
    Reject,
}

impl std::str::FromStr for SensitiveMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "mask" => Ok(SensitiveMode::Mask),
            "reject" => Ok(SensitiveMode::Reject),
            other => Err(format!("must be mask or reject, not {other:?}")),
        }
    }
}

/// The outcome of filtering one text.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Nothing matched; the text is unchanged.
    Clean,
    /// Words were masked; this is the text to store.
    Masked(String),
    /// A listed word appeared and the site rejects such messages.
    Rejected,
}

pub struct SensitiveWordFilter {
    automaton: Option<AhoCorasick>,
    mode: SensitiveMode,
}

impl SensitiveWordFilter {
    pub fn new(words: &[String], mode: SensitiveMode) -> SensitiveWordFilter {
        let words: Vec<&str> = words.iter().map(|word| word.trim()).filter(|word| !word.is_empty()).collect();
        let automaton = if words.is_empty() {
            None
        } else {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(&words)
                .ok()
        };
        SensitiveWordFilter { automaton, mode }
    }

    pub fn filter(&self, text: &str) -> Filtered {
        let Some(automaton) = &self.automaton else {
            return Filtered::Clean;
        };
        let mut matches = automaton.find_iter(text).peekable();
        if matches.peek().is_none() {
            return Filtered::Clean;
        }
        if self.mode == SensitiveMode::Reject {
            return Filtered::Rejected;
        }
        let mut masked = String::with_capacity(text.len());
        let mut copied_up_to = 0;
        for found in matches {
            masked.push_str(&text[copied_up_to..found.start()]);
            masked.extend(std::iter::repeat_n('*', text[found.start()..found.end()].chars().count()));
            copied_up_to = found.end();
        }
        masked.push_str(&text[copied_up_to..]);
        Filtered::Masked(masked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(words: &[&str], mode: SensitiveMode, input: &str, expected: Filtered) {
        let words: Vec<String> = words.iter().map(|word| (*word).to_owned()).collect();
        assert_eq!(SensitiveWordFilter::new(&words, mode).filter(input), expected);
    }

    #[test]
    fn masks_and_rejects_in_english_and_chinese() {
        check(&["scam"], SensitiveMode::Mask, "hello", Filtered::Clean);
        check(&["scam"], SensitiveMode::Mask, "a SCAM!", Filtered::Masked("a ****!".into()));
        check(&["傻瓜"], SensitiveMode::Mask, "你是傻瓜吗", Filtered::Masked("你是**吗".into()));
        check(&["傻瓜", "scam"], SensitiveMode::Reject, "你是傻瓜吗", Filtered::Rejected);
        check(&[], SensitiveMode::Reject, "anything", Filtered::Clean);
    }
}
