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

/// The tokenizer keeps its tokens between texts and refills them in place, so indexing a message
/// allocates nothing once earlier messages had as many tokens (of the same lengths or longer).
#[derive(Clone, Default)]
pub struct CjkBigramTokenizer {
    tokens: Vec<Token>,
}

pub struct CjkBigramTokenStream<'a> {
    /// This text's tokens (the front of the tokenizer's buffer).
    tokens: &'a mut [Token],
    /// The index of the current token plus one (0 before the first `advance`).
    next: usize,
}

impl Tokenizer for CjkBigramTokenizer {
    type TokenStream<'a> = CjkBigramTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CjkBigramTokenStream<'a> {
        let count = tokenize_into(text, &mut self.tokens);
        CjkBigramTokenStream { tokens: &mut self.tokens[..count], next: 0 }
    }
}

impl TokenStream for CjkBigramTokenStream<'_> {
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
    let count = tokenize_into(text, &mut tokens);
    tokens.truncate(count);
    tokens
}

/// The next token of the buffer at `count`, set to the offsets given and an empty text (its
/// string's capacity kept); `count` moves past it.
fn next_token<'t>(tokens: &'t mut Vec<Token>, count: &mut usize, from: usize, to: usize) -> &'t mut String {
    if *count == tokens.len() {
        tokens.push(Token::default());
    }
    let token = &mut tokens[*count];
    token.offset_from = from;
    token.offset_to = to;
    token.position = *count;
    token.position_length = 1;
    token.text.clear();
    *count += 1;
    &mut token.text
}

/// Writes the tokens of `text` over the front of `tokens`, reusing their strings, and returns
/// how many there are; the tokens after them are left over from earlier texts.
fn tokenize_into(text: &str, tokens: &mut Vec<Token>) -> usize {
    let mut count = 0;
    let mut characters = text.char_indices().peekable();
    while let Some(&(start, character)) = characters.peek() {
        if is_cjk(character) {
            let mut previous: Option<(usize, char)> = None;
            let mut run_length = 0;
            while let Some(&(offset, next)) = characters.peek() {
                if !is_cjk(next) {
                    break;
                }
                if let Some((previous_offset, previous_character)) = previous {
                    let token_text = next_token(tokens, &mut count, previous_offset, offset + next.len_utf8());
                    token_text.push(previous_character);
                    token_text.push(next);
                }
                previous = Some((offset, next));
                run_length += 1;
                characters.next();
            }
            if let (1, Some((offset, alone))) = (run_length, previous) {
                next_token(tokens, &mut count, offset, offset + alone.len_utf8()).push(alone);
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
                let word = &text[start..end];
                let token_text = next_token(tokens, &mut count, start, end);
                if word.is_ascii() {
                    token_text.push_str(word);
                    token_text.make_ascii_lowercase();
                } else {
                    token_text.push_str(&word.to_lowercase());
                }
            }
        } else {
            characters.next();
        }
    }
    count
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

    #[test]
    fn a_reused_tokenizer_gives_each_text_only_its_own_tokens() {
        let mut tokenizer = CjkBigramTokenizer::default();
        let mut seen = |text: &str| {
            let mut stream = tokenizer.token_stream(text);
            let mut found = Vec::new();
            while stream.advance() {
                found.push((stream.token().text.clone(), stream.token().position));
            }
            found
        };
        assert_eq!(
            seen("退款 please refund now"),
            [("退款".into(), 0), ("please".into(), 1), ("refund".into(), 2), ("now".into(), 3)]
        );
        assert_eq!(seen("OK 好"), [("ok".to_owned(), 0), ("好".to_owned(), 1)]);
        assert_eq!(seen(""), Vec::<(String, usize)>::new());
        assert_eq!(seen("ÉTÉ"), [("été".to_owned(), 0)]);
    }
}
