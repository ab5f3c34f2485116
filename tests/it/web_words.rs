//! The words of the console and the widget (`web/*/i18n.js`), checked on the source: English and
//! Chinese have the same keys, no key twice, no empty text, and each text the same `{name}`
//! placeholders in both. A key missing in one language would otherwise show the English word (or
//! the key) to a user, and nothing else would notice.

use std::collections::BTreeMap;
use std::path::Path;

use kefu::net::admin::texts::placeholders;

/// The files with the words of a page.
const WORD_FILES: &[&str] = &["web/console/i18n.js", "web/widget/i18n.js"];

/// The languages every file has, as their object keys are spelled.
const LANGUAGES: &[&str] = &["en", "'zh-CN'"];

/// Each key of one language's object literal with its raw value text.
type Words = BTreeMap<String, String>;

/// The text of the object literal that opens at `source[open]` (`{`), without its braces.
fn object_body(source: &str, open: usize) -> &str {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut index = open;
    while index < bytes.len() {
        match bytes[index] {
            b'\'' | b'"' | b'`' => index = skip_string(bytes, index),
            b'/' if bytes.get(index + 1) == Some(&b'/') => {
                index = source[index..].find('\n').map_or(bytes.len(), |end| index + end);
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return &source[open + 1..index];
                }
            }
            _ => {}
        }
        index += 1;
    }
    panic!("an object literal is not closed");
}

/// The index of the closing quote of the string that opens at `bytes[start]`.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut index = start + 1;
    while index < bytes.len() && bytes[index] != quote {
        if bytes[index] == b'\\' {
            index += 1;
        }
        index += 1;
    }
    index
}

/// The top-level `key: value` pairs of an object body; a key given twice fails.
fn entries(body: &str, file: &str, language: &str) -> Words {
    let bytes = body.as_bytes();
    let mut words = Words::new();
    let mut index = 0;
    let mut depth = 0usize;
    let mut entry_start = 0;
    let mut flush = |entry: &str| {
        let entry = entry.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        if entry.trim().is_empty() {
            return;
        }
        let (key, value) = entry.split_once(':').unwrap_or_else(|| panic!("{file} {language}: no key in {entry:?}"));
        let key = key.trim().trim_matches(|c| c == '\'' || c == '"').to_owned();
        let previous = words.insert(key.clone(), value.trim().to_owned());
        assert!(previous.is_none(), "{file} {language}: {key} is there twice");
    };
    while index < bytes.len() {
        match bytes[index] {
            b'\'' | b'"' | b'`' => index = skip_string(bytes, index),
            b'/' if bytes.get(index + 1) == Some(&b'/') => {
                index = body[index..].find('\n').map_or(bytes.len(), |end| index + end);
                continue;
            }
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' => depth -= 1,
            b',' if depth == 0 => {
                flush(&body[entry_start..index]);
                entry_start = index + 1;
            }
            _ => {}
        }
        index += 1;
    }
    flush(&body[entry_start..]);
    words
}

/// The words of each language of a file.
fn words_of(file: &str) -> Vec<(&'static str, Words)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let source = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{file}: {error}"));
    languages_in(&source, file)
}

/// The words of each language in `source`, the text of `file`.
fn languages_in(source: &str, file: &str) -> Vec<(&'static str, Words)> {
    LANGUAGES
        .iter()
        .map(|language| {
            let opening = format!("\n  {language}: {{");
            let at = source.find(&opening).unwrap_or_else(|| panic!("{file} has no {language} words"));
            let body = object_body(source, at + opening.len() - 1);
            (*language, entries(body, file, language))
        })
        .collect()
}

/// What differs between two languages' words, one line per problem.
fn differences(file: &str, (first, a): &(&str, Words), (second, b): &(&str, Words)) -> Vec<String> {
    let mut found = Vec::new();
    for key in a.keys().filter(|key| !b.contains_key(*key)) {
        found.push(format!("{file}: {key} is in {first} but not in {second}"));
    }
    for key in b.keys().filter(|key| !a.contains_key(*key)) {
        found.push(format!("{file}: {key} is in {second} but not in {first}"));
    }
    for (key, text) in a {
        if let Some(other) = b.get(key) {
            if placeholders(text) != placeholders(other) {
                found.push(format!("{file}: {key} has other placeholders in {first} and {second}"));
            }
        }
    }
    for (language, words) in [(first, a), (second, b)] {
        for (key, text) in words {
            if matches!(text.as_str(), "''" | "\"\"" | "``") {
                found.push(format!("{file}: {key} is empty in {language}"));
            }
        }
    }
    found
}

#[test]
fn console_and_widget_words_have_the_same_keys_in_both_languages() {
    let mut found = Vec::new();
    for file in WORD_FILES {
        let languages = words_of(file);
        assert!(languages[0].1.len() > 10, "{file}: the parser found too few words: {:?}", languages[0].1.keys());
        found.extend(differences(file, &languages[0], &languages[1]));
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_missing_key_or_placeholder_is_reported() {
    let source = "const WORDS = {\n  en: {\n    a: 'A', b: 'B {n}', // a comment, with a comma\n    c: 'x, y',\n  },\n  \
                  'zh-CN': {\n    a: '甲', b: '乙',\n  },\n};\n";
    let words = languages_in(source, "sample");
    assert_eq!(words[0].1.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(
        differences("sample", &words[0], &words[1]),
        ["sample: c is in en but not in 'zh-CN'", "sample: b has other placeholders in en and 'zh-CN'"]
    );
}
