//! Email through a real SMTP conversation: a small SMTP sink written here (EHLO, AUTH PLAIN and
//! LOGIN, MAIL, RCPT, DATA, RSET, QUIT) receives what kefu sends. The tests decode what arrived:
//! RFC 2047 subjects and names, both parts of multipart/alternative, and count deliveries across
//! an SMTP server that is down and a restart of kefu.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use kefu::base::config::Config;
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::admin::{ADMIN, Admin};
use crate::support::{TestServer, http};

/// One message the sink accepted.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) rcpt_to: Vec<String>,
    pub(crate) data: String,
    /// The credentials of `AUTH`, as `user:password`, if the client logged in.
    pub(crate) login: Option<String>,
}

/// An SMTP server that accepts everything except recipients containing `reject`.
pub(crate) struct SmtpSink {
    pub(crate) port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub(crate) async fn start() -> SmtpSink {
        Self::start_on(0).await
    }

    pub(crate) async fn start_on(port: u16) -> SmtpSink {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("binding the SMTP sink");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                tokio::spawn(serve(socket, sink.clone()));
            }
        });
        SmtpSink { port, received, task }
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }

    /// Waits until at least `n` messages arrived.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..400 {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} emails, the sink has {:?}", self.received());
    }
}

async fn serve(socket: tokio::net::TcpStream, sink: Arc<Mutex<Vec<Received>>>) {
    let (reader, mut writer) = socket.into_split();
    let mut lines = BufReader::new(reader).lines();
    let _ = writer.write_all(b"220 sink.test ESMTP\r\n").await;
    let mut rcpt_to = Vec::new();
    let mut login = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let command = line.to_uppercase();
        let answer: String = if command.starts_with("EHLO") || command.starts_with("HELO") {
            "250-sink.test\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN".into()
        } else if let Some(encoded) = line.strip_prefix("AUTH PLAIN ") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).unwrap_or_default();
            let parts: Vec<String> =
                decoded.split(|byte| *byte == 0).map(|part| String::from_utf8_lossy(part).into_owned()).collect();
            login = Some(format!(
                "{}:{}",
                parts.get(1).cloned().unwrap_or_default(),
                parts.get(2).cloned().unwrap_or_default()
            ));
            "235 2.7.0 accepted".into()
        } else if command.starts_with("AUTH LOGIN") {
            let _ = writer.write_all(b"334 VXNlcm5hbWU6\r\n").await;
            let user = lines.next_line().await.ok().flatten().unwrap_or_default();
            let _ = writer.write_all(b"334 UGFzc3dvcmQ6\r\n").await;
            let password = lines.next_line().await.ok().flatten().unwrap_or_default();
            let decode = |text: &str| {
                String::from_utf8_lossy(
                    &base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap_or_default(),
                )
                .into_owned()
            };
            login = Some(format!("{}:{}", decode(&user), decode(&password)));
            "235 2.7.0 accepted".into()
        } else if command.starts_with("MAIL FROM") {
            rcpt_to.clear();
            "250 2.1.0 ok".into()
        } else if command.starts_with("RCPT TO") {
            if command.contains("REJECT") {
                "550 5.1.1 no such mailbox here".into()
            } else {
                rcpt_to.push(line[8..].trim().trim_matches(['<', '>']).to_owned());
                "250 2.1.5 ok".into()
            }
        } else if command == "DATA" {
            let _ = writer.write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "." {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                data.push_str("\r\n");
            }
            sink.lock().push(Received { rcpt_to: std::mem::take(&mut rcpt_to), data, login: login.clone() });
            "250 2.0.0 queued".into()
        } else if command == "QUIT" {
            let _ = writer.write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            "250 2.0.0 ok".into()
        };
        if writer.write_all(format!("{answer}\r\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A received message taken apart: unfolded headers and decoded parts.
pub(crate) struct Parsed {
    headers: Vec<(String, String)>,
    /// (content type, decoded body) of each part (the whole body when not multipart).
    pub(crate) parts: Vec<(String, String)>,
}

impl Parsed {
    pub(crate) fn new(data: &str) -> Parsed {
        let (head, body) = data.split_once("\r\n\r\n").expect("headers, then a body");
        let headers = unfold(head);
        let content_type = header_in(&headers, "content-type");
        let parts = match content_type.split("boundary=").nth(1) {
            Some(boundary) => {
                let boundary = boundary.trim_matches('"');
                body.split(&format!("--{boundary}"))
                    .filter_map(|part| part.split_once("\r\n\r\n"))
                    .map(|(head, body)| {
                        let headers = unfold(head.trim_start());
                        let decoded = decode_body(&header_in(&headers, "content-transfer-encoding"), body);
                        (header_in(&headers, "content-type"), decoded)
                    })
                    .collect()
            }
            None => vec![(content_type, decode_body(&header_in(&headers, "content-transfer-encoding"), body))],
        };
        Parsed { headers, parts }
    }

    /// A header with its encoded words decoded.
    pub(crate) fn header(&self, name: &str) -> String {
        decode_words(&header_in(&self.headers, name))
    }

    pub(crate) fn raw_header(&self, name: &str) -> String {
        header_in(&self.headers, name)
    }

    pub(crate) fn part(&self, content_type: &str) -> String {
        self.parts
            .iter()
            .find(|(kind, _)| kind.starts_with(content_type))
            .map(|(_, body)| body.clone())
            .unwrap_or_else(|| panic!("no {content_type} part in {:?}", self.parts))
    }
}

fn unfold(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
        }
    }
    headers
}

