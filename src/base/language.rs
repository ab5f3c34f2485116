//! The language of what kefu writes to a person outside a page (emails, Web Push notifications):
//! English or Simplified Chinese, the two languages of every user-visible string. One type, so
//! each kind of outgoing message reads a language tag the same way; and [`fill`], which puts
//! values into a translated text's `{name}` placeholders for every kind of text.

use serde::{Deserialize, Serialize};

/// An outgoing message's language; stored and posted as `en` or `zh-CN`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lang {
    #[default]
    #[serde(rename = "en")]
    En,
    #[serde(rename = "zh-CN")]
    Zh,
}

impl Lang {
    /// A language tag (`zh-CN`, `zh`, `en-GB`...); `None` for anything else or empty.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let tag = tag.trim().to_lowercase();
        if tag.starts_with("zh") {
            Some(Lang::Zh)
        } else if tag.starts_with("en") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The first known language of `tags`, else English.
    pub fn first_of<'a>(tags: impl IntoIterator<Item = &'a str>) -> Lang {
        tags.into_iter().find_map(Lang::from_tag).unwrap_or(Lang::En)
    }

    /// Its language tag (the HTML `lang` attribute, the stored form).
    pub fn html(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// One of two texts.
    pub fn pick<'a>(self, english: &'a str, chinese: &'a str) -> &'a str {
        match self {
            Lang::En => english,
            Lang::Zh => chinese,
        }
    }
}

/// `template` with each `{name}` replaced by its value.
pub fn fill(template: &str, values: &[(&str, &dyn std::fmt::Display)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("{{{name}}}"), &value.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_read_as_their_language_and_serde_keeps_the_stored_form() {
        assert_eq!(Lang::first_of(["", "fr", "zh-TW"]), Lang::Zh);
        assert_eq!(Lang::first_of(["de"]), Lang::En);
        assert_eq!(serde_json::to_string(&Lang::Zh).unwrap(), "\"zh-CN\"");
        assert_eq!(serde_json::from_str::<Lang>("\"en\"").unwrap(), Lang::En);
        assert!(serde_json::from_str::<Lang>("\"zh\"").is_err(), "stored and posted forms only");
    }
}
