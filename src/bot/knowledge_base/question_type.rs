//! What kind of answer a question asks for: a time, a price, a place, a way of doing something,
//! a permission, a choice or a reason, in Chinese and English.
//!
//! Two questions about the same things can ask different questions ("When will my order
//! arrive?" and "Where is my order?"), and two questions that share no topic word can share
//! only their interrogatives ("When will my order be delivered?" and "When will I get my
//! refund?"). The matcher therefore drops interrogative words from the word features and gives
//! a text one feature per kind of question it asks ([`for_each_type`]), so "when", "how long",
//! 多久, 几天 and 什么时候 all meet as one "time" question, weighted by IDF like any feature.
//! The cues are general interrogatives, not words of any one business.

/// A kind of question, written into the feature as `?NAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuestionType {
    /// When, how long, what time.
    Time,
    /// How much, what price or fee.
    Cost,
    /// Where.
    Place,
    /// How to, what to do.
    Procedure,
    /// Can I, may I, is it allowed, do you offer.
    Permission,
    /// What, which.
    Choice,
    /// Why.
    Reason,
}

impl QuestionType {
    pub fn feature(self) -> &'static str {
        match self {
            QuestionType::Time => "?time",
            QuestionType::Cost => "?cost",
            QuestionType::Place => "?place",
            QuestionType::Procedure => "?how",
            QuestionType::Permission => "?can",
            QuestionType::Choice => "?what",
            QuestionType::Reason => "?why",
        }
    }
}

/// English cues, as whole-word sequences of a lowercase text.
const ENGLISH_CUES: &[(&str, QuestionType)] = &[
    ("when", QuestionType::Time),
    ("how long", QuestionType::Time),
    ("how soon", QuestionType::Time),
    ("how many days", QuestionType::Time),
    ("how many hours", QuestionType::Time),
    ("what time", QuestionType::Time),
    ("what day", QuestionType::Time),
    ("how quickly", QuestionType::Time),
    ("how fast", QuestionType::Time),
    ("how much", QuestionType::Cost),
    ("how expensive", QuestionType::Cost),
    ("price", QuestionType::Cost),
    ("prices", QuestionType::Cost),
    ("cost", QuestionType::Cost),
    ("costs", QuestionType::Cost),
    ("fee", QuestionType::Cost),
    ("fees", QuestionType::Cost),
    ("charge", QuestionType::Cost),
    ("charges", QuestionType::Cost),
    ("where", QuestionType::Place),
    ("wheres", QuestionType::Place),
    ("how do", QuestionType::Procedure),
    ("how can", QuestionType::Procedure),
    ("how to", QuestionType::Procedure),
    ("how should", QuestionType::Procedure),
    ("what should", QuestionType::Procedure),
    ("what do i do", QuestionType::Procedure),
    ("can i", QuestionType::Permission),
    ("can we", QuestionType::Permission),
    ("can you", QuestionType::Permission),
    ("could i", QuestionType::Permission),
    ("could you", QuestionType::Permission),
    ("may i", QuestionType::Permission),
    ("is it possible", QuestionType::Permission),
    ("allowed", QuestionType::Permission),
    ("do you", QuestionType::Permission),
    ("do you have", QuestionType::Permission),
    ("is there", QuestionType::Permission),
    ("are there", QuestionType::Permission),
    ("what", QuestionType::Choice),
    ("whats", QuestionType::Choice),
    ("which", QuestionType::Choice),
    ("why", QuestionType::Reason),
    ("how", QuestionType::Procedure),
];