fn header_in(headers: &[(String, String)], name: &str) -> String {
    headers.iter().find(|(found, _)| found == name).map(|(_, value)| value.clone()).unwrap_or_default()
}

/// RFC 2047: `=?charset?B|Q?text?=` words, with the white space between two words dropped.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let between = &rest[..start];
        if !(last_was_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        let word = &rest[start + 2..];
        let mut pieces = word.splitn(3, '?');
        let (_charset, encoding, remainder) = (pieces.next().unwrap(), pieces.next().unwrap(), pieces.next().unwrap());
        let end = remainder.find("?=").expect("an encoded word ends with ?=");
        let text = &remainder[..end];
        let bytes = match encoding {
            "B" | "b" => base64::engine::general_purpose::STANDARD.decode(text).expect("base64 in an encoded word"),
            _ => quoted_printable(&text.replace('_', " ")),
        };
        out.push_str(&String::from_utf8(bytes).expect("UTF-8 in an encoded word"));
        rest = &remainder[end + 2..];
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

fn quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.replace("=\r\n", "").into_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'=' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
            if let Some(byte) = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(byte);
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    out
}

fn decode_body(encoding: &str, body: &str) -> String {
    let bytes = match encoding.to_lowercase().as_str() {
        "base64" => {
            base64::engine::general_purpose::STANDARD.decode(body.split_whitespace().collect::<String>()).unwrap()
        }
        "quoted-printable" => quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    String::from_utf8(bytes).expect("UTF-8 body")
}

/// Short retries, a missed chat after one second, an answer emailed after one second.
pub(crate) fn quick_email(config: &mut Config) {
    config.email.retry_base_ms = 200;
    config.email.timeout_secs = 5;
    config.email.missed_chat_after_secs = 1;
    config.email.reply_delay_secs = 1;
}

/// Points kefu at the sink through the admin page.
pub(crate) async fn use_sink(server: &TestServer, admin: &Admin, port: u16) {
    let port = port.to_string();
    let fields = [
        ("host", "127.0.0.1"),
        ("port", port.as_str()),
        ("security", "none"),
        ("username", "mailer"),
        ("password", "s3cret pass"),
        ("from_address", "help@shop.example"),
        ("from_name", "商店客服"),
    ];
    let (status, location, _) = admin.post(server, "/admin/email", &fields).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "saving the settings");
    assert!(location.starts_with("/admin/email"), "{location}");
}

/// The outbox rows as the admin page's table shows them: (to, status) in page order.
async fn outbox(server: &TestServer) -> Vec<kefu::email::Email> {
    server.store().read(|transaction| kefu::email::recent(transaction, 100)).await.unwrap()
}

