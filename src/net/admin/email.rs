//! The Email admin page (`/admin/email`), in English and Chinese: the SMTP settings (the saved
//! ones override kefu.toml; the password is never shown back), "send a test email", and the
//! newest rows of the outbox with their status.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::form::FieldErrors;
use super::texts::Lang;
use super::{AdminPost, AdminUser, FormData, Layout, done, internal_error, render};
use crate::email::settings::{self, SettingsChange, SmtpSettings};
use crate::email::{self, Email, EmailError, EmailKind, OutgoingEmail};
use crate::net::AppState;

/// Outbox rows the page lists.
const RECENT_EMAILS: usize = 50;

/// Every string of the page.
pub struct Texts {
    title: &'static str,
    intro: &'static str,
    server: &'static str,
    host: &'static str,
    port: &'static str,
    security: &'static str,
    security_starttls: &'static str,
    security_tls: &'static str,
    security_none: &'static str,
    username: &'static str,
    password: &'static str,
    password_set: &'static str,
    password_unset: &'static str,
    clear_password: &'static str,
    from_address: &'static str,
    from_name: &'static str,
    save: &'static str,
    saved: &'static str,
    fix: &'static str,
    not_configured: &'static str,
    test: &'static str,
    test_to: &'static str,
    test_send: &'static str,
    test_sent: &'static str,
    test_failed: &'static str,
    outbox: &'static str,
    outbox_empty: &'static str,
    to: &'static str,
    subject: &'static str,
    kind: &'static str,
    status: &'static str,
    attempts: &'static str,
    last_error: &'static str,
    created: &'static str,
    status_pending: &'static str,
    status_sent: &'static str,
    status_failed: &'static str,
    status_skipped: &'static str,
}

static EN: Texts = Texts {
    title: "Email",
    intro: "kefu emails agents about offline messages and missed chats, answers visitors who left their address, sends transcripts and password resets. Settings saved here override [email] of kefu.toml.",
    server: "SMTP server",
    host: "Host",
    port: "Port",
    security: "Security",
    security_starttls: "STARTTLS (usually port 587)",
    security_tls: "TLS (usually port 465)",
    security_none: "None (a relay on this machine only)",
    username: "Username",
    password: "Password",
    password_set: "A password is saved; leave empty to keep it.",
    password_unset: "No password is saved.",
    clear_password: "Remove the saved password",
    from_address: "Sender address",
    from_name: "Sender name",
    save: "Save",
    saved: "Email settings saved.",
    fix: "Some values need fixing; nothing was saved.",
    not_configured: "Email is off until a host and a sender address are set; emails wait in the outbox meanwhile.",
    test: "Send a test email",
    test_to: "To",
    test_send: "Send test email",
    test_sent: "The SMTP server accepted the test email.",
    test_failed: "The test email was not sent:",
    outbox: "Outbox",
    outbox_empty: "No emails yet.",
    to: "To",
    subject: "Subject",
    kind: "Kind",
    status: "Status",
    attempts: "Attempts",
    last_error: "Last error",
    created: "Queued",
    status_pending: "pending",
    status_sent: "sent",
    status_failed: "failed",
    status_skipped: "not needed",
};