/// Chinese cues, as substrings of a normalised text (colloquial forms are already folded:
/// 咋 is 怎么, 啥时候 is 什么时候, 能不能 is 能).
const CHINESE_CUES: &[(&str, QuestionType)] = &[
    ("为什么", QuestionType::Reason),
    ("什么地方", QuestionType::Place),
    ("多久", QuestionType::Time),
    ("几天", QuestionType::Time),
    ("几点", QuestionType::Time),
    ("什么时候", QuestionType::Time),
    ("何时", QuestionType::Time),
    ("几时", QuestionType::Time),
    ("多少天", QuestionType::Time),
    ("几个小时", QuestionType::Time),
    ("多少钱", QuestionType::Cost),
    ("价格", QuestionType::Cost),
    ("价钱", QuestionType::Cost),
    ("费用", QuestionType::Cost),
    ("收费", QuestionType::Cost),
    ("多少费", QuestionType::Cost),
    ("几块", QuestionType::Cost),
    ("哪里", QuestionType::Place),
    ("在哪", QuestionType::Place),
    ("到哪", QuestionType::Place),
    ("怎么", QuestionType::Procedure),
    ("如何", QuestionType::Procedure),
    ("怎样", QuestionType::Procedure),
    ("能", QuestionType::Permission),
    ("可以", QuestionType::Permission),
    ("允许", QuestionType::Permission),
    ("支持", QuestionType::Permission),
    ("行吗", QuestionType::Permission),
    ("什么", QuestionType::Choice),
    ("哪些", QuestionType::Choice),
    ("哪个", QuestionType::Choice),
    ("哪种", QuestionType::Choice),
];

/// English words that only ask (the types carry them), dropped from the word features.
pub const INTERROGATIVES: &[&str] = &["when", "where", "which", "why", "how", "what", "whats", "wheres"];

/// Calls `visit` once with each kind of question a normalised text asks. Cues are tried in
/// order and a matched cue is consumed, so "what time" is a time question and not also a
/// choice, and 什么时候 is not also 什么.
pub fn for_each_type(normalized: &str, visit: &mut impl FnMut(QuestionType)) {
    let mut found: Vec<QuestionType> = Vec::new();
    let mut words: Vec<String> = normalized
        .split(|character: char| !character.is_ascii_alphanumeric() && character != '\'' && character != '’')
        .map(|word| word.replace(['\'', '’'], ""))
        .filter(|word| !word.is_empty())
        .collect();
    for (cue, kind) in ENGLISH_CUES {
        let cue_words: Vec<&str> = cue.split(' ').collect();
        let n = cue_words.len();
        let mut start = 0;
        while start + n <= words.len() {
            if words[start..start + n].iter().zip(&cue_words).all(|(a, b)| a == b) {
                if !found.contains(kind) {
                    found.push(*kind);
                }
                for word in &mut words[start..start + n] {
                    word.clear();
                }
                start += n;
            } else {
                start += 1;
            }
        }
    }
    let mut rest = normalized.to_owned();
    for (cue, kind) in CHINESE_CUES {
        if rest.contains(cue) {
            if !found.contains(kind) {
                found.push(*kind);
            }
            rest = rest.replace(cue, " ");
        }
    }
    for kind in found {
        visit(kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(text: &str) -> Vec<&'static str> {
        let mut found = Vec::new();
        for_each_type(&super::super::normalize::normalize(text), &mut |kind| found.push(kind.feature()));
        found.sort_unstable();
        found
    }

    #[test]
    fn interrogatives_in_either_language_meet() {
        assert_eq!(types("When will my order be delivered?"), ["?time"]);
        assert_eq!(types("How long does delivery take?"), ["?time"]);
        assert_eq!(types("快递几天能到"), ["?can", "?time"]);
        assert_eq!(types("啥时候发货"), ["?time"]);
        assert_eq!(types("What time is check-in?"), ["?time"]);
        assert_eq!(types("How much is shipping?"), ["?cost"]);
        assert_eq!(types("运费多少钱"), ["?cost"]);
        assert_eq!(types("Where's my parcel"), ["?place"]);
        assert_eq!(types("我的快递到哪了"), ["?place"]);
        assert_eq!(types("Why was I charged twice?"), ["?why"]);
        assert_eq!(types("somewhere nice"), Vec::<&str>::new());
    }
}
