//! The words of every email kefu sends, in English and Simplified Chinese, and their rendering
//! into a subject, a plain-text part and an HTML part (askama: `templates/email/`).
//!
//! Every email has one shape (a heading, paragraphs, quoted chat lines, a link, a footer), so
//! one pair of templates serves them all and each kind only chooses its words.

use askama::Template;

/// The language of an email: the recipient's.
pub use crate::base::language::Lang;

/// A quoted chat line.
#[derive(Clone, Debug)]
pub struct Line {
    pub who: String,
    pub when: String,
    pub text: String,
}

/// A link the email points to.
#[derive(Clone, Debug)]
pub struct Link {
    pub label: String,
    pub url: String,
}

/// What one email says.
pub struct Content {
    pub lang: Lang,
    pub heading: String,
    pub paragraphs: Vec<String>,
    pub lines: Vec<Line>,
    pub link: Option<Link>,
    pub footer: String,
}

/// An email ready to queue.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Template)]
#[template(path = "email/message.html")]
struct HtmlPart<'a> {
    subject: &'a str,
    content: &'a Content,
}

#[derive(Template)]
#[template(path = "email/message.txt")]
struct TextPart<'a> {
    content: &'a Content,
}

/// Renders both parts. The templates only print fields, so rendering cannot fail on our data;
/// if it ever did, the plain text alone still carries the message.
pub fn render(subject: String, content: &Content) -> Rendered {
    let text = TextPart { content }.render().unwrap_or_else(|error| {
        tracing::error!(%error, "rendering an email's text failed");
        content.paragraphs.join("\n\n")
    });
    let html = HtmlPart { subject: &subject, content }.render().unwrap_or_else(|error| {
        tracing::error!(%error, "rendering an email's HTML failed");
        String::new()
    });
    Rendered { subject, text, html }
}

fn footer(lang: Lang, site_name: &str) -> String {
    match lang {
        Lang::En if site_name.is_empty() => "Sent by kefu.".to_owned(),
        Lang::En => format!("Sent by kefu for {site_name}."),
        Lang::Zh if site_name.is_empty() => "由 kefu 发送。".to_owned(),
        Lang::Zh => format!("由 kefu 代 {site_name} 发送。"),
    }
}

/// The email of the admin page's "send a test email".
pub fn test_email(lang: Lang) -> Rendered {
    let content = Content {
        lang,
        heading: lang.pick("kefu can send email", "kefu 可以发送邮件").to_owned(),
        paragraphs: vec![
            lang.pick(
                "This test email shows that kefu's SMTP settings work.",
                "这封测试邮件说明 kefu 的 SMTP 设置可以正常使用。",
            )
            .to_owned(),
        ],
        lines: Vec::new(),
        link: None,
        footer: footer(lang, ""),
    };
    render(lang.pick("kefu test email", "kefu 测试邮件").to_owned(), &content)
}

/// To a site's agents: a visitor left a message through the offline form.
pub fn offline_message(
    lang: Lang,
    site_name: &str,
    message: &crate::chat::offline_messages::OfflineMessage,
    console_url: &str,
) -> Rendered {
    let who = if message.name.is_empty() { message.email.clone() } else { message.name.clone() };
    let subject = match lang {
        Lang::En => format!("New offline message from {who} ({site_name})"),
        Lang::Zh => format!("{who} 的新留言（{site_name}）"),
    };
    let content = Content {
        lang,
        heading: lang.pick("A visitor left a message", "访客留言了").to_owned(),
        paragraphs: vec![match lang {
            Lang::En => format!("{who} <{}> wrote on {site_name} while nobody could answer:", message.email),
            Lang::Zh => format!("{who} <{}> 在无人接待时于 {site_name} 留言：", message.email),
        }],
        lines: vec![Line {
            who: who.clone(),
            when: crate::base::clock::format_utc(message.created_at),
            text: message.text.clone(),
        }],
        link: Some(Link {
            label: lang.pick("Open the console", "打开客服工作台").to_owned(),
            url: console_url.to_owned(),
        }),
        footer: footer(lang, site_name),
    };
    render(subject, &content)
}