/// A port nothing listens on (for now).
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits (at most 20 s) until `rcpt_to` has received a message with `subject`; returns every
/// message `rcpt_to` received by then.
pub(crate) async fn received_with_subject(sink: &SmtpSink, rcpt_to: &str, subject: &str) -> Vec<Received> {
    let arrived = async {
        loop {
            let received: Vec<Received> =
                sink.received().into_iter().filter(|message| message.rcpt_to == [rcpt_to]).collect();
            if received.iter().any(|message| Parsed::new(&message.data).header("subject") == subject) {
                break received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), arrived)
        .await
        .unwrap_or_else(|_| panic!("no {subject:?} to {rcpt_to}"))
}

/// The address an offline form leaves in [`an_answer_reaches_the_lead_once`].
pub(crate) const LEAD: &str = "lilei@visitor.example";

/// The messages `sink` received for [`LEAD`].
pub(crate) fn to_lead(sink: &SmtpSink) -> Vec<Received> {
    sink.received().into_iter().filter(|message| message.rcpt_to == [LEAD]).collect()
}

/// A visitor leaves [`LEAD`] in the offline form through `visitors_node`, then chats there and
/// leaves; an agent (Wang) answers through `agents_node`, and the answer reaches the address once,
/// in Chinese. Returns Wang's console, the visitor's token and the conversation.
pub(crate) async fn an_answer_reaches_the_lead_once(
    visitors_node: &TestServer,
    agents_node: &TestServer,
    site: &kefu::sites::Site,
    sink: &SmtpSink,
) -> (crate::support::Client, String, u64) {
    agents_node.create_agent("wang@shop.example", site, 3).await;
    let mut wang = agents_node.agent(&agents_node.login("wang@shop.example").await).await;
    let token = leave_offline_message(visitors_node, site, "zh-CN", "在吗？").await;
    let mut visitor = visitors_node.visitor(site, &token).await;
    let conversation_id = visitor.say(None, "v1", "还在吗？").await["conversation_id"].as_u64().unwrap();
    wang.expect_conversation_event(conversation_id, "assigned").await;
    drop(visitor);
    wang.say(Some(conversation_id), "a1", "周六也发货。").await;
    for _ in 0..200 {
        if !to_lead(sink).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let emailed = to_lead(sink);
    assert_eq!(emailed.len(), 1, "{:?}", sink.received());
    let message = Parsed::new(&emailed[0].data);
    assert_eq!(message.header("subject"), "Shop 回复了您的留言");
    assert_eq!(message.header("to"), "李雷 <lilei@visitor.example>");
    assert!(message.part("text/plain").contains("周六也发货。") && message.part("text/html").contains("周六也发货。"));
    (wang, token, conversation_id)
}

pub(crate) async fn leave_offline_message(
    server: &TestServer,
    site: &kefu::sites::Site,
    lang: &str,
    text: &str,
) -> String {
    let (_, token) = server.visitor_session(site, None).await;
    let response = http()
        .post(server.url("/api/v1/visitor/offline-messages"))
        .bearer_auth(&token)
        .json(&json!({"name": "李雷", "email": "lilei@visitor.example", "text": text, "lang": lang}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
    token
}

#[tokio::test]
async fn settings_save_partially_keep_the_password_hidden_and_refuse_bad_input_whole() {
    let server = TestServer::start().await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    use_sink(&server, &admin, 2525).await;
    let saved = |server: &TestServer| {
        let (store, config) = (server.store().clone(), server.app().config.email.clone());
        async move { kefu::email::settings::EmailSettingsStore::load(&store, &config).await.unwrap() }
    };
    let before = saved(&server).await;
    assert_eq!((before.port, before.security.as_str(), before.password.as_str()), (2525, "none", "s3cret pass"));

    // Only the port: every other field keeps its value.
    let (status, _, _) = admin.post(&server, "/admin/email", &[("port", "2626")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let after = saved(&server).await;
    assert_eq!(after.port, 2626);
    assert_eq!(
        (after.host.as_str(), after.from_name.as_str(), after.password.as_str()),
        ("127.0.0.1", "商店客服", "s3cret pass")
    );

    // Bad input is refused with a message and changes nothing, not even the valid fields beside it.
    for (fields, field) in [
        (vec![("host", "other.example"), ("port", "70000")], "Port"),
        (vec![("port", "two")], "Port"),
        (vec![("security", "ssl")], "Security"),
        (vec![("from_address", "not an address")], "Sender address"),
    ] {
        let (status, _, html) = admin.post(&server, "/admin/email", &fields).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{fields:?}");
        assert!(html.contains(&format!("{field}: ")), "{fields:?} names its field: {html}");
        assert_eq!(saved(&server).await, after, "{fields:?} changed nothing");
    }

    // The page shows the settings but never the password; in Chinese when asked.
    let (status, html) = admin.get_in(&server, "/admin/email", "zh-CN").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("value=\"2626\"") && html.contains("已保存密码") && html.contains("发件箱"), "{html}");
    assert!(!html.contains("s3cret"), "the password is never shown back");
    let (_, html) = admin.get_in(&server, "/admin/email", "en").await;
    assert!(html.contains("A password is saved") && html.contains("Outbox"));

    // Removing the password is a choice of its own; an empty field keeps it.
    admin.post(&server, "/admin/email", &[("password", ""), ("clear_password", "on")]).await;
    assert_eq!(saved(&server).await.password, "");
}

#[tokio::test]
async fn a_test_email_arrives_as_text_and_html_with_encoded_chinese_and_reports_smtp_errors() {
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(quick_email).await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    use_sink(&server, &admin, sink.port).await;

    let (status, _, html) = admin.post_in(&server, "/admin/email/test", &[("to", "owner@shop.example")], "zh-CN").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("SMTP 服务器已接收测试邮件"), "{html}");
    let received = sink.wait_for(1).await;
    assert_eq!(received[0].rcpt_to, ["owner@shop.example"]);
    assert_eq!(received[0].login.as_deref(), Some("mailer:s3cret pass"), "kefu logged in with the saved account");
    let message = Parsed::new(&received[0].data);
    assert!(
        message.raw_header("subject").contains("=?"),
        "the subject is RFC 2047 encoded: {}",
        message.raw_header("subject")
    );
    assert_eq!(message.header("subject"), "kefu 测试邮件");
    assert_eq!(message.header("from"), "商店客服 <help@shop.example>");
    assert!(message.raw_header("content-type").starts_with("multipart/alternative"));
    assert!(message.part("text/plain").contains("SMTP 设置可以正常使用"), "{:?}", message.parts);
    let html_part = message.part("text/html");
    assert!(html_part.contains("<html lang=\"zh-CN\">") && html_part.contains("SMTP 设置可以正常使用"));

    // The server's refusal is what the page reports, and the row is marked failed with it.
    let (status, _, html) = admin.post(&server, "/admin/email/test", &[("to", "reject@shop.example")]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(html.contains("The test email was not sent") && html.contains("no such mailbox here"), "{html}");
    let rows = outbox(&server).await;
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("failed", 1));
    assert!(rows[0].last_error.as_deref().unwrap_or("").contains("no such mailbox"), "{:?}", rows[0].last_error);
    assert_eq!(rows[1].status.as_str(), "sent");
    let (_, page) = admin.get(&server, "/admin/email").await;
    assert!(page.contains("reject@shop.example") && page.contains("no such mailbox here"), "the outbox shows it");

    // A bad recipient address is refused before anything is queued.
    let (status, _, _) = admin.post(&server, "/admin/email/test", &[("to", "nobody")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(outbox(&server).await.len(), 2);
}

#[tokio::test]
async fn offline_messages_email_agents_retrying_until_smtp_is_up_and_once_across_a_restart() {
    let port = free_port().await;
    let mut server = TestServer::start_with(quick_email).await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    use_sink(&server, &admin, port).await;
    let agent_id = server.create_agent("wang@shop.example", &site, 3).await;
    let quiet_id = server.create_agent("quiet@shop.example", &site, 3).await;
    // One agent opts out on the admin agent form (the box left unticked).
    let path = format!("/admin/agents/{quiet_id}");
    let (status, _, html) = admin
        .post(&server, &path, &[("name", "quiet"), ("role", "agent"), ("capacity", "3"), ("sites", &site.key)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let path = format!("/admin/agents/{agent_id}");
    let fields =
        [("name", "wang"), ("role", "agent"), ("capacity", "3"), ("sites", &site.key), ("email_notifications", "on")];
    assert_eq!(admin.post(&server, &path, &fields).await.0, StatusCode::SEE_OTHER);

    // Nothing listens yet: the rows stay pending and are retried, each failure recorded.
    leave_offline_message(&server, &site, "zh-CN", "你们周末发货吗？").await;
    let mut rows = outbox(&server).await;
    assert_eq!(rows.len(), 3, "the admins and wang, not the agent who opted out: {rows:?}");
    for _ in 0..200 {
        rows = outbox(&server).await;
        if rows.iter().all(|row| row.attempts >= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rows.iter().all(|row| row.status.as_str() == "pending" && row.attempts >= 2), "{rows:?}");
    assert!(rows.iter().all(|row| row.last_error.as_deref().is_some_and(|error| !error.is_empty())));

    // SMTP comes up: each agent gets exactly one email, in the visitor's language.
    let sink = SmtpSink::start_on(port).await;
    let received = sink.wait_for(3).await;
    let mut recipients: Vec<String> = received.iter().flat_map(|message| message.rcpt_to.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["admin@kefu.local", ADMIN, "wang@shop.example"]);
    let message = Parsed::new(&received[0].data);
    assert_eq!(message.header("subject"), "李雷 的新留言（Shop）");
    let console = format!("打开客服工作台: {}", server.url("/console"));
    assert!(message.part("text/plain").contains("你们周末发货吗？") && message.part("text/plain").contains(&console));
    assert!(message.part("text/html").contains("你们周末发货吗？"));

    // Another message while kefu is stopping: queued in its commit, sent after the restart, once.
    drop(sink);
    leave_offline_message(&server, &site, "en", "Do you ship on weekends?").await;
    server.restart().await;
    let sink = SmtpSink::start_on(port).await;
    let received = sink.wait_for(3).await;
    let message = Parsed::new(&received[0].data);
    assert_eq!(message.header("subject"), "New offline message from 李雷 (Shop)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received().len(), 3, "nothing is sent twice");
    server.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received().len(), 3, "nothing sent is sent again after a restart");
    let rows = outbox(&server).await;
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|row| row.status.as_str() == "sent"), "{rows:?}");
}

#[tokio::test]
async fn a_visitor_waiting_without_an_answer_emails_the_sites_agents_once() {
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(quick_email).await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    use_sink(&server, &admin, sink.port).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    visitor.say(None, "c1", "hello, anyone?").await;
    let received = sink.wait_for(2).await;
    let mut recipients: Vec<String> = received.iter().flat_map(|message| message.rcpt_to.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["admin@kefu.local", ADMIN]);
    let message = Parsed::new(&received[0].data);
    assert!(message.header("subject").contains("is waiting for an answer (Shop)"), "{}", message.header("subject"));
    // Told once, however long the visitor keeps waiting.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(sink.received().len(), 2);
}

#[tokio::test]
async fn an_agents_answer_reaches_a_lead_by_email_unless_they_read_it_in_the_chat() {
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(quick_email).await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    use_sink(&server, &admin, sink.port).await;
    let (mut wang, token, conversation_id) = an_answer_reaches_the_lead_once(&server, &server, &site, &sink).await;

    // Back in the chat, the visitor reads the next answer there: no email for it.
    let mut visitor = server.visitor(&site, &token).await;
    let seq = wang.say(Some(conversation_id), "a2", "还有别的问题吗？").await["seq"].as_u64().unwrap();
    visitor.send(json!({"type": "read", "conversation_id": conversation_id, "seq": seq})).await;
    let mut skipped = false;
    for _ in 0..200 {
        let rows = outbox(&server).await;
        if rows.iter().any(|row| row.kind == kefu::email::EmailKind::Reply && row.status.as_str() == "skipped") {
            skipped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(skipped, "{:?}", outbox(&server).await);
    assert_eq!(to_lead(&sink).len(), 1, "the answer read in the chat is not emailed");
}

#[tokio::test]
async fn an_answer_is_emailed_from_the_moment_the_visitor_leaves_an_address() {
    let server = TestServer::start_with(quick_email).await;
    let site = server.create_site("Shop").await;
    server.create_agent("wang@shop.example", &site, 3).await;
    let mut wang = server.agent(&server.login("wang@shop.example").await).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v1", "hello").await["conversation_id"].as_u64().unwrap();
    wang.expect_conversation_event(conversation_id, "assigned").await;
    let replies = |rows: Vec<kefu::email::Email>| -> Vec<kefu::email::Email> {
        rows.into_iter().filter(|row| row.kind == kefu::email::EmailKind::Reply).collect()
    };

    // No address yet: the answer is queued for nobody (the email step runs in its commit).
    wang.say(Some(conversation_id), "a1", "first answer").await;
    assert!(replies(outbox(&server).await).is_empty());

    // The same visitor leaves an address through the offline form; the next answer is queued
    // to it (the writer's note that the visitor had none is updated with the visitor).
    let response = http()
        .post(server.url("/api/v1/visitor/offline-messages"))
        .bearer_auth(&token)
        .json(&json!({"email": "ada@visitor.example", "text": "write to me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    wang.say(Some(conversation_id), "a2", "second answer").await;
    let queued = replies(outbox(&server).await);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].to_address, "ada@visitor.example");
    assert!(queued[0].text.contains("second answer"));
}

#[tokio::test]
async fn transcripts_go_out_on_request_a_few_times_an_hour_and_on_close_when_the_site_asks() {
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(quick_email).await;
    let mut site = server.create_site("Shop").await;
    site.transcript_on_close = true;
    site.email_language = "zh-CN".into();
    let site = kefu::sites::save(server.store(), site).await.unwrap();
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    use_sink(&server, &admin, sink.port).await;
    server.create_agent("wang@shop.example", &site, 3).await;
    let mut wang = server.agent(&server.login("wang@shop.example").await).await;
    let (_, token) = server.visitor_session(&site, None).await;
    let mut visitor = server.visitor(&site, &token).await;
    let conversation_id = visitor.say(None, "v1", "How long is shipping?").await["conversation_id"].as_u64().unwrap();
    wang.expect_conversation_event(conversation_id, "assigned").await;
    wang.say(Some(conversation_id), "a1", "Two days.").await;
    wang.send(json!({"type": "send", "client_id": "note", "conversation_id": conversation_id, "text": "VIP customer", "internal": true})).await;
    let to_lead = |sink: &SmtpSink| -> Vec<Received> {
        sink.received().into_iter().filter(|message| message.rcpt_to == ["ada@visitor.example"]).collect()
    };

    // Asked from the widget: in the widget's language, with the history but not internal notes.
    let ask = |lang: &'static str, email: &'static str| {
        let (url, token) = (server.url(&format!("/api/v1/conversations/{conversation_id}/transcript")), token.clone());
        async move {
            http()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"email": email, "lang": lang}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(ask("en", "not an address").await, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(ask("en", "ada@visitor.example").await, StatusCode::ACCEPTED);
    for _ in 0..200 {
        if !to_lead(&sink).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = Parsed::new(&to_lead(&sink)[0].data);
    assert_eq!(message.header("subject"), "Your chat with Shop");
    let text = message.part("text/plain");
    assert!(text.contains("How long is shipping?") && text.contains("Two days."), "{text}");
    assert!(!text.contains("VIP customer"), "internal notes stay out: {text}");
    assert!(message.part("text/html").contains("Two days."));

    // Another visitor cannot ask for this conversation; the budget is three an hour.
    let (_, stranger) = server.visitor_session(&site, None).await;
    let url = server.url(&format!("/api/v1/conversations/{conversation_id}/transcript"));
    let status =
        http().post(&url).bearer_auth(stranger).json(&json!({"email": "x@y.example"})).send().await.unwrap().status();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(ask("en", "ada@visitor.example").await, StatusCode::ACCEPTED);
    assert_eq!(ask("en", "ada@visitor.example").await, StatusCode::ACCEPTED);
    assert_eq!(ask("en", "ada@visitor.example").await, StatusCode::TOO_MANY_REQUESTS);

    // Closing sends it again (the site asks for it), in the site's email language.
    wang.send(json!({"type": "close", "conversation_id": conversation_id})).await;
    let received = received_with_subject(&sink, "ada@visitor.example", "您与 Shop 的聊天记录").await;
    assert_eq!(received.len(), 4, "three asked for, one on close");
    let rows = outbox(&server).await;
    let transcript = rows.iter().find(|row| row.kind == kefu::email::EmailKind::Transcript).unwrap();
    assert!(transcript.text.is_empty(), "the outbox keeps no copy of the chat");
}

#[tokio::test]
async fn a_forgotten_password_is_reset_once_by_an_emailed_link_that_ends_every_session() {
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(quick_email).await;
    let site = server.create_site("Shop").await;
    server.create_admin(ADMIN).await;
    let admin = Admin::log_in(&server).await;
    use_sink(&server, &admin, sink.port).await;
    server.create_agent("wang@shop.example", &site, 3).await;
    let old_session = server.login("wang@shop.example").await;
    let forms = crate::admin::client();
    let ask = |email: &'static str| {
        let (forms, url) = (forms.clone(), server.url("/admin/forgot-password"));
        async move {
            let response =
                forms.post(url).header("accept-language", "zh-CN").form(&[("email", email)]).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };

    // The same answer for an unknown address as for an agent's; only the agent gets an email.
    let (unknown_status, unknown_page) = ask("nobody@shop.example").await;
    let (status, page) = ask("WANG@shop.example").await;
    assert_eq!((unknown_status, status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(unknown_page, page);
    assert!(page.contains("如果有账号使用此邮箱"), "{page}");
    let received = sink.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 1);
    assert_eq!(received[0].rcpt_to, ["wang@shop.example"]);
    let message = Parsed::new(&received[0].data);
    assert_eq!(message.header("subject"), "重置 kefu 密码");
    let text = message.part("text/plain");
    let link = text.split_whitespace().find(|word| word.contains("/admin/reset-password?token=")).expect("a link");
    assert!(
        link.starts_with(&server.url("/admin/reset-password")),
        "the link is kefu's own URL, not the Host header's"
    );
    let token = link.split("token=").nth(1).unwrap().to_owned();
    assert!(message.part("text/html").contains(&token));
    assert!(outbox(&server).await[0].text.is_empty(), "the sent link is not kept in the outbox");

    // The link opens the form; a short password is refused and the link still works.
    let response = forms.get(link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reset = |password: &'static str| {
        let (forms, url, token) = (forms.clone(), server.url("/admin/reset-password"), token.clone());
        async move {
            forms.post(url).form(&[("token", token.as_str()), ("password", password)]).send().await.unwrap().status()
        }
    };
    assert_eq!(reset("short").await, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reset("a brand new password").await, StatusCode::OK);
    // Once only; the old session is over; the new password works.
    assert_eq!(reset("another new password").await, StatusCode::GONE);
    let me = http().get(server.url("/api/v1/agent/me")).bearer_auth(&old_session).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    server.login_with("wang@shop.example", "a brand new password").await;

    // An expired link does nothing.
    ask("wang@shop.example").await;
    let received = sink.wait_for(2).await;
    let text = Parsed::new(&received[1].data).part("text/plain");
    let token = text.split("token=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let digest = kefu::base::secrets::token_digest(&token);
    server
        .store()
        .write(move |context| {
            let mut resets = context.transaction.open_table(kefu::storage::tables::PASSWORD_RESETS)?;
            let mut reset: kefu::email::password_reset::PasswordReset =
                kefu::storage::decode_json(redb::ReadableTable::get(&resets, &digest)?.unwrap().value())?;
            reset.expires_at = context.now - 1;
            resets.insert(&digest, kefu::storage::encode_json(&reset).as_slice())?;
            Ok(Ok::<_, kefu::storage::StorageError>(()))
        })
        .await
        .unwrap();
    let expired = forms
        .post(server.url("/admin/reset-password"))
        .form(&[("token", token.as_str()), ("password", "yet another password")])
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), StatusCode::GONE);
    server.login_with("wang@shop.example", "a brand new password").await;

    // Requests are rate-limited per account (three an hour by default).
    ask("wang@shop.example").await;
    let (status, page) = ask("wang@shop.example").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.contains("请求过多"));
}
