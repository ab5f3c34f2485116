//! The words of the admin pages, in English and Simplified Chinese: one catalogue per language
//! (`texts/en.rs`, `texts/zh.rs`), each a [`Texts`] value whose keys are fields, so a key missing
//! from one does not compile; the tests check that both fill the same placeholders.
//!
//! The language is the one the admin chose with the switch in the page header (remembered in a
//! cookie), else the first English or Chinese one of the browser's `Accept-Language`.

pub use crate::base::language::fill;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};

use crate::base::language;

/// The cookie that remembers the language chosen with the switch.
pub const LANGUAGE_COOKIE: &str = "kefu_admin_lang";

/// A language of these pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl From<Lang> for crate::email::Lang {
    fn from(lang: Lang) -> Self {
        match lang {
            Lang::En => crate::email::Lang::En,
            Lang::Zh => crate::email::Lang::Zh,
        }
    }
}

impl Lang {
    /// A language code (`en`, `zh`, `zh-CN`), if it is one of these pages.
    pub fn parse(code: &str) -> Option<Lang> {
        match code.trim() {
            "zh" | "zh-CN" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The chosen language (the cookie), then the first language of `Accept-Language` that is
    /// English or Chinese, then English.
    pub fn of_request(headers: &HeaderMap) -> Lang {
        let chosen = axum_extra::extract::CookieJar::from_headers(headers)
            .get(LANGUAGE_COOKIE)
            .and_then(|cookie| Lang::parse(cookie.value()));
        chosen.unwrap_or_else(|| Lang::of_browser(headers))
    }

    /// The first language of `Accept-Language` that is English or Chinese.
    pub fn of_browser(headers: &HeaderMap) -> Lang {
        let accepted = headers.get(header::ACCEPT_LANGUAGE).and_then(|value| value.to_str().ok()).unwrap_or("");
        match language::Lang::first_of(accepted.split(',').map(|part| part.split(';').next().unwrap_or(""))) {
            language::Lang::Zh => Lang::Zh,
            language::Lang::En => Lang::En,
        }
    }

    /// The other language, which the switch offers.
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }

    /// The value of the cookie.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The `lang` attribute of the page.
    pub fn html(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }

    /// The cookie that makes this language the chosen one for a year.
    pub fn cookie(self) -> HeaderValue {
        let cookie = format!("{LANGUAGE_COOKIE}={}; Path=/admin; Max-Age=31536000; SameSite=Lax", self.code());
        HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static("kefu_admin_lang=en; Path=/admin"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Lang::of_request(&parts.headers))
    }
}

/// The link of the language switch: sets the other language and comes back to `path`.
pub fn switch_url(lang: Lang, path: &str) -> String {
    let next = url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
    format!("/admin/language?lang={}&next={next}", lang.other().code())
}

mod en;
mod zh;

pub use en::EN;
pub use zh::{FIELD_MESSAGES_ZH, ZH};

/// Declares [`Texts`] once: each key is a field, so a catalogue without one does not compile, and
/// [`Texts::entries`] lists them for the test that compares the catalogues.
macro_rules! texts {
    ($($key:ident),* $(,)?) => {
        /// Every string of the admin pages in one language. `{name}` in a text is a value
        /// [`fill`] puts in.
        pub struct Texts {
            $(pub $key: &'static str,)*
        }

        impl Texts {
            /// Every (key, text) of the catalogue.
            pub fn entries(&self) -> Vec<(&'static str, &'static str)> {
                vec![$((stringify!($key), self.$key)),*]
            }
        }
    };
}

include!("texts/keys.rs");

impl Texts {
    /// The name of a weekday, Monday first.
    pub fn weekday(&self, index: &usize) -> &'static str {
        [self.monday, self.tuesday, self.wednesday, self.thursday, self.friday, self.saturday, self.sunday]
            .get(*index)
            .copied()
            .unwrap_or("")
    }
}

/// The names of the `{...}` placeholders of a text, sorted.
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut names: Vec<&str> = text
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    names.sort_unstable();
    names
}