static ZH: Texts = Texts {
    title: "邮件",
    intro: "kefu 会把留言和未接待对话通过邮件通知客服，回复留下邮箱的访客，发送聊天记录和密码重置邮件。此处保存的设置优先于 kefu.toml 的 [email]。",
    server: "SMTP 服务器",
    host: "主机",
    port: "端口",
    security: "加密方式",
    security_starttls: "STARTTLS（通常为 587 端口）",
    security_tls: "TLS（通常为 465 端口）",
    security_none: "不加密（仅限本机中继）",
    username: "用户名",
    password: "密码",
    password_set: "已保存密码；留空则保持不变。",
    password_unset: "尚未保存密码。",
    clear_password: "删除已保存的密码",
    from_address: "发件地址",
    from_name: "发件人名称",
    save: "保存",
    saved: "邮件设置已保存。",
    fix: "有些值需要修改；没有保存任何内容。",
    not_configured: "设置主机和发件地址之前不会发送邮件；邮件会在发件箱中等待。",
    test: "发送测试邮件",
    test_to: "收件人",
    test_send: "发送测试邮件",
    test_sent: "SMTP 服务器已接收测试邮件。",
    test_failed: "测试邮件未发送：",
    outbox: "发件箱",
    outbox_empty: "还没有邮件。",
    to: "收件人",
    subject: "主题",
    kind: "类型",
    status: "状态",
    attempts: "尝试次数",
    last_error: "最近错误",
    created: "加入时间",
    status_pending: "等待发送",
    status_sent: "已发送",
    status_failed: "失败",
    status_skipped: "无需发送",
};

fn texts(lang: Lang) -> &'static Texts {
    match lang {
        Lang::En => &EN,
        Lang::Zh => &ZH,
    }
}

/// The form's values: what is in effect, or what was typed.
struct SettingsForm {
    host: String,
    port: String,
    security: String,
    username: String,
    has_password: bool,
    from_address: String,
    from_name: String,
}

impl SettingsForm {
    fn from_settings(settings: &SmtpSettings) -> SettingsForm {
        SettingsForm {
            host: settings.host.clone(),
            port: settings.port.to_string(),
            security: settings.security.as_str().to_owned(),
            username: settings.username.clone(),
            has_password: !settings.password.is_empty(),
            from_address: settings.from_address.clone(),
            from_name: settings.from_name.clone(),
        }
    }
}

/// An outbox row as the page shows it.
struct EmailRow {
    to: String,
    subject: String,
    kind: &'static str,
    status: &'static str,
    status_label: &'static str,
    attempts: u32,
    last_error: String,
    created_at: String,
}

