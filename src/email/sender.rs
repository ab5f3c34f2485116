//! The email sender: sends due rows of the outbox over SMTP (lettre, rustls) and records each
//! outcome.
//!
//! A row is claimed by moving its due time past the attempt's timeout, sent, then marked sent
//! (or rescheduled after `retry_base × 2^(attempts-1)`, the webhooks' backoff) in a commit. A row
//! is marked sent only after the server accepted it, and the sender lets attempts in flight finish
//! when kefu stops, so a restart resends what was not accepted and nothing that was. While no
//! SMTP server is set, rows wait; those older than `give_up_after` are marked failed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use redb::ReadableTable;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::settings::{self, Security, SmtpSettings};
use super::{Email, EmailStatus};
use crate::base::config::EmailConfig;
use crate::storage::outbox::{self, Outbox};
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// Why an email sent at once was not: nothing to send it with.
pub const NOT_CONFIGURED: &str = "no SMTP server or sender address is set";

/// Emails sent at once; SMTP servers throttle clients that open many connections.
const MAX_IN_FLIGHT: usize = 4;

/// The email outbox: what [`outbox::run`] polls.
#[derive(Clone)]
struct Emails {
    config: EmailConfig,
}

/// A due email, with the SMTP settings in force and whether its visitor already read it in the
/// chat.
struct DueEmail {
    smtp: Arc<SmtpSettings>,
    email: Email,
    already_read: bool,
}

/// Runs until `shutdown`, then waits for the attempts in flight.
pub async fn run(store: Store, config: EmailConfig, shutdown: CancellationToken) {
    outbox::run(store, Emails { config }, shutdown).await;
}

impl Outbox for Emails {
    type Due = DueEmail;
    const NAME: &'static str = "email";
    const MAX_IN_FLIGHT: usize = MAX_IN_FLIGHT;
    // An attempt cut off mid-conversation may have been accepted without being marked sent, and
    // would go out again after the restart: let the attempts finish (each is bounded by the timeout).
    const FINISH_ON_SHUTDOWN: bool = true;