/// A validation message of the domain (English, as the API answers it) in `lang`: the Chinese
/// catalogue lists each message's English pattern, where `{…}` stands for any text carried over.
/// A message it does not list stays English (`tests::every_domain_message_is_translated` lists
/// the domain's messages).
pub fn field_message(lang: Lang, message: &str) -> String {
    if lang == Lang::En {
        return message.to_owned();
    }
    FIELD_MESSAGES_ZH
        .iter()
        .find_map(|(english, chinese)| {
            let values = match_pattern(english, message)?;
            let mut text = (*chinese).to_owned();
            for (name, value) in values {
                text = text.replace(&format!("{{{name}}}"), value);
            }
            Some(text)
        })
        .unwrap_or_else(|| message.to_owned())
}

/// The values of a pattern's `{name}` placeholders in `message`, if it matches. Each placeholder
/// takes the shortest text that lets the rest match.
fn match_pattern<'m>(pattern: &str, message: &'m str) -> Option<Vec<(String, &'m str)>> {
    let mut values = Vec::new();
    let mut rest = message;
    let mut parts = pattern.split('{');
    let literal = parts.next().unwrap_or("");
    rest = rest.strip_prefix(literal)?;
    let mut pieces: Vec<(&str, &str)> = Vec::new();
    for part in parts {
        let (name, literal) = part.split_once('}')?;
        pieces.push((name, literal));
    }
    for (index, (name, literal)) in pieces.iter().enumerate() {
        let last = index + 1 == pieces.len();
        let end = if literal.is_empty() {
            if last { rest.len() } else { return None }
        } else if last {
            rest.strip_suffix(literal).map(str::len)?
        } else {
            rest.find(literal)?
        };
        values.push(((*name).to_owned(), &rest[..end]));
        rest = &rest[end + literal.len()..];
    }
    rest.is_empty().then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_language_follows_the_choice_then_the_browser() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::of_request(&headers), Lang::En);
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("zh-CN,zh;q=0.9,en;q=0.8"));
        assert_eq!(Lang::of_request(&headers), Lang::Zh);
        headers.insert(header::COOKIE, HeaderValue::from_static("kefu_admin_lang=en"));
        assert_eq!(Lang::of_request(&headers), Lang::En);
        headers.insert(header::COOKIE, HeaderValue::from_static("kefu_admin_lang=xx"));
        assert_eq!(Lang::of_request(&headers), Lang::Zh, "an unknown choice is ignored");
        headers.remove(header::COOKIE);
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("fr, en-GB;q=0.5"));
        assert_eq!(Lang::of_request(&headers), Lang::En);
    }

    #[test]
    fn both_catalogues_have_every_key_with_the_same_placeholders() {
        let (en, zh) = (EN.entries(), ZH.entries());
        assert_eq!(en.len(), zh.len());
        for ((key, english), (zh_key, chinese)) in en.iter().zip(&zh) {
            assert_eq!(key, zh_key);
            assert!(!english.trim().is_empty() && !chinese.trim().is_empty(), "{key} is empty");
            assert_eq!(placeholders(english), placeholders(chinese), "{key}: the placeholders differ");
        }
        let mut keys: Vec<&str> = en.iter().map(|(key, _)| *key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), en.len(), "a key is declared twice");
        for (english, chinese) in FIELD_MESSAGES_ZH {
            assert_eq!(placeholders(english), placeholders(chinese), "{english}: the placeholders differ");
        }
    }

    #[test]
    fn domain_messages_are_matched_by_their_pattern() {
        assert_eq!(field_message(Lang::En, "must be at least 1"), "must be at least 1");
        assert_eq!(
            field_message(Lang::Zh, "\"Mars/Olympus\" is not a known time zone (try Europe/Berlin)"),
            "\"Mars/Olympus\" 不是已知的时区（例如 Asia/Shanghai）"
        );
        assert_eq!(field_message(Lang::Zh, "an unknown message"), "an unknown message");
        assert_eq!(fill("{n} of {m}", &[("n", &1), ("m", &"two")]), "1 of two");
    }
}