impl EmailRow {
    fn new(email: Email, t: &Texts) -> EmailRow {
        EmailRow {
            to: email.to_address,
            subject: email.subject,
            kind: email.kind.as_str(),
            status: email.status.as_str(),
            status_label: match email.status {
                email::EmailStatus::Pending => t.status_pending,
                email::EmailStatus::Sent => t.status_sent,
                email::EmailStatus::Failed => t.status_failed,
                email::EmailStatus::Skipped => t.status_skipped,
            },
            attempts: email.attempts,
            last_error: email.last_error.unwrap_or_default(),
            created_at: crate::base::clock::format_utc(email.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/email.html")]
struct EmailPage {
    layout: Layout,
    t: &'static Texts,
    form: SettingsForm,
    configured: bool,
    errors: FieldErrors,
    test_to: String,
    /// The outcome of a test email just sent: `Ok` or the SMTP error.
    test_result: Option<Result<(), String>>,
    emails: Vec<EmailRow>,
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    done: Option<String>,
}

/// What a page shows besides the stored state.
#[derive(Default)]
struct PageState {
    form: Option<SettingsForm>,
    errors: FieldErrors,
    test_to: Option<String>,
    test_result: Option<Result<(), String>>,
    notice: Option<String>,
}

async fn page(app: &AppState, admin: &AdminUser, lang: Lang, state: PageState) -> Result<EmailPage, Response> {
    let config = app.config.email.clone();
    let (settings, emails) = app
        .store
        .read(move |transaction| {
            Ok((settings::effective(transaction, &config)?, email::recent(transaction, RECENT_EMAILS)?))
        })
        .await
        .map_err(internal_error)?;
    let t = texts(lang);
    Ok(EmailPage {
        layout: admin.layout("email", state.notice),
        t,
        configured: settings.is_configured(),
        form: state.form.unwrap_or_else(|| SettingsForm::from_settings(&settings)),
        errors: state.errors,
        test_to: state.test_to.unwrap_or_else(|| admin.agent.email.clone()),
        test_result: state.test_result,
        emails: emails.into_iter().map(|email| EmailRow::new(email, t)).collect(),
    })
}

fn show(result: Result<EmailPage, Response>, status: StatusCode) -> Response {
    match result {
        Ok(page) => render(status, &page),
        Err(response) => response,
    }
}

/// `GET /admin/email`
pub async fn settings_page(
    State(app): State<AppState>,
    admin: AdminUser,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let lang = Lang::of_request(&headers);
    let notice = query.done.filter(|notice| !notice.is_empty()).map(|notice| notice.chars().take(200).collect());
    show(page(&app, &admin, lang, PageState { notice, ..PageState::default() }).await, StatusCode::OK)
}

/// The change a form asks for: only the fields it sent.
fn change_of(form: &FormData) -> SettingsChange {
    SettingsChange {
        host: form.value("host"),
        port: form.value("port"),
        security: form.value("security"),
        username: form.value("username"),
        password: form.value("password"),
        clear_password: form.checked("clear_password"),
        from_address: form.value("from_address"),
        from_name: form.value("from_name"),
    }
}

/// `POST /admin/email`: saves the fields sent; the others keep their values.
pub async fn save(State(app): State<AppState>, headers: HeaderMap, post: AdminPost) -> Response {
    let lang = Lang::of_request(&headers);
    match settings::save(&app.store, &app.config.email, change_of(&post.form)).await {
        Ok(saved) => {
            let detail = format!(
                "host {:?}, port {}, security {}, from {:?}",
                saved.host,
                saved.port,
                saved.security.as_str(),
                saved.from_address
            );
            post.admin.audit(&app, "email.settings", "smtp", detail).await;
            done("/admin/email", texts(lang).saved)
        }
        Err(EmailError::Invalid(error)) => {
            let mut errors = FieldErrors::default();
            errors.add_error(error);
            let form = SettingsForm {
                host: post.form.text("host"),
                port: post.form.text("port"),
                security: post.form.text("security"),
                username: post.form.text("username"),
                has_password: false,
                from_address: post.form.text("from_address"),
                from_name: post.form.text("from_name"),
            };
            let state = PageState { form: Some(form), errors, ..PageState::default() };
            show(page(&app, &post.admin, lang, state).await, StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(error) => internal_error(error),
    }
}

/// `POST /admin/email/test`: queues a test email, sends it at once and shows the outcome.
pub async fn send_test(State(app): State<AppState>, headers: HeaderMap, post: AdminPost) -> Response {
    let lang = Lang::of_request(&headers);
    let to = post.form.text("to").trim().to_owned();
    if !email::plausible_address(&to) {
        let mut errors = FieldErrors::default();
        errors.add("to", if lang == Lang::Zh { "请输入有效的邮箱地址" } else { "must be an email address" });
        let state = PageState { errors, test_to: Some(to), ..PageState::default() };
        return show(page(&app, &post.admin, lang, state).await, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let email_lang = match lang {
        Lang::En => email::Lang::En,
        Lang::Zh => email::Lang::Zh,
    };
    let outgoing = OutgoingEmail {
        kind: EmailKind::Test,
        site: None,
        to_address: to.clone(),
        to_name: String::new(),
        message: email::content::test_email(email_lang),
        unless_read: None,
        transcript_of: None,
    };
    let outcome = match email::sender::queue_and_send(&app.store, &app.config.email, outgoing).await {
        Ok(outcome) => outcome,
        Err(error) => return internal_error(error),
    };
    let status = if outcome.is_ok() { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
    post.admin.audit(&app, "email.test", &to, if outcome.is_ok() { "sent".into() } else { "failed".into() }).await;
    let state = PageState { test_to: Some(to), test_result: Some(outcome), ..PageState::default() };
    show(page(&app, &post.admin, lang, state).await, status)
}