/// To a site's agents: a visitor has waited `waited_minutes` without an answer.
pub fn missed_chat(
    lang: Lang,
    site_name: &str,
    visitor_name: &str,
    waited_minutes: u64,
    console_url: &str,
) -> Rendered {
    let subject = match lang {
        Lang::En => format!("{visitor_name} is waiting for an answer ({site_name})"),
        Lang::Zh => format!("{visitor_name} 正在等待回复（{site_name}）"),
    };
    let content = Content {
        lang,
        heading: lang.pick("A visitor is waiting", "有访客在等待").to_owned(),
        paragraphs: vec![match lang {
            Lang::En => format!(
                "{visitor_name} started a chat on {site_name} {waited_minutes} min ago and no agent has answered yet."
            ),
            Lang::Zh => {
                format!("{visitor_name} 在 {site_name} 发起的对话已等待 {waited_minutes} 分钟，还没有客服回复。")
            }
        }],
        lines: Vec::new(),
        link: Some(Link {
            label: lang.pick("Answer in the console", "在工作台回复").to_owned(),
            url: console_url.to_owned(),
        }),
        footer: footer(lang, site_name),
    };
    render(subject, &content)
}

/// To a visitor: an agent's answer to what they left.
pub fn reply(lang: Lang, site_name: &str, agent_name: &str, text: &str, when: i64) -> Rendered {
    let subject = match lang {
        Lang::En => format!("{site_name} replied to your message"),
        Lang::Zh => format!("{site_name} 回复了您的留言"),
    };
    let content = Content {
        lang,
        heading: lang.pick("You have an answer", "您收到了回复").to_owned(),
        paragraphs: vec![match lang {
            Lang::En => format!("{agent_name} of {site_name} answered your message:"),
            Lang::Zh => format!("{site_name} 的 {agent_name} 回复了您的留言："),
        }],
        lines: vec![Line {
            who: agent_name.to_owned(),
            when: crate::base::clock::format_utc(when),
            text: text.to_owned(),
        }],
        link: None,
        footer: format!(
            "{} {}",
            lang.pick("The answer is also in the chat on the site.", "回复也保存在网站的聊天窗口中。"),
            footer(lang, site_name)
        ),
    };
    render(subject, &content)
}

/// To a visitor: the transcript of a conversation.
pub fn transcript(lang: Lang, site_name: &str, lines: Vec<Line>) -> Rendered {
    let subject = match lang {
        Lang::En => format!("Your chat with {site_name}"),
        Lang::Zh => format!("您与 {site_name} 的聊天记录"),
    };
    let content = Content {
        lang,
        heading: lang.pick("Your chat transcript", "聊天记录").to_owned(),
        paragraphs: vec![lang.pick("Here is your conversation, as you asked.", "以下是您的对话记录。").to_owned()],
        lines,
        link: None,
        footer: footer(lang, site_name),
    };
    render(subject, &content)
}

/// To an agent: the link that sets a new password.
pub fn password_reset(lang: Lang, url: &str, valid_minutes: i64) -> Rendered {
    let content = Content {
        lang,
        heading: lang.pick("Set a new password", "设置新密码").to_owned(),
        paragraphs: vec![
            match lang {
                Lang::En => format!(
                    "Someone asked to reset the password of your kefu account. The link works once, for {valid_minutes} minutes."
                ),
                Lang::Zh => format!("有人请求重置您的 kefu 账号密码。此链接只能使用一次，{valid_minutes} 分钟内有效。"),
            },
            lang.pick(
                "If it was not you, ignore this email; your password stays as it is.",
                "如果不是您本人操作，请忽略此邮件，您的密码不会改变。",
            )
            .to_owned(),
        ],
        lines: Vec::new(),
        link: Some(Link { label: lang.pick("Set a new password", "设置新密码").to_owned(), url: url.to_owned() }),
        footer: footer(lang, ""),
    };
    render(lang.pick("Reset your kefu password", "重置 kefu 密码").to_owned(), &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parts_carry_the_words_and_html_is_escaped() {
        let rendered = reply(Lang::Zh, "商店", "小王", "<b>您好</b>", 0);
        assert_eq!(rendered.subject, "商店 回复了您的留言");
        assert!(rendered.text.contains("<b>您好</b>") && rendered.text.contains("小王"));
        assert!(
            rendered.html.contains("&#60;b&#62;您好&#60;/b&#62;")
                && !rendered.html.contains("<b>")
                && rendered.html.contains("lang=\"zh-CN\"")
        );
        assert_eq!(Lang::first_of(["", "fr", "zh-CN"]), Lang::Zh);
        assert_eq!(Lang::first_of(["fr"]), Lang::En);
    }
}