    fn read_due(
        &self,
        transaction: &redb::ReadTransaction,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DueEmail>, StorageError> {
        let smtp = Arc::new(settings::effective(transaction, &self.config)?);
        let emails = transaction.open_table(tables::EMAILS)?;
        outbox::due_rows(transaction, tables::EMAIL_DUE, now, limit, |id| {
            let Some(value) = emails.get(id)? else {
                return Ok(None);
            };
            let mut email: Email = decode_json(value.value())?;
            if let Some(of) = &email.transcript_of {
                let rendered = super::transcript::render(transaction, of)?;
                (email.subject, email.text, email.html) = (rendered.subject, rendered.text, rendered.html);
            }
            let already_read = match &email.unless_read {
                Some(check) => check.is_read(transaction)?,
                None => false,
            };
            Ok(Some(DueEmail { smtp: smtp.clone(), email, already_read }))
        })
    }

    async fn start(&self, store: &Store, due: DueEmail, now: i64, in_flight: &mut JoinSet<()>) {
        let DueEmail { smtp, email, already_read } = due;
        let config = &self.config;
        if already_read {
            let outcome = Outcome::Skipped("the visitor read it in the chat".to_owned());
            let claimed_until = email.next_attempt_at.unwrap_or_default();
            if let Err(error) = record_outcome(store, config, email.id, claimed_until, outcome).await {
                tracing::error!(%error, email_id = email.id, "skipping an email failed");
            }
            return;
        }
        if !smtp.is_configured() {
            if let Err(error) = give_up_if_stale(store, config, &email).await {
                tracing::error!(%error, email_id = email.id, "expiring an unsent email failed");
            }
            return;
        }
        let claimed_until = now + Duration::from_secs(config.timeout_secs).as_millis() as i64 * 2;
        if reschedule(store, email.id, email.next_attempt_at, claimed_until).await.is_err() {
            return;
        }
        let (store, config) = (store.clone(), config.clone());
        in_flight.spawn(async move {
            let outcome = Outcome::of(send(&smtp, &email, Duration::from_secs(config.timeout_secs)).await, false);
            if let Err(error) = record_outcome(&store, &config, email.id, claimed_until, outcome).await {
                tracing::error!(%error, email_id = email.id, "recording an email outcome failed");
            }
        });
    }
}

/// Writes `email` to the outbox and sends it at once, outside the background sender (the admin
/// page's test email): the row is queued already claimed, so the sender leaves it alone unless
/// this attempt never ends. A failure is final for it. Returns the SMTP error, if any.
pub async fn queue_and_send(
    store: &Store,
    config: &EmailConfig,
    email: super::OutgoingEmail,
) -> Result<Result<(), String>, StorageError> {
    let claim = Duration::from_secs(config.timeout_secs).as_millis() as i64 * 2;
    let id = store
        .write(move |context| {
            let claimed_until = context.now + claim;
            Ok(Ok::<_, StorageError>(super::queue(context, email, claimed_until)?))
        })
        .await?;
    send_now(store, config, id).await
}

async fn send_now(store: &Store, config: &EmailConfig, id: u64) -> Result<Result<(), String>, StorageError> {
    let (smtp, email) = {
        let config = config.clone();
        store
            .read(move |transaction| Ok((settings::effective(transaction, &config)?, super::get(transaction, id)?)))
            .await?
    };
    let Some(email) = email else {
        return Ok(Err("the email is no longer in the outbox".to_owned()));
    };
    let outcome = if smtp.is_configured() {
        send(&smtp, &email, Duration::from_secs(config.timeout_secs)).await
    } else {
        Err(NOT_CONFIGURED.to_owned())
    };
    let claimed_until = email.next_attempt_at.unwrap_or_default();
    record_outcome(store, config, id, claimed_until, Outcome::of(outcome.clone(), true)).await?;
    Ok(outcome)
}

/// The message lettre sends: multipart/alternative, plain text then HTML.
fn message(smtp: &SmtpSettings, email: &Email) -> Result<Message, String> {
    let from_name = (!smtp.from_name.is_empty()).then(|| smtp.from_name.clone());
    let from = Mailbox::new(from_name, smtp.from_address.parse().map_err(|error| format!("sender address: {error}"))?);
    let to_name = (!email.to_name.is_empty()).then(|| email.to_name.clone());
    let to = Mailbox::new(to_name, email.to_address.parse().map_err(|error| format!("recipient address: {error}"))?);
    Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .message_id(None)
        .multipart(MultiPart::alternative_plain_html(email.text.clone(), email.html.clone()))
        .map_err(|error| error.to_string())
}

/// A transport to one address of the server; TLS still verifies the certificate for the server's
/// name. kefu resolves the name itself (pure Rust), because lettre would ask the C library, which
/// a static binary cannot do reliably.
fn transport(
    smtp: &SmtpSettings,
    address: IpAddr,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let parameters = || TlsParameters::new(smtp.host.clone()).map_err(|error| error.to_string());
    let tls = match smtp.security {
        Security::Starttls => Tls::Required(parameters()?),
        Security::Tls => Tls::Wrapper(parameters()?),
        Security::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(address.to_string())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(timeout));
    if !smtp.username.is_empty() {
        builder = builder.credentials(Credentials::new(smtp.username.clone(), smtp.password.clone()));
    }
    Ok(builder.build())
}

pub(crate) async fn send(smtp: &SmtpSettings, email: &Email, timeout: Duration) -> Result<(), String> {
    let message = message(smtp, email)?;
    // lettre's own timeout covers each command; this one bounds the whole conversation.
    let attempt = async {
        let addresses =
            crate::base::outbound::resolve(&smtp.host).await.map_err(|error| format!("{}: {error}", smtp.host))?;
        let address = *addresses.first().ok_or_else(|| format!("{}: the name has no address", smtp.host))?;
        let transport = transport(smtp, address, timeout)?;
        transport.send(message).await.map(|_| ()).map_err(|error| describe(&error))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("the SMTP server did not finish within {} s", timeout.as_secs())),
    }
}

