//! The tokenizer of message text: lowercased words for scripts with spaces, overlapping bigrams
//! for Chinese, Japanese and Korean.
//!
//! Chinese has no spaces between words, so a word tokenizer would make `我要退款谢谢` one token and
//! a search for `退款` would miss it. Every pair of neighbouring CJK characters becomes a token
//! (`我要 要退 退款 款谢 谢谢`), at consecutive positions: a query of two characters is one term,
//! and a longer one becomes a phrase of its bigrams, which matches exactly where the query's
//! characters appear in a row. A lone CJK character (a run of one) is indexed as itself.
//!
//! Why bigrams and not a dictionary segmenter (jieba): a segmenter only finds the words its
//! dictionary cut the text into (a search for `退款` can miss text segmented as `要退/款`), it
//! needs a dictionary of several megabytes in the binary, and it changes with that dictionary.
//! Bigrams find any sequence of two or more characters, need no data, and are the usual choice
//! of CJK full-text search engines (Lucene's CJKBigramFilter). The cost is a larger index and
//! that a one-character query only matches one-character runs; see README.md, "Search".

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// The name the tokenizer is registered under in the index.
pub const TOKENIZER_NAME: &str = "kefu_cjk_bigram";

/// Longest word kept (in bytes); longer runs are not words people search for.
const MAX_WORD_BYTES: usize = 64;

#[derive(Clone, Default)]
pub struct CjkBigramTokenizer;

pub struct CjkBigramTokenStream {
    tokens: Vec<Token>,
    /// The index of the current token plus one (0 before the first `advance`).
    next: usize,
}

impl Tokenizer for CjkBigramTokenizer {
    type TokenStream<'a> = CjkBigramTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CjkBigramTokenStream {
        CjkBigramTokenStream { tokens: tokenize(text), next: 0 }
    }
}

impl TokenStream for CjkBigramTokenStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next.saturating_sub(1).min(self.tokens.len().saturating_sub(1))]
    }

    fn token_mut(&mut self) -> &mut Token {
        let index = self.next.saturating_sub(1).min(self.tokens.len().saturating_sub(1));
        &mut self.tokens[index]
    }
}

/// Whether `character` belongs to a script written without spaces between words.
fn is_cjk(character: char) -> bool {
    matches!(character as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x3400..=0x4DBF   // CJK Extension A
        | 0x4E00..=0x9FFF   // CJK Unified Ideographs
        | 0xAC00..=0xD7AF   // Hangul syllables
        | 0xF900..=0xFAFF   // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F // CJK Extensions B and later
    )
}

/// The tokens of `text`, in order, with consecutive positions.
pub fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut position = 0;
    let mut push = |tokens: &mut Vec<Token>, from: usize, to: usize, token_text: String| {
        tokens.push(Token { offset_from: from, offset_to: to, position, text: token_text, position_length: 1 });
        position += 1;
    };
    let mut characters = text.char_indices().peekable();
    while let Some(&(start, character)) = characters.peek() {
        if is_cjk(character) {
            let mut run: Vec<(usize, char)> = Vec::new();
            while let Some(&(offset, next)) = characters.peek() {
                if !is_cjk(next) {
                    break;
                }
                run.push((offset, next));
                characters.next();
            }
            let end_of = |index: usize| run[index].0 + run[index].1.len_utf8();
            if run.len() == 1 {
                push(&mut tokens, run[0].0, end_of(0), run[0].1.to_string());
            }
            for pair in 0..run.len().saturating_sub(1) {
                let token_text: String = [run[pair].1, run[pair + 1].1].iter().collect();
                push(&mut tokens, run[pair].0, end_of(pair + 1), token_text);
            }
        } else if character.is_alphanumeric() {
            let mut end = start;
            while let Some(&(offset, next)) = characters.peek() {
                if !next.is_alphanumeric() || is_cjk(next) {
                    break;
                }
                end = offset + next.len_utf8();
                characters.next();
            }
            if end - start <= MAX_WORD_BYTES {
                push(&mut tokens, start, end, text[start..end].to_lowercase());
            }
        } else {
            characters.next();
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        tokenize(text).into_iter().map(|token| token.text).collect()
    }

    #[test]
    fn chinese_becomes_bigrams_and_words_are_lowercased() {
        assert_eq!(texts("我要退款谢谢"), ["我要", "要退", "退款", "款谢", "谢谢"]);
        assert_eq!(texts("Refund, please!"), ["refund", "please"]);
        assert_eq!(texts("订单123退款 OK"), ["订单", "123", "退款", "ok"]);
        assert_eq!(texts("好"), ["好"]);
        assert_eq!(texts(""), Vec::<String>::new());
    }

    #[test]
    fn positions_and_offsets_follow_the_text() {
        let tokens = tokenize("a 退款吧");
        let positions: Vec<usize> = tokens.iter().map(|token| token.position).collect();
        assert_eq!(positions, [0, 1, 2]);
        assert_eq!(&"a 退款吧"[tokens[1].offset_from..tokens[1].offset_to], "退款");
    }
}
