//! Recognising a visitor's request for a human: "我要人工", "转人工客服", "can I talk to a human?",
//! "real persn", and each site's own phrases.
//!
//! A message is lowercased, folded like knowledge-base text (full-width forms, traditional
//! characters) and stripped of punctuation. Then:
//! - a one-word phrase ("human", "agent", "人工") hands off only when it is the whole message
//!   (one letter mistyped or two swapped allowed), so "is a human reading this?" and "人工智能是什么"
//!   do not;
//! - a Chinese phrase of two or more characters hands off when the message holds it and is short
//!   (a request, not a question about something else): "我要真人", "帮我转人工客服吧";
//! - an English phrase of two or more words hands off when its words appear in a row in the
//!   message, each word of four letters or more allowed one typo ("can i tlak to a humna").

use super::knowledge_base::matcher::{edit_distance, is_cjk};
use super::knowledge_base::normalize::normalize;

/// The phrases every site recognises.
const BUILT_IN: &[&str] = &[
    "人工",
    "转人工",
    "人工客服",
    "转人工客服",
    "我要人工",
    "人工服务",
    "找客服",
    "真人",
    "真人客服",
    "联系人工",
    "接人工",
    "human",
    "agent",
    "operator",
    "talk to a human",
    "speak to a human",
    "talk to an agent",
    "speak to an agent",
    "talk to someone",
    "speak to someone",
    "talk to a person",
    "real person",
    "real human",
    "live agent",
    "live person",
    "human agent",
    "customer service agent",
    "representative",
];

/// Chinese text that holds a phrase but is about something else.
const NOT_REQUESTS: &[&str] = &["人工智能", "真人秀", "人工费"];

/// How many characters a Chinese message may have beyond the phrase and still be a request.
const MAX_EXTRA_CJK_CHARS: usize = 6;

/// Lowercased and folded, punctuation turned to spaces, spaces collapsed.
fn clean(text: &str) -> String {
    let folded = normalize(text);
    let spaced: String = folded.chars().map(|c| if c.is_alphanumeric() || is_cjk(c) { c } else { ' ' }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn words_match(message_word: &str, phrase_word: &str) -> bool {
    if message_word == phrase_word {
        return true;
    }
    phrase_word.len() >= 4
        && message_word.is_ascii()
        && phrase_word.is_ascii()
        && edit_distance(message_word.as_bytes(), phrase_word.as_bytes(), 1).is_some()
}

fn matches_phrase(message: &str, phrase: &str) -> bool {
    let phrase = clean(phrase);
    if phrase.is_empty() {
        return false;
    }
    if message == phrase {
        return true;
    }
    let phrase_words: Vec<&str> = phrase.split(' ').collect();
    let cjk = phrase.chars().any(is_cjk);
    if cjk {
        let n_phrase = phrase.chars().count();
        let n_message = message.chars().filter(|c| !c.is_whitespace()).count();
        return n_phrase >= 2
            && message.contains(&phrase)
            && n_message <= n_phrase + MAX_EXTRA_CJK_CHARS
            && !NOT_REQUESTS.iter().any(|other| message.contains(other));
    }
    if phrase_words.len() < 2 {
        // One English word: the whole message, allowing one swapped or mistyped letter ("humna")
        // but not an added one ("agents" is a word of its own).
        return !message.contains(' ') && message.len() == phrase.len() && words_match(message, &phrase);
    }
    let message_words: Vec<&str> = message.split(' ').collect();
    message_words
        .windows(phrase_words.len())
        .any(|window| window.iter().zip(&phrase_words).all(|(word, wanted)| words_match(word, wanted)))
}

/// Whether a visitor's message asks for a human, by the built-in phrases or the site's own.
pub fn is_handoff_request(text: &str, site_phrases: &[String]) -> bool {
    let message = clean(text);
    if message.is_empty() {
        return false;
    }
    BUILT_IN.iter().any(|phrase| matches_phrase(&message, phrase))
        || site_phrases.iter().any(|phrase| matches_phrase(&message, phrase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_asking_for_a_human_are_understood() {
        for text in [
            "人工",
            " 转人工！",
            "我要人工",
            "转人工客服",
            "人工服务",
            "找客服",
            "真人",
            "我要找真人",
            "帮我转人工客服吧",
            "Human",
            "AGENT.",
            "talk to a human",
            "can I talk to a human?",
            "Can I talk to an agent please",
            "i want a real person",
            "real persn pls",
            "can i tlak to a humna",
            "humna",
            "ＨＵＭＡＮ",
            "轉人工",
        ] {
            assert!(is_handoff_request(text, &[]), "{text}");
        }
        for text in [
            "is a human reading this?",
            "agents",
            "人工智能是什么",
            "how much is shipping",
            "我想问一下人工客服的工作时间是几点到几点呢谢谢",
            "",
            "human resources department address",
        ] {
            assert!(!is_handoff_request(text, &[]), "{text}");
        }
    }

    #[test]
    fn a_sites_own_phrases_hand_off_too() {
        let phrases = vec!["speak to the manager".to_owned(), "找店长".to_owned()];
        assert!(is_handoff_request("I want to speak to the manger", &phrases));
        assert!(is_handoff_request("找店长！", &phrases));
        assert!(!is_handoff_request("who is the manager", &phrases));
    }
}