/// The error with its causes, which say why (a refused connection, the server's answer).
fn describe(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(source) = cause {
        text = format!("{text}: {source}");
        cause = source.source();
    }
    text
}

/// Moves an email's due time (claiming it for an attempt).
async fn reschedule(store: &Store, id: u64, from: Option<i64>, to: i64) -> Result<(), StorageError> {
    let tables = (tables::EMAIL_DUE, tables::EMAILS);
    outbox::reschedule(store, tables, id, from, Some(to), |email: &mut Email, due| email.next_attempt_at = due).await
}

/// Marks an email failed when no server was set for longer than `give_up_after`.
async fn give_up_if_stale(store: &Store, config: &EmailConfig, email: &Email) -> Result<(), StorageError> {
    let give_up_after = Duration::from_secs(config.give_up_after_secs).as_millis() as i64;
    if crate::base::clock::now_millis() - email.created_at <= give_up_after {
        return Ok(());
    }
    let outcome = Outcome::Failed { error: "no SMTP server was set up in time".to_owned(), is_final: true };
    record_outcome(store, config, email.id, email.next_attempt_at.unwrap_or_default(), outcome).await
}

/// How an attempt ended.
enum Outcome {
    Sent,
    /// `is_final`: not retried.
    Failed {
        error: String,
        is_final: bool,
    },
    /// No longer needed; not sent.
    Skipped(String),
}

impl Outcome {
    fn of(result: Result<(), String>, is_final: bool) -> Outcome {
        match result {
            Ok(()) => Outcome::Sent,
            Err(error) => Outcome::Failed { error, is_final },
        }
    }
}

async fn record_outcome(
    store: &Store,
    config: &EmailConfig,
    id: u64,
    claimed_until: i64,
    outcome: Outcome,
) -> Result<(), StorageError> {
    let retry_base = Duration::from_millis(config.retry_base_ms);
    let give_up_after = Duration::from_secs(config.give_up_after_secs).as_millis() as i64;
    store
        .write(move |context| {
            let now = context.now;
            let mut emails = context.transaction.open_table(tables::EMAILS)?;
            let Some(mut email) = emails.get(id)?.map(|value| decode_json::<Email>(value.value())).transpose()? else {
                return Ok(Ok(()));
            };
            let mut due = context.transaction.open_table(tables::EMAIL_DUE)?;
            outbox::move_due(&mut due, id, Some(claimed_until), None)?;
            match outcome {
                Outcome::Skipped(reason) => {
                    email.status = EmailStatus::Skipped;
                    email.last_error = Some(reason);
                    email.next_attempt_at = None;
                }
                Outcome::Sent => {
                    email.attempts += 1;
                    email.status = EmailStatus::Sent;
                    email.last_error = None;
                    email.sent_at = Some(now);
                    email.next_attempt_at = None;
                }
                Outcome::Failed { error, is_final } => {
                    email.attempts += 1;
                    email.last_error = Some(error);
                    let next = now + crate::base::outbound::backoff(retry_base, email.attempts).as_millis() as i64;
                    if is_final || next - email.created_at > give_up_after {
                        email.status = EmailStatus::Failed;
                        email.next_attempt_at = None;
                    } else {
                        email.next_attempt_at = Some(next);
                        outbox::move_due(&mut due, id, None, Some(next))?;
                    }
                }
            }
            if email.status != EmailStatus::Pending && email.kind.is_secret() {
                email.text.clear();
                email.html.clear();
            }
            tracing::info!(email_id = id, attempts = email.attempts, status = email.status.as_str(), "email attempt");
            emails.insert(id, encode_json(&email).as_slice())?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await
}
