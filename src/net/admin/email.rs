//! The Email admin page (`/admin/email`), in English and Chinese: the SMTP settings (the saved
//! ones override kefu.toml; the password is never shown back), "send a test email", and the
//! newest rows of the outbox with their status.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::form::FieldErrors;
use super::texts::{Lang, Texts};
use super::{AdminPost, AdminUser, FormData, Layout, done, internal_error, render};
use crate::email::settings::{EmailSettingsStore, SettingsChange, SmtpSettings};
use crate::email::{self, Email, EmailError, EmailKind, OutgoingEmail};
use crate::net::AppState;

/// Outbox rows the page lists.
const RECENT_EMAILS: usize = 50;

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
                email::EmailStatus::Pending => t.email_status_pending,
                email::EmailStatus::Sent => t.email_status_sent,
                email::EmailStatus::Failed => t.email_status_failed,
                email::EmailStatus::Skipped => t.email_status_skipped,
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
    let settings = EmailSettingsStore::load(&app.store, &app.config.email).await.map_err(internal_error)?;
    let emails = EmailSettingsStore::recent_emails(&app.store, RECENT_EMAILS).await.map_err(internal_error)?;
    let t = lang.texts();
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
    match EmailSettingsStore::save(&app.store, &app.config.email, change_of(&post.form)).await {
        Ok(saved) => {
            let detail = format!(
                "host {:?}, port {}, security {}, from {:?}",
                saved.host,
                saved.port,
                saved.security.as_str(),
                saved.from_address
            );
            post.admin.audit(&app, "email.settings", "smtp", detail).await;
            done("/admin/email", lang.texts().email_saved)
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
        errors.add("to", lang.texts().email_must_be_address);
        let state = PageState { errors, test_to: Some(to), ..PageState::default() };
        return show(page(&app, &post.admin, lang, state).await, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let email_lang = email::Lang::from(lang);
    let outgoing = OutgoingEmail {
        kind: EmailKind::Test,
        site: None,
        to_address: to.clone(),
        to_name: String::new(),
        message: email::content::test_email(email_lang),
        unless_read: None,
        transcript_of: None,
    };
    let outcome = match EmailSettingsStore::send_now(&app.store, &app.config.email, outgoing).await {
        Ok(outcome) => outcome,
        Err(error) => return internal_error(error),
    };
    let status = if outcome.is_ok() { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
    post.admin.audit(&app, "email.test", &to, if outcome.is_ok() { "sent".into() } else { "failed".into() }).await;
    let state = PageState { test_to: Some(to), test_result: Some(outcome), ..PageState::default() };
    show(page(&app, &post.admin, lang, state).await, status)
}
